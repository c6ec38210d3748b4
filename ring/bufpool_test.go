package ring_test

import (
	"runtime"
	"sync"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring"
)

func newPool(t *testing.T) *ring.BufPool {
	p := ring.NewBufPool()
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func bufAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

func TestBufPoolClassesAndAlignment(t *testing.T) {
	p := newPool(t)
	page := uintptr(unix.Getpagesize())
	cases := []struct{ n, wantCap int }{
		{0, ring.BufSmall}, {1, ring.BufSmall}, {4096, ring.BufSmall},
		{4097, ring.BufMedium}, {ring.BufMedium, ring.BufMedium},
		{ring.BufMedium + 1, ring.BufLarge}, {ring.BufLarge, ring.BufLarge},
		{ring.BufLarge + 1, ring.BufLarge + int(page)},
		{3 << 20, 3 << 20},
	}
	var got [][]byte
	for _, c := range cases {
		b, err := p.Get(c.n)
		require.NoError(t, err, "Get(%d)", c.n)
		assert.Len(t, b, c.n, "Get(%d)", c.n)
		assert.Equal(t, c.wantCap, cap(b), "Get(%d)", c.n)
		assert.Zero(t, bufAddr(b)%page, "Get(%d) at %#x is not page-aligned", c.n, bufAddr(b))
		// The whole capacity is writable memory.
		full := b[:cap(b)]
		full[0], full[len(full)-1] = 1, 2
		got = append(got, b)
	}
	assert.Equal(t, len(cases), p.Stats().InUse)
	for _, b := range got {
		require.NoError(t, p.Put(b))
	}
	st := p.Stats()
	assert.Zero(t, st.InUse)
	assert.Equal(t, uint64(len(cases)), st.Gets)
	assert.Equal(t, uint64(len(cases)), st.Puts)
	_, err := p.Get(-1)
	assert.Error(t, err)
}

func TestBufPoolReuse(t *testing.T) {
	p := newPool(t)
	a, err := p.Get(100)
	require.NoError(t, err)
	mapped := p.Stats().Mapped
	require.NoError(t, p.Put(a[:1])) // a shorter reslice is still the same buffer
	b, err := p.Get(4000)
	require.NoError(t, err)
	assert.Equal(t, bufAddr(a), bufAddr(b), "a returned buffer is reused")
	assert.Equal(t, mapped, p.Stats().Mapped, "reuse maps nothing new")

	// Distinct buffers of one class never overlap, across arenas too.
	seen := map[uintptr]bool{bufAddr(b): true}
	var held [][]byte
	for i := 0; i < 200; i++ {
		c, err := p.Get(ring.BufSmall)
		require.NoError(t, err)
		a := bufAddr(c)
		require.False(t, seen[a], "buffer %#x handed out twice", a)
		seen[a] = true
		held = append(held, c)
	}
	for _, c := range held {
		require.NoError(t, p.Put(c))
	}
	require.NoError(t, p.Put(b))

	// A dedicated mapping is unmapped on Put.
	before := p.Stats().Mapped
	big, err := p.Get(2 << 20)
	require.NoError(t, err)
	assert.Equal(t, before+2<<20, p.Stats().Mapped)
	require.NoError(t, p.Put(big))
	assert.Equal(t, before, p.Stats().Mapped)
}

func TestBufPoolBadPut(t *testing.T) {
	p := newPool(t)
	b, err := p.Get(ring.BufSmall)
	require.NoError(t, err)
	copy(b, "keep")
	inUse := p.Stats().InUse

	assert.ErrorIs(t, p.Put(make([]byte, ring.BufSmall)), ring.ErrForeignBuffer, "heap buffer")
	assert.ErrorIs(t, p.Put(b[1:]), ring.ErrForeignBuffer, "interior pointer")
	assert.ErrorIs(t, p.Put(b[:0:0]), ring.ErrForeignBuffer, "zero capacity")
	assert.ErrorIs(t, p.Put(nil), ring.ErrForeignBuffer, "nil")
	other := newPool(t)
	ob, err := other.Get(ring.BufSmall)
	require.NoError(t, err)
	assert.ErrorIs(t, p.Put(ob), ring.ErrForeignBuffer, "another pool's buffer")
	assert.Equal(t, inUse, p.Stats().InUse, "refused Puts change nothing")

	require.NoError(t, p.Put(b))
	assert.ErrorIs(t, p.Put(b), ring.ErrForeignBuffer, "double Put")

	// After a refused double Put the buffer is handed out once, not twice.
	x, err := p.Get(1)
	require.NoError(t, err)
	y, err := p.Get(1)
	require.NoError(t, err)
	assert.NotEqual(t, bufAddr(x), bufAddr(y))
	require.NoError(t, p.Put(x))
	require.NoError(t, p.Put(y))
	require.NoError(t, other.Put(ob))
}

func TestBufPoolClose(t *testing.T) {
	p := ring.NewBufPool()
	b, err := p.Get(10)
	require.NoError(t, err)
	require.NoError(t, p.Put(b))
	_, err = p.Get(3 << 20)
	require.NoError(t, err)
	err = p.Close()
	assert.ErrorContains(t, err, "1 buffers in use", "a buffer not put back is reported")
	assert.Zero(t, p.Stats().Mapped)
	assert.NoError(t, p.Close(), "second Close")
	_, err = p.Get(1)
	assert.ErrorIs(t, err, ring.ErrPoolClosed)
	assert.ErrorIs(t, p.Put(b), ring.ErrPoolClosed)

	q := ring.NewBufPool()
	assert.NoError(t, q.Close(), "an unused pool closes cleanly")
}

func TestBufPoolConcurrent(t *testing.T) {
	p := newPool(t)
	const goroutines, rounds = 8, 300
	sizes := []int{1, 4096, 5000, ring.BufMedium, ring.BufLarge}
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				n := sizes[(g+i)%len(sizes)]
				b, err := p.Get(n)
				if err != nil {
					errs <- err
					return
				}
				// Stamp the buffer and check nobody else wrote to it while held.
				stamp := byte(g*31 + i)
				b[0], b[n/2], b[n-1] = stamp, stamp, stamp
				runtime.Gosched()
				if b[0] != stamp || b[n/2] != stamp || b[n-1] != stamp {
					errs <- assert.AnError
					return
				}
				if err := p.Put(b); err != nil {
					errs <- err
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	st := p.Stats()
	assert.Zero(t, st.InUse)
	assert.Equal(t, uint64(goroutines*rounds), st.Gets)
	assert.Equal(t, uint64(goroutines*rounds), st.Puts)
}
