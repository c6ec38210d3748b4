package test

// Linearizability audit: API.md makes each point a register. A write is
// visible to Get once Put has returned; after Put returns nil the record is
// returned by Get until overwritten; every method is safe for concurrent
// use; a View never changes. Earlier audits checked each writer's program
// order (inline_audit_test.go) and a sequential model (model_audit_test.go).
// This one checks the history of many goroutines against each other while
// the engine moves records between its places: the live tail, the staging
// WAL of a slow space, promotion into the hot file, seals into blocks, and
// restarts.
//
// Goroutines run random operations on 16 points in 2 spaces (8 each), so
// that writes to one point race: Put, Delete, PutAsync+Wait, writes whose
// ctx ends while they run or before they start, Get, Scan of a box, View
// then View.Get and View.Scan (and again later on a View kept), Sync and
// Flush. Every call is stamped with a global atomic counter before it is
// made and after it returns, so "A returned before B was invoked" is exact.
// Values are unique ("p<phase>.g<goroutine>.<n>|<padding>"), so a read
// names the write it shows.
//
// The revision order is the version order the engine claims (the highest
// revision wins), so checking is polynomial: with each write's revision
// known, a history is linearizable iff no operation of a later version's
// cluster (its write and the reads that return it) finished before an
// operation of an earlier version's cluster started, and no read finished
// before its version's write started. That splits into the checks below,
// each named in its violation messages:
//
//	(a) revisions given to writes (and seen for writes whose call failed)
//	    are unique across every goroutine;
//	(b) real-time order: a write invoked after another write returned has a
//	    higher revision (per point; across points too, as DESIGN.md §3
//	    promises revisions in the order writes are accepted);
//	(c) a read invoked after a write returned shows that write or a newer
//	    one, never ErrNotFound unless a later Delete; and never a write
//	    invoked only after the read returned;
//	(d) a read's value is exactly what the write with that revision wrote,
//	    at that point;
//	(e) reads of a point never go back in revision in real time (an
//	    ErrNotFound is placed at the earliest Delete that fits);
//	(f) a View answers the same every time it is asked, while writes go on,
//	    after Stop and after the next Start; it is one snapshot: a View (or
//	    a Scan) that shows a write also shows every write that returned
//	    before that write was invoked; View.Revision covers what it shows
//	    and every write acknowledged before it was taken;
//	(g) Scan returns, in key order, only the newest live record of each
//	    point inside its box, and agrees with Get on the same View;
//	(h) after Stop and a fresh Start, each point shows its
//	    highest-revision acknowledged write, or a newer write whose call
//	    failed or was cut by its ctx (present or absent, never half). On
//	    sim the last restart is a power loss instead (every call has
//	    returned by then), and the reads after it join the history: a
//	    write once read must still be there.
//
// Plus: a write whose ctx was cancelled before the call is never applied
// (API.md); a PutAsync whose ticket came before Stop was invoked is
// acknowledged (Stop "drains and acknowledges what was accepted"); no call
// fails without a reason.
//
// A run has three phases, each followed by a restart; Stop is called in
// the middle of the second one, racing the workers (a write it cuts short
// says ErrStopped and is of unknown outcome; a worker ends at its first
// ErrStopped). A Delete of unknown outcome has a tombstone nobody can
// name: it may explain an ErrNotFound that no known version does, and the
// read is then placed at the lowest version it may show (weaker there,
// still sound). The variants: a real directory (BackendAuto) at 8 and at
// 64 goroutines; ring/sim with one space's hot file stalled and
// PromoteInterval an hour, so that its records stay in the staging WAL
// until a Flush or a restart (the sim's Delay is on a virtual clock: a
// running promoter would finish at once); ring/sim with one space's hot
// file late now and then (Delay and Queued faults: late copies, hysteresis
// flapping) and SealThreshold 16, the promoter running; ring/sim whose
// slow space turns slow and fast in real time (slowRing holds its hot
// completions back a few milliseconds); a real directory with
// SealThreshold 16 at GOMAXPROCS 1 and 8. Seeds are logged;
// RINGPIPE_LINZ_SEED=<seed> replays a run's operations (not the
// scheduler's interleaving); RINGPIPE_SOAK=1 runs ten times the
// operations.

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"slices"
	"sort"
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
	"github.com/ringpipe/ringpipe/snapshot"
)

// lzSpec is the shape of the audit's spaces: an 8×8 grid, so that a random
// box holds a few of a space's 8 points and a full box holds them all.
var lzSpec = ringpipe.SpaceSpec{Dims: 2, Bits: 3}

const (
	lzSpaces   = 2
	lzPerSpace = 8
	lzPoints   = lzSpaces * lzPerSpace
	// lzKeep is how many Views a goroutine keeps to read again later.
	lzKeep = 3
	// lzForever is the response time of a write whose call failed: it may
	// take effect at any later time.
	lzForever = int64(math.MaxInt64)
	// lzQuiet bounds a phase's silence: no operation completing for this
	// long is a hang (each call is bounded by opTimeout as well).
	lzQuiet = 10 * time.Second
	// lzShown is how many violations of one check are printed.
	lzShown = 8
)

// The checks, as the violation messages name them.
const (
	lzA     = "(a) unique revisions"
	lzB     = "(b) writes in real-time order"
	lzB2    = "(b) writes in real-time order across points"
	lzC     = "(c) read sees returned writes, no future ones"
	lzD     = "(d) read shows what its write wrote"
	lzE     = "(e) reads never go back"
	lzF     = "(f) View never changes"
	lzF2    = "(f) View/Scan is one snapshot"
	lzG     = "(g) Scan agrees with Get"
	lzH     = "(h) restart keeps the newest acknowledged write"
	lzCtx   = "cancelled ctx means not applied"
	lzDrain = "Stop acknowledges what was accepted"
	lzErr   = "unexpected error"
)

// lzStatus is what a write's caller learnt.
type lzStatus int

const (
	lzAcked   lzStatus = iota // the call returned a revision
	lzUnknown                 // the call failed or its ctx ended: present or absent
	lzNever                   // its ctx was cancelled before the call: never applied
)

// lzWrite is one write call. rev is 0 while unknown; a write of unknown
// status gets the revision a read shows for its value.
type lzWrite struct {
	what      string
	g, pi     int
	id        string // the value's tag; "" for a Delete
	val       []byte // nil for a Delete
	inv, resp int64  // resp is lzForever while the outcome is unknown
	queued    int64  // a PutAsync: when it returned its ticket
	rev       ringpipe.Revision
	status    lzStatus
	err       error
	tk        *ringpipe.Ticket // a PutAsync whose Wait was cut: resolved later
}

func (w *lzWrite) del() bool { return w.val == nil }

// lzRead is one point's answer to a read: a Get, or a point of a Scan's box
// or of a View. A snapshot's reads share its interval.
type lzRead struct {
	what      string
	g, pi     int
	inv, resp int64
	found     bool
	rev       ringpipe.Revision
	val       []byte
	snap      *lzSnap
	bad       bool // failed (d): left out of the ordering checks
}

// lzSnap is a set of reads made at one instant: one Scan, or one View.
type lzSnap struct {
	what      string
	g         int
	inv, resp int64
	view      bool
	viewRev   ringpipe.Revision
	reads     []*lzRead
}

// lzAnswer is a View's first answer at a point.
type lzAnswer struct {
	found bool
	rev   ringpipe.Revision
	val   []byte
}

// lzView is a View kept to be asked again.
type lzView struct {
	v       *ringpipe.View
	snap    *lzSnap
	answers [lzPoints]lzAnswer
}

// lzHist is a history: what a goroutine, or the whole run, saw.
type lzHist struct {
	writes []*lzWrite
	reads  []*lzRead
	snaps  []*lzSnap
	views  []*lzView
}

func (h *lzHist) merge(o *lzHist) {
	h.writes = append(h.writes, o.writes...)
	h.reads = append(h.reads, o.reads...)
	h.snaps = append(h.snaps, o.snaps...)
	h.views = append(h.views, o.views...)
}

// lzVariant is one engine configuration of the audit.
type lzVariant struct {
	goroutines, ops int
	config          func(t *testing.T, seed int64) (ringpipe.Config, *sim.Disk)
	// slow, on sim, slows the first space's hot files once it exists.
	slow func(disk *sim.Disk, space ringpipe.SpaceID)
	// expect checks that the engine moved records as the variant means it
	// to (summed Stats of every engine of the run).
	expect func(t *testing.T, st ringpipe.Stats)
	// powerLoss, on sim, makes the last restart a power loss (with
	// every call returned: only what was durable survives) instead of a
	// Stop.
	powerLoss bool
	// flap, when set, runs beside each phase's workers until stop closes,
	// and leaves the disk healthy.
	flap func(r *lzRun, rng *rand.Rand, stop <-chan struct{})
}

// lzRun is one audit run.
type lzRun struct {
	t        *testing.T
	v        lzVariant
	seed     int64
	cfg      ringpipe.Config
	disk     *sim.Disk
	e        *ringpipe.Engine
	spaces   [lzSpaces]ringpipe.SpaceID
	points   [lzPoints]ringpipe.Point
	index    [lzSpaces]map[pkey]int
	phase    int
	clock    atomic.Int64
	progress atomic.Int64
	stats    ringpipe.Stats // summed over the run's engines
	hist     lzHist
	// viewsFrom is the first of hist.views still asked again: the Views
	// of an engine that lost its power died with it.
	viewsFrom int
	// racing is set during a phase that Stop cuts short, stopInv to when
	// that Stop was invoked.
	racing  bool
	stopInv atomic.Int64

	mu  sync.Mutex
	bad map[string][]string
}

func (r *lzRun) tick() int64 { return r.clock.Add(1) }

// violate notes a violation of check.
func (r *lzRun) violate(check, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bad[check] = append(r.bad[check], fmt.Sprintf(format, args...))
}

func (r *lzRun) space(pi int) ringpipe.SpaceID { return r.spaces[pi/lzPerSpace] }

func (r *lzRun) pname(pi int) string {
	return fmt.Sprintf("space %d %v", r.space(pi), []uint32(r.points[pi]))
}

func (r *lzRun) wdesc(w *lzWrite) string {
	end := "never returned"
	if w.resp != lzForever {
		end = fmt.Sprintf("returned at %d", w.resp)
	}
	v := "tombstone"
	if !w.del() {
		v = fmt.Sprintf("%q", w.id)
	}
	return fmt.Sprintf("%s g%d %s at %s rev %d (invoked at %d, %s)", w.what, w.g, v, r.pname(w.pi), w.rev, w.inv, end)
}

func (r *lzRun) rdesc(rd *lzRead) string {
	res := "ErrNotFound"
	if rd.found {
		res = fmt.Sprintf("rev %d %q", rd.rev, lzID(rd.val))
	}
	return fmt.Sprintf("%s g%d at %s [%d, %d] -> %s", rd.what, rd.g, r.pname(rd.pi), rd.inv, rd.resp, res)
}

// lzID is a value's tag: what names its write.
func lzID(v []byte) string {
	if i := bytes.IndexByte(v, '|'); i >= 0 {
		return string(v[:i])
	}
	return string(v)
}

// lzAudit runs v's workload, restarts, runs it again, restarts, and checks
// the history.
func lzAudit(t *testing.T, v lzVariant) {
	seed := envSeed(t, "RINGPIPE_LINZ_SEED")
	r := &lzRun{t: t, v: v, seed: seed, bad: make(map[string][]string)}
	r.cfg, r.disk = v.config(t, seed)
	r.e = start(t, r.cfg)
	rng := rand.New(rand.NewSource(seed))
	for s := range lzSpaces {
		r.spaces[s] = createSpace(t, r.e, fmt.Sprintf("linz%d", s), lzSpec.Dims, lzSpec.Bits)
		pool := raPool(rng, lzSpec, lzPerSpace)
		require.Len(t, pool, lzPerSpace, "precondition: distinct points")
		r.index[s] = make(map[pkey]int)
		for i, p := range pool {
			r.points[s*lzPerSpace+i] = p
			r.index[s][keyOf(p)] = s*lzPerSpace + i
		}
	}
	if v.slow != nil {
		v.slow(r.disk, r.spaces[0])
	}
	ops := v.ops
	if memSoak() {
		ops *= 10
	}
	r.run(v.goroutines, ops, false)
	r.restart(false)
	r.run(v.goroutines, ops/2, true)
	r.restart(false)
	r.run(v.goroutines, ops/2, false)
	r.restart(v.powerLoss)
	r.addStats()
	stop(t, r.e)
	r.recheckViews("after the last Stop")

	r.check()
	r.report()
	if v.expect != nil {
		v.expect(t, r.stats)
	}
}

// run runs one phase: goroutines workers of ops operations each. With
// racing set, Stop is called once half the operations are done, and each
// worker ends at the first call that says ErrStopped.
func (r *lzRun) run(goroutines, ops int, racing bool) {
	r.phase++
	r.racing = racing
	defer func() { r.racing = false }()
	base := r.progress.Load()
	hs := make([]lzHist, goroutines)
	var wg sync.WaitGroup
	stopFlap, flapped := make(chan struct{}), make(chan struct{})
	if r.v.flap != nil {
		go func() {
			defer close(flapped)
			r.v.flap(r, rand.New(rand.NewSource(r.seed+int64(r.phase))), stopFlap)
		}()
	} else {
		close(flapped)
	}
	for g := range goroutines {
		wg.Go(func() {
			w := &lzWorker{r: r, g: g, rng: rand.New(rand.NewSource(r.seed*1000 + int64(r.phase)*100 + int64(g)))}
			for range ops {
				if w.stopped {
					break
				}
				w.step()
				w.resolve(false)
				r.progress.Add(1)
			}
			w.resolve(true)
			hs[g] = w.hist
		})
	}
	done := lcDone(&wg)
	if racing {
		half := base + int64(goroutines*ops/2)
		for waiting := true; waiting && r.progress.Load() < half; {
			select {
			case <-done:
				waiting = false
			case <-time.After(time.Millisecond):
			}
		}
		ctx, cancel := lzOpCtx()
		r.stopInv.Store(r.tick())
		err := r.e.Stop(ctx)
		t := r.tick()
		cancel()
		r.t.Logf("phase %d: Stop invoked at %d after %d operations, returned %v at %d", r.phase, r.stopInv.Load(), r.progress.Load()-base, err, t)
		if err != nil {
			r.violate(lzErr, "Stop racing the workload: %v", err)
		}
	}
	r.await(fmt.Sprintf("phase %d", r.phase), done)
	close(stopFlap)
	lcWait(r.t, "the flapper", flapped)
	for i := range hs {
		r.hist.merge(&hs[i])
	}
}

// await waits for done while operations keep completing.
func (r *lzRun) await(what string, done <-chan struct{}) {
	last := r.progress.Load()
	tick := time.NewTicker(lzQuiet)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			if now := r.progress.Load(); now != last {
				last = now
				continue
			}
			r.t.Fatalf("%s: no operation completed in %v (seed %d); goroutines:\n%s", what, lzQuiet, r.seed, goroutineDump())
		}
	}
}

func (r *lzRun) addStats() {
	st := r.e.Stats()
	r.stats.DirectWrites += st.DirectWrites
	r.stats.StagedWrites += st.StagedWrites
	r.stats.Promoted += st.Promoted
	r.stats.SealedBlocks += st.SealedBlocks
	r.t.Logf("phase %d, engine %p: stats %+v", r.phase, r.e, st)
}

// restart stops the engine (or cuts its power), asks every View kept so
// far again, starts the next engine, checks (h) and asks the Views once
// more.
func (r *lzRun) restart(powerLoss bool) {
	t := r.t
	r.addStats()
	if powerLoss {
		t.Logf("phase %d: power loss", r.phase)
		r.disk.PowerLoss(rand.New(rand.NewSource(r.seed)))
		sctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		_ = r.e.Stop(sctx) // the process is dead: only release what it held
		cancel()
		r.viewsFrom = len(r.hist.views)
	} else {
		stop(t, r.e) // after a racing Stop, the second call returns nil
		r.recheckViews(fmt.Sprintf("after Stop %d", r.phase))
	}
	r.e = start(t, r.cfg)
	r.tick() // everything before the Stop returned before anything after
	for s, sp := range r.spaces {
		found := false
		for _, info := range r.e.Spaces() {
			found = found || info.ID == sp
		}
		require.True(t, found, "space %d (linz%d) is there after restart", sp, s)
	}
	r.checkRestart()
	r.recheckViews(fmt.Sprintf("after Start %d", r.phase))
}

// checkRestart is (h): right after a Start, each point's Get is its
// highest-revision acknowledged write, or a newer write whose outcome the
// caller did not learn, whole. Every write before the Stop has returned or
// been resolved. The reads join the history; a full Scan of each space
// must agree.
func (r *lzRun) checkRestart() {
	t := r.t
	ctx := ctxFor(t)
	byID := make(map[string]*lzWrite)
	var last [lzPoints]*lzWrite
	var cutDel [lzPoints]bool
	for _, w := range r.hist.writes {
		cutDel[w.pi] = cutDel[w.pi] || (w.del() && w.status == lzUnknown)
		if w.id != "" {
			byID[w.id] = w
		}
		if w.status == lzAcked && (last[w.pi] == nil || w.rev > last[w.pi].rev) {
			last[w.pi] = w
		}
	}
	var got [lzPoints]lzAnswer
	for pi := range lzPoints {
		rd := &lzRead{what: fmt.Sprintf("Get after Start %d", r.phase), g: -1, pi: pi}
		rd.inv = r.tick()
		rec, err := r.e.Get(ctx, r.space(pi), r.points[pi])
		rd.resp = r.tick()
		if !r.noteRead(rd, rec, err) {
			continue
		}
		r.hist.reads = append(r.hist.reads, rd)
		got[pi] = lzAnswer{found: rd.found, rev: rd.rev, val: rd.val}
		want := last[pi]
		switch {
		case !rd.found && (want == nil || want.del() || cutDel[pi]):
		case !rd.found:
			r.violate(lzH, "%s: the newest acknowledged write is %s", r.rdesc(rd), r.wdesc(want))
		case want != nil && rd.rev == want.rev && bytes.Equal(rd.val, want.val):
		case want != nil && rd.rev <= want.rev:
			r.violate(lzH, "%s: the newest acknowledged write is %s", r.rdesc(rd), r.wdesc(want))
		default:
			// Newer than every acknowledged write: only a write whose
			// outcome is unknown, whole.
			w := byID[lzID(rd.val)]
			if w == nil || w.status != lzUnknown || w.pi != pi || !bytes.Equal(w.val, rd.val) {
				newest := "none"
				if want != nil {
					newest = r.wdesc(want)
				}
				r.violate(lzH, "%s: newer than the newest acknowledged write (%s) and not a write of unknown outcome", r.rdesc(rd), newest)
			}
		}
	}
	for s, sp := range r.spaces {
		var recs []ringpipe.Record
		require.NoError(t, r.e.Scan(ctx, sp, fullBox(lzSpec), func(rec ringpipe.Record) bool {
			recs = append(recs, rec)
			return true
		}), "Scan after Start")
		seen := r.checkScanRecords(fmt.Sprintf("Scan after Start %d", r.phase), s, fullBox(lzSpec), recs)
		for i := range lzPerSpace {
			pi := s*lzPerSpace + i
			rec, ok := seen[pi]
			if ok != got[pi].found || (ok && (rec.Revision != got[pi].rev || !bytes.Equal(rec.Value, got[pi].val))) {
				r.violate(lzG, "after Start %d at %s: Scan shows %v (rev %d), Get showed found=%v rev %d", r.phase, r.pname(pi), ok, rec.Revision, got[pi].found, got[pi].rev)
			}
		}
	}
}

// recheckViews asks every View kept so far again: same answers.
func (r *lzRun) recheckViews(when string) {
	rng := rand.New(rand.NewSource(r.seed + int64(r.phase)))
	for _, vw := range r.hist.views[r.viewsFrom:] {
		r.askAgain(vw, rng, -1, when)
	}
}

// noteRead fills rd from a Get's result and checks the record's fields; it
// reports whether rd is a read to keep (false: an error, noted).
func (r *lzRun) noteRead(rd *lzRead, rec ringpipe.Record, err error) bool {
	switch {
	case errors.Is(err, ringpipe.ErrNotFound):
		return true
	case err != nil:
		r.violate(lzErr, "%s at %s: %v", rd.what, r.pname(rd.pi), err)
		return false
	}
	rd.found, rd.rev, rd.val = true, rec.Revision, rec.Value
	if rec.Space != r.space(rd.pi) || !slices.Equal(rec.Point, r.points[rd.pi]) || rec.Tombstone || rec.Value == nil {
		r.violate(lzD, "%s: record says space %d point %v tombstone %v value nil %v", r.rdesc(rd), rec.Space, rec.Point, rec.Tombstone, rec.Value == nil)
		rd.bad = true
	}
	return true
}

// checkScanRecords checks one Scan's records of space s over box (g):
// points the audit writes, inside box, strictly ascending Hilbert key (so
// each point once), no tombstone. It returns them by point.
func (r *lzRun) checkScanRecords(what string, s int, box ringpipe.Box, recs []ringpipe.Record) map[int]ringpipe.Record {
	out := make(map[int]ringpipe.Record, len(recs))
	var lastKey uint64
	for i, rec := range recs {
		key := snapshot.Key(rec.Point, lzSpec.Dims, lzSpec.Bits)
		pi, known := r.index[s][keyOf(rec.Point)]
		switch {
		case rec.Space != r.spaces[s]:
			r.violate(lzG, "%s of space %d box %v: record %d is of space %d", what, r.spaces[s], box, i, rec.Space)
		case !known:
			r.violate(lzG, "%s of space %d box %v: record %d at %v, a point never written", what, r.spaces[s], box, i, rec.Point)
		case !inBox(rec.Point, box):
			r.violate(lzG, "%s of space %d box %v: record %d at %v is outside the box", what, r.spaces[s], box, i, rec.Point)
		case rec.Tombstone || rec.Value == nil:
			r.violate(lzG, "%s of space %d box %v: record %d at %v is a tombstone", what, r.spaces[s], box, i, rec.Point)
		case i > 0 && key <= lastKey:
			r.violate(lzG, "%s of space %d box %v: record %d at %v (key %d) after key %d: not in key order, or twice", what, r.spaces[s], box, i, rec.Point, key, lastKey)
		default:
			out[pi] = rec
		}
		lastKey = key
	}
	return out
}

// askAgain asks a kept View again (f): every Get, Revision and a Scan of a
// random box give its first answers.
func (r *lzRun) askAgain(vw *lzView, rng *rand.Rand, g int, when string) {
	if rev := vw.v.Revision(); rev != vw.snap.viewRev {
		r.violate(lzF, "View of g%d taken at [%d, %d], asked by g%d %s: Revision %d, was %d", vw.snap.g, vw.snap.inv, vw.snap.resp, g, when, rev, vw.snap.viewRev)
	}
	for pi := range lzPoints {
		rec, err := vw.v.Get(r.space(pi), r.points[pi])
		var a lzAnswer
		switch {
		case errors.Is(err, ringpipe.ErrNotFound):
		case err != nil:
			r.violate(lzF, "View of g%d taken at [%d, %d], asked by g%d %s: Get %s: %v", vw.snap.g, vw.snap.inv, vw.snap.resp, g, when, r.pname(pi), err)
			continue
		default:
			a = lzAnswer{found: true, rev: rec.Revision, val: rec.Value}
		}
		if want := vw.answers[pi]; a.found != want.found || a.rev != want.rev || !bytes.Equal(a.val, want.val) {
			r.violate(lzF, "View of g%d taken at [%d, %d], asked by g%d %s: Get %s is found=%v rev %d %q, was found=%v rev %d %q",
				vw.snap.g, vw.snap.inv, vw.snap.resp, g, when, r.pname(pi), a.found, a.rev, lzID(a.val), want.found, want.rev, lzID(want.val))
		}
	}
	r.viewScan(vw, rng, fmt.Sprintf("View.Scan by g%d %s", g, when))
}

// viewScan scans a random box of a random space through vw and checks the
// result against vw's Get answers (g).
func (r *lzRun) viewScan(vw *lzView, rng *rand.Rand, what string) {
	s := rng.Intn(lzSpaces)
	box := raBox(rng, lzSpec, r.points[s*lzPerSpace:(s+1)*lzPerSpace])
	var recs []ringpipe.Record
	if err := vw.v.Scan(r.spaces[s], box, func(rec ringpipe.Record) bool {
		recs = append(recs, rec)
		return true
	}); err != nil {
		r.violate(lzErr, "%s: %v", what, err)
		return
	}
	seen := r.checkScanRecords(what, s, box, recs)
	for i := range lzPerSpace {
		pi := s*lzPerSpace + i
		if !inBox(r.points[pi], box) {
			continue
		}
		rec, ok := seen[pi]
		want := vw.answers[pi]
		if ok != want.found || (ok && (rec.Revision != want.rev || !bytes.Equal(rec.Value, want.val))) {
			r.violate(lzG, "%s (View of g%d taken at [%d, %d]) box %v at %s: Scan found=%v rev %d %q, View.Get found=%v rev %d %q",
				what, vw.snap.g, vw.snap.inv, vw.snap.resp, box, r.pname(pi), ok, rec.Revision, lzID(rec.Value), want.found, want.rev, lzID(want.val))
		}
	}
}

// ---------------------------------------------------------------------
// The workload.

// lzWorker is one goroutine of a phase.
type lzWorker struct {
	r       *lzRun
	g       int
	rng     *rand.Rand
	n       int
	hist    lzHist
	kept    []*lzView
	pending []*lzWrite // PutAsync writes whose Wait was cut by its ctx
	stopped bool       // a call said ErrStopped (racing phase): the worker ends
}

// cut says whether err is what a call may return as things are: allowed
// (or wrapping it), or ErrStopped while a racing Stop runs, which ends the
// worker.
func (w *lzWorker) cut(err, allowed error) bool {
	if allowed != nil && errors.Is(err, allowed) {
		return true
	}
	if w.r.racing && errors.Is(err, ringpipe.ErrStopped) {
		w.stopped = true
		return true
	}
	return false
}

// drained checks a PutAsync whose ticket failed: if its ticket came
// before Stop was invoked, the write was accepted, and API.md's Stop
// "drains and acknowledges what was accepted".
func (w *lzWorker) drained(wr *lzWrite, err error) {
	if si := w.r.stopInv.Load(); wr.queued != 0 && si != 0 && wr.queued < si && errors.Is(err, ringpipe.ErrStopped) {
		w.r.violate(lzDrain, "%s: ticket returned at %d, before Stop was invoked at %d, says %v", w.r.wdesc(wr), wr.queued, si, err)
	}
}

func (w *lzWorker) step() {
	switch x := w.rng.Intn(1000); {
	case x < 190:
		w.write("Put")
	case x < 270:
		w.write("Delete")
	case x < 380:
		w.write("PutAsync")
	case x < 410:
		w.cutPut()
	case x < 440:
		w.cutAsync()
	case x < 455:
		w.cancelled()
	case x < 690:
		w.get()
	case x < 770:
		w.scan()
	case x < 880:
		w.view()
	case x < 970:
		w.reask()
	case x < 990:
		w.sync()
	default:
		w.flush()
	}
}

func lzOpCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), opTimeout)
}

// value is a new unique value: its tag, '|', and padding (now and then a
// few KiB, across sector and page boundaries).
func (w *lzWorker) value() (string, []byte) {
	w.n++
	id := fmt.Sprintf("p%d.g%d.%d", w.r.phase, w.g, w.n)
	pad := w.rng.Intn(48)
	if w.rng.Intn(20) == 0 {
		pad = 512 + w.rng.Intn(4096)
	}
	v := make([]byte, 0, len(id)+1+pad)
	v = append(v, id...)
	v = append(v, '|')
	for i := range pad {
		v = append(v, byte('a'+(i+w.n)%26))
	}
	return id, v
}

func (w *lzWorker) newWrite(what string, del bool) *lzWrite {
	wr := &lzWrite{what: what, g: w.g, pi: w.rng.Intn(lzPoints)}
	if !del {
		wr.id, wr.val = w.value()
	}
	w.hist.writes = append(w.hist.writes, wr)
	return wr
}

// settle records a write's outcome; an error is expected only when it is
// (or wraps) allowed.
func (w *lzWorker) settle(wr *lzWrite, rev ringpipe.Revision, err, allowed error) {
	if err == nil {
		wr.rev, wr.status = rev, lzAcked
		if rev == 0 {
			w.r.violate(lzA, "%s: revision 0", w.r.wdesc(wr))
		}
		return
	}
	wr.resp, wr.status, wr.err = lzForever, lzUnknown, err
	w.drained(wr, err)
	if !w.cut(err, allowed) {
		w.r.violate(lzErr, "%s: %v", w.r.wdesc(wr), err)
	}
}

// write is a Put, Delete or PutAsync+Wait with a ctx that outlasts it.
func (w *lzWorker) write(what string) {
	r := w.r
	wr := w.newWrite(what, what == "Delete")
	sp, p := r.space(wr.pi), r.points[wr.pi]
	ctx, cancel := lzOpCtx()
	defer cancel()
	var rev ringpipe.Revision
	var err error
	wr.inv = r.tick()
	switch what {
	case "Put":
		rev, err = r.e.Put(ctx, sp, p, wr.val)
	case "Delete":
		rev, err = r.e.Delete(ctx, sp, p)
	case "PutAsync":
		var tk *ringpipe.Ticket
		if tk, err = r.e.PutAsync(ctx, sp, p, wr.val); err == nil {
			wr.queued = r.tick()
			rev, err = tk.Wait(ctx)
		}
	}
	wr.resp = r.tick()
	w.settle(wr, rev, err, nil)
}

// cutPut is a Put or Delete whose ctx ends after a few microseconds: it
// returns a revision, or ctx's error and the write may land or not. A read
// names such a Put by its value; such a Delete's tombstone has no name, so
// the checker lets it explain an ErrNotFound it cannot place otherwise.
func (w *lzWorker) cutPut() {
	r := w.r
	del := w.rng.Intn(5) == 0
	what := "Put (cut)"
	if del {
		what = "Delete (cut)"
	}
	wr := w.newWrite(what, del)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(w.rng.Intn(400))*time.Microsecond)
	defer cancel()
	var rev ringpipe.Revision
	var err error
	wr.inv = r.tick()
	if del {
		rev, err = r.e.Delete(ctx, r.space(wr.pi), r.points[wr.pi])
	} else {
		rev, err = r.e.Put(ctx, r.space(wr.pi), r.points[wr.pi], wr.val)
	}
	wr.resp = r.tick()
	w.settle(wr, rev, err, context.DeadlineExceeded)
}

// cutAsync is a PutAsync whose Wait's ctx is cancelled at once: the write
// is queued, so its ticket tells its outcome later (resolve).
func (w *lzWorker) cutAsync() {
	r := w.r
	wr := w.newWrite("PutAsync (Wait cut)", false)
	ctx, cancel := context.WithCancel(context.Background())
	wr.inv = r.tick()
	tk, err := r.e.PutAsync(ctx, r.space(wr.pi), r.points[wr.pi], wr.val)
	if err != nil {
		cancel()
		wr.resp = r.tick()
		w.settle(wr, 0, err, nil)
		return
	}
	wr.queued = r.tick()
	cancel()
	rev, err := tk.Wait(ctx)
	wr.resp = r.tick()
	w.settle(wr, rev, err, context.Canceled)
	if errors.Is(err, context.Canceled) {
		wr.tk = tk
		w.pending = append(w.pending, wr)
	}
}

// resolve learns the outcome of cut PutAsyncs whose tickets are done (all
// of them, waiting, when block is set). The response time is when the
// outcome was seen: no earlier than the write's real completion.
func (w *lzWorker) resolve(block bool) {
	left := w.pending[:0]
	for _, wr := range w.pending {
		if !block && !isDone(wr.tk) {
			left = append(left, wr)
			continue
		}
		ctx, cancel := lzOpCtx()
		rev, err := wr.tk.Wait(ctx)
		cancel()
		seen := w.r.tick()
		wr.tk = nil
		if err == nil {
			wr.rev, wr.status, wr.resp, wr.err = rev, lzAcked, seen, nil
			continue
		}
		wr.err = err
		w.drained(wr, err)
		if !w.cut(err, nil) {
			w.r.violate(lzErr, "%s: its ticket says %v", w.r.wdesc(wr), err)
		}
	}
	w.pending = left
}

// cancelled is a Put, Delete or PutAsync with a ctx cancelled before the
// call: API.md, "a context cancelled before the write is queued means not
// applied".
func (w *lzWorker) cancelled() {
	r := w.r
	kind := w.rng.Intn(3)
	what := [...]string{"Put (cancelled)", "Delete (cancelled)", "PutAsync (cancelled)"}[kind]
	wr := w.newWrite(what, kind == 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	sp, p := r.space(wr.pi), r.points[wr.pi]
	var rev ringpipe.Revision
	var err error
	wr.inv = r.tick()
	switch kind {
	case 0:
		rev, err = r.e.Put(ctx, sp, p, wr.val)
	case 1:
		rev, err = r.e.Delete(ctx, sp, p)
	default:
		var tk *ringpipe.Ticket
		if tk, err = r.e.PutAsync(ctx, sp, p, wr.val); err == nil {
			wctx, wcancel := lzOpCtx()
			rev, err = tk.Wait(wctx)
			wcancel()
		}
	}
	wr.resp = r.tick()
	switch {
	case err == nil:
		wr.rev, wr.status = rev, lzAcked
		r.violate(lzCtx, "%s: applied although its ctx was cancelled before the call", r.wdesc(wr))
	case w.cut(err, context.Canceled):
		wr.status, wr.resp = lzNever, lzForever
	default:
		wr.status, wr.resp = lzNever, lzForever
		r.violate(lzErr, "%s: %v (want context.Canceled)", r.wdesc(wr), err)
	}
}

func (w *lzWorker) get() {
	r := w.r
	rd := &lzRead{what: "Get", g: w.g, pi: w.rng.Intn(lzPoints)}
	ctx, cancel := lzOpCtx()
	defer cancel()
	rd.inv = r.tick()
	rec, err := r.e.Get(ctx, r.space(rd.pi), r.points[rd.pi])
	rd.resp = r.tick()
	if err != nil && w.cut(err, nil) {
		return
	}
	if r.noteRead(rd, rec, err) {
		w.hist.reads = append(w.hist.reads, rd)
	}
}

// scan is an Engine.Scan of a random box: one snapshot of the points
// inside it.
func (w *lzWorker) scan() {
	r := w.r
	s := w.rng.Intn(lzSpaces)
	box := raBox(w.rng, lzSpec, r.points[s*lzPerSpace:(s+1)*lzPerSpace])
	ctx, cancel := lzOpCtx()
	defer cancel()
	var recs []ringpipe.Record
	snap := &lzSnap{what: "Scan", g: w.g}
	snap.inv = r.tick()
	err := r.e.Scan(ctx, r.spaces[s], box, func(rec ringpipe.Record) bool {
		recs = append(recs, rec)
		return true
	})
	snap.resp = r.tick()
	if err != nil && w.cut(err, nil) {
		return
	}
	if err != nil {
		r.violate(lzErr, "Scan g%d of space %d box %v: %v", w.g, r.spaces[s], box, err)
		return
	}
	seen := r.checkScanRecords(fmt.Sprintf("Scan g%d [%d, %d]", w.g, snap.inv, snap.resp), s, box, recs)
	for i := range lzPerSpace {
		pi := s*lzPerSpace + i
		if !inBox(r.points[pi], box) {
			continue
		}
		rd := &lzRead{what: "Scan", g: w.g, pi: pi, inv: snap.inv, resp: snap.resp, snap: snap}
		if rec, ok := seen[pi]; ok {
			rd.found, rd.rev, rd.val = true, rec.Revision, rec.Value
		}
		snap.reads = append(snap.reads, rd)
		w.hist.reads = append(w.hist.reads, rd)
	}
	w.hist.snaps = append(w.hist.snaps, snap)
}

// view takes a View, reads every point through it and scans a box, and
// keeps it to ask again.
func (w *lzWorker) view() {
	r := w.r
	snap := &lzSnap{what: "View", g: w.g, view: true}
	snap.inv = r.tick()
	v := r.e.View()
	snap.resp = r.tick()
	snap.viewRev = v.Revision()
	vw := &lzView{v: v, snap: snap}
	for pi := range lzPoints {
		rd := &lzRead{what: "View.Get", g: w.g, pi: pi, inv: snap.inv, resp: snap.resp, snap: snap}
		rec, err := v.Get(r.space(pi), r.points[pi])
		if !r.noteRead(rd, rec, err) {
			continue
		}
		if rd.found && rd.rev > snap.viewRev {
			r.violate(lzF, "%s: above the View's Revision %d", r.rdesc(rd), snap.viewRev)
		}
		vw.answers[pi] = lzAnswer{found: rd.found, rev: rd.rev, val: rd.val}
		snap.reads = append(snap.reads, rd)
		w.hist.reads = append(w.hist.reads, rd)
	}
	w.hist.snaps = append(w.hist.snaps, snap)
	r.viewScan(vw, w.rng, fmt.Sprintf("View.Scan g%d", w.g))
	if len(w.kept) < lzKeep {
		w.kept = append(w.kept, vw)
		w.hist.views = append(w.hist.views, vw)
	} else if w.rng.Intn(2) == 0 {
		w.kept[w.rng.Intn(lzKeep)] = vw
		w.hist.views = append(w.hist.views, vw)
	}
}

// reask asks one of the goroutine's kept Views again while writes go on.
func (w *lzWorker) reask() {
	if len(w.kept) == 0 {
		w.view()
		return
	}
	w.r.askAgain(w.kept[w.rng.Intn(len(w.kept))], w.rng, w.g, "later")
}

func (w *lzWorker) sync() {
	ctx, cancel := lzOpCtx()
	defer cancel()
	if err := w.r.e.Sync(ctx); err != nil && !w.cut(err, nil) {
		w.r.violate(lzErr, "Sync g%d: %v", w.g, err)
	}
}

func (w *lzWorker) flush() {
	ctx, cancel := lzOpCtx()
	defer cancel()
	sp := w.r.spaces[w.rng.Intn(lzSpaces)]
	if err := w.r.e.Flush(ctx, sp); err != nil && !w.cut(err, nil) {
		w.r.violate(lzErr, "Flush g%d space %d: %v", w.g, sp, err)
	}
}

// ---------------------------------------------------------------------
// The checker.

// lzPointIdx indexes the writes of one point (or of all points) for the
// real-time questions.
type lzPointIdx struct {
	// acked are the acknowledged writes by response time; ackedMax[i] is
	// the one of highest revision among acked[:i+1].
	acked    []*lzWrite
	ackedMax []*lzWrite
	// known are the writes whose revision is known, by invocation time;
	// knownMin[i] is the one of lowest revision among known[i:].
	known    []*lzWrite
	knownMin []*lzWrite
	// dels are the point's known Deletes by revision.
	dels []*lzWrite
	// cutDel is the earliest invoked Delete of unknown outcome (cut by its
	// ctx or by Stop): its tombstone, if it landed, has a revision nobody
	// knows.
	cutDel *lzWrite
}

func newLzPointIdx(ws []*lzWrite) *lzPointIdx {
	x := &lzPointIdx{}
	for _, w := range ws {
		if w.del() && w.status == lzUnknown && (x.cutDel == nil || w.inv < x.cutDel.inv) {
			x.cutDel = w
		}
		if w.rev == 0 {
			continue
		}
		x.known = append(x.known, w)
		if w.status == lzAcked {
			x.acked = append(x.acked, w)
		}
		if w.del() {
			x.dels = append(x.dels, w)
		}
	}
	slices.SortFunc(x.acked, func(a, b *lzWrite) int { return cmp.Compare(a.resp, b.resp) })
	slices.SortFunc(x.known, func(a, b *lzWrite) int { return cmp.Compare(a.inv, b.inv) })
	slices.SortFunc(x.dels, func(a, b *lzWrite) int { return cmp.Compare(a.rev, b.rev) })
	x.ackedMax = make([]*lzWrite, len(x.acked))
	for i, w := range x.acked {
		x.ackedMax[i] = w
		if i > 0 && x.ackedMax[i-1].rev > w.rev {
			x.ackedMax[i] = x.ackedMax[i-1]
		}
	}
	x.knownMin = make([]*lzWrite, len(x.known))
	for i := len(x.known) - 1; i >= 0; i-- {
		x.knownMin[i] = x.known[i]
		if i+1 < len(x.known) && x.knownMin[i+1].rev < x.known[i].rev {
			x.knownMin[i] = x.knownMin[i+1]
		}
	}
	return x
}

// before is the acknowledged write of highest revision that returned
// before time at, or nil.
func (x *lzPointIdx) before(at int64) *lzWrite {
	i := sort.Search(len(x.acked), func(i int) bool { return x.acked[i].resp >= at })
	if i == 0 {
		return nil
	}
	return x.ackedMax[i-1]
}

// after is the known write of lowest revision invoked after time at, or
// nil.
func (x *lzPointIdx) after(at int64) *lzWrite {
	i := sort.Search(len(x.known), func(i int) bool { return x.known[i].inv > at })
	if i == len(x.known) {
		return nil
	}
	return x.knownMin[i]
}

// absent is the lowest version (0: no write yet, else a Delete's revision)
// in [lo, hi) at which the point reads ErrNotFound; ok false if none.
// hi 0 is no bound.
func (x *lzPointIdx) absent(lo, hi ringpipe.Revision) (ringpipe.Revision, bool) {
	if lo == 0 {
		return 0, true
	}
	i := sort.Search(len(x.dels), func(i int) bool { return x.dels[i].rev >= lo })
	if i == len(x.dels) || (hi != 0 && x.dels[i].rev >= hi) {
		return 0, false
	}
	return x.dels[i].rev, true
}

// cutBefore says whether a Delete of unknown outcome was invoked before
// time at: it may explain an ErrNotFound. Its revision unknown, the read
// is then placed at the lowest version it may be, below any known Delete
// that would explain it too (a sound, weaker check).
func (x *lzPointIdx) cutBefore(at int64) bool { return x.cutDel != nil && x.cutDel.inv < at }

func lzRev(w *lzWrite) ringpipe.Revision {
	if w == nil {
		return 0
	}
	return w.rev
}

// check checks the whole history.
func (r *lzRun) check() {
	h := &r.hist
	byID := make(map[string]*lzWrite)
	byRev := make(map[ringpipe.Revision]*lzWrite)
	claim := func(w *lzWrite, rev ringpipe.Revision) {
		if o := byRev[rev]; o != nil && o != w {
			r.violate(lzA, "revision %d given to %s and to %s", rev, r.wdesc(o), r.wdesc(w))
			return
		}
		byRev[rev] = w
	}
	for _, w := range h.writes {
		if w.id != "" {
			byID[w.id] = w
		}
		if w.status == lzAcked {
			claim(w, w.rev)
		}
	}

	// (d): each value read names its write; a write of unknown outcome
	// gets the revision read with it.
	for _, rd := range h.reads {
		if !rd.found || rd.bad {
			continue
		}
		w := byID[lzID(rd.val)]
		switch {
		case w == nil:
			r.violate(lzD, "%s: a value nobody wrote (%d bytes)", r.rdesc(rd), len(rd.val))
		case w.pi != rd.pi:
			r.violate(lzD, "%s: the value of %s", r.rdesc(rd), r.wdesc(w))
		case !bytes.Equal(w.val, rd.val):
			r.violate(lzD, "%s: %d bytes, but %s wrote %d (torn)", r.rdesc(rd), len(rd.val), r.wdesc(w), len(w.val))
		case w.status == lzNever:
			r.violate(lzCtx, "%s: shows %s, whose ctx was cancelled before the call", r.rdesc(rd), r.wdesc(w))
		case w.status == lzUnknown && w.rev == 0:
			w.rev = rd.rev
			claim(w, rd.rev)
			continue
		case w.rev != rd.rev:
			r.violate(lzD, "%s: the value of %s", r.rdesc(rd), r.wdesc(w))
		default:
			continue
		}
		rd.bad = true
	}

	var byPoint [lzPoints][]*lzWrite
	var readsAt [lzPoints][]*lzRead
	for _, w := range h.writes {
		byPoint[w.pi] = append(byPoint[w.pi], w)
	}
	for _, rd := range h.reads {
		if !rd.bad {
			readsAt[rd.pi] = append(readsAt[rd.pi], rd)
		}
	}
	var idx [lzPoints]*lzPointIdx
	for pi := range lzPoints {
		idx[pi] = newLzPointIdx(byPoint[pi])
		r.checkWrites(idx[pi], lzB, func(a, b *lzWrite) bool { return true })
		r.checkReads(idx[pi], readsAt[pi])
	}
	all := newLzPointIdx(h.writes)
	r.checkWrites(all, lzB2, func(a, b *lzWrite) bool { return a.pi != b.pi })
	r.checkSnaps(h.snaps, idx, all, byRev)
}

// checkWrites is (b): a known write invoked after an acknowledged one
// returned has a higher revision. only picks the pairs to report.
func (r *lzRun) checkWrites(x *lzPointIdx, check string, only func(a, b *lzWrite) bool) {
	for _, w := range x.known {
		if p := x.before(w.inv); p != nil && p.rev >= w.rev && only(p, w) {
			r.violate(check, "%s was invoked after %s returned, with a revision not above it", r.wdesc(w), r.wdesc(p))
		}
	}
}

// checkReads is (c) and (e) at one point: reads by response time, each
// placed at the lowest version it may show given the reads that returned
// before it was invoked.
func (r *lzRun) checkReads(x *lzPointIdx, reads []*lzRead) {
	slices.SortStableFunc(reads, func(a, b *lzRead) int { return cmp.Compare(a.resp, b.resp) })
	type placed struct {
		rev ringpipe.Revision
		rd  *lzRead
	}
	maxTo := make([]placed, len(reads)) // the highest placement among reads[:i+1]
	for j, rd := range reads {
		k := sort.Search(j, func(i int) bool { return reads[i].resp >= rd.inv })
		var prev placed
		if k > 0 {
			prev = maxTo[k-1]
		}
		lo := x.before(rd.inv)
		hi := x.after(rd.resp)
		var at ringpipe.Revision
		if rd.found {
			at = rd.rev
			switch {
			case lo != nil && at < lo.rev:
				r.violate(lzC, "%s: older than %s, which returned before the read was invoked", r.rdesc(rd), r.wdesc(lo))
			case hi != nil && at >= hi.rev:
				r.violate(lzC, "%s: %s was invoked only after the read returned, with a revision not above it", r.rdesc(rd), r.wdesc(hi))
			case prev.rd != nil && at < prev.rev:
				r.violate(lzE, "%s: older than %s (placed at version %d), which returned before this read was invoked", r.rdesc(rd), r.rdesc(prev.rd), prev.rev)
			}
		} else {
			v, ok := x.absent(max(lzRev(lo), prev.rev), lzRev(hi))
			if x.cutBefore(rd.resp) {
				// The cut Delete may sit just above both bounds, below
				// any known Delete: the lowest placement (sound).
				v, ok = max(lzRev(lo), prev.rev), true
			}
			if !ok {
				if _, ok := x.absent(lzRev(lo), lzRev(hi)); !ok {
					r.violate(lzC, "%s: %s returned before the read was invoked, and no Delete at or after it fits", r.rdesc(rd), r.wdesc(lo))
				} else {
					r.violate(lzE, "%s: ErrNotFound, but %s (placed at version %d) returned before this read was invoked, and no Delete at or after that fits", r.rdesc(rd), r.rdesc(prev.rd), prev.rev)
				}
				v = max(lzRev(lo), prev.rev)
			}
			at = v
		}
		maxTo[j] = placed{rev: at, rd: rd}
		if j > 0 && maxTo[j-1].rev > at {
			maxTo[j] = maxTo[j-1]
		}
	}
}

// checkSnaps is the snapshot half of (f): a View or Scan that shows a write
// W stands at a time no earlier than W's invocation, so every write that
// returned before then is in it (at its point, it or a newer version); and
// a View's Revision covers every write acknowledged before it was taken.
func (r *lzRun) checkSnaps(snaps []*lzSnap, idx [lzPoints]*lzPointIdx, all *lzPointIdx, byRev map[ringpipe.Revision]*lzWrite) {
	for _, s := range snaps {
		if s.view {
			if w := all.before(s.inv); w != nil && w.rev > s.viewRev {
				r.violate(lzF2, "View of g%d taken at [%d, %d] has Revision %d, below %s, acknowledged before it was taken",
					s.g, s.inv, s.resp, s.viewRev, r.wdesc(w))
			}
		}
		at, why := s.inv, (*lzWrite)(nil)
		for _, rd := range s.reads {
			if w := byRev[rd.rev]; rd.found && !rd.bad && w != nil && w.inv > at {
				at, why = w.inv, w
			}
		}
		if why == nil {
			continue // what is left is each read's own (c)
		}
		for _, rd := range s.reads {
			lo := idx[rd.pi].before(at)
			if lo == nil || rd.bad {
				continue
			}
			if rd.found && rd.rev < lo.rev {
				r.violate(lzF2, "%s of g%d at [%d, %d] shows %s, but at %s rev %d, older than %s, which returned before that write was invoked",
					s.what, s.g, s.inv, s.resp, r.wdesc(why), r.pname(rd.pi), rd.rev, r.wdesc(lo))
			}
			if _, ok := idx[rd.pi].absent(lo.rev, lzRev(idx[rd.pi].after(rd.resp))); !rd.found && !ok && !idx[rd.pi].cutBefore(rd.resp) {
				r.violate(lzF2, "%s of g%d at [%d, %d] shows %s, but ErrNotFound at %s, where %s returned before that write was invoked",
					s.what, s.g, s.inv, s.resp, r.wdesc(why), r.pname(rd.pi), r.wdesc(lo))
			}
		}
	}
}

// report logs what the history holds and fails the test with the
// violations found, by check.
func (r *lzRun) report() {
	var acked, unknown, seen, never, dels int
	for _, w := range r.hist.writes {
		switch w.status {
		case lzAcked:
			acked++
		case lzUnknown:
			unknown++
			if w.rev != 0 {
				seen++
			}
		case lzNever:
			never++
		}
		if w.del() {
			dels++
		}
	}
	r.t.Logf("history: %d writes (%d acknowledged, %d deletes, %d of unknown outcome of which %d seen, %d cancelled before the call), %d reads, %d snapshots, %d Views kept; engines' stats %+v",
		len(r.hist.writes), acked, dels, unknown, seen, never, len(r.hist.reads), len(r.hist.snaps), len(r.hist.views), r.stats)
	checks := make([]string, 0, len(r.bad))
	for c := range r.bad {
		checks = append(checks, c)
	}
	slices.Sort(checks)
	for _, c := range checks {
		msgs := r.bad[c]
		shown := msgs[:min(len(msgs), lzShown)]
		r.t.Errorf("VIOLATION %s: %d case(s) (seed %d, replay RINGPIPE_LINZ_SEED=%d):\n  %s",
			c, len(msgs), r.seed, r.seed, strings.Join(shown, "\n  "))
	}
}

// ---------------------------------------------------------------------
// The variants.

func lzReal(sealThreshold int) func(t *testing.T, seed int64) (ringpipe.Config, *sim.Disk) {
	return func(t *testing.T, seed int64) (ringpipe.Config, *sim.Disk) {
		cfg := realConfig(t, ringpipe.BackendAuto)
		cfg.SealThreshold = sealThreshold
		return cfg, nil
	}
}

// lzFlapHot makes space's hot files late now and then: a direct write
// misses its deadline and is staged, its hot copy landing late (Delay) or
// cancelled and performed again (Queued); the space flips between slow
// and fast (iaSlowHot).
func lzFlapHot(disk *sim.Disk, space ringpipe.SpaceID) {
	iaSlowHot(disk, space)
	disk.Inject(sim.Fault{Kind: sim.Queued, Delay: stallDelay, Prob: 0.1, Persist: true,
		Path: hotPrefix(space), Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync, ring.OpWrite, ring.OpWritev}})
}

// TestLinzRealEngine: the workload on a real directory, 8 and 64
// goroutines.
func TestLinzRealEngine(t *testing.T) {
	for _, tc := range []struct {
		name       string
		goroutines int
		ops        int
	}{
		{"goroutines8", 8, 300},
		{"goroutines64", 64, 45},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lzAudit(t, lzVariant{goroutines: tc.goroutines, ops: tc.ops, config: lzReal(0)})
		})
	}
}

// TestLinzSlowSpaceStaged: the first space's hot file stalls (sim) and the
// promoter waits an hour, so its records stay in the staging WAL until a
// Flush promotes them or a restart replays them; the second space writes
// directly.
func TestLinzSlowSpaceStaged(t *testing.T) {
	lzAudit(t, lzVariant{goroutines: 8, ops: 500,
		config: func(t *testing.T, seed int64) (ringpipe.Config, *sim.Disk) {
			disk := newSimDisk(t, seed)
			cfg := simConfig(t, disk)
			cfg.PromoteInterval = time.Hour
			cfg.DirectWriteTimeout = 2 * time.Millisecond
			return cfg, disk
		},
		slow:      stallHot,
		powerLoss: true,
		expect: func(t *testing.T, st ringpipe.Stats) {
			assert.Positive(t, st.StagedWrites, "precondition: writes were staged")
			assert.Positive(t, st.DirectWrites, "precondition: writes went direct")
		},
	})
}

// TestLinzSlowSpaceFlapping: the first space's hot file is late now and
// then (sim), the promoter runs, and SealThreshold 16 seals all the time:
// records move between staged, late copies, promoted, hot and sealed.
func TestLinzSlowSpaceFlapping(t *testing.T) {
	lzAudit(t, lzVariant{goroutines: 8, ops: 500,
		config: func(t *testing.T, seed int64) (ringpipe.Config, *sim.Disk) {
			disk := newSimDisk(t, seed)
			cfg := simConfig(t, disk)
			cfg.SealThreshold = 16
			return cfg, disk
		},
		slow:      lzFlapHot,
		powerLoss: true,
		expect: func(t *testing.T, st ringpipe.Stats) {
			assert.Positive(t, st.StagedWrites, "precondition: writes were staged")
			assert.Positive(t, st.SealedBlocks, "precondition: seals happened")
		},
	})
}

// TestLinzSlowSpaceRealTime: the first space's hot file turns slow and
// fast again in real time while the workload runs (sim): when slow, most
// of its writes and syncs take an hour of virtual time, so their deadline
// fires and they are staged, and slowRing withholds their completions for
// a few real milliseconds, so the late hot copies land while later writes,
// promotions (the promoter runs) and seals (SealThreshold 16) go on.
func TestLinzSlowSpaceRealTime(t *testing.T) {
	ctl := newSlowCtl(prHotKey(1))
	t.Cleanup(ctl.normal)
	lzAudit(t, lzVariant{goroutines: 8, ops: 500,
		config: func(t *testing.T, seed int64) (ringpipe.Config, *sim.Disk) {
			disk := newSimDisk(t, seed)
			cfg := simConfig(t, disk)
			cfg.SealThreshold = 16
			return ctl.config(cfg, disk), disk
		},
		slow: func(disk *sim.Disk, space ringpipe.SpaceID) {
			require.Equal(t, ringpipe.SpaceID(1), space, "precondition: the slowed hot file is the first space's")
		},
		flap: func(r *lzRun, rng *rand.Rand, stop <-chan struct{}) {
			defer func() {
				r.disk.ClearFaults()
				ctl.normal()
			}()
			for slow := true; ; slow = !slow {
				if slow {
					r.disk.Inject(sim.Fault{Kind: sim.Delay, Delay: time.Hour, Prob: 0.7, Persist: true, Path: hotPrefix(r.spaces[0]),
						Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync, ring.OpWrite, ring.OpWritev}})
					ctl.set(prHotKey(1), time.Duration(1+rng.Intn(8))*time.Millisecond)
				} else {
					r.disk.ClearFaults()
					ctl.set(prHotKey(1), 0)
				}
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(5+rng.Intn(25)) * time.Millisecond):
				}
			}
		},
		expect: func(t *testing.T, st ringpipe.Stats) {
			assert.Positive(t, st.StagedWrites, "precondition: writes were staged")
			assert.Positive(t, st.Promoted, "precondition: staged writes were promoted")
			assert.Positive(t, st.SealedBlocks, "precondition: seals happened")
			assert.Positive(t, ctl.withheldOf(prHotKey(1)), "precondition: hot completions were held back in real time")
		},
	})
}

// TestLinzSealEverySixteen: a real directory with SealThreshold 16, so that
// seals run all the time under the readers, at GOMAXPROCS 1 and 8.
func TestLinzSealEverySixteen(t *testing.T) {
	for _, procs := range []int{1, 8} {
		t.Run(fmt.Sprintf("procs%d", procs), func(t *testing.T) {
			withProcs(procs, func() {
				lzAudit(t, lzVariant{goroutines: 8, ops: 300, config: lzReal(16),
					expect: func(t *testing.T, st ringpipe.Stats) {
						assert.Positive(t, st.SealedBlocks, "precondition: seals happened")
					},
				})
			})
		})
	}
}

// ---------------------------------------------------------------------
// The checker itself.

// TestLinzCheckerCatches feeds the checker small made-up histories, each
// with one kind of anomaly (or none), and requires that it names exactly
// the checks broken: a checker that passes everything proves nothing.
func TestLinzCheckerCatches(t *testing.T) {
	type ev struct {
		writes []*lzWrite
		reads  []*lzRead
		snaps  []*lzSnap
	}
	put := func(pi int, tag string, rev ringpipe.Revision, inv, resp int64) *lzWrite {
		return &lzWrite{what: "Put", pi: pi, id: tag, val: []byte(tag + "|x"), inv: inv, resp: resp, rev: rev, status: lzAcked}
	}
	del := func(pi int, rev ringpipe.Revision, inv, resp int64) *lzWrite {
		return &lzWrite{what: "Delete", pi: pi, inv: inv, resp: resp, rev: rev, status: lzAcked}
	}
	unknown := func(w *lzWrite) *lzWrite { w.status, w.rev, w.resp = lzUnknown, 0, lzForever; return w }
	never := func(w *lzWrite) *lzWrite { w.status, w.rev, w.resp = lzNever, 0, lzForever; return w }
	get := func(pi int, inv, resp int64, w *lzWrite, rev ringpipe.Revision) *lzRead {
		rd := &lzRead{what: "Get", pi: pi, inv: inv, resp: resp}
		if w != nil {
			rd.found, rd.rev, rd.val = true, rev, w.val
		}
		return rd
	}
	snap := func(view bool, viewRev ringpipe.Revision, inv, resp int64, reads ...*lzRead) *lzSnap {
		s := &lzSnap{what: "View", view: view, viewRev: viewRev, inv: inv, resp: resp, reads: reads}
		for _, rd := range reads {
			rd.inv, rd.resp, rd.snap = inv, resp, s
		}
		return s
	}
	w1 := put(0, "w1", 1, 1, 2)
	w2 := put(0, "w2", 2, 3, 4)
	wa, wb := put(0, "wa", 1, 5, 6), put(1, "wb", 2, 7, 20)
	cw1, cw2 := put(0, "c1", 1, 1, 10), put(0, "c2", 2, 2, 11)
	d2 := del(0, 2, 3, 10)
	u := unknown(put(0, "u", 0, 1, 0))
	n := never(put(0, "n", 0, 1, 0))
	sa, sb := get(0, 0, 0, nil, 0), get(1, 0, 0, wb, 2)
	for _, tc := range []struct {
		name string
		h    ev
		want []string
	}{
		{"valid", ev{writes: []*lzWrite{w1, w2}, reads: []*lzRead{get(0, 3, 4, w1, 1), get(0, 5, 6, w2, 2)}}, nil},
		{"valid-delete", ev{writes: []*lzWrite{w1, d2}, reads: []*lzRead{get(0, 11, 12, nil, 0), get(0, 0, 1, nil, 0)}}, nil},
		{"valid-unknown-seen", ev{writes: []*lzWrite{u, put(0, "w", 3, 2, 3)}, reads: []*lzRead{get(0, 5, 6, u, 4)}}, nil},
		{"valid-cut-delete", ev{writes: []*lzWrite{w1, unknown(del(0, 0, 3, 0))}, reads: []*lzRead{get(0, 5, 6, nil, 0)}}, nil},
		{"cut-delete-after-read", ev{writes: []*lzWrite{w1, unknown(del(0, 0, 7, 0))}, reads: []*lzRead{get(0, 5, 6, nil, 0)}}, []string{lzC}},
		{"reads-go-back-over-cut-delete", ev{writes: []*lzWrite{w1, w2, unknown(del(0, 0, 5, 0))}, reads: []*lzRead{get(0, 6, 7, nil, 0), get(0, 8, 9, w1, 1)}}, []string{lzC}},
		{"valid-cut-delete-below-known", ev{writes: []*lzWrite{w1, unknown(del(0, 0, 3, 0)), put(0, "w5", 5, 4, 30), del(0, 6, 5, 30)},
			reads: []*lzRead{get(0, 10, 11, nil, 0), get(0, 12, 13, put(0, "w5", 5, 4, 30), 5)}}, nil},
		{"duplicate-revision", ev{writes: []*lzWrite{put(0, "x", 1, 1, 4), put(1, "y", 1, 2, 3)}}, []string{lzA}},
		{"write-order", ev{writes: []*lzWrite{put(0, "x", 5, 1, 2), put(0, "y", 3, 3, 4)}}, []string{lzB}},
		{"write-order-across-points", ev{writes: []*lzWrite{put(0, "x", 5, 1, 2), put(1, "y", 3, 3, 4)}}, []string{lzB2}},
		{"stale-read", ev{writes: []*lzWrite{w1, w2}, reads: []*lzRead{get(0, 5, 6, w1, 1)}}, []string{lzC}},
		{"lost-write", ev{writes: []*lzWrite{w1}, reads: []*lzRead{get(0, 3, 4, nil, 0)}}, []string{lzC}},
		{"future-read", ev{writes: []*lzWrite{put(0, "x", 1, 3, 4)}, reads: []*lzRead{get(0, 1, 2, put(0, "x", 1, 3, 4), 1)}}, []string{lzC}},
		{"unknown-value", ev{writes: []*lzWrite{w1}, reads: []*lzRead{{what: "Get", pi: 0, inv: 3, resp: 4, found: true, rev: 1, val: []byte("zz|")}}}, []string{lzD}},
		{"torn-value", ev{writes: []*lzWrite{w1}, reads: []*lzRead{{what: "Get", pi: 0, inv: 3, resp: 4, found: true, rev: 1, val: []byte("w1|")}}}, []string{lzD}},
		{"wrong-revision", ev{writes: []*lzWrite{w1}, reads: []*lzRead{get(0, 3, 4, w1, 7)}}, []string{lzD}},
		{"wrong-point", ev{writes: []*lzWrite{w1}, reads: []*lzRead{get(1, 3, 4, w1, 1)}}, []string{lzD}},
		{"reads-go-back", ev{writes: []*lzWrite{cw1, cw2}, reads: []*lzRead{get(0, 3, 4, cw2, 2), get(0, 5, 6, cw1, 1)}}, []string{lzE}},
		{"reads-go-back-over-delete", ev{writes: []*lzWrite{w1, d2}, reads: []*lzRead{get(0, 4, 5, nil, 0), get(0, 6, 7, w1, 1)}}, []string{lzE}},
		{"snapshot-mixes-times", ev{writes: []*lzWrite{wa, wb}, reads: []*lzRead{sa, sb}, snaps: []*lzSnap{snap(false, 0, 4, 30, sa, sb)}}, []string{lzF2}},
		{"view-revision-low", ev{writes: []*lzWrite{put(0, "x", 3, 1, 2)}, snaps: []*lzSnap{snap(true, 2, 3, 4)}}, []string{lzF2}},
		{"cancelled-applied", ev{writes: []*lzWrite{n}, reads: []*lzRead{get(0, 3, 4, n, 9)}}, []string{lzCtx}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &lzRun{t: t, bad: make(map[string][]string)}
			for pi := range lzPoints {
				r.spaces[pi/lzPerSpace] = ringpipe.SpaceID(pi/lzPerSpace + 1)
				r.points[pi] = ringpipe.Point{uint32(pi % lzPerSpace), 0}
			}
			// The checker fills in what it learns (a seen write's revision,
			// a bad read): each case gets its own copies.
			ws := make(map[*lzWrite]*lzWrite)
			for _, w := range tc.h.writes {
				c := *w
				ws[w] = &c
				r.hist.writes = append(r.hist.writes, &c)
			}
			rs := make(map[*lzRead]*lzRead)
			for _, rd := range tc.h.reads {
				c := *rd
				rs[rd] = &c
				r.hist.reads = append(r.hist.reads, &c)
			}
			for _, s := range tc.h.snaps {
				c := *s
				c.reads = nil
				for _, rd := range s.reads {
					c.reads = append(c.reads, rs[rd])
				}
				r.hist.snaps = append(r.hist.snaps, &c)
			}
			r.check()
			var got []string
			for c := range r.bad {
				got = append(got, c)
			}
			slices.Sort(got)
			assert.Equal(t, tc.want, got, "checks named: %v", r.bad)
		})
	}
}
