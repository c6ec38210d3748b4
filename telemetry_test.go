package ringpipe

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// checkHistogram asserts h's invariants: ascending bounds, cumulative
// counts, the last at most Count, and a sum between Count times the lowest
// possible sample and Count times the highest. It only asserts, so that a
// goroutine other than the test's may call it.
func checkHistogram(t *testing.T, what string, h Histogram, lo, hi float64) {
	t.Helper()
	if !assert.NotEmpty(t, h.Buckets, "%s: buckets", what) {
		return
	}
	for i := 1; i < len(h.Buckets); i++ {
		assert.Greater(t, h.Buckets[i].UpperBound, h.Buckets[i-1].UpperBound, "%s: ascending bounds", what)
		assert.GreaterOrEqual(t, h.Buckets[i].Count, h.Buckets[i-1].Count, "%s: cumulative counts", what)
	}
	assert.LessOrEqual(t, h.Buckets[len(h.Buckets)-1].Count, h.Count, "%s: last bucket", what)
	assert.GreaterOrEqual(t, h.Sum, float64(h.Count)*lo*0.999, "%s: sum", what)
	assert.LessOrEqual(t, h.Sum, float64(h.Count)*hi*1.001, "%s: sum", what)
}

// TestTelemetry writes on a real directory with each backend and checks
// Telemetry against what was written and against Stats, then after Flush
// and after Stop.
func TestTelemetry(t *testing.T) {
	for _, backend := range []Backend{BackendURing, BackendStd} {
		t.Run(backend.String(), func(t *testing.T) {
			// A deadline far above any sync here, so that every write is
			// direct and the counts below are exact.
			cfg := Config{Dir: t.TempDir(), Backend: backend, Logger: testLogger(t),
				Preallocate: testPrealloc, DirectWriteTimeout: 10 * time.Second}
			e, err := Start(ctxFor(t), cfg)
			if backend == BackendURing && err != nil {
				t.Skipf("io_uring unavailable: %v", err)
			}
			require.NoError(t, err)
			t.Cleanup(func() { _ = e.Stop(ctxFor(t)) })
			space := mustSpace(t, e, "grid")

			tel := e.Telemetry()
			assert.Zero(t, tel.WriteLatency.Count, "nothing written yet")
			assert.Zero(t, tel.UnsealedRecords)
			assert.Equal(t, DefaultQueueCapacity, tel.QueueCapacity)
			assert.Equal(t, []string{"publisher", "submitter", "completer", "sealer", "promoter"}, tel.Actors)
			assert.False(t, tel.Stopped)
			assert.False(t, tel.Failed)

			const writers, per = 8, 25
			const n = writers * per
			_, failed := putTolerant(t, e, space, writers, per, 0)
			require.Empty(t, failed)

			st := e.Stats()
			tel = e.Telemetry()
			require.Equal(t, uint64(n), st.DirectWrites, "every write direct (precondition)")
			require.Zero(t, st.StagedWrites)
			assert.Equal(t, uint64(n), tel.WriteLatency.Count, "one latency sample per write")
			assert.Equal(t, st.WriteLatency.Count, tel.WriteLatency.Count)
			checkHistogram(t, "write latency", tel.WriteLatency, 1e-6, st.WriteLatency.Max.Seconds())
			assert.Positive(t, tel.SyncLatency.Count)
			assert.LessOrEqual(t, tel.SyncLatency.Count, st.Syncs, "every sync timed was issued")
			checkHistogram(t, "sync latency", tel.SyncLatency, 1e-6, st.SyncLatency.Max.Seconds())
			// The last bucket's bound (1 min) is above every sample here.
			last := tel.WriteLatency.Buckets[len(tel.WriteLatency.Buckets)-1]
			assert.Equal(t, 60.0, last.UpperBound)
			assert.Equal(t, uint64(n), last.Count)
			assert.Equal(t, n, tel.UnsealedRecords, "nothing sealed yet")
			assert.Zero(t, tel.DeadlinesFired)
			// Each write was published, some together; CreateSpace
			// published once more.
			assert.Greater(t, tel.Publishes, uint64(1))
			assert.LessOrEqual(t, tel.Publishes, uint64(n+1))

			require.NoError(t, e.Flush(ctxFor(t), space))
			tel = e.Telemetry()
			assert.Zero(t, tel.UnsealedRecords, "Flush sealed them")
			assert.Equal(t, uint64(1), e.Stats().SealedBlocks)

			mustStop(t, e)
			after := e.Telemetry()
			assert.True(t, after.Stopped)
			assert.False(t, after.Failed)
			assert.Equal(t, tel.WriteLatency, after.WriteLatency, "a stopped engine keeps its last values")
			assert.Equal(t, tel.UnsealedRecords, after.UnsealedRecords)
		})
	}
}

// TestTelemetryBatchSize checks the batch-size histogram: every direct
// write is in exactly one hot batch.
func TestTelemetryBatchSize(t *testing.T) {
	e := mustStart(t, Config{Dir: t.TempDir(), Backend: BackendStd, Logger: testLogger(t),
		Preallocate: testPrealloc, DirectWriteTimeout: 10 * time.Second})
	space := mustSpace(t, e, "grid")
	require.NotNil(t, e.Telemetry().BatchSize.Buckets, "the batch-size histogram has no buckets")
	const writers, per = 8, 25
	_, failed := putTolerant(t, e, space, writers, per, 0)
	require.Empty(t, failed)
	require.Zero(t, e.Stats().StagedWrites, "every write direct (precondition)")
	h := e.Telemetry().BatchSize
	assert.Equal(t, float64(writers*per), h.Sum, "each write in one batch")
	assert.Positive(t, h.Count)
	assert.LessOrEqual(t, h.Count, uint64(writers*per))
	checkHistogram(t, "batch size", h, 1, float64(DefaultBatchSize))
}

// TestTelemetryStagedAndRestarts runs on the simulated disk: stalled hot
// syncs fire deadlines (writes go staged), and an I/O error restarts the
// io unit, whose actors Telemetry.Actors must name.
func TestTelemetryStagedAndRestarts(t *testing.T) {
	disk := newTestDisk(t, 61)
	e := mustStart(t, simCfg(t, disk))
	space := mustSpace(t, e, "grid")

	stallHot(disk, space)
	putRange(t, e, space, "stalled", 0, 20)
	disk.ClearFaults()
	st, tel := e.Stats(), e.Telemetry()
	require.Positive(t, st.StagedWrites, "stalled writes were staged (precondition)")
	assert.Positive(t, tel.DeadlinesFired, "the stalled batches' deadlines fired")
	assert.Equal(t, uint64(20), tel.WriteLatency.Count)

	disk.Inject(sim.Fault{Kind: sim.EIO, Path: hotPrefix(space), Ops: []ring.Opcode{ring.OpFdatasync}})
	putTolerant(t, e, space, 4, 10, 1000)
	waitStats(t, e, "the io unit restarted", func(s Stats) bool { return len(s.ActorRestarts) > 0 })
	tel = e.Telemetry()
	for name := range e.Stats().ActorRestarts {
		assert.Contains(t, tel.Actors, name, "Telemetry.Actors names every actor Stats reports")
	}
	assert.False(t, tel.Failed, "one restart does not fail the engine")
}

// TestTelemetryConcurrent calls Telemetry while writers write, for -race,
// and checks each result's invariants.
func TestTelemetryConcurrent(t *testing.T) {
	e := mustStart(t, Config{Dir: t.TempDir(), Backend: BackendStd, Logger: testLogger(t),
		Preallocate: testPrealloc})
	space := mustSpace(t, e, "grid")
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			tel := e.Telemetry()
			checkHistogram(t, "write latency", tel.WriteLatency, 1e-6, 60)
			assert.LessOrEqual(t, tel.WriteLatency.Count, uint64(200))
		}
	})
	_, failed := putTolerant(t, e, space, 4, 50, 0)
	close(done)
	wg.Wait()
	require.Empty(t, failed)
	assert.Equal(t, uint64(200), e.Telemetry().WriteLatency.Count)
}
