package test

// Acceptance suite written from API.md (and DESIGN.md) alone, black box:
// each test checks what one or more sentences of the contract say, on the
// real backends (io_uring and std) and, where crash behaviour is promised,
// on ring/sim's simulated disk.
//
// API.md / DESIGN.md line -> test
//
//	Start "opens (creating if needed)", Zero values mean "default"  -> TestAcceptZeroConfigRoundTrip
//	Logger "nil: no logging"                                        -> TestAcceptZeroConfigRoundTrip
//	Backend BackendURing / BackendStd, Stats.Backend "uring"|"std"  -> TestAcceptStatsPerBackend
//	Stats.KernelVersion, QueueDepth, Syncs, latency summaries       -> TestAcceptStatsPerBackend
//	Stop "safe to call more than once ... later calls return nil"   -> TestAcceptStopRepeatable
//	Stop "drains and acknowledges what was accepted, makes durable" -> TestAcceptStopDrainsTickets
//	Stop "releases the directory lock", second Start -> ErrLocked   -> TestAcceptLockAcrossBackends
//	"After Stop, writes return ErrStopped; reads on a View ... work" -> TestAcceptAfterStopReadsAndWrites
//	CreateSpace "durable on return"                                 -> TestAcceptCreateSpaceDurable
//	CreateSpace existing name same spec -> ID; different -> ErrSpaceExists (across restarts)
//	                                                                -> TestAcceptCreateSpaceAcrossRestart
//	DESIGN "revision counter resumes above the highest revision"    -> TestAcceptRevisionsResumeAndViewRevision
//	View.Revision after a restart                                   -> TestAcceptRevisionsResumeAndViewRevision
//	Delete "writes a tombstone"; Get "ErrNotFound if ... tombstone" -> TestAcceptDeleteEverywhere
//	Scan "newest live record of every point"                        -> TestAcceptDeleteEverywhere
//	View "consistent read snapshot; it never changes"               -> TestAcceptDeleteEverywhere, TestAcceptViewFrozen
//	Sync "every write accepted before the call is durable"          -> TestAcceptSyncVsFlush
//	Flush "seals ... returns once the block is durable and visible" -> TestAcceptSyncVsFlush
//	"A context cancelled before the write is queued means not applied" -> TestAcceptCancelledNotApplied
//	WALRecovery TolerateTornTail / Strict; CorruptionError Path+Offset -> TestAcceptTornTailModes
//	MaxValueSize "default 1 MiB"                                    -> TestAcceptDefaultMaxValueSize
//	Ticket Done / Wait                                              -> TestAcceptTicketSemantics
//	"Every method is safe for concurrent use"                       -> TestAcceptConcurrentMixed
//	BatchTimeout "longest wait to fill a batch" vs Sync / Stop      -> TestAcceptBatchTimeoutSyncStop (fixed)
//	BatchTimeout vs Flush / CreateSpace                             -> TestAcceptBatchTimeoutFlushCreate (fixed)
//	RingEntries "submission queue depth" (8) with many spaces       -> TestAcceptSmallRingManySpaces
//	CorruptionError for a damaged block, Path relative to Dir       -> TestAcceptCorruptBlockNamed
//	PutAsync "returns once the write is queued" (ctx bounds queueing) -> TestAcceptPutAsyncCtxOnlyBoundsQueueing
//	Delete "durable on return" (power loss)                         -> TestAcceptDeleteDurable
//	Flush durable (power loss right after)                          -> TestAcceptFlushThenPowerLoss
//
// Ambiguities, and the reading tested: API.md does not say whether
// BatchTimeout may delay Sync, Stop, Flush or CreateSpace; a user reads it
// as a bound on how long a write waits for company, not as a delay on
// calls that ask for everything queued to be settled now. Whether
// WALRecovery also governs hot segments is not said; only the staging
// WAL is checked.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
)

// accBackends are the real backends every disk-level sentence is checked on.
var accBackends = []struct {
	name string
	b    ringpipe.Backend
}{
	{"uring", ringpipe.BackendURing},
	{"std", ringpipe.BackendStd},
}

// accEachBackend runs fn for each real backend (skipping uring when the
// kernel refuses it) and for the simulated disk.
func accEachBackend(t *testing.T, sim bool, fn func(t *testing.T, cfg ringpipe.Config)) {
	for _, bk := range accBackends {
		t.Run(bk.name, func(t *testing.T) {
			cfg := realConfig(t, bk.b)
			if bk.b == ringpipe.BackendURing {
				e, err := ringpipe.Start(ctxFor(t), cfg)
				if err != nil {
					t.Skipf("io_uring refused: %v", err)
				}
				require.NoError(t, e.Stop(ctxFor(t)))
			}
			fn(t, cfg)
		})
	}
	if sim {
		t.Run("sim", func(t *testing.T) { fn(t, simConfig(t, newSimDisk(t, 4242))) })
	}
}

// TestAcceptZeroConfigRoundTrip: a Config with only Dir (every other field
// zero, Logger nil) starts, on a directory that does not exist yet, and
// round-trips a write across a restart.
func TestAcceptZeroConfigRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fresh")
	ctx := ctxFor(t)
	e, err := ringpipe.Start(ctx, ringpipe.Config{Dir: dir})
	require.NoError(t, err)
	sp, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "zero", Dims: 2, Bits: 16})
	require.NoError(t, err)
	rev, err := e.Put(ctx, sp, ringpipe.Point{65535, 0}, []byte("z"))
	require.NoError(t, err)
	require.NoError(t, e.Stop(ctx))

	e, err = ringpipe.Start(ctx, ringpipe.Config{Dir: dir})
	require.NoError(t, err)
	defer func() { assert.NoError(t, e.Stop(ctxFor(t))) }()
	rec, err := e.Get(ctx, sp, ringpipe.Point{65535, 0})
	require.NoError(t, err)
	assert.Equal(t, ringpipe.Record{Space: sp, Point: ringpipe.Point{65535, 0}, Revision: rev, Value: []byte("z")}, rec)
}

// TestAcceptStatsPerBackend: Stats.Backend is the backend asked for
// ("uring" / "std"), KernelVersion is set, an idle engine has QueueDepth 0,
// every acknowledged Put is counted once (DirectWrites+StagedWrites and
// WriteLatency.Count), a durable write issued at least one sync, and the
// latency summaries are ordered (P50 <= P99 <= P999 <= Max).
func TestAcceptStatsPerBackend(t *testing.T) {
	for _, bk := range accBackends {
		t.Run(bk.name, func(t *testing.T) {
			cfg := realConfig(t, bk.b)
			e, err := ringpipe.Start(ctxFor(t), cfg)
			if bk.b == ringpipe.BackendURing && err != nil {
				t.Skipf("io_uring refused: %v", err)
			}
			require.NoError(t, err)
			defer func() { _ = e.Stop(ctxFor(t)) }()
			st := e.Stats()
			assert.Equal(t, bk.name, st.Backend)
			assert.NotEmpty(t, st.KernelVersion)
			sp := createSpace(t, e, "s", 1, 16)
			ctx := ctxFor(t)
			const n = 40
			for i := range n {
				_, err := e.Put(ctx, sp, ringpipe.Point{uint32(i)}, []byte("v"))
				require.NoError(t, err)
			}
			st = e.Stats()
			assert.Equal(t, uint64(n), st.DirectWrites+st.StagedWrites, "each acknowledged Put counted once")
			assert.Equal(t, uint64(n), st.WriteLatency.Count, "WriteLatency counts each Put")
			assert.Positive(t, st.Syncs)
			assert.Positive(t, st.SyncLatency.Count)
			assert.Zero(t, st.QueueDepth, "idle engine")
			for name, l := range map[string]ringpipe.LatencySummary{"WriteLatency": st.WriteLatency, "SyncLatency": st.SyncLatency} {
				assert.Positive(t, l.P50, name)
				assert.LessOrEqual(t, l.P50, l.P99, name)
				assert.LessOrEqual(t, l.P99, l.P999, name)
				assert.LessOrEqual(t, l.P999, l.Max, name)
			}
			require.NoError(t, e.Stop(ctxFor(t)))
		})
	}
	t.Run("auto", func(t *testing.T) {
		e := start(t, realConfig(t, ringpipe.BackendAuto))
		assert.Contains(t, []string{"uring", "std"}, e.Stats().Backend)
		stop(t, e)
	})
}

// TestAcceptStopRepeatable: Stop called again returns nil, sequentially
// and from several goroutines at once; also after a first Stop whose ctx
// had already ended (Stop is "bounded by ctx"), and it released the lock.
func TestAcceptStopRepeatable(t *testing.T) {
	accEachBackend(t, true, func(t *testing.T, cfg ringpipe.Config) {
		e, err := ringpipe.Start(ctxFor(t), cfg)
		require.NoError(t, err)
		sp := createSpace(t, e, "s", 1, 8)
		rev, err := e.Put(ctxFor(t), sp, ringpipe.Point{3}, []byte("x"))
		require.NoError(t, err)
		dead, cancel := context.WithCancel(context.Background())
		cancel()
		first := e.Stop(dead)
		t.Logf("Stop with an ended ctx: %v", first)
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range errs {
			wg.Go(func() { errs[i] = e.Stop(ctxFor(t)) })
		}
		wg.Wait()
		for i, err := range errs {
			assert.NoError(t, err, "later Stop %d", i)
		}
		assert.NoError(t, e.Stop(ctxFor(t)), "a later sequential Stop")
		_, err = e.Put(ctxFor(t), sp, ringpipe.Point{4}, []byte("y"))
		assert.ErrorIs(t, err, ringpipe.ErrStopped)

		e2 := start(t, cfg) // the lock was released
		rec, err := e2.Get(ctxFor(t), sp, ringpipe.Point{3})
		require.NoError(t, err, "an acknowledged Put survives a Stop cut short by ctx")
		assert.Equal(t, rev, rec.Revision)
		_, err = e2.Get(ctxFor(t), sp, ringpipe.Point{4})
		assert.ErrorIs(t, err, ringpipe.ErrNotFound, "a Put refused with ErrStopped is not applied")
		stop(t, e2)
	})
}

// TestAcceptStopDrainsTickets: "Stop stops accepting writes, drains and
// acknowledges what was accepted, makes it durable": every PutAsync that
// returned a ticket before Stop is acknowledged (Wait: nil and a revision)
// and is there after a restart with that revision.
func TestAcceptStopDrainsTickets(t *testing.T) {
	accEachBackend(t, true, func(t *testing.T, cfg ringpipe.Config) {
		ctx := ctxFor(t)
		e, err := ringpipe.Start(ctx, cfg)
		require.NoError(t, err)
		sp := createSpace(t, e, "s", 1, 16)
		const n = 600
		tks := make([]*ringpipe.Ticket, n)
		for i := range tks {
			tks[i], err = e.PutAsync(ctx, sp, ringpipe.Point{uint32(i)}, fmt.Appendf(nil, "v%d", i))
			require.NoError(t, err)
		}
		require.NoError(t, e.Stop(ctx))
		revs := make([]ringpipe.Revision, n)
		for i, tk := range tks {
			select {
			case <-tk.Done():
			default:
				t.Errorf("ticket %d not done after Stop returned", i)
			}
			revs[i], err = tk.Wait(ctx)
			require.NoError(t, err, "ticket %d: accepted before Stop, so acknowledged by it", i)
		}
		e = start(t, cfg)
		for i := range n {
			rec, err := e.Get(ctx, sp, ringpipe.Point{uint32(i)})
			require.NoError(t, err, "point %d", i)
			assert.Equal(t, revs[i], rec.Revision, "point %d", i)
			assert.Equal(t, fmt.Appendf(nil, "v%d", i), rec.Value)
		}
		stop(t, e)
	})
}

// TestAcceptLockAcrossBackends: "A second Start on a directory in use
// returns ErrLocked", whatever backend either engine uses; the refused
// Start leaves the running engine alone; after Stop the lock is free.
func TestAcceptLockAcrossBackends(t *testing.T) {
	dir := t.TempDir()
	cfgA := realConfig(t, ringpipe.BackendStd)
	cfgA.Dir = dir
	cfgB := realConfig(t, ringpipe.BackendAuto)
	cfgB.Dir = dir
	e := start(t, cfgA)
	sp := createSpace(t, e, "s", 1, 8)
	for range 3 {
		e2, err := ringpipe.Start(ctxFor(t), cfgB)
		require.ErrorIs(t, err, ringpipe.ErrLocked)
		assert.Nil(t, e2)
		assert.Contains(t, err.Error(), dir, "the error says which directory")
	}
	_, err := e.Put(ctxFor(t), sp, ringpipe.Point{1}, []byte("a"))
	require.NoError(t, err)
	stop(t, e)
	e = start(t, cfgB)
	_, err = e.Get(ctxFor(t), sp, ringpipe.Point{1})
	require.NoError(t, err)
	stop(t, e)
}

// TestAcceptAfterStopReadsAndWrites: after Stop every write (Put, Delete,
// PutAsync, CreateSpace, Flush, Sync) says ErrStopped; a View taken
// earlier still reads (Get and Scan, tail and block).
func TestAcceptAfterStopReadsAndWrites(t *testing.T) {
	accEachBackend(t, true, func(t *testing.T, cfg ringpipe.Config) {
		ctx := ctxFor(t)
		e := start(t, cfg)
		sp := createSpace(t, e, "s", 2, 4)
		r1, err := e.Put(ctx, sp, ringpipe.Point{1, 1}, []byte("block"))
		require.NoError(t, err)
		require.NoError(t, e.Flush(ctx, sp))
		r2, err := e.Put(ctx, sp, ringpipe.Point{2, 2}, []byte("tail"))
		require.NoError(t, err)
		v := e.View()
		stop(t, e)

		_, err = e.Put(ctx, sp, ringpipe.Point{3, 3}, []byte("x"))
		assert.ErrorIs(t, err, ringpipe.ErrStopped, "Put")
		_, err = e.Delete(ctx, sp, ringpipe.Point{1, 1})
		assert.ErrorIs(t, err, ringpipe.ErrStopped, "Delete")
		_, err = e.PutAsync(ctx, sp, ringpipe.Point{3, 3}, []byte("x"))
		assert.ErrorIs(t, err, ringpipe.ErrStopped, "PutAsync")
		_, err = e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "late", Dims: 1, Bits: 1})
		assert.ErrorIs(t, err, ringpipe.ErrStopped, "CreateSpace")
		assert.ErrorIs(t, e.Flush(ctx, sp), ringpipe.ErrStopped, "Flush")
		assert.ErrorIs(t, e.Sync(ctx), ringpipe.ErrStopped, "Sync")

		for name, r := range map[string]reader{"earlier View": viewReader(v), "Engine": engineReader(t, e)} {
			rec, err := r.get(sp, ringpipe.Point{1, 1})
			if assert.NoError(t, err, name) {
				assert.Equal(t, ringpipe.Record{Space: sp, Point: ringpipe.Point{1, 1}, Revision: r1, Value: []byte("block")}, rec, name)
			}
			rec, err = r.get(sp, ringpipe.Point{2, 2})
			if assert.NoError(t, err, name) {
				assert.Equal(t, r2, rec.Revision, name)
			}
			var got []ringpipe.Revision
			require.NoError(t, r.scan(sp, ringpipe.Box{Min: ringpipe.Point{0, 0}, Max: ringpipe.Point{15, 15}}, func(r ringpipe.Record) bool {
				got = append(got, r.Revision)
				return true
			}), name)
			assert.ElementsMatch(t, []ringpipe.Revision{r1, r2}, got, name)
		}
		assert.Len(t, e.Spaces(), 1, "Spaces after Stop")
	})
}

// TestAcceptCreateSpaceDurable: "CreateSpace is durable on return": a
// power loss right after it returns keeps the space, with its ID and spec.
func TestAcceptCreateSpaceDurable(t *testing.T) {
	for seed := int64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			disk := newSimDisk(t, seed)
			cfg := simConfig(t, disk)
			e, err := ringpipe.Start(ctxFor(t), cfg)
			require.NoError(t, err)
			var want []ringpipe.SpaceInfo
			for i := range int(seed) {
				spec := ringpipe.SpaceSpec{Name: fmt.Sprintf("space-%d", i), Dims: 1 + i%3, Bits: 8}
				id, err := e.CreateSpace(ctxFor(t), spec)
				require.NoError(t, err)
				want = append(want, ringpipe.SpaceInfo{ID: id, SpaceSpec: spec})
			}
			disk.PowerLoss(rand.New(rand.NewSource(seed)))
			sctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			defer cancel()
			t.Logf("Stop after power loss: %v", e.Stop(sctx))
			e = start(t, cfg)
			assert.Equal(t, want, e.Spaces())
			for _, s := range want {
				id, err := e.CreateSpace(ctxFor(t), s.SpaceSpec)
				require.NoError(t, err)
				assert.Equal(t, s.ID, id)
			}
			stop(t, e)
		})
	}
}

// TestAcceptCreateSpaceAcrossRestart: "Creating an existing name with the
// same spec returns its ID; with a different spec, ErrSpaceExists" holds
// across a restart too, and a new name never reuses an ID.
func TestAcceptCreateSpaceAcrossRestart(t *testing.T) {
	accEachBackend(t, true, func(t *testing.T, cfg ringpipe.Config) {
		ctx := ctxFor(t)
		e := start(t, cfg)
		a := ringpipe.SpaceSpec{Name: "a", Dims: 3, Bits: 7}
		ida, err := e.CreateSpace(ctx, a)
		require.NoError(t, err)
		idb := createSpace(t, e, "b", 1, 32)
		stop(t, e)

		e = start(t, cfg)
		again, err := e.CreateSpace(ctx, a)
		require.NoError(t, err)
		assert.Equal(t, ida, again)
		for _, spec := range []ringpipe.SpaceSpec{{Name: "a", Dims: 3, Bits: 8}, {Name: "a", Dims: 2, Bits: 7}, {Name: "b", Dims: 1, Bits: 31}} {
			_, err = e.CreateSpace(ctx, spec)
			assert.ErrorIs(t, err, ringpipe.ErrSpaceExists, "%+v", spec)
		}
		idc := createSpace(t, e, "c", 2, 2)
		assert.NotEqual(t, ida, idc)
		assert.NotEqual(t, idb, idc)
		assert.Equal(t, []ringpipe.SpaceInfo{
			{ID: ida, SpaceSpec: a},
			{ID: idb, SpaceSpec: ringpipe.SpaceSpec{Name: "b", Dims: 1, Bits: 32}},
			{ID: idc, SpaceSpec: ringpipe.SpaceSpec{Name: "c", Dims: 2, Bits: 2}},
		}, e.Spaces())
		stop(t, e)
	})
}

// TestAcceptRevisionsResumeAndViewRevision: revisions keep increasing
// across restarts ("the revision counter resumes above the highest
// revision found anywhere"), whether the newest record was a Put or a
// Delete, in a block or in the tail; and a fresh View after the restart
// has Revision equal to the highest revision it shows.
func TestAcceptRevisionsResumeAndViewRevision(t *testing.T) {
	accEachBackend(t, true, func(t *testing.T, cfg ringpipe.Config) {
		ctx := ctxFor(t)
		e := start(t, cfg)
		assert.Zero(t, e.View().Revision(), "a fresh engine's View shows nothing")
		sp := createSpace(t, e, "s", 1, 8)
		var last ringpipe.Revision
		for round, how := range []string{"put-tail", "delete-tail", "put-flushed", "delete-flushed"} {
			var rev ringpipe.Revision
			var err error
			if strings.HasPrefix(how, "put") {
				rev, err = e.Put(ctx, sp, ringpipe.Point{uint32(round)}, []byte(how))
			} else {
				rev, err = e.Delete(ctx, sp, ringpipe.Point{uint32(round - 1)})
			}
			require.NoError(t, err, how)
			require.Greater(t, rev, last, how)
			last = rev
			if strings.HasSuffix(how, "flushed") {
				require.NoError(t, e.Flush(ctx, sp))
			}
			assert.Equal(t, last, e.View().Revision(), "%s: View after the write", how)
			stop(t, e)
			e = start(t, cfg)
			assert.Equal(t, last, e.View().Revision(), "%s: View.Revision after a restart", how)
			rev, err = e.Put(ctx, sp, ringpipe.Point{200}, []byte("probe"))
			require.NoError(t, err)
			assert.Greater(t, rev, last, "%s: first revision after the restart", how)
			last = rev
		}
		stop(t, e)
	})
}

// TestAcceptDeleteEverywhere: a Delete hides the point from Get, View.Get
// and Scan, whether the deleted record is in the tail or a block and the
// tombstone in the tail or a block, across a restart; a View taken before
// the Delete still shows the record; a later Put brings the point back.
func TestAcceptDeleteEverywhere(t *testing.T) {
	accEachBackend(t, true, func(t *testing.T, cfg ringpipe.Config) {
		ctx := ctxFor(t)
		e := start(t, cfg)
		spec := ringpipe.SpaceSpec{Name: "s", Dims: 2, Bits: 3}
		sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
		box := fullBox(spec)
		live := func(r reader) map[string]ringpipe.Revision {
			out := map[string]ringpipe.Revision{}
			require.NoError(t, r.scan(sp, box, func(rec ringpipe.Record) bool {
				assert.False(t, rec.Tombstone)
				assert.NotNil(t, rec.Value)
				out[fmt.Sprint(rec.Point)] = rec.Revision
				return true
			}))
			return out
		}
		// a: written and flushed, deleted in the tail.
		// b: written in the tail, deleted in the tail, then both flushed.
		// c: written and flushed, deleted and flushed (tombstone in a newer block).
		// d: stays live.
		pa, pb, pc, pd := ringpipe.Point{0, 1}, ringpipe.Point{2, 3}, ringpipe.Point{4, 5}, ringpipe.Point{7, 7}
		_, err := e.Put(ctx, sp, pa, []byte("a"))
		require.NoError(t, err)
		_, err = e.Put(ctx, sp, pc, []byte("c"))
		require.NoError(t, err)
		rd, err := e.Put(ctx, sp, pd, []byte("d"))
		require.NoError(t, err)
		require.NoError(t, e.Flush(ctx, sp))
		_, err = e.Put(ctx, sp, pb, []byte("b"))
		require.NoError(t, err)
		before := e.View()
		for _, p := range []ringpipe.Point{pb, pc} {
			_, err = e.Delete(ctx, sp, p)
			require.NoError(t, err)
		}
		require.NoError(t, e.Flush(ctx, sp))
		_, err = e.Delete(ctx, sp, pa)
		require.NoError(t, err)

		check := func(t *testing.T, e *ringpipe.Engine) {
			for name, r := range map[string]reader{"Engine": engineReader(t, e), "View": viewReader(e.View())} {
				for _, p := range []ringpipe.Point{pa, pb, pc} {
					_, err := r.get(sp, p)
					assert.ErrorIs(t, err, ringpipe.ErrNotFound, "%s: Get %v after Delete", name, p)
				}
				assert.Equal(t, map[string]ringpipe.Revision{fmt.Sprint(pd): rd}, live(r), "%s: Scan shows only the live point", name)
			}
		}
		t.Run("live", func(t *testing.T) { check(t, e) })
		assert.Len(t, live(viewReader(before)), 4, "a View taken before the Deletes still shows a, b, c and d")
		stop(t, e)
		e = start(t, cfg)
		t.Run("restart", func(t *testing.T) { check(t, e) })
		require.NoError(t, e.Flush(ctx, sp))
		t.Run("flushed", func(t *testing.T) { check(t, e) })
		rb, err := e.Put(ctx, sp, pb, []byte("b again"))
		require.NoError(t, err)
		rec, err := e.Get(ctx, sp, pb)
		require.NoError(t, err)
		assert.Equal(t, rb, rec.Revision)
		stop(t, e)
	})
}

// TestAcceptViewFrozen: "View returns a consistent read snapshot; it never
// changes": overwrites, deletes, a Flush, new spaces and Stop after the
// View was taken change nothing it returns, Revision included.
func TestAcceptViewFrozen(t *testing.T) {
	accEachBackend(t, false, func(t *testing.T, cfg ringpipe.Config) {
		ctx := ctxFor(t)
		e := start(t, cfg)
		spec := ringpipe.SpaceSpec{Name: "s", Dims: 1, Bits: 10}
		sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
		for i := range 300 {
			_, err := e.PutAsync(ctx, sp, ringpipe.Point{uint32(i)}, fmt.Appendf(nil, "old%d", i))
			require.NoError(t, err)
		}
		require.NoError(t, e.Sync(ctx))
		require.NoError(t, e.Flush(ctx, sp))
		for i := 300; i < 400; i++ {
			_, err := e.Put(ctx, sp, ringpipe.Point{uint32(i)}, fmt.Appendf(nil, "old%d", i))
			require.NoError(t, err)
		}
		v := e.View()
		snap := func() (ringpipe.Revision, []string) {
			var out []string
			require.NoError(t, v.Scan(sp, fullBox(spec), func(r ringpipe.Record) bool {
				out = append(out, fmt.Sprintf("%v=%s@%d", r.Point, r.Value, r.Revision))
				return true
			}))
			return v.Revision(), out
		}
		rev0, s0 := snap()
		require.Len(t, s0, 400)
		for i := 0; i < 400; i += 3 {
			_, err := e.Put(ctx, sp, ringpipe.Point{uint32(i)}, []byte("new"))
			require.NoError(t, err)
			_, err = e.Delete(ctx, sp, ringpipe.Point{uint32(i + 1)})
			require.NoError(t, err)
		}
		require.NoError(t, e.Flush(ctx, sp))
		createSpace(t, e, "later", 1, 1)
		rev1, s1 := snap()
		assert.Equal(t, rev0, rev1)
		assert.Equal(t, s0, s1)
		stop(t, e)
		rev2, s2 := snap()
		assert.Equal(t, rev0, rev2)
		assert.Equal(t, s0, s2)
	})
}

// TestAcceptSyncVsFlush: Sync makes accepted writes durable (their tickets
// done) without sealing; Flush seals the space's records into a block that
// is durable and visible: SealedBlocks grows, the records read the same,
// and a power loss right after Flush keeps them.
func TestAcceptSyncVsFlush(t *testing.T) {
	accEachBackend(t, true, func(t *testing.T, cfg ringpipe.Config) {
		ctx := ctxFor(t)
		e := start(t, cfg)
		sp := createSpace(t, e, "s", 1, 16)
		other := createSpace(t, e, "o", 1, 16)
		var tks []*ringpipe.Ticket
		for i := range 200 {
			tk, err := e.PutAsync(ctx, sp, ringpipe.Point{uint32(i)}, fmt.Appendf(nil, "%d", i))
			require.NoError(t, err)
			tks = append(tks, tk)
			_, err = e.PutAsync(ctx, other, ringpipe.Point{uint32(i)}, []byte("o"))
			require.NoError(t, err)
		}
		sealed := e.Stats().SealedBlocks
		require.NoError(t, e.Sync(ctx))
		for i, tk := range tks {
			select {
			case <-tk.Done():
			default:
				t.Fatalf("ticket %d not done after Sync", i)
			}
		}
		assert.Equal(t, sealed, e.Stats().SealedBlocks, "Sync does not seal")
		require.NoError(t, e.Flush(ctx, sp))
		assert.Equal(t, sealed+1, e.Stats().SealedBlocks, "Flush of one space seals one block")
		for i, tk := range tks {
			rev, err := tk.Wait(ctx)
			require.NoError(t, err)
			rec, err := e.Get(ctx, sp, ringpipe.Point{uint32(i)})
			require.NoError(t, err)
			assert.Equal(t, rev, rec.Revision)
		}
		// More writes, then Flush without a Sync: Flush covers what was
		// acknowledged before it.
		var revs []ringpipe.Revision
		for i := 200; i < 260; i++ {
			rev, err := e.Put(ctx, sp, ringpipe.Point{uint32(i)}, []byte("late"))
			require.NoError(t, err)
			revs = append(revs, rev)
		}
		require.NoError(t, e.Flush(ctx, sp))
		assert.Equal(t, sealed+2, e.Stats().SealedBlocks)
		require.NoError(t, e.Flush(ctx, sp), "Flush with nothing unsealed")
		assert.Equal(t, sealed+2, e.Stats().SealedBlocks, "Flush with nothing unsealed seals no empty block")
		stop(t, e)
		e = start(t, cfg)
		for i, rev := range revs {
			rec, err := e.Get(ctx, sp, ringpipe.Point{uint32(200 + i)})
			require.NoError(t, err)
			assert.Equal(t, rev, rec.Revision)
		}
		stop(t, e)
	})
}

// TestAcceptFlushThenPowerLoss: a Flush returned means the block is
// durable: a power loss right after it loses none of the records, and
// none comes back twice or from an older revision.
func TestAcceptFlushThenPowerLoss(t *testing.T) {
	for seed := int64(11); seed < 11+seeds(4); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			disk := newSimDisk(t, seed)
			cfg := simConfig(t, disk)
			e, err := ringpipe.Start(ctxFor(t), cfg)
			require.NoError(t, err)
			spec := ringpipe.SpaceSpec{Name: "s", Dims: 2, Bits: 4}
			sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
			m := newModel(spec)
			rng := rand.New(rand.NewSource(seed))
			ctx := ctxFor(t)
			for i := range 150 {
				p := randPoint(rng, spec)
				if i%7 == 3 {
					rev, err := e.Delete(ctx, sp, p)
					require.NoError(t, err)
					m.add(write{point: p, rev: rev})
					continue
				}
				v := fmt.Appendf(nil, "%d", i)
				rev, err := e.Put(ctx, sp, p, v)
				require.NoError(t, err)
				m.add(write{point: p, rev: rev, value: v})
				if i == 70 {
					require.NoError(t, e.Flush(ctx, sp))
				}
			}
			require.NoError(t, e.Flush(ctx, sp))
			disk.PowerLoss(rng)
			sctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			defer cancel()
			t.Logf("Stop after power loss: %v", e.Stop(sctx))
			e = start(t, cfg)
			checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
			stop(t, e)
		})
	}
}

// TestAcceptCancelledNotApplied: "A context cancelled before the write is
// queued means not applied", for Put, Delete, PutAsync and CreateSpace, on
// each backend, and still not there after a restart.
func TestAcceptCancelledNotApplied(t *testing.T) {
	accEachBackend(t, true, func(t *testing.T, cfg ringpipe.Config) {
		ctx := ctxFor(t)
		e := start(t, cfg)
		sp := createSpace(t, e, "s", 1, 8)
		rev, err := e.Put(ctx, sp, ringpipe.Point{1}, []byte("keep"))
		require.NoError(t, err)
		dead, cancel := context.WithCancel(ctx)
		cancel()
		_, err = e.Put(dead, sp, ringpipe.Point{2}, []byte("no"))
		assert.ErrorIs(t, err, context.Canceled, "Put")
		_, err = e.Delete(dead, sp, ringpipe.Point{1})
		assert.ErrorIs(t, err, context.Canceled, "Delete")
		tk, err := e.PutAsync(dead, sp, ringpipe.Point{3}, []byte("no"))
		assert.ErrorIs(t, err, context.Canceled, "PutAsync")
		assert.Nil(t, tk)
		_, err = e.CreateSpace(dead, ringpipe.SpaceSpec{Name: "no", Dims: 1, Bits: 1})
		assert.ErrorIs(t, err, context.Canceled, "CreateSpace")
		require.NoError(t, e.Sync(ctx))
		check := func(e *ringpipe.Engine) {
			rec, err := e.Get(ctx, sp, ringpipe.Point{1})
			if assert.NoError(t, err, "the cancelled Delete was not applied") {
				assert.Equal(t, rev, rec.Revision)
			}
			for _, p := range []uint32{2, 3} {
				_, err = e.Get(ctx, sp, ringpipe.Point{p})
				assert.ErrorIs(t, err, ringpipe.ErrNotFound, "point %d", p)
			}
			assert.Len(t, e.Spaces(), 1)
		}
		check(e)
		// The next write's revision follows the last applied one: nothing
		// was assigned to the refused writes that a reader could see.
		stop(t, e)
		e = start(t, cfg)
		check(e)
		stop(t, e)
	})
}

// accLiveCopy copies the directory of a running engine (an image of the
// files as a kill -9 would leave them: acknowledged writes are in them),
// skipping LOCK.
func accLiveCopy(t *testing.T, src, dst string) {
	t.Helper()
	require.NoError(t, filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if rel == "LOCK" {
			return nil
		}
		to := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(to)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	}))
}

// accDataEnd is the offset just past the last non-zero byte of data,
// rounded up to 8 bytes (DESIGN.md does not say frames are aligned; the
// format pads them to 8 with zeros, and a write there would damage the
// acknowledged frame's padding rather than add a torn one).
func accDataEnd(data []byte) int {
	end := len(data)
	for end > 0 && data[end-1] == 0 {
		end--
	}
	return (end + 7) &^ 7
}

// TestAcceptTornTailModes: WALRecovery "TolerateTornTail (default) or
// Strict". A staging WAL whose last frame was cut short (a torn tail, never
// acknowledged) is dropped by TolerateTornTail, keeping every acknowledged
// write; Strict refuses to start with a *CorruptionError that names the
// WAL file (relative to Dir) and the offset of the torn frame.
func TestAcceptTornTailModes(t *testing.T) {
	for _, bk := range accBackends {
		t.Run(bk.name, func(t *testing.T) {
			cfg := realConfig(t, bk.b)
			cfg.DirectWriteTimeout = time.Nanosecond // every write misses its deadline: staged
			cfg.PromoteInterval = time.Hour          // and stays in the WAL
			e, err := ringpipe.Start(ctxFor(t), cfg)
			if bk.b == ringpipe.BackendURing && err != nil {
				t.Skipf("io_uring refused: %v", err)
			}
			require.NoError(t, err)
			defer func() { _ = e.Stop(ctxFor(t)) }()
			sp := createSpace(t, e, "s", 1, 16)
			ctx := ctxFor(t)
			revs := map[uint32]ringpipe.Revision{}
			for i := range 30 {
				rev, err := e.Put(ctx, sp, ringpipe.Point{uint32(i)}, bytes.Repeat([]byte{'v'}, 40))
				require.NoError(t, err)
				revs[uint32(i)] = rev
			}
			st := e.Stats()
			if st.StagedPending == 0 {
				t.Skipf("nothing pending in the staging WAL: %+v", st)
			}
			img := t.TempDir()
			accLiveCopy(t, cfg.Dir, img)
			require.NoError(t, e.Stop(ctxFor(t)))

			logs, err := filepath.Glob(filepath.Join(img, "wal", "*.log"))
			require.NoError(t, err)
			var target string
			var end int
			for _, l := range logs {
				data, err := os.ReadFile(l)
				require.NoError(t, err)
				if n := accDataEnd(data); n > end {
					target, end = l, n
				}
			}
			require.NotEmpty(t, target, "a WAL segment with data among %v", logs)
			// A torn final write: 24 bytes of 0xff where the next frame
			// would start, a header whose checksum and length are bad and
			// after which nothing follows.
			f, err := os.OpenFile(target, os.O_WRONLY, 0)
			require.NoError(t, err)
			_, err = f.WriteAt(bytes.Repeat([]byte{0xff}, 24), int64(end))
			require.NoError(t, err)
			require.NoError(t, f.Close())
			rel, err := filepath.Rel(img, target)
			require.NoError(t, err)

			strict := cfg
			strict.Dir = img
			strict.WALRecovery = ringpipe.Strict
			e2, err := ringpipe.Start(ctxFor(t), strict)
			if !assert.Error(t, err, "Strict starts on a torn WAL tail") {
				_ = e2.Stop(ctxFor(t))
			} else {
				assert.ErrorIs(t, err, ringpipe.ErrCorrupt)
				var ce *ringpipe.CorruptionError
				if assert.ErrorAs(t, err, &ce) {
					assert.Equal(t, rel, ce.Path, "Path relative to Dir")
					assert.Equal(t, int64(end), ce.Offset, "offset of the torn frame")
					assert.NotEmpty(t, ce.Reason)
				}
			}

			tol := cfg
			tol.Dir = img
			e3 := start(t, tol)
			for p, rev := range revs {
				rec, err := e3.Get(ctx, sp, ringpipe.Point{p})
				if assert.NoError(t, err, "point %d after dropping the torn tail", p) {
					assert.Equal(t, rev, rec.Revision)
				}
			}
			stop(t, e3)
		})
	}
}

// TestAcceptDefaultMaxValueSize: MaxValueSize "default 1 MiB" (with the
// default Preallocate): a value of exactly 1 MiB is stored, one byte more
// is ErrValueTooLarge from Put and PutAsync and is not applied.
func TestAcceptDefaultMaxValueSize(t *testing.T) {
	cfg := realConfig(t, ringpipe.BackendStd)
	cfg.Preallocate = 0
	e := start(t, cfg)
	sp := createSpace(t, e, "s", 1, 4)
	ctx := ctxFor(t)
	big := bytes.Repeat([]byte{0x5a}, 1<<20)
	rev, err := e.Put(ctx, sp, ringpipe.Point{1}, big)
	require.NoError(t, err, "a value of exactly 1 MiB")
	_, err = e.Put(ctx, sp, ringpipe.Point{2}, append(big, 0))
	assert.ErrorIs(t, err, ringpipe.ErrValueTooLarge)
	_, err = e.PutAsync(ctx, sp, ringpipe.Point{2}, append(big, 0))
	assert.ErrorIs(t, err, ringpipe.ErrValueTooLarge)
	_, err = e.Get(ctx, sp, ringpipe.Point{2})
	assert.ErrorIs(t, err, ringpipe.ErrNotFound)
	rec, err := e.Get(ctx, sp, ringpipe.Point{1})
	require.NoError(t, err)
	assert.Equal(t, rev, rec.Revision)
	assert.True(t, bytes.Equal(big, rec.Value))
	stop(t, e)
}

// TestAcceptTicketSemantics: a Ticket's Done is closed once the write is
// durable and then Get sees it; Wait returns the same revision every time
// and from several goroutines; Wait with an ended ctx on a done ticket
// still returns the result or ctx's error, never a different revision.
func TestAcceptTicketSemantics(t *testing.T) {
	accEachBackend(t, true, func(t *testing.T, cfg ringpipe.Config) {
		ctx := ctxFor(t)
		e := start(t, cfg)
		sp := createSpace(t, e, "s", 1, 8)
		tk, err := e.PutAsync(ctx, sp, ringpipe.Point{5}, []byte("async"))
		require.NoError(t, err)
		select {
		case <-tk.Done():
		case <-ctx.Done():
			t.Fatal("ticket never done")
		}
		rec, err := e.Get(ctx, sp, ringpipe.Point{5})
		require.NoError(t, err, "visible once Done")
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				rev, err := tk.Wait(ctx)
				assert.NoError(t, err)
				assert.Equal(t, rec.Revision, rev)
			})
		}
		wg.Wait()
		dead, cancel := context.WithCancel(ctx)
		cancel()
		rev, err := tk.Wait(dead)
		if err == nil {
			assert.Equal(t, rec.Revision, rev)
		} else {
			assert.ErrorIs(t, err, context.Canceled)
		}
		stop(t, e)
		rev, err = tk.Wait(ctx)
		assert.NoError(t, err, "a done ticket's result outlives Stop")
		assert.Equal(t, rec.Revision, rev)
	})
}

// TestAcceptConcurrentMixed: "Every method is safe for concurrent use":
// writers (Put, Delete, PutAsync), readers (Get, Scan, View), Flush, Sync,
// CreateSpace and Stats at once; afterwards every acknowledged write is
// the newest at its point (Get and Scan), and after a restart too.
func TestAcceptConcurrentMixed(t *testing.T) {
	accEachBackend(t, true, func(t *testing.T, cfg ringpipe.Config) {
		cfg.SealThreshold = 97
		ctx := ctxFor(t)
		e := start(t, cfg)
		spec := ringpipe.SpaceSpec{Name: "s", Dims: 2, Bits: 5}
		sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
		const writers, ops = 6, 150
		models := make([]*model, writers)
		var wg sync.WaitGroup
		for w := range writers {
			models[w] = newModel(spec)
			wg.Go(func() {
				rng := rand.New(rand.NewSource(int64(w)))
				for i := range ops {
					// each writer owns the points with x%writers == w
					p := ringpipe.Point{uint32(rng.Intn(32/writers)*writers + w), uint32(rng.Intn(32))}
					v := fmt.Appendf(nil, "w%d-%d", w, i)
					switch i % 5 {
					case 0:
						rev, err := e.Delete(ctx, sp, p)
						if !assert.NoError(t, err) {
							return
						}
						models[w].add(write{point: p, rev: rev})
					case 1:
						tk, err := e.PutAsync(ctx, sp, p, v)
						if !assert.NoError(t, err) {
							return
						}
						rev, err := tk.Wait(ctx)
						if !assert.NoError(t, err) {
							return
						}
						models[w].add(write{point: p, rev: rev, value: v})
					default:
						rev, err := e.Put(ctx, sp, p, v)
						if !assert.NoError(t, err) {
							return
						}
						models[w].add(write{point: p, rev: rev, value: v})
					}
				}
			})
		}
		done := make(chan struct{})
		var side sync.WaitGroup
		side.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				switch i % 4 {
				case 0:
					assert.NoError(t, e.Flush(ctx, sp))
				case 1:
					assert.NoError(t, e.Sync(ctx))
				case 2:
					_, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: fmt.Sprintf("x%d", i%16), Dims: 1, Bits: 4})
					assert.NoError(t, err)
				case 3:
					_ = e.Stats()
					_ = e.Spaces()
				}
			}
		})
		side.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				v := e.View()
				n := 0
				assert.NoError(t, v.Scan(sp, fullBox(spec), func(r ringpipe.Record) bool {
					n++
					assert.False(t, r.Tombstone)
					return true
				}))
				_, err := v.Get(sp, ringpipe.Point{1, 1})
				if err != nil {
					assert.ErrorIs(t, err, ringpipe.ErrNotFound)
				}
			}
		})
		wg.Wait()
		close(done)
		side.Wait()
		all := newModel(spec)
		for _, m := range models {
			for _, w := range m.last {
				all.add(w)
			}
		}
		checkModel(t, engineReader(t, e), sp, all, fullBox(spec))
		stop(t, e)
		e = start(t, cfg)
		checkModel(t, engineReader(t, e), sp, all, fullBox(spec))
		stop(t, e)
	})
}

// TestAcceptBatchTimeoutSyncStop: BatchTimeout is the "longest wait to fill
// a batch"; it may delay a write, but Sync ("returns once every write
// accepted before the call is durable") and Stop ("drains and acknowledges
// what was accepted") ask for what is queued now: neither waits out the
// batch timer. BatchTimeout here is one minute; Sync and Stop get 3 s
// each, which a single queued write needs a small fraction of.
// Fixed: before, with BatchTimeout set, Sync and Stop waited out the batch timer behind one queued write: Sync hit its ctx, Stop failed the accepted writes with ErrStopped (every run, both backends; actors/submitter.go take).
func TestAcceptBatchTimeoutSyncStop(t *testing.T) {
	for _, bk := range accBackends {
		t.Run(bk.name, func(t *testing.T) {
			cfg := realConfig(t, bk.b)
			cfg.BatchTimeout = time.Minute
			e, err := ringpipe.Start(ctxFor(t), cfg)
			if bk.b == ringpipe.BackendURing && err != nil {
				t.Skipf("io_uring refused: %v", err)
			}
			require.NoError(t, err)
			defer func() { _ = e.Stop(ctxFor(t)) }()
			sp := createSpace(t, e, "s", 1, 8)
			tk, err := e.PutAsync(ctxFor(t), sp, ringpipe.Point{1}, []byte("a"))
			require.NoError(t, err)
			sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			assert.NoError(t, e.Sync(sctx), "Sync with one write waiting for its batch to fill")
			tk2, err := e.PutAsync(ctxFor(t), sp, ringpipe.Point{2}, []byte("b"))
			require.NoError(t, err)
			stctx, cancel2 := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel2()
			assert.NoError(t, e.Stop(stctx), "Stop with one write waiting for its batch to fill")
			for i, tk := range []*ringpipe.Ticket{tk, tk2} {
				_, err := tk.Wait(ctxFor(t))
				assert.NoError(t, err, "ticket %d", i)
			}
		})
	}
}

// TestAcceptBatchTimeoutFlushCreate: the same for Flush (of the space the
// waiting write is for, and of another) and CreateSpace: a write waiting
// for its batch to fill does not hold up the engine's other requests for
// BatchTimeout (one minute here; each call gets 2 s; the subtest's own
// Stop gets 1 s and is only logged, TestAcceptBatchTimeoutSyncStop checks
// Stop).
// Fixed: before, with BatchTimeout set, one queued write blocked Flush (any space) and CreateSpace until the batch timer fired (every run; actors/submitter.go take).
func TestAcceptBatchTimeoutFlushCreate(t *testing.T) {
	for _, what := range []string{"Flush same space", "Flush other space", "CreateSpace"} {
		t.Run(what, func(t *testing.T) {
			cfg := realConfig(t, ringpipe.BackendStd)
			cfg.BatchTimeout = time.Minute
			e := start(t, cfg)
			sp := createSpace(t, e, "s", 1, 8)
			other := createSpace(t, e, "o", 1, 8)
			_, err := e.Put(ctxFor(t), other, ringpipe.Point{1}, []byte("flushable"))
			require.NoError(t, err)
			_, err = e.PutAsync(ctxFor(t), sp, ringpipe.Point{1}, []byte("a"))
			require.NoError(t, err)
			cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			switch what {
			case "Flush same space":
				err = e.Flush(cctx, sp)
			case "Flush other space":
				err = e.Flush(cctx, other)
			case "CreateSpace":
				_, err = e.CreateSpace(cctx, ringpipe.SpaceSpec{Name: "new", Dims: 2, Bits: 2})
			}
			assert.NoError(t, err, what)
			sctx, cancel2 := context.WithTimeout(context.Background(), time.Second)
			defer cancel2()
			t.Logf("Stop: %v", e.Stop(sctx))
		})
	}
}

// TestAcceptSmallRingManySpaces: RingEntries is the "submission queue
// depth"; the smallest one (8) still serves a batch that touches more
// spaces than it has entries (one write per space, each with its own
// file), with and without the staging route.
func TestAcceptSmallRingManySpaces(t *testing.T) {
	for _, staged := range []bool{false, true} {
		t.Run(fmt.Sprintf("staged=%v", staged), func(t *testing.T) {
			accEachBackend(t, true, func(t *testing.T, cfg ringpipe.Config) {
				cfg.RingEntries = 8
				if staged {
					cfg.DirectWriteTimeout = time.Nanosecond
				}
				ctx := ctxFor(t)
				e := start(t, cfg)
				const spaces = 40
				ids := make([]ringpipe.SpaceID, spaces)
				for i := range ids {
					ids[i] = createSpace(t, e, fmt.Sprintf("s%d", i), 1, 8)
				}
				var tks []*ringpipe.Ticket
				for round := range 3 {
					for _, id := range ids {
						tk, err := e.PutAsync(ctx, id, ringpipe.Point{uint32(round)}, []byte("v"))
						require.NoError(t, err)
						tks = append(tks, tk)
					}
				}
				var wg sync.WaitGroup
				for i, id := range ids {
					wg.Go(func() {
						_, err := e.Put(ctx, id, ringpipe.Point{100}, fmt.Appendf(nil, "%d", i))
						assert.NoError(t, err)
					})
				}
				wg.Wait()
				require.NoError(t, e.Sync(ctx))
				for i, tk := range tks {
					_, err := tk.Wait(ctx)
					require.NoError(t, err, "ticket %d", i)
				}
				stop(t, e)
				e = start(t, cfg)
				for i, id := range ids {
					for _, p := range []uint32{0, 1, 2, 100} {
						_, err := e.Get(ctx, id, ringpipe.Point{p})
						assert.NoError(t, err, "space %d point %d", i, p)
					}
				}
				stop(t, e)
			})
		})
	}
}

// TestAcceptCorruptBlockNamed: "CorruptionError says which file is damaged
// and where", Path "relative to Config.Dir". A flipped bit inside a sealed
// block is refused, at Start or at the read that meets it, with a
// *CorruptionError naming the block file relative to Dir and an offset
// inside it; no read returns a value that was never written.
func TestAcceptCorruptBlockNamed(t *testing.T) {
	for _, frac := range []int{3, 2} {
		t.Run(fmt.Sprintf("at1of%d", frac), func(t *testing.T) {
			cfg := realConfig(t, ringpipe.BackendStd)
			ctx := ctxFor(t)
			e := start(t, cfg)
			sp := createSpace(t, e, "s", 1, 16)
			const n = 3000
			val := func(i int) []byte { return fmt.Appendf(nil, "value-%05d-%s", i, strings.Repeat("x", 20)) }
			for i := range n {
				_, err := e.PutAsync(ctx, sp, ringpipe.Point{uint32(i)}, val(i))
				require.NoError(t, err)
			}
			require.NoError(t, e.Sync(ctx))
			require.NoError(t, e.Flush(ctx, sp))
			stop(t, e)
			blocks, err := filepath.Glob(filepath.Join(cfg.Dir, "blocks", "*", "*.blk"))
			require.NoError(t, err)
			require.Len(t, blocks, 1)
			data, err := os.ReadFile(blocks[0])
			require.NoError(t, err)
			off := len(data) / frac
			data[off] ^= 0x10
			require.NoError(t, os.WriteFile(blocks[0], data, 0o644))
			rel, err := filepath.Rel(cfg.Dir, blocks[0])
			require.NoError(t, err)

			checkCE := func(err error, what string) {
				assert.ErrorIs(t, err, ringpipe.ErrCorrupt, what)
				var ce *ringpipe.CorruptionError
				if assert.ErrorAs(t, err, &ce, what) {
					assert.Equal(t, rel, ce.Path, "%s: Path relative to Dir", what)
					assert.GreaterOrEqual(t, ce.Offset, int64(0), what)
					assert.Less(t, ce.Offset, int64(len(data)), what)
					assert.NotEmpty(t, ce.Reason, what)
				}
			}
			e2, err := ringpipe.Start(ctx, cfg)
			if err != nil {
				checkCE(err, "Start")
				return
			}
			defer func() { _ = e2.Stop(ctxFor(t)) }()
			bad := 0
			for i := range n {
				rec, err := e2.Get(ctx, sp, ringpipe.Point{uint32(i)})
				if err != nil {
					if bad == 0 {
						checkCE(err, fmt.Sprintf("Get %d", i))
					}
					bad++
					continue
				}
				require.Equal(t, val(i), rec.Value, "Get %d returned a value never written", i)
			}
			serr := e2.Scan(ctx, sp, ringpipe.Box{Min: ringpipe.Point{0}, Max: ringpipe.Point{65535}}, func(r ringpipe.Record) bool {
				require.Equal(t, val(int(r.Point[0])), r.Value, "Scan returned a value never written")
				return true
			})
			if bad > 0 {
				checkCE(serr, "Scan")
			}
			t.Logf("Get failed for %d of %d records; Scan: %v", bad, n, serr)
			assert.Positive(t, bad, "a flipped bit inside the block went unnoticed by every Get")
		})
	}
}

// TestAcceptPutAsyncCtxOnlyBoundsQueueing: PutAsync "returns once the
// write is queued"; its ctx bounds the queueing only. Cancelling it right
// after PutAsync returned does not unqueue the write: the ticket completes
// with a revision and the write is there, after a restart too.
func TestAcceptPutAsyncCtxOnlyBoundsQueueing(t *testing.T) {
	accEachBackend(t, true, func(t *testing.T, cfg ringpipe.Config) {
		e := start(t, cfg)
		sp := createSpace(t, e, "s", 1, 8)
		var tks []*ringpipe.Ticket
		for i := range 50 {
			cctx, cancel := context.WithCancel(context.Background())
			tk, err := e.PutAsync(cctx, sp, ringpipe.Point{uint32(i)}, []byte("v"))
			cancel()
			require.NoError(t, err)
			tks = append(tks, tk)
		}
		revs := make([]ringpipe.Revision, len(tks))
		for i, tk := range tks {
			var err error
			revs[i], err = tk.Wait(ctxFor(t))
			require.NoError(t, err, "ticket %d", i)
		}
		stop(t, e)
		e = start(t, cfg)
		for i, rev := range revs {
			rec, err := e.Get(ctxFor(t), sp, ringpipe.Point{uint32(i)})
			require.NoError(t, err, "point %d", i)
			assert.Equal(t, rev, rec.Revision)
		}
		stop(t, e)
	})
}

// TestAcceptDeleteDurable: "Delete writes a tombstone at p, durable on
// return": a power loss right after Delete returned keeps the point
// deleted, also when the deleted record is in a block (so the tombstone is
// the only thing that hides it), and the next revision is above the
// tombstone's.
func TestAcceptDeleteDurable(t *testing.T) {
	for seed := int64(31); seed < 31+seeds(6); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			disk := newSimDisk(t, seed)
			cfg := simConfig(t, disk)
			e, err := ringpipe.Start(ctxFor(t), cfg)
			require.NoError(t, err)
			ctx := ctxFor(t)
			sp := createSpace(t, e, "s", 1, 8)
			for i := range 20 {
				_, err := e.Put(ctx, sp, ringpipe.Point{uint32(i)}, []byte("live"))
				require.NoError(t, err)
			}
			require.NoError(t, e.Flush(ctx, sp))
			var last ringpipe.Revision
			for i := 0; i < 20; i += 2 {
				last, err = e.Delete(ctx, sp, ringpipe.Point{uint32(i)})
				require.NoError(t, err)
			}
			disk.PowerLoss(rand.New(rand.NewSource(seed)))
			sctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			defer cancel()
			t.Logf("Stop after power loss: %v", e.Stop(sctx))
			e = start(t, cfg)
			for i := range 20 {
				_, err := e.Get(ctx, sp, ringpipe.Point{uint32(i)})
				if i%2 == 0 {
					assert.ErrorIs(t, err, ringpipe.ErrNotFound, "point %d deleted before the power loss", i)
				} else {
					assert.NoError(t, err, "point %d", i)
				}
			}
			n := 0
			require.NoError(t, e.Scan(ctx, sp, ringpipe.Box{Min: ringpipe.Point{0}, Max: ringpipe.Point{255}}, func(r ringpipe.Record) bool {
				assert.Equal(t, uint32(1), r.Point[0]%2, "Scan shows deleted point %v", r.Point)
				n++
				return true
			}))
			assert.Equal(t, 10, n)
			rev, err := e.Put(ctx, sp, ringpipe.Point{100}, []byte("after"))
			require.NoError(t, err)
			assert.Greater(t, rev, last)
			stop(t, e)
		})
	}
}
