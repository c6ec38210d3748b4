package hot

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
)

// TestInspectAgreesWithOpen: Inspect reads what Open replays, reports
// Open's corruption at the same offset, and reports a torn tail that Open
// would zero without changing the file.
func TestInspectAgreesWithOpen(t *testing.T) {
	const size = 1 << 16
	g := Gen{Space: 3, Gen: 2}
	for _, tc := range []struct {
		name    string
		damage  func(data []byte, ends []int64) // ends: where each batch ends
		torn    bool
		corrupt bool
	}{
		{name: "clean"},
		{name: "corrupt first batch", corrupt: true, damage: func(data []byte, ends []int64) { data[40] ^= 1 }},
		{name: "torn last batch", torn: true, damage: func(data []byte, ends []int64) { data[ends[len(ends)-1]-5] ^= 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := stdDoer(t)
			opts := Options{Dir: filepath.Join(t.TempDir(), "hot"), SegmentSize: size}
			s, err := Create(d, opts, g)
			require.NoError(t, err)
			var ends []int64
			for b := range 3 {
				require.NoError(t, s.Append(recs(g.Space, 10+4*b, 4)))
				ends = append(ends, s.Size())
			}
			require.NoError(t, s.Close())
			path := filepath.Join(opts.Dir, g.FileName())
			if tc.damage != nil {
				data, err := os.ReadFile(path)
				require.NoError(t, err)
				tc.damage(data, ends)
				require.NoError(t, os.WriteFile(path, data, 0o644))
			}
			before, err := os.ReadFile(path)
			require.NoError(t, err)

			var seen []messages.Record
			rep := Inspect(d, opts, g, func(_ int64, r messages.Record) error {
				seen = append(seen, r)
				return nil
			})
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, before, after, "Inspect changed the file")
			assert.Equal(t, filepath.Join("hot", g.FileName()), rep.Name)
			assert.EqualValues(t, size, rep.Size)
			assert.Equal(t, tc.torn, rep.Result.Torn)

			var opened []messages.Record
			seg, oerr := Open(d, opts, g, false, func(_ int64, r messages.Record) error {
				opened = append(opened, r)
				return nil
			})
			require.Equal(t, tc.corrupt, oerr != nil, "Open: %v", oerr)
			if oerr != nil {
				var want, got *messages.CorruptionError
				require.ErrorAs(t, oerr, &want)
				require.ErrorAs(t, rep.Err, &got, "Inspect reports Open's corruption")
				assert.Equal(t, *want, *got)
				assert.Zero(t, got.Offset)
				return
			}
			require.NoError(t, rep.Err)
			assert.Equal(t, opened, seen)
			assert.Equal(t, seg.Records(), rep.Records)
			lo, hi := seg.RevRange()
			assert.Equal(t, []messages.Revision{lo, hi}, []messages.Revision{rep.MinRev, rep.MaxRev})
			assert.Equal(t, seg.Size(), rep.Bytes)
			if tc.torn {
				assert.Equal(t, ends[1], rep.Bytes, "the torn last batch is not counted")
			} else {
				assert.Equal(t, ends[2], rep.Bytes)
			}
			require.NoError(t, seg.Close())
		})
	}
}

func TestInspectMissingAndSpares(t *testing.T) {
	d := stdDoer(t)
	opts := Options{Dir: filepath.Join(t.TempDir(), "hot"), SegmentSize: 1 << 16}
	spares, err := ListSpares(d, opts.Dir)
	require.NoError(t, err)
	assert.Empty(t, spares, "a missing directory holds none")
	rep := Inspect(d, opts, Gen{Space: 1, Gen: 1}, nil)
	assert.Error(t, rep.Err)
	assert.NoDirExists(t, opts.Dir, "Inspect creates nothing")

	s, err := Create(d, opts, Gen{Space: 1, Gen: 1})
	require.NoError(t, err)
	require.NoError(t, s.Append(recs(1, 1, 3)))
	next, err := s.Rotate()
	require.NoError(t, err)
	require.NoError(t, s.Retire())
	require.NoError(t, next.Close())
	spares, err = ListSpares(d, opts.Dir)
	require.NoError(t, err)
	assert.Equal(t, []Gen{{Space: 1, Gen: 1}}, spares)
}
