package actors

import (
	"github.com/ringpipe/ringpipe/livetail"
	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/snapshot"
)

// maxBoxRanges bounds the key ranges a box query is cut into: more ranges
// skip more of the key space, fewer cost less to compute. Scan filters
// points outside the box either way.
const maxBoxRanges = 64

// Keyer returns the space's Hilbert curve as a livetail.Keyer.
func Keyer(spec messages.SpaceSpec) livetail.Keyer { return hilbertKeyer{spec: spec} }

type hilbertKeyer struct{ spec messages.SpaceSpec }

func (h hilbertKeyer) Key(p messages.Point) uint64 {
	return snapshot.Key(p, h.spec.Dims, h.spec.Bits)
}

func (h hilbertKeyer) Ranges(b livetail.Box) []livetail.KeyRange {
	rs := snapshot.Ranges(snapshot.Box(b), h.spec.Dims, h.spec.Bits, maxBoxRanges)
	out := make([]livetail.KeyRange, len(rs))
	for i, r := range rs {
		out[i] = livetail.KeyRange(r)
	}
	return out
}

// Block adapts a sealed block to livetail.Block.
func Block(b *snapshot.Block, spec messages.SpaceSpec) livetail.Block {
	m := b.Meta()
	return snapBlock{b: b, spec: spec, minKey: m.MinKey, maxKey: m.MaxKey, maxRev: m.MaxRev}
}

type snapBlock struct {
	b              *snapshot.Block
	spec           messages.SpaceSpec
	minKey, maxKey uint64
	maxRev         messages.Revision
}

func (s snapBlock) MinKey() uint64                 { return s.minKey }
func (s snapBlock) MaxKey() uint64                 { return s.maxKey }
func (s snapBlock) MaxRevision() messages.Revision { return s.maxRev }
func (s snapBlock) MayContain(key uint64) bool     { return s.b.MayContain(key) }

func (s snapBlock) Get(key uint64, p messages.Point) (messages.Record, bool) {
	return s.b.Get(key, p)
}

func (s snapBlock) Scan(lo, hi uint64, fn func(uint64, messages.Record) bool) {
	s.b.Scan([]snapshot.KeyRange{{Lo: lo, Hi: hi}}, func(r messages.Record) bool {
		return fn(snapshot.Key(r.Point, s.spec.Dims, s.spec.Bits), r)
	})
}
