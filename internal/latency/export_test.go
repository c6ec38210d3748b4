package latency

import (
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestExportEmpty(t *testing.T) {
	x := New().Export()
	assert.Zero(t, x.Count)
	assert.Zero(t, x.Sum)
	require.Len(t, x.Buckets, len(bucketBounds))
	for _, b := range x.Buckets {
		assert.Zero(t, b.Count)
	}
}

// TestExportMatchesBuckets checks that Export's buckets are Buckets' and
// that its sum is within HDR's precision of the exact sum.
func TestExportMatchesBuckets(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	r := New()
	var exact float64
	const n = 20000
	for range n {
		d := time.Duration(rng.ExpFloat64() * float64(300*time.Microsecond))
		d = min(max(d, MinDuration), MaxDuration)
		exact += d.Seconds()
		r.Record(d)
	}
	r.Record(3 * time.Minute) // clamped: adds exactly 1 min
	exact += MaxDuration.Seconds()

	x := r.Export()
	assert.Equal(t, uint64(n+1), x.Count)
	assert.Equal(t, r.Buckets(), x.Buckets, "same buckets as Buckets")
	assert.Equal(t, x.Count, x.Buckets[len(x.Buckets)-1].Count, "last bucket is the count")
	assert.InDelta(t, exact, x.Sum, 0.001*exact, "sum within 0.1%")
}

func TestExportSmallValuesExact(t *testing.T) {
	r := New()
	for _, d := range []time.Duration{time.Microsecond, 1500, 2 * time.Microsecond, 0} {
		r.Record(d) // 0 is clamped to 1 µs
	}
	x := r.Export()
	// Below 2048 ns HDR keeps every nanosecond apart: the sum is exact.
	assert.InDelta(t, 5.5e-6, x.Sum, 1e-12)
	assert.Equal(t, uint64(2), x.Buckets[0].Count, "le 1µs")
	assert.Equal(t, uint64(4), x.Buckets[1].Count, "le 2µs")
}

func TestSizes(t *testing.T) {
	s := NewSizes()
	sizes := []int{-3, 0, 1, 2, 3, 4, 5, 32, 33, 1 << 20, 1<<20 + 1, math.MaxInt32}
	var sum uint64
	for _, n := range sizes {
		s.Add(n)
		sum += uint64(max(n, 0))
	}
	s.Record(7) // a batch of 7, as the actors report it
	sum += 7
	x := s.Export()
	assert.Equal(t, uint64(len(sizes)+1), x.Count)
	assert.Equal(t, sum, x.Sum)
	require.Len(t, x.Buckets, maxSizeExp+1)
	want := map[uint64]uint64{
		1:       3,  // -3, 0, 1
		2:       4,  // 2
		4:       6,  // 3, 4
		8:       8,  // 5, 7
		16:      8,  //
		32:      9,  // 32
		64:      10, // 33
		1 << 19: 10,
		1 << 20: 11, // 2^20; the two above are only in Count
	}
	for i, b := range x.Buckets {
		assert.Equal(t, uint64(1)<<i, b.UpperBound)
		if w, ok := want[b.UpperBound]; ok {
			assert.Equal(t, w, b.Count, "le %d", b.UpperBound)
		}
		if i > 0 {
			assert.GreaterOrEqual(t, b.Count, x.Buckets[i-1].Count, "cumulative")
		}
	}
}

// TestSizesExact compares every bucket with a count taken from the sizes
// themselves.
func TestSizesExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	s := NewSizes()
	exact := make([]uint64, maxSizeExp+1)
	for range 5000 {
		n := rng.IntN(3000) + 1
		s.Add(n)
		for i := range exact {
			if uint64(n) <= 1<<i {
				exact[i]++
			}
		}
	}
	for i, b := range s.Export().Buckets {
		assert.Equal(t, exact[i], b.Count, "le %d", b.UpperBound)
	}
}

func TestSizesConcurrent(t *testing.T) {
	const writers, per = 4, 5000
	s := NewSizes()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range per {
				s.Add(w + i%64)
			}
		})
	}
	// An Export racing the adds stays cumulative and bounded.
	for range 100 {
		x := s.Export()
		assert.LessOrEqual(t, x.Count, uint64(writers*per))
		for i := 1; i < len(x.Buckets); i++ {
			assert.GreaterOrEqual(t, x.Buckets[i].Count, x.Buckets[i-1].Count)
		}
	}
	wg.Wait()
	x := s.Export()
	assert.Equal(t, uint64(writers*per), x.Count)
	assert.Equal(t, uint64(writers*per), x.Buckets[len(x.Buckets)-1].Count)
}

// BenchmarkExport measures an exporter's scrape of a Recorder.
func BenchmarkExport(b *testing.B) {
	r := New()
	rng := rand.New(rand.NewPCG(11, 12))
	for range 100000 {
		r.Record(time.Duration(rng.ExpFloat64() * float64(200*time.Microsecond)))
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = r.Export()
	}
}

// BenchmarkSizesAdd measures a batch-size sample on the submitter's path.
func BenchmarkSizesAdd(b *testing.B) {
	s := NewSizes()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		s.Add(n & 63)
		n++
	}
}
