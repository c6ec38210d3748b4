package ringpipe

import (
	"slices"

	"github.com/ringpipe/ringpipe/internal/latency"
)

// Telemetry is what an exporter, such as the Prometheus collector in the
// module github.com/ringpipe/ringpipe/metrics, needs beyond Stats: the
// histograms' buckets, more gauges and counters, and the engine's state.
//
// Its fields are read one after another, not at one instant: a write that
// completes during the call may show in one figure and not yet in another
// (in WriteLatency and not in BatchSize, say), and Stats, read by a second
// call, may be a few writes ahead or behind.
type Telemetry struct {
	// WriteLatency is the distribution of Put latencies in seconds, from
	// enqueue to the durable acknowledgement: the samples behind
	// Stats.WriteLatency.
	WriteLatency Histogram
	// SyncLatency is the distribution of fdatasync latencies in seconds:
	// the samples behind Stats.SyncLatency.
	SyncLatency Histogram
	// BatchSize is the distribution of records per batch submitted to a
	// hot segment or to the staging WAL, in records. A write whose hot
	// batch missed its deadline counts again in the WAL batch that stages
	// it, so Sum can exceed the writes acknowledged. Promotions are not
	// batches of writes and are not counted. The zero Histogram (nil
	// Buckets) when the engine does not record batch sizes.
	BatchSize Histogram

	// UnsealedRecords is the number of records in hot generations (the
	// active one and those frozen, waiting for the sealer) not yet sealed
	// into a block; Get finds them in the live tail.
	UnsealedRecords int
	// QueueCapacity is the write queue's capacity (Config.QueueCapacity),
	// against which Stats.QueueDepth reads as a fill ratio.
	QueueCapacity int
	// DeadlinesFired counts I/O operations whose deadline
	// (Config.DirectWriteTimeout) passed before they completed; only
	// writes into hot segments carry one: a direct batch (which was then
	// staged instead) or a promotion of staged records (which marked the
	// space slow).
	DeadlinesFired uint64
	// CQOverflows counts the times the kernel's completion queue
	// overflowed and was flushed (io_uring only; always 0 on std).
	CQOverflows uint64
	// InlineCommits counts the Puts and Deletes committed on their
	// caller's goroutine because the pipeline was idle (one writer, or
	// writers far apart); the others went through the write queue and
	// the submitter's group commit. Each is also in Stats' DirectWrites
	// or StagedWrites, or failed.
	InlineCommits uint64
	// Publishes counts the Views the publisher published. It applies the
	// notices that wait together as one burst and publishes once for it,
	// so acknowledged writes per publish says how well that batches.
	Publishes uint64

	// Actors names every actor, in start order, so that an exporter can
	// report a restart count of zero: Stats.ActorRestarts lists only the
	// actors that restarted.
	Actors []string
	// Stopped is true once Stop has been called. The figures then stay at
	// their last values: nothing counts any more.
	Stopped bool
	// Failed is true once an actor exceeded its restart limit: writes
	// return ErrFailed, reads still work.
	Failed bool
}

// Histogram is a cumulative histogram in the shape Prometheus takes:
// Count samples summing to Sum, and Buckets at ascending upper bounds, the
// same bounds on every call. Buckets[i].Count samples were at most
// Buckets[i].UpperBound, so the counts never decrease; the last bucket's
// count is at most Count (samples above every bound are only in Count).
// Units are the field's: seconds for latencies, records for sizes.
type Histogram struct {
	Count   uint64
	Sum     float64
	Buckets []HistogramBucket
}

// HistogramBucket is one cumulative bucket of a Histogram.
type HistogramBucket struct {
	UpperBound float64
	Count      uint64
}

// actorNames are the actors' names as the engine registers them with its
// supervisor (start in engine_run.go), in start order.
var actorNames = []string{"publisher", "submitter", "completer", "sealer", "promoter"}

// Telemetry returns the histograms, gauges and state an exporter needs
// beyond Stats. It is safe to call concurrently with writes and with
// other calls, and after Stop (see Telemetry.Stopped). It costs a few
// milliseconds and allocates a few MB (merging and walking the latency
// histograms), so call it once per scrape, not per write.
func (e *Engine) Telemetry() Telemetry { return e.eng.telemetry() }

func (e *engine) telemetry() Telemetry {
	rs := e.r.Stats()
	t := Telemetry{
		WriteLatency:    latencyHistogram(e.writeLat),
		SyncLatency:     latencyHistogram(e.syncLat),
		UnsealedRecords: int(max(0, e.metrics.Unsealed.Load())),
		QueueCapacity:   cap(e.ch.Writes),
		DeadlinesFired:  rs.DeadlinesFired,
		CQOverflows:     rs.CQOverflows,
		InlineCommits:   e.metrics.InlineCommits.Load(),
		Publishes:       e.metrics.Publishes.Load(),
		Actors:          slices.Clone(actorNames),
		Stopped:         closed(e.stopCh),
		Failed:          closed(e.failed),
	}
	// NB: reading the interface is race-free: the engine sets
	// metrics.BatchSize before any actor starts and never again.
	if s, ok := e.metrics.BatchSize.(*latency.Sizes); ok {
		t.BatchSize = sizesHistogram(s)
	}
	return t
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func latencyHistogram(r *latency.Recorder) Histogram {
	x := r.Export()
	h := Histogram{Count: x.Count, Sum: x.Sum, Buckets: make([]HistogramBucket, len(x.Buckets))}
	for i, b := range x.Buckets {
		h.Buckets[i] = HistogramBucket{UpperBound: b.UpperBound.Seconds(), Count: b.Count}
	}
	return h
}

func sizesHistogram(s *latency.Sizes) Histogram {
	x := s.Export()
	h := Histogram{Count: x.Count, Sum: float64(x.Sum), Buckets: make([]HistogramBucket, len(x.Buckets))}
	for i, b := range x.Buckets {
		h.Buckets[i] = HistogramBucket{UpperBound: float64(b.UpperBound), Count: b.Count}
	}
	return h
}
