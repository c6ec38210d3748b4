package ring_test

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/ring"
)

// openFDs counts the process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

// TestURingReapsViaPoller: the io_uring backend parks its reaper in Go's
// poller (a reaper blocked in io_uring_enter keeps its P), a Reap wakes
// for a completion posted while it is parked, and Close releases the
// poller's dup of the ring fd.
func TestURingReapsViaPoller(t *testing.T) {
	before := openFDs(t)
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
	assert.Equal(t, before, openFDs(t), "open fds after Close")
}
