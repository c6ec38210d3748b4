package ring

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// stdRing performs Ops with plain system calls on a fixed pool of worker
// goroutines. Each chain (a run of linked Ops) is one unit of work, so a
// chain's order comes from running it on one worker; unlinked Ops run in
// parallel and may complete out of order, as they do on io_uring.
//
// Invariants:
//  1. inflight counts Ops submitted and not yet reaped; it never exceeds cap.
//  2. pending counts Ops submitted whose final Completion is not yet in ready.
//  3. After closed is set no chain is queued; workers exit once queue is empty.
type stdRing struct {
	mu       sync.Mutex // protects every field below
	cond     *sync.Cond // broadcast on any change that a waiter may want
	closed   bool
	cap      int
	inflight int
	pending  int
	queue    [][]*stdOp // chains waiting for a worker
	ready    []Completion
	stats    Stats
	info     Info

	wg sync.WaitGroup // the workers
}

// stdOp is one Op on its way through a worker.
type stdOp struct {
	op    Op
	late  bool        // its Deadline notice was sent; protected by stdRing.mu
	done  bool        // its final Completion was sent; protected by stdRing.mu
	timer *time.Timer // the deadline, while it runs
}

// newStd starts a std ring with the given number of workers and capacity.
func newStd(workers, capacity int) *stdRing {
	r := &stdRing{cap: capacity}
	r.cond = sync.NewCond(&r.mu)
	r.info = Info{Backend: "std", Kernel: kernelRelease(), Entries: uint32(workers)}
	r.wg.Add(workers)
	for i := 0; i < workers; i++ {
		go r.worker()
	}
	return r
}

func (r *stdRing) Capacity() int { return r.cap }
func (r *stdRing) Info() Info    { return r.info }

func (r *stdRing) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

func (r *stdRing) Submit(ops []Op) error {
	if err := Validate(ops); err != nil {
		return err
	}
	if len(ops) > r.cap {
		return fmt.Errorf("ring: batch of %d ops exceeds capacity %d", len(ops), r.cap)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for !r.closed && r.inflight+len(ops) > r.cap {
		r.cond.Wait()
	}
	if r.closed {
		return ErrClosed
	}
	var chain []*stdOp
	for i := range ops {
		chain = append(chain, &stdOp{op: ops[i]})
		if !ops[i].Link {
			r.queue = append(r.queue, chain)
			chain = nil
		}
	}
	r.inflight += len(ops)
	r.pending += len(ops)
	r.stats.Submitted += uint64(len(ops))
	r.cond.Broadcast()
	return nil
}

func (r *stdRing) worker() {
	defer r.wg.Done()
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		for len(r.queue) == 0 && !r.closed {
			r.cond.Wait()
		}
		if len(r.queue) == 0 {
			return
		}
		chain := r.queue[0]
		r.queue[0] = nil
		r.queue = r.queue[1:]
		r.runChain(chain)
	}
}

// runChain runs the ops of one chain in order.
// REQUIRES: r.mu held; it is released around each system call.
func (r *stdRing) runChain(chain []*stdOp) {
	var failed bool
	for _, so := range chain {
		if failed || r.closed {
			// Close cancels what has not started, like ASYNC_CANCEL.
			r.finish(so, Completion{Err: unix.ECANCELED})
			failed = true
			continue
		}
		start := time.Now()
		if d := so.op.Deadline; d > 0 {
			so.timer = time.AfterFunc(d, func() { r.deadline(so) })
		}
		r.mu.Unlock()
		res, names, retries, err := execSync(&so.op)
		r.mu.Lock()
		if so.timer != nil {
			so.timer.Stop()
			if !so.late && time.Since(start) >= so.op.Deadline {
				// Past its deadline, but the timer's goroutine has not
				// run yet (a loaded machine): the notice comes all the
				// same, before the final Completion (invariant 4).
				r.notice(so)
			}
		}
		r.stats.ShortIORetries += retries
		if so.op.IsSync() {
			r.stats.Syncs++
		}
		if err == nil && (so.op.Code == OpWrite || so.op.Code == OpWritev) && res < so.op.Size() {
			err = ErrNoProgress
		}
		r.finish(so, Completion{Res: res, Names: names, Err: err})
		failed = err != nil || (isRead(so.op.Code) && res < so.op.Size())
	}
}

func isRead(c Opcode) bool { return c == OpRead || c == OpReadv }

// deadline runs on a timer goroutine when an op's deadline passes.
func (r *stdRing) deadline(so *stdOp) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if so.done {
		return
	}
	r.notice(so)
}

// notice sends so's Deadline notice.
// REQUIRES: r.mu held, so neither late nor done.
func (r *stdRing) notice(so *stdOp) {
	so.late = true
	r.stats.DeadlinesFired++
	r.ready = append(r.ready, Completion{Token: so.op.Token, Code: so.op.Code, Deadline: true})
	r.inflight++ // the notice occupies a slot until reaped
	r.cond.Broadcast()
}

// finish records the final Completion of so.
// REQUIRES: r.mu held.
func (r *stdRing) finish(so *stdOp, c Completion) {
	c.Token, c.Code, c.Buf, c.Bufs, c.Late = so.op.Token, so.op.Code, so.op.Buf, so.op.Bufs, so.late
	so.done = true
	r.ready = append(r.ready, c)
	r.pending--
	r.cond.Broadcast()
}

func (r *stdRing) Reap(out []Completion) (int, error) { return r.reap(out, true) }

func (r *stdRing) TryReap(out []Completion) (int, error) { return r.reap(out, false) }

func (r *stdRing) reap(out []Completion, wait bool) (int, error) {
	if len(out) == 0 {
		return 0, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for wait && len(r.ready) == 0 && !(r.closed && r.pending == 0) {
		r.cond.Wait()
	}
	if len(r.ready) == 0 {
		if r.closed && r.pending == 0 {
			return 0, ErrClosed
		}
		return 0, nil
	}
	n := copy(out, r.ready)
	for _, c := range out[:n] {
		if !c.Deadline {
			r.stats.Completed++
		}
	}
	r.ready = r.ready[:copy(r.ready, r.ready[n:])]
	r.inflight -= n
	r.cond.Broadcast()
	return n, nil
}

func (r *stdRing) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.wg.Wait() // the first Close's workers: return when it would
		return nil
	}
	r.closed = true
	// Chains not yet started are cancelled by the workers as they drain.
	r.cond.Broadcast()
	r.mu.Unlock()
	r.wg.Wait()
	return nil
}
