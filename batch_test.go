package ringpipe

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBatchesFitLogFiles: with log files (Preallocate) smaller than the 4
// MiB batch bound, writes gathered into one batch are split so that each
// batch fits a fresh file, staged or direct, and a record that cannot fit
// a log file at all is refused at Put with ErrValueTooLarge saying why.
// Before, such a batch failed its writers ("batch of N bytes exceeds the
// segment size") or, when promoted, sealed empty generations forever.
func TestBatchesFitLogFiles(t *testing.T) {
	for _, slow := range []bool{false, true} {
		name := "direct"
		if slow {
			name = "staged"
		}
		t.Run(name, func(t *testing.T) {
			cfg := Config{Dir: t.TempDir(), Logger: testLogger(t), Preallocate: 1 << 20,
				BatchTimeout: 20 * time.Millisecond}
			if slow {
				cfg.DirectWriteTimeout = time.Microsecond // every hot batch misses it
			}
			e, err := Start(ctxFor(t), cfg)
			require.NoError(t, err)
			ctx := ctxFor(t)
			sp, err := e.CreateSpace(ctx, testSpec)
			require.NoError(t, err)

			_, err = e.Put(ctx, sp, pointOf(0), make([]byte, 1<<20))
			require.ErrorIs(t, err, ErrValueTooLarge)
			assert.Contains(t, err.Error(), "Preallocate")

			var wg sync.WaitGroup
			vals := map[int][]byte{}
			for i := 1; i <= 6; i++ {
				v := make([]byte, 600<<10)
				v[0], v[len(v)-1] = byte(i), byte(i)
				vals[i] = v
			}
			for i := 1; i <= 6; i++ {
				wg.Go(func() {
					_, err := e.Put(ctx, sp, pointOf(i), vals[i])
					assert.NoError(t, err, "Put %d", i)
				})
			}
			wg.Wait()
			require.NoError(t, e.Flush(ctx, sp))
			for i := 1; i <= 6; i++ {
				r, err := e.Get(ctx, sp, pointOf(i))
				require.NoError(t, err)
				assert.Equal(t, vals[i], r.Value)
			}
			require.NoError(t, e.Stop(ctx))
			e, err = Start(ctxFor(t), cfg)
			require.NoError(t, err)
			for i := 1; i <= 6; i++ {
				r, err := e.Get(ctx, sp, pointOf(i))
				require.NoError(t, err)
				assert.Equal(t, vals[i], r.Value)
			}
			require.NoError(t, e.Stop(ctx))
		})
	}
}
