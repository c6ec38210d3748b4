// Package crashtest is the crash-point sweep that the format packages'
// tests share: run a step on a simulated disk, make every operation from
// index k on fail, cut the power, and let a new process check what it
// finds — for every k until the step runs untouched.
package crashtest

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// Dir is the directory every sweep starts with, created and made durable
// before setup runs.
const Dir = "/db"

// Seeds is how many tear patterns each crash point is cut with.
const Seeds = 3

// Every runs step after setup on a fresh simulated disk once for every
// operation index k of step: from k on every operation fails with EIO (the
// machine is dying), then the power is cut with Seeds tear patterns, and
// check inspects what a new process finds; acked says whether step
// returned nil. It stops after the first k at which step ran without
// hitting a fault, and then requires that step succeeded and did some I/O.
func Every[S any](t *testing.T, setup func(t *testing.T, d ring.Doer) S, step func(d ring.Doer, s S) error,
	check func(t *testing.T, d ring.Doer, s S, acked bool)) {
	t.Helper()
	for k := uint64(1); ; k++ {
		finished := false
		for seed := int64(0); seed < Seeds; seed++ {
			disk := sim.NewDisk(int64(k)*100 + seed)
			d1 := ring.NewSync(disk.NewRing(ring.Options{}))
			require.NoError(t, ring.Mkdir(d1, Dir, 0o755))
			require.NoError(t, ring.SyncDir(d1, "/"))
			s := setup(t, d1)
			disk.Inject(sim.Fault{Kind: sim.EIO, At: disk.OpCount() + k, Persist: true})
			err := step(d1, s)
			finished = len(disk.Hits()) == 0
			if finished {
				require.NoError(t, err, "no fault, no error")
			}
			disk.PowerLoss(rand.New(rand.NewSource(int64(k)*7 + seed)))
			d2 := ring.NewSync(disk.NewRing(ring.Options{}))
			t.Run(fmt.Sprintf("op%d/seed%d", k, seed), func(t *testing.T) { check(t, d2, s, err == nil) })
			if t.Failed() {
				return
			}
		}
		if finished {
			require.Greater(t, k, uint64(1), "the step did some I/O")
			t.Logf("crashed at each of %d operation indexes, %d tear patterns each", k-1, Seeds)
			return
		}
	}
}
