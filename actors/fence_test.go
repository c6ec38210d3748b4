package actors

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/ringpipe/ringpipe/livetail"
	"github.com/ringpipe/ringpipe/messages"
)

// fenceAnswered returns a check that a Fence's reply channel holds a nil
// answer.
func fenceAnswered(t *testing.T) func(chan error) bool {
	return func(c chan error) bool {
		select {
		case err := <-c:
			require.NoError(t, err)
			return true
		default:
			return false
		}
	}
}

// TestFenceWaitsForItsSettlement: a Fence that reaches the publisher
// before the messages of the settlement it names is answered only once
// they are applied (their writes acknowledged), whichever kind the last
// one is; Drain answers whatever still waits.
func TestFenceWaitsForItsSettlement(t *testing.T) {
	env := &Env{Log: zaptest.NewLogger(t), Metrics: &Metrics{}}
	var view atomic.Pointer[livetail.View]
	p := NewPublisher(env, NewChannels(4, 8), livetail.NewTail(), &view)
	answered := fenceAnswered(t)
	w1 := &messages.Write{Ack: messages.NewAck()}
	w2 := &messages.Write{Ack: messages.NewAck()}
	f1, f2, f3 := make(chan error, 1), make(chan error, 1), make(chan error, 1)

	p.applyNow([]PublisherMsg{Fence{Seq: 1, Reply: f1}, Fence{Seq: 2, Reply: f2}, Fence{Seq: 3, Reply: f3}})
	assert.False(t, answered(f1), "settlement 1 not applied yet")

	// Settlement 1: two messages, only the last numbered; in two bursts.
	p.applyNow([]PublisherMsg{FailAcks{Writes: []*messages.Write{w1}, Err: assert.AnError}})
	assert.False(t, answered(f1), "the first message of settlement 1 is not all of it")
	p.applyNow([]PublisherMsg{FailAcks{Writes: []*messages.Write{w2}, Err: assert.AnError, Seq: 1}})
	assert.True(t, answered(f1))
	assert.True(t, w1.Ack.Completed() && w2.Ack.Completed(), "acknowledged before the Fence's answer")
	assert.False(t, answered(f2))

	// Settlement 2 ends with an Appended (no acks needed for the rule).
	p.applyNow([]PublisherMsg{Appended{Seq: 2}})
	assert.True(t, answered(f2))
	assert.False(t, answered(f3))

	// A Fence for a settlement applied already is answered at once.
	f0 := make(chan error, 1)
	p.applyNow([]PublisherMsg{Fence{Seq: 2, Reply: f0}})
	assert.True(t, answered(f0))

	p.Drain()
	assert.True(t, answered(f3), "Drain answers what still waits")
}

// TestOnePublishPerBurst: notices that wait in the publisher's inbox
// together are applied as one burst, published as one View, and only then
// acknowledged: each writer, once acknowledged, finds its record in the
// published View.
func TestOnePublishPerBurst(t *testing.T) {
	env := &Env{Log: zaptest.NewLogger(t), Metrics: &Metrics{}}
	env.Metrics.init()
	var view atomic.Pointer[livetail.View]
	tail := livetail.NewTail()
	info := messages.SpaceInfo{ID: 1, SpaceSpec: messages.SpaceSpec{Name: "s", Dims: 1, Bits: 16}}
	require.NoError(t, tail.AddSpace(info, Keyer(info.SpaceSpec)))
	ch := NewChannels(4, 8)
	p := NewPublisher(env, ch, tail, &view)

	const n = 12
	var ws []*messages.Write
	for i := range n {
		rec := messages.Record{Space: 1, Point: messages.Point{uint32(i)}, Revision: messages.Revision(i + 1), Value: []byte{byte(i)}}
		w := &messages.Write{Record: rec, Ack: messages.NewAck()}
		ws = append(ws, w)
		ch.Publisher <- Appended{Space: 1, Gen: 1, Records: []messages.Record{rec}, Acks: []*messages.Write{w}, Seq: uint64(i + 1)}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	for _, w := range ws {
		select {
		case <-w.Ack.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("a write was never acknowledged")
		}
		v := view.Load()
		rec, err := v.Get(1, w.Record.Point)
		require.NoError(t, err, "acknowledged, not in the View")
		assert.Equal(t, w.Record.Revision, rec.Revision)
	}
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	assert.Equal(t, uint64(1), env.Metrics.Publishes.Load(), "notices waiting together are one burst, one publish")
	assert.Equal(t, messages.Revision(n), view.Load().Revision())
}

// TestFenceWaitsForEarlierSettlements: settlements may be applied out of
// order (Run holds settlement 1, received but not yet applied, while an
// inline commit applies settlement 2): a Fence for 1 or 2 is answered
// only once both are applied. Before, applying 2 answered the Fence for 1
// with 1's writes not acknowledged: a Sync returned before an earlier
// PutAsync's ticket was done.
func TestFenceWaitsForEarlierSettlements(t *testing.T) {
	env := &Env{Log: zaptest.NewLogger(t), Metrics: &Metrics{}}
	var view atomic.Pointer[livetail.View]
	p := NewPublisher(env, NewChannels(4, 8), livetail.NewTail(), &view)
	answered := fenceAnswered(t)
	w1 := &messages.Write{Ack: messages.NewAck()}
	f1, f2, f4 := make(chan error, 1), make(chan error, 1), make(chan error, 1)
	p.applyNow([]PublisherMsg{Fence{Seq: 1, Reply: f1}, Fence{Seq: 2, Reply: f2}, Fence{Seq: 4, Reply: f4}})

	p.applyNow([]PublisherMsg{Appended{Seq: 2}})
	assert.False(t, answered(f1), "settlement 1 is not applied")
	assert.False(t, answered(f2), "settlement 2 is applied, 1 is not")
	p.applyNow([]PublisherMsg{Appended{Seq: 4}})
	assert.False(t, answered(f4), "settlements 1 and 3 are not applied")

	p.applyNow([]PublisherMsg{FailAcks{Writes: []*messages.Write{w1}, Err: assert.AnError, Seq: 1}})
	assert.True(t, w1.Ack.Completed())
	assert.True(t, answered(f1))
	assert.True(t, answered(f2), "1 and 2 are applied")
	assert.False(t, answered(f4), "3 is not")
	p.applyNow([]PublisherMsg{Appended{Seq: 3}})
	assert.True(t, answered(f4), "1 to 4 are applied")
	assert.Empty(t, p.ahead)

	// Applied again (a restarted run re-applies its batch): no effect.
	p.applyNow([]PublisherMsg{Appended{Seq: 2}})
	f3 := make(chan error, 1)
	p.applyNow([]PublisherMsg{Fence{Seq: 4, Reply: f3}})
	assert.True(t, answered(f3))
	p.Drain()
}
