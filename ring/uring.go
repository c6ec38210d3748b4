package ring

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring/internal/uring"
)

// uringRing is the io_uring backend.
//
// Every Op gets a slot that holds, until the Op's chain has settled, all
// the memory the kernel reads or writes for it: the buffers, the iovec
// array and its NUL-terminated paths. The Go heap does not move objects,
// so keeping them reachable from the slot is enough (RING-NOTES.md,
// "Buffers").
//
// A chain (Ops linked by Link, or one unlinked Op) settles once the CQE of
// each of its Ops has arrived. Only then are its Completions delivered, in
// chain order. This is where short
// transfers are continued: the remainder and the cancelled rest of the
// chain are resubmitted as a new chain, and the caller sees one Completion
// per Op as if the transfer had been whole (invariant 3).
//
// A Deadline is a Go timer per Op, armed when Submit accepts it, not an
// IORING_OP_LINK_TIMEOUT: when it fires before the Op's CQE, the notice is
// queued and a nop wakes the reaper; the Op runs on and completes Late. A
// link timeout cost every Op a second SQE and CQE, and its disarming (the
// Op completing first, which is the rule) is task work that only the
// submitting thread runs, so the chain settled once that thread, often
// asleep in the Go scheduler, had been woken to post the timeout's CQE:
// about 6% of a one-writer Put (BenchmarkPutOneWriter). It could cancel
// an Op still queued for a kernel worker; nothing needs that: a notice is
// what the engine acts on (invariant 4 allows either).
//
// Locks, always taken in this order: reapMu, then sqMu, then mu. sqMu and
// reapMu are never both waited on: the submission side only TryLocks
// reapMu when the kernel asks it to reap first.
type uringRing struct {
	low       *uring.Ring
	supported [256]bool // io_uring opcodes the kernel has (IORING_REGISTER_PROBE)
	info      Info
	cap       int // Capacity(): Ops in flight, with Deadlines or without
	unitCap   int // capacity in CQE units (2 per Op: opUnits); the CQ size by default

	sqMu   sync.Mutex // owns the submission side of low
	reapMu sync.Mutex // owns the completion side of low: one reaper at a time
	cqes   []uring.CQE
	// asyncWrites sets IOSQE_ASYNC on writes (benchmarks only: see
	// BenchmarkDurableAppend). Set before the first Submit.
	asyncWrites bool
	// waiter parks a reaper in Go's poller while the CQ is empty; nil
	// when the poller refused the ring fd (a reaper then blocks in
	// io_uring_enter). Used under reapMu.
	waiter *cqWaiter

	// closeDone is closed when the first Close has torn the ring down;
	// later Closes wait for it.
	closeDone chan struct{}

	mu       sync.Mutex // protects every field below
	cond     *sync.Cond // broadcast when units are released or the ring closes
	closed   bool
	units    int // CQE units reserved by Ops not yet reaped
	ops      int // Ops submitted whose final Completion is not yet reaped
	inflight int // Ops whose final Completion is not yet in ready
	slots    map[uint32]*uslot
	nextID   uint32
	ready    []Completion
	stats    Stats
}

// uslot is one Op in flight. Owned by the ring, protected by uringRing.mu
// except for the memory the kernel reads, which is written before submission
// under sqMu.
type uslot struct {
	id    uint32
	op    Op
	chain *uchain
	// done is the bytes transferred by earlier parts of a continued
	// transfer. Atomic: settle writes it under mu and prep reads it under
	// sqMu; the kernel orders the two (the CQE comes before the
	// continuation's prep), but the race detector cannot see that.
	done atomic.Int64

	res      int32 // the CQE's result, once arrived
	cancels  int   // times it came back ECANCELED or EFAULT with nothing to cause it (settle)
	arrived  bool
	late     bool        // the deadline fired: a notice was sent
	finished bool        // its final Completion is in ready
	timer    *time.Timer // the Deadline, until the op finishes
	armed    time.Time   // when the timer was armed

	// Kernel-visible memory.
	iov   []unix.Iovec
	path  []byte
	path2 []byte
}

// uchain is a run of linked slots submitted together.
type uchain struct {
	slots   []*uslot
	waiting int // CQEs still to arrive before the chain settles; under mu
}

// spurious reports whether res is an error that settle may submit again
// (see there): ECANCELED or EFAULT.
func spurious(res int32) bool {
	return res == -int32(unix.ECANCELED) || res == -int32(unix.EFAULT)
}

// maxSpuriousCancels bounds how many times settle submits again an Op
// that came back ECANCELED although nothing cancelled it; after that the
// Op completes with ECANCELED.
const maxSpuriousCancels = 8

// user_data layout: the slot id in the low 32 bits, the kind above.
const (
	kindOp       = 0
	kindInternal = 2 // a nop that wakes the reaper, or a cancel
)

func userData(kind uint64, id uint32) uint64 { return kind<<32 | uint64(id) }

// requiredOps are the io_uring opcodes without which the backend refuses to
// start (Linux 5.6 has them all). Others are emulated when missing.
var requiredOps = []uint8{
	uring.OpNop, uring.OpReadv, uring.OpWritev, uring.OpFsync, uring.OpRead, uring.OpWrite,
	uring.OpAsyncCancel, uring.OpOpenat, uring.OpClose,
}

func newURing(opts Options) (Ring, error) {
	// SUBMIT_ALL (5.18) keeps a bad SQE from stopping the rest of a batch;
	// NO_SQARRAY (6.6) drops the index array. Each is dropped if refused.
	low, err := uring.Setup(opts.Entries, 0, []uint32{uring.SetupNoSQArray, uring.SetupSubmitAll})
	if err != nil {
		return nil, err
	}
	sup, err := low.Probe()
	if err != nil {
		low.Close()
		return nil, err
	}
	for _, op := range requiredOps {
		if !sup[op] {
			low.Close()
			return nil, fmt.Errorf("ring: io_uring lacks opcode %d (kernel too old)", op)
		}
	}
	if err := probeEnter(low); err != nil {
		low.Close()
		return nil, err
	}
	p := low.Params()
	// Any Op may carry a Deadline, which takes two CQE units (opUnits):
	// Capacity Ops take at most twice as many, the CQ size by default.
	c := opts.Capacity
	if c == 0 {
		c = int(p.CQEntries) / 2
	}
	r := &uringRing{
		low:       low,
		supported: sup,
		cap:       c,
		unitCap:   2 * c,
		closeDone: make(chan struct{}),
		cqes:      make([]uring.CQE, p.CQEntries),
		slots:     make(map[uint32]*uslot),
		info: Info{Backend: "uring", Kernel: kernelRelease(), Features: p.Features,
			Entries: p.SQEntries},
	}
	r.cond = sync.NewCond(&r.mu)
	if w, err := newCQWaiter(low.Fd()); err == nil {
		r.waiter = w
	}
	return r, nil
}

// probeEnter submits a nop and waits for its completion: a seccomp
// profile may allow io_uring_setup and io_uring_register but refuse
// io_uring_enter. Without the probe such a ring was taken (BackendAuto
// did not fall back to std), its first Submit failed, and Close waited
// for ever for Ops the kernel never had: Start hung, whatever its ctx
// (env audit).
func probeEnter(low *uring.Ring) error {
	sqe := low.GetSQE()
	sqe.Opcode = uring.OpNop
	sqe.Fd = -1
	sqe.UserData = userData(kindInternal, 0)
	if _, err := low.Submit(1); err != nil {
		return fmt.Errorf("ring: io_uring_enter: %w", err)
	}
	var cqe [1]uring.CQE
	if low.PeekCQEs(cqe[:]) != 1 {
		return errors.New("ring: io_uring_enter: no completion for a nop")
	}
	return nil
}

// waitCQ blocks until the CQ holds an entry.
// REQUIRES: r.reapMu held.
func (r *uringRing) waitCQ() error {
	if r.waiter != nil {
		return r.waiter.wait(r.low)
	}
	return r.low.WaitCQE()
}

func (r *uringRing) Capacity() int { return r.cap }
func (r *uringRing) Info() Info    { return r.info }

func (r *uringRing) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// opUnits returns the capacity units op reserves: its CQE, and its
// Deadline notice's place in ready (whose wake-up nop takes a CQE too).
func opUnits(op *Op) int {
	if op.Deadline > 0 {
		return 2
	}
	return 1
}

// kernelOp maps an Opcode to its io_uring opcode; ok is false for
// operations io_uring has no opcode for.
func kernelOp(c Opcode) (op uint8, ok bool) {
	switch c {
	case OpNop:
		return uring.OpNop, true
	case OpOpen:
		return uring.OpOpenat, true
	case OpClose:
		return uring.OpClose, true
	case OpRead:
		return uring.OpRead, true
	case OpWrite:
		return uring.OpWrite, true
	case OpReadv:
		return uring.OpReadv, true
	case OpWritev:
		return uring.OpWritev, true
	case OpFsync, OpFdatasync:
		return uring.OpFsync, true
	case OpFallocate:
		return uring.OpFallocate, true
	case OpRename:
		return uring.OpRenameat, true
	case OpUnlink:
		return uring.OpUnlinkat, true
	case OpMkdir:
		return uring.OpMkdirat, true
	}
	return 0, false
}

func (r *uringRing) Submit(ops []Op) error {
	if err := Validate(ops); err != nil {
		return err
	}
	units := 0
	chainSQEs := 0
	for i := range ops {
		units += opUnits(&ops[i])
		chainSQEs++
		if chainSQEs > int(r.info.Entries) {
			return &OpError{Index: i, Code: ops[i].Code, Err: "linked chain longer than the submission queue"}
		}
		if !ops[i].Link {
			chainSQEs = 0
		}
	}
	if len(ops) > r.cap {
		return fmt.Errorf("ring: batch of %d ops exceeds capacity %d", len(ops), r.cap)
	}

	r.mu.Lock()
	for !r.closed && (r.units+units > r.unitCap || r.ops+len(ops) > r.cap) {
		r.cond.Wait()
	}
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	r.units += units
	r.ops += len(ops)
	r.inflight += len(ops)
	r.stats.Submitted += uint64(len(ops))
	var kchains, echains []*uchain
	ch := &uchain{}
	emulate := false
	for i := range ops {
		s := &uslot{id: r.nextID, op: ops[i]}
		for r.slots[s.id] != nil || s.id == 0 {
			r.nextID++
			s.id = r.nextID
		}
		r.nextID++
		r.slots[s.id] = s
		if d := ops[i].Deadline; d > 0 {
			s.armed = time.Now()
			s.timer = time.AfterFunc(d, func() { r.deadline(s) })
		}
		s.chain = ch
		ch.slots = append(ch.slots, s)
		if k, ok := kernelOp(ops[i].Code); !ok || !r.supported[k] {
			emulate = true
		}
		if !ops[i].Link {
			ch.waiting = len(ch.slots)
			if emulate {
				echains = append(echains, ch)
			} else {
				kchains = append(kchains, ch)
			}
			ch, emulate = &uchain{}, false
		}
	}
	r.mu.Unlock()

	for _, c := range echains {
		r.runEmulated(c)
	}
	if len(kchains) == 0 && len(echains) == 0 {
		return nil
	}
	r.sqMu.Lock()
	defer r.sqMu.Unlock()
	if len(echains) > 0 {
		// The emulated Completions are in r.ready, but a reaper blocked
		// in io_uring_enter waits for a CQE and would not see them: post
		// an internal nop to wake it.
		if err := r.wakeReaper(); err != nil {
			return err
		}
	}
	if len(kchains) == 0 {
		return nil
	}
	return r.submitChains(kchains)
}

// deadline runs on a timer goroutine when s's Deadline passes: unless s
// finished, it queues the notice and wakes the reaper.
func (r *uringRing) deadline(s *uslot) {
	r.sqMu.Lock()
	defer r.sqMu.Unlock()
	r.mu.Lock()
	if s.finished || s.late || r.closed {
		// Closing cancels s: it completes without a notice.
		r.mu.Unlock()
		return
	}
	s.late = true
	r.stats.DeadlinesFired++
	r.ready = append(r.ready, Completion{Token: s.op.Token, Code: s.op.Code, Deadline: true})
	r.cond.Broadcast()
	r.mu.Unlock()
	// An error means the ring is failing; Reap reports it.
	_ = r.wakeReaper()
}

// wakeReaper submits an internal nop, whose CQE wakes a blocked Reap.
// REQUIRES: r.sqMu held.
func (r *uringRing) wakeReaper() error {
	if r.low.SQFree() == 0 {
		if err := r.enterSubmit(); err != nil {
			return err
		}
	}
	sqe := r.low.GetSQE()
	sqe.Opcode = uring.OpNop
	sqe.Fd = -1
	sqe.UserData = userData(kindInternal, 0)
	return r.enterSubmit()
}

// runEmulated performs a chain that holds an Op io_uring cannot do (stat,
// readdir, lock, or an opcode the kernel lacks) with plain system calls, in
// order, on the calling goroutine.
func (r *uringRing) runEmulated(c *uchain) {
	failed := false
	for _, s := range c.slots {
		if failed {
			r.finishLocked(s, 0, unix.ECANCELED)
			continue
		}
		res, names, retries, err := execSync(&s.op)
		r.mu.Lock()
		r.stats.ShortIORetries += retries
		if err == nil && (s.op.Code == OpWrite || s.op.Code == OpWritev) && res < s.op.Size() {
			err = ErrNoProgress
		}
		r.finish(s, res, err)
		if names != nil {
			r.ready[len(r.ready)-1].Names = names
		}
		r.mu.Unlock()
		failed = err != nil || (isRead(s.op.Code) && res < s.op.Size())
	}
	r.mu.Lock()
	r.freeChain(c)
	r.mu.Unlock()
}

func (r *uringRing) finishLocked(s *uslot, res int64, err error) {
	r.mu.Lock()
	r.finish(s, res, err)
	r.mu.Unlock()
}

// submitChains fills SQEs for each chain and submits them. A chain is never
// split across two io_uring_enter calls. Once the ring is closed it
// cancels the chains instead: Close sent its cancels, under sqMu, for the
// Ops the kernel had then, and these were not among them (a Submit that
// registered its Ops before Close, or a short transfer's continuation).
// REQUIRES: r.sqMu held, r.mu not held.
func (r *uringRing) submitChains(chains []*uchain) error {
	r.mu.Lock()
	if r.closed {
		for _, c := range chains {
			for _, s := range c.slots {
				r.finish(s, s.done.Load(), unix.ECANCELED)
			}
			r.freeChain(c)
		}
		r.mu.Unlock()
		// A reaper blocked in io_uring_enter waits for a CQE, and these
		// Completions came without one.
		return r.wakeReaper()
	}
	r.mu.Unlock()
	for _, c := range chains {
		if r.low.SQFree() < uint32(len(c.slots)) {
			if err := r.enterSubmit(); err != nil {
				return err
			}
		}
		for i, s := range c.slots {
			r.prep(s, i < len(c.slots)-1)
		}
	}
	return r.enterSubmit()
}

// enterSubmit submits every filled SQE. When the kernel answers EBUSY or
// EAGAIN (it wants completions reaped first) it reaps if no reaper is
// running, and retries.
// REQUIRES: r.sqMu held.
func (r *uringRing) enterSubmit() error {
	for {
		_, err := r.low.Submit(0)
		if err == nil {
			return nil
		}
		if err != unix.EBUSY && err != unix.EAGAIN {
			return fmt.Errorf("ring: io_uring_enter submit: %w", err)
		}
		if r.reapMu.TryLock() {
			conts, _ := r.drain()
			r.reapMu.Unlock()
			if len(conts) > 0 {
				// We hold sqMu: fill the continuations now; the loop
				// submits them.
				for _, c := range conts {
					for i, s := range c.slots {
						r.prep(s, i < len(c.slots)-1)
					}
				}
			}
		} else {
			runtime.Gosched()
		}
	}
}

// prep fills the SQE of slot s and returns it (for tests).
// REQUIRES: r.sqMu held and enough free SQEs.
func (r *uringRing) prep(s *uslot, linked bool) *uring.SQE {
	op := &s.op
	sqe := r.low.GetSQE()
	kop, _ := kernelOp(op.Code)
	sqe.Opcode = kop
	sqe.Fd = op.FD
	sqe.UserData = userData(kindOp, s.id)
	if linked {
		sqe.Flags |= uring.SQELink
	}
	if r.asyncWrites && isTransfer(op.Code) && !isRead(op.Code) {
		sqe.Flags |= uring.SQEAsync
	}
	done := s.done.Load()
	off := uint64(op.Offset)
	if op.Offset >= 0 {
		off += uint64(done)
	}
	switch op.Code {
	case OpOpen:
		s.path = cstr(op.Path)
		sqe.Fd = unix.AT_FDCWD
		sqe.Addr = addrOf(s.path)
		sqe.Len = op.Mode
		sqe.OpFlags = uint32(op.Flags | unix.O_CLOEXEC)
	case OpRead, OpWrite:
		b := op.Buf[done:]
		sqe.Addr = addrOf(b)
		sqe.Len = uint32(len(b))
		sqe.Off = off
		if op.DSync {
			sqe.OpFlags = unix.RWF_DSYNC
		}
	case OpReadv, OpWritev:
		rest := trimBufs(op.Bufs, done)
		s.iov = s.iov[:0]
		for _, b := range rest {
			v := unix.Iovec{Base: nil}
			if len(b) > 0 {
				v.Base = &b[0]
			}
			v.SetLen(len(b))
			s.iov = append(s.iov, v)
		}
		sqe.Addr = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(s.iov))))
		sqe.Len = uint32(len(s.iov))
		sqe.Off = off
		if op.DSync {
			sqe.OpFlags = unix.RWF_DSYNC
		}
	case OpFdatasync:
		sqe.OpFlags = uring.FsyncDatasync
	case OpFallocate:
		sqe.Off = uint64(op.Offset)
		sqe.Addr = uint64(op.Length)
		sqe.Len = uint32(op.Flags)
	case OpRename:
		s.path, s.path2 = cstr(op.Path), cstr(op.Path2)
		sqe.Fd = unix.AT_FDCWD
		sqe.Addr = addrOf(s.path)
		sqe.Len = uint32(atFDCWD)
		sqe.Off = addrOf(s.path2)
	case OpUnlink:
		s.path = cstr(op.Path)
		sqe.Fd = unix.AT_FDCWD
		sqe.Addr = addrOf(s.path)
		sqe.OpFlags = uint32(op.Flags)
	case OpMkdir:
		s.path = cstr(op.Path)
		sqe.Fd = unix.AT_FDCWD
		sqe.Addr = addrOf(s.path)
		sqe.Len = op.Mode
	}
	return sqe
}

// atFDCWD is AT_FDCWD as the kernel reads it from a __u32 field.
var atFDCWD = int32(unix.AT_FDCWD)

func cstr(s string) []byte {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return b
}

func addrOf(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}

func (r *uringRing) Reap(out []Completion) (int, error)    { return r.reap(out, true) }
func (r *uringRing) TryReap(out []Completion) (int, error) { return r.reap(out, false) }

func (r *uringRing) reap(out []Completion, wait bool) (int, error) {
	if len(out) == 0 {
		return 0, nil
	}
	r.reapMu.Lock()
	defer r.reapMu.Unlock()
	for {
		r.mu.Lock()
		if len(r.ready) > 0 {
			n := r.takeReady(out)
			r.mu.Unlock()
			return n, nil
		}
		done := r.closed && r.inflight == 0
		r.mu.Unlock()
		if done {
			return 0, ErrClosed
		}
		conts, n := r.drain()
		if len(conts) > 0 {
			r.sqMu.Lock()
			err := r.submitChains(conts)
			r.sqMu.Unlock()
			if err != nil {
				return 0, err
			}
			continue
		}
		if n > 0 {
			// drain consumed CQEs that made no Completion (Close's
			// wake-up nop among them): look again at closed and
			// inflight before waiting, or the wait may never end.
			continue
		}
		r.mu.Lock()
		got := len(r.ready) > 0
		r.mu.Unlock()
		if got {
			continue
		}
		if !wait {
			return 0, nil
		}
		if err := r.waitCQ(); err != nil {
			return 0, err
		}
	}
}

// takeReady moves Completions from ready into out and releases their units.
// REQUIRES: r.mu held.
func (r *uringRing) takeReady(out []Completion) int {
	n := copy(out, r.ready)
	for i := range out[:n] {
		c := &out[i]
		switch {
		case c.Deadline:
			r.units-- // the timeout's unit
		case c.Late:
			r.units-- // the op's unit; the timeout's went with the notice
			r.ops--
			r.stats.Completed++
		default:
			r.units -= c.units()
			r.ops--
			r.stats.Completed++
		}
	}
	r.ready = r.ready[:copy(r.ready, r.ready[n:])]
	r.cond.Broadcast()
	return n
}

// drain takes every CQE the kernel has posted (flushing an overflow once)
// and processes it. It returns the chains that must be resubmitted to
// continue a short transfer, and how many CQEs it processed.
// REQUIRES: r.reapMu held (or TryLocked), r.mu not held.
func (r *uringRing) drain() (conts []*uchain, total int) {
	flushed := false
	for {
		n := r.low.PeekCQEs(r.cqes)
		total += n
		if n > 0 {
			r.mu.Lock()
			for _, cqe := range r.cqes[:n] {
				if c := r.process(cqe); c != nil {
					conts = append(conts, c)
				}
			}
			r.mu.Unlock()
			continue
		}
		if !flushed && r.low.Overflowed() {
			flushed = true
			r.mu.Lock()
			r.stats.CQOverflows++
			r.mu.Unlock()
			if err := r.low.FlushOverflow(); err == nil {
				continue
			}
		}
		return conts, total
	}
}

// process handles one CQE and returns a chain to resubmit, if any.
// REQUIRES: r.mu held.
func (r *uringRing) process(cqe uring.CQE) *uchain {
	kind, id := cqe.UserData>>32, uint32(cqe.UserData)
	if kind == kindInternal {
		return nil
	}
	s := r.slots[id]
	if s == nil {
		return nil // cannot happen: slots live until their chain settles
	}
	s.arrived = true
	s.res = cqe.Res
	s.chain.waiting--
	if s.chain.waiting > 0 {
		return nil
	}
	return r.settle(s.chain)
}

// settle delivers a chain whose CQEs have all arrived, or returns the
// chain that continues it after a short transfer.
// REQUIRES: r.mu held.
func (r *uringRing) settle(c *uchain) *uchain {
	// failed: an earlier Op of the chain failed or came up short, so the
	// kernel cancelled the rest.
	failed := false
	for i, s := range c.slots {
		if spurious(s.res) && !failed && !r.closed && s.cancels < maxSpuriousCancels {
			// Nothing cancelled s: no failed predecessor, no Close (the
			// ring cancels nothing else). io_uring does this when it
			// cannot start a kernel worker for the submitting thread
			// (creating it failed while a signal was pending: Go's
			// preemption signal, SIGURG): ECANCELED. And an Op that the
			// kernel issues again from the submitting thread's task work
			// (a buffered read that waited for a page) fails EFAULT
			// when that thread is exiting (Go ends the thread of a
			// goroutine that exits locked to it): the Ring's buffers are
			// valid Go memory, so EFAULT means only that. Either way the
			// Op did not run: submit it and the rest of its chain again.
			s.cancels++
			r.stats.CancelRetries++
			next := &uchain{slots: c.slots[i:], waiting: len(c.slots) - i}
			for _, t := range next.slots {
				t.chain, t.arrived, t.res = next, false, 0
			}
			for _, t := range c.slots[:i] {
				delete(r.slots, t.id)
			}
			return next
		}
		if s.res < 0 {
			failed = true
			// Res: what earlier parts of a continued transfer moved.
			r.finish(s, s.done.Load(), uring.Errno(s.res))
			continue
		}
		if !isTransfer(s.op.Code) {
			r.finish(s, int64(s.res), nil)
			continue
		}
		got := s.done.Load() + int64(s.res)
		want := s.op.Size()
		switch {
		case got >= want:
			r.finish(s, got, nil)
		case s.res == 0 && (s.op.Code == OpWrite || s.op.Code == OpWritev):
			failed = true // short: the kernel cancelled the rest
			r.finish(s, got, ErrNoProgress)
		case s.res == 0:
			failed = true // short at end of file: the kernel cancelled the rest
			r.finish(s, got, nil)
		case r.closed:
			r.finish(s, got, unix.ECANCELED)
		default:
			// Short: continue with the remainder and the rest of the
			// chain, which the kernel cancelled.
			s.done.Store(got)
			r.stats.ShortIORetries++
			next := &uchain{slots: c.slots[i:], waiting: len(c.slots) - i}
			for _, t := range next.slots {
				t.chain, t.arrived, t.res = next, false, 0
			}
			for _, t := range c.slots[:i] {
				delete(r.slots, t.id)
			}
			return next
		}
	}
	r.freeChain(c)
	return nil
}

func isTransfer(c Opcode) bool {
	return c == OpRead || c == OpWrite || c == OpReadv || c == OpWritev
}

// finish records the final Completion of s.
// REQUIRES: r.mu held.
func (r *uringRing) finish(s *uslot, res int64, err error) {
	if s.finished {
		return
	}
	s.finished = true
	if s.timer != nil {
		s.timer.Stop()
		if !s.late && !r.closed && time.Since(s.armed) >= s.op.Deadline {
			// Past its deadline, but the timer's goroutine has not run
			// yet (a loaded machine): the notice comes all the same,
			// before the final Completion (invariant 4).
			s.late = true
			r.stats.DeadlinesFired++
			r.ready = append(r.ready, Completion{Token: s.op.Token, Code: s.op.Code, Deadline: true})
		}
	}
	if s.op.IsSync() && !errors.Is(err, unix.ECANCELED) {
		r.stats.Syncs++ // performed: a cancelled sync was not
	}
	c := Completion{Token: s.op.Token, Code: s.op.Code, Res: res, Err: err,
		Buf: s.op.Buf, Bufs: s.op.Bufs, Late: s.late}
	c.setUnits(opUnits(&s.op))
	r.ready = append(r.ready, c)
	r.inflight--
	r.cond.Broadcast()
}

// freeChain forgets the slots of a settled chain.
// REQUIRES: r.mu held.
func (r *uringRing) freeChain(c *uchain) {
	for _, s := range c.slots {
		delete(r.slots, s.id)
	}
}

func (r *uringRing) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		<-r.closeDone // the first Close: return when it does
		return nil
	}
	r.closed = true
	r.cond.Broadcast()
	r.mu.Unlock()
	defer close(r.closeDone)

	// Cancel what is in flight; every cancel also posts a CQE, which wakes
	// a reaper blocked in io_uring_enter. With nothing in flight, a NOP
	// does the waking. The targets are taken under sqMu: an Op registered
	// but not yet submitted then is cancelled by submitChains instead.
	r.sqMu.Lock()
	var targets []uint64
	r.mu.Lock()
	for id, s := range r.slots {
		if !s.finished {
			targets = append(targets, userData(kindOp, id))
		}
	}
	r.mu.Unlock()
	if len(targets) == 0 {
		targets = append(targets, 0)
	}
	var serr error
	for _, t := range targets {
		if r.low.SQFree() == 0 {
			if serr = r.enterSubmit(); serr != nil {
				break
			}
		}
		sqe := r.low.GetSQE()
		if t == 0 {
			sqe.Opcode = uring.OpNop
		} else {
			sqe.Opcode = uring.OpAsyncCancel
			sqe.Addr = t
		}
		sqe.Fd = -1
		sqe.UserData = userData(kindInternal, 0)
	}
	if serr == nil {
		serr = r.enterSubmit()
	}
	r.sqMu.Unlock()

	// Wait for every Op to complete; their Completions stay reapable.
	r.reapMu.Lock()
	defer r.reapMu.Unlock()
	for {
		r.mu.Lock()
		left := r.inflight
		r.mu.Unlock()
		if left == 0 {
			break
		}
		conts, n := r.drain()
		if len(conts) > 0 {
			r.sqMu.Lock()
			err := r.submitChains(conts)
			r.sqMu.Unlock()
			if err != nil {
				return err
			}
		}
		if n > 0 {
			continue // re-check inflight before waiting
		}
		if err := r.waitCQ(); err != nil {
			return err
		}
	}
	var werr error
	if r.waiter != nil {
		werr = r.waiter.close()
		r.waiter = nil
	}
	r.sqMu.Lock()
	r.mu.Lock()
	err := r.low.Close()
	r.mu.Unlock()
	r.sqMu.Unlock()
	return errors.Join(serr, werr, err)
}
