package snapshot

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/internal/backendtest"
	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
)

// TestWriteBlockDirect: with direct set, a block's whole sectors go through
// an O_DIRECT fd and the last partial one through the buffered fd; the
// file holds exactly the bytes EncodeBlock makes, on the simulated disk
// (which refuses unaligned O_DIRECT transfers) and on the std and io_uring
// backends, for blocks of one chunk and of several.
func TestWriteBlockDirect(t *testing.T) {
	backendtest.Run(t, 3, func(t *testing.T, be backendtest.Backend) {
		for seq, n := range []int{1, 300, 30000} {
			t.Run(fmt.Sprint(n), func(t *testing.T) {
				seq := uint64(seq + 1) // a block of its own in the backend's directory
				d := &countingDoer{Doer: be.Doer}
				rng := rand.New(rand.NewPCG(uint64(n), 9))
				var rev messages.Revision
				es := genEntries(t, rng, n, &rev)
				meta, err := WriteBlockDirect(d, be.Dir, 7, seq, seq+100, es, true)
				require.NoError(t, err)
				want, wmeta, err := encodeBlock(7, seq, seq+100, es)
				require.NoError(t, err)
				assert.Equal(t, wmeta, meta)
				got, err := ring.ReadFile(be.Doer, BlockPath(be.Dir, 7, seq))
				require.NoError(t, err)
				assert.True(t, slices.Equal(want, got), "direct and encoded bytes agree (%d against %d bytes)", len(got), len(want))
				if n == 30000 {
					assert.Greater(t, d.writes, 2, "streamed in chunks")
				}
				b, err := OpenBlock(be.Doer, BlockPath(be.Dir, 7, seq))
				require.NoError(t, err)
				checkBlockAgainst(t, b, es)
				assert.Equal(t, seq+100, b.Gen(), "the block names the generation sealed into it")
				c := NewCache(CacheOptions{Doer: be.Doer})
				defer c.Close()
				cb, err := c.OpenBlockFor(be.Dir, meta)
				require.NoError(t, err)
				assert.Equal(t, seq+100, cb.Gen(), "a block opened through the cache names it too")
			})
		}
	})
}

// TestCrashBlockWriteDirect is TestCrashBlockWrite with direct set.
func TestCrashBlockWriteDirect(t *testing.T) { testCrashBlockWrite(t, true) }
