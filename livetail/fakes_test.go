package livetail

import (
	"context"

	"slices"
	"sync/atomic"

	"github.com/ringpipe/ringpipe/messages"
)

// line is the 1-D Keyer: the key is the coordinate. With split > 0, Ranges
// cuts the box into ranges of at most split keys, so that Scan walks
// several ranges.
type line struct{ split uint64 }

func (line) Key(p messages.Point) uint64 { return uint64(p[0]) }

func (l line) Ranges(b Box) []KeyRange {
	lo, hi := uint64(b.Min[0]), uint64(b.Max[0])
	if l.split == 0 {
		return []KeyRange{{lo, hi}}
	}
	var out []KeyRange
	for lo <= hi {
		end := min(lo+l.split-1, hi)
		out = append(out, KeyRange{lo, end})
		lo = end + 1
	}
	return out
}

// morton is a 2-D Z-order Keyer. Z-order is monotone in each coordinate, so
// the one range key(Min)..key(Max) holds every point of the box, and many
// outside it: Scan must filter.
type morton struct{ bits int }

func (m morton) Key(p messages.Point) uint64 {
	var k uint64
	for i := range m.bits {
		k |= uint64(p[0]>>i&1) << (2 * i)
		k |= uint64(p[1]>>i&1) << (2*i + 1)
	}
	return k
}

func (m morton) Ranges(b Box) []KeyRange {
	return []KeyRange{{m.Key(b.Min), m.Key(b.Max)}}
}

// fakeBlock is an in-memory Block. It counts its reads; with loose set its
// MayContain answers true for every key (a filter full of false positives).
type fakeBlock struct {
	keys  []uint64          // sorted by (key, revision) together with recs
	recs  []messages.Record // ditto
	set   map[uint64]bool
	loose bool
	// newestOnly makes Scan yield only the newest record of each key, as
	// snapshot.Block does.
	newestOnly bool
	maxRev     messages.Revision
	gets       atomic.Int64
	scans      atomic.Int64
	// fail, when set, is the error of every Get, and of Scan after it
	// passed failAfter records: a block whose reads from disk fail.
	fail      error
	failAfter int
}

// newBlock sorts records by (key, revision) with keyer k.
func newBlock(k Keyer, recs []messages.Record) *fakeBlock {
	type kr struct {
		key uint64
		r   messages.Record
	}
	all := make([]kr, len(recs))
	for i, r := range recs {
		all[i] = kr{k.Key(r.Point), r}
	}
	slices.SortFunc(all, func(a, b kr) int {
		if a.key != b.key {
			if a.key < b.key {
				return -1
			}
			return 1
		}
		switch {
		case a.r.Revision < b.r.Revision:
			return -1
		case a.r.Revision > b.r.Revision:
			return 1
		}
		return 0
	})
	b := &fakeBlock{set: map[uint64]bool{}}
	for _, x := range all {
		b.keys = append(b.keys, x.key)
		b.recs = append(b.recs, x.r)
		b.set[x.key] = true
		b.maxRev = max(b.maxRev, x.r.Revision)
	}
	return b
}

func (b *fakeBlock) MinKey() uint64 { return b.keys[0] }
func (b *fakeBlock) MaxKey() uint64 { return b.keys[len(b.keys)-1] }

func (b *fakeBlock) MaxRevision() messages.Revision { return b.maxRev }

func (b *fakeBlock) MayContain(key uint64) bool { return b.loose || b.set[key] }

func (b *fakeBlock) Get(_ context.Context, key uint64, p messages.Point) (messages.Record, bool, error) {
	b.gets.Add(1)
	if b.fail != nil {
		return messages.Record{}, false, b.fail
	}
	i, _ := slices.BinarySearch(b.keys, key+1) // first index with key > key
	if key == ^uint64(0) {
		i = len(b.keys)
	}
	if i == 0 || b.keys[i-1] != key {
		return messages.Record{}, false, nil
	}
	if p == nil || !slices.Equal(p, b.recs[i-1].Point) {
		panic("livetail: Block.Get called without the record's point")
	}
	return b.recs[i-1], true, nil
}

func (b *fakeBlock) Scan(_ context.Context, lo, hi uint64, fn func(uint64, messages.Record) bool) error {
	b.scans.Add(1)
	i, _ := slices.BinarySearch(b.keys, lo)
	for n := 0; i < len(b.keys) && b.keys[i] <= hi; i++ {
		if b.newestOnly && i+1 < len(b.keys) && b.keys[i+1] == b.keys[i] {
			continue
		}
		if b.fail != nil && n == b.failAfter {
			return b.fail
		}
		n++
		if !fn(b.keys[i], b.recs[i]) {
			return nil
		}
	}
	return nil
}

// put and del build records for tests.
func put(rev messages.Revision, value string, p ...uint32) messages.Record {
	return messages.Record{Point: p, Revision: rev, Value: []byte(value)}
}

func del(rev messages.Revision, p ...uint32) messages.Record {
	return messages.Record{Point: p, Revision: rev, Tombstone: true}
}
