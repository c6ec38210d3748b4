package ringpipe

import (
	"context"

	"github.com/ringpipe/ringpipe/messages"
)

// Ticket is the receipt of a PutAsync: it says when the write is durable.
type Ticket struct {
	ack *messages.Ack
}

// Done is closed once the write is durable (and visible) or has failed.
func (t *Ticket) Done() <-chan struct{} { return t.ack.Done() }

// Wait waits until the write is durable and returns its revision, or the
// error that failed it. When ctx ends first it returns ctx's error; the
// write may still be applied.
func (t *Ticket) Wait(ctx context.Context) (Revision, error) {
	select {
	case <-t.ack.Done():
		return t.ack.Result()
	default:
	}
	done := ctx.Done()
	if done == nil {
		// A ctx that never ends (context.Background): a plain receive,
		// not a select.
		<-t.ack.Done()
		return t.ack.Result()
	}
	select {
	case <-t.ack.Done():
		return t.ack.Result()
	case <-done:
		return 0, ctx.Err()
	}
}
