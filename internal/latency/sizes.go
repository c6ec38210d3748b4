package latency

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// maxSizeExp bounds the sizes Sizes tells apart: buckets are the powers of
// two 1, 2, 4, ..., 2^maxSizeExp. 2^20 (about a million records) is above
// any batch the engine forms today: a WAL batch stops at 4 MiB of frames,
// and even empty records take more than 4 bytes each.
const maxSizeExp = 20

// Sizes counts small non-negative integers (records per batch) into fixed
// power-of-two buckets, for exporters. It is safe for concurrent use and
// lock-free: a Record is two atomic adds.
//
// Why not a Recorder: a Recorder clamps everything below 1 µs to 1 µs, so
// a batch of n records passed as n ns would always read 1000. And batch
// sizes need no HDR precision: a power-of-two ladder answers "how full are
// the batches".
//
// NB: Export loads the counters one by one, not at one instant: a Record
// during an Export may be in the buckets and not in Sum, or the reverse.
// The buckets themselves are always cumulative (non-decreasing), and Count
// is always the last bucket's count.
type Sizes struct {
	// counts[i] counts sizes n with 2^(i-1) < n <= 2^i (counts[0]: n <= 1);
	// counts[maxSizeExp+1] counts sizes above 2^maxSizeExp.
	counts [maxSizeExp + 2]atomic.Uint64
	sum    atomic.Uint64
}

// NewSizes returns an empty Sizes.
func NewSizes() *Sizes { return &Sizes{} }

// Add counts one size n; a negative n counts as 0.
func (s *Sizes) Add(n int) {
	if n < 0 {
		n = 0
	}
	i := 0
	if n > 1 {
		// The smallest i with n <= 2^i.
		i = min(bits.Len(uint(n-1)), maxSizeExp+1)
	}
	s.counts[i].Add(1)
	s.sum.Add(uint64(n))
}

// Record counts one size given as a Duration of n nanoseconds, the way the
// engine's actors report batch sizes through their LatencyRecorder
// interface (actors.Metrics.BatchSize).
func (s *Sizes) Record(d time.Duration) { s.Add(int(d)) }

// SizeBucket is one cumulative bucket: Count sizes were at most UpperBound.
type SizeBucket struct {
	UpperBound uint64
	Count      uint64
}

// SizesExport is a Sizes' distribution for exporters.
type SizesExport struct {
	Count uint64
	Sum   uint64 // the sum of the sizes counted
	// Buckets are cumulative at the bounds 1, 2, 4, ..., 2^20, the same on
	// every call. Sizes above 2^20 are in Count but in no bucket (an
	// exporter's +Inf bucket).
	Buckets []SizeBucket
}

// Export returns the count, sum and cumulative buckets of the sizes counted
// so far.
func (s *Sizes) Export() SizesExport {
	out := SizesExport{Buckets: make([]SizeBucket, maxSizeExp+1)}
	var cum uint64
	for i := range out.Buckets {
		cum += s.counts[i].Load()
		out.Buckets[i] = SizeBucket{UpperBound: 1 << i, Count: cum}
	}
	out.Count = cum + s.counts[maxSizeExp+1].Load()
	out.Sum = s.sum.Load()
	return out
}
