package ring_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/ringtest"
)

// stdHarness adapts the std backend to the conformance suite: real system
// calls in a t.TempDir (ext4 here, so O_DIRECT works).
func stdHarness() ringtest.Harness {
	return ringtest.Harness{
		Name: "std",
		Real: true,
		New: func(t *testing.T, opts ring.Options) (ring.Ring, string) {
			opts.Kind = ring.Std
			r, err := ring.New(opts)
			require.NoError(t, err)
			t.Cleanup(func() { _ = r.Close() })
			return r, t.TempDir()
		},
	}
}

func TestStdConformance(t *testing.T) {
	ringtest.Run(t, stdHarness())
}

func TestStdInfo(t *testing.T) {
	r, err := ring.New(ring.Options{Kind: ring.Std, Workers: 3, Entries: 16})
	require.NoError(t, err)
	defer r.Close()
	info := r.Info()
	require.Equal(t, "std", info.Backend)
	require.Equal(t, uint32(3), info.Entries, "std reports its workers as Entries")
	require.NotEmpty(t, info.Kernel)
	require.Empty(t, info.Fallback)
	require.Equal(t, 64, r.Capacity(), "default capacity is 4*Entries")
}
