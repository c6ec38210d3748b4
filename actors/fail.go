package actors

// What a failed engine still owes its callers. When the restart limit is
// passed the actors stop for good, possibly with writes in flight: the
// engine completes every one of them (acknowledged if its bytes were
// found durable, failed otherwise) so that no caller waits for its
// context. Nothing here runs while an actor runs.

import (
	"context"
	"errors"
	"fmt"
	"syscall"
)

// Finish reaps what is still in flight once the io unit has stopped for
// good, so that each write in flight is decided by its own I/O's result:
// acknowledged if it became durable, failed if it did not. (Failing it
// unseen would let a write the caller was told failed, and that a read
// did not find, appear after the next Start.) It returns once nothing is
// in flight or the ring is dead. Its messages to the publisher and the
// submitter wait in their channels (or in FailPending's result) for the
// engine's final sweep.
// REQUIRES: Run and the submitter are not running.
func (c *Completer) Finish() (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("completer: finish: panic: %v", p)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Run returns as soon as nothing is in flight
	return c.Run(ctx)
}

// FailPending fails, with err, every write of a flight the completer
// still tracks that was not decided yet, and returns the publisher
// messages it could not deliver once the engine had failed (their
// acknowledgements and failures must still be applied: see
// Publisher.DrainWith). A flight's buffers stay referenced by its table
// entry: the kernel may still own them.
// REQUIRES: Run is not running.
func (c *Completer) FailPending(err error) []PublisherMsg {
	c.drainRegistrations()
	for _, f := range c.table {
		for _, g := range f.groups {
			st := c.groups[g]
			if st == nil || st.decided {
				continue
			}
			st.decided = true
			for _, w := range g.writes {
				w.Ack.Complete(0, false, err)
			}
		}
	}
	out := c.stranded
	c.stranded = nil
	return out
}

// DrainWith applies msgs (the completer's stranded messages) and then
// everything still queued for the publisher, as Drain does.
// REQUIRES: Run is not running.
func (p *Publisher) DrainWith(msgs []PublisherMsg) {
	p.batch = append(p.batch, msgs...)
	p.Drain()
}

// failFlushers answers sp's flushers with err when err is the disk's
// (EIO, ENOSPC, ...): a Flush waits for the space's staged records to be
// promoted, which a failing disk may never allow, so it gets the error
// its writers get. A missed deadline (ECANCELED) is not the disk's: the
// sealer replaces the segment and promotion goes on, so flushers wait.
func (s *Submitter) failFlushers(sp *spaceState, err error) {
	if err == nil || errors.Is(err, syscall.ECANCELED) || len(sp.flushers) == 0 {
		return
	}
	for _, r := range sp.flushers {
		r <- fmt.Errorf("promote the staged records of space %d: %w", sp.info.ID, err)
	}
	sp.flushers = nil
}
