package livetail

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
)

// modelSpace is the map-based model of one space: every record ever
// appended, by point, and what the Tail was told about generations.
type modelSpace struct {
	id     messages.SpaceID
	spec   messages.SpaceSpec
	keyer  Keyer
	points []messages.Point // every point of the (small) space
	all    map[string][]messages.Record
	cur    uint64                       // the generation appends go to
	gens   map[uint64][]messages.Record // unsealed generations' records
	sealed []uint64
	staged []messages.Record // appended as staged, not yet promoted
}

func pointID(p messages.Point) string { return fmt.Sprint([]uint32(p)) }

// expected returns the revision a reader must see at each point: the newest
// record's, 0 if there is none or it is a tombstone.
func (m *modelSpace) expected() []messages.Revision {
	out := make([]messages.Revision, len(m.points))
	for i, p := range m.points {
		var best messages.Record
		for _, r := range m.all[pointID(p)] {
			if r.Revision > best.Revision {
				best = r
			}
		}
		if best.Revision != 0 && !best.Tombstone {
			out[i] = best.Revision
		}
	}
	return out
}

// frozen is a View and what it must answer forever.
type frozen struct {
	v    *View
	rev  messages.Revision
	want map[messages.SpaceID][]messages.Revision
}

// TestModel drives a Tail with random appends (direct and staged),
// promotions, rotations, seals, duplicate and late appends, and checks
// every published View, and Views published long before, against a map.
// RINGPIPE_SOAK=1 runs more seeds and longer.
func TestModel(t *testing.T) {
	seeds, ops := 5, 1500
	if os.Getenv("RINGPIPE_SOAK") != "" {
		seeds, ops = 200, 20000
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) { runModel(t, seed, ops) })
	}
}

func runModel(t *testing.T, seed uint64, ops int) {
	rng := rand.New(rand.NewPCG(seed, 0x11fe7a11))
	tl := NewTail()
	spaces := []*modelSpace{
		{id: 1, spec: messages.SpaceSpec{Name: "line", Dims: 1, Bits: 6}, keyer: line{split: uint64(1 + rng.IntN(8))}},
		{id: 2, spec: messages.SpaceSpec{Name: "plane", Dims: 2, Bits: 3}, keyer: morton{bits: 3}},
	}
	for _, m := range spaces {
		require.NoError(t, tl.AddSpace(messages.SpaceInfo{ID: m.id, SpaceSpec: m.spec}, m.keyer))
		m.all = map[string][]messages.Record{}
		m.gens = map[uint64][]messages.Record{}
		m.cur = 1
		if m.spec.Dims == 1 {
			for x := range uint32(64) {
				m.points = append(m.points, messages.Point{x})
			}
		} else {
			for x := range uint32(8) {
				for y := range uint32(8) {
					m.points = append(m.points, messages.Point{x, y})
				}
			}
		}
	}
	var rev messages.Revision
	var old []frozen
	record := func(m *modelSpace) messages.Record {
		rev++
		p := m.points[rng.IntN(len(m.points))]
		if rng.IntN(5) == 0 {
			return messages.Record{Space: m.id, Point: p, Revision: rev, Tombstone: true}
		}
		return messages.Record{Space: m.id, Point: p, Revision: rev, Value: fmt.Appendf(nil, "%d", rev)}
	}

	for op := range ops {
		m := spaces[rng.IntN(len(spaces))]
		switch k := rng.IntN(100); {
		case k < 60: // a batch into the current generation
			batch := make([]messages.Record, 1+rng.IntN(5))
			for i := range batch {
				batch[i] = record(m)
				m.all[pointID(batch[i].Point)] = append(m.all[pointID(batch[i].Point)], batch[i])
			}
			require.NoError(t, tl.Append(m.id, m.cur, batch...))
			m.gens[m.cur] = append(m.gens[m.cur], batch...)
		case k < 70: // acknowledged from the staging WAL
			r := record(m)
			m.all[pointID(r.Point)] = append(m.all[pointID(r.Point)], r)
			require.NoError(t, tl.Append(m.id, StagedGeneration, r))
			m.staged = append(m.staged, r)
		case k < 76: // the promoter moves staged records into the current generation
			n := rng.IntN(len(m.staged) + 1)
			if n > 0 {
				require.NoError(t, tl.Append(m.id, m.cur, m.staged[:n]...))
				m.gens[m.cur] = append(m.gens[m.cur], m.staged[:n]...)
				m.staged = slices.Clone(m.staged[n:])
			}
		case k < 81: // rotate
			m.cur++
		case k < 89: // seal a generation (any unsealed one, the current included)
			var gens []uint64
			for g, recs := range m.gens {
				if len(recs) > 0 {
					gens = append(gens, g)
				}
			}
			if len(gens) == 0 {
				break
			}
			slices.Sort(gens)
			g := gens[rng.IntN(len(gens))]
			b := newBlock(m.keyer, m.gens[g])
			b.loose = rng.IntN(3) == 0
			b.newestOnly = rng.IntN(2) == 0
			require.NoError(t, tl.Seal(m.id, g, b))
			delete(m.gens, g)
			m.sealed = append(m.sealed, g)
			if g == m.cur {
				m.cur++
			}
		case k < 94: // a record appended again to its own generation
			for g, recs := range m.gens {
				if len(recs) > 0 {
					require.NoError(t, tl.Append(m.id, g, recs[rng.IntN(len(recs))]))
				}
				break
			}
		case k < 97: // a late append to a sealed generation (new or old record)
			if len(m.sealed) == 0 {
				break
			}
			g := m.sealed[rng.IntN(len(m.sealed))]
			r := record(m)
			m.all[pointID(r.Point)] = append(m.all[pointID(r.Point)], r)
			require.NoError(t, tl.Append(m.id, g, r))
			m.staged = append(m.staged, r) // the Tail keeps it as staged
		default: // nothing changes; Publish must hand back the same View
			v := tl.Publish()
			require.Same(t, v, tl.Publish())
		}

		if rng.IntN(4) != 0 {
			continue
		}
		v := tl.Publish()
		f := frozen{v: v, rev: rev, want: map[messages.SpaceID][]messages.Revision{}}
		for _, m := range spaces {
			f.want[m.id] = m.expected()
		}
		checkView(t, rng, spaces, f, op)
		if rng.IntN(20) == 0 {
			old = append(old, f)
		}
	}
	// Views published long ago still answer as they did.
	for _, f := range old {
		checkView(t, rng, spaces, f, -1)
	}
	// Sealing everything leaves only staged records the blocks do not cover
	// in the tail, and answers do not change.
	for _, m := range spaces {
		for g, recs := range m.gens {
			if len(recs) > 0 {
				require.NoError(t, tl.Seal(m.id, g, newBlock(m.keyer, recs)))
			}
		}
		m.gens = map[uint64][]messages.Record{}
		if len(m.staged) > 0 {
			require.NoError(t, tl.Seal(m.id, 1<<40, newBlock(m.keyer, m.staged)))
		}
	}
	f := frozen{v: tl.Publish(), rev: rev, want: map[messages.SpaceID][]messages.Revision{}}
	for _, m := range spaces {
		f.want[m.id] = m.expected()
		n, err := f.v.TailLen(m.id)
		require.NoError(t, err)
		require.Zero(t, n, "space %d: everything sealed", m.id)
	}
	checkView(t, rng, spaces, f, ops)
}

// checkView compares Get at every point, a full Scan, a random box Scan
// and an early-stopped Scan with the model's answers.
func checkView(t *testing.T, rng *rand.Rand, spaces []*modelSpace, f frozen, op int) {
	t.Helper()
	require.Equal(t, f.rev, f.v.Revision(), "op %d", op)
	for _, m := range spaces {
		want := f.want[m.id]
		for i, p := range m.points {
			r, err := f.v.Get(m.id, p)
			if want[i] == 0 {
				require.True(t, errors.Is(err, ErrNotFound), "op %d space %d point %v: want not found, got %v rev %d", op, m.id, p, err, r.Revision)
				continue
			}
			require.NoError(t, err, "op %d space %d point %v", op, m.id, p)
			require.Equal(t, want[i], r.Revision, "op %d space %d point %v", op, m.id, p)
			require.Equal(t, fmt.Sprint(r.Revision), string(r.Value))
			require.Equal(t, p, r.Point)
		}

		// A random box, sometimes the whole space, sometimes one point.
		box := Box{Min: make(messages.Point, m.spec.Dims), Max: make(messages.Point, m.spec.Dims)}
		lim := uint32(1) << m.spec.Bits
		if rng.IntN(4) != 0 {
			for d := range m.spec.Dims {
				a, b := uint32(rng.IntN(int(lim))), uint32(rng.IntN(int(lim)))
				box.Min[d], box.Max[d] = min(a, b), max(a, b)
			}
		} else {
			for d := range m.spec.Dims {
				box.Max[d] = lim - 1
			}
		}
		type kr struct {
			key uint64
			rev messages.Revision
		}
		var wantScan []kr
		for i, p := range m.points {
			if want[i] != 0 && box.Contains(p) {
				wantScan = append(wantScan, kr{m.keyer.Key(p), want[i]})
			}
		}
		slices.SortFunc(wantScan, func(a, b kr) int {
			if a.key < b.key {
				return -1
			}
			return 1
		})
		var got []kr
		require.NoError(t, f.v.Scan(m.id, box, func(r messages.Record) bool {
			got = append(got, kr{m.keyer.Key(r.Point), r.Revision})
			return true
		}))
		require.Equal(t, wantScan, got, "op %d space %d box %v", op, m.id, box)

		if len(wantScan) > 1 {
			stop := 1 + rng.IntN(len(wantScan)-1)
			var part []kr
			require.NoError(t, f.v.Scan(m.id, box, func(r messages.Record) bool {
				part = append(part, kr{m.keyer.Key(r.Point), r.Revision})
				return len(part) < stop
			}))
			require.Equal(t, wantScan[:stop], part, "op %d space %d: early stop", op, m.id)
		}
	}
}
