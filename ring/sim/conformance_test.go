package sim

import (
	"hash/fnv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/ringtest"
)

// simHarness adapts the sim backend to the conformance suite: every ring
// gets a disk of its own, seeded from the test's name so that each subtest
// replays exactly.
var simHarness = ringtest.Harness{
	Name: "sim",
	New: func(t *testing.T, opts ring.Options) (ring.Ring, string) {
		h := fnv.New64a()
		h.Write([]byte(t.Name()))
		d := NewDisk(int64(h.Sum64()))
		require.NoError(t, d.MkdirAll("/ringtest"))
		r := d.NewRing(opts)
		t.Cleanup(func() { _ = r.Close() })
		return r, "/ringtest"
	},
	InjectShortWrite: func(t *testing.T, r ring.Ring) {
		sr := r.(*Ring)
		sr.Disk().Inject(Fault{Kind: ShortWrite, Ring: sr})
	},
	InjectDelay: func(t *testing.T, r ring.Ring, c ring.Opcode, d time.Duration) {
		sr := r.(*Ring)
		sr.Disk().Inject(Fault{Kind: Delay, Delay: d, Ops: []ring.Opcode{c}, Ring: sr})
	},
}

func TestConformance(t *testing.T) { ringtest.Run(t, simHarness) }
