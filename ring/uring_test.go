package ring_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/ringtest"
)

// uringHarness adapts the io_uring backend to the conformance suite. Where
// the kernel refuses io_uring (ENOSYS, or EPERM under a seccomp profile)
// the suite is skipped with the reason; CI's machine has io_uring.
func uringHarness() ringtest.Harness {
	return ringtest.Harness{
		Name: "uring",
		Real: true,
		New: func(t *testing.T, opts ring.Options) (ring.Ring, string) {
			opts.Kind = ring.URing
			r, err := ring.New(opts)
			if err != nil {
				t.Skipf("io_uring unavailable: %v", err)
			}
			require.Equal(t, "uring", r.Info().Backend)
			t.Cleanup(func() { _ = r.Close() })
			return r, t.TempDir()
		},
	}
}

func TestURingConformance(t *testing.T) {
	ringtest.Run(t, uringHarness())
}
