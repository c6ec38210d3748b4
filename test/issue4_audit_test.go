package test

import (
	"context"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// auditLogs finds the entries with message msg.
func auditLogs(logs *observer.ObservedLogs, msg string) []observer.LoggedEntry {
	return logs.FilterMessage(msg).All()
}

// TestAuditLogging: issue 4's zap logging: backend, kernel version and
// io_uring features at start; a recovery summary; seals; routing changes;
// actor restarts; and nothing per write (not even at Debug).
func TestAuditLogging(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	disk := newSimDisk(t, 9)
	cfg := simConfig(t, disk)
	cfg.Logger = zap.New(core)
	e := start(t, cfg)

	ringLog := auditLogs(logs, "ring")
	require.Len(t, ringLog, 1, "one start-up log of the ring")
	f := ringLog[0].ContextMap()
	for _, k := range []string{"backend", "kernel", "features"} {
		assert.Contains(t, f, k, "start-up log field %s", k)
	}
	require.Len(t, auditLogs(logs, "recovered"), 1, "a recovery summary")

	ctx := ctxFor(t)
	sp := createSpace(t, e, "logs", 2, 10)
	require.NoError(t, e.Sync(ctx))
	before := logs.Len()

	// Writes of every kind, from one and from many goroutines.
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 40 {
				p := ringpipe.Point{uint32(w), uint32(i)}
				_, err := e.Put(ctx, sp, p, []byte("v"))
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()
	for i := range 50 {
		_, err := e.Delete(ctx, sp, ringpipe.Point{0, uint32(i)})
		require.NoError(t, err)
		_, err = e.PutAsync(ctx, sp, ringpipe.Point{9, uint32(i)}, []byte("a"))
		require.NoError(t, err)
	}
	require.NoError(t, e.Sync(ctx))
	_, err := e.Get(ctx, sp, ringpipe.Point{1, 1})
	require.NoError(t, err)
	perWrite := logs.All()[before:]
	for _, en := range perWrite {
		t.Errorf("log entry on the write path (%d writes): %s %q %v", 8*40+100, en.Level, en.Message, en.ContextMap())
	}

	// A seal is logged, with what it sealed.
	require.NoError(t, e.Flush(ctx, sp))
	sealed := auditLogs(logs, "sealed")
	require.Len(t, sealed, 1, "one seal, one log")
	assert.EqualValues(t, 8*40+100, sealed[0].ContextMap()["records"])

	// A routing change is logged: the space's hot file stalls.
	disk.Inject(sim.Fault{Kind: sim.Delay, Delay: stallDelay, Path: hotPrefix(sp),
		Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync, ring.OpWrite, ring.OpWritev}, Persist: true})
	for i := range 20 {
		_, err := e.Put(ctx, sp, ringpipe.Point{20, uint32(i)}, []byte("stalled"))
		require.NoError(t, err)
	}
	require.Positive(t, e.Stats().StagedWrites)
	assert.NotEmpty(t, auditLogs(logs, "space routed to the staging WAL"), "routing to the WAL is logged")
	disk.ClearFaults()

	// An actor restart is logged: one failed fdatasync of the hot file.
	hits := len(disk.Hits())
	disk.Inject(sim.Fault{Kind: sim.FsyncFail, Path: simDir + "/hot/", Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync}})
	for i := 0; len(disk.Hits()) == hits && i < 2000; i++ {
		_, _ = e.Put(ctx, sp, ringpipe.Point{30, uint32(i % 1024)}, []byte("f"))
	}
	require.Greater(t, len(disk.Hits()), hits, "the fsync failure fired")
	waitFor(t, e, "an actor restart logged", func(ringpipe.Stats) bool {
		return len(auditLogs(logs, "actor restarted")) > 0
	})
	stop(t, e)

	// The recovery summary of a reopen counts what it found.
	e = start(t, cfg)
	rec := auditLogs(logs, "recovered")
	require.Len(t, rec, 2)
	assert.EqualValues(t, 1, rec[1].ContextMap()["spaces"])
	assert.GreaterOrEqual(t, rec[1].ContextMap()["blocks"], int64(1), "the Flush's block (and the failed generation's)")
	stop(t, e)
}

// holdRing wraps a sim ring and, once holding, withholds in real time the
// final Completions of writes and syncs on one space's hot segment files
// until release: a hot file whose sync does not come back, as a stalled
// disk does, while its Deadline notices (from the sim's virtual clock)
// still arrive.
//
// With holdOpens (newOpenHoldRing) it withholds instead the completions of
// opens of the space's hot files, but first's.
type holdRing struct {
	ring.Ring
	name      string // base-name prefix of the held space's hot files
	holdOpens bool
	first     string // a file name whose opens are never held

	mu       sync.Mutex
	holding  bool
	released bool
	opens    map[uint64]bool // tokens of opens of held files
	fds      map[int32]bool  // fds of held files
	hold     map[uint64]bool // tokens whose final Completion is withheld
	held     []ring.Completion
	heldN    int
	walOpen  bool // withhold the next open of a staging WAL segment (holdWALOpen)
	walHeld  int  // staging WAL opens withheld
}

const (
	holdWakeToken = ^uint64(0) - 7
	// holdPokeToken is poke's nop: the token of the engine's first
	// flight (id 1, op 0; actors.tokenOf), settled long before, so that the
	// completer reaps it as a late completion and goes on.
	holdPokeToken = 1 << 8
)

// holdWALOpen makes the ring withhold (until release) the completion of
// the next open of a staging WAL segment: a roll to a new segment that
// the disk does not finish.
func (h *holdRing) holdWALOpen() { h.mu.Lock(); h.walOpen = true; h.mu.Unlock() }

// walOpensHeld returns how many staging WAL opens are withheld.
func (h *holdRing) walOpensHeld() int { h.mu.Lock(); defer h.mu.Unlock(); return h.walHeld }

// poke submits a nop of a settled flight, so that the completer reaps
// something (and passes its "reaped" chaos point) while the rest is held.
func (h *holdRing) poke() error {
	return h.Ring.Submit([]ring.Op{{Code: ring.OpNop, Token: holdPokeToken}})
}

func newHoldRing(r ring.Ring, space ringpipe.SpaceID) *holdRing {
	return &holdRing{Ring: r, name: path.Base(hotPrefix(space)),
		opens: map[uint64]bool{}, fds: map[int32]bool{}, hold: map[uint64]bool{}}
}

// startHeld starts an engine on cfg whose ring is a holdRing made by mk
// (the first ring the engine makes; the block reads' ring, made next, is
// not held). The ring is released when the test ends, before the engine's
// Stop.
func startHeld(t *testing.T, cfg ringpipe.Config, disk *sim.Disk, mk func(ring.Ring) *holdRing) (*ringpipe.Engine, *holdRing) {
	t.Helper()
	var hr *holdRing
	var mu sync.Mutex
	cfg.NewRing = func(o ring.Options) (ring.Ring, error) {
		mu.Lock()
		defer mu.Unlock()
		if hr != nil {
			return disk.NewRing(o), nil
		}
		hr = mk(disk.NewRing(o))
		return hr, nil
	}
	e := start(t, cfg)
	t.Cleanup(func() { hr.release() }) // runs before start's Stop
	return e, hr
}

func (h *holdRing) start() { h.mu.Lock(); h.holding = true; h.mu.Unlock() }

// release hands back everything withheld and stops holding.
func (h *holdRing) release() {
	h.mu.Lock()
	if h.released {
		h.mu.Unlock()
		return
	}
	h.released, h.holding = true, false
	h.mu.Unlock()
	_ = h.Ring.Submit([]ring.Op{{Code: ring.OpNop, Token: holdWakeToken}}) // wakes a blocked Reap
}

func (h *holdRing) heldCount() int { h.mu.Lock(); defer h.mu.Unlock(); return h.heldN }

func (h *holdRing) Submit(ops []ring.Op) error {
	h.mu.Lock()
	for _, op := range ops {
		switch op.Code {
		case ring.OpOpen:
			if h.walOpen && strings.Contains(op.Path, "/wal/") && strings.HasSuffix(op.Path, ".log") {
				h.walOpen = false
				h.walHeld++
				h.hold[op.Token] = true
			}
			if strings.Contains(op.Path, h.name) {
				h.opens[op.Token] = true
				if h.holdOpens && h.holding && (h.first == "" || !strings.Contains(op.Path, h.first)) {
					h.hold[op.Token] = true
				}
			}
		case ring.OpWrite, ring.OpWritev, ring.OpFdatasync, ring.OpFsync:
			if !h.holdOpens && h.holding && h.fds[op.FD] {
				h.hold[op.Token] = true
			}
		}
	}
	h.mu.Unlock()
	return h.Ring.Submit(ops)
}

// filter keeps what may be returned now, withholding held completions, and
// appends the withheld ones once released.
func (h *holdRing) filter(out []ring.Completion, n int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := 0
	for _, c := range out[:n] {
		if c.Token == holdWakeToken {
			continue
		}
		if h.opens[c.Token] && c.Err == nil {
			h.fds[int32(c.Res)] = true
		}
		if !c.Deadline && h.hold[c.Token] && !h.released {
			h.held = append(h.held, c)
			h.heldN++
			continue
		}
		out[k] = c
		k++
	}
	if h.released {
		for len(h.held) > 0 && k < len(out) {
			out[k] = h.held[0]
			h.held = h.held[1:]
			k++
		}
	}
	return k
}

func (h *holdRing) Reap(out []ring.Completion) (int, error) {
	for {
		h.mu.Lock()
		pending := h.released && len(h.held) > 0
		h.mu.Unlock()
		if pending {
			return h.filter(out, 0), nil
		}
		n, err := h.Ring.Reap(out)
		if err != nil {
			return n, err
		}
		if k := h.filter(out, n); k > 0 {
			return k, nil
		}
	}
}

func (h *holdRing) TryReap(out []ring.Completion) (int, error) {
	h.mu.Lock()
	pending := h.released && len(h.held) > 0
	h.mu.Unlock()
	if pending {
		return h.filter(out, 0), nil
	}
	n, err := h.Ring.TryReap(out)
	if err != nil || n == 0 {
		return n, err
	}
	return h.filter(out, n), nil
}

// TestAuditStalledHotFileDoesNotStallWriters: DESIGN.md "A stalled hot
// segment file therefore never stalls writers for longer than the deadline
// plus one WAL sync"; issue 4: "writers are acknowledged via the staging
// WAL within DirectWriteTimeout plus one WAL sync". The hot file of one
// space stops answering (its writes and syncs never complete, in real
// time, until the end of the test). The first Put misses its deadline and
// is acknowledged from the WAL; every later Put to that space must be too,
// each well within a bound far above DirectWriteTimeout plus a WAL sync.
func TestAuditStalledHotFileDoesNotStallWriters(t *testing.T) {
	disk := newSimDisk(t, 3)
	cfg := simConfig(t, disk)
	cfg.DirectWriteTimeout = 2 * time.Millisecond
	var sp ringpipe.SpaceID
	e, hr := startHeld(t, cfg, disk, func(r ring.Ring) *holdRing { return newHoldRing(r, 1) })
	sp = createSpace(t, e, "stalled", 2, 8)
	require.Equal(t, ringpipe.SpaceID(1), sp)
	ctx := ctxFor(t)
	for i := range 5 {
		_, err := e.Put(ctx, sp, ringpipe.Point{0, uint32(i)}, []byte("warm"))
		require.NoError(t, err)
	}
	require.Zero(t, e.Stats().StagedWrites)

	// The stall: on the virtual clock every write and sync of the hot file
	// takes far beyond the deadline (so Deadline notices fire), and in real
	// time their final completions do not come back.
	disk.Inject(sim.Fault{Kind: sim.Delay, Delay: time.Hour, Path: hotPrefix(sp),
		Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync, ring.OpWrite, ring.OpWritev}, Persist: true})
	hr.start()

	// bound is generous (CI, -race, two cores): a Put that waits for the
	// stalled hot file never returns before release.
	const bound = 5 * time.Second
	for i := range 10 {
		pctx, cancel := context.WithTimeout(ctx, bound)
		t0 := time.Now()
		_, err := e.Put(pctx, sp, ringpipe.Point{1, uint32(i)}, []byte("during the stall"))
		cancel()
		if !assert.NoError(t, err, "Put %d to the space whose hot file stalls (took %v; %d hot completions withheld; stats %+v)",
			i, time.Since(t0), hr.heldCount(), e.Stats()) {
			break
		}
	}
	assert.Positive(t, hr.heldCount(), "the hot file's completions were withheld")
	assert.Positive(t, e.Stats().StagedWrites, "writes were acknowledged from the staging WAL")
	hr.release()
	disk.ClearFaults()

	// Everything acknowledged is there once the file answers again: the
	// staged copies are promoted (Flush promotes, then seals), and after
	// a restart too.
	require.NoError(t, e.Flush(ctx, sp))
	assert.Zero(t, e.Stats().StagedPending, "every staged write promoted")
	check := func(e *ringpipe.Engine) {
		t.Helper()
		for i := range 10 {
			rec, err := e.Get(ctx, sp, ringpipe.Point{1, uint32(i)})
			if assert.NoError(t, err, "Put %d", i) {
				assert.Equal(t, []byte("during the stall"), rec.Value)
			}
		}
		for i := range 5 {
			_, err := e.Get(ctx, sp, ringpipe.Point{0, uint32(i)})
			assert.NoError(t, err, "warm-up Put %d", i)
		}
	}
	check(e)
	stop(t, e)
	e = start(t, cfg)
	check(e)
}
