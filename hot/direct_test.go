package hot

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/internal/backendtest"
	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/wal"
)

// directBackends runs fn on the simulated disk (which refuses unaligned
// O_DIRECT transfers, as Linux does) and on the std and io_uring backends,
// with dir the segments' directory.
func directBackends(t *testing.T, fn func(t *testing.T, d ring.Doer, dir string, simulated bool)) {
	backendtest.Run(t, 1, func(t *testing.T, b backendtest.Backend) {
		fn(t, b.Doer, filepath.Join(b.Dir, "hot"), b.Simulated)
	})
}

// appendDirect appends batches of 1, 2, ... records from revision from on
// and checks that every batch of a direct segment ends on a sector.
func appendDirect(t *testing.T, s *Segment, space messages.SpaceID, from, batches int) []messages.Record {
	t.Helper()
	var out []messages.Record
	for b := 1; b <= batches; b++ {
		batch := recs(space, from+len(out), b)
		require.NoError(t, s.Append(batch))
		out = append(out, batch...)
		if s.Direct() {
			require.Zero(t, s.Size()%Sector, "batch %d ends at %d", b, s.Size())
		}
	}
	return out
}

// TestDirectSegment: a direct segment's batches are padded to sectors and
// read back exactly, after a reopen too, and a recycled direct segment
// reads back only its own life's records, in Strict mode.
func TestDirectSegment(t *testing.T) {
	directBackends(t, func(t *testing.T, d ring.Doer, dir string, simulated bool) {
		opts := Options{Dir: dir, SegmentSize: 1 << 16, Direct: true, Mode: wal.Strict}
		g1 := Gen{Space: 2, Gen: 1}
		s, err := Create(d, opts, g1)
		require.NoError(t, err)
		if simulated {
			require.True(t, s.Direct(), "sim takes O_DIRECT")
		} else if !s.Direct() {
			t.Logf("%s refuses O_DIRECT: buffered writes", dir)
		}
		want := appendDirect(t, s, 2, 1, 12)
		require.NoError(t, s.Close())

		s, got := replay(t, d, opts, g1, false)
		assert.Equal(t, want, got)
		assert.Equal(t, simulated || s.Direct(), s.Direct(), "reopened for appends: direct again")
		more := appendDirect(t, s, 2, 1+len(want), 5)
		want = append(want, more...)
		var read []messages.Record
		require.NoError(t, s.ReadRecords(func(_ int64, r messages.Record) error { read = append(read, r); return nil }))
		assert.Equal(t, want, read, "the sealer's read sees the direct writes")

		// Recycle g1's file as g3: only g3's records come back.
		s2, err := s.Rotate()
		require.NoError(t, err)
		assert.False(t, s.Direct(), "a rotated generation takes no appends")
		require.NoError(t, s.Retire())
		s3, err := s2.Rotate()
		require.NoError(t, err)
		require.True(t, s3.Recycled())
		nw := appendDirect(t, s3, 2, 1000, 3)
		require.NoError(t, s2.Close())
		require.NoError(t, s3.Close())
		_, got = replay(t, d, opts, s3.Gen(), false)
		assert.Equal(t, nw, got)
	})
}

// TestDirectAfterBuffered: a generation written without Direct (so it ends
// off a sector) and reopened with it takes one buffered batch that pads to
// a sector, then direct ones; everything reads back, in Strict mode.
func TestDirectAfterBuffered(t *testing.T) {
	directBackends(t, func(t *testing.T, d ring.Doer, dir string, simulated bool) {
		opts := Options{Dir: dir, SegmentSize: 1 << 16, Mode: wal.Strict}
		g := Gen{Space: 4, Gen: 1}
		s, err := Create(d, opts, g)
		require.NoError(t, err)
		want := appendDirect(t, s, 4, 1, 3)
		require.NotZero(t, s.Size()%Sector, "buffered batches are not padded")
		require.NoError(t, s.Close())

		opts.Direct = true
		s, got := replay(t, d, opts, g, false)
		assert.Equal(t, want, got)
		if !s.Direct() {
			require.False(t, simulated)
			t.Skipf("%s refuses O_DIRECT", dir)
		}
		want = append(want, appendDirect(t, s, 4, 1+len(want), 4)...)
		require.NoError(t, s.Close())
		_, got = replay(t, d, opts, g, false)
		assert.Equal(t, want, got)
		opts.Direct = false
		_, got = replay(t, d, opts, g, false)
		assert.Equal(t, want, got, "read back without Direct")
	})
}

type directState struct {
	s     *Segment
	acked *[]messages.Record
}

// TestCrashDirectAppend cuts the power at every op of direct appends (each
// later op failing, every unsynced sector applied, dropped, zeroed or
// garbage): every acknowledged record is there, in order, and nothing
// else but a prefix of the failed batch; the repaired segment then reads
// in Strict mode and takes appends.
func TestCrashDirectAppend(t *testing.T) {
	opts := Options{Dir: "/db/hot", SegmentSize: 16384, Direct: true}
	g := Gen{Space: 7, Gen: 1}
	crashEvery(t, func(t *testing.T, d ring.Doer) directState {
		s, err := Create(d, opts, g)
		require.NoError(t, err)
		require.True(t, s.Direct())
		acked := appendDirect(t, s, 7, 1, 3)
		return directState{s: s, acked: &acked}
	}, func(st directState) error {
		for b := 1; b <= 4; b++ {
			batch := recs(7, 1+len(*st.acked), b)
			if err := st.s.Append(batch); err != nil {
				return err
			}
			*st.acked = append(*st.acked, batch...)
		}
		return nil
	}, func(t *testing.T, d ring.Doer, st directState, _ bool) {
		acked := *st.acked
		s, got := replay(t, d, opts, g, false)
		require.GreaterOrEqual(t, len(got), len(acked), "an acknowledged record is missing")
		assert.Equal(t, acked, got[:len(acked)])
		assert.LessOrEqual(t, len(got)-len(acked), 4, "only the failed batch may add records")
		require.NoError(t, s.Append(recs(7, 5000, 1)))
		require.NoError(t, s.Close())
		strict := opts
		strict.Mode = wal.Strict
		s, again := replay(t, d, strict, g, false)
		assert.Equal(t, append(got, recs(7, 5000, 1)...), again)
		require.NoError(t, s.Close())
	})
}
