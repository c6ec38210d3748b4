package snapshot

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
)

// TestRemoveOrphans: a block the manifest does not name is removed when
// every record of it is held elsewhere (a seal cut before its edit), and is
// corruption, with nothing removed, when one is not (a lost durable edit);
// temporary files and unreadable blocks go, foreign files stay.
func TestRemoveOrphans(t *testing.T) {
	setup := func(t *testing.T) (dir string, lone map[messages.Revision]bool) {
		d := newDoer(t)
		dir = t.TempDir()
		rng := rand.New(rand.NewPCG(1, 1))
		var rev messages.Revision
		lone = make(map[messages.Revision]bool)
		for id := uint64(1); id <= 3; id++ {
			es := genEntries(t, rng, 200, &rev)
			_, err := WriteBlock(d, dir, 1, id, es)
			require.NoError(t, err)
			if id == 3 {
				for _, e := range es[:5] {
					lone[e.Revision] = true
				}
			}
		}
		sdir := BlockDir(dir, 1)
		for name, data := range map[string]string{"4.blk": "garbage", "5.blk.tmp": "half", "0006.blk": "x", "notes": "y"} {
			require.NoError(t, os.WriteFile(filepath.Join(sdir, name), []byte(data), 0o644))
		}
		return dir, lone
	}
	named := map[uint64]bool{1: true}
	t.Run("redundant", func(t *testing.T) {
		dir, _ := setup(t)
		calls := 0
		rep, err := RemoveOrphans(newDoer(t), dir, 1, named, nil, func(messages.Record) (bool, error) {
			calls++
			return true, nil
		})
		require.NoError(t, err)
		assert.Equal(t, 400, calls, "every record of blocks 2 and 3 checked")
		assert.Equal(t, 4, rep.Removed, "blocks 2, 3 and 4 and the temporary file")
		assert.Equal(t, []string{"blocks/1/4.blk"}, rep.Unreadable)
		assert.ElementsMatch(t, []string{"blocks/1/0006.blk", "blocks/1/notes"}, rep.Foreign)
		assert.Equal(t, []string{"0006.blk", "1.blk", "notes"}, listDir(t, BlockDir(dir, 1)))
	})
	t.Run("lost edit", func(t *testing.T) {
		dir, lone := setup(t)
		before := listDir(t, BlockDir(dir, 1))
		_, err := RemoveOrphans(newDoer(t), dir, 1, named, &Dropped{Name: ManifestName(7), Offset: 1234},
			func(r messages.Record) (bool, error) { return !lone[r.Revision], nil })
		var ce *messages.CorruptionError
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, "blocks/1/3.blk", ce.Path)
		assert.Contains(t, ce.Reason, "5 of its 200 records")
		assert.Contains(t, ce.Reason, ManifestName(7)+" at offset 1234")
		assert.Equal(t, before, listDir(t, BlockDir(dir, 1)), "nothing removed")
	})
	t.Run("no directory", func(t *testing.T) {
		rep, err := RemoveOrphans(newDoer(t), t.TempDir(), 1, named, nil, nil)
		require.NoError(t, err)
		assert.Zero(t, rep.Removed)
	})
}
