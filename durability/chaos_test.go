package durability

// Suite 5 of issue 5: actor chaos. On the sim backend, 16 writers run the
// Workload (going on after errors) while an injector makes the five actors
// fail at their chaos points (internal/testhook), with an error or a
// panic chosen by a seeded rng, with the supervisor's restart limit raised
// so that the engine keeps restarting them. Each engine lifetime ends the
// same way: the injector goes, Sync, the Oracle checks the live engine,
// Stop, a power loss, Start, and the Oracle checks again; the next
// lifetime goes on with that engine, on the same disk, with the same
// Oracle. Every call is bounded by a context; one that runs out is a hang,
// counted as a violation.
//
// Then TestChaosEscalation: with the default restart limit, an actor that
// fails every time escalates: Put and Delete return ErrFailed, Get, Scan
// and View still work (the Oracle checks the failed engine), and Stop
// returns.
//
// CI form: lifetimes until at least chaosCIInjections failures were
// injected. Soak (RINGPIPE_SOAK=1): chaosSoakInjections, or until
// RINGPIPE_SOAK_DURATION. One seed: go test -run TestChaos$ ./durability
// -seed N -v.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/internal/testhook"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

const (
	chaosCIInjections   = 1000
	chaosSoakInjections = 200_000
	chaosWriters        = 16
	chaosLifetimes      = 8   // engine lifetimes per seed (each ends in a power loss)
	chaosMaxOps         = 120 // per writer and lifetime, should the budgets not run out first
	chaosRestartLimit   = 1 << 30
)

// chaosActors are the actors with chaos points, and the supervisor unit
// each restarts with.
var chaosActors = map[string]string{
	"submitter": "io", "completer": "io", "publisher": "publisher", "sealer": "sealer", "promoter": "promoter",
}

// chaosBudget is how many failures a unit gets per engine lifetime. The
// supervisor's backoff doubles with every restart of a unit inside its
// window (1 ms, 2 ms, ... up to 100 ms) and it waits it out before handling
// the next failure, so many short lifetimes inject faster than one long
// one: six restarts cost a unit about 63 ms.
var chaosBudget = map[string]int{"io": 8, "publisher": 6, "sealer": 6, "promoter": 6}

// chaosInjector is the testhook.Injector of one engine lifetime.
type chaosInjector struct {
	inflight *atomic.Int64 // I/O submitted and not yet reaped on the engine's rings

	mu     sync.Mutex
	rng    *rand.Rand
	prob   map[string]float64 // by actor: the chance that one chaos point fails
	budget map[string]int     // by unit: failures left
	counts map[string]int     // by "actor kind" (kind: error, panic)
	points map[string]int     // by "actor/point"
	withIO int                // injections while I/O was in flight
	total  int
	done   chan struct{} // closed when every budget is spent
}

func newChaosInjector(rng *rand.Rand, inflight *atomic.Int64) *chaosInjector {
	c := &chaosInjector{inflight: inflight, rng: rng, budget: maps.Clone(chaosBudget),
		counts: make(map[string]int), points: make(map[string]int), done: make(chan struct{}),
		prob: make(map[string]float64)}
	// Points come at very different rates (the submitter's at every
	// message, the sealer's at every seal): per-actor chances, drawn per
	// lifetime, so that failures land early and late in an actor's run.
	for a := range chaosActors {
		c.prob[a] = []float64{0.01, 0.05, 0.2}[rng.Intn(3)]
	}
	c.prob["sealer"] = 0.3
	return c
}

func (c *chaosInjector) inject(actor, point string) error {
	c.mu.Lock()
	u := chaosActors[actor]
	if c.budget[u] <= 0 || c.rng.Float64() >= c.prob[actor] {
		c.mu.Unlock()
		return nil
	}
	c.budget[u]--
	doPanic := c.rng.Intn(2) == 0
	kind := "error"
	if doPanic {
		kind = "panic"
	}
	c.counts[actor+" "+kind]++
	c.points[actor+"/"+point]++
	if c.inflight.Load() > 0 {
		c.withIO++
	}
	c.total++
	spent := true
	for _, n := range c.budget {
		spent = spent && n <= 0
	}
	if spent {
		close(c.done)
	}
	c.mu.Unlock()
	msg := fmt.Sprintf("chaos: injected %s in %s at %s", kind, actor, point)
	if doPanic {
		panic(msg)
	}
	return errors.New(msg)
}

// countingRing counts the operations submitted and not yet reaped, so that
// the suite can say how many failures came with I/O in flight.
type countingRing struct {
	ring.Ring
	n *atomic.Int64
}

func (r *countingRing) Submit(ops []ring.Op) error {
	err := r.Ring.Submit(ops)
	if err == nil {
		r.n.Add(int64(len(ops)))
	}
	return err
}

func (r *countingRing) Reap(out []ring.Completion) (int, error) {
	n, err := r.Ring.Reap(out)
	r.n.Add(-int64(n))
	return n, err
}

func (r *countingRing) TryReap(out []ring.Completion) (int, error) {
	n, err := r.Ring.TryReap(out)
	r.n.Add(-int64(n))
	return n, err
}

// chaosConfig is SimConfig with frequent seals (the sealer's points fire
// at seals) and rings that count I/O in flight.
func chaosConfig(disk *sim.Disk, inflight *atomic.Int64) ringpipe.Config {
	cfg := SimConfig(disk)
	cfg.SealThreshold = 8
	cfg.Preallocate = 1 << 20
	cfg.NewRing = func(o ring.Options) (ring.Ring, error) {
		return &countingRing{Ring: disk.NewRing(o), n: inflight}, nil
	}
	return cfg
}

// chaosTotals are the suite's figures.
type chaosTotals struct {
	seeds, lifetimes, injections, withIO int
	counts, points                       map[string]int
	restarts                             map[string]uint64
	ops, acked, failedOps, hangs         int
	stopErrors, recoveryFailures         int
	figures                              Figures
}

// chaosMix is the writers' mix: DefaultMix, Flush included. (Flush was
// left out in session 4 while a Flush could wait forever after injected
// failures: a seal hint taken by a sealer that then failed was never sent
// again; TestFlushWhileHotDirFull.)
func chaosMix() Mix { return DefaultMix }

// chaosOpTimeout bounds one call: longer than any healthy call under
// -race on two cores by far (restart backoffs are at most 100 ms).
const chaosOpTimeout = opTimeout

// chaosSeed runs up to lifetimes engine lifetimes on one disk, or until
// enough returns true. Problems go to t.Errorf with the seed.
func chaosSeed(t *testing.T, seed int64, lifetimes int, tot *chaosTotals, enough func() bool) {
	rng := newRand(seed)
	disk := NewSimDisk(seed)
	var inflight atomic.Int64
	cfg := chaosConfig(disk, &inflight)
	cfg.DirectIO = seed%2 == 1 // odd seeds write their logs O_DIRECT
	o := NewOracle()
	errorf := func(format string, args ...any) {
		t.Errorf("seed %d (replay: go test -run 'TestChaos$' ./durability -seed %d -v): %s", seed, seed, fmt.Sprintf(format, args...))
	}
	call := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), chaosOpTimeout)
	}
	ctx, cancel := call()
	e, err := ringpipe.Start(ctx, cfg)
	if err != nil {
		cancel()
		errorf("Start: %v", err)
		return
	}
	ids, err := CreateSpaces(ctx, e, o, Specs)
	cancel()
	if err != nil {
		kill(e)
		errorf("%v", err)
		return
	}
	tot.seeds++
	for life := 0; life < lifetimes && !enough(); life++ {
		ioerrSlowHot(disk) // space 2 goes staged: the promoter has work (power losses clear faults)
		inj := newChaosInjector(newRand(seed*7919+int64(life)), &inflight)
		undo := testhook.SetInjector(inj.inject)
		w := &Workload{Engine: e, Oracle: o, Spaces: ids, KeepGoing: true, MaxValue: 8 << 10, Mix: chaosMix()}
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i := range chaosWriters {
			wrng := newRand(seed*1_000_003 + int64(life)*101 + int64(i))
			wg.Go(func() {
				var ops, acked, failed, hangs int
				for n := 0; n < chaosMaxOps; n++ {
					select {
					case <-inj.done:
						n = chaosMaxOps
						continue
					default:
					}
					cctx, ccancel := call()
					st := w.Run(cctx, wrng, 1)
					if errors.Is(cctx.Err(), context.DeadlineExceeded) {
						hangs++
						errorf("lifetime %d: writer %d: an operation did not return within %v (%v): %s",
							life, i, chaosOpTimeout, st.Err, dumpGoroutines(seed))
					}
					ccancel()
					ops += st.Ops
					acked += st.Acked
					failed += st.Failed
					if hangs > 0 {
						break
					}
				}
				mu.Lock()
				tot.ops += ops
				tot.acked += acked
				tot.failedOps += failed
				tot.hangs += hangs
				mu.Unlock()
			})
		}
		wg.Wait()
		undo()

		inj.mu.Lock()
		tot.lifetimes++
		tot.injections += inj.total
		tot.withIO += inj.withIO
		for k, n := range inj.counts {
			tot.counts[k] += n
		}
		for k, n := range inj.points {
			tot.points[k] += n
		}
		inj.mu.Unlock()
		for a, n := range e.Stats().ActorRestarts {
			tot.restarts[a] += n
		}
		if tot.hangs > 0 {
			kill(e)
			return
		}

		// The injector is gone: the engine must settle and hold.
		ctx, cancel := call()
		if err := e.Sync(ctx); err != nil {
			errorf("lifetime %d: Sync after chaos: %v", life, err)
		}
		rep := o.Check(ctx, e)
		tot.figures.Add(rep.Figures)
		if err := rep.Err(); err != nil {
			errorf("lifetime %d: live engine after chaos: %v", life, err)
		}
		if err := e.Stop(ctx); err != nil {
			tot.stopErrors++
			errorf("lifetime %d: Stop: %v", life, err)
		}
		hung := errors.Is(ctx.Err(), context.DeadlineExceeded)
		cancel()
		if hung {
			tot.hangs++
			errorf("lifetime %d: Sync, Check or Stop did not return within %v", life, chaosOpTimeout)
			return
		}
		disk.PowerLoss(rng)
		ctx, cancel = call()
		e, err = ringpipe.Start(ctx, cfg)
		if err != nil {
			cancel()
			tot.recoveryFailures++
			errorf("lifetime %d: Start after the power loss: %v", life, err)
			return
		}
		rep = o.Check(ctx, e)
		cancel()
		tot.figures.Add(rep.Figures)
		if err := rep.Err(); err != nil {
			errorf("lifetime %d: after Stop, power loss and recovery: %v", life, err)
		}
		if t.Failed() {
			break
		}
	}
	ctx, cancel = call()
	defer cancel()
	if err := e.Stop(ctx); err != nil {
		tot.stopErrors++
		errorf("final Stop: %v", err)
	}
}

// TestChaos is suite 5.
func TestChaos(t *testing.T) {
	testhook.RestartLimit.Store(chaosRestartLimit)
	t.Cleanup(func() { testhook.RestartLimit.Store(0) })

	target := chaosCIInjections
	var deadline time.Time
	if soak() {
		target = chaosSoakInjections
		deadline = soakDeadline(t)
	}
	tot := &chaosTotals{counts: make(map[string]int), points: make(map[string]int), restarts: make(map[string]uint64)}
	enough := func() bool {
		return *seedFlag == 0 && (tot.injections >= target || (!deadline.IsZero() && time.Now().After(deadline)))
	}
	t0, cpu0 := time.Now(), cpuTime()
	for seed := int64(1); !enough() && !t.Failed(); seed++ {
		if *seedFlag != 0 {
			seed = *seedFlag
		}
		chaosSeed(t, seed, chaosLifetimes, tot, enough)
		if *seedFlag != 0 || seed > 10_000 {
			break
		}
	}
	el, cpu := time.Since(t0), cpuTime()-cpu0

	t.Logf("actor chaos: %d injected failures (%d with I/O in flight) in %d engine lifetimes over %d seeds, "+
		"%d writers, in %v (CPU %v)", tot.injections, tot.withIO, tot.lifetimes, tot.seeds, chaosWriters,
		el.Round(time.Millisecond), cpu.Round(time.Millisecond))
	var by []string
	for _, k := range slices.Sorted(maps.Keys(tot.counts)) {
		by = append(by, fmt.Sprintf("%s %d", k, tot.counts[k]))
	}
	t.Logf("  injected by actor and kind: %s", strings.Join(by, ", "))
	by = by[:0]
	for _, k := range slices.Sorted(maps.Keys(tot.points)) {
		by = append(by, fmt.Sprintf("%s %d", k, tot.points[k]))
	}
	t.Logf("  injected by point: %s", strings.Join(by, ", "))
	by = by[:0]
	var restarts uint64
	for _, k := range slices.Sorted(maps.Keys(tot.restarts)) {
		by = append(by, fmt.Sprintf("%s %d", k, tot.restarts[k]))
		restarts += tot.restarts[k]
	}
	t.Logf("  restarts: %d (%s)", restarts, strings.Join(by, ", "))
	f := tot.figures
	t.Logf("  operations %d, writes acknowledged %d, operations failed %d; checks %d (live and after a power loss)",
		tot.ops, tot.acked, tot.failedOps, f.Checks)
	t.Logf("  violations %d (%v), hangs %d, Stop errors %d, recovery failures %d",
		f.Violations(), f, tot.hangs, tot.stopErrors, tot.recoveryFailures)

	assert.Zero(t, f.Violations(), "violations")
	assert.Zero(t, tot.hangs, "hangs")
	assert.Zero(t, tot.recoveryFailures, "recovery failures")
	assert.Positive(t, tot.acked, "no write was acknowledged")
	if *seedFlag == 0 {
		assert.GreaterOrEqual(t, tot.injections, target, "injected failures")
		for a := range chaosActors {
			for _, kind := range []string{"error", "panic"} {
				assert.Positive(t, tot.counts[a+" "+kind], "no %s injected in the %s", kind, a)
			}
		}
		assert.Positive(t, tot.withIO, "no failure injected with I/O in flight")
	}
}

// TestChaosEscalation: with the default restart limit, an actor that fails
// at every chaos point (errors and panics in turn) exhausts it; then Put
// and Delete return ErrFailed, Get, Scan and View still work and show
// every acknowledged write (the Oracle checks the failed engine), and Stop
// returns. A Start after it (no injector) recovers everything.
func TestChaosEscalation(t *testing.T) {
	testhook.RestartLimit.Store(0) // the default limit
	for _, actor := range slices.Sorted(maps.Keys(chaosActors)) {
		t.Run(actor, func(t *testing.T) {
			chaosEscalate(t, actor)
		})
	}
}

func chaosEscalate(t *testing.T, actor string) {
	disk := NewSimDisk(7)
	var inflight atomic.Int64
	cfg := chaosConfig(disk, &inflight)
	ioerrSlowHot(disk) // the promoter only reaches its point with staged records
	e, err := ringpipe.Start(bugCtx(t), cfg)
	require.NoError(t, err)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			kill(e)
		}
	})
	o := NewOracle()
	ids, err := CreateSpaces(bugCtx(t), e, o, Specs)
	require.NoError(t, err)
	w := &Workload{Engine: e, Oracle: o, Spaces: ids, Mix: chaosMix(), MaxValue: 2 << 10}
	st := w.Run(bugCtx(t), newRand(7), 100)
	require.NoError(t, st.Err)

	var n atomic.Int64
	undo := testhook.SetInjector(func(a, point string) error {
		if a != actor {
			return nil
		}
		if n.Add(1)%2 == 0 {
			panic(fmt.Sprintf("chaos: injected panic in %s at %s", a, point))
		}
		return fmt.Errorf("chaos: injected error in %s at %s", a, point)
	})
	t.Cleanup(undo)

	// Write (KeepGoing) until a write returns ErrFailed. The failing
	// actor's points fire on the way: every write passes the submitter,
	// completer and publisher, every eighth record of a space is a seal,
	// and space 2's records are staged for the promoter. Each write is
	// bounded by its own context.
	w = &Workload{Engine: e, Oracle: o, Spaces: ids, Mix: Mix{Put: 3, Delete: 1}, MaxValue: 2 << 10, KeepGoing: true}
	rng := newRand(8)
	escalated := false
	for i := 0; i < 5000 && !escalated; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), chaosOpTimeout)
		st := w.Run(ctx, rng, 1)
		hung := errors.Is(ctx.Err(), context.DeadlineExceeded)
		cancel()
		if hung {
			t.Fatalf("write %d did not return within %v (%v): %s", i, chaosOpTimeout, st.Err, dumpGoroutines(7))
		}
		escalated = errors.Is(st.Err, ringpipe.ErrFailed)
	}
	require.True(t, escalated, "no write returned ErrFailed after %d injected failures", n.Load())
	restarts := e.Stats().ActorRestarts
	t.Logf("%s: escalated after %d injected failures; restarts %v", actor, n.Load(), restarts)
	assert.Equal(t, uint64(5), restarts[actor], "restarts of the %s before escalating (the default limit)", actor)

	// Writes are refused.
	_, err = e.Put(bugCtx(t), ids[0], ringpipe.Point{1}, []byte("after"))
	assert.ErrorIs(t, err, ringpipe.ErrFailed, "Put")
	_, err = e.Delete(bugCtx(t), ids[0], ringpipe.Point{1})
	assert.ErrorIs(t, err, ringpipe.ErrFailed, "Delete")

	// Reads work: the Oracle reads every point (Get) and space (Scan).
	// The writes that failed with the engine stay undecided until the
	// restart below: their bytes may have landed.
	rep := o.CheckLive(bugCtx(t), e)
	assert.NoError(t, rep.Err(), "the failed engine's reads")
	assert.Positive(t, rep.Acked, "acknowledged writes checked")
	v := e.View()
	for _, id := range ids {
		assert.NoError(t, v.Scan(id, FullBox(o.Spaces()[id]), func(ringpipe.Record) bool { return true }), "View.Scan")
	}

	// Stop returns (its error is the escalation's, or nil).
	ctx, cancel := context.WithTimeout(context.Background(), chaosOpTimeout)
	err = e.Stop(ctx)
	hung := errors.Is(ctx.Err(), context.DeadlineExceeded)
	cancel()
	stopped = true
	require.False(t, hung, "Stop did not return within %v", chaosOpTimeout)
	t.Logf("%s: Stop: %v", actor, err)
	undo()

	// And a restart recovers what was acknowledged.
	e2, err := ringpipe.Start(bugCtx(t), cfg)
	require.NoError(t, err)
	defer func() { assert.NoError(t, e2.Stop(bugCtx(t))) }()
	assert.NoError(t, o.Check(bugCtx(t), e2).Err(), "after a restart")
	_, err = e2.Put(bugCtx(t), ids[0], ringpipe.Point{1}, []byte("again"))
	assert.NoError(t, err, "Put after a restart")
}
