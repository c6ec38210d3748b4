package test

// The model audit: one engine driven by a seeded random sequence of
// operations over three small spaces, checked after every few operations
// against a reference model in plain Go maps (API.md: Put, Delete,
// PutAsync, Ticket.Wait, Sync, Flush, Get, Scan, View, Stop, Start;
// DESIGN.md §3: the data model and reads). The other suites prove each
// sentence on its own; this one mixes them: writes land in the tail, in
// blocks sealed by a threshold or a Flush, in the staging WAL, across
// restarts and power losses, and every read must still agree with the
// model.
//
// The sequence of operations is a function of the seed alone (the
// engine's answers never feed the rng), so a failure replays its
// operations with -run 'TestModelAudit/^seedN-'; the scheduling is the
// machine's. RINGPIPE_SOAK=1 runs the long form (RINGPIPE_SEEDS=N sets the
// number of seeds of either form).

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
	"github.com/ringpipe/ringpipe/snapshot"
)

const (
	// maOps and maSeeds are the default form: 1-3 s per seed under -race
	// on two cores with other work beside it, 18-24 s in all.
	maOps   = 1000
	maSeeds = 20
	// maSoakOps and maSoakSeeds are the RINGPIPE_SOAK=1 form.
	maSoakOps   = 10000
	maSoakSeeds = 100
	// maMaxPending bounds the PutAsync tickets not yet waited for; past it
	// the run does a Sync. It keeps the queue far below QueueCapacity.
	maMaxPending = 64
	// maMaxViews is how many Views a run keeps at once.
	maMaxViews = 4
	// maLogLen is how many of the last operations a failure prints.
	maLogLen = 40
)

// maSpecs are the run's spaces: small, so that points collide often.
var maSpecs = []ringpipe.SpaceSpec{
	{Name: "line", Dims: 1, Bits: 8},
	{Name: "plane", Dims: 2, Bits: 4},
	{Name: "cube", Dims: 3, Bits: 3},
}

// maConfig is one engine configuration the seeds cycle through.
type maConfig struct {
	name          string
	sim           bool             // ring/sim's disk (power losses possible); else a real directory
	backend       ringpipe.Backend // real directory only
	sealThreshold int
	sealBytes     int64
	directIO      bool
	slowHot       bool // sim: a fifth of hot-segment syncs miss DirectWriteTimeout, so writes are staged
}

var maConfigs = []maConfig{
	{name: "sim-seal16", sim: true, sealThreshold: 16},
	{name: "sim-default-directio", sim: true, directIO: true},
	{name: "sim-slowhot-seal64", sim: true, sealThreshold: 64, sealBytes: 16 << 10, slowHot: true},
	{name: "std-seal32", backend: ringpipe.BackendStd, sealThreshold: 32, sealBytes: 16 << 10},
	// Auto is io_uring where the kernel allows it (Stats.Backend, in the
	// summary, says which ran).
	{name: "auto-seal100", backend: ringpipe.BackendAuto, sealThreshold: 100, directIO: true},
}

// TestModelAudit: a seeded random sequence of Put (values of 0 B to 8 KiB,
// empty ones included), Delete (of points written or never written),
// PutAsync and a later Wait, Sync, Flush of a random space, Views taken
// and kept, Stop and Start, and (on the simulated disk) power losses with
// writes in flight. After every few operations, Get of random points
// (deleted and never-written ones included) and Scan of random boxes
// (full, single point, empty with Min > Max on one dimension, random)
// must show exactly the model: the newest acknowledged write per point,
// with the revision Put or Wait returned, never a tombstone, Scan in
// strictly increasing key order (the Hilbert key of snapshot.Key). A
// PutAsync not yet waited for may show or not. Revisions increase in the
// order the writes were issued. A View shows forever what it showed when
// it was taken, which agrees with the model of that moment, and no record
// newer than its Revision. After Stop every ticket is done and every write
// durable; after a power loss every acknowledged write is there and each
// unacknowledged one is wholly present or wholly absent.
func TestModelAudit(t *testing.T) {
	nSeeds, nOps := seeds(maSeeds), maOps
	if os.Getenv("RINGPIPE_SOAK") != "" {
		nSeeds, nOps = seeds(maSoakSeeds), maSoakOps
	}
	for seed := int64(1); seed <= nSeeds; seed++ {
		c := maConfigs[int(seed)%len(maConfigs)]
		t.Run(fmt.Sprintf("seed%d-%s", seed, c.name), func(t *testing.T) {
			// Seeds are independent (a directory or a disk each): run
			// side by side, the real directories' fdatasyncs overlap
			// the simulated disks' CPU.
			t.Parallel()
			r := &maRun{t: t, seed: seed, conf: c, rng: rand.New(rand.NewSource(seed)), replay: replayHint(seed, nOps != maOps)}
			r.run(nOps)
		})
	}
}

// maWrite is one write in the model.
type maWrite struct {
	seq   int               // the order in which it was issued (see seqOf): revisions follow it
	rev   ringpipe.Revision // 0 while unknown (a PutAsync not waited for)
	value []byte            // never nil for a Put (an empty value is a live record)
	del   bool
	late  bool // acknowledged only after the power was cut
}

func (w maWrite) String() string {
	if w.del {
		return fmt.Sprintf("tombstone rev %d (%s)", w.rev, seqName(w.seq))
	}
	s := fmt.Sprintf("value %.32q (%d B) rev %d (%s)", w.value, len(w.value), w.rev, seqName(w.seq))
	if w.late {
		s += " acknowledged after the power was cut"
	}
	return s
}

// maSeqPerOp bounds the writes one operation issues (a burst before a
// power loss): a write's seq is its operation's index times this plus its
// place in the burst.
const maSeqPerOp = 64

func seqName(seq int) string {
	if seq%maSeqPerOp == 0 {
		return fmt.Sprintf("op %d", seq/maSeqPerOp)
	}
	return fmt.Sprintf("op %d #%d", seq/maSeqPerOp, seq%maSeqPerOp)
}

// maPending is a PutAsync whose ticket the run has not waited for. Views
// share the pointer, so a revision learnt later serves their checks too.
type maPending struct {
	space int
	point ringpipe.Point
	key   pkey // maKey(point)
	w     maWrite
	tk    *ringpipe.Ticket
}

// maState is what reads may show: the newest acknowledged write per point
// of each space, and the writes in flight, each of which may show or not.
type maState struct {
	last []map[pkey]maWrite
	pend []*maPending
}

func (st *maState) clone() *maState {
	c := &maState{pend: slices.Clone(st.pend)}
	for _, m := range st.last {
		cm := make(map[pkey]maWrite, len(m))
		for k, w := range m {
			cm[k] = w
		}
		c.last = append(c.last, cm)
	}
	return c
}

// maView is a View the run took, what the model allowed at that moment and
// what the View showed then (a full Scan of every space).
type maView struct {
	v       *ringpipe.View
	takenAt int
	rev     ringpipe.Revision
	st      *maState
	full    [][]ringpipe.Record
}

// maSpace is one space of the run.
type maSpace struct {
	spec  ringpipe.SpaceSpec
	id    ringpipe.SpaceID
	order []ringpipe.Point        // every point written or deleted, in first-touch order
	pts   map[pkey]ringpipe.Point // the same by key
}

type maRev struct {
	seq   int
	rev   ringpipe.Revision
	async bool // a PutAsync
}

// maRun is one seed's run.
type maRun struct {
	t      *testing.T
	seed   int64
	conf   maConfig
	rng    *rand.Rand
	replay string   // the command that replays the run's operations
	op     int      // the operation being done
	sub    int      // the write of a burst being issued (see maSeqPerOp)
	log    []string // the last maLogLen operations

	cfg    ringpipe.Config
	disk   *sim.Disk
	e      *ringpipe.Engine
	spaces []*maSpace
	st     *maState
	views  []*maView
	revs   []maRev // every known revision by seq, sorted by seq
	acked  ringpipe.Revision

	// inversions counts the PutAsyncs that got a revision above a Put or
	// Delete issued after them (TestModelAuditAsyncThenPut); first is the
	// first one seen.
	inversions int
	firstInv   string

	n map[string]int // counts for the summary
}

func (r *maRun) logf(format string, args ...any) {
	if len(r.log) == maLogLen {
		r.log = r.log[1:]
	}
	r.log = append(r.log, fmt.Sprintf("op %d: ", r.op)+fmt.Sprintf(format, args...))
}

// failf ends the run with the seed, the operation, the last operations and
// how to replay it.
func (r *maRun) failf(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("MISMATCH seed %d (%s), op %d: %s\nlast operations:\n  %s\nreplay: %s",
		r.seed, r.conf.name, r.op, fmt.Sprintf(format, args...), strings.Join(r.log, "\n  "), r.replay)
}

// replayHint is the command that runs seed's operations again.
func replayHint(seed int64, soak bool) string {
	env := ""
	if soak {
		env = "RINGPIPE_SOAK=1 "
	}
	if seed > maSeeds {
		env += fmt.Sprintf("RINGPIPE_SEEDS=%d ", seed)
	}
	return fmt.Sprintf("%sgo test -race -count=1 -run 'TestModelAudit/^seed%d-' ./test/", env, seed)
}

// hung ends the run with every goroutine's stack.
func (r *maRun) hung(what string) {
	r.t.Helper()
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	r.failf("%s did not return within %v; goroutines:\n%s", what, hangTimeout, b.String())
}

// must fails the run on err, as a hang when the call's context ran out.
func (r *maRun) must(err error, what string) {
	r.t.Helper()
	if errors.Is(err, context.DeadlineExceeded) {
		r.hung(what)
	}
	if err != nil {
		r.failf("%s: %v", what, err)
	}
}

// ctxHang bounds one call.
func ctxHang() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), hangTimeout)
}

func (r *maRun) run(nOps int) {
	t := r.t
	t0 := time.Now()
	r.n = make(map[string]int)
	if r.conf.sim {
		r.disk = newSimDisk(t, r.seed)
		r.cfg = simConfig(t, r.disk)
	} else {
		r.cfg = realConfig(t, r.conf.backend)
	}
	r.cfg.SealThreshold = r.conf.sealThreshold
	r.cfg.SealBytes = r.conf.sealBytes
	r.cfg.DirectIO = r.conf.directIO
	r.st = &maState{}
	r.startEngine()
	for _, spec := range maSpecs {
		ctx, cancel := ctxHang()
		id, err := r.e.CreateSpace(ctx, spec)
		cancel()
		r.must(err, "CreateSpace "+spec.Name)
		r.spaces = append(r.spaces, &maSpace{spec: spec, id: id, pts: make(map[pkey]ringpipe.Point)})
		r.st.last = append(r.st.last, make(map[pkey]maWrite))
	}

	for r.op = 0; r.op < nOps; r.op++ {
		switch x := r.rng.Intn(1000); {
		case x < 330:
			r.put()
		case x < 420:
			r.del()
		case x < 620:
			r.putAsync()
		case x < 710:
			r.wait()
		case x < 730:
			r.sync()
		case x < 745:
			r.flush()
		case x < 755:
			r.takeView()
		case x < 770:
			r.checkSomeView()
		case x < 993:
			r.check()
		case x < 997 || !r.conf.sim:
			r.reopen()
		default:
			r.powerLoss()
		}
	}

	// The end: everything durable, the whole model once more after a
	// restart, and every View kept checked after the last Stop.
	r.op = nOps
	r.sync()
	r.reopen()
	r.stopEngine()
	for _, v := range r.views {
		r.checkView(v)
	}
	if r.inversions > 0 {
		// A PutAsync issued before a Put or Delete from the same
		// goroutine got the higher revision (an inline commit overtook
		// it), so the earlier write won at a shared point; fixed, see
		// TestModelAuditAsyncThenPut.
		t.Errorf("seed %d (%s): %d PutAsyncs got a revision above a Put or Delete issued after them; first %s\nreplay: %s",
			r.seed, r.conf.name, r.inversions, r.firstInv, r.replay)
	}
	t.Logf("seed %d (%s): %d ops in %v: %v", r.seed, r.conf.name, nOps, time.Since(t0).Round(time.Millisecond), r.n)
}

// startEngine starts an engine on the run's directory; it stops at the
// end of the test if the run does not stop it first.
func (r *maRun) startEngine() {
	ctx, cancel := ctxHang()
	e, err := ringpipe.Start(ctx, r.cfg)
	cancel()
	r.must(err, "Start")
	r.t.Cleanup(func() {
		ctx, cancel := ctxHang()
		defer cancel()
		_ = e.Stop(ctx)
	})
	r.e = e
	if r.conf.slowHot {
		r.disk.Inject(sim.Fault{Kind: sim.Delay, Delay: 3 * time.Millisecond, Prob: 0.2, Persist: true,
			Path: simDir + "/hot/", Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync}})
	}
	if r.n["starts"]++; r.n["starts"] > 1 {
		r.checkSpaces()
	}
}

// stopEngine stops the engine cleanly and adds its counters to the summary.
func (r *maRun) stopEngine() {
	st := r.e.Stats()
	r.n["backend "+st.Backend]++
	r.n["sealed"] += int(st.SealedBlocks)
	r.n["staged"] += int(st.StagedWrites)
	ctx, cancel := ctxHang()
	err := r.e.Stop(ctx)
	cancel()
	r.must(err, "Stop")
}

// checkSpaces: after a restart the spaces are there with their IDs, and
// CreateSpace of the same spec returns the same ID.
func (r *maRun) checkSpaces() {
	got := r.e.Spaces()
	if len(got) != len(r.spaces) {
		r.failf("Spaces after a restart: %v, want %d spaces", got, len(r.spaces))
	}
	for i, sp := range r.spaces {
		if got[i].ID != sp.id || got[i].SpaceSpec != sp.spec {
			r.failf("Spaces after a restart: %+v, want %v %+v", got[i], sp.id, sp.spec)
		}
		ctx, cancel := ctxHang()
		id, err := r.e.CreateSpace(ctx, sp.spec)
		cancel()
		r.must(err, "CreateSpace of an existing space")
		if id != sp.id {
			r.failf("CreateSpace %s after a restart: ID %d, want %d", sp.spec.Name, id, sp.id)
		}
	}
}

// pickPoint is a random point of space s: half of the time in a small
// corner of it, so that writes collide.
func (r *maRun) pickPoint(s int) ringpipe.Point {
	spec := r.spaces[s].spec
	if r.rng.Intn(2) == 0 {
		p := make(ringpipe.Point, spec.Dims)
		lim := int64(1) << spec.Bits
		lim = min(lim, []int64{16, 4, 2}[min(spec.Dims, 3)-1])
		for i := range p {
			p[i] = uint32(r.rng.Int63n(lim))
		}
		return p
	}
	return randPoint(r.rng, spec)
}

// knownPoint is a point of space s the run wrote or deleted, if any.
func (r *maRun) knownPoint(s int) (ringpipe.Point, bool) {
	o := r.spaces[s].order
	if len(o) == 0 {
		return nil, false
	}
	return o[r.rng.Intn(len(o))], true
}

// value is a Put's value: nil or empty a sixth of the time, else a unique
// tag and up to 300 bytes, now and then up to 8 KiB.
func (r *maRun) value(s int) []byte {
	switch x := r.rng.Intn(100); {
	case x < 10:
		return nil
	case x < 16:
		return []byte{}
	case x < 19:
		return fmt.Appendf(nil, "s%d-w%d|%s", s, r.seqOf(), bytes.Repeat([]byte{byte('a' + r.op%26)}, 2048+r.rng.Intn(6<<10)))
	}
	v := fmt.Appendf(nil, "s%d-w%d|", s, r.seqOf())
	for n := r.rng.Intn(300); n > 0; n-- {
		v = append(v, byte('a'+r.rng.Intn(26)))
	}
	return v
}

func nonNil(v []byte) []byte {
	if v == nil {
		return []byte{}
	}
	return v
}

func (r *maRun) touch(s int, p ringpipe.Point) {
	sp := r.spaces[s]
	if _, ok := sp.pts[maKey(p)]; !ok {
		sp.pts[maKey(p)] = p
		sp.order = append(sp.order, p)
	}
}

// seqOf is the seq of the write being issued.
func (r *maRun) seqOf() int { return r.op*maSeqPerOp + r.sub }

// noteRev checks that rev, the revision of the write op seq issued, lies
// strictly between the revisions of the writes issued before and after it
// (DESIGN.md §3: revisions increase in the order the submitter accepts
// writes, and one goroutine's writes reach it in the order issued).
func (r *maRun) noteRev(seq int, rev ringpipe.Revision, async bool, what string) {
	r.t.Helper()
	if rev == 0 {
		r.failf("%s (%s): revision 0", what, seqName(seq))
	}
	i, found := slices.BinarySearchFunc(r.revs, seq, func(a maRev, s int) int { return cmp.Compare(a.seq, s) })
	if found {
		if r.revs[i].rev != rev {
			r.failf("%s (%s): revision %d, earlier seen as %d", what, seqName(seq), rev, r.revs[i].rev)
		}
		return
	}
	me := maRev{seq, rev, async}
	if i > 0 && r.revs[i-1].rev >= rev {
		r.misordered(r.revs[i-1], me, what)
	}
	if i < len(r.revs) && r.revs[i].rev <= rev {
		r.misordered(me, r.revs[i], what)
	}
	r.revs = slices.Insert(r.revs, i, me)
}

// misordered reports that the write issued first (a) has a revision not
// below the one issued after it (b). A PutAsync overtaken by a later Put
// or Delete is the known violation that TestModelAuditAsyncThenPut pins:
// it is counted and reported at the end of the run, which goes on (the
// model follows the revisions, as the engine does). Anything else ends
// the run.
func (r *maRun) misordered(a, b maRev, what string) {
	r.t.Helper()
	msg := fmt.Sprintf("%s: the write of %s (async %v) has revision %d, not below revision %d of the write of %s (async %v), issued after it",
		what, seqName(a.seq), a.async, a.rev, b.rev, seqName(b.seq), b.async)
	if a.async && !b.async {
		if r.inversions++; r.inversions == 1 {
			r.firstInv = fmt.Sprintf("at op %d: %s", r.op, msg)
		}
		return
	}
	r.failf("%s", msg)
}

// ack puts an acknowledged write into the model.
func (r *maRun) ack(s int, p ringpipe.Point, w maWrite, async bool, what string) {
	r.t.Helper()
	r.noteRev(w.seq, w.rev, async, what)
	r.acked = max(r.acked, w.rev)
	k := maKey(p)
	if old, ok := r.st.last[s][k]; ok && old.rev > w.rev {
		return
	}
	r.st.last[s][k] = w
}

// --- operations ---------------------------------------------------------

func (r *maRun) put() {
	s := r.rng.Intn(len(r.spaces))
	p := r.pickPoint(s)
	v := r.value(s)
	r.logf("Put s%d %v %d B", s, p, len(v))
	r.touch(s, p)
	ctx, cancel := ctxHang()
	rev, err := r.e.Put(ctx, r.spaces[s].id, p, v)
	cancel()
	r.must(err, "Put")
	r.n["put"]++
	r.ack(s, p, maWrite{seq: r.seqOf(), rev: rev, value: slices.Clone(nonNil(v))}, false, "Put")
	if r.rng.Intn(4) == 0 {
		r.checkGet("Get right after Put", r.engineReader(), r.st, s, p)
	}
}

func (r *maRun) del() {
	s := r.rng.Intn(len(r.spaces))
	p := r.pickPoint(s)
	if r.rng.Intn(3) == 0 { // a point never written, if one comes up
		for range 8 {
			q := randPoint(r.rng, r.spaces[s].spec)
			if _, ok := r.st.last[s][maKey(q)]; !ok {
				p = q
				break
			}
		}
	}
	_, seen := r.st.last[s][maKey(p)]
	r.logf("Delete s%d %v (known %v)", s, p, seen)
	r.touch(s, p)
	ctx, cancel := ctxHang()
	rev, err := r.e.Delete(ctx, r.spaces[s].id, p)
	cancel()
	r.must(err, "Delete")
	r.n["delete"]++
	if !seen {
		r.n["delete-unknown"]++
	}
	r.ack(s, p, maWrite{seq: r.seqOf(), rev: rev, del: true}, false, "Delete")
	if r.rng.Intn(4) == 0 {
		r.checkGet("Get right after Delete", r.engineReader(), r.st, s, p)
	}
}

func (r *maRun) putAsync() {
	if len(r.st.pend) >= maMaxPending {
		r.sync()
		return
	}
	r.issueAsync()
}

// issueAsync queues a PutAsync of a random value at a random point.
func (r *maRun) issueAsync() {
	s := r.rng.Intn(len(r.spaces))
	p := r.pickPoint(s)
	v := r.value(s)
	r.logf("PutAsync s%d %v %d B (%s)", s, p, len(v), seqName(r.seqOf()))
	r.touch(s, p)
	ctx, cancel := ctxHang()
	tk, err := r.e.PutAsync(ctx, r.spaces[s].id, p, v)
	cancel()
	r.must(err, "PutAsync")
	r.n["async"]++
	r.st.pend = append(r.st.pend, &maPending{space: s, point: p, key: maKey(p), w: maWrite{seq: r.seqOf(), value: slices.Clone(nonNil(v))}, tk: tk})
}

// wait waits for a random ticket.
func (r *maRun) wait() {
	if len(r.st.pend) == 0 {
		r.logf("Wait: nothing pending")
		return
	}
	i := r.rng.Intn(len(r.st.pend))
	pd := r.st.pend[i]
	r.logf("Wait for the PutAsync of %s", seqName(pd.w.seq))
	ctx, cancel := ctxHang()
	rev, err := pd.tk.Wait(ctx)
	cancel()
	r.must(err, fmt.Sprintf("Wait for the PutAsync of %s", seqName(pd.w.seq)))
	r.n["wait"]++
	r.settle(pd, rev)
	r.st.pend = slices.Delete(r.st.pend, i, i+1)
}

// settle puts a waited-for PutAsync into the model.
func (r *maRun) settle(pd *maPending, rev ringpipe.Revision) {
	r.t.Helper()
	pd.w.rev = rev
	r.ack(pd.space, pd.point, pd.w, true, fmt.Sprintf("PutAsync of %s", seqName(pd.w.seq)))
}

// sync: once Sync returns every earlier ticket is done (README "Details a
// user meets").
func (r *maRun) sync() {
	r.logf("Sync (%d pending)", len(r.st.pend))
	ctx, cancel := ctxHang()
	err := r.e.Sync(ctx)
	cancel()
	r.must(err, "Sync")
	r.n["sync"]++
	r.drainDone("Sync")
}

// drainDone requires every pending ticket to be done, after what, and
// puts their writes into the model.
func (r *maRun) drainDone(after string) {
	r.t.Helper()
	for _, pd := range r.st.pend {
		select {
		case <-pd.tk.Done():
		default:
			r.failf("the ticket of the PutAsync of %s is not done after %s returned", seqName(pd.w.seq), after)
		}
		ctx, cancel := ctxHang()
		rev, err := pd.tk.Wait(ctx)
		cancel()
		r.must(err, fmt.Sprintf("Wait after %s for the PutAsync of %s", after, seqName(pd.w.seq)))
		r.settle(pd, rev)
	}
	r.st.pend = nil
}

func (r *maRun) flush() {
	s := r.rng.Intn(len(r.spaces))
	r.logf("Flush s%d", s)
	ctx, cancel := ctxHang()
	err := r.e.Flush(ctx, r.spaces[s].id)
	cancel()
	r.must(err, "Flush")
	r.n["flush"]++
}

// takeView takes a View, checks it against the model of this moment and
// keeps it with what it showed.
func (r *maRun) takeView() {
	v := &maView{v: r.e.View(), takenAt: r.op, st: r.st.clone()}
	v.rev = v.v.Revision()
	r.logf("View (revision %d, highest acknowledged %d)", v.rev, r.acked)
	if v.rev < r.acked {
		r.failf("View taken after revision %d was acknowledged has Revision %d", r.acked, v.rev)
	}
	for s := range r.spaces {
		v.full = append(v.full, r.checkScan(fmt.Sprintf("View of op %d, full Scan", r.op), viewReader(v.v), v.st, s, fullBox(r.spaces[s].spec)))
		for _, rec := range v.full[s] {
			if rec.Revision > v.rev {
				r.failf("View of op %d (Revision %d) holds %v at rev %d, above its Revision", r.op, v.rev, rec.Point, rec.Revision)
			}
		}
	}
	r.n["view"]++
	if len(r.views) < maMaxViews {
		r.views = append(r.views, v)
	} else {
		r.views[r.rng.Intn(len(r.views))] = v
	}
}

func (r *maRun) checkSomeView() {
	if len(r.views) == 0 {
		r.logf("check a View: none kept")
		return
	}
	v := r.views[r.rng.Intn(len(r.views))]
	r.logf("check the View of op %d", v.takenAt)
	r.checkView(v)
}

// checkView: a View never changes. Its Revision, its full Scans, and Gets
// and Scans of random boxes show what it showed when it was taken, which
// also agrees with the model of that moment.
func (r *maRun) checkView(v *maView) {
	r.t.Helper()
	r.n["view-check"]++
	what := fmt.Sprintf("View of op %d", v.takenAt)
	if got := v.v.Revision(); got != v.rev {
		r.failf("%s: Revision %d, was %d", what, got, v.rev)
	}
	rd := viewReader(v.v)
	for s := range r.spaces {
		full := r.checkScan(what+", full Scan", rd, v.st, s, fullBox(r.spaces[s].spec))
		r.sameRecords(what+": full Scan now and when taken", full, v.full[s])
		for range 4 {
			p := r.getPoint(s)
			rec := r.checkGet(what+", Get", rd, v.st, s, p)
			var then *ringpipe.Record
			for i := range v.full[s] {
				if slices.Equal(v.full[s][i].Point, p) {
					then = &v.full[s][i]
				}
			}
			switch {
			case rec == nil && then != nil:
				r.failf("%s: Get %v says not found; its Scan when taken had %+v", what, p, *then)
			case rec != nil && then == nil:
				r.failf("%s: Get %v returns %+v; its Scan when taken did not have it", what, p, *rec)
			case rec != nil:
				r.sameRecords(fmt.Sprintf("%s: Get %v now and Scan when taken", what, p), []ringpipe.Record{*rec}, []ringpipe.Record{*then})
			}
		}
		box, kind := r.randBox(s)
		got := r.checkScan(fmt.Sprintf("%s, Scan of a %s box %v", what, kind, box), rd, v.st, s, box)
		var want []ringpipe.Record
		for _, rec := range v.full[s] {
			if inBox(rec.Point, box) {
				want = append(want, rec)
			}
		}
		r.sameRecords(fmt.Sprintf("%s: Scan of %v now and full Scan when taken", what, box), got, want)
	}
}

func (r *maRun) sameRecords(what string, got, want []ringpipe.Record) {
	r.t.Helper()
	if len(got) != len(want) {
		r.failf("%s: %d records, want %d", what, len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Space != w.Space || !slices.Equal(g.Point, w.Point) || g.Revision != w.Revision || g.Tombstone != w.Tombstone || !bytes.Equal(g.Value, w.Value) || (g.Value == nil) != (w.Value == nil) {
			r.failf("%s: record %d is %v rev %d %.32q, was %v rev %d %.32q", what, i, g.Point, g.Revision, g.Value, w.Point, w.Revision, w.Value)
		}
	}
}

// reopen stops the engine cleanly and starts a new one on its directory.
// Stop drains what was accepted and makes it durable: every ticket is done
// and succeeded once it returns.
func (r *maRun) reopen() {
	r.logf("Stop and Start (%d pending)", len(r.st.pend))
	r.stopEngine()
	r.drainDone("Stop")
	r.n["reopen"]++
	// "reads on a View taken earlier still work" after Stop.
	if len(r.views) > 0 {
		r.checkView(r.views[r.rng.Intn(len(r.views))])
	}
	r.startEngine()
	r.fullCheck()
}

// powerLoss cuts the simulated disk's power with writes in flight (and
// now and then a Flush or Sync running), stops the dead engine and starts
// a new one: every acknowledged write is there; an unacknowledged one is
// wholly present or wholly absent, and the model takes what recovery kept.
func (r *maRun) powerLoss() {
	bg := ""
	switch r.rng.Intn(4) {
	case 0:
		bg = "Flush"
	case 1:
		bg = "Sync"
	}
	bgSpace := r.rng.Intn(len(r.spaces))
	lossRng := rand.New(rand.NewSource(r.rng.Int63()))
	// A burst of PutAsyncs just before the cut, so that some are in
	// flight when it comes.
	for i := range r.rng.Intn(maSeqPerOp / 2) {
		r.sub = 1 + i
		r.issueAsync()
	}
	r.sub = 0
	r.logf("power loss (%d pending, background %q)", len(r.st.pend), bg)
	r.n["power-loss"]++

	// Tickets done before the cut were acknowledged before it.
	var left []*maPending
	for _, pd := range r.st.pend {
		select {
		case <-pd.tk.Done():
			ctx, cancel := ctxHang()
			rev, err := pd.tk.Wait(ctx)
			cancel()
			r.must(err, fmt.Sprintf("Wait for the PutAsync of %s (done before the power loss, no fault injected)", seqName(pd.w.seq)))
			r.settle(pd, rev)
		default:
			left = append(left, pd)
		}
	}
	r.st.pend = left

	bgDone := make(chan error, 1)
	if bg != "" {
		e, id := r.e, r.spaces[bgSpace].id
		go func() {
			ctx, cancel := ctxHang()
			defer cancel()
			if bg == "Flush" {
				bgDone <- e.Flush(ctx, id)
			} else {
				bgDone <- e.Sync(ctx)
			}
		}()
	}
	report := r.disk.PowerLoss(lossRng)

	ctx, cancel := ctxHang()
	err := r.e.Stop(ctx)
	cancel()
	if errors.Is(err, context.DeadlineExceeded) {
		r.hung("Stop after a power loss")
	}
	if bg != "" {
		timer := time.NewTimer(hangTimeout)
		select {
		case err := <-bgDone:
			if errors.Is(err, context.DeadlineExceeded) {
				r.hung(bg + " running at a power loss")
			}
		case <-timer.C:
			r.hung(bg + " running at a power loss")
		}
		timer.Stop()
	}
	// Stop wakes every waiter: each ticket is done, one way or the other.
	// A ticket that succeeds says its write is durable: it must survive.
	var uncertain []*maPending
	for _, pd := range r.st.pend {
		select {
		case <-pd.tk.Done():
		default:
			r.failf("the ticket of the PutAsync of %s is not done after Stop returned (after a power loss)", seqName(pd.w.seq))
		}
		ctx, cancel := ctxHang()
		rev, err := pd.tk.Wait(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			r.hung(fmt.Sprintf("Wait for the PutAsync of %s after a power loss", seqName(pd.w.seq)))
		}
		if err == nil {
			pd.w.late = true
			r.settle(pd, rev)
			r.n["acked-after-loss"]++
			continue
		}
		uncertain = append(uncertain, pd)
	}
	r.views = nil // their process is gone
	r.logf("power lost: %d vanished, %d revived files; %d writes unacknowledged", len(report.Vanished), len(report.Revived), len(uncertain))

	r.startEngine()
	// Resolve: what recovery kept of each unacknowledged write becomes the
	// model. The state to accept is the model plus the unacknowledged
	// writes.
	r.st.pend = uncertain
	rd := r.engineReader()
	done := make(map[string]bool)
	for _, pd := range uncertain {
		id := fmt.Sprintf("%d/%s", pd.space, maKey(pd.point))
		if done[id] {
			continue
		}
		done[id] = true
		rec := r.checkGet("Get after a power loss of a point with unacknowledged writes", rd, r.st, pd.space, pd.point)
		if rec == nil {
			r.n["unacked-points-unchanged"]++
			continue
		}
		base, has := r.st.last[pd.space][maKey(pd.point)]
		if has && !base.del && rec.Revision == base.rev {
			r.n["unacked-points-unchanged"]++
			continue
		}
		// The newest candidate with this value (values are unique but for
		// empty ones).
		var match *maPending
		nMatch := 0
		for _, c := range uncertain {
			if c.space == pd.space && maKey(c.point) == maKey(pd.point) && bytes.Equal(c.w.value, rec.Value) {
				if match == nil || c.w.seq > match.w.seq {
					match = c
				}
				nMatch++
			}
		}
		if match == nil {
			r.failf("Get after a power loss: %v rev %d matches no write", rec.Point, rec.Revision)
		}
		r.n["unacked-points-kept"]++
		w := match.w
		w.rev = rec.Revision
		if nMatch == 1 {
			r.noteRev(w.seq, w.rev, true, fmt.Sprintf("unacknowledged PutAsync of %s kept by recovery", seqName(w.seq)))
		}
		r.acked = max(r.acked, w.rev)
		r.st.last[pd.space][maKey(pd.point)] = w
	}
	r.st.pend = nil
	r.fullCheck()
}

// --- checks ---------------------------------------------------------------

// engineReader reads through the engine, each call bounded.
func (r *maRun) engineReader() reader {
	e := r.e
	return reader{
		get: func(s ringpipe.SpaceID, p ringpipe.Point) (ringpipe.Record, error) {
			ctx, cancel := ctxHang()
			defer cancel()
			return e.Get(ctx, s, p)
		},
		scan: func(s ringpipe.SpaceID, b ringpipe.Box, fn func(ringpipe.Record) bool) error {
			ctx, cancel := ctxHang()
			defer cancel()
			return e.Scan(ctx, s, b, fn)
		},
	}
}

// accept says why rec (nil: ErrNotFound) is not what st allows at p in
// space s, or "" if it is.
func (r *maRun) accept(st *maState, s int, p ringpipe.Point, rec *ringpipe.Record) string {
	k := maKey(p)
	base, has := st.last[s][k]
	live := has && !base.del
	var cands []*maPending
	for _, pd := range st.pend {
		// Any write in flight may show once it has a revision above the
		// newest acknowledged one (the highest revision wins, DESIGN.md
		// §3), even one issued before it: see TestModelAuditAsyncThenPut.
		if pd.space == s && pd.key == k {
			cands = append(cands, pd)
		}
	}
	want := func() string {
		w := "nothing (never written)"
		if has {
			w = base.String()
		}
		for _, c := range cands {
			w += fmt.Sprintf(", or the unacknowledged %s", c.w)
		}
		return w
	}
	if rec == nil {
		if live {
			return "ErrNotFound; want " + want()
		}
		return ""
	}
	got := func() string {
		return fmt.Sprintf("%v rev %d value %.32q (%d B, nil %v, tombstone %v)", rec.Point, rec.Revision, rec.Value, len(rec.Value), rec.Value == nil, rec.Tombstone)
	}
	switch {
	case rec.Tombstone || rec.Value == nil:
		return "a tombstone was returned: " + got()
	case rec.Space != r.spaces[s].id:
		return fmt.Sprintf("record of space %d in space %d: %s", rec.Space, r.spaces[s].id, got())
	case !slices.Equal(rec.Point, p):
		return fmt.Sprintf("record for %v returned for %v", rec.Point, p)
	case live && rec.Revision == base.rev && bytes.Equal(rec.Value, base.value):
		return ""
	}
	for _, c := range cands {
		if bytes.Equal(rec.Value, c.w.value) && (c.w.rev == 0 || c.w.rev == rec.Revision) && (!has || rec.Revision > base.rev) {
			return ""
		}
	}
	return "got " + got() + "; want " + want()
}

// maKey is a map key for a point, cheaper than keyOf (the checks make
// many).
func maKey(p ringpipe.Point) pkey {
	b := make([]byte, 0, 4*len(p))
	for _, c := range p {
		b = strconv.AppendUint(b, uint64(c), 10)
		b = append(b, ',')
	}
	return pkey(b)
}

// checkGet checks a Get of p against st and returns what it found.
func (r *maRun) checkGet(what string, rd reader, st *maState, s int, p ringpipe.Point) *ringpipe.Record {
	r.t.Helper()
	rec, err := rd.get(r.spaces[s].id, p)
	var got *ringpipe.Record
	switch {
	case err == nil:
		got = &rec
	case errors.Is(err, ringpipe.ErrNotFound):
	case errors.Is(err, context.DeadlineExceeded):
		r.hung(what)
	default:
		r.failf("%s: Get s%d %v: %v", what, s, p, err)
	}
	if why := r.accept(st, s, p, got); why != "" {
		r.failf("%s: Get s%d %v: %s", what, s, p, why)
	}
	return got
}

// checkScan scans box and checks the records against st: in strictly
// increasing key order (so no point twice), each inside box and allowed by
// st, and every point st says must be live inside box among them. It
// returns the records.
func (r *maRun) checkScan(what string, rd reader, st *maState, s int, box ringpipe.Box) []ringpipe.Record {
	r.t.Helper()
	spec := r.spaces[s].spec
	var got []ringpipe.Record
	err := rd.scan(r.spaces[s].id, box, func(rec ringpipe.Record) bool {
		got = append(got, rec)
		return true
	})
	if errors.Is(err, context.DeadlineExceeded) {
		r.hung(what)
	}
	if err != nil {
		r.failf("%s: Scan s%d %v: %v", what, s, box, err)
	}
	seen := make(map[pkey]bool, len(got))
	var prev uint64
	for i, rec := range got {
		key := snapshot.Key(rec.Point, spec.Dims, spec.Bits)
		if i > 0 && key <= prev {
			r.failf("%s: Scan s%d %v: record %d at %v (key %d) does not come after %v (key %d) in key order", what, s, box, i, rec.Point, key, got[i-1].Point, prev)
		}
		prev = key
		if len(rec.Point) != spec.Dims || !inBox(rec.Point, box) {
			r.failf("%s: Scan s%d %v returned %v, outside the box", what, s, box, rec.Point)
		}
		if why := r.accept(st, s, rec.Point, &got[i]); why != "" {
			r.failf("%s: Scan s%d %v, record %d: %s", what, s, box, i, why)
		}
		seen[maKey(rec.Point)] = true
	}
	for k, w := range st.last[s] {
		if w.del || seen[k] {
			continue
		}
		if p := r.spaces[s].pts[k]; inBox(p, box) {
			r.failf("%s: Scan s%d %v misses %v: %s", what, s, box, p, w)
		}
	}
	return got
}

// getPoint is a point to Get in space s: one the run wrote or deleted,
// or any.
func (r *maRun) getPoint(s int) ringpipe.Point {
	if p, ok := r.knownPoint(s); ok && r.rng.Intn(3) != 0 {
		return p
	}
	return r.pickPoint(s)
}

// randBox is a random box of space s and what kind it is.
func (r *maRun) randBox(s int) (ringpipe.Box, string) {
	spec := r.spaces[s].spec
	top := uint32(uint64(1)<<spec.Bits - 1)
	switch r.rng.Intn(8) {
	case 0:
		return fullBox(spec), "full"
	case 1:
		p := r.getPoint(s)
		return ringpipe.Box{Min: slices.Clone(p), Max: slices.Clone(p)}, "single-point"
	case 2:
		b := fullBox(spec)
		d := r.rng.Intn(spec.Dims)
		lo := uint32(r.rng.Int63n(int64(top)))
		hi := lo + 1 + uint32(r.rng.Int63n(int64(top-lo)))
		b.Min[d], b.Max[d] = hi, lo // Min > Max on one dimension: empty
		return b, "empty (Min > Max)"
	}
	b := ringpipe.Box{Min: make(ringpipe.Point, spec.Dims), Max: make(ringpipe.Point, spec.Dims)}
	for i := range b.Min {
		x := uint32(r.rng.Int63n(int64(top) + 1))
		y := uint32(r.rng.Int63n(int64(top) + 1))
		b.Min[i], b.Max[i] = min(x, y), max(x, y)
	}
	return b, "random"
}

// check reads a few random points and boxes through the engine.
func (r *maRun) check() {
	r.logf("check (%d pending)", len(r.st.pend))
	r.n["check"]++
	rd := r.engineReader()
	s := r.rng.Intn(len(r.spaces))
	for range 6 {
		r.checkGet("check", rd, r.st, s, r.getPoint(s))
	}
	for range 2 {
		box, kind := r.randBox(s)
		full := r.checkScan(fmt.Sprintf("check, Scan of a %s box", kind), rd, r.st, s, box)
		// A Scan stopped after k records called fn k times, with the
		// first k records (only while nothing is in flight: a write
		// published in between may change them).
		if len(r.st.pend) == 0 && len(full) > 1 {
			k := 1 + r.rng.Intn(len(full)-1)
			var got []ringpipe.Record
			err := rd.scan(r.spaces[s].id, box, func(rec ringpipe.Record) bool {
				got = append(got, rec)
				return len(got) < k
			})
			r.must(err, "Scan stopped early")
			r.sameRecords(fmt.Sprintf("check, Scan of %v stopped after %d records", box, k), got, full[:k])
		}
	}
}

// fullCheck reads every point the run touched in every space (and a few it
// never touched) and scans every space whole.
func (r *maRun) fullCheck() {
	rd := r.engineReader()
	for s, sp := range r.spaces {
		for _, p := range sp.order {
			r.checkGet("full check", rd, r.st, s, p)
		}
		for range 8 {
			r.checkGet("full check, random point", rd, r.st, s, randPoint(r.rng, sp.spec))
		}
		r.checkScan("full check, full Scan", rd, r.st, s, fullBox(sp.spec))
	}
}

// TestModelAuditAsyncThenPut: one goroutine's PutAsync(p, a) followed by
// its Put(p, b). The Put is issued later, so DESIGN.md §3 ("a revision is
// ... increasing in the order the submitter accepts writes"; one
// goroutine's writes reach the queue in the order issued, which
// TestPutAsync relies on for PutAsyncs) gives it the higher revision, and
// once both are durable Get(p) returns b. README ("Inline commit") says a
// Put commits on its caller's goroutine only "when the pipeline is idle
// (nothing queued, held or in flight ...)".
//
// It failed before the fix on every backend within a few rounds: the Put
// often got the lower revision, so Get(p) returned the older a. The
// submitter's Run takes a request out of the queue before it takes its
// turn back; in between, Inline.Commit got the turn, saw an empty queue
// and nothing held, and the Put took the next revision ahead of the
// PutAsync in the submitter's hands. Now a request counts as queued from
// before its send until the submitter takes it (actors.Channels.Queued),
// and an inline commit declines while any is.
func TestModelAuditAsyncThenPut(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(t *testing.T) ringpipe.Config
	}{
		{"sim", func(t *testing.T) ringpipe.Config { return simConfig(t, newSimDisk(t, 91)) }},
		{"std", func(t *testing.T) ringpipe.Config { return realConfig(t, ringpipe.BackendStd) }},
		{"auto", func(t *testing.T) ringpipe.Config { return realConfig(t, ringpipe.BackendAuto) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, tc.cfg(t))
			sp := createSpace(t, e, "s", 1, 8)
			p := ringpipe.Point{7}
			const rounds, enough = 500, 3
			inverted := 0
			var first string
			for i := 0; i < rounds && inverted < enough; i++ {
				ctx, cancel := ctxHang()
				a, b := fmt.Appendf(nil, "async-%d", i), fmt.Appendf(nil, "put-%d", i)
				tk, err := e.PutAsync(ctx, sp, p, a)
				require.NoError(t, err, "PutAsync")
				rb, err := e.Put(ctx, sp, p, b)
				require.NoError(t, err, "Put")
				ra, err := tk.Wait(ctx)
				require.NoError(t, err, "Wait")
				rec, err := e.Get(ctx, sp, p)
				require.NoError(t, err, "Get")
				cancel()
				if ra > rb || !bytes.Equal(rec.Value, b) {
					if inverted++; inverted == 1 {
						first = fmt.Sprintf("round %d: PutAsync %q got revision %d, the later Put %q revision %d; Get returns %q rev %d",
							i, a, ra, b, rb, rec.Value, rec.Revision)
					}
				}
			}
			assert.Zero(t, inverted, "a PutAsync overtaken by the Put issued after it (the earlier write wins); first at %s", first)
			stop(t, e)
		})
	}
}
