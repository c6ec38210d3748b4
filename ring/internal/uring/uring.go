// Package uring is a minimal io_uring binding on golang.org/x/sys/unix:
// setup, the shared-memory rings, submission and completion, and the opcode
// probe. It knows nothing of ringpipe's operations; package ring builds its
// backend on it.
//
// Memory ordering (see RING-NOTES.md): the counters the kernel shares with
// us — SQ head, CQ tail, SQ flags, CQ overflow — are read with atomic loads,
// and the counters we publish — SQ tail, CQ head — are written with atomic
// stores. SQE and CQE contents are plain memory, ordered by those.
//
// A Ring is not safe for concurrent use as a whole. The submission side
// (GetSQE, Flush, Enter with submissions) and the completion side
// (PeekCQEs) each need one owner at a time; the two may run in parallel,
// which is how ringpipe's submitter and completer use it.
package uring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Setup flags (linux/io_uring.h).
const (
	SetupCQSize     = 1 << 3
	SetupClamp      = 1 << 4
	SetupSubmitAll  = 1 << 7
	SetupNoSQArray  = 1 << 16
	FeatSingleMmap  = 1 << 0
	FeatNoDrop      = 1 << 1
	FeatRWCurPos    = 1 << 3
	FeatExtArg      = 1 << 8
	FeatNativeWkrs  = 1 << 9
	enterGetEvents  = 1 << 0
	sqCQOverflow    = 1 << 1
	offSQRing       = 0
	offCQRing       = 0x8000000
	offSQEs         = 0x10000000
	registerProbe   = 8
	probeOpSupport  = 1 << 0
	maxProbeOps     = 256
	SQELink         = 1 << 2 // IOSQE_IO_LINK
	SQEAsync        = 1 << 4 // IOSQE_ASYNC: go straight to a kernel worker
	FsyncDatasync   = 1 << 0 // IORING_FSYNC_DATASYNC
	AsyncCancelAny  = 1 << 2 // IORING_ASYNC_CANCEL_ANY
	AsyncCancelAll  = 1 << 0 // IORING_ASYNC_CANCEL_ALL
	sysSetup        = 425
	sysEnter        = 426
	sysRegister     = 427
	defaultCQFactor = 2
)

// Opcodes (enum io_uring_op).
const (
	OpNop         = 0
	OpReadv       = 1
	OpWritev      = 2
	OpFsync       = 3
	OpTimeout     = 11
	OpAsyncCancel = 14
	OpLinkTimeout = 15
	OpFallocate   = 17
	OpOpenat      = 18
	OpClose       = 19
	OpRead        = 22
	OpWrite       = 23
	OpRenameat    = 35
	OpUnlinkat    = 36
	OpMkdirat     = 37
)

// Params mirrors struct io_uring_params.
type Params struct {
	SQEntries    uint32
	CQEntries    uint32
	Flags        uint32
	SQThreadCPU  uint32
	SQThreadIdle uint32
	Features     uint32
	WQFd         uint32
	Resv         [3]uint32
	SQOff        SQRingOffsets
	CQOff        CQRingOffsets
}

// SQRingOffsets mirrors struct io_sqring_offsets.
type SQRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	UserAddr                                                        uint64
}

// CQRingOffsets mirrors struct io_cqring_offsets.
type CQRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, CQEs, Flags, Resv1 uint32
	UserAddr                                                        uint64
}

// SQE mirrors struct io_uring_sqe (64 bytes).
type SQE struct {
	Opcode      uint8
	Flags       uint8
	IOPrio      uint16
	Fd          int32
	Off         uint64 // also addr2
	Addr        uint64
	Len         uint32
	OpFlags     uint32 // rw_flags, fsync_flags, open_flags, timeout_flags, ...
	UserData    uint64
	BufIndex    uint16
	Personality uint16
	SpliceFdIn  int32 // also file_index
	Addr3       uint64
	_           uint64
}

// CQE mirrors struct io_uring_cqe (16 bytes; CQE32 is not used).
type CQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

// The kernel's sizes, asserted at compile time: a wrong layout here would
// hand the kernel garbage.
var (
	_ [120 - unsafe.Sizeof(Params{})]struct{}
	_ [unsafe.Sizeof(Params{}) - 120]struct{}
	_ [64 - unsafe.Sizeof(SQE{})]struct{}
	_ [unsafe.Sizeof(SQE{}) - 64]struct{}
	_ [16 - unsafe.Sizeof(CQE{})]struct{}
	_ [unsafe.Sizeof(CQE{}) - 16]struct{}
)

// Ring is one io_uring instance and its mappings.
type Ring struct {
	fd     int
	params Params

	sqMap  []byte // SQ ring (and CQ ring with FEAT_SINGLE_MMAP)
	cqMap  []byte // CQ ring; nil with FEAT_SINGLE_MMAP
	sqeMap []byte // the SQE array

	sqHead, sqTail, sqFlags, sqDropped *uint32
	sqMask                             uint32
	sqes                               []SQE
	// sqeTail is the next SQE slot to fill; SQEs in [*sqTail, sqeTail) are
	// filled but not yet published. Owned by the submission side.
	sqeTail uint32

	cqHead, cqTail, cqOverflow *uint32
	cqMask                     uint32
	cqes                       []CQE
}

// Setup creates a ring with sqEntries submission entries and cqEntries
// completion entries (0: twice sqEntries). It tries the optional flags in
// want and drops, one at a time and in the order given, each one the kernel
// refuses with EINVAL. It returns the flags it settled on.
func Setup(sqEntries, cqEntries uint32, want []uint32) (*Ring, error) {
	if cqEntries == 0 {
		cqEntries = defaultCQFactor * sqEntries
	}
	var p Params
	var fd int
	var err error
	for drop := 0; drop <= len(want); drop++ {
		p = Params{CQEntries: cqEntries, Flags: SetupCQSize}
		for _, f := range want[drop:] {
			p.Flags |= f
		}
		fd, err = setup(sqEntries, &p)
		if err != unix.EINVAL {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("uring: io_uring_setup: %w", err)
	}
	r := &Ring{fd: fd, params: p}
	if err := r.mmap(); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func setup(entries uint32, p *Params) (int, error) {
	fd, _, errno := unix.Syscall(sysSetup, uintptr(entries), uintptr(unsafe.Pointer(p)), 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

func (r *Ring) mmap() error {
	p := &r.params
	sqSize := int(p.SQOff.Array) + 4*int(p.SQEntries)
	if p.Flags&SetupNoSQArray != 0 {
		sqSize = int(p.SQOff.Array) // the kernel still reports where it would be
		if sqSize == 0 {
			sqSize = int(p.SQOff.Dropped) + 4
		}
	}
	cqSize := int(p.CQOff.CQEs) + int(unsafe.Sizeof(CQE{}))*int(p.CQEntries)
	single := p.Features&FeatSingleMmap != 0
	if single {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	r.sqMap, err = unix.Mmap(r.fd, offSQRing, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("uring: mmap SQ ring: %w", err)
	}
	cqMap := r.sqMap
	if !single {
		r.cqMap, err = unix.Mmap(r.fd, offCQRing, cqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return fmt.Errorf("uring: mmap CQ ring: %w", err)
		}
		cqMap = r.cqMap
	}
	sqeSize := int(unsafe.Sizeof(SQE{})) * int(p.SQEntries)
	r.sqeMap, err = unix.Mmap(r.fd, offSQEs, sqeSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("uring: mmap SQEs: %w", err)
	}

	u32 := func(m []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&m[off])) }
	r.sqHead = u32(r.sqMap, p.SQOff.Head)
	r.sqTail = u32(r.sqMap, p.SQOff.Tail)
	r.sqFlags = u32(r.sqMap, p.SQOff.Flags)
	r.sqDropped = u32(r.sqMap, p.SQOff.Dropped)
	r.sqMask = *u32(r.sqMap, p.SQOff.RingMask)
	r.sqes = unsafe.Slice((*SQE)(unsafe.Pointer(&r.sqeMap[0])), p.SQEntries)
	if p.Flags&SetupNoSQArray == 0 {
		// The index array maps ring slots to SQEs; we use slot i for SQE i,
		// so fill it once, as liburing does.
		arr := unsafe.Slice(u32(r.sqMap, p.SQOff.Array), p.SQEntries)
		for i := range arr {
			arr[i] = uint32(i)
		}
	}
	r.cqHead = u32(cqMap, p.CQOff.Head)
	r.cqTail = u32(cqMap, p.CQOff.Tail)
	r.cqOverflow = u32(cqMap, p.CQOff.Overflow)
	r.cqMask = *u32(cqMap, p.CQOff.RingMask)
	r.cqes = unsafe.Slice((*CQE)(unsafe.Pointer(&cqMap[p.CQOff.CQEs])), p.CQEntries)
	r.sqeTail = atomic.LoadUint32(r.sqTail)
	return nil
}

// Params returns the parameters the kernel filled in.
func (r *Ring) Params() Params { return r.params }

// Fd returns the ring's file descriptor.
func (r *Ring) Fd() int { return r.fd }

// SQFree returns how many SQEs can be filled before the SQ is full.
func (r *Ring) SQFree() uint32 {
	return r.params.SQEntries - (r.sqeTail - atomic.LoadUint32(r.sqHead))
}

// GetSQE returns the next free SQE, zeroed, or nil when the SQ is full.
func (r *Ring) GetSQE() *SQE {
	if r.SQFree() == 0 {
		return nil
	}
	sqe := &r.sqes[r.sqeTail&r.sqMask]
	*sqe = SQE{}
	r.sqeTail++
	return sqe
}

// Flush publishes the filled SQEs to the kernel and returns how many are
// pending submission.
func (r *Ring) Flush() uint32 {
	atomic.StoreUint32(r.sqTail, r.sqeTail)
	return r.sqeTail - atomic.LoadUint32(r.sqHead)
}

// Enter calls io_uring_enter. It uses Syscall6, not RawSyscall6, so that a
// call that blocks or runs kernel work releases its P (RING-NOTES.md).
func (r *Ring) Enter(toSubmit, minComplete uint32, flags uint32) (int, error) {
	n, _, errno := unix.Syscall6(sysEnter, uintptr(r.fd), uintptr(toSubmit), uintptr(minComplete),
		uintptr(flags), 0, 0)
	if errno != 0 {
		return int(n), errno
	}
	return int(n), nil
}

// Submit publishes the filled SQEs and enters the kernel to submit them,
// waiting for minComplete completions when positive. EINTR is retried;
// other errors (EAGAIN, EBUSY: the kernel wants completions reaped first)
// are returned with the count submitted so far.
func (r *Ring) Submit(minComplete uint32) (int, error) {
	var flags uint32
	if minComplete > 0 {
		flags |= enterGetEvents
	}
	total := 0
	for {
		pending := r.Flush()
		if pending == 0 && minComplete == 0 {
			return total, nil
		}
		n, err := r.Enter(pending, minComplete, flags)
		if n > 0 {
			total += n
		}
		if err == unix.EINTR {
			// A submit+wait interrupted in its wait returns the submit
			// count; loop to submit any rest and to wait again.
			if n > 0 && uint32(n) == pending && minComplete > 0 && r.CQReady() > 0 {
				return total, nil
			}
			continue
		}
		return total, err
	}
}

// WaitCQE blocks until at least one CQE is ready. When the CQ has
// overflowed (the kernel holds CQEs it could not post), it also asks the
// kernel to flush them — once per call, so a full CQ cannot spin it.
func (r *Ring) WaitCQE() error {
	if atomic.LoadUint32(r.sqFlags)&sqCQOverflow != 0 {
		if _, err := r.Enter(0, 0, enterGetEvents); err != nil && err != unix.EINTR && err != unix.EBUSY {
			return fmt.Errorf("uring: flush CQ overflow: %w", err)
		}
	}
	for r.CQReady() == 0 {
		_, err := r.Enter(0, 1, enterGetEvents)
		switch err {
		case nil, unix.EINTR:
		case unix.EBADR:
			return errors.New("uring: completions were dropped (EBADR)")
		default:
			return fmt.Errorf("uring: io_uring_enter: %w", err)
		}
	}
	return nil
}

// Overflowed reports whether the kernel holds CQEs that did not fit the CQ.
func (r *Ring) Overflowed() bool { return atomic.LoadUint32(r.sqFlags)&sqCQOverflow != 0 }

// FlushOverflow asks the kernel to move overflowed CQEs into the CQ.
func (r *Ring) FlushOverflow() error {
	_, err := r.Enter(0, 0, enterGetEvents)
	if err != nil && err != unix.EINTR && err != unix.EBUSY {
		return fmt.Errorf("uring: flush CQ overflow: %w", err)
	}
	return nil
}

// CQReady returns how many CQEs wait in the CQ.
func (r *Ring) CQReady() uint32 {
	return atomic.LoadUint32(r.cqTail) - atomic.LoadUint32(r.cqHead)
}

// PeekCQEs copies up to len(dst) ready CQEs into dst, releases their slots
// to the kernel and returns how many it copied. CQEs are copied out before
// the head moves: a pointer into the CQ is invalid afterwards.
func (r *Ring) PeekCQEs(dst []CQE) int {
	head := atomic.LoadUint32(r.cqHead)
	tail := atomic.LoadUint32(r.cqTail)
	n := 0
	for ; head != tail && n < len(dst); n++ {
		dst[n] = r.cqes[head&r.cqMask]
		head++
	}
	atomic.StoreUint32(r.cqHead, head)
	return n
}

// Dropped returns the kernel's count of invalid SQEs it dropped.
func (r *Ring) Dropped() uint32 { return atomic.LoadUint32(r.sqDropped) }

// CQOverflowCount returns the kernel's count of CQEs that overflowed.
func (r *Ring) CQOverflowCount() uint32 { return atomic.LoadUint32(r.cqOverflow) }

// Probe returns which opcodes the kernel supports, indexed by opcode.
func (r *Ring) Probe() ([maxProbeOps]bool, error) {
	var supported [maxProbeOps]bool
	// struct io_uring_probe: 16-byte header, then 8-byte io_uring_probe_op.
	buf := make([]byte, 16+8*maxProbeOps)
	_, _, errno := unix.Syscall6(sysRegister, uintptr(r.fd), registerProbe,
		uintptr(unsafe.Pointer(&buf[0])), maxProbeOps, 0, 0)
	if errno != 0 {
		return supported, fmt.Errorf("uring: register probe: %w", errno)
	}
	n := int(buf[1]) // ops_len
	for i := 0; i < n && i < maxProbeOps; i++ {
		op := buf[16+8*i:]
		flags := uint16(op[2]) | uint16(op[3])<<8
		if flags&probeOpSupport != 0 {
			supported[op[0]] = true
		}
	}
	return supported, nil
}

// Close unmaps every region and closes the ring's fd. REQUIRES: nothing in
// flight references memory the caller is about to free.
func (r *Ring) Close() error {
	var first error
	for _, m := range []*[]byte{&r.sqeMap, &r.cqMap, &r.sqMap} {
		if *m != nil {
			if err := unix.Munmap(*m); err != nil && first == nil {
				first = err
			}
			*m = nil
		}
	}
	if r.fd >= 0 {
		if err := unix.Close(r.fd); err != nil && first == nil {
			first = err
		}
		r.fd = -1
	}
	return first
}

// Errno converts a negative CQE result into an error.
func Errno(res int32) error {
	if res >= 0 {
		return nil
	}
	return syscall.Errno(-res)
}
