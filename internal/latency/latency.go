// Package latency records durations into an HDR histogram and reports
// percentiles (for Stats) and fixed cumulative buckets (for exporters).
//
// Why an HDR histogram (github.com/HdrHistogram/hdrhistogram-go) and not a
// hand-written one: it gives a bounded relative error (3 significant digits,
// at most 0.1%) over the whole range from 1 µs to 1 min, in constant memory
// that does not grow with the number of samples, and recording is an index
// computation plus an increment. A reservoir or a sorted sample buffer would
// either grow, or lose exactly the tail (P999, Max) these numbers exist to
// show; a log-bucketed counter array written here would re-derive HDR's
// bucket arithmetic with none of its tests.
//
// The range is 1 µs to 1 min: shorter durations (zero and negative ones
// included) are recorded as 1 µs, longer ones as 1 min.
//
// Values are kept in nanoseconds with a lowest discernible value of 1 ns,
// not 1 µs: HDR rounds the lowest discernible value down to a power of two
// (1 µs would become 512 ns steps), which would cost the 3 significant
// digits for everything below about 1 ms, where acknowledged writes and
// fdatasyncs are expected to be. The price is about 220 KB per histogram instead of
// about 150 KB.
package latency

import (
	"math/rand/v2"
	"sync"
	"time"
	"unsafe"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

const (
	// MinDuration is the smallest duration recorded; shorter ones (including
	// zero and negative durations from a clock step) are recorded as
	// MinDuration.
	MinDuration = time.Microsecond
	// MaxDuration is the largest duration recorded; longer ones are recorded
	// as MaxDuration.
	MaxDuration = time.Minute

	// sigFigs is HDR's number of significant decimal digits: values are
	// kept with a relative error of at most 10^-3.
	sigFigs = 3

	// numShards bounds contention on Record: concurrent writers spread over
	// this many mutexes, each held for a few nanoseconds. Eight keeps
	// collisions rare for a few dozen recording goroutines while keeping
	// memory at (numShards+2) × ~220 KB ≈ 2.2 MB per Recorder (the +2 are
	// total and spare).
	// Must be a power of two (the shard is picked with a mask).
	numShards = 8

	// cacheLine is the assumed cache-line size; shards are padded to twice
	// it so that neighbouring shards never share a line, even with
	// adjacent-line prefetching.
	cacheLine = 64
)

// Recorder records durations into an HDR histogram (1 µs .. 1 min, 3
// significant digits). It is safe for concurrent use.
//
// Invariants:
//  1. Every histogram here has the same geometry (newHist), so merging
//     loses nothing.
//  2. Everything recorded so far is in total plus the shards' histograms.
//  3. A shard's max is the largest clamped duration ever recorded in it, in
//     nanoseconds, or 0 when nothing was.
//  4. Summary and Buckets drain each shard at one instant, but not all
//     shards at the same instant: a sample recorded during the call may or
//     may not be counted. Each call is still internally consistent (counts,
//     percentiles and buckets come from one histogram).
//
// NB: Summary and Buckets hold a shard's lock only to swap its histogram
// for an empty one, never for the merge (about 100 µs per shard with
// hdrhistogram-go's Merge, see BenchmarkSummaryAfterRecords), so a Stats
// call or a scrape does not stall the writes whose latency it reports.
type Recorder struct {
	shards [numShards]shard

	// drainMu protects total, the histogram the shards are drained into,
	// and spare, an empty histogram swapped into the next shard drained.
	drainMu sync.Mutex
	total   *hdr.Histogram
	spare   *hdr.Histogram
}

// shard is one independently locked histogram, padded so that two shards
// never share a cache line (Record on one must not slow Record on another).
type shard struct {
	shardState
	_ [2*cacheLine - unsafe.Sizeof(shardState{})%(2*cacheLine)]byte
}

type shardState struct {
	mu  sync.Mutex
	h   *hdr.Histogram // protected by mu
	max int64          // protected by mu; exact, where h.Max is only within HDR's precision
}

func newHist() *hdr.Histogram {
	return hdr.New(1, int64(MaxDuration), sigFigs)
}

// New returns an empty Recorder.
func New() *Recorder {
	r := &Recorder{total: newHist(), spare: newHist()}
	for i := range r.shards {
		r.shards[i].h = newHist()
	}
	return r
}

// Record records one duration. Durations below MinDuration (1 µs) are
// recorded as 1 µs, durations above MaxDuration (1 min) as 1 min. Record
// never panics and never allocates.
func (r *Recorder) Record(d time.Duration) {
	d = min(max(d, MinDuration), MaxDuration)
	v := int64(d)
	// NB: the shard is picked at random with the runtime's per-thread
	// generator, not round-robin from a shared atomic counter: the counter's
	// cache line would move between cores on every Record
	// (BenchmarkRecord -cpu 2, on 2 cores: about 20 ns/op random against
	// about 31 ns/op round-robin).
	s := &r.shards[rand.Uint32()&(numShards-1)]
	s.mu.Lock()
	// NB: the error is impossible: v is clamped into the histogram's range
	// and the total count cannot reach MaxInt64 in practice.
	_ = s.h.RecordValue(v)
	if v > s.max {
		s.max = v
	}
	s.mu.Unlock()
}

// Summary is a point-in-time digest of a Recorder. Percentiles are within
// HDR's precision (0.1%) of the true ones and never exceed Max, which is
// exact (after clamping). The zero Summary means nothing was recorded.
type Summary struct {
	Count               uint64
	P50, P99, P999, Max time.Duration
}

// Summary returns the count, the 50th, 99th and 99.9th percentiles and the
// maximum of the durations recorded so far.
func (r *Recorder) Summary() Summary {
	r.drainMu.Lock()
	defer r.drainMu.Unlock()
	maxV := r.drainLocked()
	h := r.total
	if h.TotalCount() == 0 {
		return Summary{}
	}
	// HDR reports the highest value equivalent to the bucket a percentile
	// falls in, which can lie just above the exact maximum.
	at := func(q float64) time.Duration {
		return time.Duration(min(h.ValueAtQuantile(q), maxV))
	}
	return Summary{
		Count: uint64(h.TotalCount()),
		P50:   at(50),
		P99:   at(99),
		P999:  at(99.9),
		Max:   time.Duration(maxV),
	}
}

// Bucket is one cumulative histogram bucket: Count durations were at most
// UpperBound (within HDR's precision of 0.1%).
type Bucket struct {
	UpperBound time.Duration
	Count      uint64
}

// bucketBounds are the upper bounds Buckets reports: a 1-2-5 ladder from
// MinDuration to MaxDuration. They are fixed so that an exporter's bucket
// labels (Prometheus "le") stay the same from one scrape to the next; the
// last one is MaxDuration, which every recorded (clamped) duration is at
// most.
var bucketBounds = []time.Duration{
	1 * time.Microsecond, 2 * time.Microsecond, 5 * time.Microsecond,
	10 * time.Microsecond, 20 * time.Microsecond, 50 * time.Microsecond,
	100 * time.Microsecond, 200 * time.Microsecond, 500 * time.Microsecond,
	1 * time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond,
	10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond,
	1 * time.Second, 2 * time.Second, 5 * time.Second,
	10 * time.Second, 20 * time.Second, 50 * time.Second,
	MaxDuration,
}

// Buckets returns a merged copy of the histogram for exporters (such as a
// Prometheus collector) as cumulative counts at fixed upper bounds: a 1-2-5
// ladder from 1 µs to 1 min, ascending, the same bounds on every call. The
// last bucket's bound is 1 min and its count is the total count (every
// duration is clamped to at most 1 min), so an exporter's +Inf bucket
// equals it. A sample is counted at the first bound at or above the lowest
// value of its HDR bucket, so a duration exactly on a bound counts there.
//
// Buckets allocates (up to about 1.5 MB, hdrhistogram-go's Distribution);
// it is meant for a scrape, not for a hot path.
func (r *Recorder) Buckets() []Bucket { return r.Export().Buckets }

// drainLocked moves every shard's samples into r.total and returns the
// exact maximum over the shards (0 when nothing was recorded).
//
// REQUIRES: r.drainMu held.
func (r *Recorder) drainLocked() int64 {
	var maxV int64
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		h := s.h
		s.h = r.spare
		maxV = max(maxV, s.max)
		s.mu.Unlock()
		// NB: nothing is dropped: same geometry (invariant 1).
		r.total.Merge(h)
		h.Reset()
		r.spare = h
	}
	return maxV
}
