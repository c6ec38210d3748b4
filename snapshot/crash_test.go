package snapshot

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim/crashtest"
	"github.com/ringpipe/ringpipe/wal"
)

const crashDir = "/db"

// crashEvery is crashtest.Every: the shared crash-point sweep.
func crashEvery[S any](t *testing.T, setup func(t *testing.T, d ring.Doer) S, step func(d ring.Doer, s S) error,
	check func(t *testing.T, d ring.Doer, s S, acked bool)) {
	t.Helper()
	crashtest.Every(t, setup, step, check)
}

// recoverState opens the manifest as recovery does (repairing a torn tail),
// then loads it again without repair: the two must agree, and a second
// recovery must too (recovery is idempotent).
func recoverState(t *testing.T, d ring.Doer) *State {
	t.Helper()
	m, err := Open(d, crashDir, wal.TolerateTornTail)
	require.NoError(t, err)
	st := m.State()
	require.NoError(t, m.Close())
	again, err := Load(d, crashDir)
	require.NoError(t, err)
	require.True(t, st.Equal(again), "a second load agrees")
	return st
}

// base is the state every crash test starts from.
func crashBase(t *testing.T, d ring.Doer) *Manifest {
	m, err := Create(d, crashDir)
	require.NoError(t, err)
	_, err = m.Apply(SpaceCreated{ID: 1, Spec: testSpec})
	require.NoError(t, err)
	_, err = m.Apply(BlockAdded{Meta: meta(1, 1, 0, 100, 1, 10)}, GenSealed{Space: 1, Gen: 1, MaxRev: 10})
	require.NoError(t, err)
	return m
}

type sealState struct {
	m       *Manifest
	old     *State
	entries []Entry
}

// TestCrashSeal crashes the seal sequence: block write, then the manifest
// edit naming it. The manifest recovers to the old state (the block is not
// named) or the new one (named, and its file is intact and matches).
func TestCrashSeal(t *testing.T) {
	seen := map[int]int{} // outcomes by number of blocks
	defer func() { require.True(t, t.Failed() || (seen[1] > 0 && seen[2] > 0), "both outcomes seen: %v", seen) }()
	crashEvery(t, func(t *testing.T, d ring.Doer) sealState {
		m := crashBase(t, d)
		rng := rand.New(rand.NewSource(1))
		var rev messages.Revision = 10
		var recs []messages.Record
		for range 300 {
			rev++
			recs = append(recs, messages.Record{Space: 1, Point: messages.Point{uint32(rng.Intn(1 << 16)), uint32(rng.Intn(1 << 16))},
				Revision: rev, Value: fmt.Appendf(nil, "value %d", rev)})
		}
		es, err := Entries(testSpec, recs)
		require.NoError(t, err)
		return sealState{m: m, old: m.State(), entries: es}
	}, func(d ring.Doer, s sealState) error {
		id := s.old.NextBlockID()
		meta, err := WriteBlock(d, crashDir, 1, id, s.entries)
		if err != nil {
			return err
		}
		_, err = s.m.Apply(BlockAdded{Meta: meta}, GenSealed{Space: 1, Gen: 2, MaxRev: meta.MaxRev})
		return err
	}, func(t *testing.T, d ring.Doer, s sealState, acked bool) {
		st := recoverState(t, d)
		ix := st.Index(1)
		gen, _ := st.SealedGen(1)
		seen[ix.Len()]++
		switch ix.Len() {
		case 1:
			require.False(t, acked, "an acknowledged seal survives")
			require.True(t, st.Equal(s.old), "the old state, unmixed")
		case 2:
			require.Equal(t, uint64(2), gen, "block and sealed generation together")
			b, err := OpenBlockFor(d, crashDir, ix.Blocks()[0])
			require.NoError(t, err, "a named block is intact")
			require.Equal(t, len(s.entries), b.Len())
			for _, e := range s.entries {
				r, ok, err := b.Get(e.Key, e.Point)
				require.NoError(t, err)
				require.True(t, ok)
				require.Equal(t, e.Record, r)
			}
		default:
			t.Fatalf("%d blocks", ix.Len())
		}
	})
}

// TestCrashBlockWrite crashes WriteBlock alone: the block file is absent,
// or complete and valid — never a damaged file under the block's name.
func TestCrashBlockWrite(t *testing.T) { testCrashBlockWrite(t, false) }

func testCrashBlockWrite(t *testing.T, direct bool) {
	crashEvery(t, func(t *testing.T, d ring.Doer) []Entry {
		var recs []messages.Record
		for i := range 2000 { // several sectors, so tears can land inside
			recs = append(recs, messages.Record{Space: 1, Point: messages.Point{uint32(i), uint32(i * 7)}, Revision: messages.Revision(i + 1), Value: []byte("0123456789")})
		}
		es, err := Entries(testSpec, recs)
		require.NoError(t, err)
		return es
	}, func(d ring.Doer, es []Entry) error {
		_, err := WriteBlockDirect(d, crashDir, 1, 9, 4, es, direct)
		return err
	}, func(t *testing.T, d ring.Doer, es []Entry, acked bool) {
		b, err := OpenBlock(d, BlockPath(crashDir, 1, 9))
		if err != nil {
			require.False(t, acked, "an acknowledged block survives")
			require.NotErrorIs(t, err, messages.ErrCorrupt, "absent, never damaged")
			return
		}
		require.Equal(t, len(es), b.Len())
	})
}

// TestCrashManifestEdit crashes one Apply.
func TestCrashManifestEdit(t *testing.T) {
	seen := map[bool]int{}
	defer func() {
		require.True(t, t.Failed() || (seen[false] > 0 && seen[true] > 0), "both outcomes seen: %v", seen)
	}()
	crashEvery(t, func(t *testing.T, d ring.Doer) sealState {
		m := crashBase(t, d)
		return sealState{m: m, old: m.State()}
	}, func(d ring.Doer, s sealState) error {
		_, err := s.m.Apply(SpaceCreated{ID: 2, Spec: spec("new")}, WALRetired{Seq: 4})
		return err
	}, func(t *testing.T, d ring.Doer, s sealState, acked bool) {
		st := recoverState(t, d)
		_, ok := st.SpaceByName("new")
		seen[ok]++
		if ok {
			require.Equal(t, uint64(4), st.WALRetired(), "both edits of the batch")
			return
		}
		require.False(t, acked, "an acknowledged edit survives")
		require.True(t, st.Equal(s.old), "the old state, unmixed")
	})
}

// TestCrashCompact crashes the CURRENT switch: before and after it the
// state is the same, and the recovered manifest takes appends.
func TestCrashCompact(t *testing.T) {
	crashEvery(t, func(t *testing.T, d ring.Doer) sealState {
		m := crashBase(t, d)
		for i := uint64(1); i <= 20; i++ {
			_, err := m.Apply(WALRetired{Seq: i})
			require.NoError(t, err)
		}
		return sealState{m: m, old: m.State()}
	}, func(d ring.Doer, s sealState) error {
		return s.m.Compact()
	}, func(t *testing.T, d ring.Doer, s sealState, acked bool) {
		st := recoverState(t, d)
		require.True(t, st.Equal(s.old), "compaction never changes the state")
		m, err := Open(d, crashDir, wal.TolerateTornTail)
		require.NoError(t, err)
		_, err = m.Apply(WALRetired{Seq: 99})
		require.NoError(t, err)
		require.NoError(t, m.Close())
		st, err = Load(d, crashDir)
		require.NoError(t, err)
		require.Equal(t, uint64(99), st.WALRetired())
		names, err := ring.ReadDir(d, crashDir)
		require.NoError(t, err)
		require.Len(t, names, 2, "only CURRENT and the live manifest after recovery: %v", names)
	})
}

// TestCrashCreate crashes the creation of a manifest: there is none (and
// Create may run again) or an empty one.
func TestCrashCreate(t *testing.T) {
	crashEvery(t, func(t *testing.T, d ring.Doer) struct{} { return struct{}{} },
		func(d ring.Doer, _ struct{}) error {
			_, err := Create(d, crashDir)
			return err
		}, func(t *testing.T, d ring.Doer, _ struct{}, acked bool) {
			m, err := Open(d, crashDir, wal.TolerateTornTail)
			if err != nil {
				require.False(t, acked)
				require.ErrorIs(t, err, ErrNoManifest)
				m, err = Create(d, crashDir)
				require.NoError(t, err)
			}
			require.True(t, m.State().Equal(NewState()))
			require.NoError(t, m.Close())
		})
}

// TestCrashRecoveryRepair crashes the repair that Open makes of a manifest
// with a torn tail (a compaction into a clean file): the next recovery
// finds the same state, so recovery is idempotent.
func TestCrashRecoveryRepair(t *testing.T) {
	crashEvery(t, func(t *testing.T, d ring.Doer) *State {
		m := crashBase(t, d)
		st := m.State()
		// A torn last frame: garbage after the last good one, durable.
		garbage := make([]byte, 300)
		for i := range garbage {
			garbage[i] = byte(i*7 + 1)
		}
		require.NoError(t, ring.WriteSync(d, m.fd, garbage, m.Size()))
		require.NoError(t, m.Close())
		return st
	}, func(d ring.Doer, _ *State) error {
		m, err := Open(d, crashDir, wal.TolerateTornTail)
		if err != nil {
			return err
		}
		return m.Close()
	}, func(t *testing.T, d ring.Doer, old *State, acked bool) {
		st := recoverState(t, d)
		require.True(t, st.Equal(old))
		// recoverState's Open rewrote the manifest again: MANIFEST-000002
		// if the cut repair never switched CURRENT, 3 if it did.
		names, err := ring.ReadDir(d, crashDir)
		require.NoError(t, err)
		want := []string{"CURRENT", ManifestName(2)}
		if acked {
			want[1] = ManifestName(3)
		}
		if !acked && names[len(names)-1] == ManifestName(3) {
			want[1] = ManifestName(3) // the repair switched CURRENT, then failed
		}
		require.Equal(t, want, names, "repaired into a clean manifest, nothing else left")
	})
}
