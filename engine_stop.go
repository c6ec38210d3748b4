package ringpipe

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/ringpipe/ringpipe/actors"
	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
)

func (e *engine) stop(ctx context.Context) error {
	// The first caller stops the engine; the others wait for it, each
	// within its own ctx. Before, they waited inside a sync.Once, so a
	// second Stop with a short ctx waited as long as the first (ctxb
	// audit: until a hung disk answered).
	if e.stopStarted.CompareAndSwap(false, true) {
		e.stopErr = e.doStop(ctx)
		close(e.stopDone)
		return e.stopErr
	}
	// A Stop that has finished answers nil even when ctx has ended too
	// (a select over both would pick either).
	select {
	case <-e.stopDone:
		return nil
	default:
	}
	select {
	case <-e.stopDone:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("ringpipe: stop: waiting for the Stop in progress: %w", ctx.Err())
	}
}

func (e *engine) doStop(ctx context.Context) error {
	// 1. Close the intake and wait for the writers that got in.
	e.mu.Lock()
	e.closed = true
	close(e.stopCh)
	e.mu.Unlock()
	var errs []error
	forced := e.waitSenders(ctx)
	if forced {
		errs = append(errs, fmt.Errorf("ringpipe: stop: a write committing inline: %w", ctx.Err()))
	}

	// 2. Drain: everything accepted becomes durable and acknowledged.
	select {
	case <-e.failed:
	case <-e.supDone:
	default:
		if forced {
			break // the ring is closed: nothing more becomes durable
		}
		reply := make(chan error, 1)
		e.ch.Queued.Add(1) // taken back by the submitter, or below
		select {
		case e.ch.Writes <- &messages.Barrier{Reply: reply}:
			if err, werr := waitReply(e, ctx, reply); werr != nil || err != nil {
				errs = append(errs, &wrappedError{prefix: "ringpipe: stop: drain", err: errors.Join(werr, err)})
			}
		case <-ctx.Done():
			e.ch.Queued.Add(-1)
			errs = append(errs, fmt.Errorf("ringpipe: stop: drain: %w", ctx.Err()))
		case <-e.supDone:
			e.ch.Queued.Add(-1)
		}
	}

	// 3. Stop the actors in reverse start order. If ctx ends first,
	// closing the ring cancels what is in flight so that they can.
	e.cancel()
	late, f := e.awaitOrForce(ctx, e.supDone)
	if late && !forced {
		errs = append(errs, fmt.Errorf("ringpipe: stop: %w", ctx.Err()))
	}
	forced = forced || f
	if e.supErr != nil {
		errs = append(errs, &wrappedError{prefix: "ringpipe: stop", err: e.supErr})
	}

	// 4. Nothing runs any more: settle the files' last batches and fail
	// whatever still waits.
	e.sub.Settle()
	if e.failPendingWithin(ctx) {
		forced = true
		errs = append(errs, fmt.Errorf("ringpipe: stop: I/O in flight: %w", ctx.Err()))
	}

	// 5. Close the files (a ring.Sync reaps now), then the ring; the
	// LOCK goes with its fd.
	if forced {
		e.closeAfterForce(nil)
	} else if err := e.closeFiles(nil); err != nil {
		errs = append(errs, fmt.Errorf("ringpipe: stop: %w", err))
	}
	if err := e.r.Close(); err != nil {
		errs = append(errs, fmt.Errorf("ringpipe: stop: close the ring: %w", err))
	}
	e.lg.Info("stopped")
	return errors.Join(errs...)
}

// waitSenders waits for the callers inside the intake to hand over their
// requests. One of them may be committing its write inline, reaping the
// ring itself until the write is decided (actors.Inline): on a disk that
// does not answer, that lasts as long as the caller's own context. So the
// wait is bounded as every wait of Stop is (awaitOrForce); forced reports
// that the ring was closed under the caller.
func (e *engine) waitSenders(ctx context.Context) (forced bool) {
	done := make(chan struct{})
	go func() {
		e.senders.Wait()
		close(done)
	}()
	_, forced = e.awaitOrForce(ctx, done)
	return forced
}

// awaitOrForce waits for done. Once ctx has ended, the actors get
// stopGrace to finish the I/O in flight, one budget for the whole of Stop
// rather than one per wait, so that Stop returns at most stopGrace (plus
// the closing of files) after its ctx ended. When the grace runs out the
// actors are cancelled and the ring is closed under them, which completes
// everything in flight, and done is awaited; later waits then just wait.
// late reports that ctx ended before done; forced that the ring was
// closed (by this wait or an earlier one). Only doStop's goroutine calls
// it.
func (e *engine) awaitOrForce(ctx context.Context, done <-chan struct{}) (late, forced bool) {
	select {
	case <-done:
		return false, e.ringForced
	default:
	}
	if e.ringForced {
		<-done // the ring is closed: what is in flight completes
		return ctx.Err() != nil, true
	}
	select {
	case <-done:
		return false, false
	case <-ctx.Done():
	}
	if e.graceEnd.IsZero() {
		e.graceEnd = time.Now().Add(stopGrace)
	}
	t := time.NewTimer(time.Until(e.graceEnd))
	defer t.Stop()
	select {
	case <-done:
		return true, false
	case <-t.C:
	}
	e.ringForced = true
	e.cancel()
	e.r.Close() //nolint:errcheck // forced: completes everything in flight
	<-done
	return true, true
}

// stopGrace is how long Stop, once its context has ended, still lets the
// actors finish the I/O in flight before it closes the ring under them: a
// healthy disk answers within it, and Stop overruns its ctx by at most
// this (plus closing the files). Before, 2 s per wait, so a Stop on a
// hung disk returned 2 s or more after its ctx ended.
const stopGrace = 250 * time.Millisecond

// closeAfterForce releases the files after Stop closed the ring under the
// actors, or Start under recovery (rec, what recovery opened; nil in
// Stop): the fds are the process's, so a short-lived std ring closes them
// (the lock goes with its fd). A test ring (Config.NewRing) is a process of
// its own whose fds died with it.
func (e *engine) closeAfterForce(rec *recovered) {
	if e.cfg.NewRing != nil {
		// A test ring's fd numbers are its own (the simulator's, or a
		// recorder's that never reuses one): closing them here would
		// close whatever the process has under those numbers.
		return
	}
	r, err := ring.New(ring.Options{Kind: ring.Std, Entries: 4, Logger: e.lg})
	if err != nil {
		e.lg.Warn("close files after a forced stop", zap.Error(err))
		return
	}
	e.sd = ring.NewSync(r)
	for _, d := range e.doers {
		d.Reap(e.sd)
	}
	if err := e.closeFiles(rec); err != nil {
		e.lg.Warn("close files after a forced stop", zap.Error(err))
	}
	r.Close() //nolint:errcheck // a private ring with nothing in flight
}

// failPendingWithin is failPending bounded as Stop is (awaitOrForce):
// the completer's Finish waits for the I/O in flight (an actor that failed
// while stopping left some), which a hung disk may never answer. forced
// reports that this wait closed the ring.
func (e *engine) failPendingWithin(ctx context.Context) (forced bool) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.failPending()
	}()
	before := e.ringForced
	_, forced = e.awaitOrForce(ctx, done)
	return forced && !before
}

// failPending completes every request that the stopped actors still hold.
// REQUIRES: the supervisor has returned.
func (e *engine) failPending() {
	err := e.gone()
	// The io unit may have stopped with I/O in flight: when the engine
	// failed, and when an actor failed while stopping (nothing restarts
	// it then). Let that I/O decide its writes and answer the routes
	// that wait for it, then hand the completer's reports on.
	// Acknowledgements go first: a write whose hot copy proved durable
	// may also wait, staged, in the submitter. Before, only a failed
	// engine did this: a completer that failed while stopping left a
	// directory sync's replies unanswered, so SettleOrphans skipped its
	// open (an fd left open) and closed its fd under its unanswered fsync
	// (fdlife audit: 7 of 9 runs of TestFdlifeChaosThroughStop).
	if ferr := e.comp.Finish(); ferr != nil && !errors.Is(ferr, context.Canceled) {
		e.lg.Warn("reap what the stopped engine had in flight", zap.Error(ferr))
	}
	e.pub.DrainWith(e.comp.FailPending(err))
	e.sub.Settle()
	e.sub.FailPending(err)
	e.pub.DrainWith(e.comp.FailPending(err))
	for {
		select {
		case r := <-e.ch.Writes:
			e.ch.Queued.Add(-1)
			switch r := r.(type) {
			case *messages.Write:
				r.Ack.Complete(0, false, err)
			case *messages.Barrier:
				r.Reply <- err
			}
		default:
			return
		}
	}
}

// closeFiles closes every file the engine holds, through the ring.Sync,
// and returns every close that failed (a failed close of a written file
// can mean lost data on some filesystems: the caller must hear of it).
// rec is set when recovery failed halfway and the actors never existed.
func (e *engine) closeFiles(rec *recovered) error {
	var segs []interface{ Close() error }
	var errs []error
	closeAll := func() {
		for _, s := range segs {
			if err := s.Close(); err != nil {
				e.lg.Warn("close", zap.Error(err))
				errs = append(errs, fmt.Errorf("close: %w", err))
			}
		}
	}
	switch {
	case rec != nil:
		for _, s := range rec.segs {
			segs = append(segs, s)
		}
		if rec.wal != nil {
			segs = append(segs, rec.wal)
		}
		if rec.man != nil {
			segs = append(segs, rec.man)
		}
	case e.sub != nil:
		actors.DrainSubmitter(e.ch)
		for _, d := range e.doers {
			for _, err := range d.SettleOrphans() {
				// Nothing was acknowledged against it: the work is
				// redone at the next Start.
				e.lg.Warn("background I/O cut short by Stop failed", zap.Error(err))
			}
		}
		for _, s := range e.sub.Segments() {
			segs = append(segs, s)
		}
		for _, s := range e.sealer.Frozen() {
			segs = append(segs, s)
		}
		if w := e.sub.WAL(); w != nil {
			segs = append(segs, w)
		}
		segs = append(segs, e.sealer.Manifest())
	}
	closeAll()
	if e.lockFD >= 0 {
		if err := ring.Close(e.sd, e.lockFD); err != nil {
			errs = append(errs, fmt.Errorf("close the lock file: %w", err))
		}
		e.lockFD = -1
	}
	return errors.Join(errs...)
}

func (e *engine) stats() Stats {
	rs := e.r.Stats()
	m := e.metrics
	return Stats{
		Backend:        e.info.Backend,
		KernelVersion:  e.info.Kernel,
		QueueDepth:     len(e.ch.Writes),
		DirectWrites:   m.DirectWrites.Load(),
		StagedWrites:   m.StagedWrites.Load(),
		Promoted:       m.Promoted.Load(),
		StagedPending:  int(max(0, m.StagedPending.Load())),
		SealedBlocks:   m.SealedBlocks.Load(),
		Syncs:          rs.Syncs,
		ShortIORetries: rs.ShortIORetries,
		ActorRestarts:  e.sup.Restarts(),
		WriteLatency:   summary(e.writeLat),
		SyncLatency:    summary(e.syncLat),
	}
}
