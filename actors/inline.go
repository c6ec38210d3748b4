package actors

import (
	"context"
	"time"

	"github.com/ringpipe/ringpipe/internal/stagetrace"
	"github.com/ringpipe/ringpipe/internal/testhook"
	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
)

// Inline commits a durable write on its caller's goroutine while the
// pipeline is idle: the caller takes the submitter's and the completer's
// turns, does the submitter's work for its write (the same code, the same
// batch rules and deadline), reaps the ring until its write is decided,
// publishes and acknowledges it through the publisher's turn, and gives
// the turns back. Nothing is handed to another goroutine, so nothing waits
// for one to wake up.
//
// Why (issue 4): with one writer, a Put that went through the actors
// cost 1.35-1.41× a pwrite+fdatasync loop, all of the excess in hand-offs
// between goroutines. With an idle P, each hand-off wakes a second
// thread, which this kind of VM does slowly (BenchmarkHandoff: 12 µs per
// round trip), and a Put needs at least two (README, "Against Pebble and
// the baselines"). Submitting and reaping on one goroutine costs 1.02-1.05×
// at ring level (BenchmarkDurableAppendSplit, "inline").
//
// The commit is the actors' work done by another goroutine, not a second
// write path: every step is the submitter's, completer's or publisher's
// own code, run under that actor's turn, which its Run holds except while
// it waits for a message. So the rules hold as they do in the actors: one
// batch in flight per file, revisions in order, a missed deadline
// re-routes the write to the staging WAL and the first durable copy
// acknowledges it, publication before acknowledgement, the fsync-error
// rules. Whenever the commit stops before its write is decided (the
// caller's context ended, the ring failed), it leaves the state as the
// actors would have left it between two messages and kicks them: they go
// on from there, and the caller waits for its write as if it had queued
// it.
//
// When the pipeline is not idle (a batch in flight, writes queued or
// held, the space slow or its segment being replaced), Commit declines
// and the write takes the queue: under load, group commit in the
// submitter is what scales.
type Inline struct {
	s *Submitter
	c *Completer
	p *Publisher

	sink inlineSink // owned by the holder of the completer's turn
}

// NewInline returns the inline committer of the pipeline s, c, p.
func NewInline(s *Submitter, c *Completer, p *Publisher) *Inline {
	return &Inline{s: s, c: c, p: p}
}

// Commit performs w if the pipeline is idle, and reports whether it took
// w. If it did, w is decided or in the actors' hands when Commit returns,
// and the caller waits for w.Ack as after queueing it; if it did not, the
// caller queues w. ctx ends the caller's part early (w goes on without
// it). REQUIRES: the caller is admitted to the engine's intake, so that
// Stop waits for the commit.
func (in *Inline) Commit(ctx context.Context, w *messages.Write) bool {
	if testhook.NoInline() {
		return false
	}
	s, c := in.s, in.c
	if !s.turn.TryLock() {
		return false
	}
	if !s.idleFor(w) {
		s.turn.Unlock()
		return false
	}
	if !c.turn.TryLock() {
		s.turn.Unlock()
		return false
	}
	if !c.running || c.runCtx.Err() != nil || c.ringErr != nil || len(c.table) > 0 || len(c.ch.registers) > 0 {
		c.turn.Unlock()
		s.turn.Unlock()
		return false
	}
	stagetrace.Mark(stagetrace.Taken)
	s.env.Metrics.InlineCommits.Add(1)
	c.sink = &in.sink
	s.regSink = c
	if _, ok := s.takeWrite(w); ok {
		if err := s.step(s.runCtx); err != nil {
			s.inlineErr = err
			kick(s.ch.subKick)
		}
	}
	s.regSink = nil
	// The write is in flight (or held, or failed): the submitter may
	// serve other spaces meanwhile; its file stays busy until the
	// settlement comes back (deliver).
	s.turn.Unlock()
	in.reap(ctx, w)
	return true
}

// idleFor says whether the submitter has nothing to do but w: no write
// queued, held, staged on its way or in flight, no feedback or Sync
// waiting, and w's space ready for a direct batch. REQUIRES: turn.
func (s *Submitter) idleFor(w *messages.Write) bool {
	if !s.running || s.runCtx.Err() != nil || s.inlineErr != nil {
		return false
	}
	if s.held > 0 || len(s.walHeld) > 0 || len(s.outstanding) > 0 || len(s.fbBuf) > 0 ||
		len(s.barriers) > 0 || len(s.ch.Writes) > 0 || s.ch.Queued.Load() > 0 || len(s.ch.feedback) > 0 {
		return false
	}
	sp := s.spaces[w.Record.Space]
	return sp != nil && !sp.busy && !sp.slow && sp.expect <= 1 && s.usable(sp)
}

// reap reaps the ring, as the completer, until w is decided, ctx ends or
// the ring fails, delivering what each settlement produces, then gives
// the completer's turn back. REQUIRES: the completer's turn, with sink
// set.
func (in *Inline) reap(ctx context.Context, w *messages.Write) {
	c := in.c
	var woke chan struct{}
	stop := func() bool { return true }
	if ctx.Done() != nil {
		// A Reap waits for a completion: a wake-up nop ends it when
		// ctx ends (counted in wakes, whoever reaps it).
		woke = make(chan struct{})
		stop = context.AfterFunc(ctx, func() {
			defer close(woke)
			if c.env.Ring.Submit([]ring.Op{{Code: ring.OpNop, Token: wakeToken}}) == nil {
				c.wakes.Add(1)
			}
		})
	}
	// A reroute ends the commit's part: the write's fate is now the
	// staging WAL's (another goroutine may decide it: the publisher fails
	// it when the WAL is full), and its hot copy may never come back, so
	// a Reap for it could block for as long as the file stalls. The
	// actors take over; the caller waits for the write as if queued.
	reroutes := c.reroutes
	for !decided(w) && ctx.Err() == nil && c.ringErr == nil && c.reroutes == reroutes {
		c.drainRegistrations()
		if len(c.table) == 0 {
			break // w is held or failed: the submitter has it
		}
		c.reapOnce() //nolint:errcheck // a failed ring fails what is in flight and sets ringErr
		in.deliver()
	}
	if !stop() {
		// ctx ended: the wake-up nop's Submit may be waiting for room in
		// a full ring, which only this goroutine frees (it holds the
		// completer's turn; the submitter may be waiting for room too).
		// Reap without blocking (the nop may be reaped already) until it
		// is in; waiting for it alone deadlocked (inline audit).
		for waiting := true; waiting; {
			select {
			case <-woke:
				waiting = false
			default:
				if c.ringErr != nil {
					<-woke // a failed ring fails the Submit
					waiting = false
					break
				}
				c.drainRegistrations()
				if n, _ := c.reapSome(false); n == 0 {
					time.Sleep(wokeRetry)
				}
				in.deliver()
			}
		}
	}
	c.sink = nil
	in.deliver()
	if len(c.table) > 0 || len(c.ch.registers) > 0 {
		kick(c.ch.compKick)
	}
	c.turn.Unlock()
}

// wokeRetry paces the reaping while a wake-up nop waits for room (see
// Inline.reap): a rare path, so a short sleep rather than a spin.
const wokeRetry = 20 * time.Microsecond

func decided(w *messages.Write) bool {
	select {
	case <-w.Ack.Done():
		return true
	default:
		return false
	}
}

// deliver hands on what settling put in the sink: first the publisher's
// messages, applied here (a write is visible before it is acknowledged,
// and before its file can be replaced and sealed), then the feedback
// (feed). What settles meanwhile (a Do in the submitter's work reaps)
// goes into a fresh sink, delivered in the next round. REQUIRES: the
// completer's turn.
func (in *Inline) deliver() {
	for {
		sk := &in.sink
		pub, fbs := sk.pub, sk.fb
		if len(pub) == 0 && len(fbs) == 0 {
			return
		}
		sk.pub, sk.fb = nil, nil
		if len(pub) > 0 {
			in.p.applyNow(pub)
		}
		if len(fbs) > 0 {
			in.feed(fbs)
		}
	}
}

// feed applies feedback under the submitter's turn when it is free, with
// the submitter's next round of work (a re-routed write's WAL batch, held
// writes for the file that settled), and else sends it to the submitter.
// It never waits for the submitter, which may be waiting for ring
// capacity that only this reaper frees.
func (in *Inline) feed(fbs []feedback) {
	s, c := in.s, in.c
	if s.turn.TryLock() {
		if s.running && s.runCtx.Err() == nil && s.inlineErr == nil {
			s.bufferFeedback()
			s.fbBuf = append(s.fbBuf, fbs...)
			s.regSink = c
			if err := s.step(s.runCtx); err != nil {
				s.inlineErr = err
				kick(s.ch.subKick)
			}
			s.regSink = nil
			s.turn.Unlock()
			return
		}
		s.turn.Unlock()
	}
	sink := c.sink
	c.sink = nil
	for _, fb := range fbs {
		c.feedback(fb)
	}
	c.sink = sink
}
