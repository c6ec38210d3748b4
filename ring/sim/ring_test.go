package sim

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand"
	"slices"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring"
)

// reapAll reaps until n final Completions arrived, taking at most max per
// Reap.
func reapAll(t *testing.T, r ring.Ring, n, max int) []ring.Completion {
	t.Helper()
	var got []ring.Completion
	out := make([]ring.Completion, max)
	for countFinal(got) < n {
		k, err := r.Reap(out)
		require.NoError(t, err)
		got = append(got, out[:k]...)
	}
	return got
}

// TestOutOfOrder: unlinked Ops complete in a seeded random order, linked
// ones in theirs, and the clock only moves forward.
func TestOutOfOrder(t *testing.T) {
	d, r, s := newTest(t, 1)
	var ops []ring.Op
	for i := 0; i < 32; i++ {
		ops = append(ops, ring.Op{Code: ring.OpNop, Token: uint64(i)})
	}
	require.NoError(t, r.Submit(ops))
	var toks []uint64
	last := d.Now()
	for _, c := range reapAll(t, r, len(ops), 1) {
		toks = append(toks, c.Token)
		assert.GreaterOrEqual(t, d.Now(), last)
		last = d.Now()
	}
	assert.False(t, slices.IsSorted(toks), "32 unlinked ops completed in submission order: %v", toks)
	slices.Sort(toks)
	assert.Len(t, slices.Compact(toks), 32)

	// A chain of appends at the current position stays in order.
	fd := createDurable(t, s, "/t/f")
	var chain []ring.Op
	for i := 0; i < 10; i++ {
		chain = append(chain, ring.Op{Code: ring.OpWrite, FD: fd, Buf: []byte{byte('a' + i)}, Offset: -1, Link: i < 9})
	}
	_, err := s.Do(chain...)
	require.NoError(t, err)
	got, _ := d.ReadFile("/t/f")
	assert.Equal(t, "abcdefghij", string(got))
}

// alignedBuf returns n bytes at a 512-aligned address.
func alignedBuf(n int) []byte {
	b := make([]byte, n+SectorSize)
	skip := (SectorSize - int(uintptr(unsafe.Pointer(&b[0]))%SectorSize)) % SectorSize
	return b[skip : skip+n]
}

func TestDirectAlignment(t *testing.T) {
	_, _, s := newTest(t, 1)
	fd, err := ring.Open(s, "/t/f", unix.O_RDWR|unix.O_CREAT|unix.O_DIRECT, 0o644)
	require.NoError(t, err)
	buf := alignedBuf(2 * SectorSize)
	assert.NoError(t, ring.WriteAt(s, fd, buf, SectorSize))
	big := alignedBuf(3 * SectorSize)
	assert.ErrorIs(t, ring.WriteAt(s, fd, big[1:1+SectorSize], 0), unix.EINVAL, "unaligned address")
	assert.ErrorIs(t, ring.WriteAt(s, fd, buf, 100), unix.EINVAL, "unaligned offset")
	assert.ErrorIs(t, ring.WriteAt(s, fd, buf[:100], 0), unix.EINVAL, "unaligned length")
	_, err = ring.ReadAt(s, fd, buf[:100], 0)
	assert.ErrorIs(t, err, unix.EINVAL, "reads too")
	n, err := ring.ReadAt(s, fd, buf, 0)
	require.NoError(t, err)
	assert.Equal(t, 2*SectorSize, n)
}

// TestCloseInFlight: Close completes every Op in flight with ECANCELED,
// keeps them reapable, then Reap says ErrClosed; a blocked Reap wakes.
func TestCloseInFlight(t *testing.T) {
	d := NewDisk(1)
	r := d.NewRing(ring.Options{})
	idle := d.NewRing(ring.Options{})
	woke := make(chan error, 1)
	go func() {
		_, err := idle.Reap(make([]ring.Completion, 1))
		woke <- err
	}()
	require.NoError(t, idle.Close())
	assert.ErrorIs(t, <-woke, ring.ErrClosed)

	require.NoError(t, r.Submit([]ring.Op{
		{Code: ring.OpNop, Token: 1, Link: true},
		{Code: ring.OpNop, Token: 2},
		{Code: ring.OpNop, Token: 3, Deadline: time.Nanosecond},
	}))
	require.NoError(t, r.Close())
	require.NoError(t, r.Close())
	assert.ErrorIs(t, r.Submit([]ring.Op{{Code: ring.OpNop}}), ring.ErrClosed)
	got := make([]ring.Completion, 8)
	n, err := r.Reap(got)
	require.NoError(t, err)
	require.Equal(t, 3, n)
	for _, c := range got[:n] {
		assert.ErrorIs(t, c.Err, unix.ECANCELED, "token %d", c.Token)
		assert.False(t, c.Deadline)
	}
	_, err = r.Reap(got)
	assert.ErrorIs(t, err, ring.ErrClosed)
	n, err = r.TryReap(got)
	assert.Zero(t, n)
	assert.ErrorIs(t, err, ring.ErrClosed)
}

func TestTryReapIdle(t *testing.T) {
	_, r, _ := newTest(t, 1)
	n, err := r.TryReap(make([]ring.Completion, 4))
	assert.NoError(t, err)
	assert.Zero(t, n)
	require.NoError(t, r.Submit([]ring.Op{{Code: ring.OpNop}}))
	n, err = r.TryReap(make([]ring.Completion, 4))
	assert.NoError(t, err)
	assert.Equal(t, 1, n, "an op in flight needs no real time to complete")
	assert.Equal(t, ring.Stats{Submitted: 1, Completed: 1}, r.Stats())
	assert.Equal(t, "sim", r.Info().Backend)
	assert.Equal(t, 4*ring.DefaultEntries, r.Capacity())
	assert.Equal(t, 7, NewDisk(1).NewRing(ring.Options{Capacity: 7}).Capacity())
}

func TestSubmitErrors(t *testing.T) {
	_, r, _ := newTest(t, 1)
	var oe *ring.OpError
	require.ErrorAs(t, r.Submit([]ring.Op{{Code: ring.OpRead, FD: 3}}), &oe, "nil buffer")
	require.ErrorAs(t, r.Submit([]ring.Op{{Code: ring.OpNop, Link: true}}), &oe, "last op linked")
	small := NewDisk(1).NewRing(ring.Options{Capacity: 2})
	assert.Error(t, small.Submit(make([]ring.Op, 3)), "a batch larger than the capacity")
	assert.Equal(t, ring.Stats{}, r.Stats(), "nothing was submitted")
}

// TestCapacityBlocks: a Submit beyond Capacity waits for a Reap in another
// goroutine.
func TestCapacityBlocks(t *testing.T) {
	d := NewDisk(1)
	r := d.NewRing(ring.Options{Capacity: 4})
	defer r.Close()
	require.NoError(t, r.Submit(make([]ring.Op, 4)))
	done := make(chan error, 1)
	go func() { done <- r.Submit(make([]ring.Op, 2)) }()
	got := reapAll(t, r, 6, 1)
	require.NoError(t, <-done)
	assert.Len(t, got, 6)
}

// TestConcurrentRings drives several rings on one disk from several
// goroutines (for the race detector) and checks every write landed.
func TestConcurrentRings(t *testing.T) {
	d := NewDisk(1)
	require.NoError(t, d.MkdirAll("/t"))
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := d.NewRing(ring.Options{Capacity: 8})
			defer r.Close()
			s := ring.NewSync(r)
			fd, err := ring.Open(s, fmt.Sprintf("/t/%d", g), unix.O_RDWR|unix.O_CREAT, 0o644)
			if !assert.NoError(t, err) {
				return
			}
			for i := 0; i < 50; i++ {
				assert.NoError(t, ring.WriteSync(s, fd, []byte{byte(i)}, int64(i)))
			}
		}()
	}
	wg.Wait()
	for g := 0; g < 4; g++ {
		b, err := d.ReadFile(fmt.Sprintf("/t/%d", g))
		require.NoError(t, err)
		assert.Len(t, b, 50)
		assert.Equal(t, byte(49), b[49])
	}
}

// scenario is a busy run: unlinked and linked writes to several files,
// syncs, deadlines, every kind of fault by probability, then a power loss
// and a read-back. It returns a hash of every completion in the order reaped
// (with the clock) and the disk's fingerprint.
func scenario(t *testing.T, seed int64) (trace, disk string) {
	t.Helper()
	d := NewDisk(seed)
	require.NoError(t, d.MkdirAll("/t"))
	for _, k := range []FaultKind{EIO, ENOSPC, ShortWrite, FsyncFail, BitFlip, Delay} {
		d.Inject(Fault{Kind: k, Prob: 0.03, Persist: true, Delay: 3 * time.Millisecond})
	}
	rng := rand.New(rand.NewSource(seed))
	h := sha256.New()
	r := d.NewRing(ring.Options{})
	s := ring.NewSync(r)
	var fds []int32
	for i := 0; i < 4; i++ {
		fd, err := ring.Open(s, fmt.Sprintf("/t/f%d", i), unix.O_RDWR|unix.O_CREAT, 0o644)
		if err == nil {
			fds = append(fds, fd)
		}
	}
	_ = ring.SyncDir(s, "/t")
	tok := uint64(0)
	for round := 0; round < 40 && len(fds) > 0; round++ {
		var ops []ring.Op
		for i := rng.Intn(6); i >= 0; i-- {
			fd := fds[rng.Intn(len(fds))]
			b := make([]byte, 1+rng.Intn(3*SectorSize))
			rng.Read(b)
			tok++
			ops = append(ops, ring.Op{Code: ring.OpWrite, Token: tok, FD: fd, Buf: b, Offset: int64(rng.Intn(8 * SectorSize)),
				Link: rng.Intn(2) == 0, Deadline: time.Millisecond})
			if rng.Intn(3) == 0 {
				tok++
				ops = append(ops, ring.Op{Code: ring.OpRead, Token: tok, FD: fd, Buf: make([]byte, 700), Offset: 0})
			}
		}
		tok++
		ops = append(ops, ring.Op{Code: ring.OpFdatasync, Token: tok, FD: fds[rng.Intn(len(fds))], Deadline: time.Millisecond})
		require.NoError(t, r.Submit(ops))
		for _, c := range reapAll(t, r, len(ops), 1+rng.Intn(3)) {
			fmt.Fprintf(h, "%d %s %d %v %v %v %d|", c.Token, c.Code, c.Res, c.Err, c.Deadline, c.Late, d.Now())
			if c.Code == ring.OpRead && !c.Deadline {
				h.Write(c.Buf)
			}
		}
	}
	st := r.Stats()
	fmt.Fprintf(h, "%+v %v", st, d.Hits())
	d.PowerLoss(rand.New(rand.NewSource(seed)))
	require.NoError(t, r.Close())
	return hex.EncodeToString(h.Sum(nil)), d.Fingerprint()
}

// TestReplay: the same seed replays the same run exactly; another seed
// makes another run.
func TestReplay(t *testing.T) {
	t1, d1 := scenario(t, 42)
	t2, d2 := scenario(t, 42)
	assert.Equal(t, t1, t2, "completion trace")
	assert.Equal(t, d1, d2, "disk after power loss")
	t3, d3 := scenario(t, 43)
	assert.NotEqual(t, t1, t3)
	assert.NotEqual(t, d1, d3)
}

func TestCorruptHelpers(t *testing.T) {
	d := NewDisk(1)
	require.NoError(t, d.MkdirAll("/a/b"))
	require.NoError(t, d.WriteFile("/a/b/f", []byte{0, 0, 0, 0, 0, 0, 0, 0}))
	require.NoError(t, d.FlipBit("/a/b/f", 9))
	got, _ := d.ReadDurable("/a/b/f")
	assert.Equal(t, []byte{0, 2, 0, 0, 0, 0, 0, 0}, got)
	require.NoError(t, d.WriteFile("/a/b/f", []byte("abcdefgh")))
	require.NoError(t, d.ZeroRange("/a/b/f", 2, 100))
	got, _ = d.ReadFile("/a/b/f")
	assert.Equal(t, []byte("ab\x00\x00\x00\x00\x00\x00"), got)
	require.NoError(t, d.Truncate("/a/b/f", 1))
	d.PowerLoss(nil)
	got, _ = d.ReadFile("/a/b/f")
	assert.Equal(t, "a", string(got), "the damage is durable")
	assert.ErrorIs(t, d.FlipBit("/a/b/f", 8), unix.EINVAL, "past the end")
	assert.ErrorIs(t, d.Truncate("/a/missing", 0), unix.ENOENT)
	assert.ErrorIs(t, d.Truncate("/a/b", 0), unix.EISDIR)
	_, err := d.ReadDurable("/a/b")
	assert.ErrorIs(t, err, unix.EISDIR)
	assert.Equal(t, []string{"/a/b/f"}, d.Files())
	d.Advance(time.Second)
	assert.Equal(t, time.Second, d.Now())
}
