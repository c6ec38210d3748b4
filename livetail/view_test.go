package livetail

import (
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ringpipe/ringpipe/messages"
)

func TestMain(m *testing.M) {
	// The concurrency test starts goroutines; none may outlive it.
	goleak.VerifyTestMain(m)
}

const (
	sp1 messages.SpaceID = 1 // 1-D, Bits 8
	sp2 messages.SpaceID = 2 // 2-D, Bits 4, Z-order keys
)

func newTestTail(t testing.TB) *Tail {
	t.Helper()
	tl := NewTail()
	require.NoError(t, tl.AddSpace(messages.SpaceInfo{ID: sp1, SpaceSpec: messages.SpaceSpec{Name: "line", Dims: 1, Bits: 8}}, line{}))
	require.NoError(t, tl.AddSpace(messages.SpaceInfo{ID: sp2, SpaceSpec: messages.SpaceSpec{Name: "plane", Dims: 2, Bits: 4}}, morton{bits: 4}))
	return tl
}

// scanAll returns what Scan yields as "point:revision" pairs.
func scanAll(t *testing.T, v *View, space messages.SpaceID, box Box) []messages.Record {
	t.Helper()
	var out []messages.Record
	require.NoError(t, v.Scan(space, box, func(r messages.Record) bool {
		out = append(out, r)
		return true
	}))
	return out
}

func revs(recs []messages.Record) []messages.Revision {
	out := make([]messages.Revision, len(recs))
	for i, r := range recs {
		out[i] = r.Revision
	}
	return out
}

func box1(lo, hi uint32) Box { return Box{Min: messages.Point{lo}, Max: messages.Point{hi}} }

func getRev(t *testing.T, v *View, space messages.SpaceID, p ...uint32) messages.Revision {
	t.Helper()
	r, err := v.Get(space, p)
	if errors.Is(err, ErrNotFound) {
		return 0
	}
	require.NoError(t, err)
	return r.Revision
}

func TestEmptyTail(t *testing.T) {
	tl := NewTail()
	v := tl.Publish()
	assert.Equal(t, messages.Revision(0), v.Revision())
	assert.Empty(t, v.Spaces())
	_, err := v.Get(sp1, messages.Point{1})
	assert.ErrorIs(t, err, ErrUnknownSpace)
	assert.Same(t, v, tl.View())
}

func TestAppendGet(t *testing.T) {
	tl := newTestTail(t)
	require.NoError(t, tl.Append(sp1, 1, put(1, "a", 5), put(2, "b", 7)))
	require.NoError(t, tl.Append(sp2, 1, put(3, "c", 2, 3)))
	v := tl.Publish()

	r, err := v.Get(sp1, messages.Point{5})
	require.NoError(t, err)
	assert.Equal(t, "a", string(r.Value))
	assert.Equal(t, messages.Revision(1), r.Revision)
	assert.Equal(t, sp1, r.Space)
	assert.Equal(t, messages.Point{5}, r.Point)

	r, err = v.Get(sp2, messages.Point{2, 3})
	require.NoError(t, err)
	assert.Equal(t, "c", string(r.Value))

	_, err = v.Get(sp1, messages.Point{6})
	assert.ErrorIs(t, err, ErrNotFound)
	_, err = v.Get(sp2, messages.Point{3, 2})
	assert.ErrorIs(t, err, ErrNotFound)
	assert.Equal(t, messages.Revision(3), v.Revision())
	n, err := v.TailLen(sp1)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
}

func TestGetEdgesOfKeySpace(t *testing.T) {
	tl := newTestTail(t)
	require.NoError(t, tl.Append(sp1, 1, put(1, "lo", 0), put(2, "hi", 255)))
	v := tl.Publish()
	assert.Equal(t, messages.Revision(1), getRev(t, v, sp1, 0))
	assert.Equal(t, messages.Revision(2), getRev(t, v, sp1, 255))
	assert.Equal(t, messages.Revision(0), getRev(t, v, sp1, 254))
	assert.Equal(t, messages.Revision(0), getRev(t, v, sp1, 1))
}

func TestOverwriteNewestWins(t *testing.T) {
	tl := newTestTail(t)
	// Revisions arrive out of order across batches and generations.
	require.NoError(t, tl.Append(sp1, 2, put(9, "new", 4)))
	require.NoError(t, tl.Append(sp1, 1, put(3, "old", 4), put(5, "mid", 4)))
	v := tl.Publish()
	r, err := v.Get(sp1, messages.Point{4})
	require.NoError(t, err)
	assert.Equal(t, "new", string(r.Value))
	got := scanAll(t, v, sp1, box1(0, 255))
	require.Len(t, got, 1)
	assert.Equal(t, "new", string(got[0].Value))
}

func TestTombstones(t *testing.T) {
	tl := newTestTail(t)
	require.NoError(t, tl.Append(sp1, 1, put(1, "a", 3), put(2, "b", 4)))
	require.NoError(t, tl.Append(sp1, 1, del(3, 3)))
	v := tl.Publish()
	_, err := v.Get(sp1, messages.Point{3})
	assert.ErrorIs(t, err, ErrNotFound)
	assert.Equal(t, []messages.Revision{2}, revs(scanAll(t, v, sp1, box1(0, 255))))

	// A put after the tombstone revives the point.
	require.NoError(t, tl.Append(sp1, 1, put(4, "again", 3)))
	v2 := tl.Publish()
	r, err := v2.Get(sp1, messages.Point{3})
	require.NoError(t, err)
	assert.Equal(t, "again", string(r.Value))
	assert.Equal(t, []messages.Revision{4, 2}, revs(scanAll(t, v2, sp1, box1(0, 255))))

	// A tombstone in a block hides an older tail record, and a tail
	// tombstone hides an older block record.
	tl = newTestTail(t)
	require.NoError(t, tl.Append(sp1, 1, put(1, "tail", 10), del(6, 11)))
	require.NoError(t, tl.AddBlock(sp1, newBlock(line{}, []messages.Record{del(5, 10), put(2, "blk", 11)})))
	v = tl.Publish()
	_, err = v.Get(sp1, messages.Point{10})
	assert.ErrorIs(t, err, ErrNotFound)
	_, err = v.Get(sp1, messages.Point{11})
	assert.ErrorIs(t, err, ErrNotFound)
	assert.Empty(t, scanAll(t, v, sp1, box1(0, 255)))
}

func TestEmptyValueIsNotTombstone(t *testing.T) {
	tl := newTestTail(t)
	require.NoError(t, tl.Append(sp1, 1, messages.Record{Point: messages.Point{1}, Revision: 1}))
	r, err := tl.Publish().Get(sp1, messages.Point{1})
	require.NoError(t, err)
	assert.Nil(t, r.Value)
}

func TestDuplicateRevisionTailAndBlock(t *testing.T) {
	tl := newTestTail(t)
	rec := put(7, "dup", 20)
	require.NoError(t, tl.Append(sp1, 3, rec))
	require.NoError(t, tl.Append(sp1, 3, rec)) // same (space, revision) again
	require.NoError(t, tl.Append(sp1, StagedGeneration, rec))
	require.NoError(t, tl.AddBlock(sp1, newBlock(line{}, []messages.Record{rec, put(8, "x", 21)})))
	v := tl.Publish()
	r, err := v.Get(sp1, messages.Point{20})
	require.NoError(t, err)
	assert.Equal(t, messages.Revision(7), r.Revision)
	// Once in a scan, whether it goes through the merge or not.
	assert.Equal(t, []messages.Revision{7, 8}, revs(scanAll(t, v, sp1, box1(0, 255))))
	assert.Equal(t, []messages.Revision{7}, revs(scanAll(t, v, sp1, box1(20, 20))))
	n, err := v.TailLen(sp1)
	require.NoError(t, err)
	assert.Equal(t, 2, n, "one copy per generation")
}

func TestOverlappingBlocksMaxRevisionWins(t *testing.T) {
	tl := newTestTail(t)
	// Block a is newer overall (MaxRevision 10) but block b holds the newer
	// record at point 1: the answer is the max revision, not the first
	// found.
	a := newBlock(line{}, []messages.Record{put(2, "a-old", 1), put(10, "a", 3)})
	b := newBlock(line{}, []messages.Record{put(7, "b-new", 1), put(8, "b", 2), put(4, "b3", 3)})
	require.NoError(t, tl.AddBlock(sp1, a))
	require.NoError(t, tl.AddBlock(sp1, b))
	v := tl.Publish()
	r, err := v.Get(sp1, messages.Point{1})
	require.NoError(t, err)
	assert.Equal(t, "b-new", string(r.Value))
	r, err = v.Get(sp1, messages.Point{3})
	require.NoError(t, err)
	assert.Equal(t, "a", string(r.Value))
	assert.Equal(t, []messages.Revision{7, 8, 10}, revs(scanAll(t, v, sp1, box1(0, 255))))
	assert.Equal(t, messages.Revision(10), v.Revision())
	nb, err := v.Blocks(sp1)
	require.NoError(t, err)
	assert.Equal(t, 2, nb)
}

func TestGetSkipsBlocksThatCannotHelp(t *testing.T) {
	tl := newTestTail(t)
	old := newBlock(line{}, []messages.Record{put(1, "old", 5), put(2, "o", 9)})
	filtered := newBlock(line{}, []messages.Record{put(3, "f", 6), put(4, "f", 8)})
	require.NoError(t, tl.AddBlock(sp1, old))
	require.NoError(t, tl.AddBlock(sp1, filtered))
	require.NoError(t, tl.Append(sp1, 1, put(20, "tail", 5)))
	v := tl.Publish()

	// The tail's revision 20 is above every block's MaxRevision: no block
	// is asked.
	r, err := v.Get(sp1, messages.Point{5})
	require.NoError(t, err)
	assert.Equal(t, "tail", string(r.Value))
	assert.Zero(t, old.gets.Load())
	assert.Zero(t, filtered.gets.Load())

	// Point 9 is only in old: filtered's filter and key range rule it out.
	r, err = v.Get(sp1, messages.Point{9})
	require.NoError(t, err)
	assert.Equal(t, "o", string(r.Value))
	assert.Zero(t, filtered.gets.Load())
	assert.Equal(t, int64(1), old.gets.Load())

	// Point 7 lies in filtered's key range, but the filter says no.
	assert.Equal(t, messages.Revision(0), getRev(t, v, sp1, 7))
	assert.Zero(t, filtered.gets.Load())
	// A loose filter costs a Get but not a wrong answer.
	filtered.loose = true
	assert.Equal(t, messages.Revision(0), getRev(t, v, sp1, 7))
	assert.Equal(t, int64(1), filtered.gets.Load())
}

func TestSealDropsGeneration(t *testing.T) {
	tl := newTestTail(t)
	require.NoError(t, tl.Append(sp1, 1, put(1, "a", 1), put(2, "b", 2)))
	require.NoError(t, tl.Append(sp1, 2, put(3, "c", 3), put(4, "a2", 1)))
	v1 := tl.Publish()

	blk := newBlock(line{}, []messages.Record{put(1, "a", 1), put(2, "b", 2)})
	require.NoError(t, tl.Seal(sp1, 1, blk))
	v2 := tl.Publish()
	n, err := v2.TailLen(sp1)
	require.NoError(t, err)
	assert.Equal(t, 2, n, "generation 1 dropped, generation 2 kept")
	nb, err := v2.Blocks(sp1)
	require.NoError(t, err)
	assert.Equal(t, 1, nb)
	for _, v := range []*View{v1, v2} {
		assert.Equal(t, messages.Revision(4), getRev(t, v, sp1, 1))
		assert.Equal(t, messages.Revision(2), getRev(t, v, sp1, 2))
		assert.Equal(t, messages.Revision(3), getRev(t, v, sp1, 3))
		assert.Equal(t, []messages.Revision{4, 2, 3}, revs(scanAll(t, v, sp1, box1(0, 255))))
	}
	// Sealing an unknown generation only adds the block.
	require.NoError(t, tl.Seal(sp1, 77, newBlock(line{}, []messages.Record{put(5, "e", 9)})))
	v3 := tl.Publish()
	n, err = v3.TailLen(sp1)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.Equal(t, messages.Revision(5), getRev(t, v3, sp1, 9))
	assert.Equal(t, messages.Revision(5), v3.Revision())
}

func TestSealSweepsStagedRecords(t *testing.T) {
	tl := newTestTail(t)
	// 1 is staged and will be in the block; 2 is staged and shadowed by a
	// newer revision in the block; 3 is staged and newer than the block's.
	require.NoError(t, tl.Append(sp1, StagedGeneration, put(1, "s1", 1), put(2, "s2", 2), put(6, "s3", 3)))
	require.NoError(t, tl.Append(sp1, 4, put(1, "s1", 1), put(4, "g2", 2), put(5, "g3", 3)))
	require.NoError(t, tl.Seal(sp1, 4, newBlock(line{}, []messages.Record{put(1, "s1", 1), put(4, "g2", 2), put(5, "g3", 3)})))
	v := tl.Publish()
	n, err := v.TailLen(sp1)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "only the staged record newer than the block stays")
	assert.Equal(t, messages.Revision(1), getRev(t, v, sp1, 1))
	assert.Equal(t, messages.Revision(4), getRev(t, v, sp1, 2))
	assert.Equal(t, messages.Revision(6), getRev(t, v, sp1, 3))

	// Sealing the rest of the staged tree empties it.
	require.NoError(t, tl.Seal(sp1, 5, newBlock(line{}, []messages.Record{put(6, "s3", 3)})))
	v = tl.Publish()
	n, err = v.TailLen(sp1)
	require.NoError(t, err)
	assert.Zero(t, n)
	assert.Equal(t, messages.Revision(6), getRev(t, v, sp1, 3))
}

func TestLateAppendToSealedGeneration(t *testing.T) {
	tl := newTestTail(t)
	require.NoError(t, tl.Append(sp1, 1, put(1, "a", 1)))
	require.NoError(t, tl.Seal(sp1, 1, newBlock(line{}, []messages.Record{put(1, "a", 1)})))
	// The same record again: the block has it, nothing is added.
	require.NoError(t, tl.Append(sp1, 1, put(1, "a", 1)))
	// A record the block lacks stays visible (kept as staged).
	require.NoError(t, tl.Append(sp1, 1, put(2, "b", 2)))
	v := tl.Publish()
	n, err := v.TailLen(sp1)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Equal(t, messages.Revision(1), getRev(t, v, sp1, 1))
	assert.Equal(t, messages.Revision(2), getRev(t, v, sp1, 2))
}

func TestViewIsImmutable(t *testing.T) {
	tl := newTestTail(t)
	for i := range uint32(200) {
		require.NoError(t, tl.Append(sp1, 1, put(messages.Revision(i+1), "v1", i)))
	}
	v1 := tl.Publish()
	before := scanAll(t, v1, sp1, box1(0, 255))
	require.Len(t, before, 200)
	tailBefore, err := v1.TailLen(sp1)
	require.NoError(t, err)

	// Overwrite, delete, add to a new generation, seal the first one.
	var gen1 []messages.Record
	for i := range uint32(200) {
		gen1 = append(gen1, put(messages.Revision(i+1), "v1", i))
		require.NoError(t, tl.Append(sp1, 2, put(messages.Revision(1000+i), "v2", i%50)))
	}
	require.NoError(t, tl.Append(sp1, 2, del(2000, 7), put(2001, "new", 250)))
	require.NoError(t, tl.Seal(sp1, 1, newBlock(line{}, gen1)))
	require.NoError(t, tl.AddSpace(messages.SpaceInfo{ID: 9, SpaceSpec: messages.SpaceSpec{Name: "late", Dims: 1, Bits: 4}}, line{}))
	v2 := tl.Publish()
	require.NotSame(t, v1, v2)

	assert.Equal(t, before, scanAll(t, v1, sp1, box1(0, 255)))
	tailAfter, err := v1.TailLen(sp1)
	require.NoError(t, err)
	assert.Equal(t, tailBefore, tailAfter)
	nb, err := v1.Blocks(sp1)
	require.NoError(t, err)
	assert.Zero(t, nb)
	assert.Equal(t, messages.Revision(200), v1.Revision())
	assert.Equal(t, messages.Revision(8), getRev(t, v1, sp1, 7))
	assert.Equal(t, messages.Revision(0), getRev(t, v1, sp1, 250))
	_, err = v1.Get(9, messages.Point{1})
	assert.ErrorIs(t, err, ErrUnknownSpace)

	// And v2 shows the changes.
	assert.Equal(t, messages.Revision(0), getRev(t, v2, sp1, 7))
	assert.Equal(t, messages.Revision(2001), getRev(t, v2, sp1, 250))
	assert.Equal(t, messages.Revision(1150), getRev(t, v2, sp1, 0))
	assert.Equal(t, messages.Revision(100), getRev(t, v2, sp1, 99))
	assert.Equal(t, messages.Revision(2001), v2.Revision())
}

func TestPublishWithoutChangesReturnsSameView(t *testing.T) {
	tl := newTestTail(t)
	v1 := tl.Publish()
	assert.Same(t, v1, tl.Publish())
	require.NoError(t, tl.Append(sp1, 1, put(1, "a", 1)))
	v2 := tl.Publish()
	assert.NotSame(t, v1, v2)
	assert.Same(t, v2, tl.View())
	assert.Same(t, v2, tl.Publish())
	// An unchanged space is shared between Views.
	s1, err := v1.space(sp2)
	require.NoError(t, err)
	s2, err := v2.space(sp2)
	require.NoError(t, err)
	assert.Same(t, s1, s2)
	assert.Equal(t, messages.Revision(1), tl.Revision())
}

func TestUnknownSpace(t *testing.T) {
	tl := newTestTail(t)
	v := tl.Publish()
	_, err := v.Get(42, messages.Point{1})
	assert.ErrorIs(t, err, ErrUnknownSpace)
	assert.ErrorContains(t, err, "42")
	assert.ErrorIs(t, v.Scan(42, box1(0, 1), func(messages.Record) bool { return true }), ErrUnknownSpace)
	_, err = v.TailLen(42)
	assert.ErrorIs(t, err, ErrUnknownSpace)
	_, err = v.Blocks(42)
	assert.ErrorIs(t, err, ErrUnknownSpace)
	assert.ErrorIs(t, tl.Append(42, 1, put(1, "a", 1)), ErrUnknownSpace)
	assert.ErrorIs(t, tl.Seal(42, 1, newBlock(line{}, []messages.Record{put(1, "a", 1)})), ErrUnknownSpace)
	assert.ErrorIs(t, tl.AddBlock(42, newBlock(line{}, []messages.Record{put(1, "a", 1)})), ErrUnknownSpace)
}

func TestBadInput(t *testing.T) {
	tl := newTestTail(t)
	// A bad record anywhere in a batch adds nothing.
	err := tl.Append(sp1, 1, put(1, "a", 1), put(2, "b", 256))
	assert.ErrorIs(t, err, messages.ErrInvalidPoint)
	err = tl.Append(sp1, 1, put(1, "a", 1), put(2, "b", 1, 2))
	assert.ErrorIs(t, err, messages.ErrInvalidPoint)
	err = tl.Append(sp1, 1, messages.Record{Space: sp2, Point: messages.Point{1}, Revision: 3})
	assert.ErrorContains(t, err, "livetail: ")
	assert.Error(t, tl.Append(sp1, 1, put(0, "zero", 1)))
	v := tl.Publish()
	n, err := v.TailLen(sp1)
	require.NoError(t, err)
	assert.Zero(t, n)
	assert.Zero(t, tl.Revision())

	_, err = v.Get(sp1, messages.Point{1, 2})
	assert.ErrorIs(t, err, messages.ErrInvalidPoint)
	_, err = v.Get(sp2, messages.Point{16, 0})
	assert.ErrorIs(t, err, messages.ErrInvalidPoint)
	assert.ErrorIs(t, v.Scan(sp2, Box{Min: messages.Point{0}, Max: messages.Point{1, 1}}, nil), messages.ErrInvalidPoint)
	assert.ErrorIs(t, v.Scan(sp2, Box{Min: messages.Point{0, 0}, Max: messages.Point{1, 16}}, nil), messages.ErrInvalidPoint)

	assert.Error(t, tl.Seal(sp1, 1, nil))
	assert.Error(t, tl.AddBlock(sp1, nil))
	assert.Error(t, tl.Seal(sp1, StagedGeneration, newBlock(line{}, []messages.Record{put(1, "a", 1)})))

	// A record whose Space is set to its own space is fine.
	require.NoError(t, tl.Append(sp1, 1, messages.Record{Space: sp1, Point: messages.Point{3}, Revision: 5, Value: []byte("x")}))
	require.NoError(t, tl.Append(sp1, 1)) // an empty batch
	assert.Equal(t, messages.Revision(5), getRev(t, tl.Publish(), sp1, 3))
}

func TestAddSpace(t *testing.T) {
	tl := NewTail()
	info := messages.SpaceInfo{ID: 3, SpaceSpec: messages.SpaceSpec{Name: "s", Dims: 1, Bits: 8}}
	require.NoError(t, tl.AddSpace(info, line{}))
	require.NoError(t, tl.AddSpace(info, line{}), "same spec again")
	other := info
	other.Bits = 9
	assert.ErrorContains(t, tl.AddSpace(other, line{}), "already known")
	assert.Error(t, tl.AddSpace(messages.SpaceInfo{ID: 4, SpaceSpec: messages.SpaceSpec{Name: "bad", Dims: 0, Bits: 8}}, line{}))
	assert.Error(t, tl.AddSpace(messages.SpaceInfo{ID: 5, SpaceSpec: messages.SpaceSpec{Name: "nil", Dims: 1, Bits: 8}}, nil))
	v := tl.Publish()
	assert.Equal(t, []messages.SpaceInfo{info}, v.Spaces())
}

func TestScanBoxAndOrder(t *testing.T) {
	tl := newTestTail(t)
	m := morton{bits: 4}
	var recs []messages.Record
	rev := messages.Revision(0)
	for x := range uint32(16) {
		for y := range uint32(16) {
			rev++
			recs = append(recs, put(rev, "v", x, y))
		}
	}
	require.NoError(t, tl.Append(sp2, 1, recs...))
	v := tl.Publish()

	box := Box{Min: messages.Point{2, 3}, Max: messages.Point{5, 9}}
	got := scanAll(t, v, sp2, box)
	require.Len(t, got, 4*7, "every point of the box, inclusive edges, nothing outside")
	for i, r := range got {
		assert.True(t, box.Contains(r.Point), "%v outside the box", r.Point)
		if i > 0 {
			assert.Less(t, m.Key(got[i-1].Point), m.Key(r.Point), "key order")
		}
	}
	// One-point boxes at the corners and edges of the space.
	for _, p := range []messages.Point{{0, 0}, {15, 15}, {0, 15}, {15, 0}, {2, 3}, {5, 9}} {
		got := scanAll(t, v, sp2, Box{Min: p, Max: p})
		require.Len(t, got, 1, "%v", p)
		assert.Equal(t, p, got[0].Point)
	}
	assert.Len(t, scanAll(t, v, sp2, Box{Min: messages.Point{0, 0}, Max: messages.Point{15, 15}}), 256)
	// An empty box yields nothing.
	assert.Empty(t, scanAll(t, v, sp2, Box{Min: messages.Point{5, 3}, Max: messages.Point{4, 9}}))
}

func TestScanMergesTailAndBlocks(t *testing.T) {
	tl := newTestTail(t)
	require.NoError(t, tl.AddBlock(sp1, newBlock(line{}, []messages.Record{
		put(1, "b1", 1), put(2, "b1", 2), put(3, "b1", 3), put(12, "b1-newer", 3), del(13, 4), put(5, "b1", 5),
	})))
	require.NoError(t, tl.AddBlock(sp1, newBlock(line{}, []messages.Record{
		put(6, "b2", 2), put(7, "b2", 4), put(8, "b2", 6), put(9, "b2", 6),
	})))
	require.NoError(t, tl.Append(sp1, 1, put(10, "t", 1), del(11, 6), put(14, "t", 7)))
	require.NoError(t, tl.Append(sp1, 2, put(15, "t2", 5)))
	v := tl.Publish()
	got := scanAll(t, v, sp1, box1(0, 255))
	want := map[uint32]messages.Revision{1: 10, 2: 6, 3: 12, 5: 15, 7: 14}
	require.Len(t, got, len(want))
	prev := uint32(0)
	for _, r := range got {
		assert.Equal(t, want[r.Point[0]], r.Revision, "point %d", r.Point[0])
		assert.Greater(t, r.Point[0], prev)
		prev = r.Point[0]
		assert.Equal(t, want[r.Point[0]], getRev(t, v, sp1, r.Point[0]), "Get agrees at %d", r.Point[0])
	}
	assert.Zero(t, getRev(t, v, sp1, 4))
	assert.Zero(t, getRev(t, v, sp1, 6))
	assert.Equal(t, []messages.Revision{6, 12}, revs(scanAll(t, v, sp1, box1(2, 4))))
}

func TestScanEarlyStop(t *testing.T) {
	build := func(t *testing.T, tail, blocks bool) *View {
		tl := newTestTail(t)
		var recs []messages.Record
		for i := range uint32(50) {
			recs = append(recs, put(messages.Revision(i+1), "v", i))
		}
		if tail {
			require.NoError(t, tl.Append(sp1, 1, recs[:25]...))
		}
		if blocks {
			require.NoError(t, tl.AddBlock(sp1, newBlock(line{}, recs[25:])))
			require.NoError(t, tl.AddBlock(sp1, newBlock(line{}, recs[10:40])))
		}
		if tail && !blocks {
			require.NoError(t, tl.Append(sp1, 1, recs[25:]...))
		}
		if blocks && !tail {
			require.NoError(t, tl.AddBlock(sp1, newBlock(line{}, recs[:25])))
		}
		return tl.Publish()
	}
	for _, c := range []struct {
		name         string
		tail, blocks bool
		split        bool
	}{
		{"tail-only", true, false, false},
		{"merge", true, true, false},
		{"blocks-only", false, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := build(t, c.tail, c.blocks)
			for _, stop := range []int{1, 3, 17, 50} {
				calls := 0
				require.NoError(t, v.Scan(sp1, box1(0, 255), func(r messages.Record) bool {
					assert.Equal(t, uint32(calls), r.Point[0])
					calls++
					return calls < stop
				}))
				assert.Equal(t, stop, calls, "fn is not called after it returned false")
			}
		})
	}
	// Early stop across several key ranges.
	tl := NewTail()
	require.NoError(t, tl.AddSpace(messages.SpaceInfo{ID: 1, SpaceSpec: messages.SpaceSpec{Name: "s", Dims: 1, Bits: 8}}, line{split: 4}))
	for i := range uint32(30) {
		require.NoError(t, tl.Append(1, 1, put(messages.Revision(i+1), "v", i)))
	}
	v := tl.Publish()
	calls := 0
	require.NoError(t, v.Scan(1, box1(0, 255), func(messages.Record) bool { calls++; return calls < 10 }))
	assert.Equal(t, 10, calls)
	assert.Len(t, scanAll(t, v, 1, box1(0, 255)), 30)
	assert.Equal(t, []messages.Revision{4, 5, 6, 7, 8, 9}, revs(scanAll(t, v, 1, box1(3, 8))))
}

func TestScanReadsOnlyBlocksMeetingRanges(t *testing.T) {
	tl := NewTail()
	require.NoError(t, tl.AddSpace(messages.SpaceInfo{ID: 1, SpaceSpec: messages.SpaceSpec{Name: "s", Dims: 1, Bits: 8}}, line{split: 10}))
	low := newBlock(line{}, []messages.Record{put(1, "l", 0), put(2, "l", 9)})
	mid := newBlock(line{}, []messages.Record{put(3, "m", 40), put(4, "m", 60)})
	high := newBlock(line{}, []messages.Record{put(5, "h", 200), put(6, "h", 250)})
	for _, b := range []*fakeBlock{low, mid, high} {
		require.NoError(t, tl.AddBlock(1, b))
	}
	v := tl.Publish()
	// Ranges 0-9, 10-19: only low meets them.
	assert.Equal(t, []messages.Revision{1, 2}, revs(scanAll(t, v, 1, box1(0, 19))))
	assert.Equal(t, int64(1), low.scans.Load())
	assert.Zero(t, mid.scans.Load())
	assert.Zero(t, high.scans.Load())
	// 45..55 lies inside mid's key range but holds none of its keys.
	assert.Empty(t, scanAll(t, v, 1, box1(45, 55)))
	assert.Equal(t, int64(2), mid.scans.Load(), "ranges 45-54 and 55-55")
	assert.Zero(t, high.scans.Load())
}

func TestConcurrentReadersDuringPublish(t *testing.T) {
	tl := newTestTail(t)
	const points = 64
	for i := range uint32(points) {
		require.NoError(t, tl.Append(sp1, 0, put(messages.Revision(i+1), "v0", i)))
	}
	v0 := tl.Publish()
	want := scanAll(t, v0, sp1, box1(0, 255))

	var wg sync.WaitGroup
	done := make(chan struct{})
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				var got []messages.Record
				if err := v0.Scan(sp1, box1(0, 255), func(r messages.Record) bool { got = append(got, r); return true }); err != nil {
					errs <- err
					return
				}
				if len(got) != len(want) || got[points-1].Revision != want[points-1].Revision {
					errs <- errors.New("old view changed")
					return
				}
			}
		}()
	}
	rev := messages.Revision(points)
	for gen := uint64(1); gen <= 20; gen++ {
		var batch []messages.Record
		for i := range uint32(points) {
			rev++
			batch = append(batch, put(rev, "new", i))
		}
		require.NoError(t, tl.Append(sp1, gen, batch...))
		tl.Publish()
		require.NoError(t, tl.Seal(sp1, gen, newBlock(line{}, batch)))
		tl.Publish()
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}
	assert.Equal(t, want, scanAll(t, v0, sp1, box1(0, 255)))
}

func TestApplyBatch(t *testing.T) {
	tl := newTestTail(t)
	v1 := tl.Publish()
	blk := newBlock(line{}, []messages.Record{put(1, "a", 1)})
	v2, err := tl.Apply(
		Appended{Space: sp1, Generation: 1, Records: []messages.Record{put(1, "a", 1)}},
		Appended{Space: sp1, Generation: 2, Records: []messages.Record{put(2, "b", 2), del(3, 1)}},
		Sealed{Space: sp1, Generation: 1, Block: blk},
	)
	require.NoError(t, err)
	assert.NotSame(t, v1, v2, "one new View for the batch")
	assert.Same(t, v2, tl.View())
	assert.Zero(t, getRev(t, v2, sp1, 1))
	assert.Equal(t, messages.Revision(2), getRev(t, v2, sp1, 2))
	n, err := v2.TailLen(sp1)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	nb, err := v2.Blocks(sp1)
	require.NoError(t, err)
	assert.Equal(t, 1, nb)

	// A bad notice is skipped and reported; the others are published.
	v3, err := tl.Apply(
		Appended{Space: 42, Generation: 1, Records: []messages.Record{put(4, "x", 1)}},
		Appended{Space: sp1, Generation: 2, Records: []messages.Record{put(5, "c", 3), put(6, "bad", 300)}},
		Appended{Space: sp1, Generation: 2, Records: []messages.Record{put(7, "d", 4)}},
		nil,
	)
	assert.ErrorIs(t, err, ErrUnknownSpace)
	assert.ErrorIs(t, err, messages.ErrInvalidPoint)
	assert.ErrorContains(t, err, "unknown notice")
	assert.Equal(t, messages.Revision(7), getRev(t, v3, sp1, 4))
	assert.Zero(t, getRev(t, v3, sp1, 3), "the bad batch added nothing")
	assert.Equal(t, messages.Revision(7), v3.Revision())
}

// TestScanMergeLongBlocks crosses many chunk boundaries of the merge's
// block reads, with revisions of one key split across chunks.
func TestScanMergeLongBlocks(t *testing.T) {
	for _, newestOnly := range []bool{false, true} {
		tl := newTestTail(t)
		want := map[uint32]messages.Revision{}
		rev := messages.Revision(0)
		for bi := range 3 {
			var recs []messages.Record
			for k := range uint32(256) {
				if k >= 101 && k <= 103 {
					continue
				}
				for range 1 + (int(k)+bi)%4 { // 1..4 revisions per key
					rev++
					if (int(k)+bi)%7 == 0 {
						recs = append(recs, del(rev, k))
						want[k] = 0
					} else {
						recs = append(recs, put(rev, "v", k))
						want[k] = rev
					}
				}
			}
			b := newBlock(line{}, recs)
			b.newestOnly = newestOnly
			require.NoError(t, tl.AddBlock(sp1, b))
		}
		// One key with more revisions than the largest chunk, around
		// others.
		var many []messages.Record
		for i := range 3 * maxChunk {
			rev++
			many = append(many, put(rev, "many", 101+uint32(i%3)))
		}
		want[101], want[102], want[103] = rev-2, rev-1, rev
		hot := newBlock(line{}, many)
		hot.newestOnly = newestOnly
		require.NoError(t, tl.AddBlock(sp1, hot))
		rev++
		for k := uint32(0); k < 256; k += 5 {
			rev++
			require.NoError(t, tl.Append(sp1, 1, put(rev, "t", k)))
			want[k] = rev
		}
		v := tl.Publish()
		got := scanAll(t, v, sp1, box1(0, 255))
		var wantRevs []messages.Revision
		for k := range uint32(256) {
			if want[k] != 0 {
				wantRevs = append(wantRevs, want[k])
			}
		}
		assert.Equal(t, wantRevs, revs(got), "newestOnly=%v", newestOnly)
		assert.Equal(t, wantRevs[10:40], revs(scanAll(t, v, sp1, box1(got[10].Point[0], got[39].Point[0]))))
	}
}
