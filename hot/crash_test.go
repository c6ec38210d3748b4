package hot

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim/crashtest"
	"github.com/ringpipe/ringpipe/wal"
)

// crashEvery is crashtest.Every for steps that need no Doer.
func crashEvery[S any](t *testing.T, setup func(t *testing.T, d ring.Doer) S, step func(s S) error,
	check func(t *testing.T, d ring.Doer, s S, acked bool)) {
	t.Helper()
	crashtest.Every(t, setup, func(_ ring.Doer, s S) error { return step(s) }, check)
}

var crashOpts = Options{Dir: "/db/hot", SegmentSize: 8192}

// load opens every generation as recovery would (the newest of a space
// active, older ones immutable) and returns their records.
func load(t *testing.T, d ring.Doer) map[Gen][]messages.Record {
	t.Helper()
	gens, err := List(d, crashOpts.Dir)
	require.NoError(t, err)
	out := map[Gen][]messages.Record{}
	for i, g := range gens {
		newest := i == len(gens)-1 || gens[i+1].Space != g.Space
		s, err := Open(d, crashOpts, g, !newest, func(_ int64, r messages.Record) error {
			out[g] = append(out[g], r)
			return nil
		})
		require.NoError(t, err)
		if _, ok := out[g]; !ok {
			out[g] = nil
		}
		if newest {
			// The active generation takes appends after recovery.
			require.NoError(t, s.Append(recs(g.Space, 5000, 1)))
		}
		require.NoError(t, s.Close())
	}
	return out
}

type rotState struct {
	s1       *Segment
	old, new []messages.Record
}

func TestCrashHotRotate(t *testing.T) {
	g1, g2 := Gen{Space: 1, Gen: 1}, Gen{Space: 1, Gen: 2}
	crashEvery(t, func(t *testing.T, d ring.Doer) rotState {
		s1, err := Create(d, crashOpts, g1)
		require.NoError(t, err)
		old := recs(1, 1, 10)
		require.NoError(t, s1.Append(old))
		return rotState{s1: s1, old: old, new: recs(1, 11, 5)}
	}, func(s rotState) error {
		s2, err := s.s1.Rotate()
		if err != nil {
			return err
		}
		return s2.Append(s.new)
	}, func(t *testing.T, d ring.Doer, s rotState, acked bool) {
		got := load(t, d)
		require.Equal(t, s.old, got[g1], "the old generation is intact")
		switch recs2, ok := got[g2]; {
		case !ok:
			require.False(t, acked)
			require.Len(t, got, 1)
		case len(recs2) == 0:
			require.False(t, acked, "rotated, the append not durable")
		default:
			require.Equal(t, s.new, recs2)
		}
		// A second recovery agrees (and sees the appends of the first).
		again := load(t, d)
		for g := range got {
			require.Len(t, again[g], len(got[g])+map[bool]int{true: 1}[g == maxGen(got)])
		}
	})
}

func maxGen(m map[Gen][]messages.Record) Gen {
	var out Gen
	for g := range m {
		if g.Gen > out.Gen {
			out = g
		}
	}
	return out
}

func TestCrashHotRetire(t *testing.T) {
	g1, g2 := Gen{Space: 4, Gen: 1}, Gen{Space: 4, Gen: 2}
	type state struct {
		s1       *Segment
		old, new []messages.Record
	}
	crashEvery(t, func(t *testing.T, d ring.Doer) state {
		s1, err := Create(d, crashOpts, g1)
		require.NoError(t, err)
		old := recs(4, 1, 10)
		require.NoError(t, s1.Append(old))
		s2, err := s1.Rotate()
		require.NoError(t, err)
		nw := recs(4, 11, 3)
		require.NoError(t, s2.Append(nw))
		require.NoError(t, s2.Close())
		return state{s1: s1, old: old, new: nw}
	}, func(s state) error {
		return s.s1.Retire()
	}, func(t *testing.T, d ring.Doer, s state, acked bool) {
		got := load(t, d)
		require.Equal(t, s.new, got[g2], "the active generation is intact")
		if r, ok := got[g1]; ok {
			require.False(t, acked, "retired, yet back")
			require.Equal(t, s.old, r, "the old generation is whole or gone")
		}
		require.LessOrEqual(t, len(got), 2)
	})
}

// spareState is a space with generation 1 retired to a spare (full of
// records whose revisions the next life reuses) and generation 2 active.
type spareState struct {
	d        ring.Doer
	s2       *Segment
	mid, new []messages.Record
}

func setupSpare(t *testing.T, d ring.Doer) spareState {
	s1, err := Create(d, crashOpts, Gen{Space: 6, Gen: 1})
	require.NoError(t, err)
	require.NoError(t, s1.Append(recs(6, 1, 40)))
	s2, err := s1.Rotate()
	require.NoError(t, err)
	require.NoError(t, s1.Retire())
	mid := recs(6, 41, 3)
	require.NoError(t, s2.Append(mid))
	nw := recs(6, 1, 6) // revisions the spare's old life holds too
	for i := range nw {
		nw[i].Value = []byte("new")
	}
	return spareState{d: d, s2: s2, mid: mid, new: nw}
}

// TestCrashHotRotateRecycle cuts the power at every op of a rotation that
// reuses a spare, and of the first append into it: generation 3 is
// missing, empty or exactly the new records, never a stale one.
func TestCrashHotRotateRecycle(t *testing.T) {
	g2, g3 := Gen{Space: 6, Gen: 2}, Gen{Space: 6, Gen: 3}
	crashEvery(t, setupSpare, func(s spareState) error {
		s3, err := s.s2.Rotate()
		if err != nil {
			return err
		}
		if !s3.Recycled() {
			return errors.New("the rotation did not reuse the spare")
		}
		return s3.Append(s.new)
	}, func(t *testing.T, d ring.Doer, s spareState, acked bool) {
		got := load(t, d)
		require.Equal(t, s.mid, got[g2], "the old generation is intact")
		switch r3, ok := got[g3]; {
		case !ok:
			require.False(t, acked)
		case len(r3) == 0:
			require.False(t, acked, "rotated, the append not durable")
		default:
			require.Equal(t, s.new, r3, "exactly the new records")
		}
		require.NotContains(t, got, Gen{Space: 6, Gen: 1})
		// A second recovery in Strict mode agrees (plus load's append).
		again := loadStrict(t, d)
		for g := range got {
			require.Len(t, again[g], len(got[g])+map[bool]int{true: 1}[g == maxGen(got)])
		}
	})
}

// TestCrashHotRetireToSpare cuts the power at every op of a retirement
// into a spare followed by the rotation that reuses it.
func TestCrashHotRetireToSpare(t *testing.T) {
	g1, g2, g3 := Gen{Space: 7, Gen: 1}, Gen{Space: 7, Gen: 2}, Gen{Space: 7, Gen: 3}
	type state struct {
		s1, s2   *Segment
		old, mid []messages.Record
	}
	crashEvery(t, func(t *testing.T, d ring.Doer) state {
		s1, err := Create(d, crashOpts, g1)
		require.NoError(t, err)
		old := recs(7, 1, 30)
		require.NoError(t, s1.Append(old))
		s2, err := s1.Rotate()
		require.NoError(t, err)
		mid := recs(7, 31, 2)
		require.NoError(t, s2.Append(mid))
		return state{s1: s1, s2: s2, old: old, mid: mid}
	}, func(s state) error {
		if err := s.s1.Retire(); err != nil {
			return err
		}
		s3, err := s.s2.Rotate()
		if err != nil {
			return err
		}
		if !s3.Recycled() {
			return errors.New("the rotation did not reuse the spare")
		}
		return s3.Close()
	}, func(t *testing.T, d ring.Doer, s state, acked bool) {
		got := loadStrict(t, d)
		require.Equal(t, s.mid, got[g2], "the active generation is intact")
		if r, ok := got[g1]; ok {
			require.False(t, acked, "retired, yet back")
			require.Equal(t, s.old, r, "the old generation is whole or gone")
		}
		if r, ok := got[g3]; ok {
			require.Empty(t, r, "no stale record surfaces")
		} else {
			require.False(t, acked)
		}
	})
}

// loadStrict is load in Strict mode: a clean state has no torn tail.
func loadStrict(t *testing.T, d ring.Doer) map[Gen][]messages.Record {
	t.Helper()
	saved := crashOpts
	crashOpts.Mode = wal.Strict
	defer func() { crashOpts = saved }()
	return load(t, d)
}
