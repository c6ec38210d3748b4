package wal

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
)

// stdDoer returns a Doer over a std ring, closed when the test ends.
func stdDoer(t testing.TB) ring.Doer {
	t.Helper()
	r, err := ring.New(ring.Options{Kind: ring.Std})
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return ring.NewSync(r)
}

func recs(from, n int, space messages.SpaceID) []messages.Record {
	out := make([]messages.Record, n)
	for i := range out {
		rev := messages.Revision(from + i)
		out[i] = messages.Record{Space: space, Point: messages.Point{uint32(rev), 3}, Revision: rev,
			Value: append([]byte{byte(rev), byte(rev >> 8)}, make([]byte, 100)...)}
		if rev%7 == 0 {
			out[i].Value, out[i].Tombstone = nil, true
		}
	}
	return out
}

type replayed struct {
	seq  uint64
	recs []messages.Record
}

func openWAL(t *testing.T, d ring.Doer, opts Options) (*WAL, []messages.Record, []uint64) {
	t.Helper()
	var got []messages.Record
	var seqs []uint64
	w, err := Open(d, opts, func(seq uint64, off int64, r messages.Record) error {
		got = append(got, r)
		seqs = append(seqs, seq)
		return nil
	})
	require.NoError(t, err)
	return w, got, seqs
}

func TestWALAppendReplay(t *testing.T) {
	d := stdDoer(t)
	dir := filepath.Join(t.TempDir(), "wal")
	opts := Options{Dir: dir, SegmentSize: 8 << 10}
	w, got, _ := openWAL(t, d, opts)
	assert.Empty(t, got)
	seq, off := w.End()
	assert.Zero(t, seq)
	assert.Zero(t, off)
	var want []messages.Record
	for b := 0; b < 40; b++ {
		batch := recs(1+len(want), 1+b%9, messages.SpaceID(1+b%3))
		require.NoError(t, w.Append(batch))
		want = append(want, batch...)
	}
	segs := w.Segments()
	require.Greater(t, len(segs), 1, "the WAL rolled")
	assert.True(t, segs[len(segs)-1].Active)
	total := 0
	for i, s := range segs {
		total += s.Records
		if i > 0 {
			assert.Equal(t, segs[i-1].Seq+1, s.Seq)
			assert.Greater(t, s.MinRev, segs[i-1].MaxRev)
		}
	}
	assert.Equal(t, len(want), total)
	seq, off = w.End()
	require.NoError(t, w.Close())
	require.NoError(t, w.Close(), "Close twice")

	// Every segment is preallocated: its size is the segment size.
	for _, s := range segs {
		st, err := os.Stat(filepath.Join(dir, SegmentName(s.Seq)))
		require.NoError(t, err)
		assert.Equal(t, opts.SegmentSize, st.Size())
	}

	w2, got, _ := openWAL(t, d, opts)
	assert.Equal(t, want, got)
	assert.Equal(t, segs, w2.Segments())
	seq2, off2 := w2.End()
	assert.Equal(t, seq, seq2)
	assert.Equal(t, off, off2)
	// Appending after a reopen continues where the log ended.
	more := recs(1+len(want), 3, 9)
	require.NoError(t, w2.Append(more))
	require.NoError(t, w2.Close())
	_, got, _ = openWAL(t, d, opts)
	assert.Equal(t, append(want, more...), got)
}

func TestWALPrepareCommitted(t *testing.T) {
	d := stdDoer(t)
	w, _, _ := openWAL(t, d, Options{Dir: filepath.Join(t.TempDir(), "wal"), SegmentSize: 8192})
	p, err := w.Prepare(recs(1, 3, 1))
	require.NoError(t, err)
	_, err = w.Prepare(recs(4, 1, 1))
	assert.ErrorIs(t, err, ErrBusy, "one batch in flight")
	assert.ErrorIs(t, w.Close(), ErrBusy)
	ops := p.Ops()
	require.Len(t, ops, 1, "one write, durable on completion")
	assert.Equal(t, ring.OpWrite, ops[0].Code)
	assert.True(t, ops[0].DSync)
	assert.False(t, ops[0].Link)
	assert.Equal(t, int64(0), p.Off)
	assert.Equal(t, messages.Revision(1), p.MinRev)
	assert.Equal(t, messages.Revision(3), p.MaxRev)
	cs, err := d.Do(ops...)
	require.NoError(t, err)
	for _, c := range cs {
		require.NoError(t, c.Err)
	}
	require.NoError(t, w.Committed(p))
	assert.Error(t, w.Committed(p), "Committed twice")
	_, off := w.End()
	assert.Equal(t, int64(p.Len), off)

	// A batch larger than a segment is refused.
	_, err = w.Prepare([]messages.Record{{Space: 1, Point: messages.Point{1}, Revision: 9, Value: make([]byte, 9000)}})
	assert.Error(t, err)

	// A failed write leaves the WAL failed.
	p, err = w.Prepare(recs(4, 1, 1))
	require.NoError(t, err)
	w.Failed(p, os.ErrInvalid)
	_, err = w.Prepare(recs(5, 1, 1))
	assert.ErrorIs(t, err, os.ErrInvalid)
	assert.Error(t, w.Append(recs(5, 1, 1)))
	require.NoError(t, w.Close())
	_, err = w.Prepare(recs(5, 1, 1))
	assert.ErrorIs(t, err, ErrClosed)
}

func TestWALTornTailZeroed(t *testing.T) {
	d := stdDoer(t)
	dir := filepath.Join(t.TempDir(), "wal")
	opts := Options{Dir: dir, SegmentSize: 1 << 16}
	w, _, _ := openWAL(t, d, opts)
	require.NoError(t, w.Append(recs(1, 5, 1)))
	_, end := w.End()
	require.NoError(t, w.Append(recs(6, 20, 1)))
	require.NoError(t, w.Close())
	// Tear the last batch: zero a sector in its middle.
	path := filepath.Join(dir, SegmentName(1))
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	clear(data[end+512 : end+1024])
	require.NoError(t, os.WriteFile(path, data, 0o644))

	_, err = Open(d, Options{Dir: dir, SegmentSize: 1 << 16, Mode: Strict}, nil)
	var ce *messages.CorruptionError
	require.ErrorAs(t, err, &ce, "Strict refuses a torn tail")
	assert.Equal(t, filepath.Join("wal", SegmentName(1)), ce.Path)

	w, got, _ := openWAL(t, d, opts)
	assert.Equal(t, recs(1, 5, 1), got, "the torn batch is dropped whole")
	_, off := w.End()
	assert.Equal(t, end, off)
	require.Len(t, w.Torn(), 1, "Open reports the torn batch it dropped")
	assert.Equal(t, TornTail{Path: filepath.Join("wal", SegmentName(1)), Off: end, Bytes: w.Torn()[0].Bytes}, w.Torn()[0])
	assert.Positive(t, w.Torn()[0].Bytes)
	require.NoError(t, w.Close())
	data, err = os.ReadFile(path)
	require.NoError(t, err)
	assert.True(t, isZero(data[end:]), "the torn tail was zeroed")
	// Now even Strict mode opens it.
	w, got, _ = openWAL(t, d, Options{Dir: dir, SegmentSize: 1 << 16, Mode: Strict})
	assert.Len(t, got, 5)
	assert.Empty(t, w.Torn(), "nothing torn on a clean open")
	require.NoError(t, w.Close())
}

func TestWALMidSegmentCorruption(t *testing.T) {
	d := stdDoer(t)
	dir := filepath.Join(t.TempDir(), "wal")
	opts := Options{Dir: dir, SegmentSize: 1 << 16}
	w, _, _ := openWAL(t, d, opts)
	require.NoError(t, w.Append(recs(1, 5, 1)))
	_, end := w.End()
	require.NoError(t, w.Append(recs(6, 5, 1)))
	require.NoError(t, w.Append(recs(11, 5, 1)))
	require.NoError(t, w.Close())
	path := filepath.Join(dir, SegmentName(1))
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	data[end+30] ^= 1
	require.NoError(t, os.WriteFile(path, data, 0o644))
	for _, mode := range []RecoveryMode{TolerateTornTail, Strict} {
		_, err = Open(d, Options{Dir: dir, SegmentSize: 1 << 16, Mode: mode}, nil)
		var ce *messages.CorruptionError
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, end, ce.Offset)
	}
}

func TestWALTornInEarlierSegmentIsCorrupt(t *testing.T) {
	d := stdDoer(t)
	dir := filepath.Join(t.TempDir(), "wal")
	opts := Options{Dir: dir, SegmentSize: 4096}
	w, _, _ := openWAL(t, d, opts)
	for i := 0; i < 30; i++ {
		require.NoError(t, w.Append(recs(1+5*i, 5, 1)))
	}
	require.Greater(t, len(w.Segments()), 2)
	require.NoError(t, w.Close())
	// Damage the last frame of segment 1: it would look torn on its own.
	path := filepath.Join(dir, SegmentName(1))
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	res, err := Scan(data, ScanOptions{Salt: segmentSalt(1)}, nil)
	require.NoError(t, err)
	data[res.End-3] ^= 0xff
	require.NoError(t, os.WriteFile(path, data, 0o644))
	_, err = Open(d, opts, nil)
	assert.ErrorIs(t, err, messages.ErrCorrupt)
}

func TestWALBadRecordInGoodFrame(t *testing.T) {
	d := stdDoer(t)
	dir := filepath.Join(t.TempDir(), "wal")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	var b Batch
	b.Begin(nil, segmentSalt(1))
	b.Add(TypeRecord, EncodeRecord(nil, recs(1, 1, 1)[0]))
	b.Add(TypeRecord, []byte("not a record"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, SegmentName(1)), b.Finish(), 0o644))
	_, err := Open(d, Options{Dir: dir}, nil)
	var ce *messages.CorruptionError
	require.ErrorAs(t, err, &ce)
	assert.Contains(t, ce.Reason, "bad record")
	assert.Positive(t, ce.Offset)
}

// TestWALRetireWatermark: retirement never removes a segment that holds a
// revision above the promotion watermark, whatever order revisions were
// staged in, retires only a prefix of the segments (a cut must outlive the
// segments it speaks of), and a retired segment's records are gone from
// replay.
func TestWALRetireWatermark(t *testing.T) {
	d := stdDoer(t)
	dir := filepath.Join(t.TempDir(), "wal")
	opts := Options{Dir: dir, SegmentSize: 4096}
	w, _, _ := openWAL(t, d, opts)
	// Revisions staged out of order across segments (spaces interleave).
	segRecs := map[uint64][]messages.Revision{}
	const n = 100
	for i := 0; i < n; i++ {
		rev := 1 + (i*37)%n
		require.NoError(t, w.Append(recs(rev, 1, messages.SpaceID(1+i%4))))
		seq, _ := w.End()
		segRecs[seq] = append(segRecs[seq], messages.Revision(rev))
	}
	require.Greater(t, len(w.Segments()), 3)
	for wm := messages.Revision(0); wm <= n+1; wm++ {
		before := w.Segments()
		retired, err := w.Retire(wm)
		require.NoError(t, err)
		for _, seq := range retired {
			for _, rev := range segRecs[seq] {
				assert.LessOrEqual(t, rev, wm, "segment %d held unpromoted revision %d", seq, rev)
			}
			_, err := os.Stat(filepath.Join(dir, SegmentName(seq)))
			assert.ErrorIs(t, err, os.ErrNotExist)
		}
		// Only a prefix is retired: the oldest segment kept, unless it is
		// the active one, holds a revision above wm.
		if first := w.Segments()[0]; !first.Active {
			assert.Greater(t, first.MaxRev, wm)
		}
		assert.Equal(t, len(before), len(w.Segments())+len(retired))
	}
	segs := w.Segments()
	require.Len(t, segs, 1, "only the active segment is left")
	require.NoError(t, w.Close())
	_, got, _ := openWAL(t, d, opts)
	assert.Len(t, got, len(segRecs[segs[0].Seq]))
}
