package test

// Review audit: fresh eyes on the day's engine changes (the promoter's
// kick, the sealer's disk-full handling, the manifest's stale files, the
// WAL's oversize last segment, failPending's completer finish).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

var rvSpec = ringpipe.SpaceSpec{Name: "rv", Dims: 2, Bits: 12}

// rvConfig is a quiet sim Config.
func rvConfig(t *testing.T, disk *sim.Disk) ringpipe.Config {
	cfg := simConfig(t, disk)
	cfg.Logger = zap.NewNop()
	return cfg
}

// rvHotFull makes every op that allocates or writes under hot/ fail with
// ENOSPC (a disk with no room for a new hot file).
func rvHotFull(disk *sim.Disk) {
	disk.Inject(sim.Fault{Kind: sim.ENOSPC, Persist: true, Path: simDir + "/hot/",
		Ops: []ring.Opcode{ring.OpFallocate, ring.OpWrite, ring.OpWritev, ring.OpOpen, ring.OpRename}})
}

// rvEventually polls fn until it returns nil or d passes; it returns the
// last error.
func rvEventually(d time.Duration, fn func() error) error {
	end := time.Now().Add(d)
	for {
		err := fn()
		if err == nil || time.Now().After(end) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rvCall runs fn with a context bounded by d and reports whether it
// returned in time (a hang is reported as context.DeadlineExceeded).
func rvCall(d time.Duration, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return fn(ctx)
}

// TestReviewCreateSpaceDiskFullRoomReturns: a CreateSpace whose first hot
// file meets a full disk answers ENOSPC; the space is listed, a write to it
// fails (no hang), a Flush answers (no hang); once room returns the sealer
// makes the file by itself, writes succeed and survive a restart.
func TestReviewCreateSpaceDiskFullRoomReturns(t *testing.T) {
	disk := newSimDisk(t, 11)
	cfg := rvConfig(t, disk)
	e := start(t, cfg)
	rvHotFull(disk)
	_, err := e.CreateSpace(ctxFor(t), rvSpec)
	require.Error(t, err, "CreateSpace on a full disk")
	assert.ErrorIs(t, err, unix.ENOSPC)
	var id ringpipe.SpaceID
	found := false
	for _, s := range e.Spaces() {
		if s.Name == rvSpec.Name {
			id, found = s.ID, true
		}
	}
	require.True(t, found, "Spaces() lists the space whose manifest edit is durable: %v", e.Spaces())

	err = rvCall(5*time.Second, func(ctx context.Context) error {
		_, err := e.Put(ctx, id, ringpipe.Point{1, 1}, []byte("full"))
		return err
	})
	require.NotErrorIs(t, err, context.DeadlineExceeded, "a Put into a space without a hot file hangs")
	t.Logf("Put while the disk is full: %v", err)
	ferr := rvCall(5*time.Second, func(ctx context.Context) error { return e.Flush(ctx, id) })
	require.NotErrorIs(t, ferr, context.DeadlineExceeded, "a Flush of a space without a hot file hangs")
	t.Logf("Flush while the disk is full: %v", ferr)

	disk.ClearFaults()
	var rev ringpipe.Revision
	err = rvEventually(10*time.Second, func() error {
		var err error
		rev, err = e.Put(ctxFor(t), id, ringpipe.Point{2, 2}, []byte("room again"))
		return err
	})
	require.NoError(t, err, "a Put into the space 10 s after room returned (the sealer should retry with backoff <= 1 s)")
	require.NoError(t, e.Flush(ctxFor(t), id), "Flush after room returned")
	id2, err := e.CreateSpace(ctxFor(t), rvSpec)
	require.NoError(t, err, "CreateSpace again with the same spec")
	assert.Equal(t, id, id2)
	stop(t, e)

	e = start(t, cfg)
	rec, err := e.Get(ctxFor(t), id, ringpipe.Point{2, 2})
	require.NoError(t, err, "Get after restart")
	assert.Equal(t, rev, rec.Revision)
	assert.Equal(t, []byte("room again"), rec.Value)
	stop(t, e)
}

// TestReviewCreateSpaceDiskFullRestart: the engine stops while a space
// created on a full disk has no hot file yet; the next Start (with room)
// must give it one: writes succeed, nothing from before is lost.
func TestReviewCreateSpaceDiskFullRestart(t *testing.T) {
	disk := newSimDisk(t, 12)
	cfg := rvConfig(t, disk)
	e := start(t, cfg)
	other := createSpace(t, e, "other", 2, 12)
	orev, err := e.Put(ctxFor(t), other, ringpipe.Point{3, 3}, []byte("before"))
	require.NoError(t, err)
	rvHotFull(disk)
	_, err = e.CreateSpace(ctxFor(t), rvSpec)
	require.ErrorIs(t, err, unix.ENOSPC)
	err = rvCall(opTimeout, func(ctx context.Context) error { return e.Stop(ctx) })
	require.NoError(t, err, "Stop while a space waits for its first hot file")
	disk.ClearFaults()

	e = start(t, cfg)
	var id ringpipe.SpaceID
	for _, s := range e.Spaces() {
		if s.Name == rvSpec.Name {
			id = s.ID
		}
	}
	require.NotZero(t, id, "the space after a restart: %v", e.Spaces())
	rev, err := e.Put(ctxFor(t), id, ringpipe.Point{4, 4}, []byte("after"))
	require.NoError(t, err, "Put into the space after a restart with room")
	rec, err := e.Get(ctxFor(t), other, ringpipe.Point{3, 3})
	require.NoError(t, err)
	assert.Equal(t, orev, rec.Revision)
	require.NoError(t, e.Flush(ctxFor(t), id))
	stop(t, e)
	e = start(t, cfg)
	rec, err = e.Get(ctxFor(t), id, ringpipe.Point{4, 4})
	require.NoError(t, err)
	assert.Equal(t, rev, rec.Revision)
	stop(t, e)
}

// TestReviewRecoveredStagedPromoted: records staged in the WAL that a
// restart finds (re-staged by recovery) must be promoted without any new
// write kicking the promoter.
func TestReviewRecoveredStagedPromoted(t *testing.T) {
	disk := newSimDisk(t, 13)
	cfg := rvConfig(t, disk)
	cfg.PromoteInterval = time.Hour // life 1: nothing promoted
	e := start(t, cfg)
	sp := createSpace(t, e, "s", 2, 12)
	laNoHotWrites(disk, sp)
	want := map[int]ringpipe.Revision{}
	for i := range 20 {
		rev, err := e.Put(ctxFor(t), sp, ringpipe.Point{uint32(i), 1}, fmt.Appendf(nil, "v%d", i))
		require.NoError(t, err)
		want[i] = rev
	}
	require.Positive(t, e.Stats().StagedWrites, "precondition: writes were staged")
	stop(t, e)
	disk.ClearFaults()

	cfg.PromoteInterval = 0 // the default
	e = start(t, cfg)
	require.Positive(t, e.Stats().StagedPending, "precondition: recovery staged records again")
	waitFor(t, e, "records re-staged at Start promoted with no new write", func(s ringpipe.Stats) bool {
		return s.StagedPending == 0
	})
	require.NoError(t, e.Flush(ctxFor(t), sp), "Flush")
	for i, rev := range want {
		rec, err := e.Get(ctxFor(t), sp, ringpipe.Point{uint32(i), 1})
		require.NoError(t, err)
		assert.Equal(t, rev, rec.Revision)
	}
	stop(t, e)
}

// TestReviewFlushWaitsForPromotion: a Flush of a space whose writes are
// staged (the hot file stalled) must return once the stall clears, without
// another write to kick the promoter.
func TestReviewFlushWaitsForPromotion(t *testing.T) {
	disk := newSimDisk(t, 14)
	cfg := rvConfig(t, disk)
	e := start(t, cfg)
	sp := createSpace(t, e, "s", 2, 12)
	stallHot(disk, sp)
	for i := range 10 {
		_, err := e.Put(ctxFor(t), sp, ringpipe.Point{uint32(i), 2}, []byte("staged"))
		require.NoError(t, err)
	}
	require.Positive(t, e.Stats().StagedWrites, "precondition: writes were staged")
	disk.ClearFaults()
	err := rvCall(opTimeout, func(ctx context.Context) error { return e.Flush(ctx, sp) })
	require.NoError(t, err, "Flush of a space with staged records after its disk recovered")
	waitFor(t, e, "staged records promoted", func(s ringpipe.Stats) bool { return s.StagedPending == 0 })
	stop(t, e)
}

// rvPowerLossCheck starts cfg on disk and checks every acknowledged record.
func rvCheck(t *testing.T, cfg ringpipe.Config, sp ringpipe.SpaceID, acked map[uint32]ringpipe.Revision, what string) []string {
	t.Helper()
	e, err := ringpipe.Start(ctxFor(t), cfg)
	if err != nil {
		return []string{fmt.Sprintf("%s: Start: %v", what, err)}
	}
	defer func() { _ = e.Stop(ctxFor(t)) }()
	var bad []string
	for i, rev := range acked {
		rec, err := e.Get(ctxFor(t), sp, ringpipe.Point{i, 0})
		if err != nil || rec.Revision != rev || !bytes.Equal(rec.Value, fmt.Appendf(nil, "v%d", i)) {
			bad = append(bad, fmt.Sprintf("%s: point %d: Get %v rev %d, want rev %d", what, i, err, rec.Revision, rev))
		}
	}
	return bad
}

// TestReviewWALOversizePowerLossAtRoll: a WAL whose last segment is larger
// than today's SegmentSize (Preallocate lowered) is left closed at Open and
// the first staged batch rolls. A power loss at any op from that roll on
// must lose no acknowledged write, old or new.
func TestReviewWALOversizePowerLossAtRoll(t *testing.T) {
	life1 := func(t *testing.T) (*sim.Disk, ringpipe.Config, ringpipe.SpaceID, map[uint32]ringpipe.Revision) {
		disk := newSimDisk(t, 15)
		cfg := rvConfig(t, disk)
		cfg.Preallocate = 1 << 20
		cfg.PromoteInterval = time.Hour
		e := start(t, cfg)
		sp := createSpace(t, e, "s", 2, 12)
		laNoHotWrites(disk, sp)
		acked := map[uint32]ringpipe.Revision{}
		for i := range uint32(10) {
			rev, err := e.Put(ctxFor(t), sp, ringpipe.Point{i, 0}, fmt.Appendf(nil, "v%d", i))
			require.NoError(t, err)
			acked[i] = rev
		}
		require.Positive(t, e.Stats().StagedWrites)
		stop(t, e)
		cfg.Preallocate = 64 << 10
		return disk, cfg, sp, acked
	}
	// Life 2: the hot file still stalled, so the new writes are staged
	// and roll the WAL.
	work := func(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID, acked map[uint32]ringpipe.Revision) {
		for i := uint32(10); i < 20; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			rev, err := e.Put(ctx, sp, ringpipe.Point{i, 0}, fmt.Appendf(nil, "v%d", i))
			cancel()
			if err != nil {
				return
			}
			acked[i] = rev
		}
	}
	// Count life 2's ops.
	disk, cfg, sp, acked := life1(t)
	e := start(t, cfg)
	laNoHotWrites(disk, sp)
	n0 := disk.OpCount()
	work(t, e, sp, acked)
	ops := disk.OpCount() - n0
	require.Len(t, acked, 20)
	stop(t, e)
	disk.ClearFaults()
	require.Empty(t, rvCheck(t, rvConfig(t, disk), sp, acked, "no crash"))
	if ops > 60 {
		ops = 60
	}
	var bad []string
	for k := range ops {
		disk, cfg, sp, acked := life1(t)
		e, err := ringpipe.Start(ctxFor(t), cfg)
		require.NoError(t, err)
		laNoHotWrites(disk, sp)
		at := disk.OpCount() + 1 + k
		disk.Inject(sim.Fault{Kind: sim.EIO, At: at, Persist: true})
		work(t, e, sp, acked)
		disk.PowerLoss(rand.New(rand.NewSource(int64(k))))
		_ = rvCall(opTimeout, func(ctx context.Context) error { return e.Stop(ctx) })
		disk.ClearFaults()
		c := rvConfig(t, disk)
		c.Preallocate = 64 << 10
		bad = append(bad, rvCheck(t, c, sp, acked, fmt.Sprintf("power loss at op %d of life 2", k))...)
	}
	t.Logf("%d crash points", ops)
	assert.Empty(t, bad, "acknowledged writes lost")
}

// TestReviewWALOversizeRetiredRestart: the oversize segment left closed at
// Open is retired once its records are promoted, before any new batch: the
// WAL then has no segment at all. Restarts and writes after that must keep
// revisions increasing and lose nothing.
func TestReviewWALOversizeRetiredRestart(t *testing.T) {
	disk := newSimDisk(t, 16)
	cfg := rvConfig(t, disk)
	cfg.Preallocate = 1 << 20
	cfg.PromoteInterval = time.Hour
	e := start(t, cfg)
	sp := createSpace(t, e, "s", 2, 12)
	laNoHotWrites(disk, sp)
	var last ringpipe.Revision
	for i := range uint32(10) {
		rev, err := e.Put(ctxFor(t), sp, ringpipe.Point{i, 0}, fmt.Appendf(nil, "v%d", i))
		require.NoError(t, err)
		last = rev
	}
	stop(t, e)
	disk.ClearFaults()

	cfg.Preallocate = 64 << 10
	cfg.PromoteInterval = 0
	e = start(t, cfg)
	waitFor(t, e, "recovered staged records promoted", func(s ringpipe.Stats) bool { return s.StagedPending == 0 })
	// Let the retirement run, then restart with no new batch.
	require.NoError(t, rvEventually(10*time.Second, func() error {
		var big []string
		for _, f := range disk.Files() {
			if strings.HasPrefix(f, simDir+"/wal/") {
				if data, err := disk.ReadFile(f); err == nil && int64(len(data)) > cfg.Preallocate {
					big = append(big, f)
				}
			}
		}
		if len(big) > 0 {
			return fmt.Errorf("oversize segments stay: %v", big)
		}
		return nil
	}), "the oversize WAL segment retired once promoted")
	stop(t, e)
	for round := range 3 {
		e = start(t, cfg)
		rev, err := e.Put(ctxFor(t), sp, ringpipe.Point{100 + uint32(round), 0}, []byte("new"))
		require.NoError(t, err)
		assert.Greater(t, rev, last, "revisions keep increasing across a restart after the WAL was emptied")
		last = rev
		for i := range uint32(10) {
			rec, err := e.Get(ctxFor(t), sp, ringpipe.Point{i, 0})
			require.NoError(t, err, "round %d point %d", round, i)
			assert.Equal(t, fmt.Appendf(nil, "v%d", i), rec.Value)
		}
		stop(t, e)
	}
}

// TestReviewPutToSpaceWithoutGenSaysDiskFull: DESIGN.md §5, "Disk full
// (ENOSPC) is reported to writers": a Put into a space whose first hot
// file found no room must say so (errors.Is ENOSPC, or at least name the
// disk being full), not only that the space has no hot segment.
// Fixed: before, the Put failed with "submitter: space 1 has no hot
// segment", neither wrapping ENOSPC nor saying the disk is full (5 of 5
// runs): the submitter now keeps the sealer's error for the space.
func TestReviewPutToSpaceWithoutGenSaysDiskFull(t *testing.T) {
	disk := newSimDisk(t, 17)
	e := start(t, rvConfig(t, disk))
	rvHotFull(disk)
	_, err := e.CreateSpace(ctxFor(t), rvSpec)
	require.ErrorIs(t, err, unix.ENOSPC, "precondition: CreateSpace met the full disk")
	var id ringpipe.SpaceID
	for _, s := range e.Spaces() {
		if s.Name == rvSpec.Name {
			id = s.ID
		}
	}
	require.NotZero(t, id, "precondition: the space is listed")
	_, err = e.Put(ctxFor(t), id, ringpipe.Point{1, 1}, []byte("x"))
	require.Error(t, err, "a Put into a space without a hot file")
	msg := strings.ToLower(err.Error())
	assert.True(t, errors.Is(err, unix.ENOSPC) || strings.Contains(msg, "no space") || strings.Contains(msg, "disk full"),
		"the Put's error does not say the disk is full: %q", err)
	disk.ClearFaults()
	stop(t, e)
}

// TestReviewSealRetriedAfterDiskFull: a seal that a full disk stopped
// (Flush answered ENOSPC while writing the block) is "tried again later"
// (README): once room returns the block is written without another Flush
// or write.
// Fixed: before, a seal that a Flush's ENOSPC postponed was never tried
// again once room returned (no block in 10 s without another Flush; 5
// of 5 runs): the sealer now arms its retry for it.
func TestReviewSealRetriedAfterDiskFull(t *testing.T) {
	disk := newSimDisk(t, 18)
	e := start(t, rvConfig(t, disk))
	sp := createSpace(t, e, "s", 2, 12)
	for i := range uint32(20) {
		_, err := e.Put(ctxFor(t), sp, ringpipe.Point{i, 3}, []byte("sealed later"))
		require.NoError(t, err)
	}
	disk.Inject(sim.Fault{Kind: sim.ENOSPC, Persist: true, Path: simDir + "/blocks/",
		Ops: []ring.Opcode{ring.OpWrite, ring.OpWritev, ring.OpFallocate, ring.OpOpen}})
	err := e.Flush(ctxFor(t), sp)
	require.ErrorIs(t, err, unix.ENOSPC, "precondition: the Flush's seal met the full disk")
	before := e.Stats().SealedBlocks
	disk.ClearFaults()
	deadline := time.Now().Add(10 * time.Second)
	for e.Stats().SealedBlocks == before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	assert.Greater(t, e.Stats().SealedBlocks, before,
		"the postponed seal was not tried again within 10 s of room returning (no Flush, no write)")
	stop(t, e)
}

// TestReviewManifestStaleAfterFailedSwitch: manifest writes fail with
// ENOSPC for a while (failed switches), then room returns: the next
// successful switch removes the stale files but never the live manifest
// or CURRENT; a restart (and a power loss) finds every flushed record.
func TestReviewManifestStaleAfterFailedSwitch(t *testing.T) {
	disk := newSimDisk(t, 19)
	cfg := rvConfig(t, disk)
	e := start(t, cfg)
	sp := createSpace(t, e, "s", 2, 12)
	acked := map[uint32]ringpipe.Revision{}
	put := func(i uint32) {
		rev, err := e.Put(ctxFor(t), sp, ringpipe.Point{i, 0}, fmt.Appendf(nil, "v%d", i))
		require.NoError(t, err)
		acked[i] = rev
	}
	for i := range uint32(10) {
		put(i)
	}
	disk.Inject(sim.Fault{Kind: sim.ENOSPC, Persist: true, Path: simDir + "/MANIFEST-",
		Ops: []ring.Opcode{ring.OpWrite, ring.OpWritev, ring.OpFsync, ring.OpFdatasync}})
	disk.Inject(sim.Fault{Kind: sim.ENOSPC, Persist: true, Path: simDir + "/CURRENT",
		Ops: []ring.Opcode{ring.OpWrite, ring.OpRename}})
	var ferrs []error
	for r := range uint32(3) {
		put(100 + r)
		ferrs = append(ferrs, e.Flush(ctxFor(t), sp))
	}
	t.Logf("Flushes on a full manifest disk: %v", ferrs)
	require.Error(t, ferrs[0], "precondition: a Flush met the full disk")
	disk.ClearFaults()
	for r := range uint32(3) {
		put(200 + r)
		require.NoError(t, rvEventually(5*time.Second, func() error { return e.Flush(ctxFor(t), sp) }), "Flush after room returned")
	}
	cur, err := disk.ReadFile(simDir + "/CURRENT")
	require.NoError(t, err, "CURRENT after the stale files were removed")
	live := strings.TrimSpace(string(cur))
	_, err = disk.ReadFile(simDir + "/" + live)
	require.NoError(t, err, "the manifest CURRENT names (%s)", live)
	var stale []string
	for _, f := range disk.Files() {
		base := strings.TrimPrefix(f, simDir+"/")
		if (strings.HasPrefix(base, "MANIFEST-") && base != live) || base == "CURRENT.tmp" {
			stale = append(stale, base)
		}
	}
	assert.Empty(t, stale, "stale manifest files left after a successful switch")
	disk.PowerLoss(rand.New(rand.NewSource(19)))
	_ = rvCall(opTimeout, func(ctx context.Context) error { return e.Stop(ctx) })
	assert.Empty(t, rvCheck(t, cfg, sp, acked, "after a power loss"))
}

// TestReviewUnnamedBlockPowerLoss: a seal writes its block, but its
// manifest edit meets a full disk (the block is "unnamed"); the next Flush
// recovers the manifest, removes that block and seals again. A power loss
// at any op of that Flush must lose no acknowledged record.
func TestReviewUnnamedBlockPowerLoss(t *testing.T) {
	life1 := func(t *testing.T) (*sim.Disk, ringpipe.Config, *ringpipe.Engine, ringpipe.SpaceID, map[uint32]ringpipe.Revision) {
		disk := newSimDisk(t, 20)
		cfg := rvConfig(t, disk)
		e := start(t, cfg)
		sp := createSpace(t, e, "s", 2, 12)
		acked := map[uint32]ringpipe.Revision{}
		for i := range uint32(30) {
			rev, err := e.Put(ctxFor(t), sp, ringpipe.Point{i, 0}, fmt.Appendf(nil, "v%d", i))
			require.NoError(t, err)
			acked[i] = rev
		}
		disk.Inject(sim.Fault{Kind: sim.ENOSPC, Path: simDir + "/MANIFEST-",
			Ops: []ring.Opcode{ring.OpWrite, ring.OpWritev}})
		err := e.Flush(ctxFor(t), sp)
		require.ErrorIs(t, err, unix.ENOSPC, "precondition: the seal's manifest edit met the full disk")
		disk.ClearFaults()
		return disk, cfg, e, sp, acked
	}
	disk, _, e, sp, _ := life1(t)
	blocks := 0
	for _, f := range disk.Files() {
		if strings.HasSuffix(f, ".blk") {
			blocks++
		}
	}
	require.Positive(t, blocks, "precondition: the unnamed block was written")
	n0 := disk.OpCount()
	require.NoError(t, e.Flush(ctxFor(t), sp), "the Flush after room returned")
	ops := disk.OpCount() - n0
	stop(t, e)
	var bad []string
	for k := range ops {
		disk, cfg, e, sp, acked := life1(t)
		disk.Inject(sim.Fault{Kind: sim.EIO, At: disk.OpCount() + 1 + k, Persist: true})
		_ = rvCall(5*time.Second, func(ctx context.Context) error { return e.Flush(ctx, sp) })
		disk.PowerLoss(rand.New(rand.NewSource(int64(k))))
		_ = rvCall(opTimeout, func(ctx context.Context) error { return e.Stop(ctx) })
		disk.ClearFaults()
		bad = append(bad, rvCheck(t, cfg, sp, acked, fmt.Sprintf("power loss at op %d of the second Flush", k))...)
	}
	t.Logf("%d crash points", ops)
	assert.Empty(t, bad, "acknowledged records lost")
}
