package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// TestStalledPromotionDoesNotStallWriters: DESIGN.md §1 "a stalled hot
// segment file never stalls writers for longer than the deadline plus one
// WAL sync" holds while a promotion is in flight too. Records staged in
// one run are staged again by the next Start, whose space starts on its
// hot file (not slow); the promoter moves them into the hot file, and that
// file stops answering (in real time; holdRing) while the promotion is in
// flight. A Put into the space must still be acknowledged, from the
// staging WAL: the promotion's missed deadline marks the space slow, as a
// direct batch's does. (Before, promotions had no deadline, and the Put
// waited for the stalled promotion: the space was busy and not slow.)
func TestStalledPromotionDoesNotStallWriters(t *testing.T) {
	disk := newSimDisk(t, 111)
	cfg := simConfig(t, disk)
	cfg.PromoteInterval = time.Hour // nothing is promoted in the first run
	e := start(t, cfg)
	ctx := ctxFor(t)
	spec := ringpipe.SpaceSpec{Name: "s", Dims: 1, Bits: 16}
	sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
	m := newModel(spec)
	put := func(e *ringpipe.Engine, i int) {
		t.Helper()
		pctx, cancel := context.WithTimeout(ctx, hangTimeout)
		defer cancel()
		p := ringpipe.Point{uint32(i)}
		v := []byte{byte(i), 1}
		rev, err := e.Put(pctx, sp, p, v)
		require.NoError(t, err, "Put %d", i)
		m.add(write{point: p, rev: rev, value: v})
	}
	put(e, 0)
	stallHot(disk, sp)
	for i := 1; i <= 20; i++ {
		put(e, i)
	}
	require.Positive(t, e.Stats().StagedWrites, "writes were staged (precondition)")
	disk.ClearFaults()
	stop(t, e)

	cfg = simConfig(t, disk)
	cfg.PromoteInterval = 300 * time.Millisecond
	cfg.DirectWriteTimeout = 20 * time.Millisecond
	e, hr := startHeld(t, cfg, disk, func(r ring.Ring) *holdRing { return newHoldRing(r, sp) })
	// From before the first promotion tick: the hot file's writes take
	// an hour (the sim's notice of a missed deadline) and their
	// completions are withheld in real time.
	disk.Inject(sim.Fault{Kind: sim.Delay, Delay: time.Hour, Path: hotPrefix(sp),
		Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync, ring.OpWrite, ring.OpWritev}, Persist: true})
	hr.start()
	require.Positive(t, e.Stats().StagedPending, "the restart staged the records again (precondition)")
	require.Eventually(t, func() bool { return hr.heldCount() > 0 }, hangTimeout, time.Millisecond,
		"a promotion into the hot file is in flight and held")
	staged := e.Stats().StagedWrites
	put(e, 100)
	put(e, 101)
	assert.Equal(t, staged+2, e.Stats().StagedWrites, "the Puts were acknowledged from the staging WAL")

	disk.ClearFaults()
	hr.release()
	require.NoError(t, e.Flush(ctx, sp))
	checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
	stop(t, e)
	e = start(t, simConfig(t, disk))
	checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
	stop(t, e)
}

// TestFlushPromotesWithoutATick: a Flush promotes its space's staged
// records at once, whatever other spaces have staged, with no promoter
// tick due (PromoteInterval an hour). Before, the submitter's promotion
// loop stopped at the first space (in map order) with no budget and no
// Flush waiting, so a Flush of another space waited for the next tick.
func TestFlushPromotesWithoutATick(t *testing.T) {
	disk := newSimDisk(t, 112)
	cfg := simConfig(t, disk)
	cfg.PromoteInterval = time.Hour
	e := start(t, cfg)
	ctx := ctxFor(t)
	const spaces = 8
	var ids []ringpipe.SpaceID
	for i := range spaces {
		ids = append(ids, createSpace(t, e, fmt.Sprintf("s%d", i), 1, 16))
	}
	for _, sp := range ids {
		stallHot(disk, sp)
	}
	for i := range 4 {
		for _, sp := range ids {
			pctx, cancel := context.WithTimeout(ctx, hangTimeout)
			_, err := e.Put(pctx, sp, ringpipe.Point{uint32(i)}, []byte("v"))
			cancel()
			require.NoError(t, err)
		}
	}
	disk.ClearFaults()
	require.Positive(t, e.Stats().StagedPending, "writes were staged (precondition)")
	for _, sp := range ids {
		fctx, cancel := context.WithTimeout(ctx, hangTimeout)
		err := e.Flush(fctx, sp)
		cancel()
		require.NoError(t, err, "Flush of space %d", sp)
	}
	assert.Zero(t, e.Stats().StagedPending)
}
