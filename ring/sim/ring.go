package sim

import (
	"container/heap"
	"fmt"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring"
)

// ErrCrashed is returned by Submit and, once its Completions are reaped, by
// Reap on a ring that died in a Crash, a PowerLoss or a Kill. errors.Is(err,
// ring.ErrClosed) holds for it too.
var ErrCrashed = fmt.Errorf("sim: ring died in a crash or power loss: %w", ring.ErrClosed)

// Ring is one process's view of a Disk: a ring.Ring with its own file
// descriptors, in-flight Ops and counters. It starts no goroutines.
//
// Invariants (all fields guarded by Disk.mu):
//  1. inflight counts Ops submitted and not yet reaped plus Deadline notices
//     made and not yet reaped; Submit keeps it at most cap.
//  2. pending counts Ops submitted whose final Completion is not yet in
//     ready; it is 0 once the ring is closed or dead.
//  3. Every started, unfinished Op has exactly one completion event in
//     events; an Op waiting on its chain predecessor is reachable only
//     through that predecessor's next.
type Ring struct {
	d    *Disk
	id   int
	cap  int
	info ring.Info

	closed   bool // Close was called
	dead     bool // killed by Crash, PowerLoss or Kill
	inflight int
	pending  int
	events   eventHeap
	ready    []ring.Completion
	fds      map[int32]*fdesc
	stats    ring.Stats
}

// fdesc is an open file description.
type fdesc struct {
	fd     int32
	in     *inode
	path   string // as opened, cleaned; for messages and fault filters
	access int    // O_RDONLY, O_WRONLY or O_RDWR
	direct bool   // O_DIRECT: buffers, offsets and lengths must be 512-aligned
	pos    int64  // the file position, for Offset -1
}

// simOp is one Op on its way through the ring.
type simOp struct {
	op   ring.Op
	next *simOp // the linked successor, started when this one succeeds

	idx      uint64        // index on the disk, from when it started
	pl       plan          // faults decided when it started
	deadline time.Duration // start + op.Deadline, when op.Deadline > 0
	late     bool          // its Deadline notice was delivered
	noticed  bool          // a notice event is scheduled or delivered
	done     bool          // its final Completion was made

	f       *fdesc // the file of a read or write, fixed at its first execution
	off     int64  // absolute offset of a read or write, fixed at its first execution
	xfer    int64  // bytes transferred so far (a continued short write)
	started bool   // executed at least once

	// syncing: a DSync write whose write half is done is in its sync half,
	// an fdatasync of the bytes written with an op index and faults of its
	// own (pl is the sync half's from then on). fresh: the sync half's
	// planned delay is still to be added to its latency.
	syncing, fresh bool
}

// event is a point on the virtual clock at which an Op completes or its
// deadline passes.
type event struct {
	at     time.Duration
	seq    uint64
	op     *simOp
	notice bool
	cancel bool // the Op's deadline passed while it was queued (Queued)
}

// eventHeap orders events by time, then by the order they were made.
type eventHeap []event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(event)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// NewRing starts a "process" on the disk. opts.Capacity bounds the Ops in
// flight (default 4*Entries, Entries defaulting to ring.DefaultEntries);
// Kind, Workers and Logger are ignored.
func (d *Disk) NewRing(opts ring.Options) *Ring {
	if opts.Entries == 0 {
		opts.Entries = ring.DefaultEntries
	}
	c := opts.Capacity
	if c <= 0 {
		c = 4 * int(opts.Entries)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ringID++
	r := &Ring{
		d:    d,
		id:   d.ringID,
		cap:  c,
		info: ring.Info{Backend: "sim", Kernel: "sim", Entries: opts.Entries},
		fds:  make(map[int32]*fdesc),
	}
	d.rings = append(d.rings, r)
	return r
}

// Disk returns the disk r runs on.
func (r *Ring) Disk() *Disk { return r.d }

// IOTime implements ring.Clock: the disk's virtual clock, on which Ops
// take their latency and injected delays.
func (r *Ring) IOTime() time.Duration { return r.d.Now() }

// Capacity implements ring.Ring.
func (r *Ring) Capacity() int { return r.cap }

// Info implements ring.Ring.
func (r *Ring) Info() ring.Info { return r.info }

// Stats implements ring.Ring.
func (r *Ring) Stats() ring.Stats {
	r.d.mu.Lock()
	defer r.d.mu.Unlock()
	return r.stats
}

// Submit implements ring.Ring. Chain heads start at once on the virtual
// clock. It blocks while Capacity() Ops are in flight: REQUIRES another
// goroutine reaps, or the caller reaps before it exceeds Capacity().
func (r *Ring) Submit(ops []ring.Op) error {
	if err := ring.Validate(ops); err != nil {
		return err
	}
	if len(ops) > r.cap {
		return fmt.Errorf("sim: batch of %d ops exceeds capacity %d", len(ops), r.cap)
	}
	d := r.d
	d.mu.Lock()
	defer d.mu.Unlock()
	for !r.closed && !r.dead && r.inflight+len(ops) > r.cap {
		d.cond.Wait()
	}
	if r.dead {
		return ErrCrashed
	}
	if r.closed {
		return ring.ErrClosed
	}
	r.inflight += len(ops)
	r.pending += len(ops)
	r.stats.Submitted += uint64(len(ops))
	var head, prev *simOp
	for i := range ops {
		so := &simOp{op: ops[i]}
		if prev != nil && prev.op.Link {
			prev.next = so
		} else {
			head = so
		}
		prev = so
		if !so.op.Link {
			r.start(head)
		}
	}
	d.cond.Broadcast()
	return nil
}

// start begins so on the virtual clock: it takes the next op index, decides
// the faults and schedules the completion (and the deadline notice, if the
// Op will run past its deadline).
// REQUIRES: d.mu held.
func (r *Ring) start(so *simOp) {
	d := r.d
	d.ops++
	so.idx = d.ops
	so.pl = d.planFaults(r, so, r.opPath(&so.op))
	if so.op.Deadline > 0 {
		so.deadline = d.now + so.op.Deadline
	}
	r.schedule(so)
}

// schedule puts the next completion event of so on the clock.
// REQUIRES: d.mu held.
func (r *Ring) schedule(so *simOp) {
	d := r.d
	base := d.lat.Meta
	switch so.op.Code {
	case ring.OpRead, ring.OpWrite, ring.OpReadv, ring.OpWritev:
		base = d.lat.Data
	case ring.OpFsync, ring.OpFdatasync:
		base = d.lat.Sync
	}
	if so.syncing {
		base = d.lat.Sync
	}
	lat := base
	if base > 0 {
		lat += time.Duration(d.rng.Int63n(int64(base)))
	}
	if so.fresh {
		// A sync half waits for nothing: its op is running already, so
		// a Queued fault only delays it (nothing can cancel it now).
		so.fresh = false
		lat += so.pl.delay + so.pl.queue
	}
	if !so.started {
		if q := so.pl.queue; q > 0 && so.deadline > 0 && d.now+q > so.deadline && !so.noticed {
			// Its deadline passes while it waits: cancelled then.
			so.noticed = true
			d.seq++
			heap.Push(&r.events, event{at: so.deadline, seq: d.seq, op: so, cancel: true})
			return
		}
		lat += so.pl.delay + so.pl.queue
	}
	at := d.now + lat
	d.seq++
	heap.Push(&r.events, event{at: at, seq: d.seq, op: so})
	if so.deadline > 0 && !so.noticed && at > so.deadline {
		so.noticed = true
		d.seq++
		heap.Push(&r.events, event{at: so.deadline, seq: d.seq, op: so, notice: true})
	}
}

// opPath returns the path an Op works on, for fault filters.
// REQUIRES: d.mu held.
func (r *Ring) opPath(op *ring.Op) string {
	if op.Path != "" {
		return clean(op.Path)
	}
	if f := r.fds[op.FD]; f != nil {
		return f.path
	}
	return ""
}

// Reap implements ring.Ring. When nothing is ready it performs the Ops
// whose completions come first on the virtual clock, advancing it; it
// blocks only while nothing is in flight.
func (r *Ring) Reap(out []ring.Completion) (int, error) { return r.reap(out, true) }

// TryReap implements ring.Ring. Like Reap it performs in-flight Ops (their
// time costs nothing to wait for); it returns 0, nil only when nothing is in
// flight.
func (r *Ring) TryReap(out []ring.Completion) (int, error) { return r.reap(out, false) }

func (r *Ring) reap(out []ring.Completion, wait bool) (int, error) {
	if len(out) == 0 {
		return 0, nil
	}
	d := r.d
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		// An event may make no Completion (a continued short write, a
		// notice for an Op already done), so advance until one is ready.
		for len(r.ready) == 0 && len(r.events) > 0 {
			r.advance(len(out))
		}
		if len(r.ready) > 0 {
			break
		}
		if r.pending == 0 && (r.closed || r.dead) {
			if r.dead {
				return 0, ErrCrashed
			}
			return 0, ring.ErrClosed
		}
		if !wait {
			return 0, nil
		}
		d.cond.Wait()
	}
	n := copy(out, r.ready)
	for _, c := range out[:n] {
		if !c.Deadline {
			r.stats.Completed++
		}
	}
	r.ready = r.ready[:copy(r.ready, r.ready[n:])]
	r.inflight -= n
	d.cond.Broadcast()
	return n, nil
}

// advance moves the clock to the first event and processes every event due
// by then, until max Completions are ready.
// REQUIRES: d.mu held; r.events not empty.
func (r *Ring) advance(max int) {
	d := r.d
	if t := r.events[0].at; t > d.now {
		d.now = t
	}
	for len(r.events) > 0 && r.events[0].at <= d.now && len(r.ready) < max {
		ev := heap.Pop(&r.events).(event)
		so := ev.op
		if ev.cancel {
			so.late = true
			r.stats.DeadlinesFired++
			r.ready = append(r.ready, ring.Completion{Token: so.op.Token, Code: so.op.Code, Deadline: true})
			r.inflight++ // the notice occupies a slot until reaped
			r.finish(so, ring.Completion{Err: unix.ECANCELED})
			r.cancelChain(so.next, unix.ECANCELED)
			continue
		}
		if ev.notice {
			if !so.done {
				so.late = true
				r.stats.DeadlinesFired++
				r.ready = append(r.ready, ring.Completion{Token: so.op.Token, Code: so.op.Code, Deadline: true})
				r.inflight++ // the notice occupies a slot until reaped
			}
			continue
		}
		res, names, err, again := r.exec(so)
		if again {
			r.stats.ShortIORetries++
			r.schedule(so)
			continue
		}
		if err == nil && so.op.DSync && !so.syncing {
			r.startSyncHalf(so)
			continue
		}
		r.finish(so, ring.Completion{Res: res, Names: names, Err: err})
		failed := err != nil || (isRead(so.op.Code) && res < so.op.Size())
		if so.next == nil {
			continue
		}
		if failed {
			r.cancelChain(so.next, unix.ECANCELED)
		} else {
			r.start(so.next)
		}
	}
}

// startSyncHalf begins the sync half of a DSync write whose bytes are
// written: an fdatasync of them, which takes the next op index and is
// matched against the fault rules as an OpFdatasync on the file (so a
// rule for fdatasyncs hits it, and Hits lists it as one), then runs on the
// clock like one.
// REQUIRES: d.mu held.
func (r *Ring) startSyncHalf(so *simOp) {
	d := r.d
	d.ops++
	half := &simOp{op: ring.Op{Code: ring.OpFdatasync, FD: so.op.FD}, idx: d.ops}
	so.pl = d.planFaults(r, half, so.f.path)
	so.syncing, so.fresh = true, true
	r.schedule(so)
}

// finish makes the final Completion of so ready.
// REQUIRES: d.mu held.
func (r *Ring) finish(so *simOp, c ring.Completion) {
	c.Token, c.Code, c.Buf, c.Bufs, c.Late = so.op.Token, so.op.Code, so.op.Buf, so.op.Bufs, so.late
	so.done = true
	r.ready = append(r.ready, c)
	r.pending--
}

// cancelChain completes so and its successors, never started, with err.
// REQUIRES: d.mu held.
func (r *Ring) cancelChain(so *simOp, err error) {
	for ; so != nil; so = so.next {
		r.finish(so, ring.Completion{Err: err})
	}
}

// stop ends every Op in flight: a started one completes with startedErr,
// the rest of its chain with ECANCELED. Then it closes every fd.
// REQUIRES: d.mu held.
func (r *Ring) stop(startedErr error) {
	evs := make([]event, 0, len(r.events))
	for _, ev := range r.events {
		if !ev.notice {
			evs = append(evs, ev)
		}
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].seq < evs[j].seq })
	r.events = nil
	for _, ev := range evs {
		r.finish(ev.op, ring.Completion{Err: startedErr})
		r.cancelChain(ev.op.next, unix.ECANCELED)
	}
	for fd, f := range r.fds {
		r.release(f)
		delete(r.fds, fd)
	}
	for i, x := range r.d.rings {
		if x == r {
			r.d.rings = append(r.d.rings[:i], r.d.rings[i+1:]...)
			break
		}
	}
	r.d.cond.Broadcast()
}

// release drops the lock f holds, if any.
// REQUIRES: d.mu held.
func (r *Ring) release(f *fdesc) {
	if r.d.locks[f.in] == f {
		delete(r.d.locks, f.in)
	}
}

// Close implements ring.Ring: the Ops in flight complete with ECANCELED
// (their Completions stay reapable), every fd is closed and its locks
// released, and blocked callers wake. It is idempotent.
func (r *Ring) Close() error {
	d := r.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if !r.dead {
		r.stop(unix.ECANCELED)
	}
	d.cond.Broadcast()
	return nil
}

// Kill ends r as a process crash would, leaving the disk alone: the Ops in
// flight complete with EIO, its fds close and its locks are released. Later
// Submits fail with ErrCrashed; Close still works.
func (r *Ring) Kill() {
	r.d.mu.Lock()
	defer r.d.mu.Unlock()
	r.kill()
}

// kill is Kill. REQUIRES: d.mu held.
func (r *Ring) kill() {
	if r.dead || r.closed {
		return
	}
	r.dead = true
	r.stop(unix.EIO)
}
