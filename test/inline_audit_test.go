package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// Inline commit audit: adversarial interleavings of the inline commit
// path (actors.Inline) with the queued path and the actors. A Put or
// Delete on an idle pipeline is committed on its caller's goroutine;
// anything else takes the write queue. These tests switch callers between
// the two paths as fast as they can, from many goroutines at once, on the
// simulated disk (one space's hot file slowed, so its writes are staged)
// and on real directories (std and io_uring), at GOMAXPROCS 1, 2 and 8,
// and check what one goroutine must see of its own writes:
//
//   - its writes get increasing revisions in the order it made them (a
//     PutAsync included: README, "Writes one goroutine makes");
//   - once Put or Delete returns, Get sees it; a write whose ticket is
//     done is visible; Get never shows a write older than the newest one
//     done at that point;
//   - once Sync (or Flush) returns, every ticket issued before it is done
//     and its write visible;
//   - a Put whose context ends while it commits inline is wholly present
//     or absent, after a restart too, and the engine goes on;
//   - Stop racing inline commits returns nil; every acknowledged write
//     survives, a write Stop cut short says ErrStopped and is wholly
//     present or absent.
//
// Seeds are printed; RINGPIPE_INLINE_SEED=N replays one (the goroutines'
// interleaving is the scheduler's, so a replay repeats the operations,
// not necessarily the race).

// iaProcs are the GOMAXPROCS values each audit runs at.
var iaProcs = []int{1, 2, 8}

// iaConf is one engine configuration of the audit.
type iaConf struct {
	name    string
	sim     bool
	backend ringpipe.Backend
}

var iaConfs = []iaConf{
	{name: "sim", sim: true},
	{name: "std", backend: ringpipe.BackendStd},
	{name: "uring", backend: ringpipe.BackendAuto},
}

// iaSeed is the run's seed: $RINGPIPE_INLINE_SEED, or a fresh one.
func iaSeed(t *testing.T) int64 {
	t.Helper()
	if s := os.Getenv("RINGPIPE_INLINE_SEED"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		require.NoError(t, err, "RINGPIPE_INLINE_SEED")
		return n
	}
	return time.Now().UnixNano() % 1_000_000_000
}

// iaReplay is how to run seed again.
func iaReplay(t *testing.T, seed int64) string {
	return fmt.Sprintf("RINGPIPE_INLINE_SEED=%d go test -race -count=1 -run '^%s$' ./test/", seed,
		strings.ReplaceAll(t.Name(), "/", "$/^"))
}

// withProcs runs fn with GOMAXPROCS n and restores it.
func withProcs(n int, fn func()) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(n))
	fn()
}

// iaConfig is a fresh engine configuration for c. On sim, the tests slow
// a space's hot files (iaSlowHot) once it exists; on a real directory the
// disk decides (a busy one reroutes writes to the staging WAL now and
// then; a shorter deadline made every space slow, and nothing committed
// inline).
func iaConfig(t *testing.T, c iaConf, seed int64) (ringpipe.Config, *sim.Disk) {
	if c.sim {
		disk := newSimDisk(t, seed)
		return simConfig(t, disk), disk
	}
	return realConfig(t, c.backend), nil
}

// iaSlowHot makes half of the syncs and writes of space's hot files miss
// the 2 ms deadline: the space flips between staged and direct writes
// (hysteresis), and its writes are often staged.
func iaSlowHot(disk *sim.Disk, space ringpipe.SpaceID) {
	disk.Inject(sim.Fault{Kind: sim.Delay, Delay: 5 * time.Millisecond, Prob: 0.5, Persist: true,
		Path: hotPrefix(space), Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync, ring.OpWrite, ring.OpWritev}})
}

// goroutineDump is every goroutine's stack.
func goroutineDump() string {
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	return b.String()
}

// ---------------------------------------------------------------------
// Program order from many goroutines.

// iaOp is one write a goroutine made, in its program order.
type iaOp struct {
	n    int // the goroutine's operation number
	what string
	sp   ringpipe.SpaceID
	p    ringpipe.Point
	val  []byte // nil: a Delete
	tk   *ringpipe.Ticket
	rev  ringpipe.Revision // 0 until known
	done bool              // returned (Put, Delete) or its ticket is done and waited
}

func (o *iaOp) String() string {
	return fmt.Sprintf("op %d %s space %d %v %q rev %d", o.n, o.what, o.sp, []uint32(o.p), o.val, o.rev)
}

// iaPtKey names a point of a space.
type iaPtKey struct {
	sp ringpipe.SpaceID
	k  pkey
}

// iaWriter is one goroutine of the program-order audit and what it knows
// of its own writes. Its points are its own (first coordinate = its id),
// so that what Get returns there is decided by its writes alone; it also
// writes a few points every goroutine shares.
type iaWriter struct {
	t      *testing.T
	id     int
	seed   int64
	replay string
	rng    *rand.Rand
	e      *ringpipe.Engine
	fast   ringpipe.SpaceID
	slow   ringpipe.SpaceID
	spaces []ringpipe.SpaceID // where it writes: fast, slow, and later its own

	ops     []*iaOp
	pts     map[iaPtKey][]*iaOp // writes at each of its own points, in order
	order   []iaPtKey           // pts' keys, for a stable check order
	pending []*iaOp             // PutAsyncs not yet waited
	n       int                 // current operation number
	log     []string            // the last operations
	failed  bool

	// What the contract does not promise, counted: a Put that returned
	// while an earlier PutAsync of the same goroutine was not done yet,
	// in the same space and in another.
	asyncBehindSame, asyncBehindOther int
}

func (w *iaWriter) logf(format string, args ...any) {
	if len(w.log) == 12 {
		w.log = w.log[1:]
	}
	w.log = append(w.log, fmt.Sprintf("op %d: ", w.n)+fmt.Sprintf(format, args...))
}

// failf reports a violation with the seed and the last operations, and
// ends the goroutine's run.
func (w *iaWriter) failf(format string, args ...any) {
	w.t.Helper()
	w.failed = true
	w.t.Errorf("seed %d, goroutine %d, op %d: %s\nlast operations:\n  %s\nreplay: %s",
		w.seed, w.id, w.n, fmt.Sprintf(format, args...), strings.Join(w.log, "\n  "), w.replay)
}

// must fails on err; a call that ran out of time is a hang, reported
// with every goroutine's stack.
func (w *iaWriter) must(err error, what string) bool {
	w.t.Helper()
	if errors.Is(err, context.DeadlineExceeded) {
		w.failf("%s did not return within %v (hang); goroutines:\n%s", what, hangTimeout, goroutineDump())
		return false
	}
	if err != nil {
		w.failf("%s: %v", what, err)
		return false
	}
	return true
}

// ownPoint is one of the goroutine's own points.
func (w *iaWriter) ownPoint() ringpipe.Point {
	return ringpipe.Point{uint32(w.id), uint32(w.rng.Intn(12))}
}

// sharedPoint is a point every goroutine writes.
func (w *iaWriter) sharedPoint() ringpipe.Point {
	return ringpipe.Point{250, uint32(w.rng.Intn(3))}
}

func (w *iaWriter) space() ringpipe.SpaceID { return w.spaces[w.rng.Intn(len(w.spaces))] }

// noteRev checks a revision just learned against the goroutine's other
// known revisions: higher than every earlier write's, lower than every
// later one's.
func (w *iaWriter) noteRev(o *iaOp) {
	w.t.Helper()
	for _, x := range w.ops {
		if x == o || x.rev == 0 {
			continue
		}
		if (x.n < o.n && x.rev >= o.rev) || (x.n > o.n && x.rev <= o.rev) {
			a, b := x, o
			if x.n > o.n {
				a, b = o, x
			}
			w.failf("revisions out of program order: %v was made before %v", a, b)
			return
		}
	}
}

func (w *iaWriter) add(o *iaOp, own bool) {
	w.ops = append(w.ops, o)
	if own {
		k := iaPtKey{o.sp, keyOf(o.p)}
		if _, ok := w.pts[k]; !ok {
			w.order = append(w.order, k)
		}
		w.pts[k] = append(w.pts[k], o)
	}
}

// asyncThen does a PutAsync and at once a Put or Delete at the same point
// (TestModelAuditAsyncThenPut's pair, among other goroutines' writes):
// the later write must win.
func (w *iaWriter) asyncThen() {
	sp, p := w.space(), w.ownPoint()
	w.writeAt("async", sp, p)
	if w.failed {
		return
	}
	w.n++ // a second operation
	kind := "put"
	if w.rng.Intn(3) == 0 {
		kind = "delete"
	}
	w.writeAt(kind, sp, p)
}

// write does a Put or Delete (sync) or a PutAsync.
func (w *iaWriter) write(kind string) {
	if kind == "shared" {
		w.writeAt(kind, w.fast, w.sharedPoint())
		return
	}
	w.writeAt(kind, w.space(), w.ownPoint())
}

func (w *iaWriter) writeAt(kind string, sp ringpipe.SpaceID, p ringpipe.Point) {
	own := kind != "shared"
	o := &iaOp{n: w.n, what: kind, sp: sp, p: p}
	if kind != "delete" {
		o.val = fmt.Appendf(nil, "g%d-op%d", w.id, w.n)
	}
	w.logf("%s space %d %v", kind, sp, []uint32(p))
	ctx, cancel := ctxHang()
	defer cancel()
	var err error
	switch kind {
	case "async":
		o.tk, err = w.e.PutAsync(ctx, sp, p, o.val)
		if !w.must(err, "PutAsync") {
			return
		}
		w.add(o, own)
		w.pending = append(w.pending, o)
		return
	case "delete":
		o.rev, err = w.e.Delete(ctx, sp, p)
	default:
		o.rev, err = w.e.Put(ctx, sp, p, o.val)
	}
	if !w.must(err, kind) {
		return
	}
	o.done = true
	w.add(o, own)
	w.logf("  -> rev %d", o.rev)
	w.noteRev(o)
	if w.failed {
		return
	}
	for _, x := range w.pending {
		if isDone(x.tk) {
			continue
		}
		if x.sp == sp {
			w.asyncBehindSame++
		} else {
			w.asyncBehindOther++
		}
	}
	w.checkPoints("after " + kind + " returned")
}

func isDone(tk *ringpipe.Ticket) bool {
	select {
	case <-tk.Done():
		return true
	default:
		return false
	}
}

// resolve learns the revision of every PutAsync whose ticket is done.
func (w *iaWriter) resolve() {
	keep := w.pending[:0]
	for _, o := range w.pending {
		if !isDone(o.tk) {
			keep = append(keep, o)
			continue
		}
		ctx, cancel := ctxHang()
		rev, err := o.tk.Wait(ctx)
		cancel()
		if !w.must(err, "Wait of a done ticket") {
			return
		}
		o.rev, o.done = rev, true
		w.noteRev(o)
	}
	w.pending = keep
}

// waitOldest waits for the oldest pending ticket.
func (w *iaWriter) waitOldest() {
	if len(w.pending) == 0 {
		return
	}
	o := w.pending[0]
	w.logf("wait %v", o)
	ctx, cancel := ctxHang()
	rev, err := o.tk.Wait(ctx)
	cancel()
	if !w.must(err, "Wait") {
		return
	}
	o.rev, o.done = rev, true
	w.pending = w.pending[1:]
	w.noteRev(o)
	if !w.failed {
		w.checkPoints("after Wait returned")
	}
}

// barrier does a Sync or a Flush; every ticket issued before must then be
// done, and every own point show its newest write.
func (w *iaWriter) barrier(flush bool) {
	ctx, cancel := ctxHang()
	defer cancel()
	what := "Sync"
	var err error
	if flush {
		sp := w.space()
		what = fmt.Sprintf("Flush of space %d", sp)
		w.logf("%s", what)
		err = w.e.Flush(ctx, sp)
	} else {
		w.logf("Sync")
		err = w.e.Sync(ctx)
	}
	if !w.must(err, what) {
		return
	}
	for _, o := range w.pending {
		if !isDone(o.tk) {
			w.failf("%s returned while the ticket of %v, issued before it, is not done", what, o)
			return
		}
	}
	w.checkPoints("after " + what + " returned")
}

// createSpace creates the goroutine's own space (and writes into it at
// once), or creates an existing one again.
func (w *iaWriter) createSpace() {
	ctx, cancel := ctxHang()
	defer cancel()
	if len(w.spaces) == 2 {
		name := fmt.Sprintf("own-%d", w.id)
		w.logf("CreateSpace %s", name)
		id, err := w.e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: name, Dims: routeSpec.Dims, Bits: routeSpec.Bits})
		if !w.must(err, "CreateSpace "+name) {
			return
		}
		w.spaces = append(w.spaces, id)
		p := w.ownPoint()
		o := &iaOp{n: w.n, what: "put-new-space", sp: id, p: p, val: fmt.Appendf(nil, "g%d-op%d-new", w.id, w.n)}
		o.rev, err = w.e.Put(ctx, id, p, o.val)
		if !w.must(err, "Put right after CreateSpace") {
			return
		}
		o.done = true
		w.add(o, true)
		w.noteRev(o)
		w.checkPoints("after a Put into a space just created")
		return
	}
	w.logf("CreateSpace fast again")
	id, err := w.e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "fast", Dims: routeSpec.Dims, Bits: routeSpec.Bits})
	if w.must(err, "CreateSpace of an existing space") && id != w.fast {
		w.failf("CreateSpace of the existing space fast returned ID %d, want %d", id, w.fast)
	}
}

// checkPoints checks every own point: Get shows the newest write done
// there or a later one (a PutAsync not done yet may already be visible),
// never an older one; when the newest write is done, exactly it.
func (w *iaWriter) checkPoints(when string) {
	w.t.Helper()
	w.resolve()
	if w.failed {
		return
	}
	ctx, cancel := ctxHang()
	defer cancel()
	for _, k := range w.order {
		ws := w.pts[k]
		d := -1 // the newest done write
		for i, o := range ws {
			if o.done {
				d = i
			}
		}
		rec, err := w.e.Get(ctx, k.sp, ws[0].p)
		if err != nil && !errors.Is(err, ringpipe.ErrNotFound) {
			w.must(err, "Get")
			return
		}
		ok := false
		from := max(d, 0)
		if d < 0 && errors.Is(err, ringpipe.ErrNotFound) {
			ok = true // nothing done there yet
		}
		for _, o := range ws[from:] {
			if o.val == nil && errors.Is(err, ringpipe.ErrNotFound) {
				ok = true
			}
			if o.val != nil && err == nil && bytes.Equal(rec.Value, o.val) && (o.rev == 0 || o.rev == rec.Revision) {
				ok = true
			}
		}
		if !ok {
			got := fmt.Sprintf("%q rev %d", rec.Value, rec.Revision)
			if err != nil {
				got = err.Error()
			}
			want := "nothing"
			if d >= 0 {
				want = ws[d].String()
			}
			w.failf("%s: Get(space %d, %v) = %s; the newest write done there is %s, issued after it: %v",
				when, k.sp, []uint32(ws[0].p), got, want, ws[from:])
			return
		}
	}
}

// run does n random operations.
func (w *iaWriter) run(n int, createAt int) {
	for w.n = 0; w.n < n && !w.failed; w.n++ {
		if w.n == createAt {
			w.createSpace()
			continue
		}
		switch x := w.rng.Intn(1000); {
		case x < 250:
			w.write("put")
		case x < 310:
			w.write("delete")
		case x < 370:
			w.write("shared")
		case x < 570:
			w.write("async")
		case x < 650:
			w.asyncThen()
		case x < 780:
			w.waitOldest()
		case x < 850:
			w.barrier(false)
		case x < 862:
			w.barrier(true)
		case x < 870:
			w.createSpace()
		default:
			// Pause, so that the pipeline goes idle and the next write
			// may commit inline.
			time.Sleep(time.Duration(w.rng.Intn(300)) * time.Microsecond)
		}
	}
	for len(w.pending) > 0 && !w.failed {
		w.waitOldest()
	}
}

// finalOrder checks the revisions of all the goroutine's writes in
// program order, once all are known.
func (w *iaWriter) finalOrder() {
	var last *iaOp
	for _, o := range w.ops {
		if o.rev == 0 {
			w.failf("%v has no revision at the end", o)
			return
		}
		if last != nil && o.rev <= last.rev {
			w.failf("revisions out of program order: %v, then %v", last, o)
			return
		}
		last = o
	}
}

// TestInlineAuditProgramOrder: goroutines that mix Put, Delete, PutAsync
// (waited later), Sync, Flush and CreateSpace, over a fast and a slow
// space, each check their own program order and what they read; then
// everything acknowledged is there, after a restart too.
//
// One goroutine alone finds the pipeline idle often (its Puts commit
// inline, its PutAsyncs, Syncs and slow space's writes do not); six
// switch between the paths as the load comes and goes.
func TestInlineAuditProgramOrder(t *testing.T) {
	for _, c := range iaConfs {
		for _, procs := range iaProcs {
			for _, g := range []struct{ goroutines, opsEach int }{{1, 300}, {6, 120}} {
				t.Run(fmt.Sprintf("%s/procs=%d/goroutines=%d", c.name, procs, g.goroutines), func(t *testing.T) {
					withProcs(procs, func() { iaProgramOrder(t, c, g.goroutines, g.opsEach) })
				})
			}
		}
	}
}

func iaProgramOrder(t *testing.T, c iaConf, goroutines, opsEach int) {
	seed := iaSeed(t)
	replay := iaReplay(t, seed)
	t.Logf("seed %d (replay: %s)", seed, replay)
	cfg, disk := iaConfig(t, c, seed)
	e := start(t, cfg)
	fast := createSpace(t, e, "fast", routeSpec.Dims, routeSpec.Bits)
	slow := createSpace(t, e, "slow", routeSpec.Dims, routeSpec.Bits)
	if disk != nil {
		iaSlowHot(disk, slow)
	}
	ws := make([]*iaWriter, goroutines)
	var wg sync.WaitGroup
	for i := range ws {
		w := &iaWriter{t: t, id: i, seed: seed, replay: replay, rng: rand.New(rand.NewSource(seed*31 + int64(i))),
			e: e, fast: fast, slow: slow, spaces: []ringpipe.SpaceID{fast, slow}, pts: make(map[iaPtKey][]*iaOp)}
		ws[i] = w
		createAt := 5 + w.rng.Intn(opsEach/2)
		wg.Go(func() {
			w.run(opsEach, createAt)
			if !w.failed {
				w.finalOrder()
			}
		})
	}
	wg.Wait()
	require.False(t, t.Failed(), "seed %d", seed)

	// Everything acknowledged is there, once per revision, now and after
	// a restart (on sim, after a power loss too: Stop made it durable).
	tel, st := e.Telemetry(), e.Stats()
	byspace := map[ringpipe.SpaceID]*acks{}
	behindSame, behindOther := 0, 0
	for _, w := range ws {
		behindSame += w.asyncBehindSame
		behindOther += w.asyncBehindOther
		for _, o := range w.ops {
			if byspace[o.sp] == nil {
				byspace[o.sp] = new(acks)
			}
			byspace[o.sp].add(write{point: o.p, rev: o.rev, value: o.val})
		}
	}
	t.Logf("seed %d: %d inline commits, %d direct and %d staged writes, %d sealed blocks; a Put returned before an earlier PutAsync of its goroutine was done: %d times in the same space, %d in another (not a contract violation: API.md promises revision order, not that)",
		seed, tel.InlineCommits, st.DirectWrites, st.StagedWrites, st.SealedBlocks, behindSame, behindOther)
	if c.sim && goroutines == 1 {
		// On a real disk under -race a sync may take longer than the
		// deadline throughout, which keeps spaces slow (not inline); with
		// several goroutines the pipeline may never be idle (seen once
		// at GOMAXPROCS 8 under load).
		assert.NotZero(t, tel.InlineCommits, "no write was committed inline: the audit did not exercise the path")
	}
	models := map[ringpipe.SpaceID]*model{}
	for sp, a := range byspace {
		models[sp] = a.model(t, routeSpec)
	}
	check := func(when string) {
		for sp, m := range models {
			t.Logf("%s: checking space %d (%d writes)", when, sp, m.count)
			checkModel(t, engineReader(t, e), sp, m, fullBox(routeSpec))
		}
	}
	check("before restart")
	stop(t, e)
	if disk != nil {
		disk.ClearFaults()
		disk.PowerLoss(rand.New(rand.NewSource(seed)))
	}
	e = start(t, cfg)
	check("after restart")
	stop(t, e)
}

// ---------------------------------------------------------------------
// A Put whose context ends while it commits inline.

// TestInlineAuditCancelMidCommit: one goroutine Puts with contexts that
// end at each step of the commit (deterministically: cancelAfter ends at
// the n-th check; and at a random moment from another goroutine), on a
// fast space and, on sim, a slow one (a commit may reroute its write).
// A Put that fails says the context's error; its write is then wholly
// present or absent, and stays so after a restart; a context that ended
// before the write was queued means absent; the goroutine's next Put gets
// a higher revision and succeeds (the engine goes on).
func TestInlineAuditCancelMidCommit(t *testing.T) {
	for _, c := range iaConfs {
		slows := []bool{false}
		if c.sim {
			slows = append(slows, true)
		}
		for _, slow := range slows {
			for _, procs := range []int{1, 2} {
				t.Run(fmt.Sprintf("%s/slow=%v/procs=%d", c.name, slow, procs), func(t *testing.T) {
					withProcs(procs, func() { iaCancel(t, c, slow) })
				})
			}
		}
	}
}

// iaCut is one cut-short Put and what became of it.
type iaCut struct {
	p       ringpipe.Point
	val     []byte
	how     string
	present bool
	rev     ringpipe.Revision
}

func iaCancel(t *testing.T, c iaConf, slow bool) {
	seed := iaSeed(t)
	replay := iaReplay(t, seed)
	t.Logf("seed %d (replay: %s)", seed, replay)
	rng := rand.New(rand.NewSource(seed))
	cfg, disk := iaConfig(t, c, seed)
	e := start(t, cfg)
	sp := createSpace(t, e, "cut", routeSpec.Dims, routeSpec.Bits)
	if slow {
		iaSlowHot(disk, sp)
	}
	var cuts []iaCut
	after := new(acks)
	rounds := 60
	inlineCut, ok := 0, 0
	for round := range rounds {
		p := ringpipe.Point{uint32(round), 1}
		v := fmt.Appendf(nil, "cut-%d", round)
		var ctx context.Context
		var how string
		stopCancel := func() {}
		switch k := round % 6; {
		case k < 5:
			// Ends at its k+1-th Err: k = 0 in Put's own check, before
			// the write is queued; then inside the commit.
			ctx = newCancelAfter(context.Background(), int32(k))
			how = fmt.Sprintf("cancelAfter(%d)", k)
		default:
			cctx, cancel := context.WithCancel(context.Background())
			d := time.Duration(rng.Intn(400)) * time.Microsecond
			tm := time.AfterFunc(d, cancel)
			ctx, how = cctx, fmt.Sprintf("cancelled after %v", d)
			stopCancel = func() { tm.Stop(); cancel() }
		}
		inline0 := e.Telemetry().InlineCommits
		var rev ringpipe.Revision
		var err error
		within(t, "a Put whose context ends ("+how+")", func() { rev, err = e.Put(ctx, sp, p, v) })
		stopCancel()
		inline := e.Telemetry().InlineCommits > inline0
		cut := iaCut{p: p, val: v, how: how}
		if err == nil {
			ok++
			cut.present, cut.rev = true, rev
		} else {
			require.ErrorIs(t, err, context.Canceled, "seed %d round %d (%s): a cut-short Put's error", seed, round, how)
			if inline {
				inlineCut++
			}
		}
		// The engine goes on: the next Put of this goroutine succeeds,
		// with a higher revision than the cut-short one if it was applied.
		next := ringpipe.Point{uint32(round), 2}
		nv := fmt.Appendf(nil, "next-%d", round)
		ctx2, cancel2 := ctxHang()
		nrev, err := e.Put(ctx2, sp, next, nv)
		require.NoError(t, err, "seed %d round %d: the Put after a cut-short one (%s)", seed, round, how)
		after.add(write{point: next, rev: nrev, value: nv})
		require.NoError(t, e.Sync(ctx2), "seed %d round %d: Sync", seed, round)
		rec, gerr := e.Get(ctx2, sp, p)
		cancel2()
		switch {
		case gerr == nil:
			assert.Equal(t, v, rec.Value, "seed %d round %d (%s): value of the cut-short write", seed, round, how)
			assert.Less(t, rec.Revision, nrev, "seed %d round %d (%s): the cut-short write's revision is below the next Put's", seed, round, how)
			if cut.present {
				assert.Equal(t, cut.rev, rec.Revision, "seed %d round %d: revision of an acknowledged write", seed, round)
			}
			cut.present, cut.rev = true, rec.Revision
		case errors.Is(gerr, ringpipe.ErrNotFound):
			assert.False(t, cut.present, "seed %d round %d: a write Put acknowledged (rev %d) is not visible after Sync", seed, round, cut.rev)
		default:
			require.NoError(t, gerr, "Get")
		}
		if how == "cancelAfter(0)" {
			assert.False(t, cut.present, "seed %d round %d: a Put whose context ended before the write was queued was applied", seed, round)
		}
		cuts = append(cuts, cut)
	}
	t.Logf("seed %d: %d of %d Puts succeeded despite the context, %d were cut short during an inline commit", seed, ok, rounds, inlineCut)
	if c.sim && !slow {
		assert.NotZero(t, inlineCut, "no Put was cut short during an inline commit: the audit missed its target")
	}
	stop(t, e)
	if disk != nil {
		disk.ClearFaults()
		disk.PowerLoss(rand.New(rand.NewSource(seed)))
	}
	e = start(t, cfg)
	ctx := ctxFor(t)
	for i, cut := range cuts {
		rec, err := e.Get(ctx, sp, cut.p)
		if cut.present {
			if assert.NoError(t, err, "seed %d round %d (%s): a cut-short write present before the restart", seed, i, cut.how) {
				assert.Equal(t, cut.val, rec.Value)
				assert.Equal(t, cut.rev, rec.Revision)
			}
		} else {
			assert.ErrorIs(t, err, ringpipe.ErrNotFound, "seed %d round %d (%s): a cut-short write absent before the restart", seed, i, cut.how)
		}
	}
	checkModel(t, engineReader(t, e), sp, merge(t, after), ringpipe.Box{Min: ringpipe.Point{0, 2}, Max: ringpipe.Point{255, 2}})
	stop(t, e)
}

// ---------------------------------------------------------------------
// Stop racing inline commits.

// TestInlineAuditStopRace: writers Put (one alone, so that its Puts
// commit inline, or two or three) while Stop is called at a random
// moment. Stop returns nil; a Put returns its revision or ErrStopped;
// after a restart every acknowledged write is there, each writer's in
// program order, and a cut-short one is wholly present or absent.
func TestInlineAuditStopRace(t *testing.T) {
	for _, c := range iaConfs {
		for _, procs := range iaProcs {
			t.Run(fmt.Sprintf("%s/procs=%d", c.name, procs), func(t *testing.T) {
				withProcs(procs, func() { iaStopRace(t, c) })
			})
		}
	}
}

func iaStopRace(t *testing.T, c iaConf) {
	seed := iaSeed(t)
	replay := iaReplay(t, seed)
	t.Logf("seed %d (replay: %s)", seed, replay)
	rng := rand.New(rand.NewSource(seed))
	cfg, disk := iaConfig(t, c, seed)
	e := start(t, cfg)
	sp := createSpace(t, e, "stop", routeSpec.Dims, routeSpec.Bits)
	stop(t, e)
	type result struct {
		ok   []write
		cut  *write // the Put Stop cut short, if any
		errs []error
	}
	var all []write
	var cuts []write
	inline := uint64(0)
	for round := range 4 {
		writers := 1 + round%3
		e = start(t, cfg)
		if disk != nil && round%2 == 1 {
			iaSlowHot(disk, sp)
		}
		res := make([]result, writers)
		var began atomic.Int32
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				r := &res[w]
				for i := 0; ; i++ {
					// Points are reused after 256 Puts: the model keeps
					// the newest write.
					p := ringpipe.Point{uint32(round*3 + w), uint32(i % 256)}
					v := fmt.Appendf(nil, "r%d-w%d-%d", round, w, i)
					ctx, cancel := ctxHang()
					rev, err := e.Put(ctx, sp, p, v)
					cancel()
					if i == 3 {
						began.Add(1)
					}
					if err != nil {
						r.cut = &write{point: p, value: v}
						r.errs = append(r.errs, err)
						if i < 3 {
							began.Add(1)
						}
						return
					}
					r.ok = append(r.ok, write{point: p, rev: rev, value: v})
				}
			})
		}
		// Stop once every writer is under way, at a random moment.
		within(t, "writers starting", func() {
			for began.Load() < int32(writers) {
				runtime.Gosched()
			}
		})
		time.Sleep(time.Duration(rng.Intn(500)) * time.Microsecond)
		var serr error
		within(t, "Stop racing inline commits", func() {
			ctx, cancel := ctxHang()
			defer cancel()
			serr = e.Stop(ctx)
		})
		within(t, "writers after Stop", wg.Wait)
		require.NoError(t, serr, "seed %d round %d: Stop", seed, round)
		inline += e.Telemetry().InlineCommits // kept after Stop
		if disk != nil {
			disk.ClearFaults()
			if round == 3 {
				disk.PowerLoss(rand.New(rand.NewSource(seed)))
			}
		}
		for w, r := range res {
			for _, err := range r.errs {
				assert.ErrorIs(t, err, ringpipe.ErrStopped, "seed %d round %d writer %d: a Put Stop cut short", seed, round, w)
			}
			for i := 1; i < len(r.ok); i++ {
				assert.Greater(t, r.ok[i].rev, r.ok[i-1].rev, "seed %d round %d writer %d: revisions in program order", seed, round, w)
			}
			all = append(all, r.ok...)
			if r.cut != nil {
				cuts = append(cuts, *r.cut)
			}
		}
	}
	t.Logf("seed %d: %d acknowledged Puts, %d cut short by Stop, %d inline commits", seed, len(all), len(cuts), inline)
	e = start(t, cfg)
	ctx := ctxFor(t)
	m := newModel(routeSpec)
	for _, w := range all {
		m.add(w)
	}
	// A cut-short write is wholly there (its value, a revision above its
	// writer's acknowledged ones at that point) or not at all (the
	// point shows the newest acknowledged write, or nothing).
	present := 0
	for _, cw := range cuts {
		rec, err := e.Get(ctx, sp, cw.point)
		old, had := m.last[keyOf(cw.point)]
		switch {
		case err == nil && bytes.Equal(rec.Value, cw.value):
			present++
			if had {
				assert.Greater(t, rec.Revision, old.rev, "seed %d: a cut-short write below an earlier acknowledged one", seed)
			}
			m.add(write{point: cw.point, rev: rec.Revision, value: cw.value})
		case err == nil:
			assert.True(t, had && bytes.Equal(rec.Value, old.value) && rec.Revision == old.rev,
				"seed %d: at a cut-short write's point %v: %q rev %d, neither it nor the newest acknowledged write", seed, cw.point, rec.Value, rec.Revision)
		default:
			assert.ErrorIs(t, err, ringpipe.ErrNotFound, "seed %d: Get of a cut-short write's point", seed)
			assert.False(t, had, "seed %d: an acknowledged write at %v is gone", seed, cw.point)
		}
	}
	t.Logf("seed %d: %d of %d cut-short writes present after the restart", seed, present, len(cuts))
	checkModel(t, engineReader(t, e), sp, m, fullBox(routeSpec))
	stop(t, e)
}

// ---------------------------------------------------------------------
// A Put whose context ends while the ring is full.

// fullRingProbe wraps the engine's ring: it counts the ops in flight and
// the Submits waiting for room, and, once armed, runs hook at the next
// Reap (the inline commit's first one, on an idle engine) before it
// reaps.
type fullRingProbe struct {
	ring.Ring
	inflight atomic.Int64 // ops submitted and not yet reaped (no deadlines here)
	waiting  atomic.Int64 // Submits in progress
	nops     atomic.Int64 // of them, wake-up nops (OpNop, token 0)
	armed    atomic.Bool
	hook     func()
}

func (r *fullRingProbe) Submit(ops []ring.Op) error {
	nop := len(ops) == 1 && ops[0].Code == ring.OpNop && ops[0].Token == 0
	r.waiting.Add(1)
	if nop {
		r.nops.Add(1)
	}
	err := r.Ring.Submit(ops)
	if err == nil {
		r.inflight.Add(int64(len(ops)))
	}
	if nop {
		r.nops.Add(-1)
	}
	r.waiting.Add(-1)
	return err
}

func (r *fullRingProbe) Reap(out []ring.Completion) (int, error) {
	if r.armed.CompareAndSwap(true, false) {
		r.hook()
	}
	n, err := r.Ring.Reap(out)
	r.inflight.Add(-int64(n))
	return n, err
}

// until polls cond for at most d; it stretches a window the engine opens
// by itself, it asserts nothing.
func until(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); !cond(); {
		if time.Now().After(end) {
			return false
		}
		time.Sleep(50 * time.Microsecond)
	}
	return true
}

// TestInlineAuditCancelOnFullRing: a Put commits inline on an idle
// engine; while it reaps, writes to 40 other spaces arrive and the
// submitter fills the ring (sim, RingEntries 8: room for 32 ops) and
// waits for room; then the Put's context ends. The Put must return (with
// the context's error or its revision), and every other write too.
//
// It failed before the fix: the engine deadlocked. Inline.reap's
// context.AfterFunc submits a wake-up nop, and ring.Submit blocks while the
// ring is full; the commit, the ring's only reaper (it holds the
// completer's turn), waited for the AfterFunc, which waited for room only
// a reaper makes. Now, once ctx has ended, the commit reaps without
// blocking until the nop is in.
func TestInlineAuditCancelOnFullRing(t *testing.T) {
	disk := newSimDisk(t, 41)
	cfg := simConfig(t, disk)
	var probe *fullRingProbe
	cfg.NewRing = func(o ring.Options) (ring.Ring, error) {
		if probe == nil { // the engine's ring; later ones read blocks
			probe = &fullRingProbe{Ring: disk.NewRing(o)}
			return probe, nil
		}
		return disk.NewRing(o), nil
	}
	cfg.RingEntries = 8
	cfg.DirectWriteTimeout = 50 * time.Millisecond // the slowed file must not reroute
	e := start(t, cfg)
	victim := createSpace(t, e, "victim", routeSpec.Dims, routeSpec.Bits)
	// The victim's write completes after the others' (virtual time), so
	// the commit reaps theirs first and stays in its reap loop.
	disk.Inject(sim.Fault{Kind: sim.Delay, Delay: time.Millisecond, Prob: 1, Persist: true,
		Path: hotPrefix(victim), Ops: []ring.Opcode{ring.OpFdatasync, ring.OpWrite, ring.OpWritev}})
	const others = 40
	var spaces []ringpipe.SpaceID
	for i := range others {
		spaces = append(spaces, createSpace(t, e, fmt.Sprintf("other-%d", i), routeSpec.Dims, routeSpec.Bits))
	}
	capacity := int64(probe.Capacity())
	require.Less(t, capacity, int64(others), "the other spaces' batches must be able to fill the ring")

	for round := range 3 {
		gate := make(chan struct{})
		var wg sync.WaitGroup
		var bgErrs atomic.Int64
		for _, sp := range spaces {
			wg.Go(func() {
				<-gate
				ctx, cancel := ctxHang()
				defer cancel()
				if _, err := e.Put(ctx, sp, ringpipe.Point{uint32(round), 0}, []byte("other")); err != nil {
					bgErrs.Add(1)
				}
			})
		}
		ctx, cancel := context.WithCancel(context.Background())
		var full, nopWaits bool
		probe.hook = func() {
			close(gate) // the others write now, behind the commit
			full = until(time.Second, func() bool { return probe.inflight.Load() >= capacity && probe.waiting.Load() > 0 })
			cancel()
			nopWaits = until(200*time.Millisecond, func() bool { return probe.nops.Load() > 0 })
		}
		inline0 := e.Telemetry().InlineCommits
		probe.armed.Store(true)
		done := make(chan error, 1)
		go func() {
			_, err := e.Put(ctx, victim, ringpipe.Point{uint32(round), 1}, []byte("victim"))
			done <- err
		}()
		timer := time.NewTimer(hangTimeout)
		select {
		case err := <-done:
			timer.Stop()
			if err != nil {
				assert.ErrorIs(t, err, context.Canceled, "round %d: the Put's error", round)
			}
		case <-timer.C:
			dump := goroutineDump()
			// Unwedge the engine: Stop closes the ring once its context
			// ends, which fails the stuck Submits.
			sctx, scancel := context.WithTimeout(context.Background(), time.Second)
			_ = e.Stop(sctx)
			scancel()
			<-done
			wg.Wait()
			cancel()
			t.Fatalf("round %d: a Put whose context ended while the ring was full (ring full: %v, wake-up nop waiting for room: %v) did not return within %v: engine deadlocked; goroutines:\n%s",
				round, full, nopWaits, hangTimeout, dump)
		}
		probe.armed.Store(false)
		select {
		case <-gate:
		default:
			close(gate)
		}
		within(t, "the other spaces' Puts", wg.Wait)
		cancel()
		assert.Zero(t, bgErrs.Load(), "round %d: the other spaces' Puts failed", round)
		assert.True(t, full, "round %d: the ring never filled behind the commit: the scenario was not set up", round)
		t.Logf("round %d: inline %v, ring full at the cancel %v, wake-up nop waited for room %v",
			round, e.Telemetry().InlineCommits > inline0, full, nopWaits)
	}
	stop(t, e)
}
