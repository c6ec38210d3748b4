package wal

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/internal/backendtest"
	"github.com/ringpipe/ringpipe/messages"
)

// TestWALDirect appends batches of many sizes through O_DIRECT (rolling
// through several segments, and restarting once as after a failure) on
// the simulated disk, which refuses unaligned O_DIRECT transfers as Linux
// does, and on the std and io_uring backends: every batch but a segment's
// first (which follows the segment's cut) is written direct, starts and
// ends on a sector, and the log reads back exactly, in Strict mode.
func TestWALDirect(t *testing.T) {
	backendtest.Run(t, 1, func(t *testing.T, be backendtest.Backend) {
		d, dir := be.Doer, filepath.Join(be.Dir, "wal")
		opts := Options{Dir: dir, SegmentSize: 4096, Direct: true, Mode: Strict}
		w, got, _ := openWAL(t, d, opts)
		require.Empty(t, got)
		var want []messages.Record
		direct := 0
		for b := 1; b <= 24; b++ {
			if b == 12 {
				require.NoError(t, w.Restart())
			}
			batch := recs(1+len(want), b%9+1, messages.SpaceID(1+b%3))
			p, err := w.Prepare(batch)
			require.NoError(t, err)
			if w.Direct() {
				require.Zero(t, (p.Off+int64(p.Len))%Sector, "batch %d ends on a sector", b)
				if p.Off%Sector == 0 {
					direct++
					require.Equal(t, w.dfd, p.Write.FD, "batch %d: an aligned batch goes direct", b)
					require.Zero(t, len(p.Write.Buf)%Sector)
				}
			}
			cs, err := d.Do(p.Ops()...)
			require.NoError(t, err)
			require.NoError(t, cs[0].Err)
			require.NoError(t, w.Committed(p))
			want = append(want, batch...)
		}
		if be.Simulated {
			require.True(t, w.Direct())
		}
		if w.Direct() {
			assert.Greater(t, direct, 12, "most batches went direct")
		} else {
			t.Logf("%s refuses O_DIRECT: buffered writes", dir)
		}
		assert.Greater(t, len(w.Segments()), 3, "the batches rolled through segments")
		require.NoError(t, w.Close())
		w, got, _ = openWAL(t, d, opts)
		assert.Equal(t, want, got)
		more := recs(1+len(want), 3, 1)
		require.NoError(t, w.Append(more))
		require.NoError(t, w.Close())
		opts.Direct = false
		w, got, _ = openWAL(t, d, opts)
		assert.Equal(t, append(want, more...), got, "read back without Direct")
		require.NoError(t, w.Close())
	})
}
