package test

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// stallDelay is the virtual time a stalled hot segment's I/O takes: far
// beyond the 2 ms DirectWriteTimeout, so every direct write to it misses
// its deadline.
const stallDelay = 200 * time.Millisecond

var routeSpec = ringpipe.SpaceSpec{Name: "slow", Dims: 2, Bits: 8}

// stallHot makes every sync and write of space's hot segment files take
// stallDelay more, until the disk's faults are cleared.
func stallHot(disk *sim.Disk, space ringpipe.SpaceID) {
	disk.Inject(sim.Fault{
		Kind:    sim.Delay,
		Delay:   stallDelay,
		Path:    hotPrefix(space),
		Ops:     []ring.Opcode{ring.OpFdatasync, ring.OpFsync, ring.OpWrite, ring.OpWritev},
		Persist: true,
	})
}

// routedWrites runs writers that each Put perWriter records, alternating
// between spaces slow and fast, and returns the models of both.
func routedWrites(t *testing.T, e *ringpipe.Engine, slow, fast ringpipe.SpaceID, writers, perWriter int, tag string) (ms, mf *acks) {
	t.Helper()
	ctx := ctxFor(t)
	ms, mf = new(acks), new(acks)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewSource(int64(w)))
			for i := range perWriter {
				sp, got := slow, ms
				if i%2 == 1 {
					sp, got = fast, mf
				}
				p := randPoint(rng, routeSpec)
				v := fmt.Appendf(nil, "%s-w%d-%d", tag, w, i)
				rev, err := e.Put(ctx, sp, p, v)
				if !assert.NoError(t, err, "writer %d put %d", w, i) {
					return
				}
				got.add(write{point: p, rev: rev, value: v})
			}
		})
	}
	wg.Wait()
	require.False(t, t.Failed(), "writers failed")
	return ms, mf
}

// TestDeadlineRouting: a space whose hot segment stalls keeps taking
// writes through the staging WAL; once the stall ends the promoter moves
// everything into the hot segments, and all of it survives a restart.
func TestDeadlineRouting(t *testing.T) {
	disk := newSimDisk(t, 11)
	cfg := simConfig(t, disk)
	cfg.DirectWriteTimeout = 2 * time.Millisecond
	e := start(t, cfg)
	slow := createSpace(t, e, "slow", routeSpec.Dims, routeSpec.Bits)
	fast := createSpace(t, e, "fast", routeSpec.Dims, routeSpec.Bits)

	// Warm up both hot segments unstalled.
	ws0, wf0 := routedWrites(t, e, slow, fast, 2, 10, "warm")
	assert.Zero(t, e.Stats().StagedWrites, "no staging without a stall")

	stallHot(disk, slow)
	ws1, wf1 := routedWrites(t, e, slow, fast, 8, 40, "stalled")
	st := e.Stats()
	t.Logf("during the stall: %+v", st)
	assert.Positive(t, st.StagedWrites, "writes to the stalled space were staged")
	assert.Positive(t, st.DirectWrites)
	assert.NotEmpty(t, disk.Hits(), "the stall fault fired")

	ms := merge(t, ws0, ws1)
	mf := merge(t, wf0, wf1)
	checkModel(t, engineReader(t, e), slow, ms, fullBox(routeSpec))
	checkModel(t, engineReader(t, e), fast, mf, fullBox(routeSpec))

	// The stall ends: everything staged is promoted.
	disk.ClearFaults()
	waitFor(t, e, "promotion of every staged write", func(st ringpipe.Stats) bool {
		return st.StagedPending == 0 && st.Promoted >= st.StagedWrites
	})
	checkModel(t, engineReader(t, e), slow, ms, fullBox(routeSpec))

	// The slow space goes back to direct writes.
	ctx := ctxFor(t)
	direct := e.Stats().DirectWrites
	rng := rand.New(rand.NewSource(12))
	deadline := time.Now().Add(eventualTimeout)
	for i := 0; e.Stats().DirectWrites == direct; i++ {
		require.True(t, time.Now().Before(deadline), "the slow space never went back to direct writes (%d writes): %+v", i, e.Stats())
		p := randPoint(rng, routeSpec)
		v := fmt.Appendf(nil, "recovered-%d", i)
		rev, err := e.Put(ctx, slow, p, v)
		require.NoError(t, err)
		ms.add(write{point: p, rev: rev, value: v})
	}
	stop(t, e)

	// Stop made all of it durable: a power loss now loses nothing.
	disk.PowerLoss(rand.New(rand.NewSource(11)))
	e = start(t, cfg)
	checkModel(t, engineReader(t, e), slow, ms, fullBox(routeSpec))
	checkModel(t, engineReader(t, e), fast, mf, fullBox(routeSpec))
	stop(t, e)
}

// TestStagedSurvivesPowerLoss: writes acknowledged from the staging WAL
// while their hot segment stalls survive a power loss before promotion.
func TestStagedSurvivesPowerLoss(t *testing.T) {
	for seed := int64(21); seed < 21+seeds(3); seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			disk := newSimDisk(t, seed)
			cfg := simConfig(t, disk)
			e, err := ringpipe.Start(ctxFor(t), cfg)
			require.NoError(t, err)
			slow := createSpace(t, e, "slow", routeSpec.Dims, routeSpec.Bits)
			fast := createSpace(t, e, "fast", routeSpec.Dims, routeSpec.Bits)

			stallHot(disk, slow)
			ws, wf := routedWrites(t, e, slow, fast, 8, 30, "stalled")
			st := e.Stats()
			t.Logf("before the power loss: %+v", st)
			assert.Positive(t, st.StagedWrites)

			disk.PowerLoss(rand.New(rand.NewSource(seed)))
			sctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			defer cancel()
			err = e.Stop(sctx)
			t.Logf("Stop after power loss: %v", err)
			assert.NotErrorIs(t, err, context.DeadlineExceeded, "Stop after a power loss hung")

			e = start(t, cfg)
			checkModel(t, engineReader(t, e), slow, ws.model(t, routeSpec), fullBox(routeSpec))
			checkModel(t, engineReader(t, e), fast, wf.model(t, routeSpec), fullBox(routeSpec))
			stop(t, e)
		})
	}
}

// merge builds one model of several batches of acknowledged writes.
func merge(t *testing.T, as ...*acks) *model {
	t.Helper()
	var all acks
	for _, a := range as {
		all.ws = append(all.ws, a.ws...)
	}
	return all.model(t, routeSpec)
}

// TestSyncTimedOnTheRingsClock: how long a hot sync took is measured on
// the clock the ring's operations take time on, the simulator's virtual
// one here, as the Op deadline that staged the write is. Before, it was
// the wall clock, on which a sim delay takes microseconds: a space whose
// hot file was stalled saw "fast" promotions, was routed back to its hot
// segment while still stalled (TestInlineCommitDeadline failed 4-6 runs in
// 100 under -race), and SyncLatency showed microseconds.
func TestSyncTimedOnTheRingsClock(t *testing.T) {
	disk := newSimDisk(t, 34)
	cfg := simConfig(t, disk)
	e := start(t, cfg)
	sp := createSpace(t, e, "slow", routeSpec.Dims, routeSpec.Bits)
	stallHot(disk, sp)
	_, err := e.Put(ctxFor(t), sp, ringpipe.Point{1, 1}, []byte("v"))
	require.NoError(t, err)
	require.Equal(t, uint64(1), e.Stats().StagedWrites, "precondition: the stalled write was staged")
	// Its hot copy lands later (or a promotion does): either is one
	// stalled DSync write, a delayed write and a delayed sync.
	waitFor(t, e, "the stalled write's hot copy", func(st ringpipe.Stats) bool { return st.StagedPending == 0 })
	assert.GreaterOrEqual(t, e.Stats().SyncLatency.Max, 2*stallDelay,
		"SyncLatency.Max after a hot write delayed by %v and its sync by as much", stallDelay)
}
