package livetail

import "github.com/ringpipe/ringpipe/messages"

// pos orders a generation's entries: by key, then revision.
type pos struct {
	key uint64
	rev messages.Revision
}

func (a pos) less(b pos) bool {
	if a.key != b.key {
		return a.key < b.key
	}
	return a.rev < b.rev
}

// entry is one tail record in a generation's tree: its position, kept
// inline so that comparisons do not leave the node, and its slot in the
// generation's slab. An entry holds no pointer, so a leaf is one
// allocation the GC never scans and copying it needs no write barriers.
type entry struct {
	pos
	slot uint32
}

// nodeCap is the entries of a leaf and the children of a branch. A leaf is
// then 16+31*24 = 760 bytes and a branch 16+31*16+2*31*8 = 1008 bytes, just
// under the 768- and 1024-byte size classes; a publish copies one of each
// per level (BenchmarkPublishOne), and a lookup reads about five cache
// lines per level.
const nodeCap = 31

// maxHeight bounds a tree's branch levels. Nodes other than the root hold
// at least nodeCap/2 entries or children (nothing is ever removed from a
// tree), so 12 levels hold far more than the 2^32 slots of a slab.
const maxHeight = 12

// leaf holds entries sorted by pos.
type leaf struct {
	epoch uint64 // the cowTree epoch that created it; see cowTree
	n     int
	items [nodeCap]entry
}

// branch routes to n children. Every entry under child i (i >= 1) is at or
// after seps[i], and seps[i] is the smallest of them; every entry under
// child i-1 is before it. seps[0] is not used.
type branch struct {
	epoch  uint64 // the cowTree epoch that created it; see cowTree
	n      int
	seps   [nodeCap]pos
	kids   [nodeCap]*branch // the children when the branch is above height 1
	leaves [nodeCap]*leaf   // the children at height 1
}

// child returns the index of the child whose entries p falls among: the last
// i >= 1 with seps[i] <= p, else 0.
func (b *branch) child(p pos) int {
	lo, hi := 1, b.n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if p.less(b.seps[m]) {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo - 1
}

// search returns the index of the first entry at or after p (l.n if none).
func (l *leaf) search(p pos) int {
	lo, hi := 0, l.n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if l.items[m].pos.less(p) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// tree is a B+-tree of entries as a View holds it: a value that is never
// modified, nor are the nodes it reaches.
type tree struct {
	leaf   *leaf   // the root when height is 0; nil for an empty tree
	branch *branch // the root when height > 0
	height int     // branch levels above the leaves
	n      int     // entries
}

// Len returns the number of entries.
func (t *tree) Len() int { return t.n }

// Min returns the first entry.
func (t *tree) Min() (entry, bool) {
	if t.n == 0 {
		return entry{}, false
	}
	l := t.leaf
	if t.height > 0 {
		b := t.branch
		for range t.height - 1 {
			b = b.kids[0]
		}
		l = b.leaves[0]
	}
	return l.items[0], true
}

// Max returns the last entry.
func (t *tree) Max() (entry, bool) {
	if t.n == 0 {
		return entry{}, false
	}
	l := t.leaf
	if t.height > 0 {
		b := t.branch
		for range t.height - 1 {
			b = b.kids[b.n-1]
		}
		l = b.leaves[b.n-1]
	}
	return l.items[l.n-1], true
}

// newest returns the entry with key and the highest revision.
func (t *tree) newest(key uint64) (entry, bool) {
	if t.n == 0 {
		return entry{}, false
	}
	p := pos{key: key, rev: ^messages.Revision(0)}
	l := t.leaf
	if t.height > 0 {
		b := t.branch
		for range t.height - 1 {
			b = b.kids[b.child(p)]
		}
		l = b.leaves[b.child(p)]
	}
	// The last entry at or before p. The leaf's first entry is its
	// separator, at or before p (unless this is the first leaf), so the
	// entry is in this leaf if there is one.
	lo, hi := 0, l.n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if p.less(l.items[m].pos) {
			hi = m
		} else {
			lo = m + 1
		}
	}
	if lo == 0 || l.items[lo-1].key != key {
		return entry{}, false
	}
	return l.items[lo-1], true
}

// treeIter walks a tree in order. It is a value with no allocation of its
// own, so that a Scan's cursors allocate nothing per key range.
type treeIter struct {
	path [maxHeight]struct {
		b *branch
		i int
	} // path[0] is the leaf's parent, path[height-1] the root
	height int
	leaf   *leaf // nil at the end
	i      int
}

// seek returns an iterator at the first entry at or after p.
func (t *tree) seek(p pos) treeIter {
	it := treeIter{height: t.height}
	if t.n == 0 {
		return it
	}
	l := t.leaf
	if t.height > 0 {
		b := t.branch
		for h := t.height - 1; ; h-- {
			i := b.child(p)
			it.path[h].b, it.path[h].i = b, i
			if h == 0 {
				l = b.leaves[i]
				break
			}
			b = b.kids[i]
		}
	}
	it.leaf, it.i = l, l.search(p)
	if it.i == l.n {
		it.nextLeaf()
	}
	return it
}

// valid reports whether the iterator is at an entry.
func (it *treeIter) valid() bool { return it.leaf != nil }

// item returns the current entry. REQUIRES: valid.
func (it *treeIter) item() entry { return it.leaf.items[it.i] }

// next moves to the next entry. REQUIRES: valid.
func (it *treeIter) next() {
	it.i++
	if it.i == it.leaf.n {
		it.nextLeaf()
	}
}

// nextLeaf moves to the first entry of the next leaf, or to the end.
func (it *treeIter) nextLeaf() {
	h := 0
	for h < it.height && it.path[h].i+1 == it.path[h].b.n {
		h++
	}
	if h == it.height {
		it.leaf = nil
		return
	}
	it.path[h].i++
	for ; h > 0; h-- {
		it.path[h-1].b, it.path[h-1].i = it.path[h].b.kids[it.path[h].i], 0
	}
	it.leaf, it.i = it.path[0].b.leaves[it.path[0].i], 0
}

// ascend calls fn for the entries at or after p in order until fn returns
// false.
func (t *tree) ascend(p pos, fn func(entry) bool) {
	for it := t.seek(p); it.valid(); it.next() {
		if !fn(it.item()) {
			return
		}
	}
}

// cowTree is the Tail's side of a tree: it changes in place the nodes it
// alone holds and copies, once, a node that a View may hold before it
// changes it (copy-on-write).
//
// Invariants:
//
//  1. A node whose epoch is the cowTree's epoch is reachable from this
//     cowTree only, never from a tree that freeze returned.
//  2. freeze starts a new epoch, so every node a View can reach has an
//     older epoch and is never written again.
//
// Nodes never pass between cowTrees, so epochs are counted per cowTree.
//
// A cowTree is not safe for concurrent use; the Tail owns it.
type cowTree struct {
	tree
	epoch uint64
}

// freeze returns the tree as it is, for a View, and makes every node it
// reaches copy-on-write for later changes. O(1).
func (t *cowTree) freeze() tree {
	t.epoch++
	return t.tree
}

func (t *cowTree) ownLeaf(l *leaf) *leaf {
	if l.epoch == t.epoch {
		return l
	}
	c := *l
	c.epoch = t.epoch
	return &c
}

func (t *cowTree) ownBranch(b *branch) *branch {
	if b.epoch == t.epoch {
		return b
	}
	c := *b
	c.epoch = t.epoch
	return &c
}

// set inserts e, or replaces the entry at e's position and returns it.
//
// Cost: O(log n), and a copy of each node on the path that a View holds.
func (t *cowTree) set(e entry) (old entry, replaced bool) {
	if t.height == 0 {
		if t.leaf == nil {
			t.leaf = &leaf{epoch: t.epoch}
		}
		t.leaf = t.ownLeaf(t.leaf)
		var right *leaf
		old, replaced, right = t.leafSet(t.leaf, e)
		if right != nil {
			b := &branch{epoch: t.epoch, n: 2}
			b.leaves[0], b.leaves[1], b.seps[1] = t.leaf, right, right.items[0].pos
			t.leaf, t.branch, t.height = nil, b, 1
		}
	} else {
		t.branch = t.ownBranch(t.branch)
		var right *branch
		var sep pos
		old, replaced, right, sep = t.branchSet(t.branch, t.height, e)
		if right != nil {
			if t.height == maxHeight {
				panic("livetail: tree taller than maxHeight")
			}
			b := &branch{epoch: t.epoch, n: 2}
			b.kids[0], b.kids[1], b.seps[1] = t.branch, right, sep
			t.branch = b
			t.height++
		}
	}
	if !replaced {
		t.n++
	}
	return old, replaced
}

// leafSet sets e in l, which t owns, and returns the new right sibling if
// l split.
func (t *cowTree) leafSet(l *leaf, e entry) (old entry, replaced bool, right *leaf) {
	i := l.search(e.pos)
	if i < l.n && l.items[i].pos == e.pos {
		old, l.items[i] = l.items[i], e
		return old, true, nil
	}
	if l.n == nodeCap {
		const half = nodeCap / 2
		right = &leaf{epoch: t.epoch, n: nodeCap - half}
		copy(right.items[:], l.items[half:])
		l.n = half
		if i > half {
			l, i = right, i-half
		}
	}
	copy(l.items[i+1:l.n+1], l.items[i:l.n])
	l.items[i] = e
	l.n++
	return entry{}, false, right
}

// branchSet sets e under b, which t owns and which is at height h, and
// returns the new right sibling and its separator if b split.
func (t *cowTree) branchSet(b *branch, h int, e entry) (old entry, replaced bool, right *branch, sep pos) {
	i := b.child(e.pos)
	if h == 1 {
		c := t.ownLeaf(b.leaves[i])
		b.leaves[i] = c
		var cr *leaf
		old, replaced, cr = t.leafSet(c, e)
		if cr != nil {
			right, sep = t.insertChild(b, i+1, cr.items[0].pos, nil, cr)
		}
		return old, replaced, right, sep
	}
	c := t.ownBranch(b.kids[i])
	b.kids[i] = c
	var cr *branch
	var csep pos
	old, replaced, cr, csep = t.branchSet(c, h-1, e)
	if cr != nil {
		right, sep = t.insertChild(b, i+1, csep, cr, nil)
	}
	return old, replaced, right, sep
}

// insertChild puts child kb or kl (the one not nil) at index i of b, which
// t owns, with separator sep, and returns the new right sibling and its
// separator if b split.
func (t *cowTree) insertChild(b *branch, i int, sep pos, kb *branch, kl *leaf) (right *branch, rsep pos) {
	if b.n == nodeCap {
		const half = nodeCap / 2
		right = &branch{epoch: t.epoch, n: nodeCap - half}
		copy(right.seps[:], b.seps[half:])
		rsep = b.seps[half]
		if kl != nil {
			copy(right.leaves[:], b.leaves[half:])
			clear(b.leaves[half:])
		} else {
			copy(right.kids[:], b.kids[half:])
			clear(b.kids[half:])
		}
		b.n = half
		if i > half {
			b, i = right, i-half
		}
	}
	copy(b.seps[i+1:b.n+1], b.seps[i:b.n])
	b.seps[i] = sep
	if kl != nil {
		copy(b.leaves[i+1:b.n+1], b.leaves[i:b.n])
		b.leaves[i] = kl
	} else {
		copy(b.kids[i+1:b.n+1], b.kids[i:b.n])
		b.kids[i] = kb
	}
	b.n++
	return right, rsep
}
