package ringpipe_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/internal/baseline"
)

// The engine's benchmarks, beside two plain durable logs for scale, in one
// run:
//
//	go test -run '^$' -bench . .
//
//   - BenchmarkPut/writers=N/{uring,std}: durable Puts of 100-byte values,
//     b.N in all spread over N goroutines.
//   - BenchmarkGroupLog/writers=N and BenchmarkSyncLoop/writers=N: the same
//     load on internal/baseline's logs (one flusher doing pwrite+fdatasync
//     of whatever gathered; one pwrite+fdatasync per record under a mutex).
//   - BenchmarkPutAsync/{uring,std}: one goroutine queues b.N Puts, then
//     waits for every ticket.
//   - BenchmarkGetTail and BenchmarkGetBlock/{uring,std}: point reads of
//     unsealed records, and of records sealed into a block by Flush.
//
// The write benchmarks report recs/s and the p50 and p99 of the per-op
// latency in µs; the engine's also report syncs/rec (fdatasyncs issued per
// write: group commit at work) and staged/rec (writes acknowledged from the
// staging WAL). Files live in b.TempDir(), on the disk under test; the
// engine runs with its default Config but for the backend.

// benchWriters are the concurrent writer counts of the write benchmarks.
var benchWriters = []int{1, 16, 64, 256}

// benchBackends are the engine's I/O backends, benchmarked side by side.
var benchBackends = []struct {
	name    string
	backend ringpipe.Backend
}{
	{"uring", ringpipe.BackendURing},
	{"std", ringpipe.BackendStd},
}

// benchValueSize is every benchmark's value size.
const benchValueSize = 100

// benchTimeout bounds the engine calls of one benchmark run: far above any
// healthy run at the default benchtime, so that a hung engine fails the
// benchmark with a message instead of hitting go test's timeout.
const benchTimeout = 5 * time.Minute

// benchSpec is the space every benchmark writes: 1-D, so a point's key is
// its coordinate and b.N writes go to b.N distinct points.
var benchSpec = ringpipe.SpaceSpec{Name: "bench", Dims: 1, Bits: 32}

// benchValue returns the value written at point i: i in its first 8
// bytes, so that a read can be checked, and a fixed pattern after. A fresh
// slice each time, as an application would hand over.
func benchValue(i int) []byte {
	v := make([]byte, benchValueSize)
	binary.BigEndian.PutUint64(v, uint64(i))
	for j := 8; j < len(v); j++ {
		v[j] = byte(j)
	}
	return v
}

// checkValue fails b unless r is the record benchValue(i) wrote.
func checkValue(tb testing.TB, r ringpipe.Record, i int) {
	if len(r.Value) != benchValueSize || binary.BigEndian.Uint64(r.Value) != uint64(i) {
		tb.Fatalf("point %d: read a value of %d bytes starting %x, want benchValue(%d)", i, len(r.Value), r.Value[:min(8, len(r.Value))], i)
	}
}

// startEngine starts an engine on a fresh directory with the given backend
// and creates benchSpec. A uring backend the kernel refuses skips b.
// REQUIRES: the caller stops the engine (stopEngine).
func startEngine(ctx context.Context, tb testing.TB, backend ringpipe.Backend, lg *zap.Logger) (*ringpipe.Engine, ringpipe.SpaceID) {
	tb.Helper()
	return startEngineConfig(ctx, tb, ringpipe.Config{Backend: backend, Logger: lg})
}

// startEngineConfig is startEngine with more of the Config than the
// backend and logger; Dir is a fresh temporary directory.
func startEngineConfig(ctx context.Context, tb testing.TB, cfg ringpipe.Config) (*ringpipe.Engine, ringpipe.SpaceID) {
	tb.Helper()
	backend := cfg.Backend
	cfg.Dir = tb.TempDir()
	e, err := ringpipe.Start(ctx, cfg)
	if err != nil {
		if backend == ringpipe.BackendURing && strings.Contains(err.Error(), "io_uring") {
			tb.Skipf("io_uring backend unavailable on this kernel, uring benchmark skipped: %v", err)
		}
		tb.Fatalf("start engine (%s): %v", backend, err)
	}
	space, err := e.CreateSpace(ctx, benchSpec)
	if err != nil {
		stopEngine(tb, e)
		tb.Fatalf("create space: %v", err)
	}
	return e, space
}

// stopEngine stops e, failing tb on error.
func stopEngine(tb testing.TB, e *ringpipe.Engine) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.Stop(ctx); err != nil {
		tb.Errorf("stop engine: %v", err)
	}
}

// runWriters performs b.N ops spread over writers goroutines, timing each,
// and reports recs/s and the p50 and p99 latency in µs. op(i) performs the
// i-th op, 0 <= i < b.N; each i is performed once. The timer runs only
// around the ops.
func runWriters(b *testing.B, writers int, op func(i int) error) {
	var next atomic.Int64
	lats := make([][]time.Duration, writers)
	errs := make(chan error, writers) // room for each writer's one error
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := make([]time.Duration, 0, b.N/writers+1)
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					break
				}
				t0 := time.Now()
				if err := op(i); err != nil {
					errs <- fmt.Errorf("op %d: %w", i, err)
					next.Store(int64(b.N)) // stop the other writers
					break
				}
				l = append(l, time.Since(t0))
			}
			lats[w] = l
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "recs/s")
	all := slices.Concat(lats...)
	slices.Sort(all)
	b.ReportMetric(percentileMicros(all, 50), "p50-µs")
	b.ReportMetric(percentileMicros(all, 99), "p99-µs")
}

// percentileMicros returns the q-th percentile (nearest rank) of sorted
// in µs; 0 for none.
func percentileMicros(sorted []time.Duration, q int) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[(len(sorted)-1)*q/100]) / float64(time.Microsecond)
}

// reportWriteStats reports what the engine did for the n writes between
// two Stats: fdatasyncs per write and the share acknowledged from the
// staging WAL. Differences are taken in float64: a counter that went
// backwards (a ring replaced by a restart) shows as negative, not as 2^64.
func reportWriteStats(b *testing.B, before, after ringpipe.Stats, n int) {
	b.ReportMetric((float64(after.Syncs)-float64(before.Syncs))/float64(n), "syncs/rec")
	b.ReportMetric((float64(after.StagedWrites)-float64(before.StagedWrites))/float64(n), "staged/rec")
}

// spotCheck reads back the first, middle and last of the n points written
// with benchValue.
func spotCheck(ctx context.Context, tb testing.TB, e *ringpipe.Engine, space ringpipe.SpaceID, n int) {
	tb.Helper()
	for _, i := range []int{0, n / 2, n - 1} {
		r, err := e.Get(ctx, space, ringpipe.Point{uint32(i)})
		if err != nil {
			tb.Fatalf("get point %d of %d written: %v", i, n, err)
		}
		checkValue(tb, r, i)
	}
}

func BenchmarkPut(b *testing.B) {
	for _, writers := range benchWriters {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			for _, be := range benchBackends {
				b.Run(be.name, func(b *testing.B) {
					ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
					defer cancel()
					e, space := startEngine(ctx, b, be.backend, nil)
					defer stopEngine(b, e)
					before := e.Stats()
					runWriters(b, writers, func(i int) error {
						_, err := e.Put(ctx, space, ringpipe.Point{uint32(i)}, benchValue(i))
						return err
					})
					reportWriteStats(b, before, e.Stats(), b.N)
					spotCheck(ctx, b, e, space, b.N)
				})
			}
		})
	}
}

// BenchmarkGroupLog is BenchmarkPut's load on a group-committing log: the
// best a plain log with one flusher does on this disk.
func BenchmarkGroupLog(b *testing.B) {
	benchLog(b, func(path string) (baseline.Log, error) {
		return baseline.OpenGroupLog(path, ringpipe.DefaultPreallocate)
	})
}

// BenchmarkSyncLoop is BenchmarkPut's load on a log that syncs every
// record on its own: what no group commit costs.
func BenchmarkSyncLoop(b *testing.B) {
	benchLog(b, func(path string) (baseline.Log, error) {
		return baseline.OpenSyncLoop(path, ringpipe.DefaultPreallocate)
	})
}

// benchLog runs the writers=N benchmarks on logs made by open, each file
// preallocated like the engine's logs.
func benchLog(b *testing.B, open func(path string) (baseline.Log, error)) {
	for _, writers := range benchWriters {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "log")
			l, err := open(path)
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				if err := l.Close(); err != nil {
					b.Errorf("close log: %v", err)
				}
			}()
			runWriters(b, writers, func(i int) error { return l.Append(benchValue(i)) })
		})
	}
}

// BenchmarkPutAsync measures queued-write throughput: one goroutine queues
// b.N Puts (blocking only when the write queue is full), then waits for
// every ticket.
func BenchmarkPutAsync(b *testing.B) {
	for _, be := range benchBackends {
		b.Run(be.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
			defer cancel()
			e, space := startEngine(ctx, b, be.backend, nil)
			defer stopEngine(b, e)
			tickets := make([]*ringpipe.Ticket, b.N)
			before := e.Stats()
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				t, err := e.PutAsync(ctx, space, ringpipe.Point{uint32(i)}, benchValue(i))
				if err != nil {
					b.Fatalf("put %d: %v", i, err)
				}
				tickets[i] = t
			}
			revs := make([]ringpipe.Revision, b.N)
			for i, t := range tickets {
				rev, err := t.Wait(ctx)
				if err != nil {
					b.Fatalf("put %d: %v", i, err)
				}
				revs[i] = rev
			}
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "recs/s")
			reportWriteStats(b, before, e.Stats(), b.N)
			// Queued by one goroutine, so accepted in this order.
			if !slices.IsSorted(revs) || len(slices.Compact(revs)) != b.N {
				b.Errorf("revisions of one goroutine's PutAsyncs not strictly increasing")
			}
			spotCheck(ctx, b, e, space, b.N)
		})
	}
}

// getRecords is how many records the read benchmarks look up: below the
// default SealThreshold (16384 records) and SealBytes (4 MiB of 100-byte
// values), so that without a Flush they all stay in the tail.
const getRecords = 10_000

// BenchmarkGetTail reads random points among getRecords unsealed records.
// Reads never touch the ring, so it runs on the default backend only.
func BenchmarkGetTail(b *testing.B) {
	// Set up once for the sub-benchmark's runs: a parent benchmark runs
	// once.
	ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
	defer cancel()
	e, space := startEngine(ctx, b, ringpipe.BackendAuto, nil)
	defer stopEngine(b, e)
	putAll(ctx, b, e, space, getRecords)
	if n := e.Stats().SealedBlocks; n != 0 {
		b.Fatalf("%d blocks sealed while writing %d records: the tail benchmark would read blocks", n, getRecords)
	}
	b.Run(fmt.Sprintf("records=%d", getRecords), func(b *testing.B) {
		benchGets(ctx, b, e, space, getRecords)
	})
}

// BenchmarkGetBlock reads random points among getRecords records that
// Flush sealed into a block.
func BenchmarkGetBlock(b *testing.B) {
	for _, be := range benchBackends {
		b.Run(be.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
			defer cancel()
			e, space := startEngine(ctx, b, be.backend, nil)
			defer stopEngine(b, e)
			putAll(ctx, b, e, space, getRecords)
			if err := e.Flush(ctx, space); err != nil {
				b.Fatalf("flush: %v", err)
			}
			if n := e.Stats().SealedBlocks; n == 0 {
				b.Fatal("Flush returned but Stats().SealedBlocks is 0")
			}
			b.Run(fmt.Sprintf("records=%d", getRecords), func(b *testing.B) {
				benchGets(ctx, b, e, space, getRecords)
			})
		})
	}
}

// benchGets performs b.N Gets of random points among the first n, checking
// each value.
func benchGets(ctx context.Context, b *testing.B, e *ringpipe.Engine, space ringpipe.SpaceID, n int) {
	rng := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		i := rng.IntN(n)
		r, err := e.Get(ctx, space, ringpipe.Point{uint32(i)})
		if err != nil {
			b.Fatalf("get point %d: %v", i, err)
		}
		checkValue(b, r, i)
	}
}

// asyncWindow is how many PutAsync tickets the bulk writers keep
// outstanding: a quarter of the default write queue, enough for full
// batches, small enough that the writer never holds much in memory.
const asyncWindow = 1024

// window keeps at most asyncWindow PutAsync writes outstanding.
type window struct {
	tickets [asyncWindow]*ringpipe.Ticket
}

// put queues benchValue(i) at point i, first waiting for the write queued
// asyncWindow writes earlier.
func (w *window) put(ctx context.Context, e *ringpipe.Engine, space ringpipe.SpaceID, i int) error {
	slot := &w.tickets[i%asyncWindow]
	if *slot != nil {
		if _, err := (*slot).Wait(ctx); err != nil {
			return fmt.Errorf("put %d: %w", i-asyncWindow, err)
		}
	}
	t, err := e.PutAsync(ctx, space, ringpipe.Point{uint32(i)}, benchValue(i))
	if err != nil {
		return fmt.Errorf("put %d: %w", i, err)
	}
	*slot = t
	return nil
}

// drain waits for every outstanding write.
func (w *window) drain(ctx context.Context) error {
	for j, t := range w.tickets {
		if t == nil {
			continue
		}
		if _, err := t.Wait(ctx); err != nil {
			return fmt.Errorf("put in slot %d: %w", j, err)
		}
		w.tickets[j] = nil
	}
	return nil
}

// putAll writes benchValue(i) at points 0..n-1 and waits until all are
// durable.
func putAll(ctx context.Context, tb testing.TB, e *ringpipe.Engine, space ringpipe.SpaceID, n int) {
	tb.Helper()
	var w window
	for i := range n {
		if err := w.put(ctx, e, space, i); err != nil {
			tb.Fatal(err)
		}
	}
	if err := w.drain(ctx); err != nil {
		tb.Fatal(err)
	}
}

// TestHeapBounded writes 5 million 100-byte records into one space, with
// asyncWindow of them outstanding, and checks that the heap in use (after a
// GC, sampled every 100k writes) stays under 256 MiB: sealing must move
// records out of memory, and nothing may grow with the number of writes.
func TestHeapBounded(t *testing.T) {
	if os.Getenv("RINGPIPE_HEAP") != "1" {
		t.Skip("5 million writes, minutes of disk time; run with: RINGPIPE_HEAP=1 go test -run TestHeapBounded -v -timeout 30m .")
	}
	const (
		writes      = 5_000_000
		sampleEvery = 100_000
		limit       = 256 << 20
	)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	e, space := startEngine(ctx, t, ringpipe.BackendAuto, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	defer stopEngine(t, e)

	var w window
	var maxHeap uint64
	start := time.Now()
	for i := range writes {
		require.NoError(t, w.put(ctx, e, space, i))
		if (i+1)%sampleEvery != 0 {
			continue
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		maxHeap = max(maxHeap, ms.HeapInuse)
		st := e.Stats()
		t.Logf("%d writes: HeapInuse %.1f MiB, %d blocks sealed, %d staged, %d promoted, %d pending promotion",
			i+1, mib(ms.HeapInuse), st.SealedBlocks, st.StagedWrites, st.Promoted, st.StagedPending)
		require.Less(t, ms.HeapInuse, uint64(limit), "HeapInuse after %d writes: %.1f MiB", i+1, mib(ms.HeapInuse))
	}
	require.NoError(t, w.drain(ctx))
	elapsed := time.Since(start)

	st := e.Stats()
	t.Logf("max HeapInuse over %d writes: %.1f MiB (limit %d MiB); %.0f writes/s, %d blocks sealed",
		writes, mib(maxHeap), limit>>20, writes/elapsed.Seconds(), st.SealedBlocks)
	assert.NotZero(t, st.SealedBlocks, "5 million writes sealed no block")
	spotCheck(ctx, t, e, space, writes)
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }
