package test

// The Stats and Telemetry audit: the figures an operator graphs must be
// right under load and across events (staged writes and late hot copies,
// seals, actor restarts, failed writes, Stop, a restart). The test counts
// the acknowledged writes itself and holds the engine's counters to them;
// what telemetry_test.go (root package) and metrics/collector_test.go
// already check is not repeated.
//
// Invariants checked at any instant (by 8 goroutines calling Stats and
// Telemetry while 32 writers write): QueueDepth within [0, QueueCapacity],
// P50 <= P99 <= P999 <= Max, cumulative histograms, counters that never go
// down. Invariants checked once the engine is quiet: DirectWrites +
// StagedWrites == the writes acknowledged, WriteLatency.Count too (in
// Stats and in Telemetry), Promoted <= StagedWrites and StagedPending ==
// StagedWrites - Promoted, Syncs >= the batches written, the Stats
// summaries agree with the Telemetry histograms.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/internal/testhook"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
	"github.com/ringpipe/ringpipe/snapshot"
)

// saActors are the actor names Telemetry.Actors lists, in start order.
var saActors = []string{"publisher", "submitter", "completer", "sealer", "promoter"}

// saUnit maps an actor to the actors restarted with it (the supervisor
// restarts a unit: the submitter and the completer share the ring).
var saUnit = map[string][]string{
	"publisher": {"publisher"},
	"submitter": {"submitter", "completer"},
	"completer": {"submitter", "completer"},
	"sealer":    {"sealer"},
	"promoter":  {"promoter"},
}

// saTally counts what the test's writers saw.
type saTally struct {
	acked    atomic.Uint64 // returned nil: acknowledged
	failed   atomic.Uint64 // returned an error from the engine
	rejected atomic.Uint64 // refused up front (bad point, cancelled context)
	// recovered is StagedPending at Start: records recovery staged again
	// from the WAL (they are promoted in this lifetime, not counted in
	// its StagedWrites).
	recovered uint64
}

// saWrite performs one write chosen by rng (Put, Delete, or PutAsync and
// Wait) and tallies its outcome.
func saWrite(ctx context.Context, e *ringpipe.Engine, sp ringpipe.SpaceID, spec ringpipe.SpaceSpec, rng *rand.Rand, i int, c *saTally) error {
	p := randPoint(rng, spec)
	var err error
	switch k := rng.Intn(10); {
	case k < 6:
		_, err = e.Put(ctx, sp, p, fmt.Appendf(nil, "v%d", i))
	case k < 8:
		_, err = e.Delete(ctx, sp, p)
	default:
		var tk *ringpipe.Ticket
		tk, err = e.PutAsync(ctx, sp, p, fmt.Appendf(nil, "a%d", i))
		if err == nil {
			_, err = tk.Wait(ctx)
		}
	}
	if err == nil {
		c.acked.Add(1)
	} else {
		c.failed.Add(1)
	}
	return err
}

// saRejected issues writes the engine must refuse before they are queued
// (a point with the wrong number of coordinates, a context cancelled
// before the call) and tallies them: they are in no counter.
func saRejected(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID, c *saTally) {
	_, err := e.Put(context.Background(), sp, ringpipe.Point{1, 2, 3, 4, 5}, []byte("bad"))
	assert.Error(t, err, "Put of a point with the wrong dimensions")
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err2 := e.Put(cctx, sp, ringpipe.Point{1, 1}, []byte("cancelled"))
	assert.Error(t, err2, "Put with a cancelled context")
	c.rejected.Add(2)
}

// saWriters runs writers goroutines that each do per writes into sp and
// returns once all have returned. stopOnErr ends a writer at its first
// failed write (the engine stopped or failed).
func saWriters(t *testing.T, ctx context.Context, e *ringpipe.Engine, sp ringpipe.SpaceID, spec ringpipe.SpaceSpec, writers, per int, seed int64, c *saTally, stopOnErr bool) {
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewSource(seed*1000 + int64(w)))
			for i := range per {
				if err := saWrite(ctx, e, sp, spec, rng, i, c); err != nil && stopOnErr {
					return
				}
				if i%16 == 15 {
					saRejected(t, e, sp, c)
				}
			}
		})
	}
	wg.Wait()
}

// saCheckSummary asserts a LatencySummary's order.
func saCheckSummary(t *testing.T, what string, s ringpipe.LatencySummary) bool {
	ok := assert.LessOrEqual(t, s.P50, s.P99, "%s: P50 <= P99", what) &&
		assert.LessOrEqual(t, s.P99, s.P999, "%s: P99 <= P999", what) &&
		assert.LessOrEqual(t, s.P999, s.Max, "%s: P999 <= Max", what) &&
		assert.GreaterOrEqual(t, s.P50, time.Duration(0), "%s: P50 >= 0", what)
	if s.Count == 0 {
		ok = ok && assert.Zero(t, s.Max, "%s: Max without samples", what)
	} else {
		ok = ok && assert.Positive(t, s.Max, "%s: Max with %d samples", what, s.Count)
	}
	return ok
}

// saCheckHist asserts a Histogram's shape: ascending bounds, cumulative
// counts, the last at most Count, a sum that is 0 without samples.
func saCheckHist(t *testing.T, what string, h ringpipe.Histogram) bool {
	if !assert.NotEmpty(t, h.Buckets, "%s: buckets", what) {
		return false
	}
	for i := 1; i < len(h.Buckets); i++ {
		if !assert.Greater(t, h.Buckets[i].UpperBound, h.Buckets[i-1].UpperBound, "%s: ascending bounds", what) ||
			!assert.GreaterOrEqual(t, h.Buckets[i].Count, h.Buckets[i-1].Count, "%s: cumulative counts at %v", what, h.Buckets[i].UpperBound) {
			return false
		}
	}
	ok := assert.LessOrEqual(t, h.Buckets[len(h.Buckets)-1].Count, h.Count, "%s: last bucket <= Count", what) &&
		assert.GreaterOrEqual(t, h.Sum, 0.0, "%s: Sum", what)
	if h.Count == 0 {
		ok = ok && assert.Zero(t, h.Sum, "%s: Sum without samples", what)
	}
	return ok
}

// saSnapshot asserts what holds of any Stats and Telemetry at any instant.
func saSnapshot(t *testing.T, st ringpipe.Stats, tel ringpipe.Telemetry) bool {
	ok := assert.GreaterOrEqual(t, st.QueueDepth, 0, "QueueDepth") &&
		assert.LessOrEqual(t, st.QueueDepth, tel.QueueCapacity, "QueueDepth <= QueueCapacity") &&
		assert.Positive(t, tel.QueueCapacity, "QueueCapacity") &&
		assert.GreaterOrEqual(t, st.StagedPending, 0, "StagedPending") &&
		assert.GreaterOrEqual(t, tel.UnsealedRecords, 0, "UnsealedRecords") &&
		saCheckSummary(t, "Stats.WriteLatency", st.WriteLatency) &&
		saCheckSummary(t, "Stats.SyncLatency", st.SyncLatency) &&
		saCheckHist(t, "Telemetry.WriteLatency", tel.WriteLatency) &&
		saCheckHist(t, "Telemetry.SyncLatency", tel.SyncLatency) &&
		saCheckHist(t, "Telemetry.BatchSize", tel.BatchSize) &&
		assert.Equal(t, saActors, tel.Actors, "Telemetry.Actors")
	for name := range st.ActorRestarts {
		ok = ok && assert.Contains(t, saActors, name, "ActorRestarts names an actor")
	}
	return ok
}

// saMonoStats asserts that no counter of Stats went down from prev to cur.
func saMonoStats(t *testing.T, prev, cur ringpipe.Stats) bool {
	ok := assert.GreaterOrEqual(t, cur.DirectWrites, prev.DirectWrites, "DirectWrites went down") &&
		assert.GreaterOrEqual(t, cur.StagedWrites, prev.StagedWrites, "StagedWrites went down") &&
		assert.GreaterOrEqual(t, cur.Promoted, prev.Promoted, "Promoted went down") &&
		assert.GreaterOrEqual(t, cur.SealedBlocks, prev.SealedBlocks, "SealedBlocks went down") &&
		assert.GreaterOrEqual(t, cur.Syncs, prev.Syncs, "Syncs went down") &&
		assert.GreaterOrEqual(t, cur.ShortIORetries, prev.ShortIORetries, "ShortIORetries went down") &&
		assert.GreaterOrEqual(t, cur.WriteLatency.Count, prev.WriteLatency.Count, "WriteLatency.Count went down") &&
		assert.GreaterOrEqual(t, cur.WriteLatency.Max, prev.WriteLatency.Max, "WriteLatency.Max went down") &&
		assert.GreaterOrEqual(t, cur.SyncLatency.Count, prev.SyncLatency.Count, "SyncLatency.Count went down") &&
		assert.GreaterOrEqual(t, cur.SyncLatency.Max, prev.SyncLatency.Max, "SyncLatency.Max went down")
	for name, n := range prev.ActorRestarts {
		ok = ok && assert.GreaterOrEqual(t, cur.ActorRestarts[name], n, "ActorRestarts[%s] went down", name)
	}
	return ok
}

// saMonoHist asserts that no count of h went down from prev to cur.
func saMonoHist(t *testing.T, what string, prev, cur ringpipe.Histogram) bool {
	if !assert.GreaterOrEqual(t, cur.Count, prev.Count, "%s: Count went down", what) ||
		!assert.Len(t, cur.Buckets, len(prev.Buckets), "%s: the same buckets on every call", what) {
		return false
	}
	for i := range cur.Buckets {
		if !assert.Equal(t, prev.Buckets[i].UpperBound, cur.Buckets[i].UpperBound, "%s: the same bounds on every call", what) ||
			!assert.GreaterOrEqual(t, cur.Buckets[i].Count, prev.Buckets[i].Count, "%s: bucket %v went down", what, cur.Buckets[i].UpperBound) {
			return false
		}
	}
	return true
}

// saMonoTel asserts that no counter of Telemetry went down from prev to
// cur, and that Stopped and Failed, once set, stay set.
func saMonoTel(t *testing.T, prev, cur ringpipe.Telemetry) bool {
	return saMonoHist(t, "Telemetry.WriteLatency", prev.WriteLatency, cur.WriteLatency) &&
		saMonoHist(t, "Telemetry.SyncLatency", prev.SyncLatency, cur.SyncLatency) &&
		saMonoHist(t, "Telemetry.BatchSize", prev.BatchSize, cur.BatchSize) &&
		assert.GreaterOrEqual(t, cur.DeadlinesFired, prev.DeadlinesFired, "DeadlinesFired went down") &&
		assert.GreaterOrEqual(t, cur.CQOverflows, prev.CQOverflows, "CQOverflows went down") &&
		assert.GreaterOrEqual(t, cur.InlineCommits, prev.InlineCommits, "InlineCommits went down") &&
		assert.GreaterOrEqual(t, cur.Publishes, prev.Publishes, "Publishes went down") &&
		assert.True(t, cur.Stopped || !prev.Stopped, "Stopped went back to false") &&
		assert.True(t, cur.Failed || !prev.Failed, "Failed went back to false")
}

// saReaders starts n goroutines that call Stats and Telemetry in a loop
// and check each result and its order with the previous one; the
// returned function stops them and returns how many snapshots they took.
// A reader stops checking at its first failure (one report, not
// thousands).
func saReaders(t *testing.T, e *ringpipe.Engine, n int) func() int {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var reads atomic.Int64
	for range n {
		wg.Go(func() {
			prevS, prevT := e.Stats(), e.Telemetry()
			for {
				select {
				case <-done:
					return
				case <-time.After(time.Millisecond):
				}
				st := e.Stats()
				tel := e.Telemetry()
				reads.Add(1)
				if !saSnapshot(t, st, tel) || !saMonoStats(t, prevS, st) || !saMonoTel(t, prevT, tel) {
					t.Logf("reader: stats %+v", st)
					<-done
					return
				}
				prevS, prevT = st, tel
			}
		})
	}
	return func() int {
		// At least one snapshot each, however fast the writers were.
		for reads.Load() < int64(n) {
			time.Sleep(time.Millisecond)
		}
		close(done)
		wg.Wait()
		return int(reads.Load())
	}
}

// saAgree asserts that a Stats summary and the Telemetry histogram behind
// it describe the same samples: the same count, Max in the bucket where
// the cumulative count reaches Count, P50 and P99 at or below the bounds
// where it reaches half and 99% of it, and a sum between Count × 1 µs and
// Count × Max. Tolerances are HDR's precision (0.1%) with room.
func saAgree(t *testing.T, what string, s ringpipe.LatencySummary, h ringpipe.Histogram) {
	t.Helper()
	require.Equal(t, s.Count, h.Count, "%s: Stats and Telemetry count the same samples", what)
	if s.Count == 0 {
		return
	}
	reach := func(n uint64) int {
		for i, b := range h.Buckets {
			if b.Count >= n {
				return i
			}
		}
		return -1
	}
	top := reach(h.Count)
	if assert.GreaterOrEqual(t, top, 0, "%s: no bucket holds every sample", what) {
		assert.LessOrEqual(t, s.Max.Seconds(), h.Buckets[top].UpperBound*1.01, "%s: Max above the bucket where every sample is", what)
		if top > 0 {
			assert.Greater(t, s.Max.Seconds(), h.Buckets[top-1].UpperBound*0.99, "%s: Max at or below a bucket that misses a sample", what)
		}
	}
	if i := reach((h.Count + 1) / 2); assert.GreaterOrEqual(t, i, 0) {
		assert.LessOrEqual(t, s.P50.Seconds(), h.Buckets[i].UpperBound*1.01, "%s: P50 above the bucket holding half the samples", what)
	}
	if i := reach(uint64(math.Ceil(float64(h.Count) * 0.99))); assert.GreaterOrEqual(t, i, 0) {
		assert.LessOrEqual(t, s.P99.Seconds(), h.Buckets[i].UpperBound*1.01, "%s: P99 above the bucket holding 99%% of the samples", what)
	}
	assert.GreaterOrEqual(t, h.Sum, float64(h.Count)*1e-6*0.99, "%s: Sum below Count × 1 µs", what)
	assert.LessOrEqual(t, h.Sum, float64(h.Count)*s.Max.Seconds()*1.01, "%s: Sum above Count × Max", what)
}

// saQuiet asserts the invariants of a quiet engine (no write in flight,
// nothing left to promote or to count) against the writes the test saw
// acknowledged.
func saQuiet(t *testing.T, what string, st ringpipe.Stats, tel ringpipe.Telemetry, c *saTally) {
	t.Helper()
	acked := c.acked.Load()
	saSnapshot(t, st, tel)
	assert.Equal(t, acked, st.DirectWrites+st.StagedWrites,
		"%s: DirectWrites + StagedWrites == acknowledged writes (%d failed and %d rejected count in neither)", what, c.failed.Load(), c.rejected.Load())
	assert.Equal(t, acked, st.WriteLatency.Count, "%s: Stats.WriteLatency.Count == acknowledged writes", what)
	assert.Equal(t, acked, tel.WriteLatency.Count, "%s: Telemetry.WriteLatency.Count == acknowledged writes", what)
	// Fixed: records were counted as staged (StagedPending, then
	// Promoted) whose writes were acknowledged as direct: a rerouted
	// group whose hot copy was acknowledged before its WAL copy
	// registered lost its Completer.groups state, so the WAL copy staged
	// records already in their generation. The state now stays until the
	// WAL copy registers (groupState.walSeen). Records recovery staged
	// again at Start count in StagedPending and Promoted, not in this
	// lifetime's StagedWrites (c.recovered; see Stats' godoc).
	assert.LessOrEqual(t, st.Promoted, c.recovered+st.StagedWrites, "%s: Promoted <= recovered + StagedWrites", what)
	assert.Equal(t, int64(c.recovered+st.StagedWrites)-int64(st.Promoted), int64(st.StagedPending),
		"%s: StagedPending == recovered + StagedWrites - Promoted", what)
	assert.Zero(t, st.QueueDepth, "%s: QueueDepth when idle", what)
	// Each batch (hot, WAL or promotion) is one DSync write, counted as a
	// sync; BatchSize counts hot and WAL batches.
	assert.GreaterOrEqual(t, st.Syncs, tel.BatchSize.Count, "%s: Syncs >= batches written", what)
	assert.GreaterOrEqual(t, st.Syncs, st.SyncLatency.Count, "%s: Syncs >= syncs timed", what)
	assert.GreaterOrEqual(t, tel.BatchSize.Sum, float64(acked), "%s: every acknowledged write was in a batch", what)
	assert.LessOrEqual(t, tel.InlineCommits, acked+c.failed.Load(), "%s: InlineCommits <= writes attempted", what)
	if acked > 0 {
		assert.Positive(t, st.Syncs, "%s: acknowledged writes without a sync", what)
		assert.Positive(t, tel.Publishes, "%s: acknowledged writes without a publish", what)
	}
	saAgree(t, what+": write latency", st.WriteLatency, tel.WriteLatency)
	saAgree(t, what+": sync latency", st.SyncLatency, tel.SyncLatency)
	if t.Failed() {
		t.Logf("%s: acked %d failed %d rejected %d; stats %+v; telemetry unsealed %d deadlines %d inline %d publishes %d batches %d/%v",
			what, acked, c.failed.Load(), c.rejected.Load(), st, tel.UnsealedRecords, tel.DeadlinesFired,
			tel.InlineCommits, tel.Publishes, tel.BatchSize.Count, tel.BatchSize.Sum)
	}
}

// saStagedSettled waits until every staged record is accounted for: the
// quiet condition StagedPending == StagedWrites - Promoted (a record
// staged whose acknowledgement is still on its way is the only transient
// difference), for at most 5 s.
//
// It does not fail by itself: saQuiet, called next, says what is wrong.
func saStagedSettled(e *ringpipe.Engine) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		st := e.Stats()
		if int64(st.StagedPending) == int64(st.StagedWrites)-int64(st.Promoted) && st.QueueDepth == 0 {
			return
		}
		time.Sleep(pollEvery)
	}
}

// saManifestBlocks loads the manifest from disk (the engine stopped) and
// returns the blocks it names, over all spaces.
func saManifestBlocks(t *testing.T, disk *sim.Disk, spaces ...ringpipe.SpaceID) uint64 {
	t.Helper()
	r := disk.NewRing(ring.Options{Entries: 8})
	defer r.Close() //nolint:errcheck // nothing in flight
	state, err := snapshot.Load(ring.NewSync(r), simDir)
	require.NoError(t, err)
	var n uint64
	for _, sp := range spaces {
		metas := state.Index(sp).Blocks()
		n += uint64(len(metas))
		files := filesUnderDisk(disk, snapshot.BlockDir(simDir, sp)+"/")
		assert.Len(t, files, len(metas), "space %d: block files on disk against blocks in the manifest: %v", sp, files)
	}
	return n
}

var saSpec = ringpipe.SpaceSpec{Name: "sa", Dims: 2, Bits: 10}

// TestStatsAuditUnderLoad: 32 writers (Put, Delete, PutAsync, and writes
// the engine must refuse) while 8 goroutines call Stats and Telemetry and
// check every result; then the quiet invariants against the test's own
// count; then a Stop in the middle of a second round of writes: the
// writes it failed are in no counter, and Stats and Telemetry keep their
// last values after it, Telemetry saying Stopped.
func TestStatsAuditUnderLoad(t *testing.T) {
	for _, b := range []ringpipe.Backend{ringpipe.BackendURing, ringpipe.BackendStd} {
		t.Run(b.String(), func(t *testing.T) {
			cfg := realConfig(t, b)
			e, err := ringpipe.Start(ctxFor(t), cfg)
			if b == ringpipe.BackendURing && err != nil {
				t.Skipf("io_uring unavailable: %v", err)
			}
			require.NoError(t, err)
			t.Cleanup(func() { _ = e.Stop(context.Background()) })
			ctx := ctxFor(t)
			sp := createSpace(t, e, saSpec.Name, saSpec.Dims, saSpec.Bits)
			st, tel := e.Stats(), e.Telemetry()
			saSnapshot(t, st, tel)
			assert.Zero(t, st.DirectWrites+st.StagedWrites+st.WriteLatency.Count+tel.WriteLatency.Count, "nothing written yet")
			assert.Zero(t, st.QueueDepth)
			assert.Equal(t, ringpipe.DefaultQueueCapacity, tel.QueueCapacity)

			var c saTally
			stopReaders := saReaders(t, e, 8)
			saWriters(t, ctx, e, sp, saSpec, 32, 24, 1, &c, false)
			require.NoError(t, e.Flush(ctx, sp)) // a seal under the readers' eyes
			reads := stopReaders()
			require.Zero(t, c.failed.Load(), "writes failed on a healthy disk")
			t.Logf("%d writes acknowledged, %d rejected; %d snapshots taken", c.acked.Load(), c.rejected.Load(), reads)

			saStagedSettled(e)
			st, tel = e.Stats(), e.Telemetry()
			saQuiet(t, "after the load", st, tel, &c)
			assert.Equal(t, uint64(1), st.SealedBlocks, "one Flush, one block")
			assert.Zero(t, tel.UnsealedRecords, "Flush sealed everything")

			// Round two: Stop while 32 writers write.
			stopReaders = saReaders(t, e, 8)
			var wg sync.WaitGroup
			base := c.acked.Load()
			wg.Go(func() { saWriters(t, ctx, e, sp, saSpec, 32, 2000, 2, &c, true) })
			waitFor(t, e, "round two under way", func(st ringpipe.Stats) bool {
				return st.DirectWrites+st.StagedWrites >= base+64
			})
			stop(t, e)
			wg.Wait()
			reads = stopReaders()
			t.Logf("after Stop: %d writes acknowledged, %d failed; %d more snapshots", c.acked.Load(), c.failed.Load(), reads)

			st, tel = e.Stats(), e.Telemetry()
			assert.True(t, tel.Stopped, "Telemetry.Stopped after Stop")
			assert.False(t, tel.Failed)
			saQuiet(t, "after Stop under load", st, tel, &c)
			// Nothing counts any more: the values stay.
			time.Sleep(20 * time.Millisecond)
			st2, tel2 := e.Stats(), e.Telemetry()
			assert.Equal(t, st, st2, "Stats after Stop keeps its last values")
			assert.Equal(t, tel, tel2, "Telemetry after Stop keeps its last values")
		})
	}
}

// TestStatsAuditStagedLateCopies: on the simulated disk, the hot file of a
// space is stalled beyond the deadline while 8 writers write into it:
// writes are acknowledged from the staging WAL, and their hot copies land
// late (TestDesignLateDirectWriteAppliedOnce), which counts them as
// promoted. Promotion by the promoter is off (PromoteInterval 1 h) until
// Flush. At every quiet point StagedPending == StagedWrites - Promoted and
// Promoted <= StagedWrites; after Flush everything staged is promoted;
// SealedBlocks equals the blocks the manifest names.
func TestStatsAuditStagedLateCopies(t *testing.T) {
	disk := newSimDisk(t, 301)
	cfg := simConfig(t, disk)
	cfg.SealThreshold = 64
	cfg.PromoteInterval = time.Hour
	e := start(t, cfg)
	ctx := ctxFor(t)
	slow := createSpace(t, e, "slow", saSpec.Dims, saSpec.Bits)
	fast := createSpace(t, e, "fast", saSpec.Dims, saSpec.Bits)
	var c saTally
	stopReaders := saReaders(t, e, 8)

	saWriters(t, ctx, e, fast, saSpec, 8, 10, 3, &c, false)
	stallHot(disk, slow)
	var wg sync.WaitGroup
	wg.Go(func() { saWriters(t, ctx, e, slow, saSpec, 8, 12, 4, &c, false) })
	wg.Go(func() { saWriters(t, ctx, e, fast, saSpec, 8, 12, 5, &c, false) })
	wg.Wait()
	require.Zero(t, c.failed.Load())
	st, tel := e.Stats(), e.Telemetry()
	require.Positive(t, st.StagedWrites, "stalled writes staged (precondition)")
	assert.Positive(t, tel.DeadlinesFired, "deadlines fired")

	// The late hot copies land on the virtual clock; with promotion off,
	// they are the only promotions.
	saStagedSettled(e)
	saQuiet(t, "stalled, late copies landed", e.Stats(), e.Telemetry(), &c)

	disk.ClearFaults()
	saWriters(t, ctx, e, slow, saSpec, 8, 8, 6, &c, false)
	require.NoError(t, e.Flush(ctx, slow)) // promotes what is staged, then seals
	require.NoError(t, e.Flush(ctx, fast))
	stopReaders()
	saStagedSettled(e)
	st, tel = e.Stats(), e.Telemetry()
	saQuiet(t, "after Flush", st, tel, &c)
	assert.Zero(t, st.StagedPending, "Flush promoted every staged record")
	assert.Equal(t, st.StagedWrites, st.Promoted, "every staged write promoted")
	assert.Zero(t, tel.UnsealedRecords, "both spaces flushed")
	t.Logf("stats %+v; deadlines fired %d", st, tel.DeadlinesFired)
	stop(t, e)
	after := e.Stats()
	assert.Equal(t, after.SealedBlocks, saManifestBlocks(t, disk, slow, fast), "SealedBlocks == blocks in the manifest")
}

// TestStatsAuditSealedBlocksWithSealerRestarts: 3 spaces sealed often
// (SealThreshold 16) by 32 writers, with the sealer failing twice in the
// middle of a seal (an error after the block is named in the manifest, a
// panic after the tail shows it). SealedBlocks must still equal the
// blocks the manifest names, and ActorRestarts must say sealer: 2.
func TestStatsAuditSealedBlocksWithSealerRestarts(t *testing.T) {
	disk := newSimDisk(t, 302)
	cfg := simConfig(t, disk)
	cfg.SealThreshold = 16
	var named, shown atomic.Int64
	undo := testhook.SetInjector(func(actor, point string) error {
		switch {
		case actor == "sealer" && point == "named" && named.Add(1) == 2:
			return errors.New("stats audit: injected sealer error after naming the block")
		case actor == "sealer" && point == "shown" && shown.Add(1) == 4:
			panic("stats audit: injected sealer panic after showing the block")
		}
		return nil
	})
	defer undo()
	e := start(t, cfg)
	ctx := ctxFor(t)
	var ids []ringpipe.SpaceID
	for i := range 3 {
		ids = append(ids, createSpace(t, e, fmt.Sprintf("s%d", i), saSpec.Dims, saSpec.Bits))
	}
	var c saTally
	stopReaders := saReaders(t, e, 8)
	var wg sync.WaitGroup
	for i, sp := range ids {
		wg.Go(func() { saWriters(t, ctx, e, sp, saSpec, 10, 20, int64(10+i), &c, false) })
	}
	wg.Wait()
	waitFor(t, e, "both sealer failures restarted", func(st ringpipe.Stats) bool { return st.ActorRestarts["sealer"] >= 2 })
	for _, sp := range ids {
		require.NoError(t, e.Flush(ctx, sp))
	}
	stopReaders()
	require.Zero(t, c.failed.Load(), "writes failed (a sealer failure fails no write)")
	saStagedSettled(e)
	st, tel := e.Stats(), e.Telemetry()
	saQuiet(t, "after seals", st, tel, &c)
	assert.Equal(t, map[string]uint64{"sealer": 2}, st.ActorRestarts, "ActorRestarts names the sealer, twice")
	assert.Zero(t, tel.UnsealedRecords)
	assert.GreaterOrEqual(t, st.SealedBlocks, uint64(4), "seals enough to reach both failures (precondition)")
	stop(t, e)
	after := e.Stats()
	assert.Equal(t, after.SealedBlocks, saManifestBlocks(t, disk, ids...), "SealedBlocks == blocks in the manifest")
}

// TestStatsAuditActorRestarts: one injected failure (an error, then for a
// second engine a panic) in each actor in turn: ActorRestarts names the
// actor (and its unit's other member, restarted with it) with a count of
// 1 and no other, Telemetry.Actors lists them, the engine did not fail,
// and the write counts still match the writes acknowledged (a write the
// failure cut short failed and is in neither).
func TestStatsAuditActorRestarts(t *testing.T) {
	defer testhook.SetNoInline(true)() // every write through the actors and their chaos points
	for i, actor := range saActors {
		for _, panics := range []bool{false, true} {
			name := actor + "/error"
			if panics {
				name = actor + "/panic"
			}
			t.Run(name, func(t *testing.T) {
				disk := newSimDisk(t, int64(400+2*i)+map[bool]int64{false: 0, true: 1}[panics])
				cfg := simConfig(t, disk)
				cfg.SealThreshold = 16 // seals for the sealer
				e := start(t, cfg)
				ctx := ctxFor(t)
				sp := createSpace(t, e, saSpec.Name, saSpec.Dims, saSpec.Bits)
				if actor == "promoter" {
					stallHot(disk, sp) // staged records for the promoter to promote
				}
				var fired atomic.Bool
				undo := testhook.SetInjector(func(a, point string) error {
					if a != actor || !fired.CompareAndSwap(false, true) {
						return nil
					}
					if panics {
						panic(fmt.Sprintf("stats audit: injected panic in %s at %s", a, point))
					}
					return fmt.Errorf("stats audit: injected error in %s at %s", a, point)
				})
				defer undo()
				var c saTally
				deadline := time.Now().Add(hangTimeout)
				for round := 0; e.Stats().ActorRestarts[actor] == 0; round++ {
					require.True(t, time.Now().Before(deadline), "%s not restarted after %d rounds (fired %v); stats %+v",
						actor, round, fired.Load(), e.Stats())
					within(t, "a round of writes", func() {
						saWriters(t, ctx, e, sp, saSpec, 8, 4, int64(round), &c, false)
					})
				}
				undo()
				disk.ClearFaults()
				within(t, "writes after the restart", func() { saWriters(t, ctx, e, sp, saSpec, 8, 4, 99, &c, false) })
				require.NoError(t, e.Flush(ctx, sp))
				saStagedSettled(e)
				st, tel := e.Stats(), e.Telemetry()
				saQuiet(t, "after the restart", st, tel, &c)
				want := make(map[string]uint64)
				for _, a := range saUnit[actor] {
					want[a] = 1
				}
				assert.Equal(t, want, st.ActorRestarts, "ActorRestarts after one failure of %s", actor)
				assert.False(t, tel.Failed, "one failure does not fail the engine")
				t.Logf("acked %d failed %d; stats %+v", c.acked.Load(), c.failed.Load(), st)
				stop(t, e)
			})
		}
	}
}

// TestStatsAuditFailedWrites: the disk fails every write to the data
// files until the engine gives up (ErrFailed); 16 writers write all
// along. The writes that returned an error are in no counter: the counts
// equal the writes acknowledged, in Stats and in Telemetry, and
// Telemetry says Failed. Then Stop: the values stay.
func TestStatsAuditFailedWrites(t *testing.T) {
	disk := newSimDisk(t, 303)
	e := start(t, simConfig(t, disk))
	ctx := ctxFor(t)
	sp := createSpace(t, e, saSpec.Name, saSpec.Dims, saSpec.Bits)
	var c saTally
	saWriters(t, ctx, e, sp, saSpec, 16, 8, 7, &c, false)
	require.Zero(t, c.failed.Load())

	stopReaders := saReaders(t, e, 8)
	disk.Inject(sim.Fault{Kind: sim.EIO, Path: simDir + "/", Persist: true})
	within(t, "writes on a failing disk", func() {
		saWriters(t, ctx, e, sp, saSpec, 16, 200, 8, &c, false)
	})
	stopReaders()
	tel := e.Telemetry()
	require.True(t, tel.Failed, "the engine failed (precondition); %d acked, %d failed", c.acked.Load(), c.failed.Load())
	require.Positive(t, c.failed.Load())
	_, err := e.Put(ctx, sp, ringpipe.Point{1, 1}, []byte("refused"))
	require.ErrorIs(t, err, ringpipe.ErrFailed)
	c.failed.Add(1)
	st := e.Stats()
	t.Logf("acked %d failed %d; stats %+v", c.acked.Load(), c.failed.Load(), st)
	acked := c.acked.Load()
	assert.Equal(t, acked, st.DirectWrites+st.StagedWrites, "DirectWrites + StagedWrites == acknowledged writes on a failed engine")
	assert.Equal(t, acked, st.WriteLatency.Count, "Stats.WriteLatency.Count")
	assert.Equal(t, acked, tel.WriteLatency.Count, "Telemetry.WriteLatency.Count")
	assert.NotEmpty(t, st.ActorRestarts, "restarts before the engine failed")
	saSnapshot(t, st, tel)
	saAgree(t, "failed engine: write latency", st.WriteLatency, tel.WriteLatency)

	sctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	t.Logf("Stop of a failed engine: %v", e.Stop(sctx))
	st2, tel2 := e.Stats(), e.Telemetry()
	assert.True(t, tel2.Stopped)
	assert.True(t, tel2.Failed)
	assert.Equal(t, acked, st2.DirectWrites+st2.StagedWrites, "after Stop")
	assert.Equal(t, acked, st2.WriteLatency.Count, "after Stop")
	assert.Equal(t, acked, tel2.WriteLatency.Count, "after Stop")
	disk.ClearFaults()
}

// TestStatsAuditRestart: what the counters say after a restart. Lifetime
// 1 writes directly, seals one block, then writes into a stalled hot file
// (staged) and the process crashes before the late hot copies land: the
// staged records are durable only in the staging WAL. Lifetime 2 starts
// on the same disk: its write counters, latencies, seals, promotions and
// restarts start from zero in Stats and in Telemetry alike, while the
// gauges (StagedPending, UnsealedRecords) say what is on disk. Once the
// recovered staged records are promoted, the quiet invariants must still
// hold.
func TestStatsAuditRestart(t *testing.T) {
	disk := newSimDisk(t, 304)
	cfg := simConfig(t, disk)
	cfg.PromoteInterval = time.Hour
	e := start(t, cfg)
	ctx := ctxFor(t)
	sp := createSpace(t, e, saSpec.Name, saSpec.Dims, saSpec.Bits)
	var c1 saTally
	saWriters(t, ctx, e, sp, saSpec, 4, 5, 20, &c1, false)
	require.NoError(t, e.Flush(ctx, sp))
	saWriters(t, ctx, e, sp, saSpec, 4, 5, 21, &c1, false) // unsealed, in the hot generation
	stallHot(disk, sp)
	for i := range 3 {
		_, err := e.Put(ctx, sp, ringpipe.Point{1000, uint32(i)}, []byte("staged"))
		require.NoError(t, err)
		c1.acked.Add(1)
	}
	st1 := e.Stats()
	require.Positive(t, st1.StagedWrites, "the stalled writes were staged (precondition)")
	require.Equal(t, uint64(1), st1.SealedBlocks)
	disk.Crash()
	sctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	t.Logf("Stop after a crash: %v", e.Stop(sctx))
	old, oldTel := e.Stats(), e.Telemetry()
	assert.True(t, oldTel.Stopped)
	disk.ClearFaults()

	cfg2 := simConfig(t, disk)
	e2 := start(t, cfg2)
	// The promoter may sync the recovered staged records between the two
	// reads: take a pair no sync came between.
	st, tel := e2.Stats(), e2.Telemetry()
	for i := 0; i < 100 && st.SyncLatency.Count != tel.SyncLatency.Count; i++ {
		time.Sleep(pollEvery)
		st, tel = e2.Stats(), e2.Telemetry()
	}
	t.Logf("lifetime 2 at Start: stats %+v; unsealed %d publishes %d", st, tel.UnsealedRecords, tel.Publishes)
	assert.False(t, tel.Stopped)
	assert.Zero(t, st.DirectWrites, "DirectWrites start from zero")
	assert.Zero(t, st.StagedWrites, "StagedWrites start from zero")
	assert.Zero(t, st.SealedBlocks, "SealedBlocks start from zero (the block of lifetime 1 is not counted)")
	assert.Zero(t, st.WriteLatency.Count, "Stats.WriteLatency starts from zero")
	assert.Zero(t, tel.WriteLatency.Count, "Telemetry.WriteLatency starts from zero")
	assert.Empty(t, st.ActorRestarts, "ActorRestarts start empty")
	assert.Zero(t, tel.InlineCommits)
	assert.Zero(t, tel.DeadlinesFired)
	saAgree(t, "restart: sync latency", st.SyncLatency, tel.SyncLatency)
	assert.Positive(t, tel.UnsealedRecords, "the unsealed records of lifetime 1 are in the live tail again")

	// The recovered staged records are promoted now (default interval).
	var c2 saTally
	// What recovery staged, counted as the Start snapshot saw it (some
	// may have been promoted already).
	c2.recovered = uint64(st.StagedPending) + st.Promoted
	saWriters(t, ctx, e2, sp, saSpec, 4, 5, 22, &c2, false)
	waitFor(t, e2, "the recovered staged records promoted", func(st ringpipe.Stats) bool { return st.StagedPending == 0 })
	st, tel = e2.Stats(), e2.Telemetry()
	// Recovery staged the WAL's records again (StagedPending at Start);
	// their promotion counts in Promoted, not in this lifetime's
	// StagedWrites (before the Stats godoc said so, this was pinned as
	// a violation).
	saQuiet(t, "lifetime 2, quiet", st, tel, &c2)

	// The old engine's figures are its own: unchanged by lifetime 2.
	assert.Equal(t, old, e.Stats(), "a stopped engine's Stats stay after a new engine starts")
	stop(t, e2)
}
