package wal

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// TestWALRestartAfterFsyncFailure: a batch whose fdatasync failed may be
// whole, torn or absent on disk after a power loss (the page cache said
// otherwise). Restart begins a new segment with a cut, so that recovery
// reads exactly the batches that committed — before the failure and after
// the restart — never the failed one, and never calls the torn batch
// corruption. Seed 13 of the engine's TestFsyncFailureThenPowerLoss/wal
// failed this way before cuts existed.
func TestWALRestartAfterFsyncFailure(t *testing.T) {
	for seed := int64(1); seed <= 40; seed++ {
		for _, fill := range []int{1, 20} { // the failed batch in a fresh segment, or after a roll
			t.Run(fmt.Sprintf("seed%d/fill%d", seed, fill), func(t *testing.T) {
				disk := sim.NewDisk(seed)
				d := ring.NewSync(disk.NewRing(ring.Options{}))
				require.NoError(t, ring.Mkdir(d, "/db", 0o755))
				require.NoError(t, ring.SyncDir(d, "/"))
				w, err := Open(d, crashOpts, nil)
				require.NoError(t, err)
				var want []messages.Record
				rev := 1
				for i := 0; i < fill; i++ {
					b := recs(rev, 3, 1)
					rev += 3
					require.NoError(t, w.Append(b))
					want = append(want, b...)
				}
				disk.Inject(sim.Fault{Kind: sim.FsyncFail, Path: "/db/wal/", Ops: []ring.Opcode{ring.OpFdatasync}})
				require.Error(t, w.Append(recs(rev, 5, 1)), "the injected fsync failure")
				rev += 5
				require.Error(t, w.Append(recs(rev, 1, 1)), "a failed WAL refuses batches until restarted")
				disk.ClearFaults()
				require.NoError(t, w.Restart())
				for i := 0; i < 3; i++ {
					b := recs(rev, 4, 2)
					rev += 4
					require.NoError(t, w.Append(b))
					want = append(want, b...)
				}
				disk.PowerLoss(rand.New(rand.NewSource(seed)))
				d = ring.NewSync(disk.NewRing(ring.Options{}))
				w, got := reopen(t, d)
				require.Equal(t, want, got)
				more := recs(rev, 2, 3)
				require.NoError(t, w.Append(more))
				require.NoError(t, w.Close())
				w, again := reopen(t, d)
				assert.Equal(t, append(got, more...), again)
				require.NoError(t, w.Close())
			})
		}
	}
}

// TestWALRestartTwice: a restart whose cut could not be written leaves the
// WAL failed; the next restart cuts back to the same durable end, which
// voids the segment in between.
func TestWALRestartTwice(t *testing.T) {
	for seed := int64(1); seed <= 20; seed++ {
		disk := sim.NewDisk(seed)
		d := ring.NewSync(disk.NewRing(ring.Options{}))
		require.NoError(t, ring.Mkdir(d, "/db", 0o755))
		require.NoError(t, ring.SyncDir(d, "/"))
		w, err := Open(d, crashOpts, nil)
		require.NoError(t, err)
		want := recs(1, 4, 1)
		require.NoError(t, w.Append(want))
		disk.Inject(sim.Fault{Kind: sim.FsyncFail, Path: "/db/wal/", Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync}, Persist: true})
		require.Error(t, w.Append(recs(5, 3, 1)))
		require.Error(t, w.Restart(), "the sync that makes the cut durable (with the preallocation) fails")
		disk.ClearFaults()
		require.NoError(t, w.Restart())
		b := recs(20, 2, 1)
		require.NoError(t, w.Append(b))
		want = append(want, b...)
		disk.PowerLoss(rand.New(rand.NewSource(seed)))
		w, got := reopen(t, ring.NewSync(disk.NewRing(ring.Options{})))
		require.Equal(t, want, got, "seed %d", seed)
		require.NoError(t, w.Close())
	}
}

// TestWALCutFrameRefusedElsewhere: a cut frame anywhere but at the start
// of a segment is corruption, not a record.
func TestWALCutFrameRefusedElsewhere(t *testing.T) {
	d := stdDoer(t)
	opts := Options{Dir: t.TempDir() + "/wal", SegmentSize: 4096}
	w, _, _ := openWAL(t, d, opts)
	require.NoError(t, w.Append(recs(1, 2, 1)))
	// Forge a cut after the first batch, in the segment's own salt.
	var b Batch
	b.Begin(nil, w.salt)
	b.AddFunc(TypeCut, cut{Seq: 1, End: 0}.encode)
	require.NoError(t, ring.WriteSync(d, w.fd, b.Finish(), w.off))
	require.NoError(t, w.Close())
	_, err := Open(d, opts, nil)
	var ce *messages.CorruptionError
	require.ErrorAs(t, err, &ce)
	assert.Contains(t, ce.Reason, "not a record")
}
