package ring_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// wrapped is a ring that wraps another and says so, as the engine's
// wrappers do.
type wrapped struct{ ring.Ring }

func (w wrapped) Unwrap() ring.Ring { return w.Ring }

// TestSpinURing: Spin finds a completion the kernel posted, through a
// wrapper too; with nothing in flight it gives up (false) once its time
// is up; on a closed ring it returns false.
func TestSpinURing(t *testing.T) {
	r, err := ring.New(ring.Options{Kind: ring.URing, Entries: 8})
	if err != nil {
		t.Skipf("io_uring unavailable: %v", err)
	}
	out := make([]ring.Completion, 4)

	assert.False(t, ring.Spin(r, time.Millisecond), "nothing in flight")
	assert.False(t, ring.Spin(r, 0), "no time to poll")

	for _, rr := range []ring.Ring{r, wrapped{r}, wrapped{wrapped{r}}} {
		require.NoError(t, rr.Submit([]ring.Op{{Code: ring.OpNop, Token: 7}}))
		assert.True(t, ring.Spin(rr, time.Minute), "a nop's completion")
		n, err := r.TryReap(out)
		require.NoError(t, err)
		require.Equal(t, 1, n, "Spin said a completion was ready")
		assert.Equal(t, uint64(7), out[0].Token)
	}
	assert.False(t, ring.Spin(r, time.Millisecond), "everything reaped")

	require.NoError(t, r.Close())
	assert.False(t, ring.Spin(r, time.Minute), "closed")
}

// TestSpinOthers: backends without a shared completion queue, and
// wrappers that do not unwrap to one, never poll.
func TestSpinOthers(t *testing.T) {
	std, err := ring.New(ring.Options{Kind: ring.Std, Entries: 8})
	require.NoError(t, err)
	defer std.Close()
	disk := sim.NewDisk(1)
	sr := disk.NewRing(ring.Options{})
	defer sr.Close()
	for name, r := range map[string]ring.Ring{"std": std, "sim": sr, "wrapped std": wrapped{std}} {
		require.NoError(t, r.Submit([]ring.Op{{Code: ring.OpNop, Token: 1}}), name)
		t0 := time.Now()
		assert.False(t, ring.Spin(r, time.Minute), name)
		assert.Less(t, time.Since(t0), 30*time.Second, "%s: Spin returned at once, not after its minute", name)
		n, err := r.Reap(make([]ring.Completion, 1))
		require.NoError(t, err, name)
		assert.Equal(t, 1, n, name)
	}
}
