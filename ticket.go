package ringpipe

import (
	"context"

	"github.com/ringpipe/ringpipe/messages"
)

// Ticket is the receipt of a PutAsync: it says when the write is durable.
type Ticket struct {
	ack *messages.Ack
	e   *engine // says ErrStopped for a write Stop cut short (cutByStop)
}

// Done is closed once the write is durable (and visible) or has failed.
func (t *Ticket) Done() <-chan struct{} { return t.ack.Done() }

// Wait waits until the write is durable and returns its revision, or the
// error that failed it. When ctx ends first it returns ctx's error; the
// write may still be applied.
func (t *Ticket) Wait(ctx context.Context) (Revision, error) {
	rev, err := t.wait(ctx)
	return rev, saysWhat(err, "ringpipe: wait for a write to be durable")
}

func (t *Ticket) wait(ctx context.Context) (Revision, error) {
	select {
	case <-t.ack.Done():
		return t.result(ctx)
	default:
	}
	done := ctx.Done()
	if done == nil {
		// A ctx that never ends (context.Background): a plain receive,
		// not a select.
		<-t.ack.Done()
		return t.result(ctx)
	}
	select {
	case <-t.ack.Done():
		return t.result(ctx)
	case <-done:
		return 0, ctx.Err()
	}
}

// result is the write's outcome; a write that Stop cut short says
// ErrStopped.
func (t *Ticket) result(ctx context.Context) (Revision, error) {
	rev, err := t.ack.Result()
	if err != nil && t.e != nil {
		err = t.e.cutByStop(ctx, err)
	}
	return rev, err
}
