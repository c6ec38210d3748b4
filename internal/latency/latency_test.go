package latency

import (
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// within asserts that got is within rel (relative) of want.
func within(t *testing.T, want, got time.Duration, rel float64, what string) {
	t.Helper()
	diff := math.Abs(float64(got - want))
	assert.LessOrEqual(t, diff, rel*float64(want), "%s: want %v ±%.2f%%, got %v", what, want, rel*100, got)
}

func TestEmpty(t *testing.T) {
	r := New()
	assert.Equal(t, Summary{}, r.Summary())
	bs := r.Buckets()
	require.Len(t, bs, len(bucketBounds))
	for _, b := range bs {
		assert.Zero(t, b.Count, "bucket %v", b.UpperBound)
	}
	assert.Equal(t, MinDuration, bs[0].UpperBound)
	assert.Equal(t, MaxDuration, bs[len(bs)-1].UpperBound)
}

func TestUniformPercentiles(t *testing.T) {
	r := New()
	// 1..10000 µs, each once, in a shuffled order (the shard a sample lands
	// in must not matter).
	vals := rand.New(rand.NewPCG(1, 2)).Perm(10000)
	for _, v := range vals {
		r.Record(time.Duration(v+1) * time.Microsecond)
	}
	s := r.Summary()
	assert.Equal(t, uint64(10000), s.Count)
	within(t, 5000*time.Microsecond, s.P50, 0.01, "P50")
	within(t, 9900*time.Microsecond, s.P99, 0.01, "P99")
	within(t, 9990*time.Microsecond, s.P999, 0.01, "P999")
	assert.Equal(t, 10000*time.Microsecond, s.Max, "Max is exact")
}

func TestTailPercentiles(t *testing.T) {
	// 990 fast writes and 10 slow ones: P50 and P99 see only the fast ones,
	// P999 (rank 999 of 1000) lands in the slow ones.
	r := New()
	for i := range 1000 {
		if i%100 == 7 {
			r.Record(50 * time.Millisecond)
		} else {
			r.Record(100 * time.Microsecond)
		}
	}
	s := r.Summary()
	assert.Equal(t, uint64(1000), s.Count)
	within(t, 100*time.Microsecond, s.P50, 0.001, "P50")
	within(t, 100*time.Microsecond, s.P99, 0.001, "P99")
	within(t, 50*time.Millisecond, s.P999, 0.001, "P999")
	assert.Equal(t, 50*time.Millisecond, s.Max)
}

// TestPrecisionAcrossRange checks the 3 significant digits hold over the
// whole range, including the low microseconds (which a lowest discernible
// value of 1 µs would round to 512 ns steps).
func TestPrecisionAcrossRange(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	ds := []time.Duration{1001, 1500, 3333, 7777, 12345, 98765} // ns
	// Log-uniform over [1 µs, 1 min]; few, since each needs a new ~2 MB
	// Recorder.
	for range 200 {
		d := time.Duration(math.Exp(math.Log(float64(MinDuration)) +
			rng.Float64()*(math.Log(float64(MaxDuration))-math.Log(float64(MinDuration)))))
		ds = append(ds, min(max(d, MinDuration), MaxDuration))
	}
	for _, d := range ds {
		// With one more sample at the top, P50 (rank 1 of 2) is d itself and
		// is not clamped to the exact Max.
		r := New()
		r.Record(d)
		r.Record(MaxDuration)
		s := r.Summary()
		require.Equal(t, uint64(2), s.Count)
		require.Equal(t, MaxDuration, s.Max)
		within(t, d, s.P50, 0.001, "P50 of {d, max}")
		assert.GreaterOrEqual(t, s.P50, d, "HDR reports a bucket's highest value")
	}
}

func TestPercentilesOrderedAndBelowMax(t *testing.T) {
	r := New()
	rng := rand.New(rand.NewPCG(5, 6))
	var exactMax time.Duration
	for range 5000 {
		// Exponential with a 200 µs mean: a long tail.
		d := time.Duration(rng.ExpFloat64() * float64(200*time.Microsecond))
		d = min(max(d, MinDuration), MaxDuration)
		exactMax = max(exactMax, d)
		r.Record(d)
	}
	s := r.Summary()
	assert.LessOrEqual(t, s.P50, s.P99)
	assert.LessOrEqual(t, s.P99, s.P999)
	assert.LessOrEqual(t, s.P999, s.Max)
	assert.Equal(t, exactMax, s.Max)
	// The median of an exponential is mean·ln 2; with 5000 samples the
	// sample median is well within 10% of it.
	within(t, time.Duration(math.Round(float64(200*time.Microsecond)*math.Ln2)), s.P50, 0.10, "P50")
}

func TestClamp(t *testing.T) {
	r := New()
	for _, d := range []time.Duration{0, -5, 500 * time.Nanosecond, math.MinInt64} {
		r.Record(d)
	}
	s := r.Summary()
	assert.Equal(t, Summary{Count: 4, P50: MinDuration, P99: MinDuration, P999: MinDuration, Max: MinDuration}, s)

	r.Record(2 * time.Hour)
	r.Record(math.MaxInt64)
	s = r.Summary()
	assert.Equal(t, uint64(6), s.Count)
	assert.Equal(t, MaxDuration, s.Max)
	assert.Equal(t, MaxDuration, s.P999)
	bs := r.Buckets()
	assert.Equal(t, uint64(4), bs[0].Count, "sub-µs durations count at 1 µs")
	assert.Equal(t, uint64(4), bs[len(bs)-2].Count, "over-range durations count only at 1 min")
	assert.Equal(t, uint64(6), bs[len(bs)-1].Count)
}

func TestConcurrentRecord(t *testing.T) {
	const (
		writers   = 8
		perWriter = 20000
	)
	r := New()
	done := make(chan struct{})
	readerDone := make(chan struct{})
	// A reader merges while the writers record, so -race sees Summary and
	// Buckets against Record.
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-done:
				return
			default:
			}
			s := r.Summary()
			bs := r.Buckets()
			assert.LessOrEqual(t, s.Count, uint64(writers*perWriter))
			assert.LessOrEqual(t, bs[len(bs)-1].Count, uint64(writers*perWriter))
		}
	}()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				// Writer w records (w+1)·1µs .. ; the largest is writer 7's last.
				r.Record(time.Duration(w+1)*time.Microsecond + time.Duration(i)*time.Nanosecond)
			}
		})
	}
	wg.Wait()
	close(done)
	select {
	case <-readerDone:
	case <-time.After(10 * time.Second):
		t.Fatal("reader did not stop")
	}

	s := r.Summary()
	assert.Equal(t, uint64(writers*perWriter), s.Count, "every sample counted")
	assert.Equal(t, writers*time.Microsecond+(perWriter-1)*time.Nanosecond, s.Max)
	bs := r.Buckets()
	assert.Equal(t, uint64(writers*perWriter), bs[len(bs)-1].Count)
}

func TestShardsAndDrain(t *testing.T) {
	const n = 1000
	r := New()
	for i := range n {
		r.Record(time.Duration(i+1) * time.Microsecond)
	}
	// Shards are picked at random: with 1000 samples over 8 shards, an
	// empty shard has a probability of about 8·(7/8)^1000 ≈ 10^-57.
	var sum int64
	for i := range r.shards {
		c := r.shards[i].h.TotalCount()
		assert.NotZero(t, c, "shard %d", i)
		sum += c
	}
	assert.Equal(t, int64(n), sum)
	s := r.Summary()
	assert.Equal(t, uint64(n), s.Count)
	for i := range r.shards {
		assert.Zero(t, r.shards[i].h.TotalCount(), "shard %d drained", i)
	}
	// Draining keeps what was drained, and the exact max.
	r.Record(time.Microsecond)
	s2 := r.Summary()
	assert.Equal(t, s.Count+1, s2.Count)
	assert.Equal(t, n*time.Microsecond, s2.Max)
	assert.Equal(t, s2, r.Summary(), "a Summary with nothing new is the same")
	assert.Equal(t, uint64(n+1), r.Buckets()[len(bucketBounds)-1].Count)
}

func TestBucketsExact(t *testing.T) {
	r := New()
	for _, d := range []time.Duration{
		time.Microsecond,        // le 1µs
		2 * time.Microsecond,    // exactly on a bound: le 2µs
		3 * time.Microsecond,    // le 5µs
		time.Millisecond,        // le 1ms
		1500 * time.Microsecond, // le 2ms
		time.Minute,             // le 1min
		2 * time.Minute,         // clamped: le 1min
	} {
		r.Record(d)
	}
	want := map[time.Duration]uint64{
		time.Microsecond:       1,
		2 * time.Microsecond:   2,
		5 * time.Microsecond:   3,
		500 * time.Microsecond: 3,
		time.Millisecond:       4,
		2 * time.Millisecond:   5,
		50 * time.Second:       5,
		time.Minute:            7,
	}
	for _, b := range r.Buckets() {
		if w, ok := want[b.UpperBound]; ok {
			assert.Equal(t, w, b.Count, "le %v", b.UpperBound)
		}
	}
}

// TestBucketsMatchExactCounts compares Buckets with counts taken from the
// samples themselves; samples within 0.2% of a bound (where HDR's 0.1% may
// put them on either side) are left out.
func TestBucketsMatchExactCounts(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	r := New()
	exact := make([]uint64, len(bucketBounds))
	n := 0
	for n < 20000 {
		d := time.Duration(math.Exp(math.Log(float64(MinDuration)) +
			rng.Float64()*(math.Log(float64(MaxDuration))-math.Log(float64(MinDuration)))))
		d = min(max(d, MinDuration), MaxDuration)
		near := false
		for _, b := range bucketBounds {
			if b != MinDuration && b != MaxDuration && math.Abs(float64(d-b)) <= 0.002*float64(b) {
				near = true
			}
		}
		if near {
			continue
		}
		n++
		r.Record(d)
		for i, b := range bucketBounds {
			if d <= b {
				exact[i]++
			}
		}
	}
	bs := r.Buckets()
	require.Len(t, bs, len(bucketBounds))
	for i, b := range bs {
		assert.Equal(t, bucketBounds[i], b.UpperBound)
		assert.Equal(t, exact[i], b.Count, "le %v", b.UpperBound)
		if i > 0 {
			assert.Greater(t, b.UpperBound, bs[i-1].UpperBound, "ascending bounds")
			assert.GreaterOrEqual(t, b.Count, bs[i-1].Count, "cumulative counts")
		}
	}
	assert.Equal(t, r.Summary().Count, bs[len(bs)-1].Count, "last bucket is the total")
}

func TestShardPadding(t *testing.T) {
	assert.Zero(t, unsafe.Sizeof(shard{})%(2*cacheLine), "a shard fills whole cache-line pairs")
	assert.Zero(t, numShards&(numShards-1), "numShards is a power of two")
}

// BenchmarkRecord measures Record from GOMAXPROCS goroutines at once, as on
// the engine's acknowledgement path.
func BenchmarkRecord(b *testing.B) {
	r := New()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		d := 37 * time.Microsecond
		for pb.Next() {
			r.Record(d)
			d += 13 * time.Nanosecond
		}
	})
}

// BenchmarkRecordSerial measures Record without contention.
func BenchmarkRecordSerial(b *testing.B) {
	r := New()
	b.ReportAllocs()
	d := 37 * time.Microsecond
	for b.Loop() {
		r.Record(d)
		d += 13 * time.Nanosecond
	}
}

// BenchmarkSummary measures a Stats call with nothing recorded since the
// previous one: draining empty shards plus the percentile scans.
func BenchmarkSummary(b *testing.B) {
	r := New()
	rng := rand.New(rand.NewPCG(9, 10))
	for range 100000 {
		r.Record(time.Duration(rng.ExpFloat64() * float64(200*time.Microsecond)))
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = r.Summary()
	}
}

// BenchmarkSummaryAfterRecords measures a Stats call after 10000 new
// samples (exponential, 200 µs mean) spread over every shard: the drain's
// merges dominate. Only the Summary is timed.
func BenchmarkSummaryAfterRecords(b *testing.B) {
	r := New()
	rng := rand.New(rand.NewPCG(13, 14))
	ds := make([]time.Duration, 10000)
	for i := range ds {
		ds[i] = time.Duration(rng.ExpFloat64() * float64(200*time.Microsecond))
	}
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		for _, d := range ds {
			r.Record(d)
		}
		b.StartTimer()
		_ = r.Summary()
	}
}

// BenchmarkBuckets measures an exporter's scrape.
func BenchmarkBuckets(b *testing.B) {
	r := New()
	rng := rand.New(rand.NewPCG(11, 12))
	for range 100000 {
		r.Record(time.Duration(rng.ExpFloat64() * float64(200*time.Microsecond)))
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = r.Buckets()
	}
}
