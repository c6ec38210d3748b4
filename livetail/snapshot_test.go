package livetail

import (
	"context"

	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/snapshot"
)

// The adapters the engine needs between snapshot and livetail, written here
// to prove that the real block and Hilbert keys satisfy livetail's
// contracts.

// hilbertKeyer is a space's Hilbert curve; maxRanges bounds the ranges of
// a box, so small values make Scan filter points outside the box.
type hilbertKeyer struct {
	spec      messages.SpaceSpec
	maxRanges int
}

func (h hilbertKeyer) Key(p messages.Point) uint64 {
	return snapshot.Key(p, h.spec.Dims, h.spec.Bits)
}

func (h hilbertKeyer) Ranges(b Box) []KeyRange {
	rs := snapshot.Ranges(snapshot.Box(b), h.spec.Dims, h.spec.Bits, h.maxRanges)
	out := make([]KeyRange, len(rs))
	for i, r := range rs {
		out[i] = KeyRange(r)
	}
	return out
}

// snapBlock adapts *snapshot.Block to Block.
type snapBlock struct {
	b    *snapshot.Block
	spec messages.SpaceSpec
}

func (s snapBlock) MinKey() uint64                 { return s.b.Meta().MinKey }
func (s snapBlock) MaxKey() uint64                 { return s.b.Meta().MaxKey }
func (s snapBlock) MaxRevision() messages.Revision { return s.b.Meta().MaxRev }
func (s snapBlock) MayContain(key uint64) bool     { return s.b.MayContain(key) }

func (s snapBlock) Get(_ context.Context, key uint64, p messages.Point) (messages.Record, bool, error) {
	return s.b.Get(key, p)
}

func (s snapBlock) Scan(_ context.Context, lo, hi uint64, fn func(uint64, messages.Record) bool) error {
	return s.b.Scan([]snapshot.KeyRange{{Lo: lo, Hi: hi}}, func(r messages.Record) bool {
		return fn(snapshot.Key(r.Point, s.spec.Dims, s.spec.Bits), r)
	})
}

func sealSnapshotBlock(t *testing.T, id messages.SpaceID, spec messages.SpaceSpec, blockID uint64, recs []messages.Record) Block {
	t.Helper()
	es, err := snapshot.Entries(spec, recs)
	require.NoError(t, err)
	data, _, err := snapshot.EncodeBlock(id, blockID, es)
	require.NoError(t, err)
	b, err := snapshot.DecodeBlock("test.blk", data)
	require.NoError(t, err)
	return snapBlock{b: b, spec: spec}
}

// TestWithSnapshotBlocks runs random writes and seals into real snapshot
// blocks over Hilbert keys (2-D and 3-D, box ranges capped so that they
// over-cover) and checks every View against the map model.
func TestWithSnapshotBlocks(t *testing.T) {
	for _, c := range []struct {
		spec      messages.SpaceSpec
		maxRanges int
	}{
		{messages.SpaceSpec{Name: "h2", Dims: 2, Bits: 3}, 2},
		{messages.SpaceSpec{Name: "h3", Dims: 3, Bits: 2}, 5},
		{messages.SpaceSpec{Name: "h1", Dims: 1, Bits: 6}, 1},
	} {
		t.Run(c.spec.Name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(c.spec.Dims), 99))
			m := &modelSpace{id: 1, spec: c.spec, keyer: hilbertKeyer{spec: c.spec, maxRanges: c.maxRanges}, all: map[string][]messages.Record{}}
			n := 1 << (c.spec.Dims * c.spec.Bits)
			for k := range uint64(n) {
				m.points = append(m.points, snapshot.PointOf(k, c.spec.Dims, c.spec.Bits))
			}
			tl := NewTail()
			require.NoError(t, tl.AddSpace(messages.SpaceInfo{ID: 1, SpaceSpec: c.spec}, m.keyer))
			var rev messages.Revision
			gen := uint64(1)
			var cur []messages.Record
			for op := range 400 {
				rev++
				r := messages.Record{Space: 1, Point: m.points[rng.IntN(n)], Revision: rev, Value: fmt.Appendf(nil, "%d", rev)}
				if rng.IntN(5) == 0 {
					r.Value, r.Tombstone = nil, true
				}
				m.all[pointID(r.Point)] = append(m.all[pointID(r.Point)], r)
				require.NoError(t, tl.Append(1, gen, r))
				cur = append(cur, r)
				if rng.IntN(25) == 0 {
					require.NoError(t, tl.Seal(1, gen, sealSnapshotBlock(t, 1, c.spec, gen, cur)))
					gen, cur = gen+1, nil
				}
				if rng.IntN(10) == 0 {
					checkView(t, rng, []*modelSpace{m}, frozen{v: tl.Publish(), rev: rev, want: map[messages.SpaceID][]messages.Revision{1: m.expected()}}, op)
				}
			}
			nb, err := tl.Publish().Blocks(1)
			require.NoError(t, err)
			require.Greater(t, nb, 5, "the run sealed blocks")
		})
	}
}
