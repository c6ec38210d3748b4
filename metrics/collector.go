// Package metrics exports a ringpipe engine's Stats and Telemetry as
// Prometheus metrics.
//
// It is a module of its own (github.com/ringpipe/ringpipe/metrics) so that
// the engine does not force github.com/prometheus/client_golang on
// programs that do not export metrics.
//
//	e, err := ringpipe.Start(ctx, cfg)
//	...
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(metrics.NewCollector(e))
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// The metrics, all under the namespace "ringpipe":
//
//	ringpipe_writes_total{path}              counter   writes acknowledged; path "direct" (from a hot segment) or "staged" (from the staging WAL)
//	ringpipe_promoted_records_total          counter   staged records promoted into their hot segment
//	ringpipe_sealed_blocks_total             counter   seals: hot generations written as blocks
//	ringpipe_syncs_total                     counter   fdatasync/fsync operations issued
//	ringpipe_short_io_retries_total          counter   remainders resubmitted after a short read or write
//	ringpipe_io_deadlines_fired_total        counter   hot-segment writes whose DirectWriteTimeout passed (a direct batch was staged; a promotion marked its space slow)
//	ringpipe_cq_overflows_total              counter   io_uring completion-queue overflows
//	ringpipe_inline_commits_total            counter   Puts and Deletes committed on their caller's goroutine (the pipeline was idle)
//	ringpipe_publishes_total                 counter   Views published (one per burst of durable notices)
//	ringpipe_actor_restarts_total{actor}     counter   restarts by actor
//	ringpipe_queue_depth                     gauge     writes waiting in the write queue
//	ringpipe_queue_capacity                  gauge     the write queue's capacity
//	ringpipe_staged_pending_records          gauge     staged records not yet promoted
//	ringpipe_unsealed_records                gauge     records in hot generations not yet sealed into a block
//	ringpipe_stopped                         gauge     1 once Stop was called
//	ringpipe_failed                          gauge     1 once an actor exceeded its restart limit (writes are refused)
//	ringpipe_info{backend,kernel}            gauge     always 1
//	ringpipe_write_latency_seconds           histogram Put, enqueue to durable acknowledgement
//	ringpipe_sync_latency_seconds            histogram one fdatasync
//	ringpipe_batch_size_records              histogram records per hot-segment or staging-WAL batch
//
// The latency histograms' buckets are a 1-2-5 ladder from 1 µs to 1 min;
// the batch sizes' are the powers of two from 1 to 2^20. The batch-size
// histogram is left out when the engine does not record batch sizes.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringpipe/ringpipe"
)

// namespace prefixes every metric's name.
const namespace = "ringpipe"

// Option configures NewCollector.
type Option func(*options)

type options struct {
	constLabels prometheus.Labels
}

// WithConstLabels adds labels with fixed values to every metric, for
// example {"db": "sensors"} to tell apart two engines in one process
// (registering two collectors without them fails: their metrics collide).
func WithConstLabels(l prometheus.Labels) Option {
	return func(o *options) {
		o.constLabels = make(prometheus.Labels, len(l))
		for k, v := range l {
			o.constLabels[k] = v
		}
	}
}

// collector is the prometheus.Collector behind NewCollector. Its descs are
// made once; Collect builds const metrics from one Stats and one Telemetry
// call each time.
type collector struct {
	e *ringpipe.Engine

	writes, promoted, sealed, syncs, shortIO, deadlines, cqOverflows, inline, publishes, restarts *prometheus.Desc
	queueDepth, queueCap, stagedPending, unsealed, stopped, failed, info                          *prometheus.Desc
	writeLat, syncLat, batchSize                                                                  *prometheus.Desc
}

// NewCollector returns a prometheus.Collector that reports e's Stats and
// Telemetry on every Collect; register it with a prometheus.Registerer.
//
// Collect is safe concurrently with writes and with other Collects. It
// costs what an Engine.Stats and an Engine.Telemetry call cost (a few
// milliseconds and a few MB of short-lived allocations, mostly merging the
// latency histograms), so it suits a scrape every few seconds, not a
// tight loop.
//
// After e.Stop, Collect keeps reporting the engine's last values, with
// ringpipe_stopped at 1: counters do not reset under a scrape that races
// shutdown. The collector holds e; unregister it to let the engine go.
func NewCollector(e *ringpipe.Engine, opts ...Option) prometheus.Collector {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, o.constLabels)
	}
	return &collector{
		e:        e,
		writes:   d("writes_total", "Writes acknowledged, by path: direct (from a hot segment) or staged (from the staging WAL).", "path"),
		promoted: d("promoted_records_total", "Staged records promoted into their space's hot segment."),
		sealed:   d("sealed_blocks_total", "Seals: hot generations written as sorted blocks."),
		syncs:    d("syncs_total", "fdatasync and fsync operations issued."),
		shortIO:  d("short_io_retries_total", "Remainders resubmitted after a short read or write."),
		deadlines: d("io_deadlines_fired_total",
			"Writes into hot segments whose DirectWriteTimeout passed: a direct batch was staged instead; a promotion marked its space slow."),
		cqOverflows: d("cq_overflows_total", "Times the io_uring completion queue overflowed (always 0 on the std backend)."),
		inline: d("inline_commits_total",
			"Puts and Deletes committed on their caller's goroutine because the pipeline was idle; the rest took the write queue."),
		publishes: d("publishes_total",
			"Views published; the publisher publishes once per burst of durable notices, so writes per publish shows its batching."),
		restarts:   d("actor_restarts_total", "Actor restarts by the engine's supervisor.", "actor"),
		queueDepth: d("queue_depth", "Writes waiting in the write queue."),
		queueCap:   d("queue_capacity", "Capacity of the write queue (Config.QueueCapacity)."),
		stagedPending: d("staged_pending_records",
			"Staged records not yet promoted into their hot segment."),
		unsealed: d("unsealed_records", "Records in hot generations not yet sealed into a block."),
		stopped:  d("stopped", "1 once Stop was called; the other metrics then keep their last values."),
		failed:   d("failed", "1 once an actor exceeded its restart limit: writes are refused, reads still work."),
		info:     d("info", "The engine's I/O backend and kernel version; always 1.", "backend", "kernel"),
		writeLat: d("write_latency_seconds", "Write latency, from enqueue to the durable acknowledgement."),
		syncLat:  d("sync_latency_seconds", "Latency of one fdatasync."),
		batchSize: d("batch_size_records",
			"Records per batch submitted to a hot segment or the staging WAL."),
	}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.writes, c.promoted, c.sealed, c.syncs, c.shortIO, c.deadlines, c.cqOverflows, c.inline, c.publishes, c.restarts,
		c.queueDepth, c.queueCap, c.stagedPending, c.unsealed, c.stopped, c.failed, c.info,
		c.writeLat, c.syncLat, c.batchSize,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	// Telemetry first: it merges the latency histograms, which leaves
	// Stats' own merge little to do.
	t := c.e.Telemetry()
	s := c.e.Stats()

	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		send(ch, d)(prometheus.NewConstMetric(d, prometheus.CounterValue, float64(v), labels...))
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		send(ch, d)(prometheus.NewConstMetric(d, prometheus.GaugeValue, v, labels...))
	}
	counter(c.writes, s.DirectWrites, "direct")
	counter(c.writes, s.StagedWrites, "staged")
	counter(c.promoted, s.Promoted)
	counter(c.sealed, s.SealedBlocks)
	counter(c.syncs, s.Syncs)
	counter(c.shortIO, s.ShortIORetries)
	counter(c.deadlines, t.DeadlinesFired)
	counter(c.cqOverflows, t.CQOverflows)
	counter(c.inline, t.InlineCommits)
	counter(c.publishes, t.Publishes)
	// Every actor, so that a restart shows as an increase from 0 and not
	// as a new series; and any name Stats has that Telemetry does not.
	seen := make(map[string]bool, len(t.Actors))
	for _, a := range t.Actors {
		seen[a] = true
		counter(c.restarts, s.ActorRestarts[a], a)
	}
	for a, n := range s.ActorRestarts {
		if !seen[a] {
			counter(c.restarts, n, a)
		}
	}

	gauge(c.queueDepth, float64(s.QueueDepth))
	gauge(c.queueCap, float64(t.QueueCapacity))
	gauge(c.stagedPending, float64(s.StagedPending))
	gauge(c.unsealed, float64(t.UnsealedRecords))
	gauge(c.stopped, boolFloat(t.Stopped))
	gauge(c.failed, boolFloat(t.Failed))
	gauge(c.info, 1, s.Backend, s.KernelVersion)

	histogram(ch, c.writeLat, t.WriteLatency)
	histogram(ch, c.syncLat, t.SyncLatency)
	if t.BatchSize.Buckets != nil {
		histogram(ch, c.batchSize, t.BatchSize)
	}
}

// histogram sends h as a const histogram. h's buckets are already
// cumulative, as Prometheus wants them; its +Inf bucket is h.Count.
func histogram(ch chan<- prometheus.Metric, d *prometheus.Desc, h ringpipe.Histogram) {
	buckets := make(map[float64]uint64, len(h.Buckets))
	for _, b := range h.Buckets {
		buckets[b.UpperBound] = b.Count
	}
	send(ch, d)(prometheus.NewConstHistogram(d, h.Count, h.Sum, buckets))
}

// send returns a function that sends a metric to ch, or, if making it
// failed (a label value that is not valid UTF-8, say a strange kernel
// version), an invalid metric that makes the registry report the error
// instead of the collector panicking in the middle of a scrape.
func send(ch chan<- prometheus.Metric, d *prometheus.Desc) func(prometheus.Metric, error) {
	return func(m prometheus.Metric, err error) {
		if err != nil {
			m = prometheus.NewInvalidMetric(d, err)
		}
		ch <- m
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
