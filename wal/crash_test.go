package wal

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
	"github.com/ringpipe/ringpipe/ring/sim/crashtest"
)

// crashEvery is crashtest.Every: the shared crash-point sweep.
func crashEvery[S any](t *testing.T, setup func(t *testing.T, d ring.Doer) S, step func(d ring.Doer, s S) error,
	check func(t *testing.T, d ring.Doer, s S, acked bool)) {
	t.Helper()
	crashtest.Every(t, setup, step, check)
}

type walState struct {
	w          *WAL
	old, batch []messages.Record
}

var crashOpts = Options{Dir: "/db/wal", SegmentSize: 4096}

func reopen(t *testing.T, d ring.Doer) (*WAL, []messages.Record) {
	t.Helper()
	var got []messages.Record
	w, err := Open(d, crashOpts, func(_ uint64, _ int64, r messages.Record) error {
		got = append(got, r)
		return nil
	})
	require.NoError(t, err)
	return w, got
}

// checkOldOrNew: the WAL loads with exactly the old records or the old plus
// the new ones, the new ones for sure when acked; a second recovery agrees,
// and appending afterwards works.
func checkOldOrNew(t *testing.T, d ring.Doer, old, batch []messages.Record, acked bool) {
	w, got := reopen(t, d)
	all := append(append([]messages.Record(nil), old...), batch...)
	if acked {
		require.Equal(t, all, got)
	} else if len(got) != len(old) {
		require.Equal(t, all, got, "neither old nor new")
	} else {
		require.Equal(t, old, got)
	}
	more := recs(1000, 3, 5)
	require.NoError(t, w.Append(more))
	require.NoError(t, w.Close())
	w, again := reopen(t, d)
	require.Equal(t, append(got, more...), again)
	require.NoError(t, w.Close())
}

func TestCrashWALAppend(t *testing.T) { testCrashWALAppend(t) }

// TestCrashWALAppendDirect is TestCrashWALAppend with O_DIRECT writes of
// padded batches (Options.Direct).
func TestCrashWALAppendDirect(t *testing.T) {
	saved := crashOpts
	crashOpts.Direct = true
	defer func() { crashOpts = saved }()
	testCrashWALAppend(t)
}

func testCrashWALAppend(t *testing.T) {
	for _, n := range []int{1, 8, 24} { // within a segment, several sectors, a roll
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			crashEvery(t, func(t *testing.T, d ring.Doer) walState {
				w, err := Open(d, crashOpts, nil)
				require.NoError(t, err)
				old := recs(1, 8, 1)
				for i := 0; i < len(old); i += 4 {
					require.NoError(t, w.Append(old[i:i+4]))
				}
				return walState{w: w, old: old, batch: recs(100, n, 2)}
			}, func(d ring.Doer, s walState) error {
				return s.w.Append(s.batch)
			}, func(t *testing.T, d ring.Doer, s walState, acked bool) {
				checkOldOrNew(t, d, s.old, s.batch, acked)
			})
		})
	}
}

// TestCrashWALRecovery crashes recovery itself, at every operation, while it
// zeroes a torn tail: the next recovery gives the same state.
func TestCrashWALRecovery(t *testing.T) {
	type state struct {
		old []messages.Record
		d2  ring.Doer
	}
	crashEvery(t, func(t *testing.T, d ring.Doer) state {
		w, err := Open(d, crashOpts, nil)
		require.NoError(t, err)
		old := recs(1, 8, 1)
		require.NoError(t, w.Append(old))
		// A batch written without its sync, then a power loss: torn.
		p, err := w.Prepare(recs(50, 12, 1))
		require.NoError(t, err)
		unsynced := p.Write
		unsynced.DSync = false
		_, err = ring.Do1(d, unsynced)
		require.NoError(t, err)
		disk := d.(*ring.Sync).Ring().(*sim.Ring).Disk()
		disk.PowerLoss(rand.New(rand.NewSource(3)))
		return state{old: old, d2: ring.NewSync(disk.NewRing(ring.Options{}))}
	}, func(_ ring.Doer, s state) error {
		w, err := Open(s.d2, crashOpts, nil)
		if err == nil {
			err = w.Close()
		}
		return err
	}, func(t *testing.T, d ring.Doer, s state, acked bool) {
		checkOldOrNew(t, d, s.old, nil, acked)
	})
}

func TestCrashWALRetire(t *testing.T) {
	type state struct {
		w      *WAL
		bySeg  map[uint64][]messages.Record
		wm     messages.Revision
		active uint64
	}
	crashEvery(t, func(t *testing.T, d ring.Doer) state {
		w, err := Open(d, crashOpts, nil)
		require.NoError(t, err)
		st := state{w: w, bySeg: map[uint64][]messages.Record{}, wm: 45}
		for i := 0; i < 30; i++ {
			r := recs(1+(i^1)*3, 3, 1) // revisions a little out of order
			require.NoError(t, w.Append(r))
			seq, _ := w.End()
			st.bySeg[seq] = append(st.bySeg[seq], r...)
		}
		st.active, _ = w.End()
		require.Greater(t, len(st.bySeg), 3)
		return st
	}, func(d ring.Doer, s state) error {
		_, err := s.w.Retire(s.wm)
		return err
	}, func(t *testing.T, d ring.Doer, s state, acked bool) {
		present := map[uint64][]messages.Record{}
		w, err := Open(d, crashOpts, func(seq uint64, _ int64, r messages.Record) error {
			present[seq] = append(present[seq], r)
			return nil
		})
		require.NoError(t, err)
		require.NoError(t, w.Close())
		for seq, rs := range s.bySeg {
			got, ok := present[seq]
			maxRev := messages.Revision(0)
			for _, r := range rs {
				maxRev = max(maxRev, r.Revision)
			}
			switch {
			case ok:
				require.Equal(t, rs, got, "segment %d is whole", seq)
				if acked && seq != s.active {
					require.Greater(t, maxRev, s.wm, "segment %d should have been retired", seq)
				}
			default:
				require.LessOrEqual(t, maxRev, s.wm, "segment %d with unpromoted revisions was lost", seq)
				require.NotEqual(t, s.active, seq)
			}
		}
	})
}
