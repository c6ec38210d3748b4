package sim

import (
	"bytes"
	"math/rand"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring"
)

// A DSync write is a write and then an fdatasync of the bytes written, each
// with an op index and faults of its own: these tests check that the sync
// half is there for the fault rules, the clock and a power loss.

// TestDSyncDurable: a completed DSync write survives a power loss; it takes
// two op indexes and counts as a sync.
func TestDSyncDurable(t *testing.T) {
	for seed := int64(1); seed <= 10; seed++ {
		d, r, s := newTest(t, seed)
		fd := createDurable(t, s, "/t/f")
		data := bytes.Repeat([]byte("d"), 3*SectorSize+17)
		ops, syncs := d.OpCount(), r.Stats().Syncs
		c := do1(t, s, ring.Op{Code: ring.OpWrite, FD: fd, Buf: data, Offset: 0, DSync: true})
		require.NoError(t, c.Err)
		assert.Equal(t, int64(len(data)), c.Res)
		assert.Equal(t, ops+2, d.OpCount(), "the write and its sync half each take an op index")
		assert.Equal(t, syncs+1, r.Stats().Syncs, "a DSync write counts as a sync")
		d.PowerLoss(rand.New(rand.NewSource(seed)))
		got, err := d.ReadFile("/t/f")
		require.NoError(t, err)
		require.Equal(t, data, got, "seed %d: a completed DSync write is durable", seed)
	}
}

// TestDSyncSyncsOnlyItsRange: like RWF_DSYNC on Linux, a DSync write makes
// its own pages durable and leaves an earlier unsynced write elsewhere in
// the file as it was: a power loss may still lose it.
func TestDSyncSyncsOnlyItsRange(t *testing.T) {
	other := bytes.Repeat([]byte("o"), 2*SectorSize)
	mine := bytes.Repeat([]byte("m"), 100)
	const at = 64 << 10
	var lostOther int
	for seed := int64(1); seed <= 30; seed++ {
		d, _, s := newTest(t, seed)
		fd := createDurable(t, s, "/t/f")
		require.NoError(t, ring.WriteAt(s, fd, other, 0))
		c := do1(t, s, ring.Op{Code: ring.OpWrite, FD: fd, Buf: mine, Offset: at, DSync: true})
		require.NoError(t, c.Err)
		dur, err := d.ReadDurable("/t/f")
		require.NoError(t, err)
		require.Len(t, dur, at+len(mine), "the size the DSync write reached is durable")
		assert.Equal(t, mine, dur[at:], "the DSync write's bytes are durable")
		d.PowerLoss(rand.New(rand.NewSource(seed)))
		got, err := d.ReadFile("/t/f")
		require.NoError(t, err)
		require.Equal(t, mine, got[at:], "seed %d", seed)
		if !bytes.Equal(got[:len(other)], other) {
			lostOther++
		}
	}
	assert.Positive(t, lostOther, "the unsynced write outside the DSync write's pages was never lost")
}

// TestDSyncSyncFault: a rule for fdatasyncs hits a DSync write's sync half;
// the write then fails with the sync's error, as an fdatasync would, and
// Hits lists an fdatasync. A rule for writes hits the write half, and then
// nothing is written and no sync runs.
func TestDSyncSyncFault(t *testing.T) {
	d, r, s := newTest(t, 1)
	fd := createDurable(t, s, "/t/f")
	data := bytes.Repeat([]byte("x"), 4*SectorSize)

	d.Inject(Fault{Kind: FsyncFail, Ops: []ring.Opcode{ring.OpFdatasync}})
	syncs := r.Stats().Syncs
	c := do1(t, s, ring.Op{Code: ring.OpWrite, FD: fd, Buf: data, Offset: 0, DSync: true})
	assert.ErrorIs(t, c.Err, unix.EIO, "the sync half's failure is the write's")
	assert.Zero(t, c.Res)
	assert.Equal(t, syncs+1, r.Stats().Syncs, "the failed sync half was performed")
	hits := d.Hits()
	require.Len(t, hits, 1)
	assert.Equal(t, ring.OpFdatasync, hits[0].Code, "Hits lists the sync half as an fdatasync")
	assert.Equal(t, FsyncFail, hits[0].Kind)
	assert.Equal(t, "/t/f", hits[0].Path)
	got, _ := d.ReadFile("/t/f")
	assert.Equal(t, data, got, "the page cache keeps the data after a failed sync")

	d.Inject(Fault{Kind: EIO, Ops: []ring.Opcode{ring.OpWrite}})
	syncs = r.Stats().Syncs
	c = do1(t, s, ring.Op{Code: ring.OpWrite, FD: fd, Buf: []byte("never"), Offset: 1 << 20, DSync: true})
	assert.ErrorIs(t, c.Err, unix.EIO)
	assert.Equal(t, syncs, r.Stats().Syncs, "no sync after a failed write half")
	got, _ = d.ReadFile("/t/f")
	assert.Len(t, got, len(data), "the failed write half wrote nothing")
	require.Len(t, d.Hits(), 2)
	assert.Equal(t, ring.OpWrite, d.Hits()[1].Code)
}

// TestDSyncShortWrite: a DSync write cut short is continued, and its sync
// half runs after all of it.
func TestDSyncShortWrite(t *testing.T) {
	d, r, s := newTest(t, 1)
	fd := createDurable(t, s, "/t/f")
	data := bytes.Repeat([]byte("0123456789"), 300)
	d.Inject(Fault{Kind: ShortWrite, Bytes: 1000})
	before := r.Stats().ShortIORetries
	c := do1(t, s, ring.Op{Code: ring.OpWrite, FD: fd, Buf: data, Offset: 0, DSync: true})
	require.NoError(t, c.Err)
	assert.Equal(t, int64(len(data)), c.Res)
	assert.Equal(t, before+1, r.Stats().ShortIORetries)
	got, _ := d.ReadDurable("/t/f")
	assert.Equal(t, data, got, "both transfers are durable")
}

// TestDSyncDeadline: a DSync write queued past its deadline is cancelled
// before its write half (nothing written, no sync), as LINK_TIMEOUT cancels
// queued work; one whose sync half is slow is late, not cancelled (it is
// running by then), and completes.
func TestDSyncDeadline(t *testing.T) {
	d, r, s := newTest(t, 1)
	fd := createDurable(t, s, "/t/f")
	const deadline = time.Millisecond
	reap := func() []ring.Completion {
		var got []ring.Completion
		buf := make([]ring.Completion, 4)
		for countFinal(got) == 0 {
			n, err := r.Reap(buf)
			require.NoError(t, err)
			got = append(got, buf[:n]...)
		}
		return got
	}

	d.Inject(Fault{Kind: Queued, Delay: 5 * deadline, Ops: []ring.Opcode{ring.OpWrite}})
	syncs := r.Stats().Syncs
	require.NoError(t, r.Submit([]ring.Op{{Code: ring.OpWrite, FD: fd, Buf: []byte("late"), Offset: 0, DSync: true, Deadline: deadline}}))
	got := reap()
	require.Len(t, got, 2, "a notice and the final completion")
	assert.True(t, got[0].Deadline)
	assert.ErrorIs(t, got[1].Err, unix.ECANCELED)
	assert.True(t, got[1].Late)
	assert.Equal(t, syncs, r.Stats().Syncs, "a cancelled DSync write does not sync")
	size, err := ring.Size(s, fd)
	require.NoError(t, err)
	assert.Zero(t, size, "a cancelled DSync write writes nothing")

	d.Inject(Fault{Kind: Queued, Delay: 5 * deadline, Ops: []ring.Opcode{ring.OpFdatasync}})
	require.NoError(t, r.Submit([]ring.Op{{Code: ring.OpWrite, FD: fd, Buf: []byte("slow"), Offset: 0, DSync: true, Deadline: deadline}}))
	got = reap()
	require.Len(t, got, 2, "a notice and the final completion")
	assert.True(t, got[0].Deadline, "the slow sync half is noticed")
	assert.NoError(t, got[1].Err, "a running sync half is not cancelled")
	assert.True(t, got[1].Late)
	dur, _ := d.ReadDurable("/t/f")
	assert.Equal(t, "slow", string(dur))
}
