package test

// The read audit: an adversarial look at Get, Scan, View.Get, View.Scan
// and the Records they hand out, against API.md's "Reads" section and
// "Semantics" list and DESIGN.md §3 (a point's key is its Hilbert index;
// Scan visits keys ascending). Every source a read merges is exercised: the
// live tail, staged records not yet promoted, sealed blocks of several
// generations with overwrites and deletes of the same points across them,
// and what a restart rebuilds (simulated disk, and real directories on the
// std and io_uring backends).
//
// Seeds: $RINGPIPE_READ_SEED replays one; the default seeds are fixed.

import (
	"context"
	"fmt"
	"maps"
	"math/rand"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/snapshot"
)

// raSeeds returns the seeds to run: $RINGPIPE_READ_SEED alone, or defs.
func raSeeds(t *testing.T, defs ...int64) []int64 {
	t.Helper()
	if s, err := strconv.ParseInt(os.Getenv("RINGPIPE_READ_SEED"), 10, 64); err == nil {
		return []int64{s}
	}
	return defs
}

// raSpecs are the spaces of the model runs: the widest keys a space may
// have (1×32, 2×32, 16×4, all 64 bits but the first) and a small cube
// whose few points are overwritten often.
var raSpecs = []ringpipe.SpaceSpec{
	{Name: "line32", Dims: 1, Bits: 32},
	{Name: "plane32", Dims: 2, Bits: 32},
	{Name: "hyper", Dims: 16, Bits: 4},
	{Name: "cube", Dims: 3, Bits: 2},
}

// raMax is the largest coordinate of spec.
func raMax(spec ringpipe.SpaceSpec) uint32 { return uint32(uint64(1)<<spec.Bits - 1) }

// raPool is a pool of n points of spec: the corners first (all 0, all
// max, alternating), then random points; the model runs write only these,
// so that points are overwritten and deleted across generations.
func raPool(rng *rand.Rand, spec ringpipe.SpaceSpec, n int) []ringpipe.Point {
	mx := raMax(spec)
	seen := map[pkey]bool{}
	var out []ringpipe.Point
	add := func(p ringpipe.Point) {
		if !seen[keyOf(p)] {
			seen[keyOf(p)] = true
			out = append(out, p)
		}
	}
	for c := range 4 {
		p := make(ringpipe.Point, spec.Dims)
		for i := range p {
			switch c {
			case 1:
				p[i] = mx
			case 2:
				if i%2 == 0 {
					p[i] = mx
				}
			case 3:
				if i%2 == 1 {
					p[i] = mx
				}
			}
		}
		add(p)
	}
	for tries := 0; len(out) < n && tries < 100*n; tries++ {
		add(randPoint(rng, spec))
	}
	return out
}

// raBox is a random box of spec around pool's points: usually ordered
// corners, sometimes one point (Min == Max), sometimes Min > Max on one
// dimension, sometimes the whole space.
func raBox(rng *rand.Rand, spec ringpipe.SpaceSpec, pool []ringpipe.Point) ringpipe.Box {
	switch rng.Intn(8) {
	case 0:
		return fullBox(spec)
	case 1:
		p := pool[rng.Intn(len(pool))]
		return ringpipe.Box{Min: slices.Clone(p), Max: slices.Clone(p)}
	}
	a, b := pool[rng.Intn(len(pool))], pool[rng.Intn(len(pool))]
	box := ringpipe.Box{Min: make(ringpipe.Point, spec.Dims), Max: make(ringpipe.Point, spec.Dims)}
	for i := range box.Min {
		box.Min[i], box.Max[i] = min(a[i], b[i]), max(a[i], b[i])
		if rng.Intn(4) == 0 {
			box.Min[i] = 0
		}
		if rng.Intn(4) == 0 {
			box.Max[i] = raMax(spec)
		}
	}
	if rng.Intn(6) == 0 {
		// Min > Max on one dimension, both inside the space: empty.
		i := rng.Intn(spec.Dims)
		if box.Max[i] == raMax(spec) {
			box.Max[i]--
		}
		box.Min[i] = box.Max[i] + 1
	}
	return box
}

// raScanCheck checks one Scan of box through r against m: exactly the live
// records inside box, each once, in strictly ascending Hilbert key
// (snapshot.Key), never a tombstone, never an older revision; and a Scan
// stopped after k records called fn exactly k times with the first k.
func raScanCheck(t testing.TB, r reader, sp ringpipe.SpaceID, m *model, box ringpipe.Box, what string) {
	t.Helper()
	want := m.live(box)
	var got []ringpipe.Record
	require.NoError(t, r.scan(sp, box, func(rec ringpipe.Record) bool {
		got = append(got, rec)
		return true
	}), "%s: Scan of %v", what, box)
	for i := 1; i < len(got); i++ {
		ka := snapshot.Key(got[i-1].Point, m.spec.Dims, m.spec.Bits)
		kb := snapshot.Key(got[i].Point, m.spec.Dims, m.spec.Bits)
		require.Less(t, ka, kb, "%s: Scan of %v: record %d (%v) and %d (%v) not in strictly ascending key order",
			what, box, i-1, got[i-1].Point, i, got[i].Point)
	}
	for i, rec := range got {
		require.False(t, rec.Tombstone, "%s: Scan of %v: record %d is a tombstone", what, box, i)
		require.NotNil(t, rec.Value, "%s: Scan of %v: record %d has a nil Value", what, box, i)
		require.True(t, inBox(rec.Point, box), "%s: Scan of %v: record %v outside the box", what, box, rec.Point)
		require.Equal(t, sp, rec.Space, "%s: Scan record %d: space", what, i)
	}
	require.Len(t, got, len(want), "%s: Scan of %v: record count", what, box)
	for i := range want {
		require.Equal(t, want[i].point, got[i].Point, "%s: Scan of %v record %d: point", what, box, i)
		require.Equal(t, want[i].rev, got[i].Revision, "%s: Scan of %v record %d at %v: revision", what, box, i, want[i].point)
		require.Equal(t, want[i].value, got[i].Value, "%s: Scan of %v record %d at %v: value", what, box, i, want[i].point)
	}
	for _, k := range []int{1, len(got) / 2, len(got) - 1} {
		if k < 1 || k >= len(got) {
			continue
		}
		calls := 0
		require.NoError(t, r.scan(sp, box, func(rec ringpipe.Record) bool {
			calls++
			if calls <= k {
				assert.Equal(t, got[calls-1].Point, rec.Point, "%s: stopped Scan record %d", what, calls-1)
			}
			return calls < k
		}))
		require.Equal(t, k, calls, "%s: a Scan whose fn returned false at record %d called fn %d times", what, k, calls)
	}
}

// raSpace is one space of a model run.
type raSpace struct {
	spec ringpipe.SpaceSpec
	id   ringpipe.SpaceID
	pool []ringpipe.Point
	m    *model
}

// raFrozen is a View and what it must show forever.
type raFrozen struct {
	v      *ringpipe.View
	rev    ringpipe.Revision
	models []*model // per space, as at the View
	after  int      // writes acknowledged before the View (index into the log)
}

func raCloneModel(m *model) *model {
	return &model{spec: m.spec, last: maps.Clone(m.last), count: m.count}
}

// raModelRun is a seeded random mix of Put, PutAsync, Delete, Flush and
// restart over raSpecs, with small SealThreshold so that blocks of many
// generations hold the same points; every few steps Get, Scan, View.Get
// and View.Scan are checked against the model, and every View taken is
// checked again at the end (it never changes) along with its Revision.
func raModelRun(t *testing.T, seed int64, cfg ringpipe.Config, steps int, restart bool) {
	rng := rand.New(rand.NewSource(seed))
	t.Logf("seed %d (replay with RINGPIPE_READ_SEED=%d)", seed, seed)
	cfg.SealThreshold = 24
	e, err := ringpipe.Start(ctxFor(t), cfg)
	if err != nil && cfg.Backend == ringpipe.BackendURing {
		t.Skipf("io_uring refused here: %v", err)
	}
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Stop(context.Background()) })
	ctx := ctxFor(t)
	var spaces []*raSpace
	for _, spec := range raSpecs {
		spaces = append(spaces, &raSpace{
			spec: spec,
			id:   createSpace(t, e, spec.Name, spec.Dims, spec.Bits),
			pool: raPool(rng, spec, 40),
			m:    newModel(spec),
		})
	}
	var log []write // every acknowledged write, all spaces
	type pending struct {
		s  *raSpace
		tk *ringpipe.Ticket
		w  write
	}
	var tickets []pending
	settle := func() {
		for _, p := range tickets {
			rev, err := p.tk.Wait(ctx)
			require.NoError(t, err, "PutAsync ticket")
			p.w.rev = rev
			p.s.m.add(p.w)
			log = append(log, p.w)
		}
		tickets = tickets[:0]
	}
	var frozen []raFrozen
	check := func(when string) {
		settle()
		v := e.View()
		fz := raFrozen{v: v, rev: v.Revision(), after: len(log)}
		for _, s := range spaces {
			fz.models = append(fz.models, raCloneModel(s.m))
			checkModel(t, engineReader(t, e), s.id, s.m, fullBox(s.spec))
			checkModel(t, viewReader(v), s.id, s.m, fullBox(s.spec))
			for range 4 {
				box := raBox(rng, s.spec, s.pool)
				raScanCheck(t, engineReader(t, e), s.id, s.m, box, when+" Engine")
				raScanCheck(t, viewReader(v), s.id, s.m, box, when+" View")
			}
		}
		for _, w := range log {
			require.LessOrEqual(t, w.rev, fz.rev, "%s: View.Revision below an acknowledged write's", when)
		}
		frozen = append(frozen, fz)
	}
	checkFrozen := func(when string) {
		for i, fz := range frozen {
			require.Equal(t, fz.rev, fz.v.Revision(), "%s: View %d's Revision changed", when, i)
			for j, s := range spaces {
				checkModel(t, viewReader(fz.v), s.id, fz.models[j], fullBox(s.spec))
				raScanCheck(t, viewReader(fz.v), s.id, fz.models[j], raBox(rng, s.spec, s.pool), fmt.Sprintf("%s View %d", when, i))
			}
			for _, w := range log[fz.after:] {
				require.Greater(t, w.rev, fz.rev, "%s: a write acknowledged after View %d was taken has a revision at or below its Revision", when, i)
			}
		}
	}
	restarts, flushes := 0, 0
	for step := range steps {
		s := spaces[rng.Intn(len(spaces))]
		p := slices.Clone(s.pool[rng.Intn(len(s.pool))])
		switch op := rng.Intn(100); {
		case op < 40:
			val := make([]byte, []int{0, 1, 7, 100, 3000}[rng.Intn(5)])
			rng.Read(val)
			rev, err := e.Put(ctx, s.id, p, val)
			require.NoError(t, err, "step %d Put", step)
			w := write{point: p, rev: rev, value: val}
			s.m.add(w)
			log = append(log, w)
		case op < 60:
			val := fmt.Appendf(nil, "async-%d-%d", seed, step)
			tk, err := e.PutAsync(ctx, s.id, p, val)
			require.NoError(t, err, "step %d PutAsync", step)
			tickets = append(tickets, pending{s, tk, write{point: p, value: val}})
		case op < 85:
			rev, err := e.Delete(ctx, s.id, p)
			require.NoError(t, err, "step %d Delete", step)
			w := write{point: p, rev: rev}
			s.m.add(w)
			log = append(log, w)
		case op < 94:
			settle()
			require.NoError(t, e.Flush(ctx, s.id), "step %d Flush", step)
			flushes++
		case op < 97 && restart:
			settle()
			stop(t, e)
			checkFrozen(fmt.Sprintf("step %d after Stop", step))
			e = start(t, cfg)
			restarts++
			check(fmt.Sprintf("step %d after restart", step))
		default:
			check(fmt.Sprintf("step %d", step))
		}
	}
	check("the end")
	checkFrozen("the end")
	st := e.Stats()
	t.Logf("%d writes, %d flushes, %d restarts, %d Views kept; sealed blocks %d (this run)", len(log), flushes, restarts, len(frozen), st.SealedBlocks)
	stop(t, e)
	checkFrozen("after the last Stop")
}

// TestReadAuditModel: Get, Scan, View.Get and View.Scan agree with a
// model (the newest acknowledged write per point) after random mixes of
// Put/PutAsync/Delete/Flush/restart, on the simulated disk and on real
// directories with std and io_uring; every View taken on the way still
// shows what it showed, after later writes, seals and Stops.
func TestReadAuditModel(t *testing.T) {
	for _, seed := range raSeeds(t, 4101, 4102) {
		t.Run(fmt.Sprintf("sim/seed%d", seed), func(t *testing.T) {
			raModelRun(t, seed, simConfig(t, newSimDisk(t, seed)), 500, true)
		})
	}
	t.Run("std", func(t *testing.T) {
		raModelRun(t, raSeeds(t, 4103)[0], realConfig(t, ringpipe.BackendStd), 220, true)
	})
	t.Run("uring", func(t *testing.T) {
		raModelRun(t, raSeeds(t, 4104)[0], realConfig(t, ringpipe.BackendURing), 220, true)
	})
}
