package messages

import (
	"sync/atomic"
	"time"
)

// Ack is the acknowledgement of one write: it is completed exactly once,
// with the write's revision once the write is durable and visible, or
// with the error that failed it. Any number of goroutines may wait on it.
// The engine's Ticket is an Ack.
type Ack struct {
	done   chan struct{}
	state  atomic.Uint32 // 0 pending, 1 completed
	rev    Revision
	err    error
	staged bool
}

// NewAck returns a pending Ack.
func NewAck() *Ack { return &Ack{done: make(chan struct{})} }

// Complete records the outcome and wakes every waiter. Only the first call
// counts; it reports whether this call was it.
func (a *Ack) Complete(rev Revision, staged bool, err error) bool {
	if !a.Claim() {
		return false
	}
	a.Finish(rev, staged, err)
	return true
}

// Claim reserves the right to complete a; only the first Claim (or
// Complete) succeeds. The claimer must call Finish. Claiming first lets
// the claimer account for the write (Stats) before a waiter can see it
// done.
func (a *Ack) Claim() bool { return a.state.CompareAndSwap(0, 1) }

// Finish records the outcome and wakes every waiter. REQUIRES: Claim
// returned true, and Finish is called once.
func (a *Ack) Finish(rev Revision, staged bool, err error) {
	a.rev, a.staged, a.err = rev, staged, err
	close(a.done)
}

// Completed reports whether Complete has been called.
func (a *Ack) Completed() bool { return a.state.Load() == 1 }

// Done is closed once the outcome is known.
func (a *Ack) Done() <-chan struct{} { return a.done }

// Result returns the outcome. REQUIRES: Done is closed.
func (a *Ack) Result() (Revision, error) { return a.rev, a.err }

// Staged reports whether the write was acknowledged from the staging WAL.
// REQUIRES: Done is closed.
func (a *Ack) Staged() bool { return a.staged }

// Write is one Put or Delete on its way through the write queue. Record's
// Revision is zero until the submitter assigns it.
type Write struct {
	Record   Record
	Ack      *Ack
	Enqueued time.Time
}

// Barrier is Sync's request: Reply gets nil once every write queued before
// it is durable, in every space, or the error that stopped the wait.
type Barrier struct {
	Reply chan<- error // room for one
}

// Request is what the write queue carries: a *Write or a *Barrier.
type Request interface{ request() }

func (*Write) request()   {}
func (*Barrier) request() {}
