package wal

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
)

// rollDir writes batches of 4 records into a WAL of 4 KiB segments until it
// has rolled twice, closes it and returns its options, the records and the
// offset where each batch of segment 1 starts.
func rollDir(t *testing.T) (Options, []messages.Record, []int64) {
	t.Helper()
	d := stdDoer(t)
	opts := Options{Dir: filepath.Join(t.TempDir(), "wal"), SegmentSize: 4096}
	w, _, _ := openWAL(t, d, opts)
	var all []messages.Record
	var starts []int64
	for rev := 1; len(w.Segments()) < 3; rev += 4 {
		b := recs(rev, 4, 1)
		p, err := w.Prepare(b)
		require.NoError(t, err)
		if p.Seq == 1 {
			starts = append(starts, p.Off)
		}
		_, err = w.d.Do(p.Ops()...)
		require.NoError(t, err)
		require.NoError(t, w.Committed(p))
		all = append(all, b...)
	}
	require.NoError(t, w.Close())
	require.Greater(t, len(starts), 1)
	return opts, all, starts
}

// TestWALRollWritesCut: every segment after the first starts with a cut,
// a batch of its own, naming the previous segment and where its batches
// ended; Inspect reports that limit.
func TestWALRollWritesCut(t *testing.T) {
	opts, all, _ := rollDir(t)
	d := stdDoer(t)
	w, got, _ := openWAL(t, d, opts)
	assert.Equal(t, all, got)
	require.NoError(t, w.Close())
	reps, err := Inspect(d, opts.Dir, "", nil)
	require.NoError(t, err)
	require.Len(t, reps, 3)
	for i, rep := range reps {
		require.NoError(t, rep.Err)
		c, ok, err := w.readCut(rep.Seq)
		require.NoError(t, err)
		if i == 0 {
			assert.False(t, ok, "the first segment has no cut")
			continue
		}
		require.True(t, ok, "segment %d starts with a cut", rep.Seq)
		assert.Equal(t, reps[i-1].Seq, c.Seq)
		assert.Equal(t, reps[i-1].Result.End, c.End, "the cut names where segment %d's batches end", c.Seq)
		assert.Equal(t, c.End, reps[i-1].Limit)
	}
	assert.Equal(t, int64(-1), reps[2].Limit, "the last segment is read whole")
}

// TestWALEarlierSegmentDamagedAtItsEnd: a segment followed by another is
// damaged at its end so that its frames alone still read as a complete (or
// torn) log: truncated at a batch boundary, its last batch zeroed,
// truncated inside its last batch, a bit flipped in it. The cut that starts
// the next segment says where it ended, so Open reports corruption in the
// damaged segment, in both modes. Without the cut, the first two read as a
// complete segment and lost the last batch silently (the engine's
// TestWALEarlierSegmentTruncated).
func TestWALEarlierSegmentDamagedAtItsEnd(t *testing.T) {
	damages := []struct {
		name string
		do   func(t *testing.T, p string, last, end int64)
		at   func(last, end int64) (lo, hi int64) // the offset the error names is in [lo, hi]
	}{
		{"truncated at a batch boundary", func(t *testing.T, p string, last, _ int64) {
			require.NoError(t, os.Truncate(p, last))
		}, func(last, _ int64) (int64, int64) { return last, last }},
		{"last batch zeroed", func(t *testing.T, p string, last, end int64) {
			writeAt(t, p, make([]byte, end-last), last)
		}, func(last, _ int64) (int64, int64) { return last, last }},
		{"truncated inside the last batch", func(t *testing.T, p string, last, end int64) {
			require.NoError(t, os.Truncate(p, last+(end-last)/2))
		}, func(last, end int64) (int64, int64) { return last + (end-last)/2, last + (end-last)/2 }},
		{"bit flip in the last batch", func(t *testing.T, p string, _, end int64) {
			flipAt(t, p, end-20)
		}, func(last, end int64) (int64, int64) { return last, end - 20 }}, // the bad frame
	}
	for _, dm := range damages {
		for _, mode := range []RecoveryMode{TolerateTornTail, Strict} {
			t.Run(fmt.Sprintf("%s/%v", dm.name, mode), func(t *testing.T) {
				opts, _, starts := rollDir(t)
				d := stdDoer(t)
				w := &WAL{d: d, opts: opts}
				c, ok, err := w.readCut(2)
				require.NoError(t, err)
				require.True(t, ok)
				last, end := starts[len(starts)-1], c.End
				dm.do(t, filepath.Join(opts.Dir, SegmentName(1)), last, end)
				opts.Mode = mode
				_, err = Open(d, opts, nil)
				var ce *messages.CorruptionError
				require.ErrorAs(t, err, &ce)
				assert.Equal(t, filepath.Join("wal", SegmentName(1)), ce.Path)
				lo, hi := dm.at(last, end)
				assert.True(t, ce.Offset >= lo && ce.Offset <= hi, "%v: want an offset in [%d, %d]", ce, lo, hi)
				assert.Contains(t, ce.Reason, "segment 2's cut")
				// Inspect, which changes nothing, agrees.
				reps, err := Inspect(d, opts.Dir, "", nil)
				require.NoError(t, err)
				var ie *messages.CorruptionError
				require.ErrorAs(t, reps[0].Err, &ie)
				assert.Equal(t, ce, ie)
			})
		}
	}
}

// TestWALSegmentsWithoutCutsStillOpen: a directory written before rolls
// wrote cuts (its later segments start with a batch of records) opens as
// before, without the check.
func TestWALSegmentsWithoutCutsStillOpen(t *testing.T) {
	opts, all, _ := rollDir(t)
	d := stdDoer(t)
	// Take the cut out of segments 2 and 3: what the old format wrote.
	for seq := uint64(2); seq <= 3; seq++ {
		p := filepath.Join(opts.Dir, SegmentName(seq))
		data, err := os.ReadFile(p)
		require.NoError(t, err)
		rest := append(data[cutFrameSize:], make([]byte, cutFrameSize)...)
		require.NoError(t, os.WriteFile(p, rest, 0o644))
	}
	w, got, _ := openWAL(t, d, opts)
	assert.Equal(t, all, got)
	require.NoError(t, w.Close())
}

// TestWALBatchRoomAfterCut: a batch as large as a segment holds after its
// cut fits a fresh segment; one byte-frame more is refused before anything
// is written.
func TestWALBatchRoomAfterCut(t *testing.T) {
	d := stdDoer(t)
	opts := Options{Dir: filepath.Join(t.TempDir(), "wal"), SegmentSize: 4096}
	w, _, _ := openWAL(t, d, opts)
	require.NoError(t, w.Append(recs(1, 1, 1)))
	room := int(opts.SegmentSize - cutFrameSize)
	r := recs(2, 1, 1)[0]
	r.Value = nil
	r.Tombstone = false
	r.Value = make([]byte, room-FrameSize(RecordSize(r)))
	require.Equal(t, room, FrameSize(RecordSize(r)))
	require.NoError(t, w.Append([]messages.Record{r}), "fills a fresh segment after its cut")
	seq, off := w.End()
	assert.Equal(t, uint64(2), seq)
	assert.Equal(t, opts.SegmentSize, off)
	r.Revision = 3
	r.Value = append(r.Value, make([]byte, FrameAlign)...)
	_, err := w.Prepare([]messages.Record{r})
	assert.ErrorContains(t, err, "exceeds")
	require.NoError(t, w.Close())
	w, got, _ := openWAL(t, d, opts)
	assert.Len(t, got, 2)
	require.NoError(t, w.Close())
}

func writeAt(t *testing.T, p string, b []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

func flipAt(t *testing.T, p string, off int64) {
	t.Helper()
	b := make([]byte, 1)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.ReadAt(b, off)
	require.NoError(t, err)
	b[0] ^= 0x10
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

// TestWALOversizeSegmentClosedAtOpen: a WAL reopened with a smaller
// SegmentSize (Preallocate lowered) leaves the larger last segment
// closed: the next batch goes to a new segment of the new size, the old
// one's records replay in order, and Retire deletes it once promoted.
// Before, the old segment stayed active, and on disk at its old size, for
// good (files audit).
func TestWALOversizeSegmentClosedAtOpen(t *testing.T) {
	d := stdDoer(t)
	dir := filepath.Join(t.TempDir(), "wal")
	w, _, _ := openWAL(t, d, Options{Dir: dir, SegmentSize: 64 << 10})
	first := recs(1, 5, 1)
	require.NoError(t, w.Append(first))
	require.NoError(t, w.Close())

	small := Options{Dir: dir, SegmentSize: 8 << 10}
	w, got, _ := openWAL(t, d, small)
	assert.Equal(t, first, got)
	segs := w.Segments()
	require.Len(t, segs, 1)
	assert.False(t, segs[0].Active, "a segment larger than SegmentSize is not appended to")
	maxRev, ok := w.Oldest()
	require.True(t, ok, "the closed segment is the first Retire could delete")
	assert.Equal(t, first[len(first)-1].Revision, maxRev)

	more := recs(6, 3, 1)
	require.NoError(t, w.Append(more))
	segs = w.Segments()
	require.Len(t, segs, 2)
	assert.Equal(t, segs[0].Seq+1, segs[1].Seq)
	assert.True(t, segs[1].Active)
	st, err := os.Stat(filepath.Join(dir, SegmentName(segs[1].Seq)))
	require.NoError(t, err)
	assert.Equal(t, small.SegmentSize, st.Size(), "the new segment has the new size")

	retired, err := w.Retire(maxRev)
	require.NoError(t, err)
	assert.Equal(t, []uint64{segs[0].Seq}, retired)
	_, err = os.Stat(filepath.Join(dir, SegmentName(segs[0].Seq)))
	assert.True(t, os.IsNotExist(err), "the old segment is deleted")
	require.NoError(t, w.Close())

	// What is left replays whole: the new segment's cut names a segment
	// that is gone, as after any retirement.
	_, got, _ = openWAL(t, d, small)
	assert.Equal(t, more, got)
}
