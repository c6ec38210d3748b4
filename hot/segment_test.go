package hot

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/wal"
)

func recs(space messages.SpaceID, from, n int) []messages.Record {
	out := make([]messages.Record, n)
	for i := range out {
		rev := messages.Revision(from + i)
		out[i] = messages.Record{Space: space, Point: messages.Point{uint32(rev)}, Revision: rev,
			Value: append([]byte{byte(rev)}, make([]byte, 60)...)}
	}
	return out
}

func replay(t *testing.T, d ring.Doer, opts Options, g Gen, immutable bool) (*Segment, []messages.Record) {
	t.Helper()
	var got []messages.Record
	s, err := Open(d, opts, g, immutable, func(_ int64, r messages.Record) error {
		got = append(got, r)
		return nil
	})
	require.NoError(t, err)
	return s, got
}

func TestFileNames(t *testing.T) {
	g := Gen{Space: 42, Gen: 7}
	assert.Equal(t, "0000000042-00000000000000000007.seg", g.FileName())
	back, ok := ParseFileName(g.FileName())
	assert.True(t, ok)
	assert.Equal(t, g, back)
	for _, bad := range []string{"x.seg", "0000000042-00000000000000000007.log", "0000000000-00000000000000000007.seg",
		"0000000042-00000000000000000000.seg", "0000000042_00000000000000000007.seg", "99999999999-0000000000000000007.seg"} {
		_, ok := ParseFileName(bad)
		assert.False(t, ok, bad)
	}
	assert.NotEqual(t, Gen{1, 2}.salt(), Gen{2, 1}.salt())
}

func TestSegmentAppendReplay(t *testing.T) {
	d := stdDoer(t)
	opts := Options{Dir: filepath.Join(t.TempDir(), "hot"), SegmentSize: 1 << 16}
	g := Gen{Space: 3, Gen: 1}
	s, err := Create(d, opts, g)
	require.NoError(t, err)
	var want []messages.Record
	for b := 0; b < 10; b++ {
		batch := recs(3, 1+len(want), 1+b)
		require.NoError(t, s.Append(batch))
		want = append(want, batch...)
	}
	_, err = Create(d, opts, g)
	assert.ErrorIs(t, err, unix.EEXIST, "Create refuses a generation that holds batches")
	assert.Equal(t, len(want), s.Records())
	lo, hi := s.RevRange()
	assert.Equal(t, messages.Revision(1), lo)
	assert.Equal(t, messages.Revision(len(want)), hi)
	assert.True(t, s.Has(5))
	assert.False(t, s.Has(messages.Revision(len(want)+1)))
	assert.False(t, s.Has(0))
	size := s.Size()
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close twice")

	st, err := os.Stat(filepath.Join(opts.Dir, g.FileName()))
	require.NoError(t, err)
	assert.Equal(t, opts.SegmentSize, st.Size(), "preallocated")

	s, got := replay(t, d, opts, g, false)
	assert.Equal(t, want, got)
	assert.Equal(t, size, s.Size())
	assert.True(t, s.Has(5))
	// Appends continue after the replayed ones; held revisions are skipped.
	require.NoError(t, s.Append(append(recs(3, 1, 5), recs(3, 100, 2)...)))
	assert.Equal(t, len(want)+2, s.Records())
	p, err := s.Prepare(recs(3, 1, 3))
	assert.NoError(t, err)
	assert.Nil(t, p, "nothing new to write")
	var read []messages.Record
	require.NoError(t, s.ReadRecords(func(_ int64, r messages.Record) error { read = append(read, r); return nil }))
	assert.Equal(t, append(want, recs(3, 100, 2)...), read)
	// A record of another space is refused.
	_, err = s.Prepare(recs(4, 200, 1))
	assert.Error(t, err)
	require.NoError(t, s.Close())

	gens, err := List(d, opts.Dir)
	require.NoError(t, err)
	assert.Equal(t, []Gen{g}, gens)
	gens, err = List(d, filepath.Join(opts.Dir, "missing"))
	require.NoError(t, err)
	assert.Empty(t, gens)
}

func TestSegmentRotateRetire(t *testing.T) {
	d := stdDoer(t)
	opts := Options{Dir: filepath.Join(t.TempDir(), "hot"), SegmentSize: 8192}
	s1, err := Create(d, opts, Gen{Space: 1, Gen: 1})
	require.NoError(t, err)
	assert.Error(t, s1.Retire(), "the active generation cannot be retired")
	require.NoError(t, s1.Append(recs(1, 1, 3)))
	// Fill it: a batch that does not fit is ErrFull.
	var err2 error
	for i := 0; err2 == nil; i++ {
		err2 = s1.Append(recs(1, 10+10*i, 10))
	}
	assert.ErrorIs(t, err2, ErrFull)
	s2, err := s1.Rotate()
	require.NoError(t, err)
	assert.Equal(t, Gen{Space: 1, Gen: 2}, s2.Gen())
	assert.True(t, s1.Immutable())
	assert.ErrorIs(t, s1.Append(recs(1, 1000, 1)), ErrImmutable)
	_, err = s1.Rotate()
	assert.ErrorIs(t, err, ErrImmutable)
	require.NoError(t, s2.Append(recs(1, 2000, 2)))

	gens, err := List(d, opts.Dir)
	require.NoError(t, err)
	assert.Equal(t, []Gen{{1, 1}, {1, 2}}, gens)

	n := s1.Records()
	var read int
	require.NoError(t, s1.ReadRecords(func(int64, messages.Record) error { read++; return nil }))
	assert.Equal(t, n, read, "the sealer reads the rotated generation")
	require.NoError(t, s1.Retire())
	assert.ErrorIs(t, s1.Retire(), ErrClosed)
	gens, err = List(d, opts.Dir)
	require.NoError(t, err)
	assert.Equal(t, []Gen{{1, 2}}, gens)
	require.NoError(t, s2.Close())
}

func TestSegmentTornTail(t *testing.T) {
	d := stdDoer(t)
	opts := Options{Dir: filepath.Join(t.TempDir(), "hot"), SegmentSize: 1 << 16}
	g := Gen{Space: 2, Gen: 5}
	s, err := Create(d, opts, g)
	require.NoError(t, err)
	require.NoError(t, s.Append(recs(2, 1, 4)))
	end := s.Size()
	require.NoError(t, s.Append(recs(2, 5, 30)))
	require.NoError(t, s.Close())
	path := filepath.Join(opts.Dir, g.FileName())
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	data[end+700] ^= 4
	require.NoError(t, os.WriteFile(path, data, 0o644))

	strict := opts
	strict.Mode = wal.Strict
	_, err = Open(d, strict, g, false, nil)
	var ce *messages.CorruptionError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, filepath.Join("hot", g.FileName()), ce.Path)

	s, got := replay(t, d, opts, g, false)
	assert.Equal(t, recs(2, 1, 4), got)
	assert.False(t, s.Has(5), "the torn batch is gone")
	tt, ok := s.Torn()
	require.True(t, ok, "Open reports the torn batch it dropped")
	assert.Equal(t, filepath.Join("hot", g.FileName()), tt.Path)
	assert.Equal(t, end, tt.Off)
	assert.Positive(t, tt.Bytes)
	require.NoError(t, s.Append(recs(2, 5, 1)))
	require.NoError(t, s.Close())
	s, got = replay(t, d, strict, g, true)
	assert.Equal(t, recs(2, 1, 5), got)
	_, ok = s.Torn()
	assert.False(t, ok, "nothing torn on a clean open")
	assert.ErrorIs(t, s.Append(recs(2, 6, 1)), ErrImmutable, "opened as an older generation")
	require.NoError(t, s.Close())
}

func TestSegmentMidCorruption(t *testing.T) {
	d := stdDoer(t)
	opts := Options{Dir: filepath.Join(t.TempDir(), "hot"), SegmentSize: 1 << 16}
	g := Gen{Space: 2, Gen: 1}
	s, err := Create(d, opts, g)
	require.NoError(t, err)
	require.NoError(t, s.Append(recs(2, 1, 4)))
	require.NoError(t, s.Append(recs(2, 5, 4)))
	require.NoError(t, s.Close())
	path := filepath.Join(opts.Dir, g.FileName())
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	data[40] ^= 1
	require.NoError(t, os.WriteFile(path, data, 0o644))
	_, err = Open(d, opts, g, false, nil)
	var ce *messages.CorruptionError
	require.ErrorAs(t, err, &ce)
	assert.Zero(t, ce.Offset)
	// A file copied to another generation's name does not read as that
	// one: the salt differs, so its frames are stale ones of an earlier
	// life (as in a recycled file) and the generation is empty.
	data[40] ^= 1
	g2 := Gen{Space: 2, Gen: 2}
	require.NoError(t, os.WriteFile(filepath.Join(opts.Dir, g2.FileName()), data, 0o644))
	strict := opts
	strict.Mode = wal.Strict
	s2, got := replay(t, d, strict, g2, true)
	assert.Empty(t, got, "no record of another life surfaces")
	assert.Zero(t, s2.Size())
	require.NoError(t, s2.Close())
}

func TestSegmentPrepareCommitted(t *testing.T) {
	d := stdDoer(t)
	opts := Options{Dir: filepath.Join(t.TempDir(), "hot"), SegmentSize: 8192}
	s, err := Create(d, opts, Gen{Space: 1, Gen: 1})
	require.NoError(t, err)
	p, err := s.Prepare(recs(1, 1, 2))
	require.NoError(t, err)
	_, err = s.Prepare(recs(1, 3, 1))
	assert.ErrorIs(t, err, ErrBusy)
	_, err = s.Rotate()
	assert.ErrorIs(t, err, ErrBusy)
	assert.False(t, s.Has(1), "not durable yet")
	ops := p.Ops()
	require.Len(t, ops, 1, "one write, durable on completion")
	assert.True(t, ops[0].DSync)
	cs, err := d.Do(ops...)
	require.NoError(t, err)
	require.NoError(t, cs[0].Err)
	require.NoError(t, s.Committed(p))
	assert.True(t, s.Has(1))
	p, err = s.Prepare(recs(1, 3, 1))
	require.NoError(t, err)
	s.Failed(p, os.ErrClosed)
	assert.ErrorIs(t, s.Append(recs(1, 4, 1)), os.ErrClosed, "failed stays failed")
	require.NoError(t, s.Close())
}

// TestSegmentHasMixedOrder checks the held-revision set against a model
// when direct batches (ascending, above everything held) interleave with
// promotions of older revisions and with batches that repeat some, before
// and after the file is replayed.
func TestSegmentHasMixedOrder(t *testing.T) {
	d := stdDoer(t)
	opts := Options{Dir: filepath.Join(t.TempDir(), "hot"), SegmentSize: 1 << 20}
	g := Gen{Space: 3, Gen: 1}
	s, err := Create(d, opts, g)
	require.NoError(t, err)
	model := map[messages.Revision]bool{}
	at := func(revs ...int) []messages.Record {
		out := make([]messages.Record, len(revs))
		for i, r := range revs {
			out[i] = recs(3, r, 1)[0]
		}
		return out
	}
	batches := [][]int{
		{10, 11, 12},      // direct
		{20, 22, 24},      // direct, with gaps (other spaces' revisions)
		{5, 7},            // promotion below everything held
		{21, 23, 11, 5},   // promotion into the gaps, with revisions held already
		{30},              // direct
		{26, 25, 30, 31},  // promotion out of order, one held, one above maxRev
		{40, 41, 41, 42},  // a repeat inside one batch
		{1, 2, 3, 50, 51}, // promotion spanning below and above
	}
	check := func(s *Segment, when string) {
		t.Helper()
		for r := messages.Revision(0); r <= 60; r++ {
			assert.Equal(t, model[r], s.Has(r), "%s: Has(%d)", when, r)
		}
		assert.Equal(t, len(model), s.Records(), when)
	}
	for _, b := range batches {
		require.NoError(t, s.Append(at(b...)))
		for _, r := range b {
			model[messages.Revision(r)] = true
		}
		check(s, "appended")
	}
	lo, hi := s.RevRange()
	assert.Equal(t, messages.Revision(1), lo)
	assert.Equal(t, messages.Revision(51), hi)
	p, err := s.Prepare(at(5, 21, 41, 51))
	require.NoError(t, err)
	assert.Nil(t, p, "every revision is held: nothing to write")
	require.NoError(t, s.Close())

	s, _ = replay(t, d, opts, g, false)
	check(s, "replayed")
	require.NoError(t, s.Close())
}

// TestOpenReadsOnlyTheData: Open reads a segment up to where its data
// ends, not through its whole preallocation. Before, a Start read each
// space's hot segment whole: 100 spaces of the default 64 MiB took 9-20 s
// and allocated 6.4 GiB (ring.ReadLog now reads 6 MiB in 50-70 ms).
func TestOpenReadsOnlyTheData(t *testing.T) {
	d := stdDoer(t)
	dir := filepath.Join(t.TempDir(), "hot")
	var fs unix.Statfs_t
	if unix.Statfs(filepath.Dir(dir), &fs) == nil && fs.Type == unix.TMPFS_MAGIC {
		t.Skip("tmpfs: its fallocated pages may read as data")
	}
	opts := Options{Dir: dir, SegmentSize: 64 << 20}
	g := Gen{Space: 1, Gen: 1}
	s, err := Create(d, opts, g)
	require.NoError(t, err)
	require.NoError(t, s.Append(recs(1, 1, 10)))
	require.NoError(t, s.Close())

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s, got := replay(t, d, opts, g, false)
	runtime.ReadMemStats(&after)
	assert.Equal(t, recs(1, 1, 10), got)
	require.NoError(t, s.Close())
	allocated := after.TotalAlloc - before.TotalAlloc
	assert.Less(t, allocated, uint64(4<<20), "Open of a 64 MiB segment holding 10 records allocated %d bytes", allocated)
}
