package livetail

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
)

// frozenCase is a frozen tree and the entries it held when frozen.
type frozenCase struct {
	tr   tree
	want []entry // sorted by pos
}

// checkTree compares every read of tr with want.
func checkTree(t *testing.T, tr tree, want []entry) {
	t.Helper()
	require.Equal(t, len(want), tr.Len())
	var got []entry
	tr.ascend(pos{}, func(e entry) bool { got = append(got, e); return true })
	require.Equal(t, want, got, "ascend")
	if len(want) == 0 {
		_, ok := tr.Min()
		assert.False(t, ok)
		_, ok = tr.Max()
		assert.False(t, ok)
		return
	}
	mn, _ := tr.Min()
	mx, _ := tr.Max()
	assert.Equal(t, want[0], mn)
	assert.Equal(t, want[len(want)-1], mx)
	// newest and seek at every key present, and between.
	for _, k := range []uint64{0, want[0].key, want[len(want)/2].key, want[len(want)/2].key + 1, want[len(want)-1].key, want[len(want)-1].key + 1} {
		var newest entry
		found := false
		for _, e := range want {
			if e.key == k {
				newest, found = e, true
			}
		}
		e, ok := tr.newest(k)
		assert.Equal(t, found, ok, "newest(%d)", k)
		if found {
			assert.Equal(t, newest, e, "newest(%d)", k)
		}
		i, _ := slices.BinarySearchFunc(want, pos{key: k}, func(e entry, p pos) int {
			switch {
			case e.pos.less(p):
				return -1
			case p.less(e.pos):
				return 1
			}
			return 0
		})
		it := tr.seek(pos{key: k})
		for _, w := range want[i:] {
			require.True(t, it.valid(), "seek(%d)", k)
			require.Equal(t, w, it.item())
			it.next()
		}
		assert.False(t, it.valid(), "seek(%d) past the end", k)
	}
}

// TestCowTree inserts random entries, with many revisions per key and
// replacements, freezing now and then, and checks the tree and every frozen
// tree against sorted slices at the end: a frozen tree never changes.
func TestCowTree(t *testing.T) {
	for _, keys := range []uint64{5, 300, 1 << 40} {
		rng := rand.New(rand.NewPCG(keys, 7))
		var ct cowTree
		var want []entry
		var frozen []frozenCase
		for i := range 20_000 {
			e := entry{pos: pos{key: rng.Uint64N(keys), rev: messages.Revision(rng.IntN(5000))}, slot: uint32(i)}
			j, found := slices.BinarySearchFunc(want, e.pos, func(x entry, p pos) int {
				switch {
				case x.pos.less(p):
					return -1
				case p.less(x.pos):
					return 1
				}
				return 0
			})
			old, replaced := ct.set(e)
			require.Equal(t, found, replaced)
			if found {
				require.Equal(t, want[j], old)
				want[j] = e
			} else {
				want = slices.Insert(want, j, e)
			}
			if rng.IntN(500) == 0 {
				frozen = append(frozen, frozenCase{ct.freeze(), slices.Clone(want)})
			}
		}
		assert.GreaterOrEqual(t, ct.height, 2, "keys %d: a tree of 20k entries has branches above branches", keys)
		checkTree(t, ct.tree, want)
		for _, f := range frozen {
			checkTree(t, f.tr, f.want)
		}
	}
}

func TestCowTreeEmpty(t *testing.T) {
	var ct cowTree
	checkTree(t, ct.freeze(), nil)
	_, ok := ct.newest(3)
	assert.False(t, ok)
}

func TestSlabPos(t *testing.T) {
	// Chunk 0 has 32 slots, chunk c >= 1 has 32<<(c-1): slot numbers run
	// through them without gaps.
	c, off, size := 0, uint32(0), uint32(1<<slabFirstBits)
	for i := range uint32(1 << 16) {
		gc, goff := slabPos(i)
		require.Equal(t, c, gc, "slot %d", i)
		require.Equal(t, off, goff, "slot %d", i)
		if off++; off == size {
			if c > 0 {
				size *= 2
			}
			c, off = c+1, 0
		}
	}
	gc, goff := slabPos(^uint32(0))
	assert.Equal(t, 32-slabFirstBits, gc)
	assert.Equal(t, uint32(1<<31-1), goff)
}
