package test

// The Telemetry and Prometheus audit: every Telemetry field and every
// exported ringpipe_* metric must mean what its godoc (telemetry.go,
// metrics/collector.go) and README's "Metrics" section say, on the odd
// paths too: staged writes, late hot copies, promotions (under a stalled
// hot file as well), seals and Flush, deadlines, inline commits against
// queued writes, actor restarts, a failed engine, Stop and a restart.
// What test/stats_audit_test.go, telemetry_test.go and
// metrics/collector_test.go check already is not repeated; this file adds
// exact relations on the simulated disk (one writer makes every batch one
// record, so counts are exact), the histograms' sums against their
// buckets, the gauges against the disk after a restart and a crash, and
// the Prometheus text itself.
//
// The metrics module is a module of its own (the engine does not depend
// on Prometheus), so TestTelemetryAuditPrometheus builds a small program
// in a temporary module that requires it (with replace directives to this
// tree) and drives an engine through the same events; the program prints
// each scrape of promhttp's handler together with the Stats and Telemetry
// read just before and just after it, and this test parses the text with
// a parser of its own and holds it to the documented metric set.
//
// Seeds are printed; RINGPIPE_TA_SEED=N replays one.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
)

// taSeed is the seed of a seeded test: $RINGPIPE_TA_SEED or the time.
func taSeed(t *testing.T) int64 { t.Helper(); return envSeed(t, "RINGPIPE_TA_SEED") }

var taSpec = ringpipe.SpaceSpec{Name: "ta", Dims: 2, Bits: 16}

// taLatencyBounds are the latency histograms' documented bounds, seconds:
// a 1-2-5 ladder from 1 µs to 1 min (metrics/collector.go).
var taLatencyBounds = func() []float64 {
	var out []float64
	for e := -6; e <= 1; e++ {
		for _, m := range []float64{1, 2, 5} {
			out = append(out, m*math.Pow10(e))
		}
	}
	return append(out, 60)
}()

// taSizeBounds are the batch-size histogram's documented bounds: the
// powers of two from 1 to 2^20.
var taSizeBounds = func() []float64 {
	var out []float64
	for i := 0; i <= 20; i++ {
		out = append(out, float64(uint64(1)<<i))
	}
	return out
}()

// taHist checks a Histogram against its documented bounds and against its
// own Sum: the samples of bucket i lie in (bound[i-1], bound[i]], so Sum
// is at least Σ n_i·bound[i-1] and at most Σ n_i·bound[i] (with 1% for
// HDR's precision on latencies; sizes are integers, so a size in
// (2^(i-1), 2^i] is at least 2^(i-1)+1). Every sample is at most the last
// bound here, so the last bucket holds Count.
func taHist(t *testing.T, what string, h ringpipe.Histogram, bounds []float64, integer bool) bool {
	t.Helper()
	if !saCheckHist(t, what, h) {
		return false
	}
	got := make([]float64, len(h.Buckets))
	for i, b := range h.Buckets {
		got[i] = b.UpperBound
	}
	ok := assert.InDeltaSlice(t, bounds, got, 1e-12, "%s: the documented bounds", what) &&
		assert.Equal(t, h.Count, h.Buckets[len(h.Buckets)-1].Count, "%s: the last bucket holds every sample", what)
	var lo, hi float64
	var prev uint64
	for i, b := range h.Buckets {
		n := float64(b.Count - prev)
		prev = b.Count
		low := 0.0
		if i > 0 {
			low = h.Buckets[i-1].UpperBound
			if integer {
				low++
			}
		}
		lo += n * low
		hi += n * b.UpperBound
	}
	slack := 1e-9
	if !integer {
		slack = 0.01
	}
	return ok && assert.GreaterOrEqual(t, h.Sum, lo*(1-slack), "%s: Sum below what its buckets hold (%+v)", what, h) &&
		assert.LessOrEqual(t, h.Sum, hi*(1+slack)+1e-12, "%s: Sum above what its buckets hold (%+v)", what, h)
}

// taDelta is what one step of a test changed.
type taDelta struct {
	acked, direct, staged, promoted, deadlines, inline, publishes, batches uint64
	batchSum                                                               float64
}

func taDiff(s0, s1 ringpipe.Stats, t0, t1 ringpipe.Telemetry) taDelta {
	return taDelta{
		acked:     s1.DirectWrites + s1.StagedWrites - s0.DirectWrites - s0.StagedWrites,
		direct:    s1.DirectWrites - s0.DirectWrites,
		staged:    s1.StagedWrites - s0.StagedWrites,
		promoted:  s1.Promoted - s0.Promoted,
		deadlines: t1.DeadlinesFired - t0.DeadlinesFired,
		inline:    t1.InlineCommits - t0.InlineCommits,
		publishes: t1.Publishes - t0.Publishes,
		batches:   t1.BatchSize.Count - t0.BatchSize.Count,
		batchSum:  t1.BatchSize.Sum - t0.BatchSize.Sum,
	}
}

// taPuts makes n sequential Puts (one writer) at points of their own and
// requires each to succeed.
func taPuts(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID, row uint32, n int) {
	t.Helper()
	ctx := ctxFor(t)
	for i := range n {
		_, err := e.Put(ctx, sp, ringpipe.Point{row, uint32(i)}, []byte("ta"))
		require.NoError(t, err, "Put %d/%d", row, i)
	}
}

// TestTelemetryAuditOneWriterExact: one writer on the simulated disk, so
// that every batch holds one record and each figure has an exact value.
//
//   - Direct Puts on an idle pipeline: most are inline commits; each is
//     one hot batch of one record and its own burst: one publish per write.
//   - The hot file stalled (sim Delay 200 ms against the 2 ms deadline)
//     and the promoter held (PromoteInterval 1 h): the first Put's hot
//     batch misses its deadline (DeadlinesFired +1) and is staged again
//     (a second batch of the same record: BatchSize.Sum counts it twice,
//     as documented); the space is then slow, so the next Puts go to the
//     staging WAL without a deadline of their own and are not committed
//     inline. The late hot copy lands and counts as promoted.
//   - Flush with the hot file still stalled: the promotion misses its
//     deadline too (DeadlinesFired counts promotions) and is not a batch
//     of writes (BatchSize unchanged).
//
// At each quiet point the histograms are checked against their documented
// bounds and their sums, and UnsealedRecords + StagedPending equals the
// records written since the last Flush (no record in two places).
func TestTelemetryAuditOneWriterExact(t *testing.T) {
	seed := taSeed(t)
	disk := newSimDisk(t, seed)
	cfg := simConfig(t, disk)
	cfg.PromoteInterval = time.Hour
	e := start(t, cfg)
	ctx := ctxFor(t)
	sp := createSpace(t, e, taSpec.Name, taSpec.Dims, taSpec.Bits)
	check := func(what string, unsealedPlusPending int) (ringpipe.Stats, ringpipe.Telemetry) {
		t.Helper()
		saStagedSettled(e)
		st, tel := e.Stats(), e.Telemetry()
		saSnapshot(t, st, tel)
		taHist(t, what+": WriteLatency", tel.WriteLatency, taLatencyBounds, false)
		taHist(t, what+": SyncLatency", tel.SyncLatency, taLatencyBounds, false)
		taHist(t, what+": BatchSize", tel.BatchSize, taSizeBounds, true)
		assert.Equal(t, unsealedPlusPending, tel.UnsealedRecords+st.StagedPending,
			"%s: UnsealedRecords (%d) + StagedPending (%d) == the records not sealed", what, tel.UnsealedRecords, st.StagedPending)
		assert.Zero(t, tel.CQOverflows, "%s: CQOverflows on the simulated ring", what)
		assert.False(t, tel.Failed || tel.Stopped, "%s: Failed or Stopped", what)
		return st, tel
	}
	s0, t0 := check("fresh", 0)

	const direct = 40
	taPuts(t, e, sp, 1, direct)
	s1, t1 := check("direct", direct)
	d := taDiff(s0, s1, t0, t1)
	// A seal's replacement segment or an actor that has not yet let go of
	// its turn on a loaded machine sends an occasional Put through the
	// queue: inline commits are most, not all.
	assert.GreaterOrEqual(t, d.inline, uint64(direct*3/4), "sequential Puts on an idle pipeline commit inline")
	assert.LessOrEqual(t, d.inline, uint64(direct))
	d.inline = 0
	assert.Equal(t, taDelta{acked: direct, direct: direct, publishes: direct, batches: direct, batchSum: direct}, d,
		"%d sequential direct Puts: one one-record batch and one publish each", direct)
	assert.Equal(t, direct, t1.UnsealedRecords)

	stallHot(disk, sp)
	const staged = 12
	taPuts(t, e, sp, 2, staged)
	s2, t2 := check("stalled", direct+staged)
	d = taDiff(s1, s2, t1, t2)
	t.Logf("stalled: %+v", d)
	assert.Equal(t, uint64(staged), d.acked)
	assert.Equal(t, uint64(staged), d.staged, "every write to the stalled file acknowledged from the staging WAL")
	assert.Equal(t, uint64(1), d.deadlines, "one deadline: the first hot batch; the slow space's later writes carry none")
	assert.LessOrEqual(t, d.inline, uint64(1), "only the first stalled Put may commit inline (a slow space's writes are queued)")
	assert.Equal(t, uint64(staged+1), d.batches, "one WAL batch per write plus the hot batch that missed")
	assert.Equal(t, float64(staged+1), d.batchSum, "BatchSize.Sum counts the rerouted write twice, nothing else")
	assert.Equal(t, uint64(1), d.promoted, "the late hot copy counts as promoted")
	assert.Equal(t, direct+1, t2.UnsealedRecords, "the late hot copy is in the hot generation")
	assert.Equal(t, staged-1, s2.StagedPending)
	assert.GreaterOrEqual(t, d.publishes, d.acked, "every write published")

	require.NoError(t, e.Flush(ctx, sp)) // promotes into the stalled file, then seals
	s3, t3 := check("flushed under the stall", 0)
	d = taDiff(s2, s3, t2, t3)
	t.Logf("flush: %+v", d)
	assert.Positive(t, d.deadlines, "the promotion into the stalled file missed its deadline")
	assert.Zero(t, d.batches, "promotions are not batches of writes")
	assert.Zero(t, d.batchSum)
	assert.Equal(t, uint64(staged-1), d.promoted)
	assert.Equal(t, s2.SealedBlocks+1, s3.SealedBlocks)
	assert.Zero(t, t3.UnsealedRecords)
	stop(t, e)
}

// TestTelemetryAuditSyncPublishes: "Publishes counts the Views the
// publisher published. It applies the notices that wait together as one
// burst and publishes once for it, so acknowledged writes per publish says
// how well that batches" (telemetry.go); the metric's help says "the
// publisher publishes once per burst of durable notices, so writes per
// publish shows its batching". A Sync on a quiet engine makes no write and
// no notice, yet each one counts a publish: 200 Syncs after 10 writes read
// as 0.05 writes per publish.
func TestTelemetryAuditSyncPublishes(t *testing.T) {
	for _, b := range []string{"sim", "std"} {
		t.Run(b, func(t *testing.T) {
			var cfg ringpipe.Config
			if b == "sim" {
				cfg = simConfig(t, newSimDisk(t, taSeed(t)))
			} else {
				cfg = realConfig(t, ringpipe.BackendStd)
			}
			e := start(t, cfg)
			ctx := ctxFor(t)
			sp := createSpace(t, e, taSpec.Name, taSpec.Dims, taSpec.Bits)
			taPuts(t, e, sp, 1, 10)
			before, st0 := e.Telemetry().Publishes, e.Stats()
			for range 200 {
				require.NoError(t, e.Sync(ctx))
			}
			after := e.Telemetry()
			st := e.Stats()
			require.Equal(t, uint64(10), st.DirectWrites+st.StagedWrites, "no write besides the 10 (precondition)")
			// Fixed: before, each Sync on a quiet engine counted one
			// publish (its Fence reached the publisher alone, and
			// Publisher.apply published and counted whatever the burst
			// held): Publishes rose by 200. Only notices publish now; on
			// a real disk a write staged by a missed deadline may still
			// be promoted during the Syncs (a notice), so those count.
			notices := (st.Promoted - st0.Promoted) + (st.SealedBlocks - st0.SealedBlocks)
			assert.LessOrEqual(t, after.Publishes-before, notices, "Publishes after 200 Syncs with nothing to publish")
			assert.LessOrEqual(t, after.Publishes, st.DirectWrites+st.StagedWrites+1+st.Promoted+st.SealedBlocks,
				"Publishes (one per burst of notices) against 10 writes and a CreateSpace")
			stop(t, e)
		})
	}
}

// TestTelemetryAuditGaugesAcrossRestart: UnsealedRecords and StagedPending
// describe the disk, so a new engine must report them right at Start:
// after a clean Stop with writes still staged (the promoter held) and
// after a crash, the new engine's UnsealedRecords + StagedPending must be
// every record written since the last Flush, each in one place, and its
// counters start from zero. Lifetime 1 writes direct, then staged into a
// stalled hot file (late copies land), then direct into a second space.
func TestTelemetryAuditGaugesAcrossRestart(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(map[bool]string{false: "stop", true: "crash"}[crash], func(t *testing.T) {
			seed := taSeed(t)
			disk := newSimDisk(t, seed)
			cfg := simConfig(t, disk)
			cfg.PromoteInterval = time.Hour
			e := start(t, cfg)
			ctx := ctxFor(t)
			a := createSpace(t, e, "a", taSpec.Dims, taSpec.Bits)
			b := createSpace(t, e, "b", taSpec.Dims, taSpec.Bits)
			taPuts(t, e, a, 1, 30)
			require.NoError(t, e.Flush(ctx, a)) // sealed: in no gauge
			taPuts(t, e, a, 2, 7)
			stallHot(disk, a)
			var wg sync.WaitGroup
			for w := range 4 {
				wg.Go(func() {
					for i := range 6 {
						_, err := e.Put(ctx, a, ringpipe.Point{uint32(10 + w), uint32(i)}, []byte("staged"))
						assert.NoError(t, err)
					}
				})
			}
			lcWait(t, "staged writers", lcDone(&wg))
			taPuts(t, e, b, 3, 9)
			written := 7 + 24 + 9
			saStagedSettled(e)
			st1, tel1 := e.Stats(), e.Telemetry()
			require.Positive(t, st1.StagedWrites, "writes staged (precondition)")
			t.Logf("lifetime 1: stats %+v; unsealed %d", st1, tel1.UnsealedRecords)
			assert.Equal(t, written, tel1.UnsealedRecords+st1.StagedPending, "lifetime 1: UnsealedRecords + StagedPending")
			if crash {
				disk.Crash()
				sctx, cancel := context.WithTimeout(context.Background(), opTimeout)
				t.Logf("Stop after the crash: %v", e.Stop(sctx))
				cancel()
			} else {
				stop(t, e)
				// A late hot copy may land between the reading above and
				// Stop: it moves a record from one gauge to the other.
				st1, tel1 = e.Stats(), e.Telemetry()
				assert.Equal(t, written, tel1.UnsealedRecords+st1.StagedPending, "after Stop: UnsealedRecords + StagedPending")
			}
			disk.ClearFaults()

			e2 := start(t, cfg)
			st2, tel2 := e2.Stats(), e2.Telemetry()
			t.Logf("lifetime 2 at Start: stats %+v; unsealed %d", st2, tel2.UnsealedRecords)
			assert.Equal(t, written, tel2.UnsealedRecords+st2.StagedPending,
				"at Start: UnsealedRecords (%d) + StagedPending (%d) == the records not sealed", tel2.UnsealedRecords, st2.StagedPending)
			if !crash {
				assert.Equal(t, tel1.UnsealedRecords, tel2.UnsealedRecords, "UnsealedRecords at Start == at the clean Stop")
				assert.Equal(t, st1.StagedPending, st2.StagedPending, "StagedPending at Start == at the clean Stop")
			}
			assert.Zero(t, st2.DirectWrites+st2.StagedWrites+st2.Promoted+st2.SealedBlocks, "lifetime counters start from zero")
			assert.Zero(t, tel2.WriteLatency.Count+tel2.BatchSize.Count+tel2.DeadlinesFired+tel2.InlineCommits+tel2.Publishes,
				"lifetime histograms and counters start from zero")
			assert.False(t, tel2.Stopped || tel2.Failed)
			taHist(t, "lifetime 2: SyncLatency", tel2.SyncLatency, taLatencyBounds, false)

			ctx2 := ctxFor(t)
			require.NoError(t, e2.Flush(ctx2, a))
			require.NoError(t, e2.Flush(ctx2, b))
			st3, tel3 := e2.Stats(), e2.Telemetry()
			assert.Zero(t, tel3.UnsealedRecords, "both spaces flushed")
			assert.Zero(t, st3.StagedPending, "Flush promoted everything staged")
			assert.Equal(t, uint64(st2.StagedPending), st3.Promoted, "what recovery staged, promoted")
			stop(t, e2)
		})
	}
}

// TestTelemetryAuditRealDirs: on real directories with each backend, with
// a deadline of 10 s (none can pass: exact counts) and of 1 µs (every hot
// batch and promotion misses it where syncs take time), with 1 writer and
// with 64:
//
//   - a missed hot batch is staged again, so BatchSize.Sum exceeds the
//     writes acknowledged by the records of the batches that missed: at
//     most DeadlinesFired × the largest batch, exactly 0 when none fired;
//   - staged writes need a fired deadline first (a healthy disk);
//   - one writer commits inline nearly always, 64 writers nearly never,
//     and InlineCommits is at most the writes acknowledged;
//   - CQOverflows is 0 on std (on io_uring it could not be provoked, even
//     with 8 ring entries and 64 writers: the engine bounds what it has in
//     flight by the ring's capacity);
//   - the histograms against their bounds and sums.
func TestTelemetryAuditRealDirs(t *testing.T) {
	for _, b := range []ringpipe.Backend{ringpipe.BackendURing, ringpipe.BackendStd} {
		for _, dwt := range []time.Duration{10 * time.Second, time.Microsecond} {
			for _, writers := range []int{1, 64} {
				t.Run(fmt.Sprintf("%v/dwt=%v/writers=%d", b, dwt, writers), func(t *testing.T) {
					cfg := realConfig(t, b)
					cfg.DirectWriteTimeout = dwt
					cfg.RingEntries = 8
					e, err := ringpipe.Start(ctxFor(t), cfg)
					if b == ringpipe.BackendURing && err != nil {
						t.Skipf("io_uring unavailable: %v", err)
					}
					require.NoError(t, err)
					t.Cleanup(func() { _ = e.Stop(context.Background()) })
					ctx := ctxFor(t)
					sp := createSpace(t, e, taSpec.Name, taSpec.Dims, taSpec.Bits)
					const total = 640
					var wg sync.WaitGroup
					for w := range writers {
						wg.Go(func() {
							for i := range total / writers {
								_, err := e.Put(ctx, sp, ringpipe.Point{uint32(w), uint32(i)}, []byte("ta"))
								if !assert.NoError(t, err) {
									return
								}
							}
						})
					}
					lcWait(t, "writers", lcDone(&wg))
					saStagedSettled(e)
					// A promotion may land between the two reads below (its
					// records join UnsealedRecords, then leave
					// StagedPending): on this healthy disk everything is
					// promoted within a few ticks, so wait for that.
					waitFor(t, e, "every staged write promoted", func(st ringpipe.Stats) bool { return st.StagedPending == 0 })
					st, tel := e.Stats(), e.Telemetry()
					t.Logf("direct %d staged %d promoted %d syncs %d; deadlines %d cq %d inline %d publishes %d batches %d sum %v unsealed %d",
						st.DirectWrites, st.StagedWrites, st.Promoted, st.Syncs, tel.DeadlinesFired, tel.CQOverflows,
						tel.InlineCommits, tel.Publishes, tel.BatchSize.Count, tel.BatchSize.Sum, tel.UnsealedRecords)
					acked := st.DirectWrites + st.StagedWrites
					require.Equal(t, uint64(total), acked)
					extra := tel.BatchSize.Sum - float64(acked)
					assert.GreaterOrEqual(t, extra, 0.0, "BatchSize.Sum >= writes acknowledged")
					assert.LessOrEqual(t, extra, float64(tel.DeadlinesFired)*float64(writers),
						"BatchSize.Sum - acknowledged writes (the rerouted records) <= DeadlinesFired × the largest batch")
					if st.StagedWrites > 0 {
						assert.Positive(t, tel.DeadlinesFired, "writes staged on a healthy disk without a fired deadline")
					}
					assert.LessOrEqual(t, tel.InlineCommits, acked)
					if dwt == 10*time.Second {
						// No deadline can pass: the counts are exact.
						assert.Zero(t, tel.DeadlinesFired, "deadlines fired at 10 s")
						assert.Zero(t, st.StagedWrites, "writes staged without a fired deadline")
						assert.Equal(t, float64(acked), tel.BatchSize.Sum, "each write in one batch when no deadline fired")
						if writers == 1 {
							// A seal's replacement segment or an actor
							// that has not yet let go of its turn sends
							// an occasional Put through the queue.
							assert.Greater(t, tel.InlineCommits, uint64(total/2), "one writer on an idle pipeline commits inline")
						}
					}
					if writers == 64 {
						assert.Less(t, tel.InlineCommits, uint64(total/4), "64 writers go through the queue")
					}
					if b == ringpipe.BackendStd {
						assert.Zero(t, tel.CQOverflows, "CQOverflows on std")
					}
					assert.Equal(t, total, tel.UnsealedRecords+st.StagedPending, "UnsealedRecords + StagedPending")
					taHist(t, "WriteLatency", tel.WriteLatency, taLatencyBounds, false)
					taHist(t, "SyncLatency", tel.SyncLatency, taLatencyBounds, false)
					taHist(t, "BatchSize", tel.BatchSize, taSizeBounds, true)
					stop(t, e)
				})
			}
		}
	}
}

// taProbeSrc is the program TestTelemetryAuditPrometheus runs: it drives
// an engine (argv[1]: sim, std or uring; argv[2]: a directory; argv[3]:
// the seed) through the events below and prints one JSON line per scrape
// of promhttp's handler: the text, its Content-Type, and Stats and
// Telemetry read just before and just after it. A "quiet" scrape is
// retried until nothing moved across it.
const taProbeSrc = `package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/hot"
	"github.com/ringpipe/ringpipe/metrics"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

type snap struct {
	Label       string
	Life        int
	Quiet       bool
	ContentType string
	Text        string
	StatsBefore ringpipe.Stats
	TelBefore   ringpipe.Telemetry
	StatsAfter  ringpipe.Stats
	TelAfter    ringpipe.Telemetry
}

var (
	out  = json.NewEncoder(os.Stdout)
	omu  sync.Mutex
	life int
)

func fatal(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "FATAL: "+f+"\n", a...)
	os.Exit(1)
}

func scrape(e *ringpipe.Engine, reg *prometheus.Registry, label string, quiet bool) {
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.PanicOnError})
	for try := 0; ; try++ {
		s := snap{Label: label, Life: life, Quiet: quiet}
		s.StatsBefore, s.TelBefore = e.Stats(), e.Telemetry()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		s.StatsAfter, s.TelAfter = e.Stats(), e.Telemetry()
		s.Text, s.ContentType = rec.Body.String(), rec.Header().Get("Content-Type")
		moved := !reflect.DeepEqual(s.StatsBefore, s.StatsAfter) || !reflect.DeepEqual(s.TelBefore, s.TelAfter)
		if quiet && moved && try < 500 {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if quiet && moved {
			s.Label += " (never quiet)"
		}
		omu.Lock()
		if err := out.Encode(s); err != nil {
			fatal("encode: %v", err)
		}
		omu.Unlock()
		return
	}
}

// settle waits until nothing staged is on its way and the queue is empty.
func settle(e *ringpipe.Engine) {
	for i := 0; i < 500; i++ {
		st := e.Stats()
		if int64(st.StagedPending) == int64(st.StagedWrites)-int64(st.Promoted) && st.QueueDepth == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func writers(e *ringpipe.Engine, sps []ringpipe.SpaceID, n, per int, row uint32, tolerate bool) (acked, failed int) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				sp := sps[(w+i)%len(sps)]
				p := ringpipe.Point{row + uint32(w), uint32(i)}
				var err error
				switch i % 5 {
				case 3:
					_, err = e.Delete(ctx, sp, p)
				case 4:
					var tk *ringpipe.Ticket
					if tk, err = e.PutAsync(ctx, sp, p, []byte("async")); err == nil {
						_, err = tk.Wait(ctx)
					}
				default:
					_, err = e.Put(ctx, sp, p, []byte("value"))
				}
				mu.Lock()
				if err == nil {
					acked++
				} else {
					failed++
				}
				mu.Unlock()
				if err != nil && !tolerate {
					fatal("write: %v", err)
				}
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	return
}

// underLoad scrapes while fn runs.
func underLoad(e *ringpipe.Engine, reg *prometheus.Registry, label string, fn func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			scrape(e, reg, label, false)
		}
	}()
	fn()
	close(done)
	wg.Wait()
}

func main() {
	kind, dir := os.Args[1], os.Args[2]
	seed, _ := strconv.ParseInt(os.Args[3], 10, 64)
	ctx := context.Background()
	var disk *sim.Disk
	cfg := ringpipe.Config{Dir: dir, Preallocate: 1 << 20}
	switch kind {
	case "sim":
		disk = sim.NewDisk(seed)
		if err := disk.MkdirAll(dir); err != nil {
			fatal("mkdir: %v", err)
		}
		cfg.NewRing = func(o ring.Options) (ring.Ring, error) { return disk.NewRing(o), nil }
		cfg.PromoteInterval = time.Hour
	case "std":
		cfg.Backend = ringpipe.BackendStd
	case "uring":
		cfg.Backend = ringpipe.BackendURing
	}
	if disk == nil {
		// No deadline passes on a loaded machine, no promotion runs by
		// itself: the gauges stand still between the scrapes compared.
		cfg.DirectWriteTimeout = 10 * time.Second
		cfg.PromoteInterval = time.Hour
	}
	life = 1
	e, err := ringpipe.Start(ctx, cfg)
	if err != nil {
		if kind == "uring" {
			fmt.Println("SKIP", err)
			return
		}
		fatal("start: %v", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewCollector(e))
	scrape(e, reg, "fresh", true)
	a, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "a", Dims: 2, Bits: 16})
	if err != nil {
		fatal("create: %v", err)
	}
	b, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "b", Dims: 2, Bits: 16})
	if err != nil {
		fatal("create: %v", err)
	}
	writers(e, []ringpipe.SpaceID{a}, 1, 30, 0, false)
	scrape(e, reg, "one writer", true)
	if disk != nil {
		name := hot.Gen{Space: a, Gen: 1}.FileName()
		disk.Inject(sim.Fault{Kind: sim.Delay, Delay: 200 * time.Millisecond,
			Path: dir + "/hot/" + name[:len(name)-len("00000000000000000001.seg")],
			Ops:  []ring.Opcode{ring.OpFdatasync, ring.OpFsync, ring.OpWrite, ring.OpWritev}, Persist: true})
	}
	underLoad(e, reg, "load", func() { writers(e, []ringpipe.SpaceID{a, b}, 32, 40, 100, false) })
	settle(e)
	scrape(e, reg, "after the load", true)
	if disk != nil {
		disk.ClearFaults()
	}
	underLoad(e, reg, "flush", func() {
		if err := e.Flush(ctx, a); err != nil {
			fatal("flush: %v", err)
		}
	})
	settle(e)
	scrape(e, reg, "flushed a", true)
	if disk != nil {
		// One failed write of b's hot file (a is slow: its writes are
		// staged) restarts the io unit.
		name := hot.Gen{Space: b, Gen: 1}.FileName()
		disk.Inject(sim.Fault{Kind: sim.EIO, Path: dir + "/hot/" + name[:len(name)-len("00000000000000000001.seg")],
			Ops: []ring.Opcode{ring.OpFdatasync, ring.OpWrite, ring.OpWritev}})
		writers(e, []ringpipe.SpaceID{b}, 4, 10, 200, true)
		for i := 0; i < 1000 && len(e.Stats().ActorRestarts) == 0; i++ {
			time.Sleep(10 * time.Millisecond)
		}
		if len(e.Stats().ActorRestarts) == 0 {
			fatal("no restart after an I/O error: %+v", e.Stats())
		}
		writers(e, []ringpipe.SpaceID{a, b}, 4, 10, 300, false)
		settle(e)
		scrape(e, reg, "restarted", true)
	}
	writers(e, []ringpipe.SpaceID{b}, 1, 10, 400, false) // unsealed at Stop
	settle(e)
	scrape(e, reg, "before Stop", true)
	if err := e.Stop(ctx); err != nil {
		fatal("stop: %v", err)
	}
	scrape(e, reg, "stopped", true)
	time.Sleep(50 * time.Millisecond)
	scrape(e, reg, "stopped, later", true)

	life = 2
	e2, err := ringpipe.Start(ctx, cfg)
	if err != nil {
		fatal("restart: %v", err)
	}
	reg2 := prometheus.NewRegistry()
	reg2.MustRegister(metrics.NewCollector(e2))
	scrape(e2, reg2, "restarted engine", true)
	if disk != nil {
		disk.Inject(sim.Fault{Kind: sim.EIO, Path: dir + "/", Persist: true})
		for i := 0; i < 100 && !e2.Telemetry().Failed; i++ {
			writers(e2, []ringpipe.SpaceID{a}, 8, 20, 500, true)
		}
		scrape(e2, reg2, "failed", true)
	}
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := e2.Stop(sctx); err != nil && disk == nil {
		fatal("stop: %v", err)
	}
	scrape(e2, reg2, "stopped", true)
}
`

// taSnap is one line of the probe's output.
type taSnap struct {
	Label       string
	Life        int
	Quiet       bool
	ContentType string
	Text        string
	StatsBefore ringpipe.Stats
	TelBefore   ringpipe.Telemetry
	StatsAfter  ringpipe.Stats
	TelAfter    ringpipe.Telemetry
}

// taSample is one sample line of the text format.
type taSample struct {
	name   string
	labels map[string]string
	value  float64
}

// taFamily is one metric family of the text format.
type taFamily struct {
	help, typ string
	samples   []taSample
}

var (
	taNameRe  = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	taLabelRe = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// taParse parses the Prometheus text format (version 0.0.4) strictly:
// HELP and TYPE once per family and before its samples, samples of a
// family together, names and label names by the format's grammar, label
// values quoted with the format's escapes, no series twice. It returns
// the families by name and every problem found.
func taParse(text string) (map[string]*taFamily, []string) {
	fams := map[string]*taFamily{}
	var probs []string
	bad := func(n int, f string, a ...any) {
		probs = append(probs, fmt.Sprintf("line %d: ", n)+fmt.Sprintf(f, a...))
	}
	seen := map[string]bool{}
	var cur string
	closed := map[string]bool{}
	family := func(n int, name string) *taFamily {
		if name != cur {
			if closed[name] {
				bad(n, "family %s split", name)
			}
			if cur != "" {
				closed[cur] = true
			}
			cur = name
		}
		f := fams[name]
		if f == nil {
			f = &taFamily{}
			fams[name] = f
		}
		return f
	}
	if !strings.HasSuffix(text, "\n") {
		probs = append(probs, "the text does not end in a newline")
	}
	for n, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		n++
		switch {
		case strings.HasPrefix(line, "# HELP "), strings.HasPrefix(line, "# TYPE "):
			parts := strings.SplitN(line[7:], " ", 2)
			if len(parts) != 2 || !taNameRe.MatchString(parts[0]) {
				bad(n, "malformed %q", line)
				continue
			}
			f := family(n, parts[0])
			if len(f.samples) > 0 {
				bad(n, "%q after samples of its family", line)
			}
			if line[2] == 'H' {
				if f.help != "" {
					bad(n, "second HELP for %s", parts[0])
				}
				f.help = parts[1]
				for i := 0; i < len(parts[1]); i++ {
					if parts[1][i] == '\\' && (i+1 == len(parts[1]) || !strings.ContainsRune(`\n`, rune(parts[1][i+1]))) {
						bad(n, "bad escape in HELP %q", parts[1])
					}
					if parts[1][i] == '\\' {
						i++
					}
				}
			} else {
				if f.typ != "" {
					bad(n, "second TYPE for %s", parts[0])
				}
				switch parts[1] {
				case "counter", "gauge", "histogram", "summary", "untyped":
				default:
					bad(n, "unknown type %q", parts[1])
				}
				f.typ = parts[1]
			}
		case strings.HasPrefix(line, "#"):
			// A comment.
		case line == "":
			bad(n, "empty line")
		default:
			s, key, err := taParseSample(line)
			if err != nil {
				bad(n, "%v: %q", err, line)
				continue
			}
			if seen[key] {
				bad(n, "series twice: %s", key)
			}
			seen[key] = true
			base := s.name
			if cur != s.name {
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if strings.HasSuffix(s.name, suf) && strings.TrimSuffix(s.name, suf) == cur {
						base = cur
					}
				}
			}
			f := family(n, base)
			if f.typ == "" {
				bad(n, "sample of %s before its TYPE", base)
			}
			if base != s.name && f.typ != "histogram" && f.typ != "summary" {
				bad(n, "%s in a %s family", s.name, f.typ)
			}
			f.samples = append(f.samples, s)
		}
	}
	return fams, probs
}

// taParseSample parses `name{l="v",...} value`; it returns the sample and
// its series key (name and sorted labels).
func taParseSample(line string) (taSample, string, error) {
	s := taSample{labels: map[string]string{}}
	i := strings.IndexAny(line, "{ ")
	if i < 0 {
		return s, "", fmt.Errorf("no value")
	}
	s.name = line[:i]
	if !taNameRe.MatchString(s.name) {
		return s, "", fmt.Errorf("bad metric name %q", s.name)
	}
	rest := line[i:]
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			eq := strings.IndexByte(rest, '=')
			if eq < 0 {
				return s, "", fmt.Errorf("bad labels")
			}
			ln := rest[:eq]
			if !taLabelRe.MatchString(ln) || strings.HasPrefix(ln, "__") {
				return s, "", fmt.Errorf("bad label name %q", ln)
			}
			if _, dup := s.labels[ln]; dup {
				return s, "", fmt.Errorf("label %s twice", ln)
			}
			rest = rest[eq+1:]
			if !strings.HasPrefix(rest, `"`) {
				return s, "", fmt.Errorf("unquoted value of %s", ln)
			}
			var v strings.Builder
			j := 1
			for ; j < len(rest) && rest[j] != '"'; j++ {
				if rest[j] == '\\' {
					j++
					switch {
					case j >= len(rest):
						return s, "", fmt.Errorf("cut escape")
					case rest[j] == 'n':
						v.WriteByte('\n')
					case rest[j] == '\\' || rest[j] == '"':
						v.WriteByte(rest[j])
					default:
						return s, "", fmt.Errorf("bad escape \\%c", rest[j])
					}
					continue
				}
				v.WriteByte(rest[j])
			}
			if j >= len(rest) {
				return s, "", fmt.Errorf("unterminated value of %s", ln)
			}
			s.labels[ln] = v.String()
			rest = rest[j+1:]
			if strings.HasPrefix(rest, ",") {
				rest = rest[1:]
			} else if !strings.HasPrefix(rest, "}") {
				return s, "", fmt.Errorf("labels not separated by commas")
			}
		}
	}
	fields := strings.Fields(rest)
	if !strings.HasPrefix(rest, " ") || len(fields) < 1 || len(fields) > 2 {
		return s, "", fmt.Errorf("bad value part %q", rest)
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, "", fmt.Errorf("bad value %q", fields[0])
	}
	s.value = v
	keys := make([]string, 0, len(s.labels))
	for k, lv := range s.labels {
		keys = append(keys, k+"="+strconv.Quote(lv))
	}
	sort.Strings(keys)
	return s, s.name + "{" + strings.Join(keys, ",") + "}", nil
}

// taWant are the documented metrics and their types (README "Metrics",
// metrics/collector.go).
var taWant = map[string]string{
	"ringpipe_writes_total": "counter", "ringpipe_promoted_records_total": "counter",
	"ringpipe_sealed_blocks_total": "counter", "ringpipe_syncs_total": "counter",
	"ringpipe_short_io_retries_total": "counter", "ringpipe_io_deadlines_fired_total": "counter",
	"ringpipe_cq_overflows_total": "counter", "ringpipe_inline_commits_total": "counter",
	"ringpipe_publishes_total": "counter", "ringpipe_actor_restarts_total": "counter",
	"ringpipe_queue_depth": "gauge", "ringpipe_queue_capacity": "gauge",
	"ringpipe_staged_pending_records": "gauge", "ringpipe_unsealed_records": "gauge",
	"ringpipe_stopped": "gauge", "ringpipe_failed": "gauge", "ringpipe_info": "gauge",
	"ringpipe_write_latency_seconds": "histogram", "ringpipe_sync_latency_seconds": "histogram",
	"ringpipe_batch_size_records": "histogram",
}

// taOne returns the value of the one sample of fams[name] whose labels are
// exactly want (name=value pairs), or NaN after failing the test.
func taOne(t *testing.T, what string, fams map[string]*taFamily, name string, want ...string) float64 {
	t.Helper()
	f := fams[name]
	for _, suf := range []string{"_count", "_sum"} {
		if base := strings.TrimSuffix(name, suf); f == nil && base != name && fams[base] != nil && fams[base].typ == "histogram" {
			f = fams[base]
		}
	}
	if !assert.NotNil(t, f, "%s: no %s", what, name) {
		return math.NaN()
	}
	var got []float64
	for _, s := range f.samples {
		if s.name != name || len(s.labels) != len(want)/2 {
			continue
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			if v, ok := s.labels[want[i]]; !ok || v != want[i+1] {
				match = false
			}
		}
		if match {
			got = append(got, s.value)
		}
	}
	if !assert.Len(t, got, 1, "%s: %s%v", what, name, want) {
		return math.NaN()
	}
	return got[0]
}

// taPromHist checks a histogram family's series (le ascending, the
// documented bounds and +Inf, cumulative, +Inf == _count, a _sum) and
// returns it as a Histogram (without the +Inf bucket).
func taPromHist(t *testing.T, what string, fams map[string]*taFamily, name string, bounds []float64) (ringpipe.Histogram, bool) {
	t.Helper()
	var h ringpipe.Histogram
	f := fams[name]
	if !assert.NotNil(t, f, "%s: no %s", what, name) {
		return h, false
	}
	var inf float64 = -1
	var les []float64
	for _, s := range f.samples {
		if s.name != name+"_bucket" {
			continue
		}
		if !assert.Len(t, s.labels, 1, "%s: %s labels", what, s.name) {
			return h, false
		}
		le, err := strconv.ParseFloat(s.labels["le"], 64)
		if !assert.NoError(t, err, "%s: le %q", what, s.labels["le"]) {
			return h, false
		}
		if math.IsInf(le, 1) {
			inf = s.value
			continue
		}
		assert.Equal(t, -1.0, inf, "%s: a bucket after +Inf", what)
		les = append(les, le)
		h.Buckets = append(h.Buckets, ringpipe.HistogramBucket{UpperBound: le, Count: uint64(s.value)})
	}
	cnt := taOne(t, what, fams, name+"_count")
	h.Sum = taOne(t, what, fams, name+"_sum")
	h.Count = uint64(cnt)
	ok := assert.InDeltaSlice(t, bounds, les, 1e-12, "%s: %s's le bounds", what, name) &&
		assert.Equal(t, cnt, inf, "%s: %s +Inf bucket == _count", what, name)
	for i := 1; i < len(h.Buckets); i++ {
		ok = ok && assert.GreaterOrEqual(t, h.Buckets[i].Count, h.Buckets[i-1].Count, "%s: %s cumulative", what, name)
	}
	if len(h.Buckets) > 0 {
		ok = ok && assert.LessOrEqual(t, float64(h.Buckets[len(h.Buckets)-1].Count), cnt, "%s: %s last bucket <= count", what, name)
	}
	return h, ok
}

// taCheckScrape checks one scrape's text: the format, the documented
// metric set and types, the histograms' shape; and, for a quiet scrape
// (Stats and Telemetry equal before and after it), every value against
// its source. It returns the families.
func taCheckScrape(t *testing.T, s taSnap) map[string]*taFamily {
	t.Helper()
	what := fmt.Sprintf("life %d, %s", s.Life, s.Label)
	assert.True(t, strings.HasPrefix(s.ContentType, "text/plain; version=0.0.4"), "%s: Content-Type %q", what, s.ContentType)
	fams, probs := taParse(s.Text)
	assert.Empty(t, probs, "%s: the text format", what)
	for name, typ := range taWant {
		if f := fams[name]; assert.NotNil(t, f, "%s: %s missing", what, name) {
			assert.Equal(t, typ, f.typ, "%s: TYPE of %s", what, name)
			assert.NotEmpty(t, f.help, "%s: HELP of %s", what, name)
		}
	}
	for name := range fams {
		assert.Contains(t, taWant, name, "%s: an undocumented metric", what)
	}
	wl, _ := taPromHist(t, what, fams, "ringpipe_write_latency_seconds", taLatencyBounds)
	sl, _ := taPromHist(t, what, fams, "ringpipe_sync_latency_seconds", taLatencyBounds)
	bs, _ := taPromHist(t, what, fams, "ringpipe_batch_size_records", taSizeBounds)
	if fams["ringpipe_queue_depth"] != nil && fams["ringpipe_queue_capacity"] != nil {
		depth, capacity := taOne(t, what, fams, "ringpipe_queue_depth"), taOne(t, what, fams, "ringpipe_queue_capacity")
		assert.True(t, depth >= 0 && depth <= capacity, "%s: queue depth %v outside [0, %v]", what, depth, capacity)
	}
	for _, g := range []string{"ringpipe_staged_pending_records", "ringpipe_unsealed_records"} {
		if fams[g] != nil {
			assert.GreaterOrEqual(t, taOne(t, what, fams, g), 0.0, "%s: %s", what, g)
		}
	}
	if !s.Quiet {
		return fams
	}
	require.NotContains(t, s.Label, "never quiet", "%s: the engine never stood still across a scrape", what)
	st, tel := s.StatsAfter, s.TelAfter
	saSnapshot(t, st, tel)
	taHist(t, what+": Telemetry.WriteLatency", tel.WriteLatency, taLatencyBounds, false)
	taHist(t, what+": Telemetry.SyncLatency", tel.SyncLatency, taLatencyBounds, false)
	taHist(t, what+": Telemetry.BatchSize", tel.BatchSize, taSizeBounds, true)
	f := func(v uint64) float64 { return float64(v) }
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"ringpipe_writes_total", []string{"path", "direct"}, f(st.DirectWrites)},
		{"ringpipe_writes_total", []string{"path", "staged"}, f(st.StagedWrites)},
		{"ringpipe_promoted_records_total", nil, f(st.Promoted)},
		{"ringpipe_sealed_blocks_total", nil, f(st.SealedBlocks)},
		{"ringpipe_syncs_total", nil, f(st.Syncs)},
		{"ringpipe_short_io_retries_total", nil, f(st.ShortIORetries)},
		{"ringpipe_io_deadlines_fired_total", nil, f(tel.DeadlinesFired)},
		{"ringpipe_cq_overflows_total", nil, f(tel.CQOverflows)},
		{"ringpipe_inline_commits_total", nil, f(tel.InlineCommits)},
		{"ringpipe_publishes_total", nil, f(tel.Publishes)},
		{"ringpipe_queue_depth", nil, float64(st.QueueDepth)},
		{"ringpipe_queue_capacity", nil, float64(tel.QueueCapacity)},
		{"ringpipe_staged_pending_records", nil, float64(st.StagedPending)},
		{"ringpipe_unsealed_records", nil, float64(tel.UnsealedRecords)},
		{"ringpipe_stopped", nil, b(tel.Stopped)},
		{"ringpipe_failed", nil, b(tel.Failed)},
		{"ringpipe_info", []string{"backend", st.Backend, "kernel", st.KernelVersion}, 1},
	} {
		assert.Equal(t, c.want, taOne(t, what, fams, c.name, c.labels...), "%s: %s%v against its source", what, c.name, c.labels)
	}
	assert.Len(t, fams["ringpipe_actor_restarts_total"].samples, len(tel.Actors), "%s: one restart series per actor", what)
	for _, a := range tel.Actors {
		assert.Equal(t, f(st.ActorRestarts[a]), taOne(t, what, fams, "ringpipe_actor_restarts_total", "actor", a), "%s: restarts of %s", what, a)
	}
	for _, c := range []struct {
		name      string
		got, want ringpipe.Histogram
	}{
		{"write latency", wl, tel.WriteLatency}, {"sync latency", sl, tel.SyncLatency}, {"batch size", bs, tel.BatchSize},
	} {
		assert.Equal(t, c.want.Count, c.got.Count, "%s: %s count", what, c.name)
		assert.InDelta(t, c.want.Sum, c.got.Sum, math.Abs(c.want.Sum)*1e-12, "%s: %s sum", what, c.name)
		assert.Equal(t, c.want.Buckets, c.got.Buckets, "%s: %s buckets", what, c.name)
	}
	return fams
}

// taCounters returns every counter series of a scrape (histogram buckets,
// sums and counts included) by series key.
func taCounters(fams map[string]*taFamily) map[string]float64 {
	out := map[string]float64{}
	for _, f := range fams {
		if f.typ != "counter" && f.typ != "histogram" {
			continue
		}
		for _, s := range f.samples {
			keys := make([]string, 0, len(s.labels))
			for k, v := range s.labels {
				keys = append(keys, k+"="+v)
			}
			sort.Strings(keys)
			out[s.name+"{"+strings.Join(keys, ",")+"}"] = s.value
		}
	}
	return out
}

// taBuildProbe builds taProbeSrc in a temporary module that requires the
// metrics module with replace directives to this tree.
func taBuildProbe(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	dir := t.TempDir()
	mod := fmt.Sprintf(`module telemprobe

go 1.26.0

require (
	github.com/prometheus/client_golang v1.25.0
	github.com/ringpipe/ringpipe v0.0.0
	github.com/ringpipe/ringpipe/metrics v0.0.0
)

replace github.com/ringpipe/ringpipe => %s

replace github.com/ringpipe/ringpipe/metrics => %s
`, root, filepath.Join(root, "metrics"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod), 0o644))
	sum, err := os.ReadFile(filepath.Join(root, "metrics", "go.sum"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(taProbeSrc), 0o644))
	bin := filepath.Join(dir, "probe")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	t0 := time.Now()
	outb, err := cmd.CombinedOutput()
	require.NoError(t, err, "building the probe:\n%s", outb)
	t.Logf("probe built in %v", time.Since(t0).Round(time.Millisecond))
	return bin
}

// TestTelemetryAuditPrometheus: the exported metrics, through promhttp's
// handler, on the simulated disk and on real directories (std, io_uring):
// a fresh engine, one writer, 32 writers under scrapes (Put, Delete,
// PutAsync; on sim into a stalled hot file: staged writes, late copies), a
// Flush under scrapes, an io-unit restart (sim), Stop, a restart on the
// same directory and a failed engine (sim). Every scrape must parse and
// hold the documented metrics with their types and HELP; counters and
// histogram series never decrease within a lifetime (across Stop too);
// each quiet scrape equals its Stats and Telemetry; after Stop the values
// stay with ringpipe_stopped 1; a failed engine says ringpipe_failed 1;
// the restarted engine's gauges equal the stopped one's (the disk) and its
// counters start from zero.
func TestTelemetryAuditPrometheus(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skipf("no go command to build the probe: %v", err)
	}
	bin := taBuildProbe(t)
	for _, kind := range []string{"sim", "std", "uring"} {
		t.Run(kind, func(t *testing.T) {
			seed := taSeed(t)
			dir := simDir
			if kind != "sim" {
				dir = t.TempDir()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, kind, dir, strconv.FormatInt(seed, 10))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			outb, err := cmd.Output()
			require.NoError(t, err, "probe: %s", taLastLines(stderr.String(), 30))
			if strings.HasPrefix(string(outb), "SKIP") {
				t.Skipf("io_uring unavailable: %s", outb)
			}
			var snaps []taSnap
			sc := bufio.NewScanner(bytes.NewReader(outb))
			sc.Buffer(make([]byte, 1<<20), 16<<20)
			for sc.Scan() {
				var s taSnap
				require.NoError(t, json.Unmarshal(sc.Bytes(), &s))
				snaps = append(snaps, s)
			}
			require.NoError(t, sc.Err())
			require.NotEmpty(t, snaps)
			load := 0
			prev := map[int]map[string]float64{}
			var lastQuiet map[int]taSnap = map[int]taSnap{}
			var byLabel = map[string]map[string]*taFamily{}
			for _, s := range snaps {
				fams := taCheckScrape(t, s)
				if !s.Quiet {
					load++
				}
				cur := taCounters(fams)
				if p, ok := prev[s.Life]; ok {
					for k, v := range p {
						if !assert.GreaterOrEqual(t, cur[k], v, "life %d, %s: counter %s went down", s.Life, s.Label, k) {
							break
						}
					}
				}
				prev[s.Life] = cur
				if s.Quiet {
					lastQuiet[s.Life] = s
				}
				byLabel[fmt.Sprintf("%d/%s", s.Life, s.Label)] = fams
				if t.Failed() {
					t.Logf("the failing scrape (life %d, %s):\n%s", s.Life, s.Label, s.Text)
					return
				}
			}
			t.Logf("%d scrapes, %d of them under load", len(snaps), load)
			assert.Positive(t, load, "scrapes under load")

			g := func(label, name string, labels ...string) float64 {
				fams := byLabel[label]
				require.NotNil(t, fams, "no scrape %s", label)
				return taOne(t, label, fams, name, labels...)
			}
			// Stop: ringpipe_stopped 1, and the values stay.
			assert.Equal(t, 0.0, g("1/before Stop", "ringpipe_stopped"))
			assert.Equal(t, 1.0, g("1/stopped", "ringpipe_stopped"))
			assert.Equal(t, byLabel["1/stopped"], byLabel["1/stopped, later"], "a stopped engine's metrics stay")
			for _, name := range []string{"ringpipe_unsealed_records", "ringpipe_staged_pending_records"} {
				assert.Equal(t, g("1/before Stop", name), g("1/stopped", name), "%s at Stop", name)
				// The restarted engine's gauges describe the disk.
				assert.Equal(t, g("1/stopped", name), g("2/restarted engine", name), "%s after the restart == at Stop", name)
			}
			assert.Positive(t, g("2/restarted engine", "ringpipe_unsealed_records"), "records left unsealed at Stop (precondition)")
			for _, name := range []string{"ringpipe_promoted_records_total", "ringpipe_sealed_blocks_total",
				"ringpipe_io_deadlines_fired_total", "ringpipe_inline_commits_total", "ringpipe_publishes_total"} {
				assert.Zero(t, g("2/restarted engine", name), "%s starts from zero", name)
			}
			assert.Zero(t, g("2/restarted engine", "ringpipe_writes_total", "path", "direct"))
			assert.Zero(t, g("2/restarted engine", "ringpipe_writes_total", "path", "staged"))
			if kind == "sim" {
				assert.Positive(t, g("1/after the load", "ringpipe_writes_total", "path", "staged"), "writes staged (precondition)")
				assert.Positive(t, g("1/after the load", "ringpipe_io_deadlines_fired_total"))
				assert.Positive(t, g("1/restarted", "ringpipe_actor_restarts_total", "actor", "submitter"), "the io unit restarted")
				assert.Equal(t, 1.0, g("2/failed", "ringpipe_failed"))
				assert.Equal(t, 1.0, g("2/stopped", "ringpipe_failed"))
				assert.Equal(t, 1.0, g("2/stopped", "ringpipe_stopped"))
			}
		})
	}
}

// lastLines returns the last n lines of s.
func taLastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestTelemetryAuditParserSelfCheck: the text parser above finds what it
// is there to find (a check that cannot fail proves nothing).
func TestTelemetryAuditParserSelfCheck(t *testing.T) {
	good := "# HELP x_total An x.\n# TYPE x_total counter\nx_total{a=\"q\\\"\\n\"} 3\n" +
		"# HELP h A h.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n"
	fams, probs := taParse(good)
	require.Empty(t, probs)
	assert.Equal(t, "q\"\n", fams["x_total"].samples[0].labels["a"])
	assert.Len(t, fams["h"].samples, 4)
	for _, bad := range []string{
		"x_total 3\n",                                       // no TYPE
		"# TYPE x counter\nx{a=q} 1\n",                      // unquoted label value
		"# TYPE x counter\nx{a=\"q\"} 1\nx{a=\"q\"} 2\n",    // a series twice
		"# TYPE x counter\nx 1\n# TYPE y gauge\ny 1\nx 2\n", // a split family
		"# TYPE x counter\nx_bucket 1\n",                    // a histogram suffix on a counter
		"# TYPE 1x counter\n1x 1\n",                         // a bad name
		"# TYPE x counter\nx one\n",                         // a bad value
		"# TYPE x counter\nx{a=\"\\q\"} 1\n",                // a bad escape
		"# TYPE x counter\nx 1",                             // no final newline
	} {
		_, probs := taParse(bad)
		assert.NotEmpty(t, probs, "%q parsed clean", bad)
	}
}
