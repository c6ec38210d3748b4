package ring

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The size classes of BufPool. Each is a multiple of the page size, so
// every buffer starts on a page boundary and suits O_DIRECT.
const (
	BufSmall  = 4 << 10 // one page: a WAL frame or an O_DIRECT block
	BufMedium = 64 << 10
	BufLarge  = 1 << 20 // the largest class; bigger buffers get their own mapping
)

// bufClasses lists the size classes in increasing order, with how many
// buffers one arena of that class holds. An arena is one mmap; fewer, larger
// mappings keep the number of kernel VMAs small, while the counts keep a pool
// that only ever needs one large buffer from mapping tens of MiB.
var bufClasses = [...]struct{ size, perArena int }{
	{BufSmall, 64},  // 256 KiB arenas
	{BufMedium, 16}, // 1 MiB arenas
	{BufLarge, 4},   // 4 MiB arenas
}

var (
	// ErrPoolClosed is returned by BufPool's methods after Close.
	ErrPoolClosed = errors.New("ring: buffer pool closed")
	// ErrForeignBuffer is returned by BufPool.Put for a buffer that the pool
	// did not hand out, or that was already put back.
	ErrForeignBuffer = errors.New("ring: buffer not handed out by this pool")
)

// BufPool hands out page-aligned buffers that live outside the Go heap, in
// anonymous mmap'd arenas. The kernel may hold their addresses for as long
// as an operation runs (the garbage collector neither moves nor frees them)
// and they satisfy O_DIRECT's alignment rules.
//
// Buffers come in three size classes (BufSmall, BufMedium, BufLarge); a
// request larger than BufLarge gets a dedicated mapping that Put unmaps.
// Arenas are never unmapped before Close: a returned buffer is kept for the
// next Get of its class.
//
// A BufPool is safe for concurrent use.
//
// Invariants (all protected by mu):
//  1. Every buffer address is either in its class's free list or in out,
//     never both; out also holds the dedicated mappings.
//  2. After closed is set, arenas and free are empty and nothing is mapped.
type BufPool struct {
	mu     sync.Mutex
	closed bool
	free   [len(bufClasses)][][]byte // full-capacity buffers ready for Get
	arenas [][]byte                  // every class mapping, for Close
	out    map[uintptr]outBuf        // handed out, by the address of byte 0
	stats  BufPoolStats
}

// outBuf is a buffer that is handed out.
type outBuf struct {
	class int    // index into bufClasses, or -1 for a dedicated mapping
	mem   []byte // the full-capacity buffer (the whole mapping if dedicated)
}

// BufPoolStats are a BufPool's counters.
type BufPoolStats struct {
	Mapped int64 // bytes currently mapped, arenas and dedicated mappings
	InUse  int   // buffers handed out and not yet put back
	Gets   uint64
	Puts   uint64
}

// NewBufPool returns an empty pool; arenas are mapped on first use.
func NewBufPool() *BufPool {
	return &BufPool{out: make(map[uintptr]outBuf)}
}

// Get returns a buffer of length n from the smallest class that holds n
// bytes (cap is the class size), or from a dedicated mapping rounded up to
// whole pages when n > BufLarge. Its contents are unspecified: a reused
// buffer keeps what its last user wrote. The buffer starts on a page
// boundary. Give it back with Put.
func (p *BufPool) Get(n int) ([]byte, error) {
	if n < 0 {
		return nil, fmt.Errorf("ring: buffer pool: negative size %d", n)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrPoolClosed
	}
	class := -1
	for i, c := range bufClasses {
		if n <= c.size {
			class = i
			break
		}
	}
	var mem []byte
	if class < 0 {
		page := unix.Getpagesize()
		size := (n + page - 1) / page * page
		m, err := mmapAnon(size)
		if err != nil {
			return nil, err
		}
		p.stats.Mapped += int64(size)
		mem = m
	} else {
		if len(p.free[class]) == 0 {
			if err := p.grow(class); err != nil {
				return nil, err
			}
		}
		last := len(p.free[class]) - 1
		mem = p.free[class][last]
		p.free[class][last] = nil
		p.free[class] = p.free[class][:last]
	}
	p.out[addr(mem)] = outBuf{class: class, mem: mem}
	p.stats.InUse++
	p.stats.Gets++
	return mem[:n], nil
}

// grow maps one arena of class and puts its buffers on the free list.
// REQUIRES: p.mu held.
func (p *BufPool) grow(class int) error {
	c := bufClasses[class]
	arena, err := mmapAnon(c.size * c.perArena)
	if err != nil {
		return err
	}
	p.arenas = append(p.arenas, arena)
	p.stats.Mapped += int64(len(arena))
	// Pushed in reverse so that Get hands out the arena front to back.
	for i := c.perArena - 1; i >= 0; i-- {
		p.free[class] = append(p.free[class], arena[i*c.size:(i+1)*c.size:(i+1)*c.size])
	}
	return nil
}

// Put gives back a buffer that Get returned. b may have been resliced to a
// shorter length, but must start where Get's buffer started. Putting a
// buffer the pool did not hand out, or putting one twice, returns
// ErrForeignBuffer and changes nothing.
// REQUIRES: no operation still uses b; the caller does not touch b again.
func (p *BufPool) Put(b []byte) error {
	if cap(b) == 0 {
		return ErrForeignBuffer
	}
	a := addr(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrPoolClosed
	}
	ob, ok := p.out[a]
	if !ok || cap(b) != cap(ob.mem) {
		return ErrForeignBuffer
	}
	delete(p.out, a)
	p.stats.InUse--
	p.stats.Puts++
	if ob.class < 0 {
		p.stats.Mapped -= int64(len(ob.mem))
		if err := unix.Munmap(ob.mem); err != nil {
			return fmt.Errorf("ring: buffer pool: munmap: %w", err)
		}
		return nil
	}
	p.free[ob.class] = append(p.free[ob.class], ob.mem)
	return nil
}

// Stats returns the pool's counters.
func (p *BufPool) Stats() BufPoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Close unmaps every arena and dedicated mapping. Later calls to Get and
// Put return ErrPoolClosed; a second Close returns nil.
// REQUIRES: no buffer is in use — touching one after Close faults. Close
// still unmaps everything but reports buffers that were not put back.
func (p *BufPool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	var firstErr error
	for _, a := range p.arenas {
		if err := unix.Munmap(a); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("ring: buffer pool: munmap: %w", err)
		}
	}
	inUse := len(p.out)
	for _, ob := range p.out {
		if ob.class >= 0 {
			continue // inside an arena, unmapped above
		}
		if err := unix.Munmap(ob.mem); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("ring: buffer pool: munmap: %w", err)
		}
	}
	p.arenas, p.out = nil, nil
	p.free = [len(bufClasses)][][]byte{}
	p.stats.Mapped, p.stats.InUse = 0, 0
	if firstErr == nil && inUse > 0 {
		firstErr = fmt.Errorf("ring: buffer pool closed with %d buffers in use", inUse)
	}
	return firstErr
}

// mmapAnon maps size bytes of private, zeroed, page-aligned memory.
func mmapAnon(size int) ([]byte, error) {
	m, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("ring: buffer pool: mmap %d bytes: %w", size, err)
	}
	return m, nil
}

// addr returns the address of b's first byte (of its capacity, so that a
// zero-length buffer still has one).
func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// AlignedBuf returns a zeroed n-byte slice of the Go heap whose first byte
// is align-aligned (align a power of two), as O_DIRECT transfers need. The
// Go heap does not move objects, so the ring may hold its address as long
// as the Op keeps it reachable.
func AlignedBuf(n, align int) []byte {
	b := make([]byte, n+align)
	skip := (align - int(uintptr(unsafe.Pointer(unsafe.SliceData(b)))&uintptr(align-1))) & (align - 1)
	return b[skip : skip+n : skip+n]
}
