package test

// The lifecycle audit: every public method runs concurrently with Start
// and Stop, under -race, and each test checks a line of API.md about it:
// "Every method is safe for concurrent use. After Stop, writes return
// ErrStopped; reads on a View taken earlier still work.", Stop idempotent
// from several goroutines and bounded by ctx, no goroutine left, every
// acknowledged write kept exactly once and every failed one wholly present
// or wholly absent. The choices of each test come from a seed it prints
// (RINGPIPE_LIFECYCLE_SEED=N replays them; the scheduling is the machine's).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/internal/fdtest"
)

// lcWatchdog bounds a wait for calls that must return (a Stop, the calls
// running while it stops). A healthy run needs a small fraction of it; a
// hang fails the test with every goroutine's stack.
const lcWatchdog = 10 * time.Second

// lcSeed is the test's seed: $RINGPIPE_LIFECYCLE_SEED, or the clock's.
func lcSeed(t *testing.T) int64 { t.Helper(); return envSeed(t, "RINGPIPE_LIFECYCLE_SEED") }

// lcWait waits for done for at most lcWatchdog; then it fails the test
// with what and every goroutine's stack.
func lcWait(t *testing.T, what string, done <-chan struct{}) {
	t.Helper()
	timer := time.NewTimer(lcWatchdog)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		buf := make([]byte, 16<<20)
		t.Fatalf("%s: still waiting after %v; goroutines:\n%s", what, lcWatchdog, buf[:runtime.Stack(buf, true)])
	}
}

// lcDone returns a channel closed once wg's goroutines have returned.
func lcDone(wg *sync.WaitGroup) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}

func lcClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// lcErrors sorts the errors the calls returned into allowed ones (counted
// for the log) and others (each a finding).
type lcErrors struct {
	mu      sync.Mutex
	allowed map[string]int // "op: sentinel" -> count
	bad     map[string]int // "op: message" -> count
}

func newLCErrors() *lcErrors {
	return &lcErrors{allowed: make(map[string]int), bad: make(map[string]int)}
}

// note reports whether err is nil; an error that is none of allowed is
// recorded as a finding.
func (c *lcErrors) note(op string, err error, allowed ...error) bool {
	if err == nil {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range allowed {
		if errors.Is(err, a) {
			c.allowed[op+": "+a.Error()]++
			return false
		}
	}
	c.bad[op+": "+err.Error()]++
	return false
}

// violation records a broken promise that is not an error value.
func (c *lcErrors) violation(what string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bad[what]++
}

// check fails t with every finding and logs the allowed errors.
func (c *lcErrors) check(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := func(m map[string]int) []string {
		out := make([]string, 0, len(m))
		for k := range m {
			out = append(out, k)
		}
		sort.Strings(out)
		return out
	}
	for _, k := range keys(c.allowed) {
		t.Logf("allowed: %d× %s", c.allowed[k], k)
	}
	for _, k := range keys(c.bad) {
		t.Errorf("%d× %s", c.bad[k], k)
	}
}

// lcOutcome is what a write's call said about it.
type lcOutcome int

const (
	lcNone    lcOutcome = iota // not attempted
	lcAcked                    // returned nil (or its ticket did): durable, kept, with its revision
	lcMaybe                    // failed once it may have been queued: wholly present or wholly absent
	lcRefused                  // refused before it was queued: absent
	lcPending                  // a PutAsync's ticket not decided yet
)

// lcWrite is one point a goroutine wrote once, and perhaps deleted. Each
// write goes to a point of its own, so that what a reader finds there
// says which write it is.
type lcWrite struct {
	point  ringpipe.Point
	value  []byte
	put    lcOutcome
	putRev ringpipe.Revision
	del    lcOutcome
	delRev ringpipe.Revision
	tk     *ringpipe.Ticket // while put is lcPending
}

// lcCheck says what is wrong with a read of w (rec and err of a Get, or
// found = false when a Scan did not return the point), or "".
func lcCheck(w *lcWrite, rec ringpipe.Record, found bool) string {
	if found && (!bytes.Equal(rec.Value, w.value) || rec.Tombstone) {
		return fmt.Sprintf("%v holds %q (tombstone %v), the one write there was %q", w.point, rec.Value, rec.Tombstone, w.value)
	}
	switch {
	case w.del == lcAcked:
		if found {
			return fmt.Sprintf("%v present (rev %d) after its Delete (rev %d) was acknowledged", w.point, rec.Revision, w.delRev)
		}
	case w.put == lcAcked && w.del == lcNone:
		if !found {
			return fmt.Sprintf("%v: acknowledged write (rev %d) missing", w.point, w.putRev)
		}
		if rec.Revision != w.putRev {
			return fmt.Sprintf("%v: revision %d, the write was acknowledged with %d", w.point, rec.Revision, w.putRev)
		}
	case w.put == lcAcked: // a Delete that failed or is undecided
		if found && rec.Revision != w.putRev {
			return fmt.Sprintf("%v: revision %d, the write was acknowledged with %d", w.point, rec.Revision, w.putRev)
		}
	case w.put == lcRefused:
		if found {
			return fmt.Sprintf("%v: a write refused before it was queued is present (rev %d)", w.point, rec.Revision)
		}
	}
	return ""
}

// lcGet reads w's point with get and reports what is wrong, or "".
func lcGet(get func(ringpipe.SpaceID, ringpipe.Point) (ringpipe.Record, error), sp ringpipe.SpaceID, w *lcWrite) (string, error) {
	rec, err := get(sp, w.point)
	if err != nil && !errors.Is(err, ringpipe.ErrNotFound) {
		return "", err
	}
	return lcCheck(w, rec, err == nil), nil
}

// lcScanRow scans goroutine g's row (x = g) with scan and reports what is
// wrong against mine, or "".
func lcScanRow(scan func(ringpipe.SpaceID, ringpipe.Box, func(ringpipe.Record) bool) error, sp ringpipe.SpaceID, g int, mine []*lcWrite) (string, error) {
	got := make(map[uint32]ringpipe.Record)
	var problem string
	err := scan(sp, ringpipe.Box{Min: ringpipe.Point{uint32(g), 0}, Max: ringpipe.Point{uint32(g), 1<<16 - 1}},
		func(r ringpipe.Record) bool {
			if r.Point[0] != uint32(g) || int(r.Point[1]) >= len(mine) {
				problem = fmt.Sprintf("Scan of row %d returned %v, never written", g, r.Point)
				return false
			}
			if _, dup := got[r.Point[1]]; dup {
				problem = fmt.Sprintf("Scan of row %d returned %v twice", g, r.Point)
				return false
			}
			got[r.Point[1]] = r
			return true
		})
	if err != nil || problem != "" {
		return problem, err
	}
	for i, w := range mine {
		rec, found := got[uint32(i)]
		if s := lcCheck(w, rec, found); s != "" {
			return "Scan: " + s, nil
		}
	}
	return "", nil
}

// lcSpec is the space the audit writes: point (g, i) is goroutine g's
// i-th write; row lcSpare takes the checks' own writes.
var lcSpec = ringpipe.SpaceSpec{Name: "lc", Dims: 2, Bits: 16}

const lcSpare = 1<<16 - 1

// lcCreated is one CreateSpace call and what it returned.
type lcCreated struct {
	spec ringpipe.SpaceSpec
	id   ringpipe.SpaceID
	err  error
}

// TestLifecycleStopUnderMixedLoad: Stop, called from three goroutines at
// once, comes while 32 goroutines run a random mix of every public method
// (Put, Delete, PutAsync with Ticket.Wait and Done, Sync, Flush,
// CreateSpace of one shared name and of new names, Get, Scan, View().Get
// and Scan, Spaces, Stats, Telemetry, and Puts whose ctx is cancelled at a
// random moment) and keep calling after it returned. Checked: every call
// returns (watchdog); every error is ErrStopped, or ctx's when the test
// cancelled it; each goroutine's reads agree with what its writes were
// told (a write is visible once it returned); after Stop, writes say
// ErrStopped and every ticket is done and acknowledged; after a restart on
// the directory every acknowledged write is there once with its revision
// and value, every failed one wholly or not at all, nothing else is there,
// every created space is there with its ID, and revisions go on above.
func TestLifecycleStopUnderMixedLoad(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(t *testing.T) ringpipe.Config
	}{
		{"auto", func(t *testing.T) ringpipe.Config { return realConfig(t, ringpipe.BackendAuto) }},
		{"std", func(t *testing.T) ringpipe.Config { return realConfig(t, ringpipe.BackendStd) }},
		{"sim", func(t *testing.T) ringpipe.Config { return simConfig(t, newSimDisk(t, 61)) }},
	} {
		t.Run(tc.name, func(t *testing.T) { lcMixedRun(t, tc.cfg(t)) })
	}
}

// TestLifecycleStopUnderMixedLoadTinyQueue is the same with a write queue
// of 4 and batches of 2, so that writers wait for room in the queue when
// Stop comes.
func TestLifecycleStopUnderMixedLoadTinyQueue(t *testing.T) {
	cfg := realConfig(t, ringpipe.BackendAuto)
	cfg.QueueCapacity, cfg.BatchSize = 4, 2
	lcMixedRun(t, cfg)
}

func lcMixedRun(t *testing.T, cfg ringpipe.Config) {
	seed := lcSeed(t)
	cfg.SealThreshold = 256 // seals run under the load too
	e := start(t, cfg)
	ctx := ctxFor(t)
	sp := createSpace(t, e, lcSpec.Name, lcSpec.Dims, lcSpec.Bits)
	shared := ringpipe.SpaceSpec{Name: "shared", Dims: 3, Bits: 8}

	const goroutines = 32
	errs := newLCErrors()
	writes := make([][]*lcWrite, goroutines)
	created := make([][]lcCreated, goroutines)
	var acked atomic.Int64
	stopReturned := make(chan struct{})
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewSource(seed + int64(g)))
			var mine []*lcWrite
			defer func() { writes[g] = mine }()
			newWrite := func() *lcWrite {
				w := &lcWrite{point: ringpipe.Point{uint32(g), uint32(len(mine))}, value: fmt.Appendf(nil, "g%d-%d-%x", g, len(mine), rng.Uint32())}
				mine = append(mine, w)
				return w
			}
			// After Stop returned every write says ErrStopped (or the
			// caller's ctx error, when the test ended that ctx).
			writeDone := func(op string, after bool, err error, also ...error) {
				switch {
				case !after:
				case err == nil:
					errs.violation(op + " after Stop returned: succeeded")
				case !errors.Is(err, ringpipe.ErrStopped) && !slices.ContainsFunc(also, func(a error) bool { return errors.Is(err, a) }):
					errs.violation(fmt.Sprintf("%s after Stop returned: %v, not ErrStopped", op, err))
				}
			}
			readBack := func(op string, w *lcWrite) {
				s, err := lcGet(func(s ringpipe.SpaceID, p ringpipe.Point) (ringpipe.Record, error) { return e.Get(ctx, s, p) }, sp, w)
				if errs.note(op+" read back: Get", err, ringpipe.ErrStopped) && s != "" {
					errs.violation(op + " read back: " + s)
				}
			}
			ackedPut := func(w *lcWrite, rev ringpipe.Revision) {
				w.put, w.putRev = lcAcked, rev
				acked.Add(1)
			}
			post := 0
			for i := 0; ; i++ {
				after := lcClosed(stopReturned)
				if after {
					if post++; post > 6 {
						return
					}
				}
				switch op := rng.Intn(100); {
				case op < 20: // Put
					w := newWrite()
					rev, err := e.Put(ctx, sp, w.point, w.value)
					writeDone("Put", after, err)
					if errs.note("Put", err, ringpipe.ErrStopped) {
						ackedPut(w, rev)
						readBack("Put", w)
					} else {
						w.put = lcMaybe
					}
				case op < 28: // Put with a ctx the test cancels
					w := newWrite()
					cctx, cancel := context.WithCancel(ctx)
					mode := rng.Intn(3)
					switch mode {
					case 0:
						cancel() // before the call: not applied
					case 1:
						time.AfterFunc(time.Duration(rng.Intn(500))*time.Microsecond, cancel)
					case 2:
						go cancel()
					}
					rev, err := e.Put(cctx, sp, w.point, w.value)
					cancel()
					writeDone("Put (cancelled ctx)", after, err, context.Canceled)
					switch {
					case mode == 0 && err == nil:
						errs.violation("Put with a ctx cancelled before the call: applied")
						ackedPut(w, rev)
					case mode == 0:
						errs.note("Put (ctx cancelled before)", err, context.Canceled, ringpipe.ErrStopped)
						w.put = lcRefused
					case errs.note("Put (ctx cancelled during)", err, context.Canceled, ringpipe.ErrStopped):
						ackedPut(w, rev)
						readBack("Put (ctx cancelled during)", w)
					default:
						w.put = lcMaybe
					}
				case op < 36: // Delete
					var live []*lcWrite
					for _, w := range mine {
						if w.put == lcAcked && w.del == lcNone {
							live = append(live, w)
						}
					}
					if len(live) == 0 {
						continue
					}
					w := live[rng.Intn(len(live))]
					rev, err := e.Delete(ctx, sp, w.point)
					writeDone("Delete", after, err)
					if errs.note("Delete", err, ringpipe.ErrStopped) {
						w.del, w.delRev = lcAcked, rev
						acked.Add(1)
						readBack("Delete", w)
					} else {
						w.del = lcMaybe
					}
				case op < 48: // PutAsync, with Wait now, Wait on an ended ctx, or later
					w := newWrite()
					tk, err := e.PutAsync(ctx, sp, w.point, w.value)
					writeDone("PutAsync", after, err)
					if !errs.note("PutAsync", err, ringpipe.ErrStopped) {
						w.put = lcRefused // not queued
						continue
					}
					w.put, w.tk = lcPending, tk
					switch rng.Intn(3) {
					case 0:
						rev, err := tk.Wait(ctx)
						w.tk = nil
						if errs.note("Ticket.Wait", err) {
							ackedPut(w, rev)
							readBack("Ticket.Wait", w)
						} else {
							w.put = lcMaybe
						}
					case 1:
						cctx, cancel := context.WithCancel(ctx)
						cancel()
						rev, err := tk.Wait(cctx)
						if err == nil {
							w.tk = nil
							ackedPut(w, rev)
						} else {
							errs.note("Ticket.Wait (ended ctx)", err, context.Canceled)
						}
					}
					// Settle a done ticket of an earlier PutAsync.
					for _, o := range mine {
						if o.tk != nil && lcClosed(o.tk.Done()) {
							rev, err := o.tk.Wait(ctx)
							o.tk = nil
							if errs.note("Ticket.Wait (done)", err) {
								ackedPut(o, rev)
							} else {
								o.put = lcMaybe
							}
							break
						}
					}
				case op < 52:
					err := e.Sync(ctx)
					writeDone("Sync", after, err)
					errs.note("Sync", err, ringpipe.ErrStopped)
				case op < 54:
					err := e.Flush(ctx, sp)
					writeDone("Flush", after, err)
					errs.note("Flush", err, ringpipe.ErrStopped)
				case op < 57: // CreateSpace: the shared name, or one of its own
					spec := shared
					if rng.Intn(3) == 0 && len(created[g]) < 4 {
						spec = ringpipe.SpaceSpec{Name: fmt.Sprintf("g%d-%d", g, i), Dims: 1 + rng.Intn(4), Bits: 1 + rng.Intn(16)}
					}
					id, err := e.CreateSpace(ctx, spec)
					writeDone("CreateSpace", after, err)
					errs.note("CreateSpace", err, ringpipe.ErrStopped)
					created[g] = append(created[g], lcCreated{spec: spec, id: id, err: err})
				case op < 70: // Get one of its points
					if len(mine) == 0 {
						continue
					}
					w := mine[rng.Intn(len(mine))]
					if s, err := lcGet(func(s ringpipe.SpaceID, p ringpipe.Point) (ringpipe.Record, error) { return e.Get(ctx, s, p) }, sp, w); errs.note("Get", err, ringpipe.ErrStopped) && s != "" {
						errs.violation("Get: " + s)
					}
				case op < 76: // Scan its row
					s, err := lcScanRow(func(s ringpipe.SpaceID, b ringpipe.Box, fn func(ringpipe.Record) bool) error {
						return e.Scan(ctx, s, b, fn)
					}, sp, g, mine)
					if errs.note("Scan", err, ringpipe.ErrStopped) && s != "" {
						errs.violation(s)
					}
				case op < 90: // a View: Revision, Get, Scan
					var newest ringpipe.Revision
					for _, w := range mine {
						if w.put == lcAcked {
							newest = max(newest, w.putRev)
						}
						if w.del == lcAcked {
							newest = max(newest, w.delRev)
						}
					}
					v := e.View()
					if v.Revision() < newest {
						errs.violation(fmt.Sprintf("View.Revision %d below a returned write's %d", v.Revision(), newest))
					}
					if len(mine) > 0 {
						s, err := lcGet(v.Get, sp, mine[rng.Intn(len(mine))])
						if errs.note("View.Get", err) && s != "" {
							errs.violation("View.Get: " + s)
						}
					}
					s, err := lcScanRow(v.Scan, sp, g, mine)
					if errs.note("View.Scan", err) && s != "" {
						errs.violation("View." + s)
					}
				default: // Spaces, Stats, Telemetry
					if !slices.ContainsFunc(e.Spaces(), func(s ringpipe.SpaceInfo) bool { return s.ID == sp && s.SpaceSpec == lcSpec }) {
						errs.violation("Spaces: the audit's space missing")
					}
					if e.Stats().Backend == "" {
						errs.violation("Stats: no Backend")
					}
					if rng.Intn(4) == 0 {
						stopped := lcClosed(stopReturned)
						tm := e.Telemetry()
						if stopped && !tm.Stopped {
							errs.violation("Telemetry.Stopped false after Stop was called")
						}
						if tm.Failed {
							errs.violation("Telemetry.Failed in a healthy run")
						}
					}
				}
			}
		})
	}
	// Stop once the load is under way, from three goroutines at once.
	deadline := time.Now().Add(opTimeout)
	for acked.Load() < 300 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	require.GreaterOrEqual(t, acked.Load(), int64(300), "the load made no progress")
	t.Logf("Stop after %d acknowledged writes; stats %+v", acked.Load(), e.Stats())
	stopErrs := make([]error, 3)
	var stoppers sync.WaitGroup
	for i := range stopErrs {
		stoppers.Go(func() { stopErrs[i] = e.Stop(ctx) })
	}
	lcWait(t, "three concurrent Stops", lcDone(&stoppers))
	close(stopReturned)
	for i, err := range stopErrs {
		assert.NoError(t, err, "concurrent Stop %d", i)
	}
	lcWait(t, "the calls after Stop returned", lcDone(&wg))

	// Stop drained and acknowledged what was accepted: every ticket is
	// done, and acknowledged.
	a, f := lcSettleTickets(writes, errs, true)
	t.Logf("tickets after Stop: %d acknowledged, %d failed", a, f)
	errs.check(t)

	// A restart on the directory: every write as its call said.
	e = start(t, cfg)
	n := lcVerify(t, e, sp, writes)
	t.Logf("%d points present after the restart", n)

	// Spaces: the shared name has one ID, every created space is there
	// with its ID and spec, a failed creation is there whole or not at all.
	spaces := make(map[string]ringpipe.SpaceInfo)
	ids := make(map[ringpipe.SpaceID]bool)
	for _, s := range e.Spaces() {
		_, dup := spaces[s.Name]
		assert.False(t, dup, "two spaces named %q", s.Name)
		assert.False(t, ids[s.ID], "two spaces with ID %d", s.ID)
		spaces[s.Name], ids[s.ID] = s, true
	}
	for g := range created {
		for _, c := range created[g] {
			got, ok := spaces[c.spec.Name]
			if c.err == nil {
				if assert.True(t, ok, "created space %q lost", c.spec.Name) {
					assert.Equal(t, ringpipe.SpaceInfo{ID: c.id, SpaceSpec: c.spec}, got, "created space %q", c.spec.Name)
				}
			} else if ok {
				assert.Equal(t, c.spec, got.SpaceSpec, "space %q from a failed CreateSpace", c.spec.Name)
			}
		}
	}
	stop(t, e)
}

// lcVerify checks e against every write of writes[g] (point (g, i) is
// writes[g][i]) through Get and a Scan of the whole space: each as its
// call said, nothing else, no revision twice. Then a new Put must get a
// revision above every one seen. It returns how many points are present.
func lcVerify(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID, writes [][]*lcWrite) int {
	t.Helper()
	ctx := ctxFor(t)
	var maxRev ringpipe.Revision
	revs := make(map[ringpipe.Revision]string)
	bad, present := 0, 0
	for g, ws := range writes {
		for _, w := range ws {
			if w.put == lcAcked {
				maxRev = max(maxRev, w.putRev)
			}
			if w.del == lcAcked {
				maxRev = max(maxRev, w.delRev)
			}
			rec, err := e.Get(ctx, sp, w.point)
			if err != nil && !assert.ErrorIs(t, err, ringpipe.ErrNotFound, "Get %v", w.point) {
				bad++
				continue
			}
			if err == nil {
				present++
				maxRev = max(maxRev, rec.Revision)
				if other, dup := revs[rec.Revision]; dup {
					t.Errorf("revision %d at %v and at %s", rec.Revision, w.point, other)
					bad++
				}
				revs[rec.Revision] = fmt.Sprint(w.point)
			}
			if s := lcCheck(w, rec, err == nil); s != "" {
				t.Errorf("goroutine %d (put %d, del %d): %s", g, w.put, w.del, s)
				bad++
			}
			if bad > 10 {
				t.Fatalf("lcVerify: giving up after %d bad points", bad)
			}
		}
	}
	n := 0
	require.NoError(t, e.Scan(ctx, sp, fullBox(lcSpec), func(r ringpipe.Record) bool {
		g, i := int(r.Point[0]), int(r.Point[1])
		if g == lcSpare {
			return true
		}
		n++
		if g >= len(writes) || i >= len(writes[g]) {
			t.Errorf("Scan returned %v, never written", r.Point)
		}
		return true
	}))
	assert.Equal(t, present, n, "Scan of the whole space against the points Get finds")
	rev, err := e.Put(ctx, sp, ringpipe.Point{lcSpare, 1<<16 - 1}, []byte("after"))
	require.NoError(t, err)
	assert.Greater(t, rev, maxRev, "a Put after the restart: revisions go on above every one seen")
	_, err = e.Delete(ctx, sp, ringpipe.Point{lcSpare, 1<<16 - 1})
	require.NoError(t, err)
	return present
}

// lcWriters starts n goroutines writing into sp until a write fails:
// Puts, PutAsyncs (tickets kept) and Deletes of their own points (x = g).
// progress is closed after enough acknowledged writes. Once every goroutine
// has returned, writes[g] holds goroutine g's writes.
func lcWriters(e *ringpipe.Engine, ctx context.Context, sp ringpipe.SpaceID, seed int64, n, enough int, errs *lcErrors, writes [][]*lcWrite, progress chan struct{}) *sync.WaitGroup {
	var acked atomic.Int64
	var once sync.Once
	count := func() {
		if acked.Add(1) == int64(enough) {
			once.Do(func() { close(progress) })
		}
	}
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() {
			rng := rand.New(rand.NewSource(seed + int64(g)))
			var mine []*lcWrite
			defer func() { writes[g] = mine }()
			for i := 0; i < 1<<15; i++ {
				op := rng.Intn(10)
				if op < 2 && len(mine) > 0 {
					w := mine[rng.Intn(len(mine))]
					if w.put != lcAcked || w.del != lcNone {
						continue
					}
					rev, err := e.Delete(ctx, sp, w.point)
					if !errs.note("Delete", err, ringpipe.ErrStopped) {
						w.del = lcMaybe
						return
					}
					w.del, w.delRev = lcAcked, rev
					count()
					continue
				}
				w := &lcWrite{point: ringpipe.Point{uint32(g), uint32(len(mine))}, value: fmt.Appendf(nil, "g%d-%d-%x", g, len(mine), rng.Uint32())}
				mine = append(mine, w)
				if op < 5 {
					tk, err := e.PutAsync(ctx, sp, w.point, w.value)
					if !errs.note("PutAsync", err, ringpipe.ErrStopped) {
						w.put = lcRefused
						return
					}
					w.put, w.tk = lcPending, tk
					count()
					continue
				}
				rev, err := e.Put(ctx, sp, w.point, w.value)
				if !errs.note("Put", err, ringpipe.ErrStopped) {
					w.put = lcMaybe
					return
				}
				w.put, w.putRev = lcAcked, rev
				count()
			}
		})
	}
	return &wg
}

// lcSettleTickets decides every pending write of writes by its ticket,
// which must be done: Stop has returned. A failed ticket is recorded in
// errs, as an error when drained (Stop's ctx was live, so it drained and
// acknowledged every accepted write), else unless it is ErrStopped.
func lcSettleTickets(writes [][]*lcWrite, errs *lcErrors, drained bool) (acked, failed int) {
	for _, ws := range writes {
		for _, w := range ws {
			if w.tk == nil {
				continue
			}
			if !lcClosed(w.tk.Done()) {
				errs.violation("a ticket not done after Stop returned")
				w.put = lcMaybe
				continue
			}
			rev, err := w.tk.Wait(context.Background())
			w.tk = nil
			if err == nil {
				w.put, w.putRev = lcAcked, rev
				acked++
				continue
			}
			w.put = lcMaybe
			failed++
			if drained {
				errs.note("ticket of an accepted PutAsync after a Stop that drained", err)
			} else {
				errs.note("ticket after Stop", err, ringpipe.ErrStopped)
			}
		}
	}
	return acked, failed
}

// TestLifecycleStopRepeated: Stop from eight goroutines at once while 16
// writers run, all with a live ctx: each returns nil; the writers end
// with nil or ErrStopped; every accepted write is acknowledged. Then Stop
// again, with a live ctx and with an ended one: "later calls return nil".
// After a restart every acknowledged write is there.
func TestLifecycleStopRepeated(t *testing.T) {
	seed := lcSeed(t)
	cfg := realConfig(t, ringpipe.BackendAuto)
	e := start(t, cfg)
	ctx := ctxFor(t)
	sp := createSpace(t, e, lcSpec.Name, lcSpec.Dims, lcSpec.Bits)
	errs := newLCErrors()
	writes := make([][]*lcWrite, 16)
	progress := make(chan struct{})
	wg := lcWriters(e, ctx, sp, seed, len(writes), 200, errs, writes, progress)
	lcWait(t, "200 acknowledged writes", progress)

	stopErrs := make([]error, 8)
	var stoppers sync.WaitGroup
	for i := range stopErrs {
		stoppers.Go(func() { stopErrs[i] = e.Stop(ctx) })
	}
	lcWait(t, "eight concurrent Stops", lcDone(&stoppers))
	for i, err := range stopErrs {
		assert.NoError(t, err, "concurrent Stop %d", i)
	}
	lcWait(t, "the writers after Stop", lcDone(wg))
	a, f := lcSettleTickets(writes, errs, true)
	t.Logf("tickets after Stop: %d acknowledged, %d failed", a, f)
	errs.check(t)

	assert.NoError(t, e.Stop(ctx), "Stop after Stop returned")
	// API.md: "later calls return nil", also with an ended ctx. (Before
	// the fix, engine.stop answered a later call with a select over
	// stopDone and ctx.Done(), and about half of these returned
	// context.Canceled.)
	ended, cancel := context.WithCancel(ctx)
	cancel()
	nonNil := 0
	var last error
	for range 50 {
		if err := e.Stop(ended); err != nil {
			nonNil++
			last = err
		}
	}
	assert.Zero(t, nonNil, "of 50 Stops with an ended ctx after Stop returned, %d returned an error (%v); later calls return nil", nonNil, last)

	e = start(t, cfg)
	n := lcVerify(t, e, sp, writes)
	t.Logf("%d points present after the restart", n)
	stop(t, e)
}

// TestLifecycleStopExpiredCtx: Stop with a ctx that has already ended
// (rounds 0-5) or ends a random 0-5 ms into it (rounds 6 and 7), from
// four goroutines at once, while 16 writers run (and a Sync, a Flush and
// a CreateSpace loop). Stop returns (nil or ctx's error), every call
// returns with nil or ErrStopped, every ticket is done, no goroutine is
// left (goleak against those from before the engine started), the
// directory is released, and after a restart every acknowledged write is
// there once with its revision, every failed one wholly or not at all.
func TestLifecycleStopExpiredCtx(t *testing.T) {
	for round := range 8 {
		t.Run(fmt.Sprintf("round%d", round), func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			seed := lcSeed(t)
			rng := rand.New(rand.NewSource(seed))
			cfg := realConfig(t, ringpipe.BackendAuto)
			e := start(t, cfg)
			ctx := ctxFor(t)
			sp := createSpace(t, e, lcSpec.Name, lcSpec.Dims, lcSpec.Bits)
			errs := newLCErrors()
			writes := make([][]*lcWrite, 16)
			progress := make(chan struct{})
			wg := lcWriters(e, ctx, sp, seed, len(writes), 100+20*round, errs, writes, progress)
			// Sync, Flush and CreateSpace in loops of their own.
			for _, call := range []struct {
				op string
				do func(i int) error
			}{
				{"Sync", func(int) error { return e.Sync(ctx) }},
				{"Flush", func(int) error { return e.Flush(ctx, sp) }},
				{"CreateSpace", func(i int) error {
					_, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: fmt.Sprintf("c%d", i), Dims: 1, Bits: 8})
					return err
				}},
			} {
				wg.Go(func() {
					for i := 0; i < 1000 && errs.note(call.op, call.do(i), ringpipe.ErrStopped); i++ {
					}
				})
			}
			lcWait(t, "acknowledged writes", progress)

			ended, cancel := context.WithCancel(ctx)
			defer cancel()
			if round < 6 {
				cancel()
			} else {
				time.AfterFunc(time.Duration(rng.Intn(5000))*time.Microsecond, cancel)
			}
			stopErrs := make([]error, 4)
			var stoppers sync.WaitGroup
			for i := range stopErrs {
				stoppers.Go(func() { stopErrs[i] = e.Stop(ended) })
			}
			lcWait(t, "Stops with an ended ctx", lcDone(&stoppers))
			for i, err := range stopErrs {
				if err != nil {
					assert.ErrorIs(t, err, context.Canceled, "Stop %d with an ended ctx", i)
				}
			}
			t.Logf("Stops with an ended ctx returned %v", stopErrs)
			lcWait(t, "the writers after Stop", lcDone(wg))
			a, f := lcSettleTickets(writes, errs, false)
			t.Logf("tickets after Stop: %d acknowledged, %d failed", a, f)
			// A write that a Stop with an ended ctx cuts short (Put,
			// Delete, or an accepted PutAsync's ticket) says ErrStopped:
			// the caller's ctx is live. (Before the fix it failed with
			// the submitter's "stopping: context canceled" alone;
			// Ticket.Wait now maps it as engine.cutByStop does for Flush.)
			errs.check(t)
			goleak.VerifyNone(t, before)

			e = start(t, cfg)
			n := lcVerify(t, e, sp, writes)
			t.Logf("%d points present after the restart", n)
			stop(t, e)
		})
	}
}

// TestLifecycleCancelledContexts: Put, PutAsync with Ticket.Wait, Sync
// and Flush with contexts cancelled at random moments (before the call,
// after a random delay, from another goroutine at once, or never): first
// from one goroutine, so that the Puts commit inline on their caller's
// goroutine when its ctx ends, then from 16 at once. Each call returns
// nil or ctx's error, nothing else; a Put whose ctx ended before the call
// is not applied; two Waits on one ticket agree; a ticket whose Wait was
// cut short is still acknowledged; no actor restarts, and the engine
// still writes. Once Sync has returned, what the engine shows is final: a
// clean restart shows exactly the same, every write that returned an
// error wholly or not at all.
func TestLifecycleCancelledContexts(t *testing.T) {
	seed := lcSeed(t)
	cfg := realConfig(t, ringpipe.BackendAuto)
	e := start(t, cfg)
	ctx := ctxFor(t)
	sp := createSpace(t, e, lcSpec.Name, lcSpec.Dims, lcSpec.Bits)
	errs := newLCErrors()
	const writers = 16
	writes := make([][]*lcWrite, writers+1) // the last: the lone writer's
	var cancelledWaits atomic.Int64
	run := func(g, ops int) {
		rng := rand.New(rand.NewSource(seed + int64(g)))
		var mine []*lcWrite
		defer func() { writes[g] = mine }()
		cctx := func() (context.Context, int, context.CancelFunc) {
			c, cancel := context.WithCancel(ctx)
			mode := rng.Intn(5)
			switch mode {
			case 0:
				cancel()
			case 1:
				time.AfterFunc(time.Duration(rng.Intn(300))*time.Microsecond, cancel)
			case 2:
				time.AfterFunc(time.Duration(rng.Intn(3000))*time.Microsecond, cancel)
			case 3:
				go cancel()
			}
			return c, mode, cancel
		}
		newWrite := func() *lcWrite {
			w := &lcWrite{point: ringpipe.Point{uint32(g), uint32(len(mine))}, value: fmt.Appendf(nil, "g%d-%d-%x", g, len(mine), rng.Uint32())}
			mine = append(mine, w)
			return w
		}
		for range ops {
			c, mode, cancel := cctx()
			switch op := rng.Intn(10); {
			case op < 4:
				w := newWrite()
				rev, err := e.Put(c, sp, w.point, w.value)
				switch {
				case mode == 0 && err == nil:
					errs.violation("Put with a ctx cancelled before the call: applied")
					w.put, w.putRev = lcAcked, rev
				case mode == 0:
					errs.note("Put (ctx cancelled before)", err, context.Canceled)
					w.put = lcRefused
				case errs.note("Put", err, context.Canceled):
					w.put, w.putRev = lcAcked, rev
				default:
					w.put = lcMaybe
				}
			case op < 7:
				w := newWrite()
				put := ctx
				if rng.Intn(2) == 0 {
					put = c // PutAsync's own ctx may end too
				}
				tk, err := e.PutAsync(put, sp, w.point, w.value)
				if !errs.note("PutAsync", err, context.Canceled) {
					w.put = lcRefused
					break
				}
				w.put, w.tk = lcPending, tk
				// A second Wait on the same ticket, at the same time.
				type result struct {
					rev ringpipe.Revision
					err error
				}
				other := make(chan result, 1)
				go func() {
					rev, err := tk.Wait(ctx)
					other <- result{rev, err}
				}()
				rev, err := tk.Wait(c)
				if errs.note("Ticket.Wait", err, context.Canceled) {
					w.put, w.putRev, w.tk = lcAcked, rev, nil
				} else {
					cancelledWaits.Add(1)
				}
				if o := <-other; errs.note("Ticket.Wait (second waiter)", o.err) && err == nil && o.rev != rev {
					errs.violation(fmt.Sprintf("two Waits on one ticket: revisions %d and %d", rev, o.rev))
				}
			case op < 9:
				errs.note("Sync", e.Sync(c), context.Canceled)
			default:
				errs.note("Flush", e.Flush(c, sp), context.Canceled)
			}
			cancel()
		}
	}
	inline0 := e.Telemetry().InlineCommits
	run(writers, 80)
	t.Logf("the lone writer: %d inline commits", e.Telemetry().InlineCommits-inline0)
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() { run(g, 60) })
	}
	lcWait(t, "the callers", lcDone(&wg))
	require.NoError(t, e.Sync(ctx), "Sync after the cancellations")
	for _, ws := range writes {
		for _, w := range ws {
			if w.tk != nil {
				rev, err := w.tk.Wait(ctx)
				if assert.NoError(t, err, "a ticket whose Wait was cut short: the write was accepted") {
					w.put, w.putRev = lcAcked, rev
				} else {
					w.put = lcMaybe
				}
				w.tk = nil
			}
		}
	}
	errs.check(t)
	t.Logf("%d Ticket.Waits cut short; stats %+v", cancelledWaits.Load(), e.Stats())
	for name, n := range e.Stats().ActorRestarts {
		assert.Zero(t, n, "restarts of %s: cancelled callers must not fail an actor", name)
	}
	// What the engine shows now is final.
	shown := make(map[string]bool)
	for _, ws := range writes {
		for _, w := range ws {
			rec, err := e.Get(ctx, sp, w.point)
			if err != nil {
				require.ErrorIs(t, err, ringpipe.ErrNotFound)
			}
			if s := lcCheck(w, rec, err == nil); s != "" {
				t.Errorf("before the restart: %s", s)
			}
			shown[fmt.Sprint(w.point)] = err == nil
		}
	}
	require.NoError(t, e.Flush(ctx, sp), "Flush after the cancellations")
	_, err := e.Put(ctx, sp, ringpipe.Point{lcSpare, 0}, []byte("still writes"))
	require.NoError(t, err, "Put after the cancellations")
	stop(t, e)

	e = start(t, cfg)
	lcVerify(t, e, sp, writes)
	for _, ws := range writes {
		for _, w := range ws {
			_, err := e.Get(ctx, sp, w.point)
			assert.Equal(t, shown[fmt.Sprint(w.point)], err == nil, "%v (put %d): present before a clean restart, and after", w.point, w.put)
		}
	}
	stop(t, e)
}

// TestLifecycleCreateSpaceRace: 16 goroutines create one new name at
// once, released together. With the same spec they all get the same ID;
// with specs that differ, exactly one spec wins: every caller with it gets
// its ID, every other ErrSpaceExists. The winners are listed by Spaces,
// take writes at once, and survive a restart with their IDs.
func TestLifecycleCreateSpaceRace(t *testing.T) {
	seed := lcSeed(t)
	rng := rand.New(rand.NewSource(seed))
	cfg := realConfig(t, ringpipe.BackendAuto)
	e := start(t, cfg)
	ctx := ctxFor(t)
	const racers = 16
	want := make(map[string]ringpipe.SpaceInfo)
	for round := range 12 {
		name := fmt.Sprintf("race%d", round)
		specs := make([]ringpipe.SpaceSpec, racers)
		switch round % 3 {
		case 0: // one spec
			s := ringpipe.SpaceSpec{Name: name, Dims: 1 + rng.Intn(4), Bits: 1 + rng.Intn(16)}
			for i := range specs {
				specs[i] = s
			}
		case 1: // all different
			for i := range specs {
				specs[i] = ringpipe.SpaceSpec{Name: name, Dims: 1 + i, Bits: 1 + rng.Intn(min(32, 64/(1+i)))}
			}
		case 2: // two specs, half each
			a := ringpipe.SpaceSpec{Name: name, Dims: 2, Bits: 8}
			b := ringpipe.SpaceSpec{Name: name, Dims: 2, Bits: 9}
			for i := range specs {
				specs[i] = a
				if i%2 == 1 {
					specs[i] = b
				}
			}
		}
		ids := make([]ringpipe.SpaceID, racers)
		errs := make([]error, racers)
		gate := make(chan struct{})
		var wg sync.WaitGroup
		for i := range racers {
			wg.Go(func() {
				<-gate
				ids[i], errs[i] = e.CreateSpace(ctx, specs[i])
			})
		}
		close(gate)
		lcWait(t, "racing CreateSpaces", lcDone(&wg))

		var winner *ringpipe.SpaceSpec
		var winID ringpipe.SpaceID
		for i, err := range errs {
			if err != nil {
				continue
			}
			if winner == nil {
				winner, winID = &specs[i], ids[i]
			}
			assert.Equal(t, *winner, specs[i], "round %d: two different specs both created %q", round, name)
			assert.Equal(t, winID, ids[i], "round %d: callers of one spec got different IDs", round)
		}
		require.NotNil(t, winner, "round %d: no CreateSpace succeeded: %v", round, errs)
		for i, err := range errs {
			if specs[i] != *winner {
				assert.ErrorIs(t, err, ringpipe.ErrSpaceExists, "round %d: %+v against the winner %+v", round, specs[i], *winner)
			} else {
				assert.NoError(t, err, "round %d: the winning spec", round)
			}
		}
		info := ringpipe.SpaceInfo{ID: winID, SpaceSpec: *winner}
		assert.Contains(t, e.Spaces(), info, "round %d", round)
		p := make(ringpipe.Point, winner.Dims)
		rev, err := e.Put(ctx, winID, p, []byte(name))
		require.NoError(t, err, "round %d: Put into the new space", round)
		rec, err := e.Get(ctx, winID, p)
		require.NoError(t, err)
		assert.Equal(t, rev, rec.Revision)
		want[name] = info
	}
	stop(t, e)

	e = start(t, cfg)
	spaces := e.Spaces()
	assert.Len(t, spaces, len(want), "spaces after the restart")
	for name, info := range want {
		assert.Contains(t, spaces, info, "%s after the restart", name)
		rec, err := e.Get(ctx, info.ID, make(ringpipe.Point, info.Dims))
		if assert.NoError(t, err, "%s after the restart", name) {
			assert.Equal(t, []byte(name), rec.Value)
		}
		id, err := e.CreateSpace(ctx, info.SpaceSpec)
		assert.NoError(t, err)
		assert.Equal(t, info.ID, id, "CreateSpace of %s after the restart", name)
	}
	stop(t, e)
}

// TestLifecycleStartCancelled: Start on a directory with data, with a
// ctx that has ended or ends a random moment into recovery. Start returns
// ctx's error or a working engine, nothing else; a Start that gave up
// leaves no goroutine and no fd behind and releases the directory; the
// next Start finds every write.
func TestLifecycleStartCancelled(t *testing.T) {
	seed := lcSeed(t)
	rng := rand.New(rand.NewSource(seed))
	cfg := realConfig(t, ringpipe.BackendAuto)
	spec := ringpipe.SpaceSpec{Name: "s", Dims: 2, Bits: 6}
	m := newModel(spec)
	e := start(t, cfg)
	ctx := ctxFor(t)
	sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
	var tickets []*ringpipe.Ticket
	var ws []write
	for i := range 600 {
		if i == 300 {
			require.NoError(t, e.Flush(ctx, sp)) // blocks and hot segments both
		}
		p := randPoint(rng, spec)
		v := fmt.Appendf(nil, "%d", i)
		tk, err := e.PutAsync(ctx, sp, p, v)
		require.NoError(t, err)
		tickets = append(tickets, tk)
		ws = append(ws, write{point: p, value: v})
	}
	for i, tk := range tickets {
		rev, err := tk.Wait(ctx)
		require.NoError(t, err)
		ws[i].rev = rev
		m.add(ws[i])
	}
	stop(t, e)

	fds0 := fdtest.List(t)
	before := goleak.IgnoreCurrent()
	refused := 0
	for i := range 12 {
		sctx, cancel := context.WithCancel(ctx)
		if i%3 == 0 {
			cancel()
		} else {
			time.AfterFunc(time.Duration(rng.Intn(3000))*time.Microsecond, cancel)
		}
		e, err := ringpipe.Start(sctx, cfg)
		cancel()
		if err != nil {
			refused++
			assert.ErrorIs(t, err, context.Canceled, "Start %d", i)
			assert.Nil(t, e)
			continue
		}
		checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
		stop(t, e)
	}
	t.Logf("%d of 12 Starts gave up on their ctx", refused)
	goleak.VerifyNone(t, before)
	assert.Equal(t, fds0, fdtest.List(t), "open fds before and after the Starts")

	e = start(t, cfg)
	checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
	stop(t, e)
}

// TestLifecycleStartRace: eight Starts on one directory at once, fresh
// and with data, released together: exactly one gets the engine, every
// other ErrLocked; the winner has every earlier write and takes new ones;
// once it stops, the directory opens again with all of them.
func TestLifecycleStartRace(t *testing.T) {
	cfg := realConfig(t, ringpipe.BackendAuto)
	spec := ringpipe.SpaceSpec{Name: "s", Dims: 1, Bits: 16}
	m := newModel(spec)
	var sp ringpipe.SpaceID
	for round := range 4 {
		engines := make([]*ringpipe.Engine, 8)
		errs := make([]error, len(engines))
		gate := make(chan struct{})
		var wg sync.WaitGroup
		for i := range engines {
			wg.Go(func() {
				<-gate
				engines[i], errs[i] = ringpipe.Start(ctxFor(t), cfg)
			})
		}
		close(gate)
		lcWait(t, "racing Starts", lcDone(&wg))
		var e *ringpipe.Engine
		for i, err := range errs {
			if err == nil {
				t.Cleanup(func() { _ = engines[i].Stop(context.Background()) })
				if !assert.Nil(t, e, "round %d: two Starts on one directory both succeeded", round) {
					continue
				}
				e = engines[i]
				continue
			}
			assert.ErrorIs(t, err, ringpipe.ErrLocked, "round %d: Start %d", round, i)
			assert.Nil(t, engines[i])
		}
		require.NotNil(t, e, "round %d: no Start succeeded: %v", round, errs)
		ctx := ctxFor(t)
		var err error
		sp, err = e.CreateSpace(ctx, spec)
		require.NoError(t, err)
		checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
		for i := range 50 {
			p := ringpipe.Point{uint32(round*50 + i)}
			v := fmt.Appendf(nil, "r%d-%d", round, i)
			rev, err := e.Put(ctx, sp, p, v)
			require.NoError(t, err)
			m.add(write{point: p, rev: rev, value: v})
		}
		stop(t, e)
	}
	e := start(t, cfg)
	checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
	stop(t, e)
}

// TestLifecycleReentrantCalls: a Scan's fn, on an Engine and on a View,
// calls the engine back: Put, Get, Sync, Flush, CreateSpace, Stats,
// Telemetry, and at last Stop. Every call returns (watchdog): a callback
// holds nothing the engine needs. Then writes say ErrStopped and what was
// acknowledged survives a restart.
func TestLifecycleReentrantCalls(t *testing.T) {
	cfg := realConfig(t, ringpipe.BackendAuto)
	e := start(t, cfg)
	ctx := ctxFor(t)
	spec := ringpipe.SpaceSpec{Name: "s", Dims: 1, Bits: 16}
	sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
	m := newModel(spec)
	for i := range 100 {
		if i == 50 {
			require.NoError(t, e.Flush(ctx, sp)) // a block under the scans
		}
		p := ringpipe.Point{uint32(i)}
		rev, err := e.Put(ctx, sp, p, []byte("v"))
		require.NoError(t, err)
		m.add(write{point: p, rev: rev, value: []byte("v")})
	}
	callBack := func(where string, i int, stopToo bool) {
		p := ringpipe.Point{uint32(1000 + i)}
		v := fmt.Appendf(nil, "%s-%d", where, i)
		rev, err := e.Put(ctx, sp, p, v)
		if err == nil {
			m.add(write{point: p, rev: rev, value: v})
		} else {
			assert.ErrorIs(t, err, ringpipe.ErrStopped, "%s: Put", where)
		}
		_, err = e.Get(ctx, sp, p)
		if err != nil {
			assert.ErrorIs(t, err, ringpipe.ErrNotFound, "%s: Get", where)
		}
		if err := e.Sync(ctx); err != nil {
			assert.ErrorIs(t, err, ringpipe.ErrStopped, "%s: Sync", where)
		}
		if err := e.Flush(ctx, sp); err != nil {
			assert.ErrorIs(t, err, ringpipe.ErrStopped, "%s: Flush", where)
		}
		if _, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: fmt.Sprintf("%s-%d", where, i), Dims: 1, Bits: 8}); err != nil {
			assert.ErrorIs(t, err, ringpipe.ErrStopped, "%s: CreateSpace", where)
		}
		_ = e.Stats()
		_ = e.Telemetry()
		_ = e.Spaces()
		if stopToo {
			assert.NoError(t, e.Stop(ctx), "%s: Stop", where)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		i := 0
		v := e.View()
		assert.NoError(t, e.Scan(ctx, sp, fullBox(spec), func(ringpipe.Record) bool {
			i++
			callBack("Engine.Scan", i, false)
			return i < 3
		}))
		assert.NoError(t, v.Scan(sp, fullBox(spec), func(ringpipe.Record) bool {
			i++
			callBack("View.Scan", i, i == 6)
			return i < 6
		}))
	}()
	lcWait(t, "calls from inside a Scan's fn", done)
	_, err := e.Put(ctx, sp, ringpipe.Point{7}, []byte("after"))
	assert.ErrorIs(t, err, ringpipe.ErrStopped)

	e = start(t, cfg)
	checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
	stop(t, e)
}

// TestLifecycleRestartCycles: 20 Start/Stop cycles on one directory, with
// concurrent writes, deletes and a Flush now and then in each. Every
// cycle finds everything acknowledged before, its revisions are above
// every earlier one, and the open fds and goroutines at the end are those
// at the start. On odd cycles the next Start races the Stop: it gets
// ErrLocked until the directory is released, never anything else.
func TestLifecycleRestartCycles(t *testing.T) {
	seed := lcSeed(t)
	rng := rand.New(rand.NewSource(seed))
	cfg := realConfig(t, ringpipe.BackendAuto)
	spec := ringpipe.SpaceSpec{Name: "cycles", Dims: 2, Bits: 6}
	m := newModel(spec)
	var sp ringpipe.SpaceID
	var maxRev ringpipe.Revision
	const cycles = 20
	lockedAll := 0 // ErrLocked answers to the Starts that raced a Stop

	var fds0 []string
	var before goleak.Option
	e := start(t, cfg)
	for c := range cycles {
		ctx := ctxFor(t)
		var err error
		sp, err = e.CreateSpace(ctx, spec)
		require.NoError(t, err, "cycle %d: CreateSpace", c)
		checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
		if v := e.View().Revision(); v < maxRev {
			t.Errorf("cycle %d: the View's revision %d is below the %d acknowledged before", c, v, maxRev)
		}
		var got acks
		var wg sync.WaitGroup
		for w := range 4 {
			wseed := rng.Int63()
			wg.Go(func() {
				rng := rand.New(rand.NewSource(wseed))
				for i := range 10 {
					p := randPoint(rng, spec)
					var rev ringpipe.Revision
					var err error
					var v []byte
					if rng.Intn(4) == 0 {
						rev, err = e.Delete(ctx, sp, p)
					} else {
						v = fmt.Appendf(nil, "c%d-w%d-%d", c, w, i)
						rev, err = e.Put(ctx, sp, p, v)
					}
					if !assert.NoError(t, err, "cycle %d", c) {
						return
					}
					if !assert.Greater(t, rev, maxRev, "cycle %d: a revision not above the earlier cycles'", c) {
						return
					}
					got.add(write{point: p, rev: rev, value: v})
				}
			})
		}
		wg.Wait()
		if c%4 == 3 {
			require.NoError(t, e.Flush(ctx, sp), "cycle %d: Flush", c)
		}
		for _, w := range got.model(t, spec).last {
			m.add(w)
			maxRev = max(maxRev, w.rev)
		}
		for _, w := range got.ws {
			maxRev = max(maxRev, w.rev)
		}
		checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
		if t.Failed() {
			return
		}
		if c%2 == 0 {
			stop(t, e)
			if c == 0 {
				// No engine runs, and the first cycle warmed up what a
				// process sets up once (the netpoller, the kernel probe).
				fds0 = fdtest.List(t)
				before = goleak.IgnoreCurrent()
			}
			e = start(t, cfg)
			continue
		}
		// The next Start races this Stop: Starts are refused while this
		// engine runs, and go on being tried while it stops.
		type started struct {
			e      *ringpipe.Engine
			err    error
			locked int
		}
		refused := make(chan struct{})
		next := make(chan started, 1)
		go func() {
			locked := 0
			for {
				n, err := ringpipe.Start(ctx, cfg)
				if !errors.Is(err, ringpipe.ErrLocked) || ctx.Err() != nil {
					next <- started{n, err, locked}
					return
				}
				if locked++; locked == 1 {
					close(refused)
				}
			}
		}()
		select {
		case <-refused:
		case r := <-next:
			if r.e != nil {
				_ = r.e.Stop(ctx)
			}
			require.FailNow(t, "a Start on a directory in use", "cycle %d: %v", c, r.err)
		}
		require.NoError(t, e.Stop(ctx), "cycle %d: Stop", c)
		var r started
		lcWait(t, "a Start after the last engine stopped", func() <-chan struct{} {
			d := make(chan struct{})
			go func() { r = <-next; close(d) }()
			return d
		}())
		require.NoError(t, r.err, "cycle %d: Start while the last engine stops", c)
		t.Cleanup(func() { _ = r.e.Stop(context.Background()) })
		lockedAll += r.locked
		e = r.e
	}
	checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
	stop(t, e)
	t.Logf("%d ErrLocked answers to the Starts that raced a Stop", lockedAll)
	goleak.VerifyNone(t, before)
	fds1 := fdtest.List(t)
	assert.Equal(t, fds0, fds1, "open fds after cycle 0 and after cycle %d", cycles-1)
}

// TestLifecycleViewAfterStop: a View taken while writers and Flushes run
// (records in the live tail and in blocks) answers Get and Scan the same
// before Stop, while readers hammer it during Stop, after Stop, and after
// a new engine on the same directory has written, flushed and stopped.
func TestLifecycleViewAfterStop(t *testing.T) {
	seed := lcSeed(t)
	cfg := realConfig(t, ringpipe.BackendAuto)
	cfg.SealThreshold = 128
	e := start(t, cfg)
	ctx := ctxFor(t)
	spec := ringpipe.SpaceSpec{Name: "view", Dims: 2, Bits: 6}
	sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
	other := createSpace(t, e, "other", 1, 12)

	// Writers and a flusher, and the View taken in the middle of them.
	stopWriters := make(chan struct{})
	var wg sync.WaitGroup
	var n atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewSource(seed + int64(w)))
			for i := 0; !lcClosed(stopWriters); i++ {
				var err error
				if rng.Intn(5) == 0 {
					_, err = e.Delete(ctx, sp, randPoint(rng, spec))
				} else {
					_, err = e.Put(ctx, sp, randPoint(rng, spec), fmt.Appendf(nil, "w%d-%d", w, i))
				}
				if errors.Is(err, ringpipe.ErrStopped) {
					return
				}
				if !assert.NoError(t, err) {
					return
				}
				_, err = e.Put(ctx, other, ringpipe.Point{uint32(rng.Intn(1 << 12))}, []byte("o"))
				if errors.Is(err, ringpipe.ErrStopped) {
					return
				}
				assert.NoError(t, err)
				n.Add(1)
			}
		})
	}
	wg.Go(func() {
		for !lcClosed(stopWriters) {
			err := e.Flush(ctx, sp)
			if errors.Is(err, ringpipe.ErrStopped) {
				return
			}
			if !assert.NoError(t, err) {
				return
			}
		}
	})
	deadline := time.Now().Add(opTimeout)
	for n.Load() < 600 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	require.GreaterOrEqual(t, n.Load(), int64(600), "the writers made no progress")
	v := e.View()
	require.Positive(t, e.Stats().SealedBlocks, "the View covers blocks too")

	// What v answers now, for every point.
	type answer struct {
		rec ringpipe.Record
		err error
	}
	rev := v.Revision()
	snapshotOf := func() (map[string]answer, []ringpipe.Record, []ringpipe.Record) {
		gets := make(map[string]answer)
		for x := range uint32(64) {
			for y := range uint32(64) {
				p := ringpipe.Point{x, y}
				rec, err := v.Get(sp, p)
				gets[fmt.Sprint(p)] = answer{rec, err}
			}
		}
		var all, part []ringpipe.Record
		assert.NoError(t, v.Scan(sp, fullBox(spec), func(r ringpipe.Record) bool { all = append(all, r); return true }))
		assert.NoError(t, v.Scan(other, ringpipe.Box{Min: ringpipe.Point{100}, Max: ringpipe.Point{2000}},
			func(r ringpipe.Record) bool { part = append(part, r); return true }))
		return gets, all, part
	}
	gets0, all0, part0 := snapshotOf()
	require.NotEmpty(t, all0)
	same := func(when string) {
		t.Helper()
		gets, all, part := snapshotOf()
		assert.Equal(t, rev, v.Revision(), "%s: View.Revision", when)
		diff := 0
		for k, a := range gets0 {
			b := gets[k]
			if !assert.Equal(t, a, b, "%s: View.Get %s", when, k) {
				if diff++; diff > 5 {
					break
				}
			}
		}
		assert.Equal(t, all0, all, "%s: View.Scan of the whole space", when)
		assert.Equal(t, part0, part, "%s: View.Scan of a box of another space", when)
	}

	// Readers of v during Stop (the writers still running).
	readersDone := make(chan struct{})
	var readers sync.WaitGroup
	var reads atomic.Int64
	for r := range 3 {
		readers.Go(func() {
			rng := rand.New(rand.NewSource(seed + 100 + int64(r)))
			for !lcClosed(readersDone) {
				x, y := uint32(rng.Intn(64)), uint32(rng.Intn(64))
				p := ringpipe.Point{x, y}
				rec, err := v.Get(sp, p)
				if !assert.Equal(t, gets0[fmt.Sprint(p)], answer{rec, err}, "View.Get %v during Stop", p) {
					return
				}
				if rng.Intn(16) == 0 {
					var all []ringpipe.Record
					if !assert.NoError(t, v.Scan(sp, fullBox(spec), func(r ringpipe.Record) bool { all = append(all, r); return true })) ||
						!assert.Equal(t, all0, all, "View.Scan during Stop") {
						return
					}
				}
				reads.Add(1)
			}
		})
	}
	same("before Stop")
	stopErr := make(chan error, 1)
	go func() { stopErr <- e.Stop(ctx) }()
	select {
	case err := <-stopErr:
		require.NoError(t, err, "Stop")
	case <-time.After(lcWatchdog):
		buf := make([]byte, 16<<20)
		t.Fatalf("Stop: still waiting after %v; goroutines:\n%s", lcWatchdog, buf[:runtime.Stack(buf, true)])
	}
	close(stopWriters)
	lcWait(t, "the writers after Stop", lcDone(&wg))
	close(readersDone)
	lcWait(t, "the View's readers", lcDone(&readers))
	t.Logf("%d reads of the View during Stop", reads.Load())
	same("after Stop")

	// A new engine on the directory writes over every point, flushes
	// (blocks named, hot generations retired) and stops.
	e2 := start(t, cfg)
	for x := range uint32(64) {
		for y := range uint32(64) {
			_, err := e2.PutAsync(ctx, sp, ringpipe.Point{x, y}, []byte("new engine"))
			require.NoError(t, err)
		}
	}
	require.NoError(t, e2.Flush(ctx, sp))
	require.NoError(t, e2.Flush(ctx, other))
	stop(t, e2)
	same("after a new engine wrote, flushed and stopped")
}
