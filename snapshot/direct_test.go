package snapshot

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// TestWriteBlockDirect: with direct set, a block's whole sectors go through
// an O_DIRECT fd and the last partial one through the buffered fd; the
// file holds exactly the bytes EncodeBlock makes, on the simulated disk
// (which refuses unaligned O_DIRECT transfers) and on the std and io_uring
// backends, for blocks of one chunk and of several.
func TestWriteBlockDirect(t *testing.T) {
	type backend struct {
		d   ring.Doer
		dir string
	}
	backends := map[string]func(t *testing.T) backend{
		"sim": func(t *testing.T) backend {
			d := ring.NewSync(sim.NewDisk(3).NewRing(ring.Options{}))
			require.NoError(t, ring.Mkdir(d, "/db", 0o755))
			return backend{d, "/db"}
		},
	}
	for _, kind := range []ring.Kind{ring.Std, ring.URing} {
		backends[kind.String()] = func(t *testing.T) backend {
			r, err := ring.New(ring.Options{Kind: kind})
			if err != nil {
				t.Skipf("%s backend unavailable: %v", kind, err)
			}
			t.Cleanup(func() { r.Close() })
			return backend{ring.NewSync(r), t.TempDir()}
		}
	}
	for name, open := range backends {
		for _, n := range []int{1, 300, 30000} {
			t.Run(fmt.Sprintf("%s/%d", name, n), func(t *testing.T) {
				be := open(t)
				d := &countingDoer{Doer: be.d}
				rng := rand.New(rand.NewPCG(uint64(n), 9))
				var rev messages.Revision
				es := genEntries(t, rng, n, &rev)
				meta, err := WriteBlockDirect(d, be.dir, 7, 1, es, true)
				require.NoError(t, err)
				want, wmeta, err := EncodeBlock(7, 1, es)
				require.NoError(t, err)
				assert.Equal(t, wmeta, meta)
				got, err := ring.ReadFile(be.d, BlockPath(be.dir, 7, 1))
				require.NoError(t, err)
				assert.True(t, slices.Equal(want, got), "direct and encoded bytes agree (%d against %d bytes)", len(got), len(want))
				if n == 30000 {
					assert.Greater(t, d.writes, 2, "streamed in chunks")
				}
				b, err := OpenBlock(be.d, BlockPath(be.dir, 7, 1))
				require.NoError(t, err)
				checkBlockAgainst(t, b, es)
			})
		}
	}
}

// TestCrashBlockWriteDirect is TestCrashBlockWrite with direct set.
func TestCrashBlockWriteDirect(t *testing.T) { testCrashBlockWrite(t, true) }
