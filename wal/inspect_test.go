package wal

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
)

// readAll returns every segment file's bytes, by name.
func readAll(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	names, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n.Name()))
		require.NoError(t, err)
		out[n.Name()] = b
	}
	return out
}

// TestInspectAgreesWithOpen: for each kind of damage, Inspect reports what
// Open does (the same records, the same torn tail, the same corruption at
// the same offset) and changes no file, where Open zeroes a torn tail.
func TestInspectAgreesWithOpen(t *testing.T) {
	const size = 4096
	type layout struct {
		dir  string
		ends []int64 // where each batch of segment 1 ends
	}
	build := func(t *testing.T, restart bool) layout {
		d := stdDoer(t)
		l := layout{dir: filepath.Join(t.TempDir(), "wal")}
		w, _, _ := openWAL(t, d, Options{Dir: l.dir, SegmentSize: size})
		for i := range 3 {
			require.NoError(t, w.Append(recs(1+5*i, 5, 1)))
			_, end := w.End()
			l.ends = append(l.ends, end)
		}
		if restart {
			require.NoError(t, w.Restart())
		}
		for i := range 30 { // rolls to more segments
			require.NoError(t, w.Append(recs(100+3*i, 3, 2)))
		}
		require.NoError(t, w.Close())
		return l
	}
	for _, tc := range []struct {
		name    string
		restart bool
		damage  func(t *testing.T, l layout)
		corrupt bool // Open refuses
		torn    bool // some segment is torn
	}{
		{name: "clean"},
		{name: "clean with a cut", restart: true},
		{name: "mid-segment corruption", corrupt: true, damage: func(t *testing.T, l layout) {
			flipByte(t, filepath.Join(l.dir, SegmentName(1)), l.ends[0]+30)
		}},
		{name: "torn in an earlier segment", corrupt: true, damage: func(t *testing.T, l layout) {
			tearLast(t, l.dir, 1)
		}},
		{name: "torn tail of the last segment", torn: true, damage: func(t *testing.T, l layout) {
			names, err := os.ReadDir(l.dir)
			require.NoError(t, err)
			tearLast(t, l.dir, uint64(len(names)))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := build(t, tc.restart)
			if tc.damage != nil {
				tc.damage(t, l)
			}
			before := readAll(t, l.dir)
			d := stdDoer(t)
			var seen []messages.Record
			reps, err := Inspect(d, l.dir, "", func(_ uint64, _ int64, r messages.Record) error {
				seen = append(seen, r)
				return nil
			})
			require.NoError(t, err)
			assert.Equal(t, before, readAll(t, l.dir), "Inspect changed a file")
			require.Greater(t, len(reps), 2)
			assert.True(t, reps[len(reps)-1].Active)
			assert.Equal(t, filepath.Join("wal", SegmentName(1)), reps[0].Name)
			assert.EqualValues(t, size, reps[0].Size)
			if tc.restart {
				assert.Equal(t, l.ends[2], reps[0].Limit, "the cut ends segment 1 where the restart left it")
			}
			var ce *messages.CorruptionError
			var damaged []SegmentReport
			torn := false
			for _, r := range reps {
				if r.Err != nil {
					damaged = append(damaged, r)
				}
				torn = torn || r.Result.Torn
			}

			var opened []messages.Record
			w, oerr := Open(d, Options{Dir: l.dir, SegmentSize: size}, func(_ uint64, _ int64, r messages.Record) error {
				opened = append(opened, r)
				return nil
			})
			if tc.corrupt {
				require.ErrorAs(t, oerr, &ce)
				require.Len(t, damaged, 1)
				var got *messages.CorruptionError
				require.ErrorAs(t, damaged[0].Err, &got)
				assert.Equal(t, *ce, *got, "Inspect reports Open's corruption")
				return
			}
			require.NoError(t, oerr)
			require.NoError(t, w.Close())
			assert.Empty(t, damaged)
			assert.Equal(t, tc.torn, torn)
			assert.Equal(t, opened, seen, "Inspect reads the records Open replays")
			n := 0
			for _, r := range reps {
				n += r.Records
			}
			assert.Equal(t, len(opened), n)
		})
	}
}

func TestInspectMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wal")
	reps, err := Inspect(stdDoer(t), dir, "wal", nil)
	require.NoError(t, err)
	assert.Empty(t, reps)
	assert.NoDirExists(t, dir, "Inspect creates nothing")
}

// tearLast damages the last batch of segment seq, as a torn write would.
func tearLast(t *testing.T, dir string, seq uint64) {
	t.Helper()
	path := filepath.Join(dir, SegmentName(seq))
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	res, err := Scan(data, ScanOptions{Salt: segmentSalt(seq)}, nil)
	require.NoError(t, err)
	require.Positive(t, res.End)
	flipByte(t, path, res.End-3)
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	data[off] ^= 0xff
	require.NoError(t, os.WriteFile(path, data, 0o644))
}
