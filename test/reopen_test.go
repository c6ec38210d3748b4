package test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
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

// TestReopen: spaces, records, tombstones and revisions survive Stop and
// Start, and revisions keep increasing after a restart.
func TestReopen(t *testing.T) {
	cfg := realConfig(t, ringpipe.BackendAuto)
	rng := rand.New(rand.NewSource(3))
	specs := []ringpipe.SpaceSpec{
		{Name: "plane", Dims: 2, Bits: 5},
		{Name: "line", Dims: 1, Bits: 9},
	}
	ids := make([]ringpipe.SpaceID, len(specs))
	models := make([]*model, len(specs))
	var maxRev ringpipe.Revision

	e := start(t, cfg)
	ctx := ctxFor(t)
	for i, spec := range specs {
		ids[i] = createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
		models[i] = newModel(spec)
	}
	for i := range 600 {
		s := rng.Intn(len(specs))
		if i == 300 {
			require.NoError(t, e.Flush(ctx, ids[0])) // plane: part blocks, part tail
		}
		p := randPoint(rng, specs[s])
		var rev ringpipe.Revision
		var err error
		var v []byte
		if rng.Intn(5) == 0 {
			rev, err = e.Delete(ctx, ids[s], p)
		} else {
			v = fmt.Appendf(nil, "%d", i)
			rev, err = e.Put(ctx, ids[s], p, v)
		}
		require.NoError(t, err)
		models[s].add(write{point: p, rev: rev, value: v})
		maxRev = max(maxRev, rev)
	}
	spaces := e.Spaces()
	stop(t, e)

	// Twice: recovery of a cleanly stopped engine is idempotent.
	for round := range 2 {
		e = start(t, cfg)
		ctx = ctxFor(t)
		assert.Equal(t, spaces, e.Spaces(), "round %d", round)
		for i := range specs {
			checkModel(t, engineReader(t, e), ids[i], models[i], fullBox(specs[i]))
			again, err := e.CreateSpace(ctx, specs[i])
			require.NoError(t, err)
			assert.Equal(t, ids[i], again, "CreateSpace of an existing space after a restart")
		}
		assert.GreaterOrEqual(t, e.View().Revision(), maxRev)
		p := randPoint(rng, specs[0])
		v := fmt.Appendf(nil, "after restart %d", round)
		rev, err := e.Put(ctx, ids[0], p, v)
		require.NoError(t, err)
		assert.Greater(t, rev, maxRev, "revisions keep increasing after a restart")
		maxRev = rev
		models[0].add(write{point: p, rev: rev, value: v})
		stop(t, e)
	}

	// A space created after a restart gets an ID of its own.
	e = start(t, cfg)
	id, err := e.CreateSpace(ctxFor(t), ringpipe.SpaceSpec{Name: "third", Dims: 4, Bits: 16})
	require.NoError(t, err)
	assert.NotContains(t, ids, id)
	stop(t, e)
}

// TestStopWithWritersInFlight: Stop while writers run. Every Put either
// succeeded, and its record survives the restart, or failed with
// ErrStopped, and its record is wholly present or wholly absent.
func TestStopWithWritersInFlight(t *testing.T) {
	cfg := realConfig(t, ringpipe.BackendAuto)
	e := start(t, cfg)
	sp := createSpace(t, e, concSpec.Name, concSpec.Dims, concSpec.Bits)
	ctx := ctxFor(t)

	const writers = 8
	results := make([][]attempt, writers)
	var acked atomic.Int64
	enough := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range 2000 {
				p := ringpipe.Point{uint32(w), uint32(i)}
				v := fmt.Appendf(nil, "w%d-%d", w, i)
				rev, err := e.Put(ctx, sp, p, v)
				results[w] = append(results[w], attempt{point: p, rev: rev, value: v, acked: err == nil})
				if err != nil {
					assert.ErrorIs(t, err, ringpipe.ErrStopped, "writer %d put %d", w, i)
					return
				}
				if acked.Add(1) == 100 {
					once.Do(func() { close(enough) })
				}
			}
		})
	}
	select {
	case <-enough:
	case <-ctx.Done():
		require.FailNow(t, "writers made no progress")
	}
	require.NoError(t, e.Stop(ctx))
	wg.Wait()

	e = start(t, cfg)
	for w, rs := range results {
		for _, a := range rs {
			rec, err := e.Get(ctx, sp, a.point)
			if a.acked {
				if assert.NoError(t, err, "writer %d: acknowledged %v lost", w, a.point) {
					assert.Equal(t, a.rev, rec.Revision)
					assert.Equal(t, a.value, rec.Value)
				}
			} else if err == nil {
				assert.Equal(t, a.value, rec.Value, "a failed write is present whole or not at all")
			} else {
				assert.ErrorIs(t, err, ringpipe.ErrNotFound)
			}
		}
	}
	stop(t, e)
}

// TestPowerLossAfterStop: what a clean Stop returned for is durable, so a
// power loss right after it loses nothing.
func TestPowerLossAfterStop(t *testing.T) {
	disk := newSimDisk(t, 4)
	cfg := simConfig(t, disk)
	e := start(t, cfg)
	spec := ringpipe.SpaceSpec{Name: "s", Dims: 2, Bits: 6}
	sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
	m := newModel(spec)
	ctx := ctxFor(t)
	rng := rand.New(rand.NewSource(4))
	var tickets []*ringpipe.Ticket
	var ws []write
	for i := range 300 {
		p := randPoint(rng, spec)
		v := fmt.Appendf(nil, "%d", i)
		tk, err := e.PutAsync(ctx, sp, p, v)
		require.NoError(t, err)
		tickets = append(tickets, tk)
		ws = append(ws, write{point: p, value: v})
	}
	stop(t, e)
	for i, tk := range tickets {
		select {
		case <-tk.Done():
		default:
			require.FailNow(t, "Stop returned before acknowledging what it accepted", "ticket %d", i)
		}
		rev, err := tk.Wait(ctx)
		require.NoError(t, err, "ticket %d", i)
		ws[i].rev = rev
		m.add(ws[i])
	}
	disk.PowerLoss(rand.New(rand.NewSource(4)))

	e = start(t, cfg)
	checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
	stop(t, e)
}

// TestPowerLoss: power is cut while writers run, at a moment when written
// bytes are not yet synced. After a new Start on the same disk every write
// acknowledged before the cut is there with its revision; a write in flight
// is wholly present or wholly absent, never torn and never applied twice;
// recovery is idempotent.
func TestPowerLoss(t *testing.T) {
	for seed := int64(1); seed <= seeds(12); seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) { powerLossRun(t, seed, false) })
	}
}

// TestCrash is TestPowerLoss with a process kill instead: the page cache
// survives, so everything written is there, synced or not.
func TestCrash(t *testing.T) {
	for seed := int64(31); seed < 31+seeds(4); seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) { powerLossRun(t, seed, true) })
	}
}

// cutRing is a simulated ring that cuts its disk's power (or, with crash,
// kills the process) right after the Reap that hands back the n-th
// completion that match accepts. With match = writeDone the cut finds that
// write's bytes (and often other files' too) in the page cache, their syncs
// not yet done.
type cutRing struct {
	ring.Ring
	disk   *sim.Disk
	rng    *rand.Rand
	match  func(ring.Completion) bool
	crash  bool
	left   atomic.Int64 // matches to go; counting starts when arm sets it
	lost   *atomic.Bool // set just before the cut
	cut    chan struct{}
	report sim.LossReport // written before cut is closed
}

func newCutRing(disk *sim.Disk, seed int64, lost *atomic.Bool, match func(ring.Completion) bool) *cutRing {
	return &cutRing{disk: disk, rng: rand.New(rand.NewSource(seed)), match: match, lost: lost, cut: make(chan struct{})}
}

// writeDone matches a successful write.
func writeDone(x ring.Completion) bool {
	return !x.Deadline && x.Err == nil && (x.Code == ring.OpWrite || x.Code == ring.OpWritev)
}

// anyDone matches any final completion.
func anyDone(x ring.Completion) bool { return !x.Deadline }

// config returns cfg with its rings made by c (one engine's worth).
func (c *cutRing) config(cfg ringpipe.Config) ringpipe.Config {
	cfg.NewRing = func(o ring.Options) (ring.Ring, error) {
		if c.Ring != nil {
			// The engine's other rings (block reads) are plain.
			return c.disk.NewRing(o), nil
		}
		c.Ring = c.disk.NewRing(o)
		return c, nil
	}
	return cfg
}

func (c *cutRing) arm(n int64) { c.left.Store(n) }

func (c *cutRing) Reap(out []ring.Completion) (int, error) {
	n, err := c.Ring.Reap(out)
	c.reaped(out[:n])
	return n, err
}

func (c *cutRing) TryReap(out []ring.Completion) (int, error) {
	n, err := c.Ring.TryReap(out)
	c.reaped(out[:n])
	return n, err
}

func (c *cutRing) reaped(cs []ring.Completion) {
	for _, x := range cs {
		if !c.match(x) || c.left.Load() <= 0 || c.left.Add(-1) != 0 {
			continue
		}
		c.lost.Store(true)
		if c.crash {
			c.disk.Crash()
		} else {
			c.report = c.disk.PowerLoss(c.rng)
		}
		close(c.cut)
	}
}

// attempt is one write a test tried.
type attempt struct {
	space   ringpipe.SpaceID
	point   ringpipe.Point
	value   []byte
	rev     ringpipe.Revision // when acked
	acked   bool              // Put returned nil
	certain bool              // acked before the power was cut
}

func (a *attempt) key() pkey { return pkey(fmt.Sprintf("%d/%v", a.space, a.point)) }

// plSpec is the shape of the power-loss test's spaces.
var plSpec = ringpipe.SpaceSpec{Dims: 2, Bits: 8}

// plValue is a value of 10 to 2000 bytes that starts with a unique tag, so
// that a torn one cannot pass for a whole one.
func plValue(rng *rand.Rand, tag string) []byte {
	v := []byte(tag + "|")
	for n := rng.Intn(2000); len(v) < n; {
		v = append(v, byte('a'+len(v)%26))
	}
	return v
}

func powerLossRun(t *testing.T, seed int64, crash bool) {
	disk := newSimDisk(t, seed)
	cfg := simConfig(t, disk)
	cfg.SealThreshold = 32 // seals happen during the run too

	var lost atomic.Bool
	cr := newCutRing(disk, seed, &lost, writeDone)
	cr.crash = crash
	e, err := ringpipe.Start(ctxFor(t), cr.config(cfg))
	require.NoError(t, err)
	stopped := false
	defer func() {
		if !stopped {
			ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			defer cancel()
			_ = e.Stop(ctx)
		}
	}()
	ctx := ctxFor(t)
	var spaces []ringpipe.SpaceID
	for i := range 3 {
		spaces = append(spaces, createSpace(t, e, fmt.Sprintf("pl%d", i), plSpec.Dims, plSpec.Bits))
	}

	var mu sync.Mutex // guards all
	var all []attempt
	record := func(a attempt) {
		mu.Lock()
		defer mu.Unlock()
		all = append(all, a)
	}
	rng := rand.New(rand.NewSource(seed))

	// Certain writes: synchronous Puts, a Flush, async Puts and a Sync.
	for i := range 40 {
		a := attempt{space: spaces[i%3], point: ringpipe.Point{uint32(200 + i%10), uint32(i)}, value: plValue(rng, fmt.Sprintf("sync-%d", i))}
		a.rev, err = e.Put(ctx, a.space, a.point, a.value)
		require.NoError(t, err)
		a.acked, a.certain = true, true
		record(a)
	}
	require.NoError(t, e.Flush(ctx, spaces[0]))
	var tickets []*ringpipe.Ticket
	var pending []attempt
	for i := range 40 {
		a := attempt{space: spaces[i%3], point: ringpipe.Point{uint32(210 + i%10), uint32(i)}, value: plValue(rng, fmt.Sprintf("async-%d", i))}
		tk, err := e.PutAsync(ctx, a.space, a.point, a.value)
		require.NoError(t, err)
		tickets = append(tickets, tk)
		pending = append(pending, a)
	}
	require.NoError(t, e.Sync(ctx))
	for i, tk := range tickets {
		rev, err := tk.Wait(ctx)
		require.NoError(t, err)
		pending[i].rev, pending[i].acked, pending[i].certain = rev, true, true
		record(pending[i])
	}

	// Some hot-segment syncs are slow (virtual time): they overlap with
	// other files' writes, and some miss their deadline, so the staging
	// WAL is in play at the cut too. The power loss disarms the fault.
	disk.Inject(sim.Fault{Kind: sim.Delay, Delay: 3 * time.Millisecond, Prob: 0.2, Persist: true,
		Path: simDir + "/hot/", Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync}})

	// Writers, and the cut while they run. A writer that sees lost unset
	// after its Put returned knows the ack came before the cut.
	cr.arm(20 + rng.Int63n(150))
	var wg sync.WaitGroup
	const writers = 8
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewSource(seed*100 + int64(w)))
			after := 0
			for i := range 5000 {
				a := attempt{space: spaces[rng.Intn(len(spaces))], value: plValue(rng, fmt.Sprintf("w%d-%d", w, i))}
				if w%2 == 0 {
					a.point = ringpipe.Point{uint32(w), uint32(i % 64)} // a writer's own points, overwritten
				} else {
					a.point = ringpipe.Point{uint32(100 + rng.Intn(4)), uint32(rng.Intn(4))} // shared
				}
				rev, err := e.Put(ctx, a.space, a.point, a.value)
				a.rev, a.acked = rev, err == nil
				a.certain = a.acked && !lost.Load()
				record(a)
				if err != nil {
					assert.NotErrorIs(t, err, context.DeadlineExceeded, "a Put hung after the power loss")
					return
				}
				if lost.Load() {
					if after++; after > 3 {
						return
					}
				}
			}
		})
	}
	select {
	case <-cr.cut:
	case <-ctx.Done():
		require.FailNow(t, "the power was never cut")
	}
	wg.Wait()
	t.Logf("power loss: %+v; stats %+v", cr.report, e.Stats())

	// Stop returns, possibly with an error, and releases everything.
	sctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	t0 := time.Now()
	err = e.Stop(sctx)
	stopped = true
	t.Logf("Stop after power loss: %v (%v)", err, time.Since(t0))
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "Stop after a power loss hung")

	// Odd seeds: the power fails again during recovery, after a few of its
	// I/Os. That Start may fail or succeed; the next recovery must not care.
	if seed%2 == 1 {
		var lost2 atomic.Bool
		cr2 := newCutRing(disk, seed+1000, &lost2, anyDone)
		cr2.arm(1 + rng.Int63n(200))
		e1, err := ringpipe.Start(ctxFor(t), cr2.config(cfg))
		if err == nil {
			err = e1.Stop(sctx)
		}
		cut := false
		select {
		case <-cr2.cut:
			cut = true
		default:
		}
		t.Logf("recovery with a power loss inside (cut: %v): %v", cut, err)
		assert.NotErrorIs(t, err, context.DeadlineExceeded, "a recovery hung on a power loss")
	}

	// Recover, check, stop cleanly, recover again: the same state.
	e2 := start(t, cfg)
	state1, maxRev := checkPowerLoss(t, e2, spaces, all)
	stop(t, e2)

	e3 := start(t, cfg)
	for i, sp := range spaces {
		assert.Equal(t, state1[i], scanAll(t, e3, sp, plSpec), "a second recovery gives the same state")
	}
	rev, err := e3.Put(ctxFor(t), spaces[0], ringpipe.Point{255, 255}, []byte("after"))
	require.NoError(t, err)
	assert.Greater(t, rev, maxRev, "revisions resume above every revision recovered or acknowledged")
	stop(t, e3)
}

// checkPowerLoss checks the recovered engine against every attempt and
// returns what each space holds and the highest revision seen anywhere.
func checkPowerLoss(t *testing.T, e *ringpipe.Engine, spaces []ringpipe.SpaceID, all []attempt) ([][]ringpipe.Record, ringpipe.Revision) {
	t.Helper()
	ctx := ctxFor(t)
	byPoint := make(map[pkey][]attempt)
	var maxRev ringpipe.Revision
	nCertain := 0
	for _, a := range all {
		byPoint[a.key()] = append(byPoint[a.key()], a)
		if a.acked {
			maxRev = max(maxRev, a.rev)
		}
		if a.certain {
			nCertain++
		}
	}
	t.Logf("%d attempts, %d acknowledged before the cut, %d points", len(all), nCertain, len(byPoint))
	bad := 0
	for k, as := range byPoint {
		var newest *attempt // the newest write acknowledged before the cut
		for i := range as {
			if as[i].certain && (newest == nil || as[i].rev > newest.rev) {
				newest = &as[i]
			}
		}
		rec, err := e.Get(ctx, as[0].space, as[0].point)
		if err != nil {
			require.ErrorIs(t, err, ringpipe.ErrNotFound, "Get %s", k)
			if !assert.Nil(t, newest, "%s: acknowledged write (rev %d) lost", k, revOf(newest)) {
				bad++
			}
			continue
		}
		maxRev = max(maxRev, rec.Revision)
		var from *attempt
		for i := range as {
			if bytes.Equal(as[i].value, rec.Value) {
				from = &as[i]
			}
		}
		if !assert.NotNil(t, from, "%s: value %.40q... was never written (torn?)", k, rec.Value) {
			bad++
			continue
		}
		if from.acked {
			assert.Equal(t, from.rev, rec.Revision, "%s: %.20q came back with another revision (applied twice?)", k, rec.Value)
		}
		if newest != nil {
			if !assert.GreaterOrEqual(t, rec.Revision, newest.rev, "%s: older than the acknowledged %.20q", k, newest.value) {
				bad++
			}
		}
		if bad > 5 {
			t.FailNow()
		}
	}
	states := make([][]ringpipe.Record, len(spaces))
	for i, sp := range spaces {
		states[i] = scanAll(t, e, sp, plSpec)
		for _, r := range states[i] {
			a := attempt{space: sp, point: r.Point}
			_, ok := byPoint[a.key()]
			assert.True(t, ok, "Scan returned %v, a point never written", r.Point)
		}
	}
	return states, maxRev
}

func revOf(a *attempt) ringpipe.Revision {
	if a == nil {
		return 0
	}
	return a.rev
}

func scanAll(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID, spec ringpipe.SpaceSpec) []ringpipe.Record {
	t.Helper()
	var out []ringpipe.Record
	require.NoError(t, e.Scan(ctxFor(t), sp, fullBox(spec), func(r ringpipe.Record) bool {
		out = append(out, r)
		return true
	}))
	return out
}
