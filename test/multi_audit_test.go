package test

// Several engines in one process, and directories (multi audit). An
// embedded database is often opened more than once in one process (one
// engine per tenant, tests in parallel); these tests check that engines
// on different directories do not share state, that the directory lock
// holds within one process whatever the spelling of the directory, and
// what Start does with awkward directory inputs and with files of the
// user's in its directory.
//
// Package-level state of the engine's packages (grep "^var " outside
// tests), and which of it could mix engines:
//   - internal/testhook: the planted bugs, the chaos injector,
//     RestartLimit and NoInline are process-wide by design (the package
//     doc says so). An injector cannot tell engines apart (it is called
//     with an actor and a point, no engine), so a chaos test cannot fail
//     one engine of several: a test-isolation limit, not an engine bug.
//     TestMultiAuditIndependence fails its engine through its own
//     simulated disk instead.
//   - ring.noRWFDSync: set once the kernel refuses pwritev2 with
//     RWF_DSYNC; it makes every std ring write and then fdatasync, still
//     durable. It describes the kernel, not an engine: benign.
//   - livetail.emptyView: the first View of every Tail; its index map is
//     shared but replaced, never modified (AddSpace clones it): checked
//     below by a fresh engine that sees no space of the others.
//   - telemetry.actorNames, latency.bucketBounds: read-only; Telemetry
//     returns copies (checked below by mutating what one engine returned).
//   - Prometheus names: the metrics module registers nothing globally;
//     two engines in one registry need WithConstLabels, as README says
//     (metrics.TestCollectorTwoEngines checks it in that module).
//   - The process's working directory is state of the whole process too:
//     an engine keeps a relative Dir as given and resolves it again at
//     every file it opens (TestMultiAuditRelativeDirChdir).

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/internal/fdtest"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// mtSpec is the space every engine of this file writes.
var mtSpec = ringpipe.SpaceSpec{Name: "s", Dims: 2, Bits: 16}

// mtPrealloc is the log files' preallocation in the independence test:
// large enough that no hot generation fills up (which would seal it and
// make the SealedBlocks count depend on timing), with DirectIO's padding
// of up to a sector per batch.
const mtPrealloc = 8 << 20

// mtEngine is one engine of the independence test and what the test
// knows it did.
type mtEngine struct {
	name string
	cfg  ringpipe.Config
	logs *observer.ObservedLogs
	e    *ringpipe.Engine
	sp   ringpipe.SpaceID
	got  acks
	acks atomic.Int64 // Puts acknowledged (got holds them)
	// flushes is how many Flushes, each of a generation holding records,
	// the test made: SealedBlocks must equal it.
	flushes int
}

// mtLogger is an observed logger at Debug level: every entry an engine
// writes, for checking that it wrote only about itself.
func mtLogger() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(core), logs
}

// mtStart starts cfg, or with BackendStd when cfg asks for io_uring and
// the kernel refuses it (logged: the mix then has no io_uring engine).
func mtStart(t *testing.T, cfg ringpipe.Config) (*ringpipe.Engine, ringpipe.Config) {
	t.Helper()
	e, err := ringpipe.Start(ctxFor(t), cfg)
	if err != nil && cfg.Backend == ringpipe.BackendURing && !errors.Is(err, ringpipe.ErrLocked) {
		t.Logf("BackendURing refused here (%v); using BackendStd", err)
		cfg.Backend = ringpipe.BackendStd
		e, err = ringpipe.Start(ctxFor(t), cfg)
	}
	require.NoError(t, err, "Start %s", cfg.Dir)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		_ = e.Stop(ctx)
	})
	return e, cfg
}

// mtPut writes one record of writer w and remembers it when acknowledged.
func (m *mtEngine) put(ctx context.Context, w, i int) error {
	p := ringpipe.Point{uint32(w), uint32(i)}
	v := fmt.Appendf(nil, "%s-w%d-%d", m.name, w, i)
	rev, err := m.e.Put(ctx, m.sp, p, v)
	if err != nil {
		return fmt.Errorf("%s: writer %d put %d: %w", m.name, w, i, err)
	}
	m.got.add(write{point: p, rev: rev, value: v})
	m.acks.Add(1)
	return nil
}

// mtQuiet waits until e's Stats stop moving (two reads 50 ms apart agree)
// and returns them: an idle engine's baseline. Bounded by hangTimeout.
func mtQuiet(t *testing.T, e *ringpipe.Engine) ringpipe.Stats {
	t.Helper()
	deadline := time.Now().Add(hangTimeout)
	prev := e.Stats()
	for {
		time.Sleep(50 * time.Millisecond)
		cur := e.Stats()
		if mtSameCounters(prev, cur) {
			return cur
		}
		require.True(t, time.Now().Before(deadline), "an idle engine's Stats never settled: %+v", cur)
		prev = cur
	}
}

// mtSameCounters reports whether two Stats have the same counters.
func mtSameCounters(a, b ringpipe.Stats) bool {
	return a.DirectWrites == b.DirectWrites && a.StagedWrites == b.StagedWrites &&
		a.Promoted == b.Promoted && a.SealedBlocks == b.SealedBlocks && a.Syncs == b.Syncs &&
		a.ShortIORetries == b.ShortIORetries && a.WriteLatency.Count == b.WriteLatency.Count &&
		a.SyncLatency.Count == b.SyncLatency.Count && mtRestarts(a) == mtRestarts(b)
}

// mtRestarts is the sum of Stats.ActorRestarts.
func mtRestarts(st ringpipe.Stats) uint64 {
	n := uint64(0)
	for _, v := range st.ActorRestarts {
		n += v
	}
	return n
}

// mtEntryText is a log entry as text: its message and every field.
func mtEntryText(en observer.LoggedEntry) string {
	return fmt.Sprintf("%s %v", en.Message, en.ContextMap())
}

// TestMultiAuditIndependence: four engines on four directories (io_uring,
// std, auto, std with DirectIO), 16 writers each, written at the same
// time; an idle witness engine; and a fifth engine on a simulated disk
// that is driven to ErrFailed (its disk fails every I/O) while three of
// the four write, after the first has been stopped while they write.
//
// Each engine's Stats count only its own work: DirectWrites+StagedWrites
// and WriteLatency.Count equal the Puts it acknowledged, SealedBlocks the
// Flushes made on it, ActorRestarts stay zero on every engine but the
// failed one, the witness's counters (Syncs included) never move, and a
// stopped engine's Stats stay frozen while the others write. Revisions
// and space IDs are per engine. Every engine's data is intact, live and
// after a restart; the stopped and the failed engine did not disturb the
// others (no error, no restart, not Failed). Each engine's logger got
// entries about its own directory only, and only the failed engine's
// logged its failure. Values Telemetry and Stats return are copies.
func TestMultiAuditIndependence(t *testing.T) {
	ctx := ctxFor(t)
	base := t.TempDir()
	const writers = 16
	backends := []struct {
		name string
		b    ringpipe.Backend
		dio  bool
	}{
		{"e0-uring", ringpipe.BackendURing, false},
		{"e1-std", ringpipe.BackendStd, false},
		{"e2-auto", ringpipe.BackendAuto, false},
		{"e3-std-dio", ringpipe.BackendStd, true},
	}
	var engs []*mtEngine
	for k, bk := range backends {
		lg, logs := mtLogger()
		m := &mtEngine{name: bk.name, logs: logs, cfg: ringpipe.Config{
			Dir: filepath.Join(base, bk.name), Backend: bk.b, DirectIO: bk.dio,
			Logger: lg, Preallocate: mtPrealloc,
		}}
		m.e, m.cfg = mtStart(t, m.cfg)
		// Engine k creates k spaces before its own: its space's ID is k+1
		// if IDs are its own.
		for j := range k {
			createSpace(t, m.e, fmt.Sprintf("pad%d", j), 1, 8)
		}
		m.sp = createSpace(t, m.e, mtSpec.Name, mtSpec.Dims, mtSpec.Bits)
		assert.Equal(t, ringpipe.SpaceID(k+1), m.sp, "%s: the ID of its space after %d others", m.name, k)
		engs = append(engs, m)
	}
	wlg, wlogs := mtLogger()
	witness, _ := mtStart(t, ringpipe.Config{Dir: filepath.Join(base, "witness"), Backend: ringpipe.BackendStd,
		Logger: wlg, Preallocate: testPrealloc})

	// The engine that fails: its own simulated disk, its own directory.
	const failDir = "/mt-failing"
	disk := sim.NewDisk(71)
	require.NoError(t, disk.MkdirAll(failDir))
	flg, flogs := mtLogger()
	fcfg := simConfig(t, disk)
	fcfg.Dir, fcfg.Logger = failDir, flg
	failing := start(t, fcfg)
	fsp := createSpace(t, failing, mtSpec.Name, mtSpec.Dims, mtSpec.Bits)
	fm := newModel(mtSpec)
	for i := range 20 {
		p := ringpipe.Point{9, uint32(i)}
		v := fmt.Appendf(nil, "failing-%d", i)
		rev, err := failing.Put(ctx, fsp, p, v)
		require.NoError(t, err)
		fm.add(write{point: p, rev: rev, value: v})
	}
	w0 := mtQuiet(t, witness)

	// Phase A: all four, 16 writers each, different amounts.
	var wg sync.WaitGroup
	var errs sync.Map // first error per engine
	for k, m := range engs {
		for w := range writers {
			wg.Go(func() {
				for i := range 10 + 5*k {
					if err := m.put(ctx, w, i); err != nil {
						errs.LoadOrStore(m.name, err)
						return
					}
				}
			})
		}
	}
	within(t, "phase A writers", wg.Wait)
	errs.Range(func(k, v any) bool { t.Errorf("phase A: %v", v); return true })
	require.False(t, t.Failed())
	// Engine k seals k blocks, each holding one more record.
	for k, m := range engs {
		for j := range k {
			require.NoError(t, m.put(ctx, 100, j))
			require.NoError(t, m.e.Flush(ctx, m.sp), "%s: Flush", m.name)
			m.flushes++
		}
	}

	// Phase B: engines 1-3 write until told to finish (and at least 20
	// Puts per writer); meanwhile engine 0 is stopped and the failing
	// engine fails.
	finish := make(chan struct{})
	var inB atomic.Int64
	for _, m := range engs[1:] {
		for w := range writers {
			wg.Go(func() {
				for i := 1000; ; i++ {
					if i >= 1020 && lcClosed(finish) {
						return
					}
					if err := m.put(ctx, w, i); err != nil {
						errs.LoadOrStore(m.name, err)
						return
					}
					inB.Add(1)
				}
			})
		}
	}
	within(t, "the first writes of phase B", func() {
		for inB.Load() < 3*writers {
			time.Sleep(time.Millisecond)
		}
	})
	e0 := engs[0]
	within(t, "Stop of engine 0 while the others write", func() { require.NoError(t, e0.e.Stop(ctx)) })
	st0 := e0.e.Stats()
	beforeFail := inB.Load()

	disk.Inject(sim.Fault{Kind: sim.EIO, Path: failDir + "/", Persist: true})
	within(t, "driving the failing engine to ErrFailed", func() {
		for i := 0; ; i++ {
			rev, err := failing.Put(ctx, fsp, ringpipe.Point{10, uint32(i)}, []byte("doomed"))
			if errors.Is(err, ringpipe.ErrFailed) {
				return
			}
			if err == nil {
				// Acknowledged somehow: it must be there.
				t.Logf("a Put on the failing disk was acknowledged (%d)", i)
				fm.add(write{point: ringpipe.Point{10, uint32(i)}, rev: rev, value: []byte("doomed")})
			}
			time.Sleep(time.Millisecond)
		}
	})
	within(t, "writes of the others after the failure", func() {
		for inB.Load() < beforeFail+3*writers {
			time.Sleep(time.Millisecond)
		}
	})
	close(finish)
	within(t, "phase B writers", wg.Wait)
	errs.Range(func(k, v any) bool {
		t.Errorf("phase B (engine 0 stopped, the failing engine failed meanwhile): %v", v)
		return true
	})

	// Stats: each engine's own work.
	for k, m := range engs {
		st := m.e.Stats()
		n := uint64(m.acks.Load())
		t.Logf("%s: %d acknowledged; %+v", m.name, n, st)
		assert.Equal(t, n, st.DirectWrites+st.StagedWrites, "%s: DirectWrites+StagedWrites", m.name)
		assert.Equal(t, n, st.WriteLatency.Count, "%s: WriteLatency.Count", m.name)
		assert.Equal(t, uint64(m.flushes), st.SealedBlocks, "%s: SealedBlocks after %d Flushes", m.name, m.flushes)
		assert.Zero(t, mtRestarts(st), "%s: ActorRestarts %v", m.name, st.ActorRestarts)
		assert.Positive(t, st.Syncs, "%s: Syncs", m.name)
		assert.False(t, m.e.Telemetry().Failed, "%s: Failed", m.name)
		// Revisions are the engine's own: unique, and no higher than
		// the writes it took (a shared counter would skip the others').
		mod := m.got.model(t, mtSpec)
		maxRev := ringpipe.Revision(0)
		for _, w := range m.got.ws {
			maxRev = max(maxRev, w.rev)
		}
		assert.LessOrEqual(t, uint64(maxRev), n, "%s: the highest revision of %d writes", m.name, n)
		if k > 0 {
			checkModel(t, engineReader(t, m.e), m.sp, mod, fullBox(mtSpec))
		}
	}
	assert.Equal(t, st0, e0.e.Stats(), "engine 0's Stats after its Stop, while the others wrote on")
	wst := witness.Stats()
	assert.True(t, mtSameCounters(w0, wst), "the idle witness's counters moved while the others wrote:\nbefore %+v\nafter  %+v", w0, wst)
	assert.Zero(t, wst.DirectWrites+wst.StagedWrites+wst.SealedBlocks+wst.WriteLatency.Count, "witness: %+v", wst)
	assert.Empty(t, witness.Spaces(), "the witness sees spaces of other engines")
	_, err := witness.Get(ctx, 1, ringpipe.Point{0, 0})
	assert.ErrorIs(t, err, ringpipe.ErrUnknownSpace, "the witness's Get of space 1")
	assert.Zero(t, witness.View().Revision(), "the witness's View revision")

	// The failed engine: failed, restarted, reads work.
	fst := failing.Stats()
	assert.True(t, failing.Telemetry().Failed, "the failing engine: Failed")
	assert.Positive(t, mtRestarts(fst), "the failing engine: ActorRestarts")
	_, err = failing.Put(ctx, fsp, ringpipe.Point{1, 1}, []byte("refused"))
	assert.ErrorIs(t, err, ringpipe.ErrFailed)
	checkModel(t, engineReader(t, failing), fsp, fm, fullBox(mtSpec))

	// Copies, not shared slices or maps.
	tel := engs[1].e.Telemetry()
	tel.Actors[0] = "mutated"
	if len(tel.WriteLatency.Buckets) > 0 {
		tel.WriteLatency.Buckets[0].UpperBound = -1
	}
	st := engs[1].e.Stats()
	st.ActorRestarts["mutated"] = 7
	for _, m := range engs[1:3] {
		tel := m.e.Telemetry()
		assert.Equal(t, "publisher", tel.Actors[0], "%s: Telemetry.Actors after another's was changed", m.name)
		if assert.NotEmpty(t, tel.WriteLatency.Buckets) {
			assert.Positive(t, tel.WriteLatency.Buckets[0].UpperBound, "%s: bucket bound", m.name)
		}
		assert.NotContains(t, m.e.Stats().ActorRestarts, "mutated", m.name)
	}

	// Logs: each engine's logger heard about its own directory only.
	sctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	t.Logf("Stop of the failed engine: %v", failing.Stop(sctx))
	all := []struct {
		name, dir string
		logs      *observer.ObservedLogs
	}{{"witness", filepath.Join(base, "witness"), wlogs}, {"failing", failDir, flogs}}
	for _, m := range engs {
		all = append(all, struct {
			name, dir string
			logs      *observer.ObservedLogs
		}{m.name, m.cfg.Dir, m.logs})
	}
	const failedMsg = "engine failed: writes are refused, reads still work"
	for _, a := range all {
		recovered := 0
		for _, en := range a.logs.All() {
			text := mtEntryText(en)
			for _, b := range all {
				if b.name != a.name && strings.Contains(text, b.dir) {
					t.Errorf("%s's logger got an entry about %s: %s", a.name, b.name, text)
				}
			}
			if en.Message == "recovered" {
				recovered++
				assert.Equal(t, a.dir, en.ContextMap()["dir"], "%s: the dir its recovery logged", a.name)
			}
			if en.Message == failedMsg && a.name != "failing" {
				t.Errorf("%s's logger says the engine failed: %s", a.name, text)
			}
		}
		assert.Equal(t, 1, recovered, "%s: \"recovered\" entries in its logger", a.name)
	}
	assert.NotEmpty(t, flogs.FilterMessage(failedMsg).All(), "the failing engine logged its failure")

	// Restart every engine: the data is intact on disk too.
	for _, m := range engs {
		if m != e0 {
			stop(t, m.e)
		}
	}
	stop(t, witness)
	for _, m := range engs {
		e, _ := mtStart(t, m.cfg)
		checkModel(t, engineReader(t, e), m.sp, m.got.model(t, mtSpec), fullBox(mtSpec))
		stop(t, e)
	}
}

// mtListing is a directory tree as "path mode size mtime" lines, sorted.
func mtListing(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		size := fi.Size()
		if fi.IsDir() {
			size = 0 // a directory's size says little on ext4
		}
		out = append(out, fmt.Sprintf("%s %v %d %d", rel, fi.Mode(), size, fi.ModTime().UnixNano()))
		return nil
	}))
	slices.Sort(out)
	return out
}

// mtSpellings are other spellings of dir (base/db), each a path the
// kernel resolves to the same directory: made relative to the working
// directory, with a trailing slash, with "/./", doubled slashes, a
// lexical "..", a symlink to dir and dir under a symlink to its parent.
func mtSpellings(t *testing.T, base, dir string) [][2]string {
	t.Helper()
	cwd, err := os.Getwd()
	require.NoError(t, err)
	rel, err := filepath.Rel(cwd, dir)
	require.NoError(t, err)
	link := filepath.Join(base, "link")
	plink := filepath.Join(base, "parentlink")
	require.NoError(t, os.Symlink(dir, link))
	require.NoError(t, os.Symlink(base, plink))
	return [][2]string{
		{"relative", rel},
		{"trailing slash", dir + "/"},
		{"dir/./", dir + "/./"},
		{"double slashes", strings.Replace(dir, "/", "//", -1)},
		{"lexical ..", filepath.Join(base, "db") + "/../db"},
		{"symlink to it", link},
		{"symlink to it, trailing slash", link + "/"},
		{"parent via symlink", filepath.Join(plink, "db")},
	}
}

// TestMultiAuditLockSpellings: while an engine runs on a directory, a
// second Start on it is refused with ErrLocked, whatever the spelling
// (see mtSpellings), and the refused Starts change nothing in the
// directory; the reverse too (the engine started through a symlink, the
// second Start by the plain path). Once it stopped, a Start through each
// spelling succeeds and sees every record written through the others.
func TestMultiAuditLockSpellings(t *testing.T) {
	ctx := ctxFor(t)
	base := t.TempDir()
	dir := filepath.Join(base, "db")
	spellings := mtSpellings(t, base, dir)
	cfg := realConfig(t, ringpipe.BackendStd)
	cfg.Dir = dir
	// No write is staged and nothing promoted in the background: the
	// running engine leaves its files alone while the refused Starts run.
	cfg.DirectWriteTimeout, cfg.PromoteInterval = time.Minute, time.Hour
	e := start(t, cfg)
	sp := createSpace(t, e, mtSpec.Name, mtSpec.Dims, mtSpec.Bits)
	m := newModel(mtSpec)
	put := func(e *ringpipe.Engine, i int, tag string) {
		p := ringpipe.Point{uint32(i), 1}
		v := []byte(tag)
		rev, err := e.Put(ctx, sp, p, v)
		require.NoError(t, err, "Put through %s", tag)
		m.add(write{point: p, rev: rev, value: v})
	}
	put(e, 0, "the plain path")
	require.NoError(t, e.Flush(ctx, sp))
	put(e, 1, "the plain path, unsealed")
	before := mtListing(t, base)
	for _, s := range spellings {
		for _, b := range []ringpipe.Backend{ringpipe.BackendStd, ringpipe.BackendAuto} {
			c := cfg
			c.Dir, c.Backend = s[1], b
			e2, err := ringpipe.Start(ctx, c)
			if e2 != nil {
				_ = e2.Stop(ctx)
			}
			assert.ErrorIs(t, err, ringpipe.ErrLocked, "Start through %s (%q, %v) while an engine runs", s[0], s[1], b)
		}
	}
	assert.Equal(t, before, mtListing(t, base), "the directory after the refused Starts")
	stop(t, e)

	for i, s := range spellings {
		c := cfg
		c.Dir = s[1]
		e := start(t, c)
		checkModel(t, engineReader(t, e), sp, m, fullBox(mtSpec))
		put(e, 10+i, s[0])
		// And the plain path is refused while this one runs.
		e2, err := ringpipe.Start(ctx, cfg)
		if e2 != nil {
			_ = e2.Stop(ctx)
		}
		assert.ErrorIs(t, err, ringpipe.ErrLocked, "Start by the plain path while an engine runs through %s", s[0])
		stop(t, e)
	}
	e = start(t, cfg)
	checkModel(t, engineReader(t, e), sp, m, fullBox(mtSpec))
	stop(t, e)
}

// TestMultiAuditLockSymlinkDotDot: base/parentlink is a symlink to base,
// so the kernel resolves base/parentlink/../<name of base>/db to base/db
// (the symlink first, then ".." of its target). Start must treat it as
// that directory: ErrLocked while an engine runs on base/db, the same
// records once it stopped.
//
// Fixed: before, Start cleaned the path lexically (filepath.Dir and
// filepath.Join drop "parentlink/.."): after the mkdir (which the kernel
// resolves: EEXIST) it synced the lexical parent base/<name of base>,
// which does not exist, and fails with "create the directory: open
// base/<name of base>: no such file or directory" instead of ErrLocked,
// and the same way once the directory is free. Cause: ring.MkdirDurable
// (filepath.Dir(dir)) and recovery.go (*engine).recover
// (filepath.Join(cfg.Dir, "LOCK"), and every path after it) work on the
// unresolved Dir; worse, had base/<name of base>/db existed, the engine
// would have run in a directory other than the one the kernel names.
// Start now resolves Dir once (resolveDir: symlinks evaluated left to
// right, as the kernel does).
func TestMultiAuditLockSymlinkDotDot(t *testing.T) {
	ctx := ctxFor(t)
	base := t.TempDir()
	dir := filepath.Join(base, "db")
	plink := filepath.Join(base, "parentlink")
	require.NoError(t, os.Symlink(base, plink))
	odd := plink + "/../" + filepath.Base(base) + "/db"
	cfg := realConfig(t, ringpipe.BackendStd)
	cfg.Dir = dir
	e := start(t, cfg)
	fi1, err := os.Stat(odd)
	require.NoError(t, err, "the kernel resolves %s", odd)
	fi2, err := os.Stat(dir)
	require.NoError(t, err)
	require.True(t, os.SameFile(fi1, fi2), "%s and %s are one directory", odd, dir)
	sp := createSpace(t, e, mtSpec.Name, mtSpec.Dims, mtSpec.Bits)
	rev, err := e.Put(ctx, sp, ringpipe.Point{1, 1}, []byte("v"))
	require.NoError(t, err)

	c := cfg
	c.Dir = odd
	e2, err := ringpipe.Start(ctx, c)
	if e2 != nil {
		_ = e2.Stop(ctx)
	}
	assert.ErrorIs(t, err, ringpipe.ErrLocked, "Start through %s while an engine runs on %s", odd, dir)
	stop(t, e)
	e2, err = ringpipe.Start(ctx, c)
	if assert.NoError(t, err, "Start through %s once the directory is free", odd) {
		rec, err := e2.Get(ctx, sp, ringpipe.Point{1, 1})
		assert.NoError(t, err)
		assert.Equal(t, rev, rec.Revision)
		stop(t, e2)
	}
}

// mtKnown matches the names DESIGN.md §4 lists (and the spares of hot
// generations) at any depth of an engine's directory.
var mtKnown = regexp.MustCompile(`^(LOCK|CURRENT|MANIFEST-[0-9]+|hot|wal|blocks|[0-9]+|[0-9]+-[0-9]+\.(seg|spare)|[0-9]+\.(log|blk))$`)

// TestMultiAuditConcurrentStart: two goroutines Start the same directory
// at once (fresh in even rounds, holding the last round's data in odd
// ones; different backends and spellings): exactly one wins, the other
// gets ErrLocked. The directory then holds only the engine's own files,
// nothing half-created (no temporary file), and the next Start finds
// every record.
func TestMultiAuditConcurrentStart(t *testing.T) {
	ctx := ctxFor(t)
	base := t.TempDir()
	m := newModel(mtSpec)
	var dir string
	var sp ringpipe.SpaceID
	for round := range 10 {
		if round%2 == 0 {
			dir = filepath.Join(base, fmt.Sprintf("r%d", round))
			m = newModel(mtSpec)
		}
		cfgs := [2]ringpipe.Config{realConfig(t, ringpipe.BackendStd), realConfig(t, ringpipe.BackendAuto)}
		cfgs[0].Dir, cfgs[1].Dir = dir, dir+"/"
		type result struct {
			e   *ringpipe.Engine
			err error
		}
		var res [2]result
		gate := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Go(func() {
				<-gate
				e, err := ringpipe.Start(ctx, cfgs[i])
				res[i] = result{e, err}
			})
		}
		close(gate)
		within(t, "two concurrent Starts", wg.Wait)
		var win *ringpipe.Engine
		for i, r := range res {
			if r.err == nil {
				require.Nil(t, win, "round %d: both Starts succeeded", round)
				win = r.e
				t.Cleanup(func() { _ = r.e.Stop(context.Background()) })
				continue
			}
			assert.ErrorIs(t, r.err, ringpipe.ErrLocked, "round %d: Start %d lost with another error", round, i)
			assert.Nil(t, r.e)
		}
		require.NotNil(t, win, "round %d: neither Start succeeded", round)
		var err error
		sp, err = win.CreateSpace(ctx, mtSpec)
		require.NoError(t, err)
		checkModel(t, engineReader(t, win), sp, m, fullBox(mtSpec))
		p := ringpipe.Point{uint32(round), 7}
		v := fmt.Appendf(nil, "round %d", round)
		rev, err := win.Put(ctx, sp, p, v)
		require.NoError(t, err)
		m.add(write{point: p, rev: rev, value: v})
		stop(t, win)
		manifests := 0
		require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || p == dir {
				return err
			}
			assert.Regexp(t, mtKnown, d.Name(), "round %d: %s is not the engine's", round, p)
			if strings.HasPrefix(d.Name(), "MANIFEST-") {
				manifests++
			}
			return nil
		}))
		assert.Equal(t, 1, manifests, "round %d: manifests in %s", round, dir)
		e := start(t, cfgs[round%2])
		checkModel(t, engineReader(t, e), sp, m, fullBox(mtSpec))
		stop(t, e)
	}
}

// mtCycle starts cfg, checks every earlier record, writes a few (and
// flushes now and then), checks that a second Start on the directory is
// refused with ErrLocked, and stops it (twice).
func mtCycle(t *testing.T, cfg ringpipe.Config, c int, m *model, mu *sync.Mutex) error {
	ctx := ctxFor(t)
	e, err := ringpipe.Start(ctx, cfg)
	if err != nil {
		return fmt.Errorf("cycle %d: Start: %w", c, err)
	}
	defer e.Stop(ctx) //nolint:errcheck // stopped below; this is for an early return
	sp, err := e.CreateSpace(ctx, mtSpec)
	if err != nil {
		return fmt.Errorf("cycle %d: CreateSpace: %w", c, err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, w := range m.last {
		rec, err := e.Get(ctx, sp, w.point)
		if err != nil || rec.Revision != w.rev {
			return fmt.Errorf("cycle %d: Get %v: %v (revision %d, want %d)", c, w.point, err, rec.Revision, w.rev)
		}
	}
	for i := range 3 {
		p := ringpipe.Point{uint32(c), uint32(i)}
		v := fmt.Appendf(nil, "c%d-%d", c, i)
		rev, err := e.Put(ctx, sp, p, v)
		if err != nil {
			return fmt.Errorf("cycle %d: Put: %w", c, err)
		}
		m.add(write{point: p, rev: rev, value: v})
	}
	if c%3 == 2 {
		if err := e.Flush(ctx, sp); err != nil {
			return fmt.Errorf("cycle %d: Flush: %w", c, err)
		}
	}
	e2, err := ringpipe.Start(ctx, cfg)
	if e2 != nil {
		_ = e2.Stop(ctx)
	}
	if !errors.Is(err, ringpipe.ErrLocked) {
		return fmt.Errorf("cycle %d: a second Start: %v, want ErrLocked", c, err)
	}
	if err := e.Stop(ctx); err != nil {
		return fmt.Errorf("cycle %d: Stop: %w", c, err)
	}
	if err := e.Stop(ctx); err != nil {
		return fmt.Errorf("cycle %d: a second Stop: %w", c, err)
	}
	return nil
}

// mtURingMaps counts this process's io_uring mappings.
func mtURingMaps(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	require.NoError(t, err)
	return strings.Count(string(b), "io_uring")
}

// TestMultiAuditCycles: four engines (io_uring, std, auto, std with
// DirectIO) on four directories go through Start/Stop cycles at the same
// time, each with writes, a Flush now and then and a refused second Start.
// Afterwards the goroutines, open fds and io_uring mappings are those of
// before, and every record is there.
func TestMultiAuditCycles(t *testing.T) {
	base := t.TempDir()
	const cycles = 12
	type eng struct {
		cfg ringpipe.Config
		m   *model
		mu  sync.Mutex
	}
	var engs []*eng
	for i, b := range []ringpipe.Backend{ringpipe.BackendURing, ringpipe.BackendStd, ringpipe.BackendAuto, ringpipe.BackendStd} {
		cfg := ringpipe.Config{Dir: filepath.Join(base, fmt.Sprintf("c%d", i)), Backend: b, DirectIO: i == 3,
			Logger: zaptest.NewLogger(t), Preallocate: testPrealloc}
		// Cycle 0 warms up what a process sets up once (the netpoller,
		// the kernel probe) and falls back to std where io_uring is
		// refused.
		e, cfg := mtStart(t, cfg)
		stop(t, e)
		engs = append(engs, &eng{cfg: cfg, m: newModel(mtSpec)})
	}
	fds0, maps0 := fdtest.List(t), mtURingMaps(t)
	before := goleak.IgnoreCurrent()
	var wg sync.WaitGroup
	for _, g := range engs {
		wg.Go(func() {
			for c := 1; c <= cycles; c++ {
				if err := mtCycle(t, g.cfg, c, g.m, &g.mu); err != nil {
					t.Errorf("%s: %v", g.cfg.Dir, err)
					return
				}
			}
		})
	}
	wg.Wait()
	goleak.VerifyNone(t, before)
	assert.Equal(t, fds0, fdtest.List(t), "open fds before and after %d cycles of 4 engines", cycles)
	assert.Equal(t, maps0, mtURingMaps(t), "io_uring mappings before and after")
	for _, g := range engs {
		e := start(t, g.cfg)
		sp := createSpace(t, e, mtSpec.Name, mtSpec.Dims, mtSpec.Bits)
		checkModel(t, engineReader(t, e), sp, g.m, fullBox(mtSpec))
		stop(t, e)
	}
}

// mtRoundTrip runs one engine's life on cfg: a space, records, a Flush,
// more records (unsealed), Stop; then a Start with each DirectIO value in
// turn finds them all.
func mtRoundTrip(t *testing.T, cfg ringpipe.Config) {
	t.Helper()
	ctx := ctxFor(t)
	e := start(t, cfg)
	sp := createSpace(t, e, mtSpec.Name, mtSpec.Dims, mtSpec.Bits)
	m := newModel(mtSpec)
	for i := range 40 {
		p := ringpipe.Point{uint32(i), 2}
		v := make([]byte, 1+i*97)
		for j := range v {
			v[j] = byte(i + j)
		}
		rev, err := e.Put(ctx, sp, p, v)
		require.NoError(t, err)
		m.add(write{point: p, rev: rev, value: v})
		if i == 24 {
			require.NoError(t, e.Flush(ctx, sp))
		}
	}
	checkModel(t, engineReader(t, e), sp, m, fullBox(mtSpec))
	stop(t, e)
	for _, dio := range []bool{!cfg.DirectIO, cfg.DirectIO} {
		c := cfg
		c.DirectIO = dio
		e := start(t, c)
		checkModel(t, engineReader(t, e), sp, m, fullBox(mtSpec))
		stop(t, e)
	}
}

// TestMultiAuditDirInputs: what Start does with awkward directories.
func TestMultiAuditDirInputs(t *testing.T) {
	ctx := ctxFor(t)
	t.Run("empty", func(t *testing.T) {
		e, err := ringpipe.Start(ctx, ringpipe.Config{Backend: ringpipe.BackendStd})
		assert.Nil(t, e)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "Dir", "the error names the field")
	})
	t.Run("regular file", func(t *testing.T) {
		base := t.TempDir()
		f := filepath.Join(base, "file")
		content := []byte("a file of the user's\n")
		require.NoError(t, os.WriteFile(f, content, 0o644))
		before := mtListing(t, base)
		cfg := realConfig(t, ringpipe.BackendStd)
		cfg.Dir = f
		e, err := ringpipe.Start(ctx, cfg)
		assert.Nil(t, e)
		require.Error(t, err)
		t.Logf("Start on a regular file: %v", err)
		assert.Contains(t, err.Error(), "Dir", "the error names the field")
		assert.Contains(t, err.Error(), "not a directory")
		assert.True(t, errors.Is(err, unix.ENOTDIR), "errors.Is(err, ENOTDIR)")
		assert.NotErrorIs(t, err, ringpipe.ErrLocked)
		got, rerr := os.ReadFile(f)
		require.NoError(t, rerr)
		assert.Equal(t, content, got, "the file is unchanged")
		assert.Equal(t, before, mtListing(t, base), "the file's directory is unchanged")
	})
	t.Run("missing parent", func(t *testing.T) {
		// API.md: "Start opens (creating if needed) the engine in
		// cfg.Dir". Since session 18 that includes Dir's missing parents,
		// as mkdir -p would (before, Start failed with ENOENT).
		base := t.TempDir()
		dir := filepath.Join(base, "no", "such", "db")
		cfg := realConfig(t, ringpipe.BackendStd)
		cfg.Dir = dir
		e, err := ringpipe.Start(ctx, cfg)
		require.NoError(t, err, "Start with missing parents")
		stop(t, e)
		fi, err := os.Stat(dir)
		require.NoError(t, err)
		assert.True(t, fi.IsDir())
	})
	t.Run("missing parent documented", func(t *testing.T) {
		// Fixed: before, neither README.md nor the godoc of Start or
		// Config.Dir said whether Start creates missing parents of Dir
		// (API.md: "opens (creating if needed) the engine in cfg.Dir"; it
		// creates Dir itself only, ring.MkdirDurable: one mkdir). The
		// brief asks for it to be documented.
		var text strings.Builder
		for _, f := range []string{"../README.md", "../engine.go", "../config.go"} {
			b, err := os.ReadFile(f)
			require.NoError(t, err)
			text.Write(b)
		}
		assert.Regexp(t, `(?is)(parent|MkdirAll)[^.]{0,200}(Dir|directory)|(Dir|directory)[^.]{0,200}(parent|MkdirAll)`, text.String(),
			"README.md or the godoc of Start/Config.Dir says whether Start creates a missing parent of Dir")
	})
	t.Run("not writable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("running as root: permission bits do not stop root, so a 0500 directory cannot be tested here")
		}
		base := t.TempDir()
		dir := filepath.Join(base, "db")
		cfg := realConfig(t, ringpipe.BackendStd)
		cfg.Dir = dir
		// A fresh directory the engine cannot write.
		require.NoError(t, os.Mkdir(dir, 0o500))
		e, err := ringpipe.Start(ctx, cfg)
		assert.Nil(t, e)
		if assert.Error(t, err, "Start in a 0500 directory") {
			t.Logf("Start in a 0500 directory: %v", err)
			assert.ErrorIs(t, err, fs.ErrPermission)
			assert.Contains(t, err.Error(), dir)
		}
		// And one holding data.
		require.NoError(t, os.Chmod(dir, 0o700))
		e = start(t, cfg)
		sp := createSpace(t, e, mtSpec.Name, mtSpec.Dims, mtSpec.Bits)
		rev, err := e.Put(ctx, sp, ringpipe.Point{1, 1}, []byte("v"))
		require.NoError(t, err)
		stop(t, e)
		require.NoError(t, os.Chmod(dir, 0o500))
		e, err = ringpipe.Start(ctx, cfg)
		if e != nil {
			// It may read without writing nothing: then it must work.
			_, perr := e.Put(ctx, sp, ringpipe.Point{1, 2}, []byte("w"))
			t.Logf("Start in a 0500 directory with data succeeded; a Put: %v", perr)
			_ = e.Stop(ctx)
		} else {
			t.Logf("Start in a 0500 directory with data: %v", err)
			assert.ErrorIs(t, err, fs.ErrPermission)
		}
		require.NoError(t, os.Chmod(dir, 0o700))
		e = start(t, cfg)
		rec, err := e.Get(ctx, sp, ringpipe.Point{1, 1})
		require.NoError(t, err)
		assert.Equal(t, rev, rec.Revision)
		stop(t, e)
	})
	t.Run("spaces and unicode", func(t *testing.T) {
		cfg := realConfig(t, ringpipe.BackendAuto)
		cfg.Dir = filepath.Join(cfg.Dir, "my data base ünïcødé 数据 ☃ 'q\"")
		mtRoundTrip(t, cfg)
		e := start(t, cfg)
		_, err := ringpipe.Start(ctx, cfg)
		assert.ErrorIs(t, err, ringpipe.ErrLocked)
		if err != nil {
			assert.Contains(t, err.Error(), cfg.Dir, "ErrLocked names the directory")
		}
		stop(t, e)
	})
	t.Run("tmpfs", func(t *testing.T) {
		var st unix.Statfs_t
		if err := unix.Statfs("/dev/shm", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
			t.Skipf("/dev/shm is not a tmpfs here (%v)", err)
		}
		for _, dio := range []bool{false, true} {
			t.Run(fmt.Sprintf("DirectIO=%v", dio), func(t *testing.T) {
				dir, err := os.MkdirTemp("/dev/shm", "ringpipe-multi-audit-")
				require.NoError(t, err)
				t.Cleanup(func() { _ = os.RemoveAll(dir) })
				for _, b := range []ringpipe.Backend{ringpipe.BackendStd, ringpipe.BackendAuto} {
					cfg := realConfig(t, b)
					cfg.Dir, cfg.DirectIO = filepath.Join(dir, b.String()), dio
					e, err := ringpipe.Start(ctx, cfg)
					if err != nil {
						// Refusing is allowed, with an error naming DirectIO.
						assert.Contains(t, err.Error(), "DirectIO", "Start on tmpfs refused without naming DirectIO")
						continue
					}
					stop(t, e)
					mtRoundTrip(t, cfg)
				}
			})
		}
	})
}

// mtForeign are a user's files and directories in an engine's directory,
// by path relative to it ("/" ends a directory); the engine must leave
// them alone.
var mtForeign = map[string]string{
	"notes.txt":             "my notes, not the engine's\n",
	"MANIFEST-notes.txt":    "not a manifest\n",
	"CURRENT.bak":           "MANIFEST-000001\n",
	"extra/":                "",
	"extra/keep.txt":        "kept\n",
	"extra/sub/":            "",
	"extra/sub/MANIFEST-x":  "not a manifest\n",
	"empty.d/":              "",
	"hot/notes.txt":         "hot notes\n",
	"hot/extra/":            "",
	"wal/notes.txt":         "wal notes\n",
	"blocks/notes.txt":      "block notes\n",
	"blocks/1/notes.txt":    "notes among space 1's blocks\n",
	"blocks/9999999/":       "",
	"blocks/9999999/x.blk~": "a backup of the user's\n",
}

// mtPlant creates mtForeign under dir.
func mtPlant(t *testing.T, dir string) {
	t.Helper()
	for rel, content := range mtForeign {
		p := filepath.Join(dir, rel)
		if strings.HasSuffix(rel, "/") {
			require.NoError(t, os.MkdirAll(p, 0o750))
			continue
		}
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	}
}

// mtForeignState is mtForeign as found under dir: for each, its mode,
// size, mtime and contents, or the error.
func mtForeignState(dir string) map[string]string {
	out := make(map[string]string)
	for rel := range mtForeign {
		p := filepath.Join(dir, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			out[rel] = err.Error()
			continue
		}
		s := fmt.Sprintf("%v %d", fi.Mode(), fi.ModTime().UnixNano())
		if !fi.IsDir() {
			b, err := os.ReadFile(p)
			s += fmt.Sprintf(" %q %v", b, err)
		}
		out[rel] = s
	}
	return out
}

// TestMultiAuditForeignFiles: a user's files and directories in the
// engine's directory (top level and inside hot/, wal/, blocks/), there
// before the first Start, survive Starts, writes, Flushes, Stops and
// recoveries untouched (contents, mode and mtime), on std and io_uring,
// with and without DirectIO; on a simulated disk, also a power loss and
// the recovery after it.
func TestMultiAuditForeignFiles(t *testing.T) {
	for _, c := range []struct {
		name string
		b    ringpipe.Backend
		dio  bool
	}{{"std", ringpipe.BackendStd, false}, {"auto-directio", ringpipe.BackendAuto, true}} {
		t.Run(c.name, func(t *testing.T) {
			ctx := ctxFor(t)
			cfg := realConfig(t, c.b)
			cfg.DirectIO = c.dio
			cfg.SealThreshold = 50
			mtPlant(t, cfg.Dir)
			want := mtForeignState(cfg.Dir)
			m := newModel(mtSpec)
			for life := range 3 {
				e := start(t, cfg)
				sp := createSpace(t, e, mtSpec.Name, mtSpec.Dims, mtSpec.Bits)
				require.Equal(t, ringpipe.SpaceID(1), sp)
				checkModel(t, engineReader(t, e), sp, m, fullBox(mtSpec))
				for i := range 120 {
					p := ringpipe.Point{uint32(life), uint32(i % 70)}
					v := fmt.Appendf(nil, "life %d write %d", life, i)
					rev, err := e.Put(ctx, sp, p, v)
					require.NoError(t, err)
					m.add(write{point: p, rev: rev, value: v})
				}
				require.NoError(t, e.Flush(ctx, sp))
				stop(t, e)
				assert.Equal(t, want, mtForeignState(cfg.Dir), "the user's files after life %d", life)
			}
		})
	}
	t.Run("sim power loss", func(t *testing.T) {
		ctx := ctxFor(t)
		disk := newSimDisk(t, 72)
		cfg := simConfig(t, disk)
		cfg.SealThreshold = 50
		for rel, content := range mtForeign {
			p := simDir + "/" + rel
			if strings.HasSuffix(rel, "/") {
				require.NoError(t, disk.MkdirAll(p))
				continue
			}
			require.NoError(t, disk.MkdirAll(filepath.Dir(p)))
			require.NoError(t, disk.WriteFile(p, []byte(content)))
		}
		check := func(what string) {
			t.Helper()
			for rel, content := range mtForeign {
				if strings.HasSuffix(rel, "/") {
					continue
				}
				got, err := disk.ReadFile(simDir + "/" + rel)
				if assert.NoError(t, err, "%s: the user's %s", what, rel) {
					assert.Equal(t, content, string(got), "%s: the user's %s", what, rel)
				}
			}
		}
		m := newModel(mtSpec)
		rng := rand.New(rand.NewSource(72))
		e := start(t, cfg)
		sp := createSpace(t, e, mtSpec.Name, mtSpec.Dims, mtSpec.Bits)
		for life := range 3 {
			for i := range 120 {
				p := ringpipe.Point{uint32(life), uint32(i % 70)}
				v := fmt.Appendf(nil, "life %d write %d", life, i)
				rev, err := e.Put(ctx, sp, p, v)
				require.NoError(t, err)
				m.add(write{point: p, rev: rev, value: v})
			}
			disk.PowerLoss(rng)
			sctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			_ = e.Stop(sctx) // the process is dead: only release what it held
			cancel()
			e = start(t, cfg)
			checkModel(t, engineReader(t, e), sp, m, fullBox(mtSpec))
			check(fmt.Sprintf("recovery after power loss %d", life))
		}
		stop(t, e)
	})
}

// TestMultiAuditRelativeDirChdir: two engines started with the same
// relative Dir "db" from two working directories (c1/db and c2/db, two
// directories: both Starts succeed) write and flush after the process
// changed its working directory to c2 (os.Chdir is process state: any
// package, or a test's t.Chdir, may call it). Each engine must go on
// working in the directory it opened: every acknowledged record and
// Flush is there at the next Start of each, and neither touches the
// other's files.
//
// Fixed: before, the engine kept Dir as given and opened every later file
// (a new hot generation, a block, a WAL segment, the manifest's rename)
// by that relative path, resolved against the working directory of the
// moment. The engine started in c1 then writes its block over c2/db's
// block of the same name (its Flush returns nil), its own directory
// misses the block its manifest names, and neither directory starts
// again: c2/db's says "corrupt blocks/1/1.blk" (bad footer magic or a
// checksum the manifest does not expect), c1/db's "open block
// blocks/1/1.blk: no such file or directory". Acknowledged writes of
// both engines are lost. (With one engine only, its next new file after
// the chdir fails and the engine ends in ErrFailed.) Cause: nothing made
// Dir absolute at Start, and recovery.go (*engine).recover and the
// actors (actors.Config.Dir) join every path onto it. Start now resolves
// Dir once (resolveDir).
func TestMultiAuditRelativeDirChdir(t *testing.T) {
	ctx := ctxFor(t)
	c1, c2 := t.TempDir(), t.TempDir()
	t.Chdir(c1)
	cfg := ringpipe.Config{Dir: "db", Backend: ringpipe.BackendStd, Logger: zaptest.NewLogger(t), Preallocate: testPrealloc}
	a := start(t, cfg)
	spa := createSpace(t, a, mtSpec.Name, mtSpec.Dims, mtSpec.Bits)
	ma := newModel(mtSpec)
	mb := newModel(mtSpec)
	put := func(e *ringpipe.Engine, sp ringpipe.SpaceID, m *model, i int, tag string) {
		p := ringpipe.Point{uint32(i), 3}
		v := fmt.Appendf(nil, "%s %d", tag, i)
		rev, err := e.Put(ctx, sp, p, v)
		if assert.NoError(t, err, "%s: Put %d", tag, i) {
			m.add(write{point: p, rev: rev, value: v})
		}
	}
	for i := range 5 {
		put(a, spa, ma, i, "c1/db")
	}
	require.NoError(t, os.Chdir(c2)) // t.Chdir restores c1's parent's cwd at the end
	b := start(t, cfg)
	spb := createSpace(t, b, mtSpec.Name, mtSpec.Dims, mtSpec.Bits)
	for i := range 5 {
		put(b, spb, mb, i, "c2/db")
	}
	assert.NoError(t, b.Flush(ctx, spb), "c2/db: Flush")
	for i := 5; i < 10; i++ {
		put(a, spa, ma, i, "c1/db")
	}
	assert.NoError(t, a.Flush(ctx, spa), "c1/db: Flush")
	for i := 10; i < 15; i++ {
		put(a, spa, ma, i, "c1/db")
	}
	t.Logf("c1/db Stop: %v", a.Stop(ctx))
	t.Logf("c2/db Stop: %v", b.Stop(ctx))

	for _, x := range []struct {
		dir string
		m   *model
	}{{filepath.Join(c1, "db"), ma}, {filepath.Join(c2, "db"), mb}} {
		c := cfg
		c.Dir = x.dir
		e, err := ringpipe.Start(ctx, c)
		if !assert.NoError(t, err, "Start on %s", x.dir) {
			continue
		}
		checkModel(t, engineReader(t, e), 1, x.m, fullBox(mtSpec))
		stop(t, e)
	}
}
