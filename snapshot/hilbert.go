// Package snapshot holds ringpipe's sealed state: Hilbert keys, sealed
// blocks (blocks/<space>/<id>.blk) and the manifest (MANIFEST-<n>, CURRENT)
// that names them. Every type here is plain logic without goroutines; file
// I/O goes through a ring.Doer so that the simulated backend can fail or
// crash any step.
package snapshot

import (
	"slices"

	"github.com/ringpipe/ringpipe/messages"
)

// Hilbert keys.
//
// A point's key is its index along the Hilbert curve that fills its space
// (Dims dimensions of Bits bits each, Dims*Bits <= 64). The conversion is
// John Skilling's "Programming the Hilbert curve" (AIP Conf. Proc. 707,
// 2004): the point is transformed in place into the "transposed" index, in
// which coordinate word i holds key bits i, i+Dims, i+2*Dims, ... counted
// from the most significant; interleaving those bits gives the key. The
// transform is a bijection, so PointOf undoes Key exactly.
//
// For Dims == 1 the key is the coordinate itself (Skilling's transform
// would permute a one-dimensional axis for no benefit).

// maxDims is the largest number of dimensions a space may have.
const maxDims = 16

// Key returns the Hilbert key of p in a space of dims dimensions and bits
// bits per dimension.
// REQUIRES: 1 <= dims <= 16, 1 <= bits <= 32, dims*bits <= 64 and p is a
// point of that space (messages.SpaceSpec.CheckPoint). Coordinates beyond
// len(p) count as 0 and bits above bits are ignored, so bad input gives a
// wrong key, never a panic.
func Key(p messages.Point, dims, bits int) uint64 {
	if !shapeOK(dims, bits) {
		return 0
	}
	mask := coordMask(bits)
	if dims == 1 {
		if len(p) == 0 {
			return 0
		}
		return uint64(p[0]) & mask
	}
	var x [maxDims]uint64
	for i := 0; i < dims && i < len(p); i++ {
		x[i] = uint64(p[i]) & mask
	}
	axesToTranspose(x[:dims], bits)
	return interleave(x[:dims], bits)
}

// PointOf returns the point whose Hilbert key is key; it is the inverse of
// Key. Key bits above dims*bits are ignored.
// REQUIRES: 1 <= dims <= 16, 1 <= bits <= 32, dims*bits <= 64 (otherwise
// PointOf returns nil).
func PointOf(key uint64, dims, bits int) messages.Point {
	if !shapeOK(dims, bits) {
		return nil
	}
	p := make(messages.Point, dims)
	pointInto(p, key, dims, bits)
	return p
}

// pointInto is PointOf writing into p (len(p) == dims).
func pointInto(p messages.Point, key uint64, dims, bits int) {
	if dims == 1 {
		p[0] = uint32(key & coordMask(bits))
		return
	}
	var x [maxDims]uint64
	deinterleave(x[:dims], key, bits)
	transposeToAxes(x[:dims], bits)
	for i := range dims {
		p[i] = uint32(x[i])
	}
}

func shapeOK(dims, bits int) bool {
	return dims >= 1 && dims <= maxDims && bits >= 1 && bits <= 32 && dims*bits <= 64
}

func coordMask(bits int) uint64 { return 1<<uint(bits) - 1 }

// keyMask is the mask of the dims*bits low bits of a key.
func keyMask(dims, bits int) uint64 {
	if dims*bits == 64 {
		return ^uint64(0)
	}
	return 1<<uint(dims*bits) - 1
}

// axesToTranspose is Skilling's AxestoTranspose: it turns coordinates x
// (each < 2^bits) into the transposed Hilbert index, in place.
func axesToTranspose(x []uint64, bits int) {
	n := len(x)
	m := uint64(1) << uint(bits-1)
	// Inverse undo: walk the bits from the top, reflecting (when the bit
	// is set) or exchanging (when it is clear) the lower bits of x[0].
	for q := m; q > 1; q >>= 1 {
		p := q - 1
		for i := range n {
			if x[i]&q != 0 {
				x[0] ^= p
			} else {
				t := (x[0] ^ x[i]) & p
				x[0] ^= t
				x[i] ^= t
			}
		}
	}
	// Gray encode.
	for i := 1; i < n; i++ {
		x[i] ^= x[i-1]
	}
	var t uint64
	for q := m; q > 1; q >>= 1 {
		if x[n-1]&q != 0 {
			t ^= q - 1
		}
	}
	for i := range n {
		x[i] ^= t
	}
}

// transposeToAxes is Skilling's TransposetoAxes, the inverse of
// axesToTranspose.
func transposeToAxes(x []uint64, bits int) {
	n := len(x)
	top := uint64(1) << uint(bits) // 2^bits; fits: bits <= 32
	// Gray decode by H ^ (H/2).
	t := x[n-1] >> 1
	for i := n - 1; i > 0; i-- {
		x[i] ^= x[i-1]
	}
	x[0] ^= t
	// Undo the excess work.
	for q := uint64(2); q != top; q <<= 1 {
		p := q - 1
		for i := n - 1; i >= 0; i-- {
			if x[i]&q != 0 {
				x[0] ^= p
			} else {
				t := (x[0] ^ x[i]) & p
				x[0] ^= t
				x[i] ^= t
			}
		}
	}
}

// interleave packs the transposed index into a key: the most significant
// key bit is the top bit of x[0], then the top bit of x[1], and so on.
func interleave(x []uint64, bits int) uint64 {
	var k uint64
	for b := bits - 1; b >= 0; b-- {
		for i := range x {
			k = k<<1 | (x[i]>>uint(b))&1
		}
	}
	return k
}

// deinterleave is the inverse of interleave.
func deinterleave(x []uint64, key uint64, bits int) {
	n := len(x)
	shift := uint(n*bits - 1)
	for b := bits - 1; b >= 0; b-- {
		for i := range x {
			x[i] |= (key >> shift & 1) << uint(b)
			shift--
		}
	}
}

// Box is an inclusive box of a space: every point p with
// Min[i] <= p[i] <= Max[i] in every dimension i.
type Box struct {
	Min, Max messages.Point
}

// KeyRange is an inclusive range of keys.
type KeyRange struct {
	Lo, Hi uint64
}

// Contains reports whether k lies in r.
func (r KeyRange) Contains(k uint64) bool { return r.Lo <= k && k <= r.Hi }

// Overlaps reports whether r and o share a key.
func (r KeyRange) Overlaps(o KeyRange) bool { return r.Lo <= o.Hi && o.Lo <= r.Hi }

// rangesBudget bounds how many tree nodes Ranges keeps while it refines a
// box: refinement stops when the next level would exceed it, so the work
// is O(budget * dims * bits) whatever the box. Eight candidates per output
// range leave merging enough choice to keep the gaps it swallows small.
func rangesBudget(max int) int {
	const floor = 256
	b := 8 * max
	if b < floor {
		b = floor
	}
	return b
}

// Ranges decomposes box into at most max sorted, disjoint key ranges that
// together hold the key of every point in the box. When max forces it,
// neighbouring ranges are merged across their smallest gaps, so the ranges
// may also hold keys of points outside the box (a superset, never a loss).
// With a max large enough for the box, the ranges hold exactly its keys.
//
// An empty box (Min[i] > Max[i] somewhere, or Min beyond the space) gives
// no ranges; Max is clamped to the space; a box whose Min or Max does not
// have dims coordinates gives no ranges. max < 1 counts as 1.
func Ranges(box Box, dims, bits int, max int) []KeyRange {
	if !shapeOK(dims, bits) || len(box.Min) != dims || len(box.Max) != dims {
		return nil
	}
	if max < 1 {
		max = 1
	}
	lim := coordMask(bits)
	var lo, hi [maxDims]uint64
	for i := range dims {
		lo[i], hi[i] = uint64(box.Min[i]), min(uint64(box.Max[i]), lim)
		if lo[i] > hi[i] {
			return nil
		}
	}
	r := rangeFinder{dims: dims, bits: bits, lo: lo, hi: hi}
	return r.run(max)
}

// node is one cell of the Hilbert tree: the cube of side 2^side whose
// points have the keys [prefix << (side*dims), (prefix+1) << (side*dims)).
type node struct {
	prefix uint64
	side   int
	origin [maxDims]uint64 // the cube's lowest corner
}

type rangeFinder struct {
	dims, bits int
	lo, hi     [maxDims]uint64 // the box, inclusive, clamped to the space
}

// span returns the key range of n.
func (r *rangeFinder) span(n *node) KeyRange {
	sh := uint(n.side * r.dims)
	if sh == 64 {
		return KeyRange{0, ^uint64(0)}
	}
	return KeyRange{n.prefix << sh, (n.prefix+1)<<sh - 1}
}

// inside reports whether n's cube lies wholly in the box.
func (r *rangeFinder) inside(n *node) bool {
	w := uint64(1)<<uint(n.side) - 1
	for i := range r.dims {
		if n.origin[i] < r.lo[i] || n.origin[i]+w > r.hi[i] {
			return false
		}
	}
	return true
}

// children appends to dst the children of n whose cubes meet the box.
func (r *rangeFinder) children(dst []node, n *node) []node {
	half := uint64(1) << uint(n.side-1)
	// Per dimension, which halves of n's cube meet the box: bit 0 the
	// lower, bit 1 the upper.
	var which [maxDims]uint8
	for i := range r.dims {
		mid := n.origin[i] + half
		if r.lo[i] < mid {
			which[i] |= 1
		}
		if r.hi[i] >= mid {
			which[i] |= 2
		}
	}
	// Walk the product of the admitted halves like an odometer.
	var pick [maxDims]uint8 // 0 lower, 1 upper
	for i := range r.dims {
		if which[i]&1 == 0 {
			pick[i] = 1
		}
	}
	var pt [maxDims]uint32
	for {
		c := node{side: n.side - 1}
		for i := range r.dims {
			c.origin[i] = n.origin[i] + uint64(pick[i])*half
			pt[i] = uint32(c.origin[i])
		}
		c.prefix = Key(pt[:r.dims], r.dims, r.bits) >> uint(c.side*r.dims)
		dst = append(dst, c)
		i := 0
		for ; i < r.dims; i++ {
			if pick[i] == 0 && which[i]&2 != 0 {
				pick[i] = 1
				break
			}
			if which[i]&1 != 0 {
				pick[i] = 0
			}
		}
		if i == r.dims {
			return dst
		}
	}
}

// fanout returns how many children of n meet the box.
func (r *rangeFinder) fanout(n *node) int {
	half := uint64(1) << uint(n.side-1)
	f := 1
	for i := range r.dims {
		mid := n.origin[i] + half
		if r.lo[i] < mid && r.hi[i] >= mid {
			f *= 2
		}
	}
	return f
}

func (r *rangeFinder) run(max int) []KeyRange {
	budget := rangesBudget(max)
	var out []KeyRange
	level := []node{{side: r.bits}}
	var next []node
	for len(level) > 0 {
		next = next[:0]
		// Nodes of this level not refined (budget spent) are emitted
		// whole: their keys are a superset of the box's keys in them.
		total := len(out) + len(level)
		for k := range level {
			n := &level[k]
			if r.inside(n) {
				out = append(out, r.span(n))
				continue
			}
			f := r.fanout(n)
			if n.side == 0 || total-1+f > budget {
				out = append(out, r.span(n))
				continue
			}
			total += f - 1
			next = r.children(next, n)
		}
		level, next = next, level
	}
	slices.SortFunc(out, func(a, b KeyRange) int {
		switch {
		case a.Lo < b.Lo:
			return -1
		case a.Lo > b.Lo:
			return 1
		}
		return 0
	})
	out = coalesce(out)
	if len(out) > max {
		out = mergeSmallestGaps(out, max)
	}
	return out
}

// coalesce merges ranges that touch (sorted, disjoint input).
func coalesce(rs []KeyRange) []KeyRange {
	if len(rs) == 0 {
		return rs
	}
	w := 0
	for _, x := range rs[1:] {
		if rs[w].Hi != ^uint64(0) && rs[w].Hi+1 == x.Lo {
			rs[w].Hi = x.Hi
			continue
		}
		w++
		rs[w] = x
	}
	return rs[:w+1]
}

// mergeSmallestGaps merges sorted, disjoint ranges across their smallest
// gaps until max remain.
func mergeSmallestGaps(rs []KeyRange, max int) []KeyRange {
	// Keep the max-1 widest gaps; every other gap is bridged.
	gaps := make([]int, len(rs)-1) // gaps[i] lies between rs[i] and rs[i+1]
	for i := range gaps {
		gaps[i] = i
	}
	width := func(i int) uint64 { return rs[i+1].Lo - rs[i].Hi }
	slices.SortFunc(gaps, func(a, b int) int {
		wa, wb := width(a), width(b)
		switch {
		case wa > wb:
			return -1
		case wa < wb:
			return 1
		}
		return a - b
	})
	keep := make([]bool, len(gaps))
	for _, g := range gaps[:max-1] {
		keep[g] = true
	}
	out := make([]KeyRange, 0, max)
	cur := rs[0]
	for i, g := range keep {
		if g {
			out = append(out, cur)
			cur = rs[i+1]
		} else {
			cur.Hi = rs[i+1].Hi
		}
	}
	return append(out, cur)
}
