package hot

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/wal"
)

func spareNames(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		if filepath.Ext(e.Name()) == ".spare" {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestRecycledSegmentReplaysNewRecordsOnly fills a generation, retires it
// to a spare, and has the next Create reuse that file: the recycled
// segment replays exactly its new records (in Strict mode, without a torn
// tail report and without rewriting the stale bytes), never the old ones,
// even where they share revisions.
func TestRecycledSegmentReplaysNewRecordsOnly(t *testing.T) {
	d := stdDoer(t)
	opts := Options{Dir: filepath.Join(t.TempDir(), "hot"), SegmentSize: 1 << 16, Mode: wal.Strict}
	s1, err := Create(d, opts, Gen{Space: 5, Gen: 1})
	require.NoError(t, err)
	assert.False(t, s1.Recycled())
	old := recs(5, 1, 400) // most of the file
	for i := 0; i < len(old); i += 50 {
		require.NoError(t, s1.Append(old[i:i+50]))
	}
	s2, err := s1.Rotate()
	require.NoError(t, err)
	require.NoError(t, s1.Retire())
	assert.Equal(t, []string{Gen{Space: 5, Gen: 1}.SpareName()}, spareNames(t, opts.Dir))
	gens, err := List(d, opts.Dir)
	require.NoError(t, err)
	assert.Equal(t, []Gen{{5, 2}}, gens, "a spare is not a generation")

	require.NoError(t, s2.Append(recs(5, 601, 3)))
	// The next generation reuses the spare.
	s3, err := s2.Rotate()
	require.NoError(t, err)
	assert.True(t, s3.Recycled())
	assert.Empty(t, spareNames(t, opts.Dir))
	assert.Zero(t, s3.Records())
	assert.False(t, s3.Has(1), "old records are not held")
	nw := recs(5, 1, 7) // the same revisions the old life held
	for i := range nw {
		nw[i].Value = []byte("new life")
	}
	require.NoError(t, s3.Append(nw[:4]))
	require.NoError(t, s3.Append(nw[4:]))
	size := s3.Size()
	require.NoError(t, s3.Close())

	path := filepath.Join(opts.Dir, Gen{Space: 5, Gen: 3}.FileName())
	before, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Len(t, before, int(opts.SegmentSize), "the spare kept its size")
	assert.NotZero(t, before[size+200:size+4096], "stale bytes follow the end")

	for _, mode := range []wal.RecoveryMode{wal.Strict, wal.TolerateTornTail} {
		o := opts
		o.Mode = mode
		s, got := replay(t, d, o, Gen{Space: 5, Gen: 3}, false)
		assert.Equal(t, nw, got, "exactly the new records, %v", mode)
		assert.Equal(t, size, s.Size())
		assert.Equal(t, 7, s.Records())
		assert.False(t, s.Has(8))
		require.NoError(t, s.Close())
		after, err := os.ReadFile(path)
		require.NoError(t, err)
		assert.Equal(t, before, after, "opening does not rewrite a recycled file")
	}
	// And it keeps taking appends after a reopen.
	s, _ := replay(t, d, opts, Gen{Space: 5, Gen: 3}, false)
	require.NoError(t, s.Append(recs(5, 8, 2)))
	require.NoError(t, s.Close())
	_, got := replay(t, d, opts, Gen{Space: 5, Gen: 3}, true)
	assert.Len(t, got, 9)
}

func TestSpareBound(t *testing.T) {
	d := stdDoer(t)
	for _, c := range []struct{ max, want int }{{0, DefaultMaxSpares}, {1, 1}, {3, 3}, {-1, 0}} {
		opts := Options{Dir: filepath.Join(t.TempDir(), "hot"), SegmentSize: 8192, MaxSpares: c.max}
		s, err := Create(d, opts, Gen{Space: 1, Gen: 1})
		require.NoError(t, err)
		var old []*Segment
		for i := 0; i < 4; i++ {
			next, err := s.Rotate()
			require.NoError(t, err)
			old = append(old, s)
			s = next
		}
		for _, o := range old {
			require.NoError(t, o.Retire())
		}
		assert.Len(t, spareNames(t, opts.Dir), c.want, "MaxSpares %d", c.max)
		gens, err := List(d, opts.Dir)
		require.NoError(t, err)
		assert.Equal(t, []Gen{{1, 5}}, gens)
		// Each spare is reused once, then Create falls back to a new file.
		for i := 0; i < c.want+1; i++ {
			next, err := s.Rotate()
			require.NoError(t, err)
			assert.Equal(t, i < c.want, next.Recycled(), "rotation %d", i)
			require.NoError(t, s.Close())
			s = next
		}
		require.NoError(t, s.Close())
	}
}

// TestSpareOfAnotherSizeIsNotReused: a spare left by another SegmentSize
// (a Start with another Preallocate) is not reused; Create removes it.
func TestSpareOfAnotherSizeIsNotReused(t *testing.T) {
	d := stdDoer(t)
	dir := filepath.Join(t.TempDir(), "hot")
	small := Options{Dir: dir, SegmentSize: 8192}
	s, err := Create(d, small, Gen{Space: 1, Gen: 1})
	require.NoError(t, err)
	s2, err := s.Rotate()
	require.NoError(t, err)
	require.NoError(t, s.Retire())
	require.NoError(t, s2.Close())
	big := Options{Dir: dir, SegmentSize: 16384}
	s3, err := Create(d, big, Gen{Space: 1, Gen: 3})
	require.NoError(t, err)
	assert.False(t, s3.Recycled())
	require.NoError(t, s3.Append(recs(1, 1, 1)))
	require.NoError(t, s3.Close())
	assert.Empty(t, spareNames(t, dir), "the spare of another size is removed, not kept for good")
	// Create still refuses a generation that holds a batch when spares
	// exist.
	s10, err := Create(d, small, Gen{Space: 1, Gen: 10})
	require.NoError(t, err)
	s11, err := s10.Rotate()
	require.NoError(t, err)
	require.NoError(t, s10.Retire())
	require.NoError(t, s11.Close())
	require.Len(t, spareNames(t, dir), 1)
	_, err = Create(d, small, Gen{Space: 1, Gen: 3})
	assert.Error(t, err)
	assert.Len(t, spareNames(t, dir), 1, "the spare is untouched")
}

// TestSpareNames: a spare's name parses back to the generation it held and
// never as a generation.
func TestSpareNames(t *testing.T) {
	g := Gen{Space: 9, Gen: 12}
	back, ok := parseSpareName(g.SpareName())
	assert.True(t, ok)
	assert.Equal(t, g, back)
	_, ok = ParseFileName(g.SpareName())
	assert.False(t, ok)
	_, ok = parseSpareName(g.FileName())
	assert.False(t, ok)
}
