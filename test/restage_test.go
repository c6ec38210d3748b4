package test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
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

// TestStagedWriteSurvivesUnitRestart: a write rerouted to the staging WAL
// while the WAL rolls to a new segment, when an actor of the I/O unit
// fails just then, is staged by the restarted unit and acknowledged, not
// failed with the unit's context.Canceled (issue 4: "A request held by an
// actor when it fails is completed or failed, never dropped"; failing it
// was allowed, but the error read like the caller's own cancellation and
// nothing of the batch had been written). Found by ci11 in
// TestKnobBatchTimeoutActorRestart.
//
// The space's hot file stops answering, so its write misses
// DirectWriteTimeout and is rerouted; the WAL has no segment yet, so
// staging opens one, and that open is withheld; the completer then fails
// (chaos) and the supervisor restarts the submitter with it.
func TestStagedWriteSurvivesUnitRestart(t *testing.T) {
	disk := newSimDisk(t, 102)
	cfg := simConfig(t, disk)
	cfg.DirectWriteTimeout = 2 * time.Millisecond
	e, hr := startHeld(t, cfg, disk, func(r ring.Ring) *holdRing { return newHoldRing(r, 1) })
	ctx := ctxFor(t)
	sp := createSpace(t, e, "slow", 1, 16)
	require.Equal(t, ringpipe.SpaceID(1), sp)
	_, err := e.Put(ctx, sp, ringpipe.Point{0}, []byte("direct"))
	require.NoError(t, err)
	require.Zero(t, e.Stats().StagedWrites)

	var fired atomic.Int32
	undo := testhook.SetInjector(func(actor, point string) error {
		if actor == "completer" && point == "reaped" && hr.walOpensHeld() > 0 && fired.CompareAndSwap(0, 1) {
			return errors.New("restage test: the completer fails while the staging WAL rolls")
		}
		return nil
	})
	defer undo()
	tk := stageIntoHeldWALOpen(t, e, disk, hr, sp)
	require.NoError(t, hr.poke())
	waitFor(t, e, "the I/O unit restarted", func(st ringpipe.Stats) bool { return st.ActorRestarts["completer"] > 0 })
	_, err = tk.Wait(ctx)
	require.NoError(t, err, "a write being staged when its unit restarted")
	undo()
	st := e.Stats()
	assert.Equal(t, uint64(1), st.StagedWrites, "acknowledged from the staging WAL")
	assert.Positive(t, st.ActorRestarts["submitter"], "the submitter restarted with the completer")

	hr.release()
	disk.ClearFaults()
	stop(t, e)
	e = start(t, cfg)
	for p, want := range map[uint32]string{0: "direct", 1: "staged"} {
		r, err := e.Get(ctx, sp, ringpipe.Point{p})
		if assert.NoError(t, err, "point %d after restart", p) {
			assert.Equal(t, want, string(r.Value), "point %d", p)
		}
	}
	stop(t, e)
}

// stageIntoHeldWALOpen stalls sp's hot file and withholds the next
// staging WAL segment's open, then PutAsyncs point 1 = "staged": the write
// misses its deadline and is rerouted, and the WAL, which has no segment
// yet, opens one for it. It returns once that open is withheld.
func stageIntoHeldWALOpen(t *testing.T, e *ringpipe.Engine, disk *sim.Disk, hr *holdRing, sp ringpipe.SpaceID) *ringpipe.Ticket {
	t.Helper()
	disk.Inject(sim.Fault{Kind: sim.Delay, Delay: time.Hour, Path: hotPrefix(sp),
		Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync, ring.OpWrite, ring.OpWritev}, Persist: true})
	hr.holdWALOpen()
	hr.start()
	tk, err := e.PutAsync(ctxFor(t), sp, ringpipe.Point{1}, []byte("staged"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return hr.walOpensHeld() > 0 }, eventualTimeout, time.Millisecond,
		"the rerouted write's staging opens a WAL segment")
	return tk
}

// TestStagedWriteAtForcedStop: the same write, when Stop's ctx ends while
// the staging WAL's new segment does not open, fails with ErrStopped (the
// engine's state, which the caller must act on), not with the pipeline's
// context.Canceled.
func TestStagedWriteAtForcedStop(t *testing.T) {
	disk := newSimDisk(t, 103)
	cfg := simConfig(t, disk)
	cfg.DirectWriteTimeout = 2 * time.Millisecond
	e, hr := startHeld(t, cfg, disk, func(r ring.Ring) *holdRing { return newHoldRing(r, 1) })
	ctx := ctxFor(t)
	sp := createSpace(t, e, "slow", 1, 16)
	_, err := e.Put(ctx, sp, ringpipe.Point{0}, []byte("direct"))
	require.NoError(t, err)

	tk := stageIntoHeldWALOpen(t, e, disk, hr, sp)
	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	assert.Error(t, e.Stop(sctx), "Stop with a WAL open that does not finish")
	_, err = tk.Wait(ctx)
	assert.ErrorIs(t, err, ringpipe.ErrStopped, "the staged write Stop cut short")
	assert.NotErrorIs(t, err, context.Canceled, "the caller's ctx is fine")

	hr.release()
	disk.ClearFaults()
	e = start(t, cfg)
	_, err = e.Get(ctx, sp, ringpipe.Point{0})
	assert.NoError(t, err, "the acknowledged write")
	// Its hot copy was in flight when Stop gave up on it: a failed write's
	// outcome is unknown, so it may be there, whole.
	if r, err := e.Get(ctx, sp, ringpipe.Point{1}); err == nil {
		assert.Equal(t, "staged", string(r.Value))
	} else {
		assert.ErrorIs(t, err, ringpipe.ErrNotFound, "the write that failed")
	}
	stop(t, e)
}

// TestStartCreatesParentsDurably: Start creates a Dir whose parents are
// missing too, and every level's entry is durable: an acknowledged write
// survives a power loss right after it (sim: a directory entry not synced
// is lost with the power).
func TestStartCreatesParentsDurably(t *testing.T) {
	for seed := int64(31); seed < 31+seeds(4); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			disk := newSimDisk(t, seed)
			cfg := simConfig(t, disk)
			cfg.Dir = simDir + "/a/b/c"
			e, err := ringpipe.Start(ctxFor(t), cfg)
			require.NoError(t, err, "Start with missing parents")
			ctx := ctxFor(t)
			sp := createSpace(t, e, "s", 1, 8)
			_, err = e.Put(ctx, sp, ringpipe.Point{7}, []byte("kept"))
			require.NoError(t, err)
			disk.PowerLoss(rand.New(rand.NewSource(seed)))
			sctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			defer cancel()
			t.Logf("Stop after power loss: %v", e.Stop(sctx))
			e = start(t, cfg)
			r, err := e.Get(ctx, sp, ringpipe.Point{7})
			require.NoError(t, err, "the acknowledged write after the power loss")
			assert.Equal(t, "kept", string(r.Value))
			stop(t, e)
		})
	}
}
