package test

// The logging, Stats-histogram and Ticket audit. The issue that specifies
// the engine asks for "zap logging (a zap.NewNop() default): backend,
// kernel version and io_uring features at start; a recovery summary; actor
// restarts; seals; routing changes; nothing per write" and "Stats (latency
// percentiles from a real histogram)"; API.md defines Stats,
// LatencySummary and Ticket. Every test here observes the engine's logger
// at Debug (the lowest level, so every entry of every level is seen)
// through laCore, which also records any use of the logger after Stop has
// returned. What TestAuditLogging (issue4_audit_test.go) and the Stats
// audit (stats_audit_test.go) check already is not repeated.

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/internal/testhook"
)

// laGuard is shared by an laCore and every core derived from it (With):
// once closed is set (Stop has returned), any use of the core is counted
// and the first one remembered.
type laGuard struct {
	closed atomic.Bool
	after  atomic.Int64
	mu     sync.Mutex
	first  string
}

func (g *laGuard) use(what string) {
	if !g.closed.Load() {
		return
	}
	if g.after.Add(1) == 1 {
		buf := make([]byte, 1<<16)
		g.mu.Lock()
		g.first = what + "\n" + string(buf[:runtime.Stack(buf, false)])
		g.mu.Unlock()
	}
}

// check fails the test if the core was used after close.
func (g *laGuard) check(t *testing.T, when string) {
	t.Helper()
	if n := g.after.Load(); n > 0 {
		g.mu.Lock()
		defer g.mu.Unlock()
		t.Errorf("%s: the engine's zap core was used %d times after Stop returned; first: %s", when, n, g.first)
	}
}

// laCore is an observer core under an laGuard.
type laCore struct {
	zapcore.Core
	g *laGuard
}

func (c laCore) Enabled(l zapcore.Level) bool {
	c.g.use("Enabled " + l.String())
	return c.Core.Enabled(l)
}

func (c laCore) With(f []zapcore.Field) zapcore.Core {
	c.g.use("With")
	return laCore{Core: c.Core.With(f), g: c.g}
}

func (c laCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	c.g.use("Check " + e.Level.String() + " " + e.Message)
	if c.Core.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c laCore) Write(e zapcore.Entry, f []zapcore.Field) error {
	c.g.use("Write " + e.Level.String() + " " + e.Message)
	return c.Core.Write(e, f)
}

func (c laCore) Sync() error {
	c.g.use("Sync")
	return c.Core.Sync()
}

// laLogger is a Debug-level observed logger under a guard.
func laLogger() (*zap.Logger, *observer.ObservedLogs, *laGuard) {
	core, logs := observer.New(zapcore.DebugLevel)
	g := &laGuard{}
	return zap.New(laCore{Core: core, g: g}), logs, g
}

// laStop stops e, requires a clean Stop, closes the guard and checks that
// no log entry is written after Stop returned, also once Stats,
// Telemetry, reads of an earlier View, refused writes and a second Stop
// have been called.
func laStop(t *testing.T, e *ringpipe.Engine, logs *observer.ObservedLogs, g *laGuard) {
	t.Helper()
	v := e.View()
	stop(t, e)
	g.closed.Store(true)
	n := logs.Len()
	_ = e.Stats()
	_ = e.Telemetry()
	for _, sp := range e.Spaces() {
		_, _ = v.Get(sp.ID, make(ringpipe.Point, sp.Dims))
		_, err := e.Put(context.Background(), sp.ID, make(ringpipe.Point, sp.Dims), []byte("after"))
		assert.ErrorIs(t, err, ringpipe.ErrStopped)
		_, _ = e.PutAsync(context.Background(), sp.ID, make(ringpipe.Point, sp.Dims), []byte("after"))
		_ = e.Flush(context.Background(), sp.ID)
	}
	_ = e.Sync(context.Background())
	require.NoError(t, e.Stop(ctxFor(t)), "a second Stop")
	time.Sleep(50 * time.Millisecond)
	if !assert.Equal(t, n, logs.Len(), "log entries after Stop returned") {
		for _, en := range logs.All()[n:] {
			t.Logf("  after Stop: %s %q %v", en.Level, en.Message, en.ContextMap())
		}
	}
	g.check(t, "after Stop")
}

// laEntries are the entries with message msg.
func laEntries(logs *observer.ObservedLogs, msg string) []observer.LoggedEntry {
	return logs.FilterMessage(msg).All()
}

// laDump logs every entry (for a failing test's reader).
func laDump(t *testing.T, what string, es []observer.LoggedEntry) {
	t.Helper()
	t.Logf("%s: %d entries", what, len(es))
	for _, en := range es {
		t.Logf("  %s %s %q %v", en.Time.Format("15:04:05.000000"), en.Level, en.Message, en.ContextMap())
	}
}

// laHistogram counts entries by level and message.
func laHistogram(es []observer.LoggedEntry) map[string]int {
	out := make(map[string]int)
	for _, en := range es {
		out[en.Level.String()+" "+en.Message]++
	}
	return out
}

// laUint is a numeric field's value (any integer type), and whether it is
// one.
func laUint(f map[string]any, key string) (uint64, bool) {
	switch v := f[key].(type) {
	case int64:
		return uint64(v), true
	case uint64:
		return v, true
	case uint32:
		return uint64(v), true
	case int32:
		return uint64(v), true
	case int:
		return uint64(v), true
	}
	return 0, false
}

// TestLogsStart: at Start, one entry names the backend, the kernel version
// and (io_uring) the io_uring features, as structured fields agreeing with
// Stats; a recovery summary follows, also on the first Start of an empty
// directory; nothing at Error level. BackendAuto, BackendURing and
// BackendStd on a real directory. A nil Logger works.
func TestLogsStart(t *testing.T) {
	for _, b := range []ringpipe.Backend{ringpipe.BackendAuto, ringpipe.BackendURing, ringpipe.BackendStd} {
		t.Run(b.String(), func(t *testing.T) {
			lg, logs, g := laLogger()
			cfg := realConfig(t, b)
			cfg.Logger = lg
			e, err := ringpipe.Start(ctxFor(t), cfg)
			if b == ringpipe.BackendURing && err != nil && strings.Contains(err.Error(), "io_uring") {
				t.Skipf("io_uring unavailable here: %v", err)
			}
			require.NoError(t, err)
			t.Cleanup(func() { _ = e.Stop(context.Background()) })
			st := e.Stats()
			startLogs := logs.All()
			laDump(t, "start", startLogs)

			// The backend entry: every field that names what Stats says.
			var named []observer.LoggedEntry
			for _, en := range startLogs {
				f := en.ContextMap()
				if f["backend"] == st.Backend && f["kernel"] == st.KernelVersion && en.Level >= zapcore.InfoLevel {
					named = append(named, en)
				}
			}
			if assert.NotEmpty(t, named, "an entry at Start with fields backend=%q kernel=%q", st.Backend, st.KernelVersion) {
				en := named[0]
				assert.Equal(t, zapcore.InfoLevel, en.Level, "the backend entry's level")
				assert.NotEmpty(t, st.KernelVersion, "Stats.KernelVersion")
				if st.Backend == "uring" {
					feat, ok := en.ContextMap()["features"]
					assert.True(t, ok, "the io_uring features are logged")
					assert.NotContains(t, []any{nil, "", "0x0", uint32(0), int64(0)}, feat, "the io_uring features are not empty")
				}
			}
			// Fixed: before, with BackendAuto three entries at Info named
			// the backend ("ring backend" from ring.New, for the engine's
			// ring and the block reads' ring, and the engine's "ring").
			assert.Len(t, named, 1, "one entry at Info or above names the backend")
			switch b {
			case ringpipe.BackendStd:
				assert.Equal(t, "std", st.Backend)
			case ringpipe.BackendURing:
				assert.Equal(t, "uring", st.Backend)
			}

			// The recovery summary of an empty directory.
			rec := laEntries(logs, "recovered")
			if assert.Len(t, rec, 1, "one recovery summary at the first Start of an empty directory") {
				f := rec[0].ContextMap()
				for _, k := range []string{"spaces", "blocks", "hot_records", "wal_records"} {
					v, ok := laUint(f, k)
					assert.True(t, ok, "recovery summary field %s is a number (%v)", k, f[k])
					assert.Zero(t, v, "recovery summary of an empty directory: %s", k)
				}
			}
			for _, en := range startLogs {
				assert.Less(t, en.Level, zapcore.WarnLevel, "a Warn or Error at a clean Start: %q %v", en.Message, en.ContextMap())
			}
			laStop(t, e, logs, g)
		})
	}

	t.Run("nil Logger", func(t *testing.T) {
		cfg := realConfig(t, ringpipe.BackendAuto)
		cfg.Logger = nil
		e := start(t, cfg)
		sp := createSpace(t, e, "s", 1, 8)
		ctx := ctxFor(t)
		rev, err := e.Put(ctx, sp, ringpipe.Point{1}, []byte("v"))
		require.NoError(t, err)
		tk, err := e.PutAsync(ctx, sp, ringpipe.Point{2}, []byte("w"))
		require.NoError(t, err)
		_, err = tk.Wait(ctx)
		require.NoError(t, err)
		require.NoError(t, e.Flush(ctx, sp))
		rec, err := e.Get(ctx, sp, ringpipe.Point{1})
		require.NoError(t, err)
		assert.Equal(t, rev, rec.Revision)
		stop(t, e)
		e = start(t, cfg) // recovery with a nil Logger
		_, err = e.Get(ctx, sp, ringpipe.Point{2})
		require.NoError(t, err)
		stop(t, e)
	})
}

// laWorkload runs n Puts (8 goroutines), n/4 Deletes and n/4 PutAsyncs
// (waited in groups of 64) into sp, then n Gets, n/64 Scans and n/64
// View reads; it returns the log entries the writes and the reads added.
func laWorkload(t *testing.T, e *ringpipe.Engine, logs *observer.ObservedLogs, sp ringpipe.SpaceID, n int) (writes, reads []observer.LoggedEntry) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, e.Sync(ctx))
	before := logs.Len()
	const writers = 8
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range n / writers {
				_, err := e.Put(ctx, sp, ringpipe.Point{uint32(w), uint32(i)}, []byte("value-0123456789"))
				if !assert.NoError(t, err) {
					return
				}
			}
		})
	}
	lcWait(t, "the Puts", lcDone(&wg))
	for i := range n / 4 {
		_, err := e.Delete(ctx, sp, ringpipe.Point{uint32(i % writers), uint32(i / writers)})
		require.NoError(t, err)
	}
	var tks []*ringpipe.Ticket
	for i := range n / 4 {
		tk, err := e.PutAsync(ctx, sp, ringpipe.Point{writers + uint32(i%writers), uint32(i / writers)}, []byte("async-0123456789"))
		require.NoError(t, err)
		tks = append(tks, tk)
		if len(tks) == 64 || i == n/4-1 {
			for _, tk := range tks {
				_, err := tk.Wait(ctx)
				require.NoError(t, err)
			}
			tks = tks[:0]
		}
	}
	require.NoError(t, e.Sync(ctx))
	mid := logs.Len()
	for i := range n {
		_, err := e.Get(ctx, sp, ringpipe.Point{uint32(i % writers), uint32(i / writers)})
		if i/writers < n/4/writers || i%writers == 0 && i/writers == n/4/writers {
			continue // deleted
		}
		require.NoError(t, err)
	}
	for i := range n / 64 {
		box := ringpipe.Box{Min: ringpipe.Point{0, uint32(i)}, Max: ringpipe.Point{2 * writers, uint32(i + 8)}}
		require.NoError(t, e.Scan(ctx, sp, box, func(ringpipe.Record) bool { return true }))
		_, _ = e.View().Get(sp, ringpipe.Point{writers, uint32(i)})
	}
	all := logs.All()
	return all[before:mid], all[mid:]
}

// TestLogsNothingPerWrite: "nothing per write". On the simulated disk, a
// workload of N = 20,000 Puts (and N/4 Deletes and N/4 PutAsyncs, and N
// Gets, N/64 Scans and View reads) and the same workload at 2N log the
// same entries at every level (the logger is at Debug): nothing grows
// with N but seals (one per full hot file, by design), which are counted
// against Stats.SealedBlocks.
func TestLogsNothingPerWrite(t *testing.T) {
	const n = 20000
	var hist [2]map[string]int
	var seals [2]uint64
	for i, size := range []int{n, 2 * n} {
		lg, logs, g := laLogger()
		disk := newSimDisk(t, int64(500+i))
		cfg := simConfig(t, disk)
		cfg.Logger = lg
		e := start(t, cfg)
		sp := createSpace(t, e, "s", 2, 16)
		st0 := e.Stats()
		t0 := time.Now()
		writes, reads := laWorkload(t, e, logs, sp, size)
		st := e.Stats()
		t.Logf("N=%d: %v; stats %+v", size, time.Since(t0).Round(time.Millisecond), st)
		laDump(t, fmt.Sprintf("N=%d writes", size), writes)
		assert.Empty(t, reads, "log entries from %d reads", size)
		laDump(t, fmt.Sprintf("N=%d reads", size), reads)
		hist[i] = laHistogram(writes)
		seals[i] = st.SealedBlocks - st0.SealedBlocks
		assert.EqualValues(t, seals[i], hist[i]["info sealed"], "one 'sealed' entry per block sealed")
		delete(hist[i], "info sealed")
		laStop(t, e, logs, g)
	}
	assert.Equal(t, hist[0], hist[1], "log entries by level and message, other than seals, at N and 2N writes")
	for k, v := range hist[1] {
		assert.LessOrEqual(t, v, hist[0][k], "entries %q grow with the number of writes", k)
	}
}

// TestLogsRecoverySummaryAfterPowerLoss: after a power cut on the
// simulated disk (writes acknowledged, more in flight), the next Start
// logs one recovery summary whose counts say what was replayed: at least
// every acknowledged write (from hot segments or the staging WAL), and a
// next revision above every acknowledged one.
func TestLogsRecoverySummaryAfterPowerLoss(t *testing.T) {
	for seed := int64(1); seed <= seeds(3); seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			t.Logf("seed %d", seed)
			disk := newSimDisk(t, 600+seed)
			cfg := simConfig(t, disk)
			e := start(t, cfg)
			sp := createSpace(t, e, "s", 2, 10)
			ctx := ctxFor(t)
			if seed%2 == 0 {
				stallHot(disk, sp) // writes acknowledged from the staging WAL
			}
			var acked atomic.Int64
			var maxRev atomic.Uint64
			var wg sync.WaitGroup
			for w := range 4 {
				wg.Go(func() {
					for i := range 100 {
						rev, err := e.Put(ctx, sp, ringpipe.Point{uint32(w), uint32(i)}, []byte("v"))
						if assert.NoError(t, err) {
							acked.Add(1)
							for m := maxRev.Load(); uint64(rev) > m && !maxRev.CompareAndSwap(m, uint64(rev)); m = maxRev.Load() {
							}
						}
					}
				})
			}
			lcWait(t, "the Puts", lcDone(&wg))
			for i := range 50 { // in flight at the cut
				_, _ = e.PutAsync(ctx, sp, ringpipe.Point{5, uint32(i)}, []byte("inflight"))
			}
			rep := disk.PowerLoss(rand.New(rand.NewSource(seed)))
			t.Logf("power loss: %+v", rep)
			sctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			defer cancel()
			t.Logf("Stop after the power loss: %v", e.Stop(sctx))

			lg, logs, g := laLogger()
			cfg.Logger = lg
			e = start(t, cfg)
			laDump(t, "Start after the power loss", logs.All())
			rec := laEntries(logs, "recovered")
			require.Len(t, rec, 1, "one recovery summary")
			f := rec[0].ContextMap()
			spaces, _ := laUint(f, "spaces")
			assert.EqualValues(t, 1, spaces, "spaces recovered")
			hotN, ok1 := laUint(f, "hot_records")
			walN, ok2 := laUint(f, "wal_records")
			next, ok3 := laUint(f, "next_revision")
			require.True(t, ok1 && ok2 && ok3, "the summary's counts are numeric fields: %v", f)
			assert.GreaterOrEqual(t, hotN+walN, uint64(acked.Load()), "records replayed (hot %d + WAL %d) against %d acknowledged", hotN, walN, acked.Load())
			assert.Greater(t, next, maxRev.Load(), "next_revision above every acknowledged revision")
			for _, en := range logs.All() {
				assert.Less(t, en.Level, zapcore.ErrorLevel, "an Error at a Start that succeeds: %q %v", en.Message, en.ContextMap())
			}
			laStop(t, e, logs, g)
		})
	}
}

// TestLogsRecoverySummaryTornTail: a torn last write of a hot segment is
// dropped by recovery (TolerateTornTail, the default); the recovery
// summary must say that something was truncated (the brief: "a recovery
// summary ... after a sim PowerLoss with what was replayed/truncated").
// The torn tail is made deterministic: the last record's bytes are
// damaged after a crash (as a power cut tearing its sectors would), with
// nothing valid after it.
func TestLogsRecoverySummaryTornTail(t *testing.T) {
	disk, cfg, sp, target := crashedHotSegment(t)
	data, err := disk.ReadFile(target)
	require.NoError(t, err)
	at := strings.LastIndex(string(data), "value 49")
	require.Positive(t, at, "the last record's value in %s", target)
	require.NoError(t, disk.FlipBit(target, int64(at)*8+3))

	lg, logs, g := laLogger()
	cfg.Logger = lg
	e := start(t, cfg)
	laDump(t, "Start over a torn tail", logs.All())
	ctx := ctxFor(t)
	_, err = e.Get(ctx, sp, ringpipe.Point{49})
	require.ErrorIs(t, err, ringpipe.ErrNotFound, "the torn last write was dropped (precondition)")
	_, err = e.Get(ctx, sp, ringpipe.Point{48})
	require.NoError(t, err, "the write before it is kept")

	rec := laEntries(logs, "recovered")
	require.Len(t, rec, 1, "one recovery summary")
	said := false
	for _, en := range logs.All() {
		text := strings.ToLower(en.Message + " " + fmt.Sprint(en.ContextMap()))
		for _, w := range []string{"torn", "truncat", "dropped", "discard"} {
			if strings.Contains(text, w) {
				said = true
			}
		}
	}
	// Fixed: before, recovery dropped the torn tail silently (the summary
	// counted only what was replayed); now hot.Open and wal.Open report
	// what they zeroed, the summary has torn_tails_dropped, and each gets a
	// "torn tail dropped" Warn with its file, offset and bytes.
	assert.True(t, said, "no entry at Start says that a torn tail was truncated")
	laStop(t, e, logs, g)
}

// laFieldHas says whether some field of f names want (a string field equal
// to it, or an error field containing it).
func laFieldHas(f map[string]any, want string) bool {
	for _, v := range f {
		if s, ok := v.(string); ok && strings.Contains(s, want) {
			return true
		}
	}
	return false
}

// TestLogsActorRestarts: an actor's failure and restart are logged with
// the actor's name, the error and the restart count; past the restart
// limit the failure is logged once (and writes refused afterwards log
// nothing). The publisher fails at its chaos point, once per write.
func TestLogsActorRestarts(t *testing.T) {
	defer testhook.SetNoInline(true)()
	lg, logs, g := laLogger()
	disk := newSimDisk(t, 700)
	cfg := simConfig(t, disk)
	cfg.Logger = lg
	e := start(t, cfg)
	sp := createSpace(t, e, "s", 1, 8)
	ctx := ctxFor(t)
	var budget atomic.Int64
	defer testhook.SetInjector(func(actor, point string) error {
		if actor == "publisher" && budget.Add(-1) >= 0 {
			return errors.New("logs audit: injected publisher failure")
		}
		return nil
	})()

	for k := 1; k <= 5; k++ {
		budget.Store(1)
		before := logs.Len()
		_, err := e.Put(ctx, sp, ringpipe.Point{uint32(k)}, []byte("v"))
		require.NoError(t, err)
		waitFor(t, e, fmt.Sprintf("restart %d", k), func(st ringpipe.Stats) bool { return st.ActorRestarts["publisher"] >= uint64(k) })
		// The restart's entry comes right after the count moves.
		deadline := time.Now().Add(hangTimeout)
		for len(laEntries(logs, "actor restarted")) < k && time.Now().Before(deadline) {
			time.Sleep(pollEvery)
		}
		es := logs.All()[before:]
		if k == 1 {
			laDump(t, "restart 1", es)
		}
		var actor, errText, count bool
		for _, en := range es {
			f := en.ContextMap()
			if laFieldHas(f, "publisher") {
				actor = true
			}
			if laFieldHas(f, "injected publisher failure") {
				errText = true
			}
			for key := range f {
				if n, ok := laUint(f, key); ok && n == uint64(k) && (strings.Contains(key, "restart") || strings.Contains(key, "count") || strings.Contains(key, "attempt")) {
					count = true
				}
			}
		}
		assert.True(t, actor, "restart %d: an entry names the actor", k)
		assert.True(t, errText, "restart %d: an entry carries the error", k)
		// Fixed: before, neither "actor failed" nor "actor restarted"
		// said how many restarts there had been; "actor restarted" now
		// names the actor and carries restarts (its total, as
		// Stats.ActorRestarts) and restarts_in_window.
		assert.True(t, count, "restart %d: an entry carries the restart count (%d)", k, k)
	}

	// One failure more within the window: the engine fails.
	before := logs.Len()
	budget.Store(1)
	_, _ = e.PutAsync(ctx, sp, ringpipe.Point{9}, []byte("sixth"))
	deadline := time.Now().Add(hangTimeout)
	for !e.Telemetry().Failed {
		require.True(t, time.Now().Before(deadline), "not failed after a 6th failure")
		time.Sleep(pollEvery)
	}
	time.Sleep(100 * time.Millisecond)
	escalated := logs.All()[before:]
	laDump(t, "past the limit", escalated)
	limit := laEntries(logs, "restart limit exceeded")
	if assert.Len(t, limit, 1, "the restart limit is logged once") {
		assert.Equal(t, zapcore.ErrorLevel, limit[0].Level)
		assert.True(t, laFieldHas(limit[0].ContextMap(), "injected publisher failure"), "the limit's entry carries the last error")
	}
	errs := 0
	for _, en := range escalated {
		if en.Level >= zapcore.ErrorLevel {
			errs++
		}
	}
	t.Logf("entries at Error level for the one escalation: %d", errs)
	n := logs.Len()
	for i := range 50 {
		_, err := e.Put(ctx, sp, ringpipe.Point{uint32(10 + i)}, []byte("refused"))
		require.ErrorIs(t, err, ringpipe.ErrFailed)
		_, err = e.PutAsync(ctx, sp, ringpipe.Point{uint32(10 + i)}, []byte("refused"))
		require.ErrorIs(t, err, ringpipe.ErrFailed)
		require.ErrorIs(t, e.Sync(ctx), ringpipe.ErrFailed)
	}
	if !assert.Equal(t, n, logs.Len(), "writes refused by a failed engine log nothing") {
		laDump(t, "refused writes", logs.All()[n:])
	}
	sctx, cancel := context.WithTimeout(ctx, hangTimeout)
	defer cancel()
	t.Logf("Stop of the failed engine: %v", e.Stop(sctx))
	g.closed.Store(true)
	n = logs.Len()
	_ = e.Stats()
	_ = e.Stop(sctx)
	time.Sleep(50 * time.Millisecond)
	assert.Equal(t, n, logs.Len(), "entries after the failed engine's Stop returned")
	g.check(t, "after the failed engine's Stop")
}

// TestLogsSeals: every seal is logged once, with the space, the records
// sealed and the block, as numeric fields: a Flush's seal and the seals a
// small SealThreshold triggers, in two spaces. The entries agree with
// Stats.SealedBlocks and with the records written.
func TestLogsSeals(t *testing.T) {
	lg, logs, g := laLogger()
	disk := newSimDisk(t, 710)
	cfg := simConfig(t, disk)
	cfg.Logger = lg
	cfg.SealThreshold = 64
	e := start(t, cfg)
	ctx := ctxFor(t)
	a := createSpace(t, e, "a", 1, 16)
	b := createSpace(t, e, "b", 1, 16)
	written := map[ringpipe.SpaceID]uint64{}
	for i := range 300 {
		sp := a
		if i%3 == 0 {
			sp = b
		}
		_, err := e.Put(ctx, sp, ringpipe.Point{uint32(i)}, []byte("v"))
		require.NoError(t, err)
		written[sp]++
	}
	require.NoError(t, e.Flush(ctx, a))
	require.NoError(t, e.Flush(ctx, b))
	st := e.Stats()
	sealed := laEntries(logs, "sealed")
	assert.EqualValues(t, st.SealedBlocks, len(sealed), "one 'sealed' entry per block sealed (Stats.SealedBlocks)")
	records := map[ringpipe.SpaceID]uint64{}
	blocks := map[uint64]bool{}
	for _, en := range sealed {
		f := en.ContextMap()
		space, ok1 := laUint(f, "space")
		n, ok2 := laUint(f, "records")
		blk, ok3 := laUint(f, "block")
		if !assert.True(t, ok1 && ok2 && ok3, "a seal's space, records and block are numeric fields: %v", f) {
			continue
		}
		assert.Contains(t, []ringpipe.SpaceID{a, b}, ringpipe.SpaceID(space))
		assert.Positive(t, n, "records sealed")
		assert.False(t, blocks[blk], "block %d logged twice", blk)
		blocks[blk] = true
		records[ringpipe.SpaceID(space)] += n
		assert.Equal(t, zapcore.InfoLevel, en.Level)
	}
	assert.Equal(t, written, records, "records sealed by space, summed over the entries")
	laStop(t, e, logs, g)
}

// laRouting returns the routing entries (to the WAL, back to the hot
// segment) of space.
func laRouting(logs *observer.ObservedLogs, space ringpipe.SpaceID) (toWAL, toHot []observer.LoggedEntry) {
	for _, en := range logs.All() {
		if !strings.Contains(en.Message, "routed") {
			continue
		}
		if sp, ok := laUint(en.ContextMap(), "space"); !ok || ringpipe.SpaceID(sp) != space {
			continue
		}
		if strings.Contains(en.Message, "staging WAL") {
			toWAL = append(toWAL, en)
		} else {
			toHot = append(toHot, en)
		}
	}
	return toWAL, toHot
}

// TestLogsRoutingChanges: a space whose hot file turns slow is logged as
// routed to the staging WAL once, with the space, however many writes
// follow; the space beside it is never logged as routed; once the file is
// fast again, the return to the hot segment is logged once; a second
// slow spell logs a second change. Every routing entry names its space as
// a numeric field. The file is slowed as the pressure audit does it: the
// sim's Delay fault (virtual time, so that deadlines fire) and slowCtl's
// real-time delay of 5 ms (so that the engine's own sync timing, which
// decides the way back, sees the file slow too).
func TestLogsRoutingChanges(t *testing.T) {
	lg, logs, g := laLogger()
	disk := newSimDisk(t, 720)
	key := prHotKey(1) // the first space created gets ID 1
	ctl := newSlowCtl(key)
	cfg := ctl.config(simConfig(t, disk), disk)
	cfg.Logger = lg
	e := start(t, cfg)
	t.Cleanup(ctl.normal) // before start's Stop
	slow := createSpace(t, e, "slow", routeSpec.Dims, routeSpec.Bits)
	fast := createSpace(t, e, "fast", routeSpec.Dims, routeSpec.Bits)
	require.Equal(t, ringpipe.SpaceID(1), slow)
	routedWrites(t, e, slow, fast, 2, 10, "warm")
	w, h := laRouting(logs, slow)
	require.Empty(t, append(w, h...), "routing changes before any stall")

	for round := 1; round <= 2; round++ {
		ctl.set(key, 5*time.Millisecond)
		prVirtualDelay(disk, hotPrefix(slow))
		st0 := e.Stats()
		routedWrites(t, e, slow, fast, 4, 60, fmt.Sprintf("slow%d", round))
		st := e.Stats()
		require.Greater(t, st.StagedWrites, st0.StagedWrites, "round %d: the slow space's writes were staged", round)
		toWAL, toHot := laRouting(logs, slow)
		assert.Len(t, toWAL, round, "round %d: routed to the staging WAL once per change (%d writes to it)", round, 4*30)
		assert.Len(t, toHot, round-1, "round %d: routed back to the hot segment while still slow", round)

		ctl.set(key, 0)
		disk.ClearFaults()
		deadline := time.Now().Add(eventualTimeout)
		for i := 0; ; i++ {
			if _, back := laRouting(logs, slow); len(back) >= round {
				break
			}
			require.True(t, time.Now().Before(deadline), "round %d: the space is not routed back to its hot segment once fast", round)
			_, err := e.Put(ctxFor(t), slow, ringpipe.Point{200, uint32(i % 256)}, []byte("healed"))
			require.NoError(t, err)
		}
		// More writes on the healed file: no further change.
		routedWrites(t, e, slow, fast, 2, 40, fmt.Sprintf("healed%d", round))
		toWAL, toHot = laRouting(logs, slow)
		assert.Len(t, toWAL, round, "round %d: routing entries to the WAL after healing", round)
		assert.Len(t, toHot, round, "round %d: routed back once per change", round)
	}
	fw, fh := laRouting(logs, fast)
	assert.Empty(t, append(fw, fh...), "the fast space is never logged as routed")
	for _, en := range logs.All() {
		if strings.Contains(en.Message, "routed") {
			_, ok := laUint(en.ContextMap(), "space")
			assert.True(t, ok, "a routing entry without a numeric space field: %q %v", en.Message, en.ContextMap())
			assert.Equal(t, zapcore.InfoLevel, en.Level, "routing entry level: %q", en.Message)
		}
	}
	if t.Failed() {
		laDump(t, "routing run", logs.All())
	}
	ctl.normal()
	laStop(t, e, logs, g)
}

// laStructured checks that entries carry their values as fields: no
// message holds a digit (a formatted value), and each field is a typed
// zap field, not a value formatted by reflection.
func laStructured(t *testing.T, es []observer.LoggedEntry) {
	t.Helper()
	for _, en := range es {
		assert.False(t, strings.ContainsAny(en.Message, "0123456789%="), "a value formatted into the message: %q", en.Message)
		for _, f := range en.Context {
			assert.NotEqual(t, zapcore.ReflectType, f.Type, "%q: field %s formatted by reflection", en.Message, f.Key)
		}
	}
}

// TestLogsCleanRun: a clean Start, CreateSpace, Puts (one and many
// writers), PutAsync, Delete, Sync, Flush and Stop log nothing at Error
// level (nor Warn); every entry's values are structured fields; Stop
// logs a last entry before it returns; after Stop returns nothing is
// logged and the zap core is not touched (laStop). On the simulated disk
// and on a real directory (BackendAuto).
func TestLogsCleanRun(t *testing.T) {
	for _, real := range []bool{false, true} {
		t.Run(map[bool]string{false: "sim", true: "real"}[real], func(t *testing.T) {
			lg, logs, g := laLogger()
			cfg := simConfig(t, newSimDisk(t, 730))
			if real {
				cfg = realConfig(t, ringpipe.BackendAuto)
			}
			cfg.Logger = lg
			cfg.SealThreshold = 128
			e := start(t, cfg)
			ctx := ctxFor(t)
			sp := createSpace(t, e, "s", 2, 10)
			var wg sync.WaitGroup
			for w := range 4 {
				wg.Go(func() {
					for i := range 100 {
						_, err := e.Put(ctx, sp, ringpipe.Point{uint32(w), uint32(i)}, []byte("v"))
						assert.NoError(t, err)
					}
				})
			}
			lcWait(t, "writers", lcDone(&wg))
			var tks []*ringpipe.Ticket
			for i := range 100 {
				tk, err := e.PutAsync(ctx, sp, ringpipe.Point{9, uint32(i)}, []byte("a"))
				require.NoError(t, err)
				tks = append(tks, tk)
				_, err = e.Delete(ctx, sp, ringpipe.Point{0, uint32(i)})
				require.NoError(t, err)
			}
			require.NoError(t, e.Sync(ctx))
			for _, tk := range tks {
				_, err := tk.Wait(ctx)
				require.NoError(t, err)
			}
			require.NoError(t, e.Flush(ctx, sp))
			// Writes that Stop drains.
			for i := range 50 {
				_, err := e.PutAsync(ctx, sp, ringpipe.Point{10, uint32(i)}, []byte("drained"))
				require.NoError(t, err)
			}
			before := logs.Len()
			laStop(t, e, logs, g)
			all := logs.All()
			laDump(t, "clean run", all)
			if assert.Greater(t, len(all), before, "Stop logs something") {
				last := all[len(all)-1]
				assert.Equal(t, zapcore.InfoLevel, last.Level, "Stop's last entry: %q", last.Message)
			}
			for _, en := range all {
				assert.Less(t, en.Level, zapcore.WarnLevel, "a clean run logged %s %q %v", en.Level, en.Message, en.ContextMap())
			}
			laStructured(t, all)
			assert.NotEmpty(t, laEntries(logs, "sealed"), "seals happened")
		})
	}
}

// TestLogsForcedStopNoLateLog: a Stop whose ctx ends while the disk does
// not answer (a PutAsync queued and a Put committing inline are waiting
// on it) still returns; once it has, the engine never logs again nor
// touches the zap core, also when the hung Put returns and the disk
// answers again.
func TestLogsForcedStopNoLateLog(t *testing.T) {
	lg, logs, g := laLogger()
	cfg, _, gate := gatedConfig(t, 740)
	cfg.Logger = lg
	e := start(t, cfg)
	defer gate.release()
	sp := createSpace(t, e, "s", 1, 8)
	_, err := e.Put(ctxFor(t), sp, ringpipe.Point{1}, []byte("before"))
	require.NoError(t, err)
	gate.shut()
	tk, err := e.PutAsync(ctxFor(t), sp, ringpipe.Point{2}, []byte("queued"))
	require.NoError(t, err)
	put := make(chan error, 1)
	go func() {
		_, err := e.Put(context.Background(), sp, ringpipe.Point{3}, []byte("hung"))
		put <- err
	}()
	time.Sleep(20 * time.Millisecond)
	sctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- e.Stop(sctx) }()
	select {
	case err := <-stopped:
		t.Logf("forced Stop: %v", err)
	case <-time.After(hangTimeout):
		gate.release()
		t.Fatal("Stop did not return")
	}
	g.closed.Store(true)
	n := logs.Len()
	select {
	case <-tk.Done():
	default:
		t.Errorf("the PutAsync's ticket is still open after Stop returned")
	}
	lcWait(t, "the hung Put", func() <-chan struct{} {
		c := make(chan struct{})
		go func() { t.Logf("the hung Put: %v", <-put); close(c) }()
		return c
	}())
	gate.release()
	time.Sleep(100 * time.Millisecond)
	_ = e.Stats()
	assert.Equal(t, n, logs.Len(), "entries after the forced Stop returned")
	laDump(t, "forced stop", logs.All())
	g.check(t, "after a forced Stop")
}

// laWindows collects the windows callers measured around their own
// acknowledged writes.
type laWindows struct {
	mu sync.Mutex
	ds []time.Duration
}

func (w *laWindows) add(d time.Duration) { w.mu.Lock(); w.ds = append(w.ds, d); w.mu.Unlock() }

// quantile is the q-th percentile of the windows by HdrHistogram's rank
// (the round(q/100*n)-th smallest, at least the first).
func (w *laWindows) quantile(q float64) time.Duration {
	ds := slices.Clone(w.ds)
	slices.Sort(ds)
	r := max(1, int(q/100*float64(len(ds))+0.5))
	return ds[r-1]
}

// laWrite is one write by rng's choice (Put, Delete, or PutAsync then
// Wait), its window measured around it; it returns whether it was
// acknowledged.
func laWrite(ctx context.Context, e *ringpipe.Engine, sp ringpipe.SpaceID, rng *rand.Rand, w *laWindows) bool {
	p := ringpipe.Point{uint32(rng.Intn(1024)), uint32(rng.Intn(1024))}
	t0 := time.Now()
	var err error
	switch k := rng.Intn(4); k {
	case 0, 1:
		_, err = e.Put(ctx, sp, p, []byte("put"))
	case 2:
		_, err = e.Delete(ctx, sp, p)
	default:
		var tk *ringpipe.Ticket
		if tk, err = e.PutAsync(ctx, sp, p, []byte("async")); err == nil {
			_, err = tk.Wait(ctx)
		}
	}
	d := time.Since(t0)
	if err != nil {
		return false
	}
	w.add(d)
	return true
}

// laCheckSummary checks a LatencySummary's order.
func laCheckSummary(t *testing.T, what string, s ringpipe.LatencySummary) bool {
	return assert.GreaterOrEqual(t, s.P50, time.Duration(0), "%s: P50 >= 0", what) &&
		assert.LessOrEqual(t, s.P50, s.P99, "%s: P50 <= P99 (%+v)", what, s) &&
		assert.LessOrEqual(t, s.P99, s.P999, "%s: P99 <= P999 (%+v)", what, s) &&
		assert.LessOrEqual(t, s.P999, s.Max, "%s: P999 <= Max (%+v)", what, s)
}

// TestLogsStatsLatency: Stats' WriteLatency counts every acknowledged Put,
// Delete and PutAsync (StagedWrites + DirectWrites, the godoc's "Put,
// enqueue to durable ack", which the publisher records for all three),
// and nothing refused; its samples lie inside the windows the callers
// measured around their own calls, so Max <= the largest window and each
// percentile <= the callers' same percentile (within HdrHistogram's
// 0.1%); P50 <= P99 <= P999 <= Max at any instant (read by goroutines
// beside the writers, QueueDepth within [0, capacity]); SyncLatency
// counts at most Stats.Syncs ("one fdatasync" against every
// fdatasync/fsync issued); QueueDepth is 0 when idle; Stats after Stop
// keeps the last values. One writer (inline commits) then 16.
func TestLogsStatsLatency(t *testing.T) {
	for _, real := range []bool{false, true} {
		t.Run(map[bool]string{false: "sim", true: "real"}[real], func(t *testing.T) {
			seed := lcSeed(t)
			cfg := simConfig(t, newSimDisk(t, seed))
			if real {
				cfg = realConfig(t, ringpipe.BackendAuto)
			}
			cfg.QueueCapacity = 64
			e := start(t, cfg)
			ctx := ctxFor(t)
			sp := createSpace(t, e, "s", 2, 10)
			st0 := e.Stats()
			assert.Zero(t, st0.WriteLatency.Count, "WriteLatency.Count before any write")
			assert.Zero(t, st0.QueueDepth, "QueueDepth of a new engine")

			// Readers beside the writers.
			stopReaders := make(chan struct{})
			var readers sync.WaitGroup
			for range 3 {
				readers.Go(func() {
					var prev uint64
					for {
						select {
						case <-stopReaders:
							return
						default:
						}
						st := e.Stats()
						if !laCheckSummary(t, "WriteLatency (concurrent)", st.WriteLatency) ||
							!laCheckSummary(t, "SyncLatency (concurrent)", st.SyncLatency) ||
							!assert.GreaterOrEqual(t, st.WriteLatency.Count, prev, "WriteLatency.Count went down") ||
							!assert.True(t, st.QueueDepth >= 0 && st.QueueDepth <= 64, "QueueDepth %d outside [0, 64]", st.QueueDepth) {
							return
						}
						prev = st.WriteLatency.Count
						time.Sleep(200 * time.Microsecond)
					}
				})
			}

			var win laWindows
			var acked atomic.Uint64
			rng := rand.New(rand.NewSource(seed))
			for range 300 {
				if laWrite(ctx, e, sp, rng, &win) {
					acked.Add(1)
				}
			}
			var wg sync.WaitGroup
			for w := range 16 {
				wg.Go(func() {
					rng := rand.New(rand.NewSource(seed + int64(w) + 1))
					for i := range 100 {
						if laWrite(ctx, e, sp, rng, &win) {
							acked.Add(1)
						}
						if i%20 == 0 {
							// Refused before they are queued: in no count.
							_, err := e.Put(ctx, sp, ringpipe.Point{1}, []byte("bad point"))
							assert.ErrorIs(t, err, ringpipe.ErrInvalidPoint)
							_, err = e.PutAsync(ctx, sp, ringpipe.Point{1, 2048}, []byte("bad point"))
							assert.ErrorIs(t, err, ringpipe.ErrInvalidPoint)
						}
					}
				})
			}
			lcWait(t, "writers", lcDone(&wg))
			close(stopReaders)
			lcWait(t, "readers", lcDone(&readers))
			require.NoError(t, e.Sync(ctx))

			st := e.Stats()
			t.Logf("acknowledged %d; stats %+v", acked.Load(), st)
			require.Equal(t, int(acked.Load()), len(win.ds))
			assert.Equal(t, acked.Load(), st.WriteLatency.Count, "WriteLatency.Count against the acknowledged Put/Delete/PutAsync")
			assert.Equal(t, st.DirectWrites+st.StagedWrites, st.WriteLatency.Count, "WriteLatency.Count against DirectWrites + StagedWrites")
			assert.Zero(t, st.QueueDepth, "QueueDepth when idle")
			laCheckSummary(t, "WriteLatency", st.WriteLatency)
			laCheckSummary(t, "SyncLatency", st.SyncLatency)
			assert.Positive(t, st.WriteLatency.P50, "P50 of real writes")
			maxWin := win.quantile(100)
			assert.LessOrEqual(t, st.WriteLatency.Max, maxWin, "WriteLatency.Max (enqueue to ack) within the largest caller window")
			for _, q := range []struct {
				name string
				pct  float64
				got  time.Duration
			}{{"P50", 50, st.WriteLatency.P50}, {"P99", 99, st.WriteLatency.P99}, {"P999", 99.9, st.WriteLatency.P999}} {
				callers := win.quantile(q.pct)
				assert.LessOrEqual(t, q.got, callers+callers/500, "WriteLatency.%s %v against the callers' %v", q.name, q.got, callers)
			}
			t.Logf("callers: p50 %v p99 %v p99.9 %v max %v", win.quantile(50), win.quantile(99), win.quantile(99.9), maxWin)
			assert.Positive(t, st.SyncLatency.Count, "SyncLatency.Count after durable writes")
			assert.LessOrEqual(t, st.SyncLatency.Count, st.Syncs, "SyncLatency.Count (one fdatasync each) against Syncs (every fdatasync/fsync issued)")

			// Stats after Stop: the last values, and safe beside Stop.
			done := make(chan struct{})
			go func() {
				defer close(done)
				for range 50 {
					laCheckSummary(t, "WriteLatency (during Stop)", e.Stats().WriteLatency)
				}
			}()
			stop(t, e)
			<-done
			_, err := e.Put(ctx, sp, ringpipe.Point{1, 1}, []byte("after"))
			assert.ErrorIs(t, err, ringpipe.ErrStopped)
			after := e.Stats()
			assert.Equal(t, st.WriteLatency, after.WriteLatency, "WriteLatency after Stop (nothing was written since)")
			assert.Zero(t, after.QueueDepth, "QueueDepth after Stop")
			assert.Equal(t, st.DirectWrites+st.StagedWrites, after.DirectWrites+after.StagedWrites)
		})
	}
}

// laResult is one Wait's outcome.
type laResult struct {
	rev ringpipe.Revision
	err error
}

// TestLogsTicketWaitMany: while the disk does not answer, many goroutines
// Wait on one Ticket, some with contexts that end first (they get ctx's
// error, Done stays open, and the result is not consumed); once the disk
// answers, Done is closed and stays closed (the same channel on every
// call), and every Wait, from any goroutine, any number of times and with
// any ctx (an ended one too), returns the same revision and no error; the
// write is visible to Get as soon as Wait has returned, on every
// goroutine.
func TestLogsTicketWaitMany(t *testing.T) {
	cfg, _, gate := gatedConfig(t, 750)
	e := start(t, cfg)
	defer gate.release()
	sp := createSpace(t, e, "s", 1, 8)
	ctx := ctxFor(t)

	gate.shut()
	tk, err := e.PutAsync(ctx, sp, ringpipe.Point{7}, []byte("v"))
	require.NoError(t, err)
	done := tk.Done()
	assert.Equal(t, done, tk.Done(), "Done returns the same channel")

	// Waits whose ctx ends while the write is pending.
	var early sync.WaitGroup
	for range 8 {
		early.Go(func() {
			c, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
			defer cancel()
			_, err := tk.Wait(c)
			assert.ErrorIs(t, err, context.DeadlineExceeded, "Wait whose ctx ends first")
			cc, ccancel := context.WithCancel(ctx)
			ccancel()
			_, err = tk.Wait(cc)
			assert.ErrorIs(t, err, context.Canceled, "Wait with a cancelled ctx")
		})
	}
	lcWait(t, "the early Waits", lcDone(&early))
	select {
	case <-done:
		t.Fatal("Done closed while the disk does not answer")
	default:
	}

	// Waits that block until the write is durable, and then Get.
	results := make(chan laResult, 64)
	var waiters sync.WaitGroup
	for range 16 {
		waiters.Go(func() {
			for range 4 {
				rev, err := tk.Wait(ctx)
				results <- laResult{rev, err}
				if err == nil {
					rec, gerr := e.Get(ctx, sp, ringpipe.Point{7})
					if assert.NoError(t, gerr, "Get once Wait has returned") {
						assert.Equal(t, rev, rec.Revision, "Get once Wait has returned")
					}
				}
			}
		})
	}
	time.Sleep(10 * time.Millisecond)
	gate.release()
	lcWait(t, "the blocked Waits", lcDone(&waiters))
	close(results)
	var first *laResult
	for r := range results {
		require.NoError(t, r.err)
		require.NotZero(t, r.rev)
		if first == nil {
			first = &r
		}
		assert.Equal(t, first.rev, r.rev, "every Wait returns the same revision")
	}
	for range 3 {
		select {
		case <-tk.Done():
		default:
			t.Fatal("Done not closed, or closed then open again")
		}
		assert.Equal(t, done, tk.Done(), "Done returns the same channel after completion")
		cc, ccancel := context.WithCancel(ctx)
		ccancel()
		rev, err := tk.Wait(cc)
		assert.NoError(t, err, "Wait with an ended ctx on a completed ticket")
		assert.Equal(t, first.rev, rev)
	}
	stop(t, e)
	rev, err := tk.Wait(ctx)
	assert.NoError(t, err, "Wait after Stop on a completed ticket")
	assert.Equal(t, first.rev, rev, "Wait after Stop")
}

// TestLogsTicketVisibleOnWait: many PutAsyncs from several goroutines,
// each Waited for in turn: once Wait returns a revision, Get returns the
// write (that revision, or a later one at the same point, of which there
// is none here).
func TestLogsTicketVisibleOnWait(t *testing.T) {
	seed := lcSeed(t)
	e := start(t, simConfig(t, newSimDisk(t, seed)))
	sp := createSpace(t, e, "s", 2, 10)
	ctx := ctxFor(t)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewSource(seed + int64(w)))
			var tks []*ringpipe.Ticket
			var ps []ringpipe.Point
			for i := range 200 {
				p := ringpipe.Point{uint32(w), uint32(i)}
				tk, err := e.PutAsync(ctx, sp, p, fmt.Appendf(nil, "w%d-%d", w, i))
				if !assert.NoError(t, err) {
					return
				}
				tks, ps = append(tks, tk), append(ps, p)
				if rng.Intn(8) == 0 || i == 199 {
					for j, tk := range tks {
						rev, err := tk.Wait(ctx)
						if !assert.NoError(t, err) {
							return
						}
						rec, err := e.Get(ctx, sp, ps[j])
						if assert.NoError(t, err, "Get %v once its Wait returned %d", ps[j], rev) {
							assert.Equal(t, rev, rec.Revision)
						}
					}
					tks, ps = tks[:0], ps[:0]
				}
			}
		})
	}
	lcWait(t, "writers", lcDone(&wg))
	stop(t, e)
}

// TestLogsTicketsAtStop: tickets outstanding when Stop is called are all
// complete when Stop returns, never left open: after a clean Stop each
// has its revision (Stop drains and acknowledges what was accepted), and
// after a Stop whose ctx ended while the disk did not answer each says
// ErrStopped or has its revision. A write PutAsync refuses (bad point,
// unknown space, value too large) returns the error and no ticket.
func TestLogsTicketsAtStop(t *testing.T) {
	t.Run("clean", func(t *testing.T) {
		e := start(t, simConfig(t, newSimDisk(t, 760)))
		sp := createSpace(t, e, "s", 1, 16)
		ctx := ctxFor(t)
		var tks []*ringpipe.Ticket
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := range 250 {
					tk, err := e.PutAsync(ctx, sp, ringpipe.Point{uint32(w*1000 + i)}, []byte("v"))
					if !assert.NoError(t, err) {
						return
					}
					mu.Lock()
					tks = append(tks, tk)
					mu.Unlock()
				}
			})
		}
		lcWait(t, "writers", lcDone(&wg))
		stop(t, e)
		open := 0
		for _, tk := range tks {
			select {
			case <-tk.Done():
				rev, err := tk.Wait(ctx)
				assert.NoError(t, err, "a write accepted before a clean Stop")
				assert.NotZero(t, rev)
			default:
				open++
			}
		}
		assert.Zero(t, open, "tickets still open after a clean Stop returned (of %d)", len(tks))
	})

	t.Run("forced", func(t *testing.T) {
		cfg, _, gate := gatedConfig(t, 761)
		e := start(t, cfg)
		defer gate.release()
		sp := createSpace(t, e, "s", 1, 16)
		ctx := ctxFor(t)
		_, err := e.Put(ctx, sp, ringpipe.Point{0}, []byte("before"))
		require.NoError(t, err)
		gate.shut()
		var tks []*ringpipe.Ticket
		for i := range 40 {
			tk, err := e.PutAsync(ctx, sp, ringpipe.Point{uint32(1 + i)}, []byte("held"))
			require.NoError(t, err)
			tks = append(tks, tk)
		}
		sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		stopped := make(chan error, 1)
		go func() { stopped <- e.Stop(sctx) }()
		select {
		case err := <-stopped:
			t.Logf("forced Stop: %v", err)
		case <-time.After(hangTimeout):
			gate.release()
			t.Fatal("Stop did not return")
		}
		open, revs, stoppedN := 0, 0, 0
		for _, tk := range tks {
			select {
			case <-tk.Done():
				rev, err := tk.Wait(ctx)
				if err == nil {
					revs++
					assert.NotZero(t, rev)
				} else {
					stoppedN++
					assert.ErrorIs(t, err, ringpipe.ErrStopped, "a ticket Stop cut short")
				}
			default:
				open++
			}
		}
		t.Logf("tickets after the forced Stop: %d with a revision, %d stopped, %d open", revs, stoppedN, open)
		assert.Zero(t, open, "tickets still open after a forced Stop returned")
	})

	t.Run("refused", func(t *testing.T) {
		e := start(t, simConfig(t, newSimDisk(t, 762)))
		sp := createSpace(t, e, "s", 2, 4)
		ctx := ctxFor(t)
		for _, c := range []struct {
			name  string
			space ringpipe.SpaceID
			p     ringpipe.Point
			v     []byte
			want  error
		}{
			{"too few coordinates", sp, ringpipe.Point{1}, []byte("v"), ringpipe.ErrInvalidPoint},
			{"too many coordinates", sp, ringpipe.Point{1, 2, 3}, []byte("v"), ringpipe.ErrInvalidPoint},
			{"coordinate >= 2^Bits", sp, ringpipe.Point{16, 0}, []byte("v"), ringpipe.ErrInvalidPoint},
			{"unknown space", sp + 9, ringpipe.Point{1, 1}, []byte("v"), ringpipe.ErrUnknownSpace},
			{"value too large", sp, ringpipe.Point{1, 1}, make([]byte, 2<<20), ringpipe.ErrValueTooLarge},
		} {
			tk, err := e.PutAsync(ctx, c.space, c.p, c.v)
			assert.ErrorIs(t, err, c.want, c.name)
			assert.Nil(t, tk, "%s: a ticket for a refused write", c.name)
		}
		st := e.Stats()
		assert.Zero(t, st.WriteLatency.Count, "refused writes in WriteLatency")
		assert.Zero(t, st.DirectWrites+st.StagedWrites, "refused writes acknowledged")
		stop(t, e)
	})
}
