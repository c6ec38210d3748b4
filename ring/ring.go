// Package ring is ringpipe's I/O layer: one asynchronous interface, Ring,
// with three backends.
//
//   - uring: our own io_uring binding on golang.org/x/sys/unix (Linux 5.6+).
//   - std: the same semantics with pread/pwrite/fdatasync on a bounded pool
//     of goroutines, for kernels or sandboxes where io_uring is refused.
//   - sim (package ring/sim): in memory, deterministic from a seed, with
//     power loss and fault injection on a virtual clock.
//
// Every file operation on ringpipe's data path goes through a Ring, so that
// the simulated backend can crash or fail any of them.
//
// # Model
//
// Callers Submit a batch of Ops and later Reap Completions. Each Op carries
// a caller Token that comes back on its Completion. Buffers are handed over
// with the Op and handed back with the Completion; the caller must not touch
// them in between.
//
// Invariants every backend keeps (the conformance suite in ring/ringtest
// checks each one):
//
//  1. Every submitted Op gets exactly one final Completion (Deadline notices
//     come in addition), including when the ring is closed with the Op in
//     flight.
//  2. An Op with Link set starts only after the next-earlier Op of its chain
//     completed successfully; if a chain member fails, every later member
//     completes with ECANCELED and is not performed.
//  3. A short read or write is continued transparently: the remainder is
//     resubmitted (and, for a chain, the cancelled rest of the chain after
//     it) and counted in Stats.ShortIORetries. A write that makes no
//     progress fails with ErrNoProgress; a read that reaches end of file
//     completes with the bytes it got.
//  4. An Op with a Deadline that is still running when the deadline passes
//     produces a notice Completion (Deadline set) first; its final
//     Completion follows, with Late set, whether the Op was then cancelled
//     (ECANCELED) or completed anyway.
//  5. Bad input (a closed ring, an unknown opcode, a missing buffer) is an
//     error from Submit or in the Completion; it never panics.
package ring

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Opcode names an operation.
type Opcode uint8

// The operations. The fields each one reads are listed beside it; all others
// are ignored.
const (
	OpNop       Opcode = iota // nothing; completes with Res 0
	OpOpen                    // Path, Flags (O_*), Mode → Res is the new fd
	OpClose                   // FD
	OpRead                    // FD, Buf, Offset (-1: current position) → Res bytes read
	OpWrite                   // FD, Buf, Offset (-1: current position), DSync → Res bytes written
	OpReadv                   // FD, Bufs, Offset → Res bytes read
	OpWritev                  // FD, Bufs, Offset, DSync → Res bytes written
	OpFsync                   // FD (a directory fd syncs its entries)
	OpFdatasync               // FD
	OpFallocate               // FD, Offset, Length, Flags (FALLOC_FL_*)
	OpRename                  // Path → Path2 (atomic replace)
	OpUnlink                  // Path; Flags AT_REMOVEDIR removes a directory
	OpMkdir                   // Path, Mode
	OpStat                    // Path, or FD when Path is empty → Res is the size in bytes
	OpReadDir                 // Path → Names (sorted, without . and ..)
	OpLock                    // FD → exclusive, non-blocking lock; EWOULDBLOCK if held
	// OpDataEnd: FD → Res is where the file's data ends: past it, up to
	// its size, the file reads as zeros (holes, unwritten preallocation);
	// its size where the file system cannot tell. It moves the fd's
	// position.
	OpDataEnd
	numOpcodes
)

var opNames = [...]string{
	OpNop: "nop", OpOpen: "open", OpClose: "close", OpRead: "read", OpWrite: "write",
	OpReadv: "readv", OpWritev: "writev", OpFsync: "fsync", OpFdatasync: "fdatasync",
	OpFallocate: "fallocate", OpRename: "rename", OpUnlink: "unlink", OpMkdir: "mkdir",
	OpStat: "stat", OpReadDir: "readdir", OpLock: "lock", OpDataEnd: "dataend",
}

func (c Opcode) String() string {
	if int(c) < len(opNames) {
		return opNames[c]
	}
	return fmt.Sprintf("opcode(%d)", c)
}

// Op is one operation handed to Submit.
type Op struct {
	Code  Opcode
	Token uint64 // returned on the Completion; the ring never interprets it

	FD     int32
	Path   string
	Path2  string // OpRename's target
	Flags  int    // open flags, fallocate mode or unlink flags
	Mode   uint32 // permission bits for OpOpen with O_CREAT and OpMkdir
	Offset int64
	Length int64    // OpFallocate's length
	Buf    []byte   // OpRead and OpWrite; owned by the ring until completion
	Bufs   [][]byte // OpReadv and OpWritev; owned by the ring until completion

	// DSync makes an OpWrite or OpWritev complete only once the bytes it
	// wrote, and the metadata needed to read them, are durable: the
	// guarantee of the write followed by an fdatasync of the file, in one
	// Op (RWF_DSYNC, per-write O_DSYNC). io_uring performs it as one SQE
	// and one CQE, in one kernel worker hand-off instead of a linked
	// chain's two. Its error may come from the sync: then the file must be
	// treated as one whose fdatasync failed (DESIGN.md "Errors from the
	// disk"). It counts in Stats.Syncs.
	DSync bool
	// Link makes the next Op of the same Submit call start only after this
	// one succeeded. The last Op of a batch must not set Link.
	Link bool
	// Deadline, when positive, is how long the Op may run before a notice
	// Completion says that it is late (invariant 4). It is measured from
	// the moment the backend takes the Op on: Submit (uring; a linked Op's
	// wait for its predecessors counts), a worker starting its chain (std),
	// the Op starting on the virtual clock (sim). Only sim cancels an Op
	// that its deadline finds still waiting to start.
	Deadline time.Duration
}

// Completion reports the result of an Op.
type Completion struct {
	Token uint64
	Code  Opcode
	Res   int64 // bytes transferred, the new fd, the size (OpStat) or the data's end (OpDataEnd)
	Err   error // nil, a syscall.Errno (test with errors.Is), or one of this package's errors

	Buf   []byte   // handed back from the Op
	Bufs  [][]byte // handed back from the Op
	Names []string // OpReadDir

	// Deadline marks a notice, not a result: the Op's deadline passed while
	// it was running. Its final Completion follows.
	Deadline bool
	// Late is set on a final Completion whose Deadline notice was sent.
	Late bool

	nunits int8 // capacity units the Op reserved (uring backend)
}

func (c *Completion) units() int     { return int(c.nunits) }
func (c *Completion) setUnits(n int) { c.nunits = int8(n) }

// Info says what a Ring is.
type Info struct {
	Backend  string // "uring", "std" or "sim"
	Kernel   string // the running kernel's release, e.g. "6.18.44"
	Features uint32 // io_uring feature flags (uring only)
	Entries  uint32 // submission queue entries (uring) or workers (std)
	// Fallback says why Auto did not choose io_uring; empty otherwise.
	Fallback string
}

// Stats are counters a Ring keeps since it was created.
type Stats struct {
	Submitted      uint64 // Ops accepted by Submit
	Completed      uint64 // final Completions reaped
	Syncs          uint64 // OpFsync, OpFdatasync and DSync writes performed
	ShortIORetries uint64 // remainders resubmitted after a short read or write
	DeadlinesFired uint64 // Deadline notices sent
	CQOverflows    uint64 // times the kernel's CQ overflowed and was flushed (uring)
	CancelRetries  uint64 // Ops submitted again after ECANCELED or EFAULT with nothing to cause it (uring)
}

// Ring is an asynchronous I/O interface. Submit and Reap are safe for
// concurrent use with each other and with Close; at most one goroutine
// should Reap at a time (a second one waits for the first).
type Ring interface {
	// Submit hands a batch to the backend. It blocks while the ring has
	// Capacity() operations in flight (submitted and not yet reaped), so
	// REQUIRES: another goroutine reaps, or the caller reaps before it
	// submits more than Capacity(). It returns ErrClosed after Close and an
	// *OpError for malformed input, in which case nothing of the batch was
	// submitted.
	Submit(ops []Op) error
	// Reap waits until at least one Completion is ready, moves up to
	// len(out) of them into out and returns how many. After Close it
	// returns what is left and then ErrClosed.
	Reap(out []Completion) (int, error)
	// TryReap is Reap without the wait: it returns 0, nil when nothing is
	// ready.
	TryReap(out []Completion) (int, error)
	// Capacity is how many operations may be in flight at once.
	Capacity() int
	// Close refuses new submissions, cancels what is in flight, waits for
	// every in-flight Op to complete (their Completions stay reapable),
	// wakes a blocked Reap and releases the backend's resources. It is
	// idempotent.
	Close() error
	Info() Info
	Stats() Stats
}

// Clock is implemented by a Ring whose operations take time on a clock of
// its own (the simulator's virtual clock, on which its injected delays and
// Op deadlines run). Who times operations (how long a sync took) should
// read IOTime on such a ring, and the wall clock otherwise (IOClock).
type Clock interface {
	// IOTime is the ring's clock: monotonic, from an arbitrary origin.
	IOTime() time.Duration
}

// IOClock returns the clock r's operations take time on: r's own when it
// is a Clock, else the monotonic wall clock.
func IOClock(r Ring) func() time.Duration {
	if c, ok := r.(Clock); ok {
		return c.IOTime
	}
	origin := time.Now()
	return func() time.Duration { return time.Since(origin) }
}

var (
	// ErrClosed is returned by Submit and Reap on a closed ring.
	ErrClosed = errors.New("ring: closed")
	// ErrNoProgress is the error of a write that transferred nothing.
	ErrNoProgress = errors.New("ring: write made no progress")
)

// OpError reports an Op that Submit refused.
type OpError struct {
	Index int // position in the batch
	Code  Opcode
	Err   string
}

func (e *OpError) Error() string {
	return fmt.Sprintf("ring: op %d (%s): %s", e.Index, e.Code, e.Err)
}

// Validate checks a batch for malformed input, as every backend must before
// it submits anything. Backends call it; callers need not.
func Validate(ops []Op) error {
	for i := range ops {
		op := &ops[i]
		bad := func(msg string) error { return &OpError{Index: i, Code: op.Code, Err: msg} }
		if op.Code >= numOpcodes {
			return bad("unknown opcode")
		}
		if op.Deadline < 0 {
			return bad("negative deadline")
		}
		if op.DSync && op.Code != OpWrite && op.Code != OpWritev {
			return bad("DSync on an op that does not write")
		}
		if strings.IndexByte(op.Path, 0) >= 0 || strings.IndexByte(op.Path2, 0) >= 0 {
			return bad("NUL byte in path")
		}
		switch op.Code {
		case OpRead, OpWrite:
			if op.Buf == nil {
				return bad("nil buffer")
			}
			if op.Offset < -1 {
				return bad("offset below -1")
			}
		case OpReadv, OpWritev:
			if len(op.Bufs) == 0 {
				return bad("no buffers")
			}
			if len(op.Bufs) > MaxIovecs {
				return bad(fmt.Sprintf("%d buffers, more than %d", len(op.Bufs), MaxIovecs))
			}
			if op.Offset < 0 {
				return bad("negative offset")
			}
		case OpOpen, OpUnlink, OpMkdir, OpReadDir:
			if op.Path == "" {
				return bad("empty path")
			}
		case OpRename:
			if op.Path == "" || op.Path2 == "" {
				return bad("empty path")
			}
		case OpFallocate:
			if op.Offset < 0 || op.Length <= 0 {
				return bad("bad range")
			}
		}
	}
	if n := len(ops); n > 0 && ops[n-1].Link {
		return &OpError{Index: n - 1, Code: ops[n-1].Code, Err: "last op of a batch is linked"}
	}
	return nil
}

// IsSync reports whether op makes data durable: an fsync, an fdatasync or
// a DSync write.
func (op *Op) IsSync() bool {
	return op.Code == OpFsync || op.Code == OpFdatasync || op.DSync
}

// MaxIovecs is the most buffers one OpReadv or OpWritev may carry. It is
// IOV_MAX on Linux.
const MaxIovecs = 1024

// Size returns how many bytes op transfers when it succeeds in full.
func (op *Op) Size() int64 {
	switch op.Code {
	case OpRead, OpWrite:
		return int64(len(op.Buf))
	case OpReadv, OpWritev:
		var n int64
		for _, b := range op.Bufs {
			n += int64(len(b))
		}
		return n
	}
	return 0
}
