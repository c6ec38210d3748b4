package durability

// Regression tests for engine bugs the corruption suite found. Each is
// skipped while the bug stands (the lead fixes engine code); remove the
// Skip with the fix, and the matching entry of corruptKnown.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/hot"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// corruptRegression writes n records of 1 KiB to one space (after setup,
// with cfg), calls beforeStop, stops cleanly, damages the directory with
// damage, starts again in mode and requires that Start reports corruption
// or that every record reads back.
func corruptRegression(t *testing.T, cfg func(*sim.Disk) ringpipe.Config, setup func(*sim.Disk), n int,
	beforeStop func(context.Context, *ringpipe.Engine, ringpipe.SpaceID) error,
	damage func(t *testing.T, disk *sim.Disk), mode ringpipe.RecoveryMode) {
	t.Helper()
	disk := NewSimDisk(1)
	c := cfg(disk)
	ctx, cancel := context.WithTimeout(context.Background(), ioerrTimeout)
	defer cancel()
	e, sp := startOneSpace(ctx, t, c)
	if setup != nil {
		setup(disk)
	}
	vals := make(map[uint32][]byte)
	for i := range n {
		v := Value(newRand(int64(i)), 1<<10)
		_, err := e.Put(ctx, sp, ringpipe.Point{uint32(i)}, v)
		require.NoError(t, err)
		vals[uint32(i)] = v
	}
	if beforeStop != nil {
		require.NoError(t, beforeStop(ctx, e, sp))
	}
	require.NoError(t, e.Stop(ctx))
	disk.ClearFaults()
	damage(t, disk)
	c.WALRecovery = mode
	e, err := ringpipe.Start(ctx, c)
	if err != nil {
		require.True(t, errors.Is(err, ringpipe.ErrCorrupt), "Start failed without ErrCorrupt: %v", err)
		return
	}
	defer func() { require.NoError(t, e.Stop(ctx)) }()
	lost := 0
	for p, v := range vals {
		r, err := e.Get(ctx, sp, ringpipe.Point{p})
		if err != nil || string(r.Value) != string(v) {
			lost++
		}
	}
	require.Zero(t, lost, "Start succeeded on a damaged directory and %d of %d acknowledged records are gone", lost, n)
}

// startOneSpace starts an engine with c and creates the one space of the
// regression tests, 1-D with 16 bits.
func startOneSpace(ctx context.Context, t *testing.T, c ringpipe.Config) (*ringpipe.Engine, ringpipe.SpaceID) {
	t.Helper()
	e, err := ringpipe.Start(ctx, c)
	require.NoError(t, err)
	sp, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "s", Dims: 1, Bits: 16})
	require.NoError(t, err)
	return e, sp
}

// corruptLastBatch damages the last batch of the log file at p: a bit
// flip in its payload, or (erase) a truncation at its start.
func corruptLastBatch(t *testing.T, disk *sim.Disk, p string, erase bool) {
	t.Helper()
	data, err := disk.ReadFile(p)
	require.NoError(t, err)
	bs := corruptBatches(data, corruptSalt(p, data))
	require.Greater(t, len(bs), 1, "%s holds %d batches", p, len(bs))
	last := bs[len(bs)-1]
	if erase {
		require.NoError(t, disk.Truncate(p, last.start))
		return
	}
	require.NoError(t, disk.FlipBit(p, (last.end-8)*8+3))
}

func bothModes(t *testing.T, f func(t *testing.T, mode ringpipe.RecoveryMode)) {
	for _, mode := range []ringpipe.RecoveryMode{ringpipe.TolerateTornTail, ringpipe.Strict} {
		t.Run(mode.String(), func(t *testing.T) { f(t, mode) })
	}
}

// TestManifestTailAfterSeal: the manifest's last edit (a block added, its
// generation sealed) is damaged after the engine stopped. Recovery reads
// the manifest in TolerateTornTail mode whatever Config.WALRecovery says,
// drops the edit as a torn tail, then removes the block file as an orphan:
// the records sealed into it are gone without an error (their generation
// was retired once the edit was durable). Found by TestCorruption
// ("manifest torn-looking tail: SILENTLY SERVED").
//
// Without the Flush the manifest's last edit creates the space: damaged,
// the space is unknown to recovery, which left its hot generation alone,
// and the records written to it were gone without an error too.
func TestManifestTailAfterSeal(t *testing.T) {
	flush := func(ctx context.Context, e *ringpipe.Engine, sp ringpipe.SpaceID) error { return e.Flush(ctx, sp) }
	for name, before := range map[string]func(context.Context, *ringpipe.Engine, ringpipe.SpaceID) error{
		"seal": flush, "space created": nil} {
		t.Run(name, func(t *testing.T) {
			bothModes(t, func(t *testing.T, mode ringpipe.RecoveryMode) {
				corruptRegression(t, SimConfig, nil, 6, before, func(t *testing.T, disk *sim.Disk) {
					cur, err := disk.ReadFile(simDir + "/CURRENT")
					require.NoError(t, err)
					corruptLastBatch(t, disk, simDir+"/"+string(cur[:len(cur)-1]), false)
				}, mode)
			})
		})
	}
}

// TestWALEarlierSegmentTruncated: a WAL segment that is not the last is
// cut at a batch boundary (its last batch gone). Its frames read as a
// complete segment, so recovery drops that batch's staged records without
// an error, in both modes; only the segment's size (every segment is
// preallocated, so a short one is damaged) or a record of where each
// segment ended could tell. Found by TestCorruption ("wal erased end of an
// earlier log file").
func TestWALEarlierSegmentTruncated(t *testing.T) {
	cfg := func(disk *sim.Disk) ringpipe.Config {
		c := SimConfig(disk)
		c.Preallocate = 16 << 10      // two segments for 30 KiB
		c.PromoteInterval = time.Hour // staged records stay in the WAL only
		return c
	}
	bothModes(t, func(t *testing.T, mode ringpipe.RecoveryMode) {
		corruptRegression(t, cfg, ioerrSlowHotAll, 30, nil, func(t *testing.T, disk *sim.Disk) {
			corruptLastBatch(t, disk, simDir+"/wal/00000000000000000001.log", true)
		}, mode)
	})
}

// TestFrozenGenerationTornTail: a hot generation older than the space's
// active one (frozen, waiting for the sealer) has its last batch damaged.
// Only the active generation may end in a torn write (rotation installs
// the next generation only when no batch is in flight), but recovery
// scanned frozen generations with the active one's rule: in
// TolerateTornTail mode it dropped the batch, and its acknowledged records
// with it, without an error. Seen in TestCorruption's killed and
// stopped-promoted directories ("hot torn-looking end of an earlier log
// file"). The generation after it now names where it ends (hot's follow
// frame), so the damage is corruption.
func TestFrozenGenerationTornTail(t *testing.T) {
	cfg := func(disk *sim.Disk) ringpipe.Config {
		c := SimConfig(disk)
		c.SealThreshold = 4
		return c
	}
	// The sealer cannot write blocks (disk full there): generation 1 stays
	// frozen, a later one takes the later writes.
	noBlocks := func(disk *sim.Disk) {
		disk.Inject(sim.Fault{Kind: sim.ENOSPC, Persist: true, Path: simDir + "/blocks"})
	}
	// Whether or not the seal hint after the fourth record rotated the
	// space already, a Flush rotates it (its seal fails: disk full), and
	// the write after it goes to a generation after generation 1.
	rotate := func(ctx context.Context, e *ringpipe.Engine, sp ringpipe.SpaceID) error {
		if err := e.Flush(ctx, sp); !errors.Is(err, syscall.ENOSPC) {
			return fmt.Errorf("flush: want ENOSPC from the seal, got %v", err)
		}
		_, err := e.Put(ctx, sp, ringpipe.Point{1000}, []byte("after the rotation"))
		return err
	}
	corruptRegression(t, cfg, noBlocks, 6, rotate, func(t *testing.T, disk *sim.Disk) {
		p := simDir + "/hot/" + hot.Gen{Space: 1, Gen: 1}.FileName()
		_, err := disk.ReadFile(simDir + "/hot/" + hot.Gen{Space: 1, Gen: 2}.FileName())
		require.NoError(t, err, "generation 2 was not created: generation 1 is not frozen")
		corruptLastBatch(t, disk, p, false)
	}, ringpipe.TolerateTornTail)
}

// ioerrSlowHotAll makes every hot sync miss the direct-write deadline.
func ioerrSlowHotAll(disk *sim.Disk) {
	disk.Inject(sim.Fault{Kind: sim.Delay, Delay: 3 * time.Millisecond, Persist: true,
		Path: simDir + "/hot/", Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync}})
}

// TestUnnamedBlockDamagedGeneration: a seal is cut short after its block
// was written and before the manifest edit naming it (the manifest cannot
// be written), so the block is an orphan and its records are still in
// their hot generation, frozen, with an empty generation after it. Then
// the generation's last batch is damaged. Recovery found the block's
// records "nowhere else" and reported a lost manifest edit, naming the
// MANIFEST instead of the damaged hot file. Found by TestCorruption on
// seed 2's killed image ("hot torn-looking tail: detected, naming another
// file"). A block now records the generation sealed into it (its footer),
// so recovery sees that the generation is still there and names it.
func TestUnnamedBlockDamagedGeneration(t *testing.T) {
	for _, erase := range []bool{true, false} {
		t.Run(fmt.Sprintf("erase=%v", erase), func(t *testing.T) {
			bothModes(t, func(t *testing.T, mode ringpipe.RecoveryMode) {
				disk := NewSimDisk(1)
				c := SimConfig(disk)
				ctx, cancel := context.WithTimeout(context.Background(), ioerrTimeout)
				defer cancel()
				e, sp := startOneSpace(ctx, t, c)
				for i := range 6 {
					_, err := e.Put(ctx, sp, ringpipe.Point{uint32(i)}, Value(newRand(int64(i)), 1<<10))
					require.NoError(t, err)
				}
				// Every manifest write fails: the seal writes its block,
				// then cannot name it.
				disk.Inject(sim.Fault{Kind: sim.ENOSPC, Persist: true, Path: simDir + "/MANIFEST",
					Ops: []ring.Opcode{ring.OpWrite, ring.OpWritev, ring.OpFsync, ring.OpFdatasync}})
				require.Error(t, e.Flush(ctx, sp), "the seal's manifest edit cannot be written")
				disk.Crash()
				dead, stop := context.WithCancel(context.Background())
				stop()
				_ = e.Stop(dead) // the process is dead: Stop only stops the goroutines
				disk.ClearFaults()

				gen1 := "hot/" + hot.Gen{Space: 1, Gen: 1}.FileName()
				_, err := disk.ReadFile(simDir + "/hot/" + hot.Gen{Space: 1, Gen: 2}.FileName())
				require.NoError(t, err, "generation 2 was not created: generation 1 is not frozen")
				blocks := 0
				for _, f := range disk.Files() {
					if strings.HasPrefix(f, simDir+"/blocks/1/") && strings.HasSuffix(f, ".blk") {
						blocks++
					}
				}
				require.NotZero(t, blocks, "the seal wrote no block")
				corruptLastBatch(t, disk, simDir+"/"+gen1, erase)

				c.WALRecovery = mode
				e, err = ringpipe.Start(ctx, c)
				if err == nil {
					require.NoError(t, e.Stop(ctx))
				}
				var ce *ringpipe.CorruptionError
				require.ErrorAs(t, err, &ce, "Start on a damaged hot generation whose block is unnamed")
				require.Equal(t, gen1, ce.Path, "the error names another file: %v", err)
			})
		})
	}
}
