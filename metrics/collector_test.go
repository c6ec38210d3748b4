package metrics

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ringpipe/ringpipe"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// opTimeout bounds one engine call: generous, for -race on two cores.
const opTimeout = 20 * time.Second

func ctxFor(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

// startEngine starts an engine in a temporary directory with a hot-segment
// deadline far above any sync, so that every write is direct and the
// counts are exact. It returns nil when the backend is unavailable.
func startEngine(t *testing.T, backend ringpipe.Backend) *ringpipe.Engine {
	t.Helper()
	e, err := ringpipe.Start(ctxFor(t), ringpipe.Config{Dir: t.TempDir(), Backend: backend,
		Preallocate: 1 << 20, DirectWriteTimeout: 10 * time.Second})
	if backend == ringpipe.BackendURing && err != nil {
		t.Skipf("io_uring unavailable: %v", err)
	}
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Stop(ctxFor(t)) })
	return e
}

// put writes n records from writers goroutines, each to a point of its
// own, and requires every one to succeed.
func put(t *testing.T, e *ringpipe.Engine, space ringpipe.SpaceID, writers, n int) {
	t.Helper()
	ctx := ctxFor(t)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := w; i < n; i += writers {
				_, err := e.Put(ctx, space, ringpipe.Point{uint32(i % 256), uint32(i / 256)}, []byte("value"))
				assert.NoError(t, err, "Put %d", i)
			}
		})
	}
	wg.Wait()
}

// gathered is one Gather's result, by metric name.
type gathered map[string]*dto.MetricFamily

func gather(t *testing.T, reg *prometheus.Registry) gathered {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err, "Gather")
	g := gathered{}
	for _, mf := range mfs {
		g[mf.GetName()] = mf
	}
	return g
}

// metric returns the one metric of family name whose labels include want
// (name=value pairs).
func (g gathered) metric(t *testing.T, name string, want ...string) *dto.Metric {
	t.Helper()
	mf, ok := g[name]
	require.True(t, ok, "no metric %s", name)
	var found []*dto.Metric
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				match = false
			}
		}
		if match {
			found = append(found, m)
		}
	}
	require.Len(t, found, 1, "%s%v", name, want)
	return found[0]
}

func (g gathered) counter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	assert.Equal(t, dto.MetricType_COUNTER, g[name].GetType(), name)
	return g.metric(t, name, labels...).GetCounter().GetValue()
}

func (g gathered) gauge(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	assert.Equal(t, dto.MetricType_GAUGE, g[name].GetType(), name)
	return g.metric(t, name, labels...).GetGauge().GetValue()
}

// histogram returns the histogram called name after checking its shape:
// ascending bounds, cumulative counts, none above the sample count.
func (g gathered) histogram(t *testing.T, name string) *dto.Histogram {
	t.Helper()
	assert.Equal(t, dto.MetricType_HISTOGRAM, g[name].GetType(), name)
	h := g.metric(t, name).GetHistogram()
	bs := h.GetBucket()
	require.NotEmpty(t, bs, "%s: buckets", name)
	for i := 1; i < len(bs); i++ {
		assert.Greater(t, bs[i].GetUpperBound(), bs[i-1].GetUpperBound(), "%s: ascending bounds", name)
		assert.GreaterOrEqual(t, bs[i].GetCumulativeCount(), bs[i-1].GetCumulativeCount(),
			"%s: monotone bucket counts", name)
	}
	assert.LessOrEqual(t, bs[len(bs)-1].GetCumulativeCount(), h.GetSampleCount(), "%s: last bucket", name)
	return h
}

// TestCollector writes records with each backend and checks every metric
// against what was written, after a Flush and after Stop.
func TestCollector(t *testing.T) {
	for _, backend := range []ringpipe.Backend{ringpipe.BackendURing, ringpipe.BackendStd} {
		t.Run(backend.String(), func(t *testing.T) {
			e := startEngine(t, backend)
			space, err := e.CreateSpace(ctxFor(t), ringpipe.SpaceSpec{Name: "grid", Dims: 2, Bits: 8})
			require.NoError(t, err)
			const n = 300
			put(t, e, space, 8, n)

			reg := prometheus.NewRegistry()
			c := NewCollector(e, WithConstLabels(prometheus.Labels{"db": "test"}))
			require.NoError(t, reg.Register(c))
			g := gather(t, reg)

			// Every metric carries the const label.
			for name, mf := range g {
				for _, m := range mf.GetMetric() {
					var db string
					for _, lp := range m.GetLabel() {
						if lp.GetName() == "db" {
							db = lp.GetValue()
						}
					}
					assert.Equal(t, "test", db, "%s: const label", name)
				}
			}

			assert.Equal(t, float64(n), g.counter(t, "ringpipe_writes_total", "path", "direct"))
			assert.Zero(t, g.counter(t, "ringpipe_writes_total", "path", "staged"))
			assert.Zero(t, g.counter(t, "ringpipe_promoted_records_total"))
			assert.Zero(t, g.counter(t, "ringpipe_sealed_blocks_total"))
			syncs := g.counter(t, "ringpipe_syncs_total")
			assert.Positive(t, syncs)
			assert.Zero(t, g.counter(t, "ringpipe_io_deadlines_fired_total"))
			assert.Equal(t, float64(e.Telemetry().InlineCommits), g.counter(t, "ringpipe_inline_commits_total"))
			assert.LessOrEqual(t, g.counter(t, "ringpipe_inline_commits_total"), float64(n))
			// Every write was published; a burst of them once.
			assert.GreaterOrEqual(t, g.counter(t, "ringpipe_publishes_total"), 1.0)
			assert.LessOrEqual(t, g.counter(t, "ringpipe_publishes_total"), float64(e.Telemetry().Publishes))
			for _, a := range []string{"publisher", "submitter", "completer", "sealer", "promoter"} {
				assert.Zero(t, g.counter(t, "ringpipe_actor_restarts_total", "actor", a), a)
			}
			assert.Len(t, g["ringpipe_actor_restarts_total"].GetMetric(), 5)

			assert.Equal(t, float64(ringpipe.DefaultQueueCapacity), g.gauge(t, "ringpipe_queue_capacity"))
			assert.Zero(t, g.gauge(t, "ringpipe_queue_depth"), "every Put returned")
			assert.Zero(t, g.gauge(t, "ringpipe_staged_pending_records"))
			assert.Equal(t, float64(n), g.gauge(t, "ringpipe_unsealed_records"))
			assert.Zero(t, g.gauge(t, "ringpipe_stopped"))
			assert.Zero(t, g.gauge(t, "ringpipe_failed"))
			assert.Equal(t, 1.0, g.gauge(t, "ringpipe_info", "backend", backend.String()))

			wl := g.histogram(t, "ringpipe_write_latency_seconds")
			assert.Equal(t, uint64(n), wl.GetSampleCount(), "one latency sample per write")
			last := wl.GetBucket()[len(wl.GetBucket())-1]
			assert.Equal(t, 60.0, last.GetUpperBound())
			assert.Equal(t, uint64(n), last.GetCumulativeCount(), "every write under a minute")
			assert.Equal(t, 1e-6, wl.GetBucket()[0].GetUpperBound())
			max := e.Stats().WriteLatency.Max.Seconds()
			assert.Greater(t, wl.GetSampleSum(), 0.0)
			assert.LessOrEqual(t, wl.GetSampleSum(), float64(n)*max*1.001, "sum at most n × max")
			sl := g.histogram(t, "ringpipe_sync_latency_seconds")
			assert.Positive(t, sl.GetSampleCount())
			assert.LessOrEqual(t, float64(sl.GetSampleCount()), syncs, "every sync timed was issued")

			if _, ok := g["ringpipe_batch_size_records"]; ok {
				bs := g.histogram(t, "ringpipe_batch_size_records")
				assert.Equal(t, float64(n), bs.GetSampleSum(), "each direct write in one batch")
				assert.Positive(t, bs.GetSampleCount())
				assert.LessOrEqual(t, bs.GetSampleCount(), uint64(n))
			} else {
				t.Log("no ringpipe_batch_size_records: the engine does not record batch sizes")
			}

			problems, err := testutil.CollectAndLint(c)
			require.NoError(t, err)
			assert.Empty(t, problems, "promlint")

			require.NoError(t, e.Flush(ctxFor(t), space))
			g = gather(t, reg)
			assert.Equal(t, 1.0, g.counter(t, "ringpipe_sealed_blocks_total"))
			assert.Zero(t, g.gauge(t, "ringpipe_unsealed_records"), "Flush sealed them")

			require.NoError(t, e.Stop(ctxFor(t)))
			g = gather(t, reg)
			assert.Equal(t, 1.0, g.gauge(t, "ringpipe_stopped"))
			assert.Equal(t, float64(n), g.counter(t, "ringpipe_writes_total", "path", "direct"),
				"a stopped engine reports its last values")
			assert.Equal(t, uint64(n), g.histogram(t, "ringpipe_write_latency_seconds").GetSampleCount())
		})
	}
}

// TestCollectorTwoEngines registers two engines' collectors in one
// registry, told apart by a const label; without it they collide.
func TestCollectorTwoEngines(t *testing.T) {
	a, b := startEngine(t, ringpipe.BackendStd), startEngine(t, ringpipe.BackendStd)
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(NewCollector(a, WithConstLabels(prometheus.Labels{"db": "a"}))))
	require.NoError(t, reg.Register(NewCollector(b, WithConstLabels(prometheus.Labels{"db": "b"}))))
	assert.Error(t, reg.Register(NewCollector(b)), "same metrics without a telling label")

	space, err := a.CreateSpace(ctxFor(t), ringpipe.SpaceSpec{Name: "s", Dims: 2, Bits: 8})
	require.NoError(t, err)
	put(t, a, space, 2, 10)
	g := gather(t, reg)
	assert.Equal(t, 10.0, g.counter(t, "ringpipe_writes_total", "db", "a", "path", "direct"))
	assert.Zero(t, g.counter(t, "ringpipe_writes_total", "db", "b", "path", "direct"))
}

// TestCollectConcurrentWithWrites gathers from two goroutines while
// writers write (for -race), and checks that every scrape is well formed
// and that counters never go down between scrapes.
func TestCollectConcurrentWithWrites(t *testing.T) {
	e := startEngine(t, ringpipe.BackendStd)
	space, err := e.CreateSpace(ctxFor(t), ringpipe.SpaceSpec{Name: "s", Dims: 2, Bits: 8})
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(NewCollector(e)))

	const n = 400
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			var prev float64
			for {
				select {
				case <-done:
					return
				default:
				}
				mfs, err := reg.Gather()
				if !assert.NoError(t, err) {
					return
				}
				for _, mf := range mfs {
					if mf.GetName() != "ringpipe_write_latency_seconds" {
						continue
					}
					h := mf.GetMetric()[0].GetHistogram()
					c := float64(h.GetSampleCount())
					assert.GreaterOrEqual(t, c, prev, "sample count went down")
					assert.LessOrEqual(t, c, float64(n))
					prev = c
				}
			}
		})
	}
	put(t, e, space, 4, n)
	close(done)
	wg.Wait()
	g := gather(t, reg)
	assert.Equal(t, uint64(n), g.histogram(t, "ringpipe_write_latency_seconds").GetSampleCount())
}

// TestHistogramConversion checks the const histogram built from a
// Telemetry histogram bucket by bucket, including an empty one.
func TestHistogramConversion(t *testing.T) {
	desc := prometheus.NewDesc("x_seconds", "x", nil, nil)
	for _, h := range []ringpipe.Histogram{
		{},
		{Count: 5, Sum: 0.0042, Buckets: []ringpipe.HistogramBucket{{UpperBound: 1e-3, Count: 3}, {UpperBound: 1e-2, Count: 4}}},
	} {
		ch := make(chan prometheus.Metric, 1)
		histogram(ch, desc, h)
		var m dto.Metric
		require.NoError(t, (<-ch).Write(&m))
		got := m.GetHistogram()
		assert.Equal(t, h.Count, got.GetSampleCount())
		assert.Equal(t, h.Sum, got.GetSampleSum())
		require.Len(t, got.GetBucket(), len(h.Buckets))
		for i, b := range h.Buckets {
			assert.Equal(t, b.UpperBound, got.GetBucket()[i].GetUpperBound())
			assert.Equal(t, b.Count, got.GetBucket()[i].GetCumulativeCount())
		}
	}
}

// TestInvalidLabelValue: a label value Prometheus refuses becomes a
// gather error, not a panic in Collect.
func TestInvalidLabelValue(t *testing.T) {
	desc := prometheus.NewDesc("x", "x", []string{"kernel"}, nil)
	ch := make(chan prometheus.Metric, 1)
	send(ch, desc)(prometheus.NewConstMetric(desc, prometheus.GaugeValue, 1, "\xff"))
	var m dto.Metric
	err := (<-ch).Write(&m)
	require.Error(t, err)
	assert.Contains(t, strings.ToLower(err.Error()), "utf-8")
}

// BenchmarkGather measures one scrape of an engine's collector (Gather
// through a registry, as promhttp does), after 2000 writes.
func BenchmarkGather(b *testing.B) {
	ctx := context.Background()
	e, err := ringpipe.Start(ctx, ringpipe.Config{Dir: b.TempDir(), Backend: ringpipe.BackendStd, Preallocate: 1 << 20})
	require.NoError(b, err)
	defer e.Stop(ctx) //nolint:errcheck // a benchmark's engine
	space, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "s", Dims: 2, Bits: 8})
	require.NoError(b, err)
	for i := range 2000 {
		_, err := e.PutAsync(ctx, space, ringpipe.Point{uint32(i % 256), uint32(i / 256)}, []byte("value"))
		require.NoError(b, err)
	}
	require.NoError(b, e.Sync(ctx))
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(e))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}
