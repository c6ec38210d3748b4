package livetail

import (
	"math"
	"math/bits"

	"github.com/ringpipe/ringpipe/messages"
)

// slabFirstBits sizes a slab's chunks: chunk 0 holds 1<<slabFirstBits
// records and chunk c >= 1 holds 1<<(slabFirstBits+c-1), so that the chunks
// double the slab's size each time and a small generation wastes little
// (32 records, 2.3 KiB, at first).
const slabFirstBits = 5

// slab is a generation's records, by slot. Chunks are allocated full-size
// and never reallocated or moved, so a View that holds a copy of the slice
// header reads its slots while the Tail fills later slots and appends
// chunks beyond the View's length; slots are written once.
type slab [][]messages.Record

// slabPos returns the chunk and offset of slot i.
func slabPos(i uint32) (chunk int, off uint32) {
	c := bits.Len32(i >> slabFirstBits)
	if c > 0 {
		i -= 1 << (slabFirstBits + c - 1)
	}
	return c, i
}

// at returns the record in slot i. REQUIRES: i was filled before the slab
// header was copied.
func (s slab) at(i uint32) *messages.Record {
	c, off := slabPos(i)
	return &s[c][off]
}

// genTree is one generation of a space's tail as a View sees it. It is a
// value: copying it copies no records or nodes.
type genTree struct {
	gen  uint64
	tr   tree
	recs slab // at least every slot tr refers to
}

// rec returns the record of e.
func (g *genTree) rec(e entry) *messages.Record { return g.recs.at(e.slot) }

// compactMin is the fewest dead slots worth a compaction; with fewer the
// copy costs more than the memory it frees.
const compactMin = 64

// generation is one generation of a space's tail on the Tail's side: the
// records in a slab and a tree of entries that refer to slots.
//
// Invariants:
//
//  1. Slots below used are written once and never changed; frozen Views
//     read them without a lock.
//  2. dead counts slots no entry of tree refers to (a record replaced by
//     another at the same key and revision). When they outnumber the
//     live ones, compact copies the live records into a new slab, so a
//     generation's memory stays within about twice its records.
//  3. snap is what the last View got; changed says whether tree or recs
//     changed since.
//
// A generation is not safe for concurrent use; the Tail owns it.
type generation struct {
	gen     uint64
	tree    cowTree
	recs    slab
	used    uint32
	dead    int
	snap    genTree
	changed bool
}

// put adds r at key, replacing a record at the same key and revision.
func (g *generation) put(key uint64, r messages.Record) {
	if g.used == math.MaxUint32 {
		// 2^32 records of one generation would need hundreds of GiB of
		// memory; the engine seals generations long before.
		panic("livetail: generation slab full")
	}
	c, off := slabPos(g.used)
	if c == len(g.recs) {
		g.recs = append(g.recs, make([]messages.Record, 1<<(slabFirstBits+max(c-1, 0))))
	}
	g.recs[c][off] = r
	if _, replaced := g.tree.set(entry{pos: pos{key: key, rev: r.Revision}, slot: g.used}); replaced {
		g.dead++
	}
	g.used++
	g.changed = true
	if g.dead >= compactMin && g.dead > g.tree.Len() {
		g.rebuild(nil)
	}
}

// rebuild replaces the tree and slab with new ones that hold the live
// records less those in drop (sorted, each in the tree). The old ones are
// left as they are for the Views that hold them.
//
// Cost: O(n log n) for n live records.
func (g *generation) rebuild(drop []entry) {
	old := g.freeze()
	*g = generation{gen: g.gen, changed: true}
	old.tr.ascend(pos{}, func(e entry) bool {
		if len(drop) > 0 && drop[0].pos == e.pos {
			drop = drop[1:]
			return true
		}
		g.put(e.key, *old.rec(e))
		return true
	})
}

// freeze returns the generation as it is now, for a View, and remembers it
// as snap.
func (g *generation) freeze() genTree {
	if g.changed {
		g.snap = genTree{gen: g.gen, tr: g.tree.freeze(), recs: g.recs}
		g.changed = false
	}
	return g.snap
}
