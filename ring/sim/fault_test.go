package sim

import (
	"bytes"
	"errors"
	"math/bits"
	"math/rand"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring"
)

func TestFaultEIOAtIndex(t *testing.T) {
	d, _, s := newTest(t, 1)
	fd := createDurable(t, s, "/t/f")
	d.Inject(Fault{Kind: EIO, At: d.OpCount() + 2})
	require.NoError(t, ring.WriteAt(s, fd, []byte("first"), 0))
	assert.ErrorIs(t, ring.WriteAt(s, fd, []byte("second"), 0), unix.EIO, "op At fails")
	require.NoError(t, ring.WriteAt(s, fd, []byte("third"), 100), "a rule without Persist fires once")
	got, _ := d.ReadFile("/t/f")
	assert.Equal(t, "first", string(got[:5]), "the failed write changed nothing")
	hits := d.Hits()
	require.Len(t, hits, 1)
	assert.Equal(t, Hit{Index: hits[0].Index, Kind: EIO, Code: ring.OpWrite, Path: "/t/f", Time: hits[0].Time}, hits[0])
}

func TestFaultFilters(t *testing.T) {
	d, r, s := newTest(t, 1)
	require.NoError(t, ring.Mkdir(s, "/t/wal", 0o755))
	wal, err := ring.Open(s, "/t/wal/1.log", unix.O_RDWR|unix.O_CREAT, 0o644)
	require.NoError(t, err)
	other, err := ring.Open(s, "/t/other", unix.O_RDWR|unix.O_CREAT, 0o644)
	require.NoError(t, err)
	d.Inject(Fault{Kind: ENOSPC, Ops: []ring.Opcode{ring.OpWrite}, Path: "/t/wal/", Ring: r, Persist: true})
	assert.NoError(t, ring.WriteAt(s, other, []byte("x"), 0), "another path")
	assert.NoError(t, ring.Fdatasync(s, wal), "another opcode")
	assert.ErrorIs(t, ring.WriteAt(s, wal, []byte("x"), 0), unix.ENOSPC)
	assert.ErrorIs(t, ring.WriteAt(s, wal, []byte("x"), 0), unix.ENOSPC, "Persist keeps the rule")
	r2 := d.NewRing(ring.Options{})
	defer r2.Close()
	s2 := ring.NewSync(r2)
	wal2, err := ring.Open(s2, "/t/wal/1.log", unix.O_RDWR, 0)
	require.NoError(t, err)
	assert.NoError(t, ring.WriteAt(s2, wal2, []byte("x"), 0), "another ring")
	d.ClearFaults()
	assert.NoError(t, ring.WriteAt(s, wal, []byte("x"), 0), "cleared")
}

func TestFaultProbability(t *testing.T) {
	d, _, s := newTest(t, 1)
	d.Inject(Fault{Kind: EIO, Prob: 0.3, Persist: true})
	var failed int
	for i := 0; i < 200; i++ {
		c := do1(t, s, ring.Op{Code: ring.OpNop})
		if c.Err != nil {
			require.ErrorIs(t, c.Err, unix.EIO)
			failed++
		}
	}
	assert.InDelta(t, 60, failed, 25, "about 30%% of 200 ops fail")
	assert.Len(t, d.Hits(), failed)
}

func TestFaultShortWrite(t *testing.T) {
	d, r, s := newTest(t, 1)
	fd := createDurable(t, s, "/t/f")
	data := bytes.Repeat([]byte("0123456789"), 500)
	d.Inject(Fault{Kind: ShortWrite})
	d.Inject(Fault{Kind: ShortWrite, Bytes: 7, Ops: []ring.Opcode{ring.OpWritev}})
	before := r.Stats().ShortIORetries
	cs, err := s.Do(
		ring.Op{Code: ring.OpWrite, FD: fd, Buf: data, Offset: 0, Link: true},
		ring.Op{Code: ring.OpWritev, FD: fd, Bufs: [][]byte{[]byte("abcdef"), []byte("ghijkl")}, Offset: 5000, Link: true},
		ring.Op{Code: ring.OpFdatasync, FD: fd},
	)
	require.NoError(t, err)
	for _, c := range cs {
		require.NoError(t, c.Err)
	}
	assert.Equal(t, int64(len(data)), cs[0].Res, "the caller sees the whole write")
	assert.Equal(t, int64(12), cs[1].Res)
	assert.Equal(t, before+2, r.Stats().ShortIORetries, "each continuation is counted")
	want := append(append([]byte(nil), data...), "abcdefghijkl"...)
	got, _ := d.ReadDurable("/t/f")
	assert.Equal(t, want, got, "both writes complete, and the linked sync after them")
	hits := d.Hits()
	require.Len(t, hits, 2)
	assert.Equal(t, ShortWrite, hits[0].Kind)

	// The two transfers of a torn write are separate writes to a power loss.
	d.Inject(Fault{Kind: ShortWrite, Bytes: SectorSize})
	require.NoError(t, ring.WriteAt(s, fd, bytes.Repeat([]byte("z"), 2*SectorSize), 0))
	d.mu.Lock()
	n := len(d.root.entries["t"].entries["f"].pending)
	d.mu.Unlock()
	assert.Equal(t, 2, n)
}

func TestFaultNoProgress(t *testing.T) {
	d, _, s := newTest(t, 1)
	fd := createDurable(t, s, "/t/f")
	d.Inject(Fault{Kind: NoProgress})
	cs, err := s.Do(
		ring.Op{Code: ring.OpWrite, FD: fd, Buf: []byte("x"), Offset: 0, Link: true},
		ring.Op{Code: ring.OpFdatasync, FD: fd},
	)
	require.NoError(t, err)
	assert.ErrorIs(t, cs[0].Err, ring.ErrNoProgress)
	assert.ErrorIs(t, cs[1].Err, unix.ECANCELED, "the chain's rest is cancelled")
}

// TestFaultFsyncFail: a failed sync reports EIO; reads still see the data,
// but its fate on the disk is decided then, and a later successful sync does
// not repair it.
func TestFaultFsyncFail(t *testing.T) {
	data := bytes.Repeat([]byte("D"), 8*SectorSize)
	var lost int
	for seed := int64(1); seed <= 20; seed++ {
		d, r, s := newTest(t, seed)
		fd := createDurable(t, s, "/t/f")
		require.NoError(t, ring.WriteAt(s, fd, data, 0))
		d.Inject(Fault{Kind: FsyncFail, Ops: []ring.Opcode{ring.OpFdatasync}})
		syncs := r.Stats().Syncs
		require.ErrorIs(t, ring.Fdatasync(s, fd), unix.EIO)
		assert.Equal(t, syncs+1, r.Stats().Syncs, "a failed sync was still performed")
		back := make([]byte, len(data))
		n, err := ring.ReadAt(s, fd, back, 0)
		require.NoError(t, err)
		require.Equal(t, data, back[:n], "the page cache keeps the data")
		require.NoError(t, ring.Fdatasync(s, fd), "the next sync succeeds")
		d.PowerLoss(rand.New(rand.NewSource(seed)))
		got, _ := d.ReadFile("/t/f")
		if !bytes.Equal(got, data) {
			lost++
		}
	}
	assert.Positive(t, lost, "data behind a failed fsync was lost despite a later successful fsync")
}

func TestFaultBitFlip(t *testing.T) {
	d, _, s := newTest(t, 1)
	fd := createDurable(t, s, "/t/f")
	data := bytes.Repeat([]byte{0x5a}, 1000)
	require.NoError(t, ring.WriteAt(s, fd, data, 0))
	d.Inject(Fault{Kind: BitFlip})
	a, b := make([]byte, 600), make([]byte, 600)
	c := do1(t, s, ring.Op{Code: ring.OpReadv, FD: fd, Bufs: [][]byte{a, b}, Offset: 0})
	require.NoError(t, c.Err)
	require.Equal(t, int64(1000), c.Res)
	flipped := 0
	for _, x := range append(a, b[:400]...) {
		flipped += bits.OnesCount8(x ^ 0x5a)
	}
	assert.Equal(t, 1, flipped, "exactly one bit differs")
	got, _ := d.ReadFile("/t/f")
	assert.Equal(t, data, got, "the file is unchanged")
}

// TestFaultDelayAndDeadline: an added latency moves the virtual clock and
// makes a deadline fire: the notice first, then the final completion with
// Late set.
func TestFaultDelayAndDeadline(t *testing.T) {
	d, r, _ := newTest(t, 1)
	d.Inject(Fault{Kind: Delay, Delay: 50 * time.Millisecond, Ops: []ring.Opcode{ring.OpNop}})
	start := d.Now()
	require.NoError(t, r.Submit([]ring.Op{
		{Code: ring.OpNop, Token: 1, Deadline: 2 * time.Millisecond},
		{Code: ring.OpNop, Token: 2, Deadline: 2 * time.Millisecond},
	}))
	var got []ring.Completion
	out := make([]ring.Completion, 1)
	for countFinal(got) < 2 {
		n, err := r.Reap(out)
		require.NoError(t, err)
		got = append(got, out[:n]...)
	}
	require.Len(t, got, 3)
	assert.Equal(t, ring.Completion{Token: 2, Code: ring.OpNop}, got[0], "the fast op first")
	assert.Equal(t, ring.Completion{Token: 1, Code: ring.OpNop, Deadline: true}, got[1], "then the notice")
	assert.Equal(t, ring.Completion{Token: 1, Code: ring.OpNop, Late: true}, got[2], "then the late result")
	assert.GreaterOrEqual(t, d.Now()-start, 50*time.Millisecond)
	assert.Less(t, d.Now()-start, 51*time.Millisecond)
	assert.Equal(t, uint64(1), r.Stats().DeadlinesFired)
}

// TestAllFaultKindsObserved: every kind reaches a caller through the ring.
func TestAllFaultKindsObserved(t *testing.T) {
	d, r, s := newTest(t, 1)
	fd := createDurable(t, s, "/t/f")
	require.NoError(t, ring.WriteAt(s, fd, make([]byte, 64), 0))
	seen := map[FaultKind]bool{}
	for k := EIO; k < numKinds; k++ {
		f := Fault{Kind: k, Delay: time.Second}
		d.Inject(f)
		retries, fired := r.Stats().ShortIORetries, r.Stats().DeadlinesFired
		var err error
		switch k {
		case FsyncFail:
			err = ring.Fsync(s, fd)
		case BitFlip:
			buf := make([]byte, 64)
			_, err = ring.ReadAt(s, fd, buf, 0)
			if err == nil && !bytes.Equal(buf, make([]byte, 64)) {
				seen[k] = true
			}
		case Delay:
			_, err = s.Do(ring.Op{Code: ring.OpNop, Deadline: time.Millisecond})
			seen[k] = r.Stats().DeadlinesFired == fired+1
		case Queued:
			var cs []ring.Completion
			cs, err = s.Do(ring.Op{Code: ring.OpNop, Deadline: time.Millisecond})
			seen[k] = err == nil && errors.Is(cs[0].Err, unix.ECANCELED) && r.Stats().DeadlinesFired == fired+1
		default:
			err = ring.WriteAt(s, fd, make([]byte, 64), 0)
			seen[k] = k == ShortWrite && err == nil && r.Stats().ShortIORetries == retries+1
		}
		if errors.Is(err, unix.EIO) || errors.Is(err, unix.ENOSPC) || errors.Is(err, ring.ErrNoProgress) {
			seen[k] = true
		}
		assert.True(t, seen[k], "fault %v observed (err %v)", k, err)
	}
	assert.Len(t, d.Hits(), int(numKinds-1))
}

// TestFaultQueuedCancels: an Op held in the queue past its deadline is
// cancelled there, as io_uring's LINK_TIMEOUT cancels work still waiting
// for a kernel worker: the notice, then ECANCELED with Late; it is not
// performed and the rest of its chain is cancelled. An Op whose deadline
// outlasts the wait only runs late, like Delay.
func TestFaultQueuedCancels(t *testing.T) {
	d, r, s := newTest(t, 1)
	fd := createDurable(t, s, "/t/f")
	d.Inject(Fault{Kind: Queued, Delay: 50 * time.Millisecond, Ops: []ring.Opcode{ring.OpWrite}})
	start := d.Now()
	require.NoError(t, r.Submit([]ring.Op{
		{Code: ring.OpWrite, Token: 1, FD: fd, Buf: []byte("queued"), Offset: 0, Link: true, Deadline: 2 * time.Millisecond},
		{Code: ring.OpFdatasync, Token: 2, FD: fd},
	}))
	var got []ring.Completion
	out := make([]ring.Completion, 4)
	for countFinal(got) < 2 {
		n, err := r.Reap(out)
		require.NoError(t, err)
		got = append(got, out[:n]...)
	}
	require.Len(t, got, 3)
	assert.Equal(t, ring.Completion{Token: 1, Code: ring.OpWrite, Deadline: true}, got[0], "the notice first")
	assert.Equal(t, uint64(1), got[1].Token)
	assert.ErrorIs(t, got[1].Err, unix.ECANCELED, "the write is cancelled")
	assert.True(t, got[1].Late)
	assert.Equal(t, uint64(2), got[2].Token)
	assert.ErrorIs(t, got[2].Err, unix.ECANCELED, "and the rest of its chain")
	assert.Equal(t, 2*time.Millisecond, d.Now()-start, "cancelled at the deadline")
	data, err := d.ReadFile("/t/f")
	require.NoError(t, err)
	assert.Empty(t, data, "the write was not performed")

	// A generous deadline: the op waits, then runs late.
	d.Inject(Fault{Kind: Queued, Delay: 50 * time.Millisecond, Ops: []ring.Opcode{ring.OpWrite}})
	cs, err := s.Do(ring.Op{Code: ring.OpWrite, FD: fd, Buf: []byte("waited"), Offset: 0, Deadline: time.Second})
	require.NoError(t, err)
	require.NoError(t, cs[0].Err)
	assert.False(t, cs[0].Late)
	data, err = d.ReadFile("/t/f")
	require.NoError(t, err)
	assert.Equal(t, "waited", string(data))
}

func TestInjectRejectsBadRules(t *testing.T) {
	d := NewDisk(1)
	assert.Panics(t, func() { d.Inject(Fault{}) })
	assert.Panics(t, func() { d.Inject(Fault{Kind: EIO, Prob: 2}) })
	assert.Panics(t, func() { d.Inject(Fault{Kind: Delay}) })
	assert.Panics(t, func() { d.Inject(Fault{Kind: Queued}) })
}

func countFinal(cs []ring.Completion) int {
	n := 0
	for _, c := range cs {
		if !c.Deadline {
			n++
		}
	}
	return n
}
