package snapshot

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
)

// TestScanManifestAgreesWithLoad: ScanManifest lists every edit with its
// frame's offset, replays to Load's state, reports a torn tail without
// rewriting anything, and reports Load's corruption.
func TestScanManifestAgreesWithLoad(t *testing.T) {
	d := newDoer(t)
	dir := t.TempDir()
	m, err := Create(d, dir)
	require.NoError(t, err)
	applyAll(t, m, someEdits())
	require.NoError(t, m.Close())

	rep, err := ScanManifest(d, dir)
	require.NoError(t, err)
	st, err := Load(d, dir)
	require.NoError(t, err)
	assert.True(t, st.Equal(rep.State))
	checkSomeEdits(t, rep.State)
	assert.Equal(t, ManifestName(1), rep.Name)
	assert.Equal(t, m.Size(), rep.Size)
	assert.False(t, rep.Result.Torn)
	n := 0
	for _, b := range someEdits() {
		n += len(b)
	}
	// The created manifest's snapshot (NextIDs) comes first.
	require.Len(t, rep.Edits, n+1)
	assert.Equal(t, NextIDs{Space: 1, Block: 1}, rep.Edits[0].Edit)
	assert.Equal(t, someEdits()[0][0], rep.Edits[1].Edit)
	assert.Positive(t, rep.Edits[1].Off)
	assert.Equal(t, rep.Edits[3].Off, rep.Edits[4].Off, "edits applied together share a frame")
	assert.Less(t, rep.Edits[4].Off, rep.Edits[5].Off)

	path := filepath.Join(dir, ManifestName(1))
	data, err := os.ReadFile(path)
	require.NoError(t, err)

	// A torn last frame: reported, and the directory is left as it is.
	torn := append([]byte(nil), data...)
	torn[len(torn)-3] ^= 0xff
	require.NoError(t, os.WriteFile(path, torn, 0o644))
	rep, err = ScanManifest(d, dir)
	require.NoError(t, err)
	assert.True(t, rep.Result.Torn)
	assert.Len(t, rep.Edits, n, "the torn frame's edit is not listed")
	assert.Equal(t, []string{"CURRENT", ManifestName(1)}, listDir(t, dir))
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, torn, after)

	// Corruption in the middle: Load's error, and the edits before it.
	bad := append([]byte(nil), data...)
	bad[int(rep.Edits[5].Off)+30] ^= 0xff
	require.NoError(t, os.WriteFile(path, bad, 0o644))
	rep, err = ScanManifest(d, dir)
	var got, want *messages.CorruptionError
	require.ErrorAs(t, err, &got)
	_, lerr := Load(d, dir)
	require.ErrorAs(t, lerr, &want)
	assert.Equal(t, *want, *got)
	assert.Len(t, rep.Edits, 5)

	require.NoError(t, os.Remove(filepath.Join(dir, currentName)))
	_, err = ScanManifest(d, dir)
	assert.ErrorIs(t, err, ErrNoManifest)
}
