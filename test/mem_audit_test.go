package test

// The memory audit: workloads under which the Go heap or the goroutine
// count could grow with the data written or with time rather than with the
// unsealed data (README "Memory": "Memory grows with unsealed data, not with
// data written"; root TestHeapBounded measures 5M Puts into one space).
//
// Every test measures the live heap (HeapAlloc after two collections;
// HeapInuse is logged beside it) at several points of its run, and checks
// that between the later points it grew by no more than what the engine
// is allowed to hold more of: unsealed records (Telemetry.UnsealedRecords),
// staged records (Stats.StagedPending), the in-memory part of each new
// sealed block (its index, Bloom filter and View entry: blocks are never
// merged yet, DESIGN.md §3), and on the sim disk the bytes of its files.
// The bounds are generous; what they catch is growth per write, per call
// or per cycle. RINGPIPE_SOAK=1 runs each workload at its larger size.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// memSoak says whether the larger forms run.
func memSoak() bool { return os.Getenv("RINGPIPE_SOAK") == "1" }

// memSize is def, or soak with RINGPIPE_SOAK=1.
func memSize(def, soak int) int {
	if memSoak() {
		return soak
	}
	return def
}

const (
	// memSlack is the fixed allowance between two samples: runtime and
	// test bookkeeping, histograms, the block cache (memCacheBytes), GC
	// noise.
	memSlack = 16 << 20
	// memPerRecord is the allowance per unsealed or staged record beyond
	// its value: point, tree node, slab entry, frame.
	memPerRecord = 1 << 10
	// memPerBlock is the allowance per sealed block (README "Memory": an
	// open block keeps ~28 KiB for 16k records; TestScaleLongRun allows
	// 64 KiB).
	memPerBlock = 64 << 10
	// memCacheBytes is the block cache of the tests' engines: small, so
	// that its filling does not hide growth elsewhere.
	memCacheBytes = 1 << 20
	// memValueSize is the value size of the writes.
	memValueSize = 100
)

// memConfig is a real-directory Config with a small block cache and a
// logger that keeps only warnings (t.Log's buffer is in the heap too).
func memConfig(t *testing.T, b ringpipe.Backend, sealThreshold int) ringpipe.Config {
	t.Helper()
	cfg := realConfig(t, b)
	cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))
	cfg.BlockCacheBytes = memCacheBytes
	cfg.SealThreshold = sealThreshold
	return cfg
}

// memValue is a memValueSize-byte value for write i.
func memValue(i int) []byte {
	v := make([]byte, memValueSize)
	copy(v, fmt.Sprintf("value %09d ", i))
	return v
}

// memSample is one measurement.
type memSample struct {
	label      string
	done       int // writes, calls or cycles so far
	heapAlloc  uint64
	heapInuse  uint64
	unsealed   int
	staged     int
	blocks     uint64
	simBytes   int64 // the sim disk's file bytes (0 on a real directory)
	goroutines int
}

// memMeasure samples the engine's gauges (if e is not nil) and the sim
// disk's size (if disk is not nil), then the live heap after two
// collections.
func memMeasure(e *ringpipe.Engine, disk *sim.Disk, label string, done int) memSample {
	s := memSample{label: label, done: done}
	if e != nil {
		st, tel := e.Stats(), e.Telemetry()
		s.unsealed, s.staged, s.blocks = tel.UnsealedRecords, st.StagedPending, st.SealedBlocks
	}
	if disk != nil {
		s.simBytes = memSimBytes(disk)
	}
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.heapAlloc, s.heapInuse = ms.HeapAlloc, ms.HeapInuse
	s.goroutines = runtime.NumGoroutine()
	return s
}

func (s memSample) String() string {
	return fmt.Sprintf("%s (%d): HeapAlloc %.1f MiB, HeapInuse %.1f MiB, unsealed %d, staged pending %d, blocks %d, sim bytes %.1f MiB, goroutines %d",
		s.label, s.done, mib(s.heapAlloc), mib(s.heapInuse), s.unsealed, s.staged, s.blocks, float64(s.simBytes)/(1<<20), s.goroutines)
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// memCollected collects garbage every 10 ms until (*n) reaches want or
// hangTimeout passes; it says whether it did.
func memCollected(n *atomic.Int64, want int64) bool {
	for end := time.Now().Add(hangTimeout); ; {
		runtime.GC()
		if n.Load() >= want {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// memSimBytes is the bytes of every file on disk (what its heap holds of
// them, once; dirty copies may add to it).
func memSimBytes(disk *sim.Disk) int64 {
	var n int64
	for _, p := range disk.Files() {
		if b, err := disk.ReadFile(p); err == nil {
			n += int64(len(b))
		}
	}
	return n
}

// memAllowed is what the heap may grow by from a to b: the fixed slack, the
// unsealed and staged records added, the blocks sealed and the sim disk's
// growth (twice: volatile and durable copies).
func memAllowed(a, b memSample, valueSize int) int64 {
	recs := max(0, b.unsealed-a.unsealed) + max(0, b.staged-a.staged)
	return memSlack + int64(recs)*int64(memPerRecord+valueSize) +
		int64(b.blocks-a.blocks)*memPerBlock + 2*max(0, b.simBytes-a.simBytes)
}

// memCheckGrowth asserts that the live heap grew from a to b by no more
// than memAllowed, and HeapInuse by no more than twice that.
func memCheckGrowth(t *testing.T, what string, a, b memSample, valueSize int) bool {
	t.Helper()
	allowed := memAllowed(a, b, valueSize)
	grew := int64(b.heapAlloc) - int64(a.heapAlloc)
	t.Logf("%s: %s → %s: live heap %+.1f MiB (allowed %.1f MiB), HeapInuse %+.1f MiB",
		what, a.label, b.label, float64(grew)/(1<<20), float64(allowed)/(1<<20),
		(float64(b.heapInuse)-float64(a.heapInuse))/(1<<20))
	ok := assert.LessOrEqual(t, grew, allowed,
		"%s: live heap grew %.1f MiB from %v to %v, more than unsealed/staged records, blocks and slack explain (%.1f MiB)",
		what, float64(grew)/(1<<20), a, b, float64(allowed)/(1<<20))
	ok = assert.LessOrEqual(t, int64(b.heapInuse)-int64(a.heapInuse), 2*allowed,
		"%s: HeapInuse grew from %v to %v", what, a, b) && ok
	return ok
}

// memSettle waits until everything accepted is durable and promoted, so
// that a sample's gauges are quiet.
func memSettle(t *testing.T, e *ringpipe.Engine) {
	t.Helper()
	require.NoError(t, e.Sync(ctxFor(t)), "Sync")
	waitFor(t, e, "promotion of every staged write", func(st ringpipe.Stats) bool { return st.StagedPending == 0 })
}

// memDrive runs ops lo..hi-1 from writers goroutines (op i on goroutine
// i%writers); an op that returns a ticket is waited for in windows of
// window tickets. It fails the test if an op failed.
func memDrive(t *testing.T, lo, hi, writers, window int, op func(ctx context.Context, i int) (*ringpipe.Ticket, error)) {
	t.Helper()
	ctx := ctxFor(t)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := range writers {
		wg.Go(func() {
			tks := make([]*ringpipe.Ticket, 0, window)
			flush := func() bool {
				for _, tk := range tks {
					if _, err := tk.Wait(ctx); err != nil {
						failed.Add(1)
						assert.NoError(t, err, "ticket")
						return false
					}
				}
				tks = tks[:0]
				return true
			}
			for i := lo + w; i < hi; i += writers {
				tk, err := op(ctx, i)
				if err != nil {
					failed.Add(1)
					assert.NoError(t, err, "op %d", i)
					return
				}
				if tk != nil {
					tks = append(tks, tk)
					if len(tks) == window && !flush() {
						return
					}
				}
			}
			flush()
		})
	}
	lcWait(t, fmt.Sprintf("ops %d..%d", lo, hi), lcDone(&wg))
	require.Zero(t, failed.Load(), "ops failed")
}

// memPhases runs drive(lo, hi) for the ranges [0,n), [n,2n), [2n,4n),
// settles and samples after each, and checks the growth from 2n to 4n.
func memPhases(t *testing.T, e *ringpipe.Engine, what string, n, valueSize int, drive func(lo, hi int)) []memSample {
	t.Helper()
	var samples []memSample
	samples = append(samples, memMeasure(e, nil, "start", 0))
	lo := 0
	for _, hi := range []int{n, 2 * n, 4 * n} {
		drive(lo, hi)
		memSettle(t, e)
		s := memMeasure(e, nil, fmt.Sprintf("%d ops", hi), hi)
		t.Logf("%s: %v", what, s)
		samples = append(samples, s)
		lo = hi
	}
	memCheckGrowth(t, what, samples[2], samples[3], valueSize)
	memLogPerBlock(t, what, samples[1], samples[3])
	return samples
}

// memLogPerBlock logs the heap per sealed block between a and b, when
// blocks were sealed and the unsealed records did not grow: what the
// blocks that are never merged cost in memory, per block.
func memLogPerBlock(t *testing.T, what string, a, b memSample) {
	t.Helper()
	if b.blocks > a.blocks {
		t.Logf("%s: %d blocks sealed from %s to %s, live heap %+.1f KiB per block (unsealed %d → %d)",
			what, b.blocks-a.blocks, a.label, b.label,
			(float64(b.heapAlloc)-float64(a.heapAlloc))/1024/float64(b.blocks-a.blocks), a.unsealed, b.unsealed)
	}
}

// memSamples keeps a test's samples for its later checks.
var memSamples = map[string][]memSample{}

func memSamplesOf(t *testing.T) []memSample { return memSamples[t.Name()] }

// TestMemOverwriteFewKeys (a): 1M writes to 100 points with RINGPIPE_SOAK=1
// (40k by default). Overwrites are sealed into blocks like any write; the
// heap must follow the unsealed records and the blocks' indexes, not the
// number of overwrites.
func TestMemOverwriteFewKeys(t *testing.T) {
	n := memSize(10_000, 250_000)
	e := start(t, memConfig(t, ringpipe.BackendAuto, 2048))
	spec := ringpipe.SpaceSpec{Name: "few", Dims: 1, Bits: 8}
	sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
	memPhases(t, e, "overwrites of 100 points", n, memValueSize, func(lo, hi int) {
		memDrive(t, lo, hi, 8, 64, func(ctx context.Context, i int) (*ringpipe.Ticket, error) {
			return e.PutAsync(ctx, sp, ringpipe.Point{uint32(i % 100)}, memValue(i))
		})
	})
	count := 0
	require.NoError(t, e.Scan(ctxFor(t), sp, fullBox(spec), func(ringpipe.Record) bool { count++; return true }))
	assert.Equal(t, 100, count, "Scan: one live record per point")
	stop(t, e)
}

// TestMemManySpaces (b): 200 spaces, each written a little, round robin,
// with a small SealThreshold so that every space seals again and again.
// Per-space state (hot generations, seal bookkeeping, the View's entry)
// must not grow with each seal beyond the block's own index.
func TestMemManySpaces(t *testing.T) {
	const spaces = 200
	n := memSize(8_000, 200_000)
	e := start(t, memConfig(t, ringpipe.BackendAuto, 64))
	ids := make([]ringpipe.SpaceID, spaces)
	for i := range ids {
		ids[i] = createSpace(t, e, fmt.Sprintf("s%03d", i), 2, 16)
	}
	memSamples[t.Name()] = memPhases(t, e, "200 spaces", n, memValueSize, func(lo, hi int) {
		memDrive(t, lo, hi, 8, 64, func(ctx context.Context, i int) (*ringpipe.Ticket, error) {
			j := i / spaces
			return e.PutAsync(ctx, ids[i%spaces], ringpipe.Point{uint32(j % 65536), uint32(j / 65536)}, memValue(i))
		})
	})
	// Sealing every space must give back what the records held: the
	// heap comes back to the start's, plus the blocks' indexes. (This
	// does not rely on UnsealedRecords, see TestMemUnsealedCountsPromoted.)
	samples := memSamplesOf(t)
	for _, sp := range ids {
		require.NoError(t, e.Flush(ctxFor(t), sp), "Flush %d", sp)
	}
	flushed := memMeasure(e, nil, "every space flushed", 4*n)
	t.Logf("200 spaces: %v", flushed)
	memCheckGrowth(t, "200 spaces, flushed", samples[0], flushed, memValueSize)
	// Every space holds what was written to it.
	total := 0
	for _, sp := range ids {
		require.NoError(t, e.Scan(ctxFor(t), sp, fullBox(ringpipe.SpaceSpec{Dims: 2, Bits: 16}), func(ringpipe.Record) bool { total++; return true }))
	}
	assert.Equal(t, 4*n, total, "records in all spaces")
	stop(t, e)
}

// TestMemDeleteHeavy (c): each writer puts fresh points and deletes each
// one 32 writes later: a sliding window of live points over a stream of
// tombstones. Tombstones go to blocks like any record; the heap must not
// keep them.
func TestMemDeleteHeavy(t *testing.T) {
	const writers, live = 16, 32
	n := memSize(6_000, 150_000)
	e := start(t, memConfig(t, ringpipe.BackendAuto, 2048))
	spec := ringpipe.SpaceSpec{Name: "del", Dims: 2, Bits: 16}
	sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
	pt := func(i int) ringpipe.Point { return ringpipe.Point{uint32(i % 65536), uint32(i / 65536)} }
	// Op i puts point i and deletes point i-writers*live (written by the
	// same goroutine live ops earlier).
	memPhases(t, e, "puts and deletes", n, memValueSize, func(lo, hi int) {
		memDrive(t, lo, hi, writers, 1, func(ctx context.Context, i int) (*ringpipe.Ticket, error) {
			if _, err := e.Put(ctx, sp, pt(i), memValue(i)); err != nil {
				return nil, err
			}
			if d := i - writers*live; d >= 0 {
				if _, err := e.Delete(ctx, sp, pt(d)); err != nil {
					return nil, fmt.Errorf("delete %d: %w", d, err)
				}
			}
			return nil, nil
		})
	})
	count := 0
	require.NoError(t, e.Scan(ctxFor(t), sp, fullBox(spec), func(r ringpipe.Record) bool {
		count++
		return true
	}))
	assert.Equal(t, writers*live, count, "live points after the deletes")
	stop(t, e)
}

// TestMemStalledHotFile (d): a space's hot file stops answering (sim Delay
// fault on its writes and syncs, completions withheld in real time, as in
// the pressure audit) while 8 writers keep calling PutAsync with a short
// ctx each, giving up and trying again when it ends, as a server with a
// request deadline does. The staged backlog must stay within its cap and
// the writers must be held back: the heap, sampled at 1, 2 and 4 seconds
// into the stall, grows only with staged and unsealed records and the sim
// disk's files. When the file answers again, everything is promoted and
// the heap comes back down.
func TestMemStalledHotFile(t *testing.T) {
	stall := time.Duration(memSize(1500, 5000)) * time.Millisecond
	disk := newSimDisk(t, 301)
	hotKey := prHotKey(1) // the first space created gets ID 1
	ctl := newSlowCtl(hotKey)
	cfg := ctl.config(simConfig(t, disk), disk)
	cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel))
	cfg.BlockCacheBytes = memCacheBytes
	// Not start(): its cleanup would keep the Engine reachable.
	e, err := ringpipe.Start(ctxFor(t), cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		if e != nil {
			_ = e.Stop(context.Background())
		}
	})
	t.Cleanup(ctl.normal) // before the Stop above
	spec := ringpipe.SpaceSpec{Name: "stalled", Dims: 2, Bits: 20}
	sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
	require.Equal(t, ringpipe.SpaceID(1), sp)
	for i := range 100 {
		_, err := e.Put(ctxFor(t), sp, ringpipe.Point{0, uint32(i)}, memValue(i))
		require.NoError(t, err)
	}
	before := memMeasure(e, disk, "before the stall", 0)
	t.Logf("%v", before)

	ctl.set(hotKey, prStalled)
	prVirtualDelay(disk, hotPrefix(sp))
	const writers = 8
	var accepted, gaveUp atomic.Int64
	stopW := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stopW:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
				_, err := e.PutAsync(ctx, sp, ringpipe.Point{uint32(1 + w), uint32(i % (1 << 20))}, memValue(i))
				cancel()
				switch {
				case err == nil:
					accepted.Add(1)
				case errors.Is(err, context.DeadlineExceeded):
					gaveUp.Add(1)
				default:
					assert.NoError(t, err, "writer %d PutAsync %d", w, i)
					return
				}
			}
		})
	}
	var samples []memSample
	t0 := time.Now()
	for _, at := range []time.Duration{stall, 2 * stall, 4 * stall} {
		time.Sleep(time.Until(t0.Add(at)))
		s := memMeasure(e, disk, fmt.Sprintf("stalled %v", at), int(accepted.Load()))
		t.Logf("%v; writers gave up %d times; queue %d", s, gaveUp.Load(), e.Stats().QueueDepth)
		assert.LessOrEqual(t, s.staged, prMaxStaged, "staged backlog within its cap")
		samples = append(samples, s)
	}
	close(stopW)
	lcWait(t, "writers", lcDone(&wg))
	memCheckGrowth(t, "stalled hot file", samples[1], samples[2], memValueSize)
	assert.LessOrEqual(t, samples[2].done, prMaxStaged+prMaxHeld+ringpipe.DefaultQueueCapacity+writers,
		"writes accepted while the hot file stalled: bounded by the staged cap, the held writes and the queue")

	ctl.set(hotKey, 0)
	disk.ClearFaults()
	within(t, "Sync after the hot file answers again", func() { assert.NoError(t, e.Sync(ctxFor(t))) })
	if memSoak() {
		// Promoting 64k staged records takes 10-20 s under -race: only
		// the soak form waits for it and seals them.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		require.NoError(t, e.Flush(ctx, sp))
		after := memMeasure(e, disk, "after the stall, flushed", int(accepted.Load()))
		t.Logf("%v", after)
		memCheckGrowth(t, "after the stall, flushed", before, after, memValueSize)
	}
	// After Stop the engine holds nothing: what the heap kept of the stall
	// is the sim disk's files (what is left staged is in the WAL).
	stop(t, e)
	e = nil
	after := memMeasure(nil, disk, "after Stop", int(accepted.Load()))
	t.Logf("%v", after)
	memCheckGrowth(t, "after the stall and Stop", before, after, memValueSize)
}

// TestMemPutAsyncNoWait (e): PutAsync whose tickets nobody waits for. The
// engine must not keep a ticket (or its ack) once the write is durable: a
// finalizer on every 64th ticket must run after a Sync and a collection,
// and the heap follows the unsealed records only.
func TestMemPutAsyncNoWait(t *testing.T) {
	// Promotion works off about 10k staged records a second under -race,
	// and PutAsync floods stage most writes: n stays small.
	n := memSize(6_000, 500_000)
	e := start(t, memConfig(t, ringpipe.BackendAuto, 4096))
	sp := createSpace(t, e, "nowait", 2, 16)
	var marked, finalized atomic.Int64
	memPhases(t, e, "PutAsync without Wait", n, memValueSize, func(lo, hi int) {
		memDrive(t, lo, hi, 4, 1, func(ctx context.Context, i int) (*ringpipe.Ticket, error) {
			tk, err := e.PutAsync(ctx, sp, ringpipe.Point{uint32(i % 65536), uint32(i / 65536)}, memValue(i))
			if err == nil && i%64 == 0 {
				marked.Add(1)
				runtime.SetFinalizer(tk, func(*ringpipe.Ticket) { finalized.Add(1) })
			}
			return nil, err // dropped, never waited for
		})
	})
	ok := memCollected(&finalized, marked.Load()*9/10)
	t.Logf("tickets: %d marked, %d collected", marked.Load(), finalized.Load())
	assert.True(t, ok, "tickets of durable writes still reachable: %d of %d marked ones collected", finalized.Load(), marked.Load())
	st := e.Stats()
	assert.Equal(t, uint64(4*n), st.DirectWrites+st.StagedWrites, "every PutAsync acknowledged")
	stop(t, e)
}

// TestMemViewsAndScans (f): many Views taken and dropped while writes go
// on, then Scans of the whole space (many blocks). Dropped Views must be
// collected (a finalizer on every 16th), and Scans must not keep what
// they read beyond the block cache.
func TestMemViewsAndScans(t *testing.T) {
	views := memSize(1_000, 50_000)
	records := memSize(10_000, 200_000)
	e := start(t, memConfig(t, ringpipe.BackendAuto, 2048))
	spec := ringpipe.SpaceSpec{Name: "views", Dims: 2, Bits: 16}
	sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
	pt := func(i int) ringpipe.Point { return ringpipe.Point{uint32(i % 65536), uint32(i / 65536)} }
	memDrive(t, 0, records, 8, 64, func(ctx context.Context, i int) (*ringpipe.Ticket, error) {
		return e.PutAsync(ctx, sp, pt(i), memValue(i))
	})
	memSettle(t, e)

	var marked, finalized atomic.Int64
	memPhases(t, e, "Views taken and dropped", views, memValueSize, func(lo, hi int) {
		ctx := ctxFor(t)
		for i := lo; i < hi; i++ {
			_, err := e.Put(ctx, sp, pt(records+i%1000), memValue(i))
			require.NoError(t, err)
			v := e.View()
			_, err = v.Get(sp, pt(i%records))
			require.NoError(t, err)
			if i%16 == 0 {
				marked.Add(1)
				runtime.SetFinalizer(v, func(*ringpipe.View) { finalized.Add(1) })
			}
		}
	})
	ok := memCollected(&finalized, marked.Load()*9/10)
	t.Logf("Views: %d marked, %d collected", marked.Load(), finalized.Load())
	assert.True(t, ok, "dropped Views still reachable: %d of %d marked ones collected", finalized.Load(), marked.Load())

	// Scans of the whole space, through the engine and through Views.
	want := records + 1000
	scan := func(k int) {
		count := 0
		var err error
		if k%2 == 0 {
			err = e.Scan(ctxFor(t), sp, fullBox(spec), func(ringpipe.Record) bool { count++; return true })
		} else {
			err = e.View().Scan(sp, fullBox(spec), func(ringpipe.Record) bool { count++; return true })
		}
		require.NoError(t, err)
		require.Equal(t, want, count, "Scan %d: records", k)
	}
	scans := memSize(2, 10)
	var samples []memSample
	done := 0
	for _, upto := range []int{scans, 2 * scans, 4 * scans} {
		for ; done < upto; done++ {
			scan(done)
		}
		s := memMeasure(e, nil, fmt.Sprintf("%d scans", upto), upto)
		t.Logf("Scans of %d records: %v", want, s)
		samples = append(samples, s)
	}
	memCheckGrowth(t, "full Scans", samples[1], samples[2], memValueSize)
	stop(t, e)
}

// TestMemStartStopCycles (g): Start, a Put, Stop, again and again on one
// directory (1000 cycles per backend with RINGPIPE_SOAK=1). After every
// Stop the goroutine count is back where it was before the first Start,
// no Engine stays reachable (a finalizer on each), and the heap after the
// last cycle is within a few MiB of the heap halfway.
func TestMemStartStopCycles(t *testing.T) {
	cycles := memSize(40, 1000)
	for _, b := range []struct {
		name string
		b    ringpipe.Backend
	}{{"uring", ringpipe.BackendURing}, {"std", ringpipe.BackendStd}} {
		t.Run(b.name, func(t *testing.T) {
			cfg := memConfig(t, b.b, 0)
			cfg.Logger = nil // nothing to buffer
			var finalized atomic.Int64
			g0 := runtime.NumGoroutine()
			var samples []memSample
			lateExit, maxLate := 0, 0
			for c := 1; c <= cycles; c++ {
				e, err := ringpipe.Start(ctxFor(t), cfg)
				require.NoError(t, err, "Start %d", c)
				runtime.SetFinalizer(e, func(*ringpipe.Engine) { finalized.Add(1) })
				sp, err := e.CreateSpace(ctxFor(t), ringpipe.SpaceSpec{Name: "cycles", Dims: 1, Bits: 16})
				require.NoError(t, err)
				_, err = e.Put(ctxFor(t), sp, ringpipe.Point{uint32(c)}, memValue(c))
				require.NoError(t, err, "Put in cycle %d", c)
				require.NoError(t, e.Stop(ctxFor(t)), "Stop %d", c)
				e = nil
				if g := runtime.NumGoroutine(); g > g0 {
					// Goroutines still exiting as Stop returned: counted,
					// then waited for.
					// Seen: the completer's AfterFunc goroutine and a
					// supervisor member goroutine, both past their last
					// statement (runnable at the closing brace).
					lateExit++
					maxLate = max(maxLate, g-g0)
					if !until(hangTimeout, func() bool { return runtime.NumGoroutine() <= g0 }) {
						t.Fatalf("cycle %d: %d goroutines %v after Stop, %d before the first Start:\n%s",
							c, runtime.NumGoroutine(), hangTimeout, g0, goroutineDump())
					}
				}
				if c == cycles/4 || c == cycles/2 || c == cycles {
					s := memMeasure(nil, nil, fmt.Sprintf("%d cycles", c), c)
					t.Logf("%v", s)
					samples = append(samples, s)
				}
			}
			t.Logf("%d cycles: goroutines still running as Stop returned in %d (at most %d more than before)", cycles, lateExit, maxLate)
			grew := int64(samples[2].heapAlloc) - int64(samples[1].heapAlloc)
			assert.LessOrEqual(t, grew, int64(4<<20), "live heap grew %.1f MiB over the second half of the cycles: %v → %v",
				float64(grew)/(1<<20), samples[1], samples[2])
			ok := memCollected(&finalized, int64(cycles-1))
			assert.True(t, ok, "stopped Engines still reachable: %d of %d collected", finalized.Load(), cycles)
		})
	}
}

// TestMemStatsTelemetryLoop (h): Stats and Telemetry called in a tight
// loop while a writer overwrites a few points. Each call's garbage is
// garbage: the live heap follows the unsealed records, not the calls.
func TestMemStatsTelemetryLoop(t *testing.T) {
	// Stats calls per step, a Telemetry every 5th: a Stats call costs
	// about 10 ms under -race (its percentiles).
	n := memSize(40, 5_000)
	e := start(t, memConfig(t, ringpipe.BackendAuto, 1024))
	sp := createSpace(t, e, "stats", 1, 8)
	wctx, stopW := context.WithCancel(context.Background())
	defer stopW()
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; wctx.Err() == nil; i++ {
			if _, err := e.Put(wctx, sp, ringpipe.Point{uint32(i % 10)}, memValue(i)); err != nil && wctx.Err() == nil {
				assert.NoError(t, err, "Put %d", i)
				return
			}
		}
	})
	var samples []memSample
	calls := 0
	for _, upto := range []int{n, 2 * n, 4 * n} {
		for ; calls < upto; calls++ {
			st := e.Stats()
			require.NotEmpty(t, st.Backend)
			if calls%5 == 0 {
				tel := e.Telemetry()
				require.NotEmpty(t, tel.Actors)
			}
		}
		s := memMeasure(e, nil, fmt.Sprintf("%d Stats calls", upto), upto)
		t.Logf("%v", s)
		samples = append(samples, s)
	}
	stopW()
	lcWait(t, "writer", lcDone(&wg))
	memCheckGrowth(t, "Stats and Telemetry", samples[1], samples[2], memValueSize)
	stop(t, e)
}

// TestMemUnsealedCountsPromoted: Telemetry.UnsealedRecords is "the number
// of records in hot generations not yet sealed into a block", the gauge
// this audit (and an operator) sizes memory by. Writes staged while a hot
// file is slow (5 ms of real time per op and a missed deadline on each,
// as in the pressure audit) and then promoted into the hot generation are
// such records: nothing is sealed, so every acknowledged write is
// unsealed.
//
// Fixed: before, UnsealedRecords left out promoted records (the submitter
// added to metrics.Unsealed for direct batches only, while a seal
// subtracted the whole generation), so it read 21 here, and 0 after a few
// seals of promoted records. It now adds what each batch added to the
// generation, a promotion's included.
func TestMemUnsealedCountsPromoted(t *testing.T) {
	disk := newSimDisk(t, 302)
	hotKey := prHotKey(1)
	ctl := newSlowCtl(hotKey)
	cfg := ctl.config(simConfig(t, disk), disk)
	cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel))
	e := start(t, cfg)
	t.Cleanup(ctl.normal) // before start's Stop
	sp := createSpace(t, e, "promoted", 2, 16)
	require.Equal(t, ringpipe.SpaceID(1), sp)
	const warm, writers, each = 20, 4, 50
	for i := range warm {
		_, err := e.Put(ctxFor(t), sp, ringpipe.Point{0, uint32(i)}, memValue(i))
		require.NoError(t, err)
	}
	assert.Equal(t, warm, e.Telemetry().UnsealedRecords, "direct writes are unsealed")

	ctl.set(hotKey, 5*time.Millisecond)
	prVirtualDelay(disk, hotPrefix(sp))
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				_, err := e.Put(ctxFor(t), sp, ringpipe.Point{uint32(1 + w), uint32(i)}, memValue(i))
				if !assert.NoError(t, err, "writer %d Put %d", w, i) {
					return
				}
			}
		})
	}
	lcWait(t, "writers", lcDone(&wg))
	ctl.set(hotKey, 0)
	disk.ClearFaults()
	require.NoError(t, e.Sync(ctxFor(t)))
	waitFor(t, e, "promotion of every staged write", func(st ringpipe.Stats) bool {
		return st.StagedPending == 0 && st.Promoted >= st.StagedWrites
	})
	st, tel := e.Stats(), e.Telemetry()
	t.Logf("stats %+v; UnsealedRecords %d", st, tel.UnsealedRecords)
	require.Zero(t, st.SealedBlocks, "nothing sealed (SealThreshold not reached)")
	require.Positive(t, st.Promoted, "writes were staged and promoted")
	assert.Equal(t, warm+writers*each, tel.UnsealedRecords,
		"UnsealedRecords with nothing sealed: every acknowledged write (%d promoted from the staging WAL)", st.Promoted)
	require.NoError(t, e.Flush(ctxFor(t), sp))
	assert.Zero(t, e.Telemetry().UnsealedRecords, "Flush sealed everything")
	stop(t, e)
}
