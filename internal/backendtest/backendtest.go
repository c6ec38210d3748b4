// Package backendtest runs a package's tests on every ring backend: the
// simulated disk, std and io_uring. (It is not part of ring/ringtest, the
// backends' conformance suite, because the simulated disk's own tests
// import that suite.)
package backendtest

import (
	"testing"

	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// Backend is one backend a package's tests run on: a Doer that reaps its
// own ring, and an empty directory for the test's files.
type Backend struct {
	Doer ring.Doer
	Dir  string
	// Simulated is set on the simulated disk (which refuses unaligned
	// O_DIRECT transfers, as Linux does, and never refuses O_DIRECT).
	Simulated bool
}

// Run runs fn as a subtest on the simulated disk (seeded with seed,
// its directory /db) and on the std and io_uring backends (a temporary
// directory each); a backend the machine lacks is skipped with the reason.
// The rings are closed when each subtest ends.
func Run(t *testing.T, seed int64, fn func(t *testing.T, b Backend)) {
	t.Run("sim", func(t *testing.T) {
		d := ring.NewSync(sim.NewDisk(seed).NewRing(ring.Options{}))
		if err := ring.Mkdir(d, "/db", 0o755); err != nil {
			t.Fatal(err)
		}
		fn(t, Backend{Doer: d, Dir: "/db", Simulated: true})
	})
	for _, kind := range []ring.Kind{ring.Std, ring.URing} {
		t.Run(kind.String(), func(t *testing.T) {
			r, err := ring.New(ring.Options{Kind: kind})
			if err != nil {
				t.Skipf("%s backend unavailable: %v", kind, err)
			}
			t.Cleanup(func() { r.Close() })
			fn(t, Backend{Doer: ring.NewSync(r), Dir: t.TempDir()})
		})
	}
}
