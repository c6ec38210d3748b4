package snapshot

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/wal"
)

func spec(name string) messages.SpaceSpec { return messages.SpaceSpec{Name: name, Dims: 2, Bits: 16} }

// meta makes a plausible BlockMeta.
func meta(space messages.SpaceID, id uint64, minKey, maxKey uint64, minRev, maxRev messages.Revision) BlockMeta {
	m := BlockMeta{Space: space, ID: id, Count: 10, MinKey: minKey, MaxKey: maxKey, MinRev: minRev, MaxRev: maxRev, Size: 4096}
	m.Checksum[0], m.Checksum[31] = byte(id), byte(space)
	return m
}

// someEdits is a history touching every kind of edit.
func someEdits() [][]Edit {
	return [][]Edit{
		{SpaceCreated{ID: 1, Spec: spec("a")}},
		{SpaceCreated{ID: 2, Spec: messages.SpaceSpec{Name: "b", Dims: 16, Bits: 4}}},
		{BlockAdded{Meta: meta(1, 1, 10, 500, 1, 40)}, GenSealed{Space: 1, Gen: 1, MaxRev: 40}},
		{BlockAdded{Meta: meta(1, 2, 100, 900, 41, 90)}, GenSealed{Space: 1, Gen: 2, MaxRev: 90}},
		{WALRetired{Seq: 3}},
		{BlockAdded{Meta: meta(2, 3, 0, 1<<63, 91, 95)}, GenSealed{Space: 2, Gen: 7, MaxRev: 95}},
		{BlockAdded{Meta: meta(1, 4, 0, 50, 96, 99)}, BlockRemoved{Space: 1, ID: 1}},
		{NextIDs{Space: 9, Block: 20}},
		{WALRetired{Seq: 5}},
	}
}

func applyAll(t *testing.T, m *Manifest, batches [][]Edit) *State {
	t.Helper()
	var st *State
	for _, b := range batches {
		var err error
		st, err = m.Apply(b...)
		require.NoError(t, err, "%v", b)
	}
	return st
}

func checkSomeEdits(t *testing.T, st *State) {
	t.Helper()
	assert.Equal(t, []messages.SpaceInfo{{ID: 1, SpaceSpec: spec("a")}, {ID: 2, SpaceSpec: messages.SpaceSpec{Name: "b", Dims: 16, Bits: 4}}}, st.Spaces())
	info, ok := st.SpaceByName("b")
	require.True(t, ok)
	assert.Equal(t, messages.SpaceID(2), info.ID)
	_, ok = st.Space(3)
	assert.False(t, ok)
	assert.Nil(t, st.Index(3))
	ix := st.Index(1)
	require.Equal(t, 2, ix.Len())
	assert.Equal(t, []uint64{4, 2}, ids(ix.Blocks()), "newest first")
	gen, rev := st.SealedGen(1)
	assert.Equal(t, uint64(2), gen)
	assert.Equal(t, messages.Revision(90), rev)
	gen, _ = st.SealedGen(2)
	assert.Equal(t, uint64(7), gen)
	assert.Equal(t, uint64(5), st.WALRetired())
	assert.Equal(t, messages.SpaceID(9), st.NextSpaceID())
	assert.Equal(t, uint64(20), st.NextBlockID())
	assert.Equal(t, messages.Revision(99), st.MaxRevision())
}

func ids(bs []BlockMeta) []uint64 {
	out := make([]uint64, len(bs))
	for i, b := range bs {
		out[i] = b.ID
	}
	return out
}

func TestManifestCreateApplyOpen(t *testing.T) {
	d := newDoer(t)
	dir := t.TempDir()
	_, err := Open(d, dir, wal.TolerateTornTail)
	require.ErrorIs(t, err, ErrNoManifest)

	m, err := Create(d, dir)
	require.NoError(t, err)
	assert.Equal(t, messages.SpaceID(1), m.State().NextSpaceID())
	assert.Equal(t, uint64(1), m.State().NextBlockID())
	st := applyAll(t, m, someEdits())
	checkSomeEdits(t, st)
	require.NoError(t, m.Close())
	require.NoError(t, m.Close(), "Close twice")
	_, err = m.Apply(WALRetired{Seq: 9})
	assert.Error(t, err, "Apply after Close")

	_, err = Create(d, dir)
	assert.Error(t, err, "Create over an existing manifest")

	m2, err := Open(d, dir, wal.TolerateTornTail)
	require.NoError(t, err)
	checkSomeEdits(t, m2.State())
	assert.True(t, st.Equal(m2.State()))
	// Appends after recovery land after the recovered frames.
	_, err = m2.Apply(SpaceCreated{ID: m2.State().NextSpaceID(), Spec: spec("c")})
	require.NoError(t, err)
	require.NoError(t, m2.Close())
	st3, err := Load(d, dir)
	require.NoError(t, err)
	_, ok := st3.SpaceByName("c")
	assert.True(t, ok)
	assert.Equal(t, messages.SpaceID(10), st3.NextSpaceID())
	assert.Equal(t, []string{"CURRENT", "MANIFEST-000002"}, listDir(t, dir), "Open rewrote what it read into a new file")
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func TestManifestRefusesEdits(t *testing.T) {
	d := newDoer(t)
	m, err := Create(d, t.TempDir())
	require.NoError(t, err)
	defer m.Close()
	applyAll(t, m, someEdits()[:4])
	before := m.State()
	bad := [][]Edit{
		{SpaceCreated{ID: 1, Spec: spec("z")}},                                // id taken
		{SpaceCreated{ID: 5, Spec: spec("a")}},                                // name taken
		{SpaceCreated{ID: 0, Spec: spec("z")}},                                // id 0
		{SpaceCreated{ID: 5, Spec: messages.SpaceSpec{Name: "z"}}},            // invalid spec
		{BlockAdded{Meta: meta(3, 9, 0, 1, 1, 1)}},                            // unknown space
		{BlockAdded{Meta: meta(1, 2, 0, 1, 1, 1)}},                            // block exists
		{BlockAdded{Meta: meta(1, 9, 5, 1, 1, 1)}},                            // inverted keys
		{BlockAdded{Meta: BlockMeta{Space: 1, ID: 9, Size: 1}}},               // empty
		{BlockRemoved{Space: 1, ID: 77}},                                      // no such block
		{GenSealed{Space: 1, Gen: 2}},                                         // not after gen 2
		{WALRetired{Seq: 4}, WALRetired{Seq: 2}},                              // backwards
		{SpaceCreated{ID: 5, Spec: spec("z")}, BlockRemoved{Space: 5, ID: 1}}, // second edit bad: none applies
	}
	size := m.Size()
	for _, b := range bad {
		_, err := m.Apply(b...)
		assert.Error(t, err, "%v", b)
	}
	assert.NoError(t, m.Err(), "a refused edit does not fail the manifest")
	assert.Equal(t, size, m.Size(), "nothing written")
	assert.Same(t, before, m.State())
	_, ok := m.State().SpaceByName("z")
	assert.False(t, ok)
	_, err = m.Apply(WALRetired{Seq: 4})
	assert.NoError(t, err)
}

// TestStateCopyOnWrite checks that a State and a BlockIndex someone holds
// never change.
func TestStateCopyOnWrite(t *testing.T) {
	s0 := NewState()
	s1, err := s0.With(SpaceCreated{ID: 1, Spec: spec("a")}, BlockAdded{Meta: meta(1, 1, 0, 10, 1, 5)})
	require.NoError(t, err)
	ix1 := s1.Index(1)
	s2, err := s1.With(BlockAdded{Meta: meta(1, 2, 0, 10, 6, 9)}, SpaceCreated{ID: 2, Spec: spec("b")}, GenSealed{Space: 1, Gen: 1, MaxRev: 9})
	require.NoError(t, err)
	assert.Empty(t, s0.Spaces())
	assert.Len(t, s1.Spaces(), 1)
	assert.Equal(t, []uint64{1}, ids(ix1.Blocks()))
	assert.Equal(t, []uint64{1}, ids(s1.Index(1).Blocks()))
	assert.Equal(t, []uint64{2, 1}, ids(s2.Index(1).Blocks()))
	g, _ := s1.SealedGen(1)
	assert.Equal(t, uint64(0), g)
	s3, err := s2.With(BlockRemoved{Space: 1, ID: 2})
	require.NoError(t, err)
	assert.Equal(t, []uint64{2, 1}, ids(s2.Index(1).Blocks()))
	assert.Equal(t, []uint64{1}, ids(s3.Index(1).Blocks()))
	assert.Equal(t, uint64(3), s3.NextBlockID(), "a removed block's id is not reused")
	assert.False(t, s2.Equal(s3))
	s4, err := NewState().With(s3.Edits()...)
	require.NoError(t, err)
	assert.True(t, s3.Equal(s4), "Edits rebuilds the state")
}

func TestBlockIndexLookup(t *testing.T) {
	st, err := NewState().With(
		SpaceCreated{ID: 1, Spec: spec("a")},
		BlockAdded{Meta: meta(1, 1, 0, 100, 1, 10)},
		BlockAdded{Meta: meta(1, 3, 50, 150, 21, 30)},
		BlockAdded{Meta: meta(1, 2, 90, 300, 11, 20)}, // committed late, older data
		BlockAdded{Meta: meta(1, 4, 400, 500, 31, 40)},
	)
	require.NoError(t, err)
	ix := st.Index(1)
	assert.Equal(t, []uint64{4, 3, 2, 1}, ids(ix.Blocks()), "by max revision, newest first")
	assert.Equal(t, []uint64{3, 2, 1}, ids(ix.Candidates(95)))
	assert.Equal(t, []uint64{1}, ids(ix.Candidates(0)))
	assert.Empty(t, ix.Candidates(350))
	assert.Equal(t, []uint64{4}, ids(ix.Candidates(500)))
	assert.Equal(t, []uint64{4, 2}, ids(ix.Overlapping([]KeyRange{{160, 200}, {450, 460}})))
	assert.Equal(t, []uint64{3, 2, 1}, ids(ix.Overlapping([]KeyRange{{0, 0}, {100, 100}})))
	assert.Empty(t, ix.Overlapping([]KeyRange{{301, 399}, {501, 1000}}))
	assert.Empty(t, ix.Overlapping(nil))
	var nilIx *BlockIndex
	assert.Equal(t, 0, nilIx.Len())
	assert.Empty(t, nilIx.Candidates(1))
}

func TestManifestCompact(t *testing.T) {
	d := newDoer(t)
	dir := t.TempDir()
	m, err := Create(d, dir)
	require.NoError(t, err)
	st := applyAll(t, m, someEdits())
	// Grow the log with many small edits.
	for i := uint64(10); i < 3000; i++ {
		st, err = m.Apply(WALRetired{Seq: i})
		require.NoError(t, err)
	}
	before := m.Size()
	require.NoError(t, m.Compact())
	assert.Less(t, m.Size(), before/10)
	assert.Same(t, st, m.State())
	assert.Equal(t, []string{"CURRENT", "MANIFEST-000002"}, listDir(t, dir))
	_, err = m.Apply(WALRetired{Seq: 5000})
	require.NoError(t, err)
	require.NoError(t, m.Close())

	m2, err := Open(d, dir, wal.TolerateTornTail)
	require.NoError(t, err)
	defer m2.Close()
	assert.Equal(t, uint64(5000), m2.State().WALRetired())
	assert.Len(t, m2.State().Index(1).Blocks(), 2)
	assert.Equal(t, st.NextBlockID(), m2.State().NextBlockID())
}

func TestManifestNeedsCompaction(t *testing.T) {
	d := newDoer(t)
	m, err := Create(d, t.TempDir())
	require.NoError(t, err)
	defer m.Close()
	_, err = m.Apply(SpaceCreated{ID: 1, Spec: spec("a")})
	require.NoError(t, err)
	assert.False(t, m.NeedsCompaction())
	var batch []Edit
	for i := range 1000 {
		batch = append(batch, BlockAdded{Meta: meta(1, uint64(i+1), 0, 1, 1, 1)})
	}
	_, err = m.Apply(batch...)
	require.NoError(t, err)
	for i := range 1000 {
		_, err = m.Apply(BlockRemoved{Space: 1, ID: uint64(i + 1)})
		require.NoError(t, err)
	}
	require.True(t, m.NeedsCompaction(), "size %d", m.Size())
	require.NoError(t, m.Compact())
	assert.False(t, m.NeedsCompaction())
	assert.Equal(t, uint64(1001), m.State().NextBlockID())
}

// TestManifestBigSnapshot checks a snapshot that spans several frames.
func TestManifestBigSnapshot(t *testing.T) {
	d := newDoer(t)
	dir := t.TempDir()
	m, err := Create(d, dir)
	require.NoError(t, err)
	_, err = m.Apply(SpaceCreated{ID: 1, Spec: spec("a")})
	require.NoError(t, err)
	var batch []Edit
	for i := range 30000 { // ~80 bytes each: more than two snapshot frames
		batch = append(batch, BlockAdded{Meta: meta(1, uint64(i+1), uint64(i), uint64(i+5), messages.Revision(i+1), messages.Revision(i+1))})
	}
	st, err := m.Apply(batch...)
	require.NoError(t, err)
	require.NoError(t, m.Compact())
	require.NoError(t, m.Close())
	st2, err := Load(d, dir)
	require.NoError(t, err)
	assert.True(t, st.Equal(st2))
	assert.Equal(t, 30000, st2.Index(1).Len())
}

// TestManifestTornTail cuts the last frame short in several ways: Open
// drops it, compacts into a clean file and appends work again.
func TestManifestTornTail(t *testing.T) {
	for name, damage := range map[string]func(b []byte, last int) []byte{
		"truncated":   func(b []byte, last int) []byte { return b[:last+10] },
		"zeroed tail": func(b []byte, last int) []byte { clear(b[last+8:]); return b },
		"garbage":     func(b []byte, last int) []byte { b[len(b)-3] ^= 0xff; return b },
		"all zeros":   func(b []byte, last int) []byte { clear(b[last:]); return b },
	} {
		t.Run(name, func(t *testing.T) {
			d := newDoer(t)
			dir := t.TempDir()
			m, err := Create(d, dir)
			require.NoError(t, err)
			applyAll(t, m, someEdits()[:3])
			last := m.Size()
			_, err = m.Apply(SpaceCreated{ID: 7, Spec: spec("torn")})
			require.NoError(t, err)
			require.NoError(t, m.Close())
			path := filepath.Join(dir, ManifestName(1))
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path, damage(b, int(last)), 0o644))

			m2, err := Open(d, dir, wal.TolerateTornTail)
			require.NoError(t, err)
			_, ok := m2.State().SpaceByName("torn")
			assert.False(t, ok, "the torn edit is dropped")
			assert.Len(t, m2.State().Spaces(), 2)
			// Zeros read as the clean end of the log, the rest as a torn
			// frame; either way Open writes a clean file.
			assert.Equal(t, Tail{Name: ManifestName(1), End: last, Torn: name != "all zeros"}, m2.Tail())
			assert.Equal(t, []string{"CURRENT", "MANIFEST-000002"}, listDir(t, dir), "compacted into a clean file")
			_, err = m2.Apply(SpaceCreated{ID: 7, Spec: spec("again")})
			require.NoError(t, err)
			require.NoError(t, m2.Close())
			st, err := Load(d, dir)
			require.NoError(t, err)
			_, ok = st.SpaceByName("again")
			assert.True(t, ok)
		})
	}
}

// TestManifestCorruption damages what a crash cannot: every case is a
// *CorruptionError naming the file, or ErrNoManifest.
func TestManifestCorruption(t *testing.T) {
	setup := func(t *testing.T) (ring.Doer, string, []byte, int64) {
		d := newDoer(t)
		dir := t.TempDir()
		m, err := Create(d, dir)
		require.NoError(t, err)
		applyAll(t, m, someEdits()[:2])
		mid := m.Size()
		applyAll(t, m, someEdits()[2:])
		require.NoError(t, m.Close())
		b, err := os.ReadFile(filepath.Join(dir, ManifestName(1)))
		require.NoError(t, err)
		return d, dir, b, mid
	}
	corrupt := func(t *testing.T, d ring.Doer, dir, file string) {
		t.Helper()
		_, err := Open(d, dir, wal.TolerateTornTail)
		var ce *messages.CorruptionError
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, file, ce.Path)
		_, err = Load(d, dir)
		assert.ErrorIs(t, err, messages.ErrCorrupt)
	}
	t.Run("flip in the middle", func(t *testing.T) {
		d, dir, b, mid := setup(t)
		b[mid+30] ^= 1
		require.NoError(t, os.WriteFile(filepath.Join(dir, ManifestName(1)), b, 0o644))
		corrupt(t, d, dir, ManifestName(1))
	})
	t.Run("bad CURRENT", func(t *testing.T) {
		d, dir, _, _ := setup(t)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "CURRENT"), []byte("MANIFEST-x\n"), 0o644))
		corrupt(t, d, dir, "CURRENT")
	})
	t.Run("missing manifest", func(t *testing.T) {
		d, dir, _, _ := setup(t)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "CURRENT"), []byte(ManifestName(4)+"\n"), 0o644))
		corrupt(t, d, dir, ManifestName(4))
	})
	t.Run("empty manifest", func(t *testing.T) {
		d, dir, _, _ := setup(t)
		require.NoError(t, os.WriteFile(filepath.Join(dir, ManifestName(1)), nil, 0o644))
		corrupt(t, d, dir, ManifestName(1))
	})
	t.Run("edit that does not fit", func(t *testing.T) {
		d, dir, _, _ := setup(t)
		m, err := Open(d, dir, wal.TolerateTornTail)
		require.NoError(t, err)
		// Write a valid frame holding an edit the state refuses.
		m.state = NewState()
		_, err = m.Apply(SpaceCreated{ID: 1, Spec: spec("a")})
		require.NoError(t, err)
		require.NoError(t, m.Close())
		corrupt(t, d, dir, ManifestName(2))
	})
	t.Run("no CURRENT", func(t *testing.T) {
		d, dir, _, _ := setup(t)
		require.NoError(t, os.Remove(filepath.Join(dir, "CURRENT")))
		_, err := Open(d, dir, wal.TolerateTornTail)
		assert.ErrorIs(t, err, ErrNoManifest)
		assert.NotErrorIs(t, err, messages.ErrCorrupt)
	})
}

// TestManifestRemovesStale checks that Open clears what an interrupted
// compaction leaves behind.
func TestManifestRemovesStale(t *testing.T) {
	d := newDoer(t)
	dir := t.TempDir()
	m, err := Create(d, dir)
	require.NoError(t, err)
	applyAll(t, m, someEdits())
	require.NoError(t, m.Close())
	for _, n := range []string{ManifestName(2), ManifestName(3) + ".tmp", "CURRENT.tmp", "MANIFEST-000000", "other"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte("junk"), 0o644))
	}
	m2, err := Open(d, dir, wal.TolerateTornTail)
	require.NoError(t, err)
	defer m2.Close()
	checkSomeEdits(t, m2.State())
	got := listDir(t, dir)
	assert.Equal(t, []string{"CURRENT", "MANIFEST-000000", ManifestName(2), "other"}, got,
		"the junk MANIFEST-000002 replaced by the rewritten manifest, the rest of the junk removed")
}

func TestEditCodecRoundTrip(t *testing.T) {
	var all []Edit
	for _, b := range someEdits() {
		all = append(all, b...)
	}
	all = append(all, SpaceCreated{ID: 1<<32 - 1, Spec: messages.SpaceSpec{Name: string(make([]byte, 255)), Dims: 1, Bits: 32}},
		BlockAdded{Meta: BlockMeta{Space: 1, ID: ^uint64(0), Count: ^uint64(0), MinKey: ^uint64(0), MaxKey: ^uint64(0),
			MinRev: 1<<64 - 1, MaxRev: 1<<64 - 1, Size: 1<<63 - 1}})
	payload := EncodeEdits(nil, all)
	got, err := DecodeEdits(payload)
	require.NoError(t, err)
	assert.Equal(t, all, got)
	for n := range len(payload) {
		_, err := DecodeEdits(payload[:n])
		require.Error(t, err, "cut at %d", n)
	}
	_, err = DecodeEdits(append(slices.Clone(payload), 0))
	assert.Error(t, err, "trailing byte")
	_, err = DecodeEdits([]byte{1, 99})
	assert.Error(t, err, "unknown kind")
	_, err = DecodeEdits([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	assert.Error(t, err, "huge count")
	empty, err := DecodeEdits([]byte{0})
	require.NoError(t, err)
	assert.Empty(t, empty)
}

func BenchmarkManifestApply(b *testing.B) {
	d := newDoer(b)
	m, err := Create(d, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Apply(SpaceCreated{ID: 1, Spec: spec("a")}); err != nil {
		b.Fatal(err)
	}
	var id uint64
	for b.Loop() {
		id++
		if _, err := m.Apply(BlockAdded{Meta: meta(1, id, 0, 100, messages.Revision(id), messages.Revision(id))},
			GenSealed{Space: 1, Gen: id, MaxRev: messages.Revision(id)}); err != nil {
			b.Fatal(err)
		}
	}
}
