package livetail

import (
	"context"

	"github.com/ringpipe/ringpipe/messages"
)

// Block is a sealed, immutable run of one space's records sorted by
// (key, revision), as the snapshot package writes them. livetail names only
// the methods it needs so that it does not depend on the block format; the
// engine adapts *snapshot.Block to it (MinKey, MaxKey and MaxRevision from
// its Meta, Get and MayContain as they are, Scan over one KeyRange).
//
// A Block is shared by every View that holds it and read by many goroutines
// at once, so all of its methods must be safe for concurrent use.
//
// A block may read its records from disk on demand (snapshot's blocks do),
// so Get and Scan can fail: with an I/O error, or with corruption found in
// what they read. The View hands such an error to its caller; it never
// takes a failed read for a missing record. A read that waits for the disk
// gives up when ctx ends, with ctx's error.
type Block interface {
	// MinKey and MaxKey are the smallest and largest key the block holds
	// (inclusive).
	MinKey() uint64
	MaxKey() uint64
	// MaxRevision is the highest revision the block holds.
	MaxRevision() messages.Revision
	// MayContain reports false only if the block certainly holds no record
	// with key (a Bloom filter answer).
	MayContain(key uint64) bool
	// Get returns the newest record with key in the block, tombstones
	// included, and whether there is one. p is the point whose key is key
	// (never nil here); a block may use it to check the record's point.
	Get(ctx context.Context, key uint64, p messages.Point) (messages.Record, bool, error)
	// Scan calls fn for the records with lo <= key <= hi in key order until
	// fn returns false or a read fails (the error): at least the newest
	// record of each key; older revisions of a key may come too, before
	// it, in ascending revision order. Scanning again from the same lo
	// yields the same sequence.
	Scan(ctx context.Context, lo, hi uint64, fn func(key uint64, r messages.Record) bool) error
}

// Keyer maps a space's points to keys and boxes to key ranges. For the
// engine it is the space's Hilbert curve (package snapshot); a Keyer must be
// safe for concurrent use.
type Keyer interface {
	// Key returns the key of p. p has already been checked against the
	// space's spec.
	Key(p messages.Point) uint64
	// Ranges returns key ranges, sorted ascending and disjoint, that
	// together hold the key of every point inside box. They may hold keys
	// of points outside box too (an approximation to bound their number);
	// View.Scan filters those out. box has already been checked.
	Ranges(box Box) []KeyRange
}

// KeyRange is the keys Lo..Hi, both inclusive.
type KeyRange struct {
	Lo, Hi uint64
}

// Box is the points p with Min[i] <= p[i] <= Max[i] on every dimension i.
type Box struct {
	Min, Max messages.Point
}

// Contains reports whether p lies inside b. p and b must have the same
// number of dimensions.
func (b Box) Contains(p messages.Point) bool {
	if len(p) != len(b.Min) || len(p) != len(b.Max) {
		return false
	}
	for i, c := range p {
		if c < b.Min[i] || c > b.Max[i] {
			return false
		}
	}
	return true
}

// empty reports whether some dimension has Min > Max, so that no point lies
// inside b.
func (b Box) empty() bool {
	for i := range b.Min {
		if b.Min[i] > b.Max[i] {
			return true
		}
	}
	return false
}
