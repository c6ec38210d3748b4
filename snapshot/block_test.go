package snapshot

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
)

func TestMain(m *testing.M) {
	// The std ring backend runs a goroutine pool.
	goleak.VerifyTestMain(m)
}

// newDoer returns a Doer over a fresh std ring, closed at cleanup.
func newDoer(t testing.TB) *ring.Sync {
	r, err := ring.New(ring.Options{Kind: ring.Std})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, r.Close()) })
	return ring.NewSync(r)
}

var testSpec = messages.SpaceSpec{Name: "grid", Dims: 2, Bits: 16}

// genEntries makes n records at random points of testSpec with a few
// revisions per point, about a tenth of them tombstones.
func genEntries(t testing.TB, rng *rand.Rand, n int, rev *messages.Revision) []Entry {
	return genEntriesIn(t, rng, n, rev, testSpec)
}

// genEntriesIn is genEntries in a two-dimensional spec.
func genEntriesIn(t testing.TB, rng *rand.Rand, n int, rev *messages.Revision, spec messages.SpaceSpec) []Entry {
	recs := make([]messages.Record, 0, n)
	var pts []messages.Point
	for len(recs) < n {
		var p messages.Point
		if len(pts) > 0 && rng.IntN(4) == 0 {
			p = pts[rng.IntN(len(pts))] // another revision of a known point
		} else {
			p = messages.Point{uint32(rng.IntN(1 << spec.Bits)), uint32(rng.IntN(1 << spec.Bits))}
			pts = append(pts, p)
		}
		*rev++
		r := messages.Record{Space: 7, Point: p, Revision: *rev}
		if rng.IntN(10) == 0 {
			r.Tombstone = true
		} else {
			r.Value = fmt.Appendf(nil, "v%d@%v", *rev, p)
		}
		recs = append(recs, r)
	}
	es, err := Entries(spec, recs)
	require.NoError(t, err)
	return es
}

// newest maps each key to its newest entry.
func newest(es []Entry) map[uint64]Entry {
	m := map[uint64]Entry{}
	for _, e := range es {
		if o, ok := m[e.Key]; !ok || e.Revision > o.Revision {
			m[e.Key] = e
		}
	}
	return m
}

func TestBlockRoundTrip(t *testing.T) {
	d := newDoer(t)
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 1))
	var rev messages.Revision
	es := genEntries(t, rng, 5000, &rev)

	meta, err := WriteBlock(d, dir, 7, 42, es)
	require.NoError(t, err)
	assert.Equal(t, messages.SpaceID(7), meta.Space)
	assert.Equal(t, uint64(42), meta.ID)
	assert.Equal(t, uint64(5000), meta.Count)
	assert.Equal(t, messages.Revision(1), meta.MinRev)
	assert.Equal(t, rev, meta.MaxRev)
	path := filepath.Join(dir, "blocks", "7", "42.blk")
	require.Equal(t, path, BlockPath(dir, 7, 42))
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, meta.Size, st.Size())
	_, err = os.Stat(path + ".tmp")
	assert.True(t, os.IsNotExist(err), "no temporary file left")

	b, err := OpenBlock(d, path)
	require.NoError(t, err)
	assert.Equal(t, meta, b.Meta())
	b2, err := OpenBlockFor(d, dir, meta)
	require.NoError(t, err)
	assert.Equal(t, meta, b2.Meta())

	want := newest(es)
	keys := make([]uint64, 0, len(want))
	for k, e := range want {
		keys = append(keys, k)
		got, ok, err := b.Get(k, e.Point)
		require.NoError(t, err)
		require.True(t, ok, "key %d", k)
		require.Equal(t, e.Record, got)
		require.True(t, b.MayContain(k))
		got, ok, err = b.Get(k, nil)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, e.Revision, got.Revision)
	}
	slices.Sort(keys)
	assert.Equal(t, meta.MinKey, keys[0])
	assert.Equal(t, meta.MaxKey, keys[len(keys)-1])

	// Misses: absent keys, and a present key asked with the wrong point.
	misses := 0
	for range 2000 {
		k := rng.Uint64() & keyMask(2, 16)
		if _, ok := want[k]; ok {
			continue
		}
		misses++
		_, ok, err := b.Get(k, nil)
		require.NoError(t, err)
		require.False(t, ok, "key %d", k)
	}
	require.Greater(t, misses, 1000)
	e := want[keys[0]]
	wrong := messages.Point{e.Point[0] ^ 1, e.Point[1]}
	_, ok, err := b.Get(keys[0], wrong)
	require.NoError(t, err)
	assert.False(t, ok)
	_, ok, err = b.Get(meta.MaxKey+1, nil)
	require.NoError(t, err)
	assert.False(t, ok)

	// All: every record, in (key, revision) order.
	sorted := slices.Clone(es)
	slices.SortFunc(sorted, cmpEntry)
	var all []Entry
	require.NoError(t, b.All(func(e Entry) bool { all = append(all, e); return true }))
	require.Equal(t, len(sorted), len(all))
	for i := range all {
		require.Equal(t, sorted[i].Key, all[i].Key)
		require.Equal(t, sorted[i].Record, all[i].Record)
	}
	n := 0
	require.NoError(t, b.All(func(Entry) bool { n++; return n < 10 }))
	assert.Equal(t, 10, n, "All stops when fn returns false")
}

// TestBlockScan compares Scan over random boxes with a brute-force filter.
func TestBlockScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	var rev messages.Revision
	// A dense space: boxes hold many records, exact ranges stay cheap.
	spec := messages.SpaceSpec{Name: "small", Dims: 2, Bits: 8}
	es := genEntriesIn(t, rng, 3000, &rev, spec)
	buf, _, err := EncodeBlock(7, 1, es)
	require.NoError(t, err)
	b, err := DecodeBlock("mem", buf)
	require.NoError(t, err)
	want := newest(es)

	for range 100 {
		box := randomBox(rng, 2, 8)
		for _, max := range []int{1, 16, 1 << 20} {
			rs := Ranges(box, 2, 8, max)
			var got []messages.Record
			gotRev := map[messages.Revision]bool{}
			require.NoError(t, b.Scan(rs, func(r messages.Record) bool { got = append(got, r); gotRev[r.Revision] = true; return true }))
			// Every newest record in the box is there, in key order, once.
			inBox := 0
			for _, e := range want {
				if e.Point[0] >= box.Min[0] && e.Point[0] <= box.Max[0] && e.Point[1] >= box.Min[1] && e.Point[1] <= box.Max[1] {
					inBox++
					require.True(t, gotRev[e.Revision], "box %v max %d: %v missing", box, max, e.Point)
				}
			}
			for i := 1; i < len(got); i++ {
				require.Less(t, Key(got[i-1].Point, 2, 8), Key(got[i].Point, 2, 8))
			}
			for _, r := range got {
				k := Key(r.Point, 2, 8)
				require.Equal(t, want[k].Revision, r.Revision, "newest revision only")
				require.True(t, inRanges(rs, k))
			}
			if max == 1<<20 {
				assert.Equal(t, inBox, len(got), "exact ranges give exactly the box")
			}
		}
	}

	// Early stop, overlapping and unsorted ranges.
	n := 0
	require.NoError(t, b.Scan([]KeyRange{{0, ^uint64(0)}}, func(messages.Record) bool { n++; return n < 5 }))
	assert.Equal(t, 5, n)
	var all, twice []messages.Record
	require.NoError(t, b.Scan([]KeyRange{{0, ^uint64(0)}}, func(r messages.Record) bool { all = append(all, r); return true }))
	assert.Equal(t, len(want), len(all))
	require.NoError(t, b.Scan([]KeyRange{{0, 1 << 31}, {1 << 30, ^uint64(0)}, {0, 5}}, func(r messages.Record) bool { twice = append(twice, r); return true }))
	assert.Equal(t, all, twice, "overlapping ranges report each key once")
	require.NoError(t, b.Scan(nil, func(messages.Record) bool { t.Fatal("no ranges, no records"); return false }))
}

// TestBlockBloomFalsePositives measures the filter's false-positive rate.
func TestBlockBloomFalsePositives(t *testing.T) {
	const n = 20000
	es := make([]Entry, n)
	for i := range es {
		k := uint64(i) * 2 // even keys present
		es[i] = Entry{Key: k, Record: messages.Record{Point: messages.Point{uint32(k)}, Revision: messages.Revision(i + 1), Value: []byte("x")}}
	}
	buf, _, err := EncodeBlock(1, 1, es)
	require.NoError(t, err)
	b, err := DecodeBlock("mem", buf)
	require.NoError(t, err)
	fp := 0
	for i := range n {
		require.True(t, b.MayContain(uint64(i)*2))
		if b.MayContain(uint64(i)*2 + 1) { // odd keys absent, inside the key range
			fp++
		}
	}
	rate := float64(fp) / n
	t.Logf("bloom false-positive rate %.4f at %d bits/key, %d hashes", rate, bloomBitsPerKey, bloomHashes)
	assert.Less(t, rate, 0.02)
	assert.Greater(t, fp, 0, "a 10-bit/key filter has some false positives")
}

func TestBlockEncodeRefuses(t *testing.T) {
	p := messages.Point{1, 2}
	e := func(k uint64, r messages.Revision, p messages.Point) Entry {
		return Entry{Key: k, Record: messages.Record{Point: p, Revision: r, Value: []byte("v")}}
	}
	cases := map[string][]Entry{
		"empty":           nil,
		"duplicate":       {e(1, 5, p), e(1, 5, p)},
		"key two points":  {e(1, 5, p), e(1, 6, messages.Point{2, 1})},
		"mixed dims":      {e(1, 5, p), e(2, 6, messages.Point{1})},
		"no coordinates":  {e(1, 5, messages.Point{})},
		"tombstone value": {{Key: 1, Record: messages.Record{Point: p, Revision: 1, Tombstone: true, Value: []byte("x")}}},
	}
	for name, es := range cases {
		_, _, err := EncodeBlock(1, 1, es)
		assert.Error(t, err, name)
	}
	_, err := Entries(testSpec, []messages.Record{{Point: messages.Point{1, 1 << 16}}})
	assert.ErrorIs(t, err, messages.ErrInvalidPoint)

	// Unsorted input is sorted, and the caller's slice is left alone.
	in := []Entry{e(9, 1, messages.Point{9, 0}), e(3, 2, p), e(3, 1, p)}
	orig := slices.Clone(in)
	buf, meta, err := EncodeBlock(1, 1, in)
	require.NoError(t, err)
	assert.Equal(t, orig, in)
	assert.Equal(t, uint64(3), meta.MinKey)
	b, err := DecodeBlock("mem", buf)
	require.NoError(t, err)
	r, ok, err := b.Get(3, p)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, messages.Revision(2), r.Revision)
}

// TestBlockCorruption flips bytes across a block file and truncates it:
// every damage is a *CorruptionError naming the file, never a panic.
func TestBlockCorruption(t *testing.T) {
	d := newDoer(t)
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(3, 3))
	var rev messages.Revision
	meta, err := WriteBlock(d, dir, 7, 1, genEntries(t, rng, 200, &rev))
	require.NoError(t, err)
	path := BlockPath(dir, 7, 1)
	good, err := os.ReadFile(path)
	require.NoError(t, err)

	for _, off := range []int{0, 9, 12, 40, blockHeaderSize + 3, len(good) / 2, len(good) - 40, len(good) - 1} {
		bad := slices.Clone(good)
		bad[off] ^= 0x10
		require.NoError(t, os.WriteFile(path, bad, 0o644))
		_, err := OpenBlock(d, path)
		var ce *messages.CorruptionError
		require.ErrorAs(t, err, &ce, "flip at %d", off)
		assert.ErrorIs(t, err, messages.ErrCorrupt)
		assert.Equal(t, path, ce.Path)
	}
	for _, n := range []int{0, 10, blockHeaderSize + checksumSize - 1, len(good) - 1} {
		require.NoError(t, os.WriteFile(path, good[:n], 0o644))
		_, err := OpenBlock(d, path)
		assert.ErrorIs(t, err, messages.ErrCorrupt, "truncated to %d", n)
	}

	// A valid block where the manifest expects another is a corruption.
	require.NoError(t, os.WriteFile(path, good, 0o644))
	other := meta
	other.Checksum[0] ^= 1
	_, err = OpenBlockFor(d, dir, other)
	assert.ErrorIs(t, err, messages.ErrCorrupt)
	_, err = OpenBlock(d, filepath.Join(dir, "nope.blk"))
	assert.ErrorIs(t, err, unix.ENOENT, "a missing block is not corruption")
	assert.NotErrorIs(t, err, messages.ErrCorrupt)
}

// TestDecodeBlockStructure corrupts the structure under a valid checksum,
// which only a bug or a forger produces, and expects named corruption.
func TestDecodeBlockStructure(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	var rev messages.Revision
	good, _, err := EncodeBlock(7, 1, genEntries(t, rng, 50, &rev))
	require.NoError(t, err)
	for off := 0; off < len(good)-checksumSize; off++ {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			bad := slices.Clone(good)
			bad[off] ^= x
			_, err := DecodeBlock("mem", resum(bad))
			if err == nil {
				// Some bytes are free: values, reserved header words.
				continue
			}
			var ce *messages.CorruptionError
			require.ErrorAs(t, err, &ce)
			require.Equal(t, "mem", ce.Path)
			require.GreaterOrEqual(t, ce.Offset, int64(0))
			require.Less(t, ce.Offset, int64(len(good)))
		}
	}
}

func BenchmarkBlockBuild(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 5))
	var rev messages.Revision
	es := genEntries(b, rng, 16384, &rev)
	sorted := slices.Clone(es)
	slices.SortFunc(sorted, cmpEntry)
	for name, in := range map[string][]Entry{"unsorted": es, "sorted": sorted} {
		b.Run(name, func(b *testing.B) {
			var size int64
			for b.Loop() {
				_, meta, err := EncodeBlock(1, 1, in)
				if err != nil {
					b.Fatal(err)
				}
				size = meta.Size
			}
			b.SetBytes(size)
			b.ReportMetric(float64(len(in)), "records/block")
		})
	}
}

func BenchmarkBlockWrite(b *testing.B) {
	d := newDoer(b)
	dir := b.TempDir()
	rng := rand.New(rand.NewPCG(5, 5))
	var rev messages.Revision
	es := genEntries(b, rng, 16384, &rev)
	var id uint64
	for b.Loop() {
		id++
		meta, err := WriteBlock(d, dir, 1, id, es)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(meta.Size)
	}
}

func BenchmarkBlockOpen(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 5))
	var rev messages.Revision
	buf, meta, err := EncodeBlock(1, 1, genEntries(b, rng, 16384, &rev))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(meta.Size)
	for b.Loop() {
		if _, err := DecodeBlock("mem", buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBlockGet(b *testing.B) {
	rng := rand.New(rand.NewPCG(6, 6))
	var rev messages.Revision
	es := genEntries(b, rng, 16384, &rev)
	buf, _, err := EncodeBlock(1, 1, es)
	if err != nil {
		b.Fatal(err)
	}
	blk, err := DecodeBlock("mem", buf)
	if err != nil {
		b.Fatal(err)
	}
	want := newest(es)
	hits := make([]uint64, 0, len(want))
	for k := range want {
		hits = append(hits, k)
	}
	var misses []uint64
	for len(misses) < 4096 {
		k := rng.Uint64() & keyMask(2, 16)
		if _, ok := want[k]; !ok {
			misses = append(misses, k)
		}
	}
	b.Run("hit", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, ok, _ := blk.Get(hits[i%len(hits)], nil); !ok {
				b.Fatal("miss")
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, ok, _ := blk.Get(misses[i%len(misses)], nil); ok {
				b.Fatal("hit")
			}
		}
	})
	b.Run("miss_bloom_first", func(b *testing.B) {
		// How a reader asks: the filter first, the index only if it admits.
		for i := 0; b.Loop(); i++ {
			k := misses[i%len(misses)]
			if blk.MayContain(k) {
				if _, ok, _ := blk.Get(k, nil); ok {
					b.Fatal("hit")
				}
			}
		}
	})
}
