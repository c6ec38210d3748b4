package test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/snapshot"
)

// BenchmarkSealOvershoot measures records per sealed block against
// SealThreshold under 64 writers of 100-byte values on a real directory
// (Preallocate 1 MiB): each iteration is one engine lifetime of 25
// thresholds' worth of Puts, and the blocks sealed by threshold (not the
// last generation, left unsealed at Stop) are counted. Reports the mean
// and the largest block as multiples of the threshold.
//
//	go test -run '^$' -bench SealOvershoot -benchtime 5x ./test
func BenchmarkSealOvershoot(b *testing.B) {
	for _, th := range []int{200, 1000, 4000} {
		b.Run(fmt.Sprintf("threshold=%d", th), func(b *testing.B) {
			var sum, n, most int
			for range b.N {
				cfg := realConfig(b, ringpipe.BackendAuto)
				cfg.Logger = zap.NewNop()
				cfg.SealThreshold = th
				e := start(b, cfg)
				sp := createSpace(b, e, "s", 2, 16)
				const writers = 64
				per := 25 * th / writers
				var wg sync.WaitGroup
				ctx := ctxFor(b)
				val := make([]byte, 100)
				for w := range writers {
					wg.Go(func() {
						for i := range per {
							if _, err := e.Put(ctx, sp, ringpipe.Point{uint32(w), uint32(i)}, val); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				require.NoError(b, e.Stop(context.Background()))
				r, err := ring.New(ring.Options{Kind: ring.Std, Entries: 4})
				require.NoError(b, err)
				st, err := snapshot.Load(ring.NewSync(r), cfg.Dir)
				r.Close() //nolint:errcheck // nothing in flight
				require.NoError(b, err)
				for _, m := range st.Index(sp).Blocks() {
					sum += int(m.Count)
					n++
					most = max(most, int(m.Count))
				}
			}
			if n > 0 {
				b.ReportMetric(float64(sum)/float64(n)/float64(th), "mean×T")
				b.ReportMetric(float64(most)/float64(th), "max×T")
				b.ReportMetric(float64(n)/float64(b.N), "blocks/run")
			}
		})
	}
}
