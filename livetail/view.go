// Package livetail holds what readers see: an immutable View of every
// space's unsealed records (the tail) and sealed blocks, which the
// live-tail publisher builds with a Tail and readers load with one atomic
// pointer read.
//
// # Model
//
// The tail of a space is one ordered tree per hot generation, keyed by
// (key, revision), plus one tree for records acknowledged from the staging
// WAL whose generation is not yet known (StagedGeneration). The block index
// of a space is its blocks sorted by MaxRevision, newest first.
//
// Invariants:
//
//  1. A View never changes once Publish returned it. Its trees are
//     copy-on-write B+-trees (cowTree): the Tail copies a node before it
//     changes one that a View can see, so publishing k records into a
//     tail of n costs O(k log n) and a View shares all unchanged nodes
//     with its predecessor (BenchmarkPublishOne). A generation's records
//     sit in an append-only slab whose filled slots never change, and
//     tree entries name slots, not records, so nodes hold no pointers.
//  2. A reader sees, for each point, the record with the highest revision
//     in the tail or any block; a tombstone hides the point. A revision held
//     twice (tail and block, or two generations) counts once.
//  3. A seal shows the block in the same View that drops the sealed
//     generation from the tail, so no record is ever missing in between.
//
// # Use
//
// The publisher registers spaces (Tail.AddSpace, with the space's Keyer),
// turns each burst of notices into one View (Tail.Apply with Appended and
// Sealed, or Append/Seal/AddBlock then Publish) and stores the View in an
// atomic pointer. Readers call View.Get and View.Scan. ErrNotFound and
// ErrUnknownSpace are for the root package to map to its own errors; a bad
// point wraps messages.ErrInvalidPoint.
//
// Nothing here starts goroutines or takes locks: a Tail belongs to one
// goroutine (the publisher), a View may be read by any number at once.
package livetail

import (
	"context"

	"errors"
	"fmt"

	"github.com/ringpipe/ringpipe/messages"
)

// ErrNotFound is returned by View.Get when the point has no record or its
// newest record is a tombstone.
var ErrNotFound = errors.New("livetail: not found")

// ErrUnknownSpace is wrapped by the error of an operation on a space that
// the View or Tail does not know.
var ErrUnknownSpace = errors.New("livetail: unknown space")

// spaceView is one space in a View; it is immutable and may be shared by
// several Views (those published while the space did not change).
type spaceView struct {
	info  messages.SpaceInfo
	keyer Keyer
	gens  []genTree // by gen ascending; no empty tree
	// blocks are sorted by MaxRevision descending. The slice is never
	// modified; the Tail builds a new one on every change.
	blocks []Block
	// inline holds gens when they fit, which saves an allocation per
	// publish: a space mostly has a hot generation and maybe one being
	// sealed or the staged one.
	inline [2]genTree
}

// View is an immutable read snapshot of every space: its tail and blocks,
// and the revision it reflects. It is safe for concurrent use and never
// changes; later publishes build new Views.
type View struct {
	rev messages.Revision
	// index maps a space's ID to its position in spaces. It is shared with
	// the Tail and other Views and never modified.
	index  map[messages.SpaceID]int
	spaces []*spaceView // never modified after Publish
	// inline holds spaces when they fit, which saves an allocation per
	// publish.
	inline [4]*spaceView
}

// emptyView is what a Tail publishes before anything was added.
var emptyView = &View{index: map[messages.SpaceID]int{}}

// Revision returns the highest revision the View reflects: the newest
// record appended or sealed before it was published.
func (v *View) Revision() messages.Revision { return v.rev }

// Spaces returns the spaces the View knows, in no particular order.
func (v *View) Spaces() []messages.SpaceInfo {
	out := make([]messages.SpaceInfo, 0, len(v.spaces))
	for _, s := range v.spaces {
		out = append(out, s.info)
	}
	return out
}

// TailLen returns how many records the space's tail holds (every revision,
// every generation).
func (v *View) TailLen(space messages.SpaceID) (int, error) {
	s, err := v.space(space)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, g := range s.gens {
		n += g.tr.n
	}
	return n, nil
}

// Blocks returns how many blocks the space's index holds.
func (v *View) Blocks(space messages.SpaceID) (int, error) {
	s, err := v.space(space)
	if err != nil {
		return 0, err
	}
	return len(s.blocks), nil
}

func (v *View) space(id messages.SpaceID) (*spaceView, error) {
	i, ok := v.index[id]
	if !ok {
		return nil, fmt.Errorf("%w %d", ErrUnknownSpace, id)
	}
	return v.spaces[i], nil
}

// Get returns the newest record at p in the space: ErrNotFound if there is
// none or it is a tombstone, an error wrapping ErrUnknownSpace or
// messages.ErrInvalidPoint for a bad space or point.
//
// The returned Record shares Point and Value with the View; callers must not
// modify them.
func (v *View) Get(space messages.SpaceID, p messages.Point) (messages.Record, error) {
	return v.GetContext(context.Background(), space, p)
}

// GetContext is Get whose block reads give up when ctx ends.
func (v *View) GetContext(ctx context.Context, space messages.SpaceID, p messages.Point) (messages.Record, error) {
	s, err := v.space(space)
	if err != nil {
		return messages.Record{}, err
	}
	if err := s.info.CheckPoint(p); err != nil {
		return messages.Record{}, err
	}
	key := s.keyer.Key(p)

	var best messages.Record
	found := false
	for i := range s.gens {
		g := &s.gens[i]
		if e, ok := g.tr.newest(key); ok && (!found || e.rev > best.Revision) {
			best, found = *g.rec(e), true
		}
	}
	// Newest block first. A block whose MaxRevision is not above the best
	// revision so far cannot improve on it, and neither can any after it;
	// this holds whatever order the seals came in.
	for _, b := range s.blocks {
		if found && b.MaxRevision() <= best.Revision {
			break
		}
		if key < b.MinKey() || key > b.MaxKey() || !b.MayContain(key) {
			continue
		}
		r, ok, err := b.Get(ctx, key, p)
		if err != nil {
			return messages.Record{}, fmt.Errorf("livetail: get from a block of space %d: %w", space, err)
		}
		if ok && (!found || r.Revision > best.Revision) {
			best, found = r, true
		}
	}
	if !found || best.Tombstone {
		return messages.Record{}, ErrNotFound
	}
	return best, nil
}

// Scan calls fn for the newest live record of every point inside box in
// the space, in key order, until fn returns false. It merges the tail with
// every block whose key range meets one of box's key ranges; a block that
// meets none is not read. An empty box (Min > Max on some dimension) yields
// nothing. A bad space or box is an error as for Get.
//
// Records passed to fn share Point and Value with the View; fn must not
// modify them.
func (v *View) Scan(space messages.SpaceID, box Box, fn func(messages.Record) bool) error {
	return v.ScanContext(context.Background(), space, box, fn)
}

// ScanContext is Scan whose block reads give up when ctx ends.
func (v *View) ScanContext(ctx context.Context, space messages.SpaceID, box Box, fn func(messages.Record) bool) error {
	s, err := v.space(space)
	if err != nil {
		return err
	}
	// The errors reach the API's callers as they are: they name the box
	// corner, the space and what is wrong.
	if err := s.info.CheckPointAs("box Min", box.Min); err != nil {
		return err
	}
	if err := s.info.CheckPointAs("box Max", box.Max); err != nil {
		return err
	}
	if box.empty() {
		return nil
	}
	m := merger{ctx: ctx}
	for _, kr := range s.keyer.Ranges(box) {
		more, err := s.scanRange(kr, box, fn, &m)
		if err != nil {
			return fmt.Errorf("livetail: scan a block of space %d: %w", space, err)
		}
		if !more {
			return nil
		}
	}
	return nil
}

// scanRange merges every source of keys kr.Lo..kr.Hi and reports whether fn
// wants more, or the error of a block read. m is scratch space reused
// across the ranges of one Scan.
func (s *spaceView) scanRange(kr KeyRange, box Box, fn func(messages.Record) bool, m *merger) (bool, error) {
	// Sources that may hold keys in kr; most scans have one or two.
	trees, blocks := m.trees[:0], m.blocks[:0]
	for i := range s.gens {
		g := &s.gens[i]
		if mn, ok := g.tr.Min(); ok && mn.key <= kr.Hi {
			if mx, _ := g.tr.Max(); mx.key >= kr.Lo {
				trees = append(trees, g)
			}
		}
	}
	for _, b := range s.blocks {
		if b.MinKey() <= kr.Hi && b.MaxKey() >= kr.Lo {
			blocks = append(blocks, b)
		}
	}
	m.trees, m.blocks = trees, blocks
	emit := newestPerKey{box: box, fn: fn}
	switch {
	case len(trees)+len(blocks) == 0:
		return true, nil
	case len(trees) == 1 && len(blocks) == 0:
		// One ordered source needs no merge: keep the last revision of each
		// key.
		g := trees[0]
		// A leaf at a time: the inner loop is the whole cost of a long
		// scan besides the records themselves.
	leaves:
		for it := g.tr.seek(pos{key: kr.Lo}); it.valid(); it.nextLeaf() {
			for i := it.i; i < it.leaf.n; i++ {
				e := &it.leaf.items[i]
				if e.key > kr.Hi || !emit.add(e.key, g.recs.at(e.slot)) {
					break leaves
				}
			}
		}
		return emit.flush(), nil
	case len(trees) == 0 && len(blocks) == 1:
		if err := blocks[0].Scan(m.ctx, kr.Lo, kr.Hi, func(key uint64, r messages.Record) bool {
			return emit.add(key, &r)
		}); err != nil {
			return false, err
		}
		return emit.flush(), nil
	}
	return m.merge(kr, &emit)
}

// newestPerKey receives records in (key, revision) order and passes fn the
// last one of each key if it is live and inside box.
type newestPerKey struct {
	box     Box
	fn      func(messages.Record) bool
	have    bool
	key     uint64
	pending messages.Record // the newest record of key so far, if have
	stopped bool
}

// add takes the next record (copying it) and reports whether more are
// wanted. Keys come in ascending order; revisions of one key may come in any
// order when several sources are merged.
func (n *newestPerKey) add(key uint64, r *messages.Record) bool {
	if n.have && key != n.key && !n.emit() {
		return false
	}
	if !n.have || r.Revision > n.pending.Revision {
		n.have, n.key, n.pending = true, key, *r
	}
	return true
}

// flush emits the last pending record and reports whether more are wanted.
func (n *newestPerKey) flush() bool {
	if n.stopped {
		return false
	}
	if n.have {
		return n.emit()
	}
	return true
}

func (n *newestPerKey) emit() bool {
	n.have = false
	r := n.pending
	if r.Tombstone || !n.box.Contains(r.Point) {
		return true
	}
	if !n.fn(r) {
		n.stopped = true
		return false
	}
	return true
}

// Block reads in a merge come in chunks: the first is small so that a scan
// that stops early reads little, later ones double up to maxChunk so that a
// long scan resumes (one seek into the block) rarely. The chunks bound the
// memory of a merge to maxChunk records per block, without a goroutine or
// coroutine per block.
const (
	firstChunk = 16
	maxChunk   = 512
)

// keyedRecord is a block record with its key.
type keyedRecord struct {
	key uint64
	rec messages.Record
}

// cursor reads one source of a merge in (key, revision) order.
type cursor struct {
	ok  bool
	key uint64
	rec *messages.Record // valid until the next advance

	// A tail tree: it over g, bounded by hi.
	g  *genTree
	it treeIter
	hi uint64

	// A block: buf[i] is the current record; more says whether the block
	// has records after buf's last one, up to hi.
	blk   Block
	ctx   context.Context // the Scan's: its block reads give up when it ends
	buf   []keyedRecord
	i     int
	more  bool
	chunk int
	keep  *[]keyedRecord // where buf goes back on close
	err   error          // a failed block read; ok is false then
}

func treeCursor(g *genTree, kr KeyRange) cursor {
	c := cursor{g: g, it: g.tr.seek(pos{key: kr.Lo}), hi: kr.Hi}
	c.ok = c.it.valid()
	c.loadEntry()
	return c
}

// blockCursor reads b over kr into *buf, which it keeps (grown) for reuse.
func blockCursor(ctx context.Context, b Block, kr KeyRange, buf *[]keyedRecord) cursor {
	c := cursor{blk: b, ctx: ctx, hi: kr.Hi, chunk: firstChunk, buf: *buf, keep: buf}
	c.fill(kr.Lo, false)
	return c
}

func (c *cursor) advance() {
	if c.g != nil {
		c.it.next()
		c.ok = c.it.valid()
		c.loadEntry()
		return
	}
	c.i++
	if c.i < len(c.buf) {
		c.loadBuf()
		return
	}
	if !c.more {
		c.ok = false
		return
	}
	c.fill(c.key, true)
}

func (c *cursor) loadEntry() {
	if !c.ok {
		return
	}
	e := c.it.item()
	if e.key > c.hi {
		c.ok = false
		return
	}
	c.key, c.rec = e.key, c.g.rec(e)
}

func (c *cursor) loadBuf() {
	c.key, c.rec = c.buf[c.i].key, &c.buf[c.i].rec
}

// fill reads the block's next chunk starting at key lo. With resume set,
// (lo, c.rec.Revision) is the last record already read: records up to it
// are skipped (a block's revisions of one key ascend).
func (c *cursor) fill(lo uint64, resume bool) {
	var lastRev messages.Revision
	if resume {
		lastRev = c.rec.Revision
	}
	n := c.chunk
	c.chunk = min(2*c.chunk, maxChunk)
	c.buf, c.i, c.more = c.buf[:0], 0, false
	c.err = c.blk.Scan(c.ctx, lo, c.hi, func(key uint64, r messages.Record) bool {
		if resume && key == lo && r.Revision <= lastRev {
			return true
		}
		if len(c.buf) == n {
			c.more = true
			return false
		}
		c.buf = append(c.buf, keyedRecord{key, r})
		return true
	})
	c.ok = len(c.buf) > 0 && c.err == nil
	if c.ok {
		c.loadBuf()
	}
}

func (c *cursor) close() {
	if c.keep != nil {
		*c.keep = c.buf[:0]
	}
}

// merger is the scratch space of one Scan's merges, reused from one key
// range to the next so that a box of many ranges allocates its cursors and
// block buffers once.
type merger struct {
	ctx    context.Context // the Scan's (block reads)
	trees  []*genTree
	blocks []Block
	cs     []cursor
	bufs   [][]keyedRecord // block buffers, kept for the next range
}

// merge is a k-way merge by key of m.trees and m.blocks over kr. k is the
// number of generations plus blocks meeting the range, small while blocks
// are merged (a later step), so a linear pick of the smallest key stands in
// for a heap.
func (m *merger) merge(kr KeyRange, emit *newestPerKey) (bool, error) {
	if k := len(m.trees) + len(m.blocks); cap(m.cs) < k {
		// A cursor is a few hundred bytes (treeIter's path): grow once.
		m.cs = make([]cursor, 0, k)
	}
	cs := m.cs[:0]
	defer func() {
		for i := range cs {
			cs[i].close()
		}
		m.cs = cs
	}()
	for _, tr := range m.trees {
		cs = append(cs, treeCursor(tr, kr))
	}
	for j, b := range m.blocks {
		if j == len(m.bufs) {
			m.bufs = append(m.bufs, nil)
		}
		cs = append(cs, blockCursor(m.ctx, b, kr, &m.bufs[j]))
	}
	for {
		minKey, any := uint64(0), false
		for i := range cs {
			if cs[i].err != nil {
				return false, cs[i].err
			}
			if cs[i].ok && (!any || cs[i].key < minKey) {
				minKey, any = cs[i].key, true
			}
		}
		if !any {
			return emit.flush(), nil
		}
		for i := range cs {
			c := &cs[i]
			for c.ok && c.key == minKey {
				if !emit.add(minKey, c.rec) {
					return false, nil
				}
				c.advance()
			}
		}
	}
}
