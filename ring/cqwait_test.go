package ring_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/internal/fdtest"
	"github.com/ringpipe/ringpipe/ring"
)

// TestURingReapsViaPoller: the io_uring backend parks its reaper in Go's
// poller (a reaper blocked in io_uring_enter keeps its P), a Reap wakes
// for a completion posted while it is parked, and Close releases the
// poller's dup of the ring fd.
func TestURingReapsViaPoller(t *testing.T) {
	before := len(fdtest.List(t))
	r, err := ring.New(ring.Options{Kind: ring.URing, Entries: 8})
	if err != nil {
		t.Skipf("io_uring unavailable: %v", err)
	}
	require.True(t, ring.ReapsViaPoller(r), "the io_uring fd was not taken by the poller")

	// The reaper parks (nothing is in flight until the nop), and wakes for it.
	got := make(chan []ring.Completion, 1)
	go func() {
		buf := make([]ring.Completion, 4)
		n, err := r.Reap(buf)
		assert.NoError(t, err)
		got <- buf[:n]
	}()
	require.NoError(t, r.Submit([]ring.Op{{Code: ring.OpNop, Token: 7}}))
	cs := <-got
	require.Len(t, cs, 1)
	assert.Equal(t, uint64(7), cs[0].Token)
	assert.NoError(t, cs[0].Err)

	require.NoError(t, r.Close())
	assert.Equal(t, before, len(fdtest.List(t)), "open fds after Close")
}
