package latency

import "time"

// Export is a Recorder's distribution for exporters such as a Prometheus
// collector: the count, an approximate sum and the cumulative buckets, all
// taken from one merged histogram at one instant (so Count equals the last
// bucket's count).
type Export struct {
	Count uint64
	// Sum is the sum of the recorded (clamped) durations in seconds, each
	// counted at the middle of its HDR bucket, so within HDR's 0.1% of the
	// true sum. Seconds in a float64, not a Duration: a Duration's int64
	// nanoseconds overflow after 292 years of summed latency, which a
	// long-running engine with slow syncs can reach.
	Sum float64
	// Buckets are the same fixed bounds as Recorder.Buckets.
	Buckets []Bucket
}

// Export returns the count, the approximate sum and the cumulative buckets
// of the durations recorded so far. Like Buckets, it allocates (about
// 1.5 MB, hdrhistogram-go's Distribution) and is meant for a scrape, not
// for a hot path; it walks the histogram once for both the buckets and the
// sum, where Buckets followed by a mean would walk it twice.
func (r *Recorder) Export() Export {
	r.drainMu.Lock()
	defer r.drainMu.Unlock()
	r.drainLocked()
	out := Export{Buckets: make([]Bucket, len(bucketBounds))}
	for i, b := range bucketBounds {
		out.Buckets[i].UpperBound = b
	}
	// Distribution lists HDR's buckets in ascending order (empty ones
	// included) up to the last non-empty one; a sample counts at the first
	// bound at or above the lowest value of its HDR bucket.
	i := 0
	var sumNs float64
	for _, bar := range r.total.Distribution() {
		if bar.Count == 0 {
			continue
		}
		for int64(bucketBounds[i]) < bar.From {
			i++ // NB: cannot run off the end: From <= MaxDuration, the last bound
		}
		out.Buckets[i].Count += uint64(bar.Count)
		out.Count += uint64(bar.Count)
		// The middle of [From, To]; for the one-value buckets below 2048 ns
		// (HDR's exact range) that is the value itself.
		sumNs += float64(bar.Count) * (float64(bar.From) + float64(bar.To-bar.From)/2)
	}
	for i := 1; i < len(out.Buckets); i++ {
		out.Buckets[i].Count += out.Buckets[i-1].Count
	}
	out.Sum = sumNs / float64(time.Second)
	return out
}
