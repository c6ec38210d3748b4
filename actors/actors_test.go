package actors

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTokens(t *testing.T) {
	for _, id := range []uint64{1, 2, 1 << 40} {
		for _, i := range []int{0, 1, maxChainOps} {
			tok := tokenOf(id, i)
			assert.Equal(t, id, flightOf(tok))
			assert.Equal(t, uint64(i), tok&0xff)
		}
	}
	assert.NotEqual(t, uint64(wakeToken), tokenOf(1, 0), "flight ids start at 1")
}

// TestDoerRoutes: a Doer reaps its ring itself until routed, and goes
// back to reaping when the route is cleared.
func TestDoerRoutes(t *testing.T) {
	disk := sim.NewDisk(1)
	r := disk.NewRing(ring.Options{})
	defer r.Close()
	d := NewDoer(ring.NewSync(r))
	_, err := ring.Do1(d, ring.Op{Code: ring.OpNop})
	require.NoError(t, err)

	routed := 0
	d.setRoute(func(ops []ring.Op) ([]ring.Completion, error) {
		routed++
		return make([]ring.Completion, len(ops)), nil
	})
	_, err = ring.Do1(d, ring.Op{Code: ring.OpNop})
	require.NoError(t, err)
	assert.Equal(t, 1, routed)
	d.setRoute(nil)
	_, err = ring.Do1(d, ring.Op{Code: ring.OpNop})
	require.NoError(t, err)
	assert.Equal(t, 1, routed)
}

// TestCompleterStops: a completer with nothing in flight returns on
// cancel, having reaped its own wake-up nop (nothing left in the ring).
func TestCompleterStops(t *testing.T) {
	disk := sim.NewDisk(2)
	r := disk.NewRing(ring.Options{})
	defer r.Close()
	env := &Env{Ring: r, Log: zaptest.NewLogger(t), Metrics: &Metrics{}}
	env.Metrics.init()
	c := NewCompleter(env, NewChannels(4, r.Capacity()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("completer did not stop")
	}
	n, err := r.TryReap(make([]ring.Completion, 4))
	require.NoError(t, err)
	assert.Zero(t, n, "the wake-up nop was reaped by the completer")
	assert.Zero(t, c.wakes.Load())
}

// TestAckOnce: an Ack completes once; later completions are ignored.
func TestAckOnce(t *testing.T) {
	a := messages.NewAck()
	assert.True(t, a.Complete(7, false, nil))
	assert.False(t, a.Complete(8, true, assert.AnError))
	<-a.Done()
	rev, err := a.Result()
	assert.Equal(t, messages.Revision(7), rev)
	assert.NoError(t, err)
}
