package ringpipe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ringpipe/ringpipe/hot"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
	"github.com/ringpipe/ringpipe/snapshot"
)

// Crash recovery (DESIGN.md, "Crash recovery") on ring/sim's simulated
// disk: each Start with the same disk is a new process, disk.Crash a
// process kill and disk.PowerLoss a power cut.

// Bounds on waits: generous, because CI runs everything with -race on two
// cores; a healthy run takes a small fraction of each.
const (
	opTimeout       = 20 * time.Second       // one API call, a Start or a Stop
	eventualTimeout = 20 * time.Second       // a Stats-based eventual condition
	pollEvery       = 2 * time.Millisecond   // how often such a condition is polled
	testDir         = "/db"                  // the engine's directory on a simulated disk
	testPrealloc    = 64 << 10               // small log files: tests start many engines
	stallDelay      = 200 * time.Millisecond // virtual time a stalled hot sync takes: 100× the deadline
)

// testSpec is the space most tests write to: 256×256 points, so that
// pointOf gives every write a point of its own.
var testSpec = SpaceSpec{Name: "grid", Dims: 2, Bits: 8}

// fullBox covers every point of testSpec.
var fullBox = Box{Min: Point{0, 0}, Max: Point{255, 255}}

func ctxFor(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

func testLogger(t testing.TB) *zap.Logger {
	return zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
}

// newTestDisk returns an empty simulated disk with testDir created.
func newTestDisk(t testing.TB, seed int64) *sim.Disk {
	t.Helper()
	disk := sim.NewDisk(seed)
	require.NoError(t, disk.MkdirAll(testDir))
	return disk
}

// simCfg is a Config whose every Start is a new process on disk.
func simCfg(t testing.TB, disk *sim.Disk) Config {
	return Config{
		Dir:         testDir,
		Logger:      testLogger(t),
		Preallocate: testPrealloc,
		NewRing:     func(o ring.Options) (ring.Ring, error) { return disk.NewRing(o), nil },
	}
}

// mustStart starts an engine and stops it when the test ends (a Stop by the
// test itself makes that one a no-op).
func mustStart(t testing.TB, cfg Config) *Engine {
	t.Helper()
	e, err := Start(ctxFor(t), cfg)
	require.NoError(t, err, "Start")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		_ = e.Stop(ctx)
	})
	return e
}

func mustStop(t testing.TB, e *Engine) {
	t.Helper()
	require.NoError(t, e.Stop(ctxFor(t)), "Stop")
}

// stopAfterCrash stops an engine whose disk crashed or lost power under
// it: Stop may report errors but must return, and promptly.
func stopAfterCrash(t testing.TB, e *Engine) {
	t.Helper()
	err := e.Stop(ctxFor(t))
	require.NotErrorIs(t, err, context.DeadlineExceeded, "Stop after a crash hung")
}

func mustSpace(t testing.TB, e *Engine, name string) SpaceID {
	t.Helper()
	spec := testSpec
	spec.Name = name
	id, err := e.CreateSpace(ctxFor(t), spec)
	require.NoError(t, err, "CreateSpace %s", name)
	return id
}

// acked is one write as the test saw it: acknowledged (rev > 0), or failed
// (rev == 0: it may be wholly present or wholly absent).
type acked struct {
	space SpaceID
	p     Point
	rev   Revision
	val   []byte
}

// pointOf gives write i a point of its own in testSpec.
func pointOf(i int) Point { return Point{uint32(i % 256), uint32(i / 256 % 256)} }

func valueOf(tag string, i int) []byte { return fmt.Appendf(nil, "%s-%d", tag, i) }

// putRange puts writes from..to-1 into space one after another, each to
// pointOf(i), and requires every one to succeed.
func putRange(t testing.TB, e *Engine, space SpaceID, tag string, from, to int) []acked {
	t.Helper()
	ctx := ctxFor(t)
	out := make([]acked, 0, to-from)
	for i := from; i < to; i++ {
		v := valueOf(tag, i)
		rev, err := e.Put(ctx, space, pointOf(i), v)
		require.NoError(t, err, "Put %d", i)
		out = append(out, acked{space: space, p: pointOf(i), rev: rev, val: v})
	}
	return out
}

// putConcurrent runs writers that each put per writes, writer w's i-th to
// spaces[i%len(spaces)] at pointOf(base+w*per+i). Every write must succeed.
func putConcurrent(t testing.TB, e *Engine, spaces []SpaceID, writers, per, base int, tag string) []acked {
	t.Helper()
	ctx := ctxFor(t)
	var mu sync.Mutex
	var out []acked
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range per {
				n := base + w*per + i
				sp := spaces[i%len(spaces)]
				v := valueOf(tag, n)
				rev, err := e.Put(ctx, sp, pointOf(n), v)
				if !assert.NoError(t, err, "writer %d Put %d", w, i) {
					return
				}
				mu.Lock()
				out = append(out, acked{space: sp, p: pointOf(n), rev: rev, val: v})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.False(t, t.Failed(), "writers failed")
	return out
}

// only returns the writes of ws to space.
func only(ws []acked, space SpaceID) []acked {
	var out []acked
	for _, w := range ws {
		if w.space == space {
			out = append(out, w)
		}
	}
	return out
}

func maxRev(ws []acked) Revision {
	var m Revision
	for _, w := range ws {
		m = max(m, w.rev)
	}
	return m
}

// checkAcked checks that v shows space as exactly want plus any of maybe
// (failed writes, each wholly present or wholly absent): Get of every
// acknowledged write returns it, and a Scan of the whole space returns
// nothing else. Every write must have a point of its own.
func checkAcked(t testing.TB, v *View, space SpaceID, want, maybe []acked) {
	t.Helper()
	bad := 0
	byPoint := make(map[string]acked, len(want))
	for _, w := range want {
		byPoint[fmt.Sprint(w.p)] = w
		r, err := v.Get(space, w.p)
		ok := assert.NoError(t, err, "Get %v (acknowledged at revision %d)", w.p, w.rev) &&
			assert.Equal(t, w.rev, r.Revision, "revision at %v", w.p) &&
			assert.Equal(t, w.val, r.Value, "value at %v", w.p)
		if !ok {
			if bad++; bad >= 5 {
				t.Fatalf("checkAcked: giving up after %d bad points", bad)
			}
		}
	}
	present := 0
	for _, w := range maybe {
		r, err := v.Get(space, w.p)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if assert.NoError(t, err, "Get %v (failed write)", w.p) {
			assert.Equal(t, w.val, r.Value, "a failed write at %v is present but not whole", w.p)
			byPoint[fmt.Sprint(w.p)] = acked{space: space, p: w.p, rev: r.Revision, val: w.val}
			present++
		}
	}
	n := 0
	require.NoError(t, v.Scan(space, fullBox, func(r Record) bool {
		n++
		w, ok := byPoint[fmt.Sprint(r.Point)]
		if assert.True(t, ok, "Scan returned %v (revision %d), which nobody wrote", r.Point, r.Revision) {
			assert.Equal(t, w.rev, r.Revision, "Scan: revision at %v", r.Point)
			assert.Equal(t, w.val, r.Value, "Scan: value at %v", r.Point)
		}
		return true
	}))
	assert.Equal(t, len(want)+present, n, "Scan of space %d: record count", space)
}

// tailLen is how many records (every revision, every generation, staged
// ones included) the space's unsealed tail holds: a record that recovery
// replayed twice counts twice.
func tailLen(t testing.TB, e *Engine, space SpaceID) int {
	t.Helper()
	n, err := e.eng.view().TailLen(space)
	require.NoError(t, err)
	return n
}

// blockCount is how many blocks the current View knows for space.
func blockCount(t testing.TB, e *Engine, space SpaceID) int {
	t.Helper()
	n, err := e.eng.view().Blocks(space)
	require.NoError(t, err)
	return n
}

func hotPath(space SpaceID, gen uint64) string {
	return path.Join(testDir, "hot", hot.Gen{Space: space, Gen: gen}.FileName())
}

// hotPrefix is the path prefix of every hot segment file of space.
func hotPrefix(space SpaceID) string {
	p := hotPath(space, 1)
	return p[:strings.LastIndexByte(p, '-')+1]
}

// stallHot makes every fdatasync of space's hot segment files take
// stallDelay of virtual time more, far past DirectWriteTimeout, until the
// disk's faults are cleared: the space's writes go to the staging WAL.
func stallHot(disk *sim.Disk, space SpaceID) {
	disk.Inject(sim.Fault{Kind: sim.Delay, Delay: stallDelay, Path: hotPrefix(space),
		Ops: []ring.Opcode{ring.OpFdatasync}, Persist: true})
}

// filesUnder lists the files of names (disk.Files or disk.DurableFiles)
// that start with prefix.
func filesUnder(names []string, prefix string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}

// waitStats polls e's Stats until cond holds, failing after eventualTimeout.
func waitStats(t testing.TB, e *Engine, what string, cond func(Stats) bool) {
	t.Helper()
	deadline := time.NewTimer(eventualTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for !cond(e.Stats()) {
		select {
		case <-tick.C:
		case <-deadline.C:
			require.FailNowf(t, "timed out", "waiting for %s; last stats %+v", what, e.Stats())
		}
	}
}

// TestRecoveryRemovesOrphanedBlocks: block files the manifest does not
// name (a block or temporary file whose manifest edit a crash cut short)
// are removed by Start, durably; the named block stays and its records are
// readable.
func TestRecoveryRemovesOrphanedBlocks(t *testing.T) {
	disk := newTestDisk(t, 1)
	cfg := simCfg(t, disk)
	e := mustStart(t, cfg)
	space := mustSpace(t, e, "grid")
	want := putRange(t, e, space, "a", 0, 40)
	require.NoError(t, e.Flush(ctxFor(t), space))
	want = append(want, putRange(t, e, space, "b", 40, 50)...)
	mustStop(t, e)

	dir := snapshot.BlockDir(testDir, space) + "/"
	named := filesUnder(disk.Files(), dir)
	require.Len(t, named, 1, "one block after one Flush")
	orphans := []string{
		snapshot.BlockPath(testDir, space, 999),
		// A block write cut short: <id>.blk.tmp. (Any other .tmp is a
		// user's and stays: TestFilesForeignTmpInBlockDir.)
		snapshot.BlockPath(testDir, space, 1000) + ".tmp",
	}
	for _, o := range orphans {
		require.NoError(t, disk.WriteFile(o, []byte("not a block")))
	}

	e = mustStart(t, cfg)
	assert.Equal(t, named, filesUnder(disk.Files(), dir), "files in %s after recovery", dir)
	assert.Equal(t, named, filesUnder(disk.DurableFiles(), dir), "the removal is durable")
	assert.Equal(t, 1, blockCount(t, e, space))
	assert.Equal(t, 10, tailLen(t, e, space))
	checkAcked(t, e.View(), space, want, nil)
	mustStop(t, e)

	// What was removed stays removed through a power loss.
	disk.PowerLoss(rand.New(rand.NewSource(1)))
	e = mustStart(t, cfg)
	assert.Equal(t, named, filesUnder(disk.Files(), dir))
	checkAcked(t, e.View(), space, want, nil)
	mustStop(t, e)
}

// TestRecoveryRetiresSealedHotGeneration: a hot generation the manifest
// says is sealed (a crash came between the manifest edit and the file's
// retirement; simulated by putting the retired file's bytes back under its
// name) is removed by recovery, and its records, which the block holds,
// are not replayed a second time.
func TestRecoveryRetiresSealedHotGeneration(t *testing.T) {
	disk := newTestDisk(t, 2)
	cfg := simCfg(t, disk)
	e := mustStart(t, cfg)
	space := mustSpace(t, e, "grid")
	want := putRange(t, e, space, "a", 0, 40)
	gen1, err := disk.ReadDurable(hotPath(space, 1))
	require.NoError(t, err, "generation 1 before its seal")
	require.NoError(t, e.Flush(ctxFor(t), space))
	want = append(want, putRange(t, e, space, "b", 40, 50)...)
	mustStop(t, e)

	require.NotContains(t, disk.Files(), hotPath(space, 1), "Flush retired generation 1")
	require.NoError(t, disk.WriteFile(hotPath(space, 1), gen1))

	e = mustStart(t, cfg)
	assert.NotContains(t, disk.Files(), hotPath(space, 1), "recovery removes the sealed generation")
	assert.NotContains(t, disk.DurableFiles(), hotPath(space, 1), "durably")
	assert.Equal(t, 1, blockCount(t, e, space))
	assert.Equal(t, 10, tailLen(t, e, space), "the tail holds generation 2 only, each record once")
	assert.Zero(t, e.Stats().StagedPending)
	checkAcked(t, e.View(), space, want, nil)

	// Sealing what is left makes a second block of generation 2's ten
	// records, nothing more.
	require.NoError(t, e.Flush(ctxFor(t), space))
	assert.Equal(t, 2, blockCount(t, e, space))
	assert.Zero(t, tailLen(t, e, space))
	mustStop(t, e)
	e = mustStart(t, cfg)
	assert.Equal(t, 2, blockCount(t, e, space))
	assert.Zero(t, tailLen(t, e, space))
	checkAcked(t, e.View(), space, want, nil)
	mustStop(t, e)
}

// TestRecoveryStagedRecords: writes acknowledged from the staging WAL while
// their hot segment stalls survive a power loss before any promotion;
// recovery stages them again (each once), the promoter then moves them
// into their hot segment, and a restart after the promotion and a power
// loss finds the same data with nothing staged.
func TestRecoveryStagedRecords(t *testing.T) {
	for seed := int64(21); seed <= 23; seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			disk := newTestDisk(t, seed)
			cfg := simCfg(t, disk)
			cfg.PromoteInterval = time.Hour // nothing is promoted until the test says so
			e := mustStart(t, cfg)
			slow := mustSpace(t, e, "slow")
			fast := mustSpace(t, e, "fast")
			spaces := []SpaceID{slow, fast}
			all := putConcurrent(t, e, spaces, 2, 10, 0, "warm")
			require.Zero(t, e.Stats().StagedWrites, "no staging without a stall")

			stallHot(disk, slow)
			all = append(all, putConcurrent(t, e, spaces, 8, 20, 1000, "stalled")...)
			st := e.Stats()
			require.Positive(t, st.StagedWrites, "the stalled space's writes were staged: %+v", st)
			require.Positive(t, st.StagedPending)

			disk.PowerLoss(rand.New(rand.NewSource(seed)))
			stopAfterCrash(t, e)

			// Restart, still without promotion: every acknowledged write is
			// there, the stalled space's from the WAL.
			e = mustStart(t, cfg)
			st = e.Stats()
			assert.Positive(t, st.StagedPending, "recovery staged the WAL's unpromoted records again")
			for _, sp := range spaces {
				checkAcked(t, e.View(), sp, only(all, sp), nil)
				assert.Equal(t, len(only(all, sp)), tailLen(t, e, sp), "space %d: each record once in the tail", sp)
			}
			staged := st.StagedPending
			mustStop(t, e)

			// A second recovery stages the same records again.
			e = mustStart(t, cfg)
			assert.Equal(t, staged, e.Stats().StagedPending, "a second recovery stages the same records")
			for _, sp := range spaces {
				assert.Equal(t, len(only(all, sp)), tailLen(t, e, sp), "space %d: each record once in the tail", sp)
			}
			mustStop(t, e)

			// Restart with promotion: everything staged moves into the hot
			// segment.
			cfg.PromoteInterval = time.Millisecond
			e = mustStart(t, cfg)
			waitStats(t, e, "every staged record promoted", func(s Stats) bool {
				return s.StagedPending == 0 && s.Promoted >= uint64(staged)
			})
			for _, sp := range spaces {
				checkAcked(t, e.View(), sp, only(all, sp), nil)
			}
			mustStop(t, e)

			// The promotion was durable: after a power loss nothing is
			// staged any more and the data is the same, each record once.
			disk.PowerLoss(rand.New(rand.NewSource(seed + 100)))
			e = mustStart(t, cfg)
			assert.Zero(t, e.Stats().StagedPending, "promoted records are not staged again")
			for _, sp := range spaces {
				checkAcked(t, e.View(), sp, only(all, sp), nil)
				assert.Equal(t, len(only(all, sp)), tailLen(t, e, sp), "space %d: each record once in the tail", sp)
			}
			mustStop(t, e)
		})
	}
}

// TestRecoveryDropsSealedWALRecords: records staged, promoted and then
// sealed into a block are still in the staging WAL's active segment (it is
// retired only once a later segment exists). Recovery must drop them as
// sealed: not stage them again, not show them twice in the tail, and not
// let the promoter and a Flush seal them into a second block.
func TestRecoveryDropsSealedWALRecords(t *testing.T) {
	disk := newTestDisk(t, 7)
	cfg := simCfg(t, disk)
	e := mustStart(t, cfg)
	space := mustSpace(t, e, "grid")
	want := putRange(t, e, space, "a", 0, 5)
	stallHot(disk, space)
	want = append(want, putConcurrent(t, e, []SpaceID{space}, 4, 10, 100, "b")...)
	require.Positive(t, e.Stats().StagedWrites)
	disk.ClearFaults()
	waitStats(t, e, "every staged record promoted", func(s Stats) bool { return s.StagedPending == 0 })
	require.NoError(t, e.Flush(ctxFor(t), space))
	require.Zero(t, tailLen(t, e, space), "Flush sealed the whole tail")
	blocks := blockCount(t, e, space)
	mustStop(t, e)
	require.NotEmpty(t, filesUnder(disk.Files(), path.Join(testDir, "wal")+"/"), "the WAL still holds the sealed records")

	for restart := range 2 {
		e = mustStart(t, cfg)
		assert.Zero(t, e.Stats().StagedPending, "restart %d: sealed records staged again", restart)
		assert.Zero(t, tailLen(t, e, space), "restart %d: sealed records replayed into the tail", restart)
		checkAcked(t, e.View(), space, want, nil)
		// Whatever recovery staged, the promoter moves into the new
		// generation and Flush would seal it into one more block.
		require.NoError(t, e.Flush(ctxFor(t), space))
		assert.Equal(t, blocks, blockCount(t, e, space), "restart %d: Flush sealed the same records again", restart)
		blocks = blockCount(t, e, space)
		mustStop(t, e)
	}
}

// TestRecoveryResumesRevisions: after a restart the next revision is above
// the highest one found, wherever that one lives: only in a block, in a
// hot generation, or only in the staging WAL.
func TestRecoveryResumesRevisions(t *testing.T) {
	for _, where := range []string{"block", "hot", "wal"} {
		t.Run(where, func(t *testing.T) {
			disk := newTestDisk(t, 3)
			cfg := simCfg(t, disk)
			cfg.PromoteInterval = time.Hour
			e := mustStart(t, cfg)
			space := mustSpace(t, e, "grid")
			ctx := ctxFor(t)
			want := putRange(t, e, space, "a", 0, 20)
			require.NoError(t, e.Flush(ctx, space))
			switch where {
			case "hot":
				want = append(want, putRange(t, e, space, "b", 20, 30)...)
				// A tombstone's revision counts as much as a value's.
				rev, err := e.Delete(ctx, space, pointOf(0))
				require.NoError(t, err)
				want = want[1:]
				want = append(want, acked{space: space, p: pointOf(0), rev: rev})
			case "wal":
				want = append(want, putRange(t, e, space, "b", 20, 30)...)
				stallHot(disk, space)
				want = append(want, putRange(t, e, space, "c", 30, 40)...)
				require.Positive(t, e.Stats().StagedPending)
			}
			top := maxRev(want)
			mustStop(t, e)
			disk.PowerLoss(rand.New(rand.NewSource(3)))

			e = mustStart(t, cfg)
			switch where {
			case "block":
				assert.Zero(t, tailLen(t, e, space), "everything is in the block")
			case "wal":
				assert.Positive(t, e.Stats().StagedPending, "the newest records are only in the WAL")
			}
			assert.Equal(t, top, e.View().Revision(), "the View reflects the highest revision found")
			rev, err := e.Put(ctxFor(t), space, pointOf(100), []byte("after"))
			require.NoError(t, err)
			assert.Greater(t, rev, top, "first revision after the restart")
			if where == "hot" {
				_, err := e.Get(ctxFor(t), space, pointOf(0))
				assert.ErrorIs(t, err, ErrNotFound, "the delete survived")
				want = want[:len(want)-1]
			}
			want = append(want, acked{space: space, p: pointOf(100), rev: rev, val: []byte("after")})
			checkAcked(t, e.View(), space, want, nil)
			mustStop(t, e)
		})
	}
}

// TestRecoveryLocked: a second Start on a directory in use returns
// ErrLocked and leaves the first engine working; after Stop the directory
// can be started again.
func TestRecoveryLocked(t *testing.T) {
	check := func(t *testing.T, cfg Config) {
		e := mustStart(t, cfg)
		space := mustSpace(t, e, "grid")
		want := putRange(t, e, space, "a", 0, 5)

		e2, err := Start(ctxFor(t), cfg)
		if e2 != nil {
			stopAfterCrash(t, e2)
		}
		require.ErrorIs(t, err, ErrLocked)
		assert.Contains(t, err.Error(), cfg.Dir, "the error names the directory")

		want = append(want, putRange(t, e, space, "b", 5, 10)...)
		checkAcked(t, e.View(), space, want, nil)
		mustStop(t, e)

		e = mustStart(t, cfg)
		checkAcked(t, e.View(), space, want, nil)
		mustStop(t, e)
	}
	t.Run("sim", func(t *testing.T) { check(t, simCfg(t, newTestDisk(t, 4))) })
	t.Run("real", func(t *testing.T) {
		check(t, Config{Dir: t.TempDir(), Logger: testLogger(t), Preallocate: testPrealloc})
	})
}

// damaged is a disk whose next recovery has every kind of work to do: an
// orphaned block file to remove, a sealed hot generation to retire, a live
// one to replay and staged records in the WAL.
type damaged struct {
	disk  *sim.Disk
	cfg   Config
	space SpaceID
	want  []acked
	tail  int // records the tail holds after recovery
}

func newDamaged(t testing.TB, seed int64) damaged {
	t.Helper()
	disk := newTestDisk(t, seed)
	cfg := simCfg(t, disk)
	cfg.PromoteInterval = time.Hour
	e := mustStart(t, cfg)
	space := mustSpace(t, e, "grid")
	want := putRange(t, e, space, "a", 0, 30)
	gen1, err := disk.ReadDurable(hotPath(space, 1))
	require.NoError(t, err)
	require.NoError(t, e.Flush(ctxFor(t), space))
	want = append(want, putRange(t, e, space, "b", 30, 40)...)
	stallHot(disk, space)
	// Stats is not asked here (it merges two large histograms, slow under
	// -race); the undisturbed run of TestRecoveryIdempotent checks that
	// these writes were staged.
	want = append(want, putRange(t, e, space, "c", 40, 50)...)
	mustStop(t, e)
	disk.ClearFaults()
	require.NoError(t, disk.WriteFile(snapshot.BlockPath(testDir, space, 999), []byte("orphan")))
	require.NoError(t, disk.WriteFile(hotPath(space, 1), gen1))
	return damaged{disk: disk, cfg: cfg, space: space, want: want, tail: 20}
}

// check starts an engine on d's disk and checks the recovered state; with
// staged it also checks that recovery staged the WAL-only records again.
func (d damaged) check(t testing.TB, staged bool) {
	t.Helper()
	e := mustStart(t, d.cfg)
	files := d.disk.Files()
	assert.NotContains(t, files, snapshot.BlockPath(testDir, d.space, 999), "orphaned block removed")
	assert.NotContains(t, files, hotPath(d.space, 1), "sealed generation removed")
	assert.Equal(t, 1, blockCount(t, e, d.space))
	assert.Equal(t, d.tail, tailLen(t, e, d.space), "each unsealed record once in the tail")
	if staged {
		assert.Positive(t, e.Stats().StagedPending, "the WAL-only records are staged")
	}
	checkAcked(t, e.View(), d.space, d.want, nil)
	mustStop(t, e)
}

// TestRecoveryIdempotent: a crash at any point of a recovery, simulated by
// failing every I/O from the k-th on and then killing the process, leaves a
// disk from which the next recovery gets the same state as an undisturbed
// one; and so does a power loss at each such point.
func TestRecoveryIdempotent(t *testing.T) {
	const seed = 5
	// How many I/Os an undisturbed Start does (recovery, then whatever
	// the actors do before Start returns).
	d := newDamaged(t, seed)
	base := d.disk.OpCount()
	e := mustStart(t, d.cfg)
	ops := int(d.disk.OpCount() - base)
	mustStop(t, e)
	d.check(t, true)
	t.Logf("an undisturbed Start does %d I/Os", ops)
	require.Positive(t, ops)

	failed := 0
	for k := 1; k <= ops+2; k++ {
		for _, power := range []bool{false, true} {
			name := fmt.Sprintf("k%d/crash", k)
			if power {
				name = fmt.Sprintf("k%d/power", k)
			}
			ok := t.Run(name, func(t *testing.T) {
				d := newDamaged(t, seed)
				d.disk.Inject(sim.Fault{Kind: sim.EIO, At: d.disk.OpCount() + uint64(k), Persist: true})
				e, err := Start(ctxFor(t), d.cfg)
				if err == nil {
					// The fault came after recovery: the actors fail.
					t.Logf("Start succeeded with I/O failing from op %d", k)
				} else {
					assert.NotErrorIs(t, err, ErrLocked)
				}
				if power {
					d.disk.PowerLoss(rand.New(rand.NewSource(int64(k))))
				} else {
					d.disk.Crash()
				}
				if e != nil {
					stopAfterCrash(t, e)
				}
				d.check(t, false)
				// And again: the recovery that succeeded left nothing a
				// further one would do differently.
				d.check(t, false)
			})
			if !ok {
				if failed++; failed >= 3 {
					t.Fatalf("giving up after %d failed crash points", failed)
				}
			}
		}
	}
}

// TestRecoveryTornWALTail: a torn last batch in the staging WAL is refused
// by Strict recovery with a CorruptionError that names the segment, and
// dropped by TolerateTornTail, which repairs the tail durably (a Strict
// start afterwards succeeds).
func TestRecoveryTornWALTail(t *testing.T) {
	disk := newTestDisk(t, 6)
	cfg := simCfg(t, disk)
	cfg.PromoteInterval = time.Hour
	e := mustStart(t, cfg)
	space := mustSpace(t, e, "grid")
	want := putRange(t, e, space, "a", 0, 5)
	stallHot(disk, space)
	// One writer, one write at a time: each staged batch holds one record,
	// and the last ones are in the WAL only (the space stays slow).
	want = append(want, putRange(t, e, space, "b", 5, 15)...)
	require.Positive(t, e.Stats().StagedPending)
	mustStop(t, e)
	disk.ClearFaults()

	segs := filesUnder(disk.Files(), path.Join(testDir, "wal")+"/")
	require.Len(t, segs, 1, "one WAL segment")
	seg := segs[0]
	data, err := disk.ReadFile(seg)
	require.NoError(t, err)
	last := bytes.LastIndexFunc(data, func(r rune) bool { return r != 0 })
	require.Positive(t, last, "the WAL segment holds the staged batches")
	// Tear the last batch: zero the last byte it wrote.
	require.NoError(t, disk.ZeroRange(seg, int64(last), 1))
	torn, err := disk.ReadFile(seg)
	require.NoError(t, err)

	strict := cfg
	strict.WALRecovery = Strict
	e, err = Start(ctxFor(t), strict)
	if e != nil {
		stopAfterCrash(t, e)
	}
	require.Error(t, err, "Strict accepted a torn WAL tail")
	assert.ErrorIs(t, err, ErrCorrupt)
	var ce *CorruptionError
	if assert.ErrorAs(t, err, &ce) {
		rel := strings.TrimPrefix(seg, testDir+"/")
		assert.Equal(t, rel, ce.Path, "the error names the segment relative to Dir")
		assert.LessOrEqual(t, ce.Offset, int64(last), "the bad frame is at or before the damage")
		assert.GreaterOrEqual(t, ce.Offset, int64(0))
	}
	assert.Contains(t, err.Error(), path.Base(seg), "the message names the file")
	after, err := disk.ReadFile(seg)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(torn, after), "a refused Strict recovery leaves the WAL as it found it")

	// TolerateTornTail drops the torn batch: the last write, which only
	// the WAL held.
	e = mustStart(t, cfg)
	lost := want[len(want)-1]
	_, err = e.Get(ctxFor(t), space, lost.p)
	assert.ErrorIs(t, err, ErrNotFound, "the torn batch's record is dropped")
	checkAcked(t, e.View(), space, want[:len(want)-1], nil)
	mustStop(t, e)

	// The repair was durable: Strict now accepts the WAL.
	disk.PowerLoss(rand.New(rand.NewSource(6)))
	e = mustStart(t, strict)
	checkAcked(t, e.View(), space, want[:len(want)-1], nil)
	mustStop(t, e)
}
