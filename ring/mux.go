package ring

import (
	"errors"
	"fmt"
	"sync"
)

// Mux is a Doer that any number of goroutines may call at once. Each Do
// submits its batch straight to the ring and waits; one reaper goroutine,
// the ring's only reaper, hands every Completion to the Do that waits for
// it by its token. It is the read path of sealed blocks: user goroutines
// (Get, Scan) read pages concurrently while the engine's actors own the
// engine's ring, so reads run on a ring of their own.
//
// Invariants:
//  1. The reaper is the only goroutine that reaps r.
//  2. A call is in calls from before its batch is submitted until its
//     last final Completion arrives or the Mux fails it; done is closed
//     exactly once, by whoever removes the call from calls.
//  3. Once stopped is set no call is added, so a Do never waits on a
//     reaper that has exited.
type Mux struct {
	r Ring

	mu      sync.Mutex // protects calls, nextID, stopped, err
	calls   map[uint64]*muxCall
	nextID  uint64
	stopped bool  // the reaper exited, or is about to
	err     error // why it stopped; returned by later Do calls

	closeOnce sync.Once
	closeErr  error
	reaped    chan struct{} // closed when the reaper has returned
}

// muxCall is one Do waiting for its Completions.
type muxCall struct {
	ops  []Op // the caller's, for their tokens
	out  []Completion
	left int
	err  error         // set when the Mux failed the call
	done chan struct{} // closed when out is complete or err is set
}

// Tokens: a call's id in the high bits, the op's index in the batch in the
// low muxIndexBits. Batches are a few ops (a read, an open); the limit only
// guards the encoding.
const (
	muxIndexBits = 16
	muxMaxBatch  = 1 << muxIndexBits
)

// muxReapBatch is how many Completions the reaper takes per Reap: one
// wake-up serves a burst of concurrent reads.
const muxReapBatch = 64

// NewMux starts a Mux over r, which it owns from now on: nothing else may
// reap r, and Close closes it.
func NewMux(r Ring) *Mux {
	m := &Mux{r: r, calls: make(map[uint64]*muxCall), reaped: make(chan struct{})}
	go m.reap()
	return m
}

// Ring returns the Ring under m. Only its Info and Stats are for the
// caller: m submits and reaps.
func (m *Mux) Ring() Ring { return m.r }

// Do implements Doer. It is safe for concurrent use. After Close, or once
// the ring died, it returns the error that stopped the Mux (ErrClosed
// after Close).
func (m *Mux) Do(ops ...Op) ([]Completion, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	if len(ops) > m.r.Capacity() || len(ops) >= muxMaxBatch {
		return nil, fmt.Errorf("ring: batch of %d ops exceeds capacity %d", len(ops), min(m.r.Capacity(), muxMaxBatch-1))
	}
	c := &muxCall{ops: ops, out: make([]Completion, len(ops)), left: len(ops), done: make(chan struct{})}
	m.mu.Lock()
	if m.stopped {
		err := m.err
		m.mu.Unlock()
		return nil, err
	}
	id := m.nextID
	m.nextID++
	m.calls[id] = c
	m.mu.Unlock()

	mine := make([]Op, len(ops))
	for i := range ops {
		mine[i] = ops[i]
		mine[i].Token = id<<muxIndexBits | uint64(i)
	}
	if err := m.r.Submit(mine); err != nil {
		m.mu.Lock()
		if m.calls[id] == c {
			delete(m.calls, id)
			close(c.done)
		}
		m.mu.Unlock()
		return nil, err
	}
	<-c.done
	if c.err != nil {
		return nil, c.err
	}
	return c.out, nil
}

// reap is the reaper goroutine: it dispatches Completions until the ring
// is closed or dies, then fails every call still waiting.
func (m *Mux) reap() {
	defer close(m.reaped)
	buf := make([]Completion, muxReapBatch)
	for {
		n, err := m.r.Reap(buf)
		m.mu.Lock()
		for i := range buf[:n] {
			m.dispatch(&buf[i])
			buf[i] = Completion{} // drop the buffers' references
		}
		if err != nil {
			if errors.Is(err, ErrClosed) {
				err = fmt.Errorf("ring: mux: %w", err)
			} else {
				err = fmt.Errorf("ring: mux: reap: %w", err)
			}
			m.stopped, m.err = true, err
			for id, c := range m.calls {
				delete(m.calls, id)
				c.err = err
				close(c.done)
			}
			m.mu.Unlock()
			return
		}
		m.mu.Unlock()
	}
}

// dispatch hands c to the call it belongs to. REQUIRES: m.mu held.
func (m *Mux) dispatch(c *Completion) {
	if c.Deadline {
		return // a notice; the final Completion follows
	}
	id, i := c.Token>>muxIndexBits, int(c.Token&(muxMaxBatch-1))
	call := m.calls[id]
	if call == nil || i >= len(call.out) {
		return // not ours (the ring had another user before)
	}
	c.Token = call.ops[i].Token
	call.out[i] = *c
	call.left--
	if call.left == 0 {
		delete(m.calls, id)
		close(call.done)
	}
}

// Close closes the ring, which completes every Op in flight (their Do
// calls return the results, or ECANCELED), waits for the reaper to exit
// and returns the ring's Close error. Later Do calls fail with an error
// wrapping ErrClosed. It is idempotent and safe for concurrent use.
func (m *Mux) Close() error {
	m.closeOnce.Do(func() {
		m.closeErr = m.r.Close()
		<-m.reaped
	})
	return m.closeErr
}
