package test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// faultRun writes from several goroutines into one space while faults are
// armed, then checks: the engine still takes writes after the fault is
// cleared, every acknowledged write is readable, and after a clean Stop, a
// power loss and a new Start every acknowledged write is there and every
// failed one is wholly present or wholly absent. It returns the errors the
// writers saw.
func faultRun(t *testing.T, seed int64, faults ...sim.Fault) []error {
	disk := newSimDisk(t, seed)
	cfg := simConfig(t, disk)
	e := start(t, cfg)
	ctx := ctxFor(t)
	spec := ringpipe.SpaceSpec{Name: "f", Dims: 2, Bits: 10}
	sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)

	var mu sync.Mutex
	var good acks
	var failed []attempt
	var errs []error
	writeAll := func(tag string, writers, per int) {
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				rng := rand.New(rand.NewSource(seed*1000 + int64(w)))
				for i := range per {
					p := ringpipe.Point{uint32(w), uint32(rng.Intn(1024))}
					v := fmt.Appendf(nil, "%s-w%d-%d", tag, w, i)
					rev, err := e.Put(ctx, sp, p, v)
					if err != nil {
						if !assert.NotErrorIs(t, err, context.DeadlineExceeded, "a Put hung") {
							return
						}
						mu.Lock()
						failed = append(failed, attempt{space: sp, point: p, value: v})
						errs = append(errs, err)
						mu.Unlock()
						continue
					}
					good.add(write{point: p, rev: rev, value: v})
				}
			})
		}
		wg.Wait()
	}

	writeAll("before", 4, 10)
	for _, f := range faults {
		disk.Inject(f)
	}
	writeAll("during", 8, 25)
	t.Logf("%d writes failed during the fault (%d hits); stats %+v", len(errs), len(disk.Hits()), e.Stats())
	require.NotEmpty(t, disk.Hits(), "the fault never fired")
	disk.ClearFaults()
	for _, err := range errs {
		assert.NotErrorIs(t, err, ringpipe.ErrFailed, "one fault must not exhaust the restart limit")
	}
	writeAll("after", 4, 10)
	require.Len(t, errs, len(failed))
	for _, f := range failed {
		assert.False(t, strings.HasPrefix(string(f.value), "after-"), "%s failed after the fault was cleared", f.value)
	}

	// Failed writes: whole or absent; overwrites by later acknowledged
	// writes to the same point make them unobservable, so check only
	// points no acknowledged write touched.
	m := good.model(t, spec)
	check := func(e *ringpipe.Engine) {
		checkModelLive(t, e, sp, m, failed)
	}
	check(e)
	stop(t, e)
	disk.PowerLoss(rand.New(rand.NewSource(seed)))
	e = start(t, cfg)
	check(e)
	stop(t, e)
	return errs
}

// checkModelLive checks every acknowledged write through Get and that each
// failed write at a point no acknowledged write touched is wholly present
// or absent.
func checkModelLive(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID, m *model, failed []attempt) {
	t.Helper()
	ctx := ctxFor(t)
	for _, w := range m.last {
		rec, err := e.Get(ctx, sp, w.point)
		if !assert.NoError(t, err, "acknowledged %v (rev %d) lost", w.point, w.rev) {
			continue
		}
		if rec.Revision != w.rev {
			// Only a failed write, later in revision order, may have won.
			found := false
			for _, f := range failed {
				found = found || (keyOf(f.point) == keyOf(w.point) && string(f.value) == string(rec.Value))
			}
			assert.True(t, found && rec.Revision > w.rev, "%v: rev %d %q, want rev %d %q", w.point, rec.Revision, rec.Value, w.rev, w.value)
			continue
		}
		assert.Equal(t, w.value, rec.Value)
	}
	for _, f := range failed {
		if _, ok := m.last[keyOf(f.point)]; ok {
			continue
		}
		rec, err := e.Get(ctx, sp, f.point)
		if err != nil {
			assert.ErrorIs(t, err, ringpipe.ErrNotFound)
			continue
		}
		ok := false
		for _, g := range failed {
			ok = ok || (keyOf(g.point) == keyOf(f.point) && string(g.value) == string(rec.Value))
		}
		assert.True(t, ok, "%v holds %q, which no write wrote whole", f.point, rec.Value)
	}
}

// TestFsyncFailure: one failed fdatasync of a hot segment fails its
// batch's writers (or reroutes them), the actor restarts, and the engine
// goes on.
func TestFsyncFailure(t *testing.T) {
	for seed := int64(41); seed < 41+seeds(4); seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			faultRun(t, seed, sim.Fault{Kind: sim.FsyncFail, Path: simDir + "/hot/", Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync}})
		})
	}
}

// TestWALFsyncFailure: the same for the staging WAL, with every hot sync
// slow so that writes go through the WAL.
func TestWALFsyncFailure(t *testing.T) {
	for seed := int64(51); seed < 51+seeds(4); seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			faultRun(t, seed,
				sim.Fault{Kind: sim.Delay, Delay: stallDelay, Persist: true, Path: simDir + "/hot/", Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync}},
				sim.Fault{Kind: sim.FsyncFail, Path: simDir + "/wal/", Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync}, Prob: 0.3})
		})
	}
}

// TestShortWrites: short writes are continued transparently.
func TestShortWrites(t *testing.T) {
	errs := faultRun(t, 61, sim.Fault{Kind: sim.ShortWrite, Prob: 0.5, Persist: true, Path: simDir + "/"})
	assert.Empty(t, errs, "a short write is no error")
}

// TestDiskFull: ENOSPC on every write reaches the writers as an error that
// says so, and clears when space returns.
func TestDiskFull(t *testing.T) {
	errs := faultRun(t, 71, sim.Fault{Kind: sim.ENOSPC, Persist: true, Path: simDir + "/",
		Ops: []ring.Opcode{ring.OpWrite, ring.OpWritev, ring.OpFallocate}})
	require.NotEmpty(t, errs)
	for _, err := range errs {
		assert.True(t, errors.Is(err, unix.ENOSPC), "error %v does not say the disk is full", err)
	}
}

// TestFsyncFailureThenPowerLoss: a failed fdatasync leaves the fate of its
// batch's bytes unknown (sim settles them applied, dropped or torn); the
// engine restarts its actor and goes on writing. A power cut soon after
// must still leave a directory that opens, with every write acknowledged
// before the cut. Writes go through the staging WAL ("wal": every hot sync
// is slow) or straight to the hot segments ("hot").
func TestFsyncFailureThenPowerLoss(t *testing.T) {
	for _, tc := range []struct {
		name  string
		path  string
		stall bool
		seeds int64
	}{
		{"wal", simDir + "/wal/", true, 60},
		{"hot", simDir + "/hot/", false, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for seed := int64(1); seed <= seeds(tc.seeds); seed++ {
				t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) { fsyncThenCut(t, seed, tc.path, tc.stall) })
			}
		})
	}
}

func fsyncThenCut(t *testing.T, seed int64, path string, stall bool) {
	disk := newSimDisk(t, seed)
	cfg := simConfig(t, disk)
	spec := ringpipe.SpaceSpec{Name: "s", Dims: 2, Bits: 10}
	// The cut comes after the n-th successful sync that follows the
	// failed one.
	var lost, failedSeen atomic.Bool
	cr := newCutRing(disk, seed, &lost, func(x ring.Completion) bool {
		isSync := !x.Deadline && (x.Code == ring.OpFdatasync || x.Code == ring.OpFsync)
		if isSync && x.Err != nil {
			failedSeen.Store(true)
		}
		return isSync && x.Err == nil && failedSeen.Load()
	})
	e, err := ringpipe.Start(ctxFor(t), cr.config(cfg))
	require.NoError(t, err)
	ctx := ctxFor(t)
	sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
	if stall {
		disk.Inject(sim.Fault{Kind: sim.Delay, Delay: stallDelay, Persist: true, Path: simDir + "/hot/", Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync}})
	}
	disk.Inject(sim.Fault{Kind: sim.FsyncFail, Path: path, Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync}, At: disk.OpCount() + 20})
	cr.arm(1 + rand.New(rand.NewSource(seed)).Int63n(6))

	var good acks
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 200 {
				p := ringpipe.Point{uint32(w), uint32(i)}
				v := fmt.Appendf(nil, "w%d-%d", w, i)
				rev, err := e.Put(ctx, sp, p, v)
				if err == nil && !lost.Load() {
					good.add(write{point: p, rev: rev, value: v})
				}
				if lost.Load() {
					return
				}
			}
		})
	}
	wg.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	err = e.Stop(sctx)
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "Stop hung")
	cut := true
	select {
	case <-cr.cut:
	default:
		cut = false
		disk.PowerLoss(rand.New(rand.NewSource(seed))) // the writers ran out first
	}
	fsyncFailed := 0
	for _, h := range disk.Hits() {
		if h.Kind == sim.FsyncFail {
			fsyncFailed++
		}
	}
	t.Logf("failed syncs %d, cut by the ring %v (%+v), %d acknowledged before it; Stop: %v", fsyncFailed, cut, cr.report, len(good.ws), err)

	e, err = ringpipe.Start(ctxFor(t), cfg)
	require.NoError(t, err, "Start after an fsync failure and a power loss")
	defer func() { assert.NoError(t, e.Stop(ctxFor(t))) }()
	for _, w := range good.model(t, spec).last {
		rec, err := e.Get(ctx, sp, w.point)
		if assert.NoError(t, err, "acknowledged %v lost", w.point) {
			assert.Equal(t, w.value, rec.Value)
		}
	}
}
