package snapshot

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/wal"
)

// TestRemoveOrphans: a block the manifest does not name is removed when
// every record of it is held elsewhere (a seal cut before its edit), and is
// corruption, with nothing removed, when one is not (a lost durable edit);
// temporary files and unreadable blocks go, foreign files stay.
func TestRemoveOrphans(t *testing.T) {
	// setup writes blocks 1-3 of space 1, names block 1 in the manifest
	// (torn: followed by half a frame), adds junk and reads the manifest.
	setup := func(t *testing.T, torn bool) (m *Manifest, dir string, lone map[messages.Revision]bool) {
		d := newDoer(t)
		dir = t.TempDir()
		m, err := Create(d, dir)
		require.NoError(t, err)
		_, err = m.Apply(SpaceCreated{ID: 1, Spec: testSpec})
		require.NoError(t, err)
		rng := rand.New(rand.NewPCG(1, 1))
		var rev messages.Revision
		lone = make(map[messages.Revision]bool)
		for id := uint64(1); id <= 3; id++ {
			es := genEntries(t, rng, 200, &rev)
			meta, err := WriteBlockDirect(d, dir, 1, id, 10+id, es, false) // sealed from generation 10+id
			require.NoError(t, err)
			switch id {
			case 1:
				_, err = m.Apply(BlockAdded{Meta: meta})
				require.NoError(t, err)
			case 3:
				for _, e := range es[:5] {
					lone[e.Revision] = true
				}
			}
		}
		require.NoError(t, m.Close())
		if torn {
			f, err := os.OpenFile(filepath.Join(dir, ManifestName(1)), os.O_APPEND|os.O_WRONLY, 0)
			require.NoError(t, err)
			_, err = f.Write([]byte{0x20, 0, 0, 0, 0xde, 0xad})
			require.NoError(t, err)
			require.NoError(t, f.Close())
		}
		sdir := BlockDir(dir, 1)
		for name, data := range map[string]string{"4.blk": "garbage", "5.blk.tmp": "half", "0006.blk": "x", "notes": "y"} {
			require.NoError(t, os.WriteFile(filepath.Join(sdir, name), []byte(data), 0o644))
		}
		m, err = Read(d, dir, wal.TolerateTornTail)
		require.NoError(t, err)
		require.Equal(t, torn, m.Tail().Torn)
		return m, dir, lone
	}
	t.Run("redundant", func(t *testing.T) {
		m, dir, _ := setup(t, false)
		calls := 0
		rep, err := m.RemoveOrphans(1, OrphanCheck{Held: func(messages.Record) (bool, error) {
			calls++
			return true, nil
		}})
		require.NoError(t, err)
		assert.Equal(t, 400, calls, "every record of blocks 2 and 3 checked")
		assert.Equal(t, 4, rep.Removed, "blocks 2, 3 and 4 and the temporary file")
		assert.Equal(t, []string{"blocks/1/4.blk"}, rep.Unreadable)
		assert.ElementsMatch(t, []string{"blocks/1/0006.blk", "blocks/1/notes"}, rep.Foreign)
		assert.Equal(t, []string{"0006.blk", "1.blk", "notes"}, listDir(t, BlockDir(dir, 1)))
	})
	for _, torn := range []bool{false, true} {
		t.Run(fmt.Sprintf("lost edit/torn=%v", torn), func(t *testing.T) {
			m, dir, lone := setup(t, torn)
			before := listDir(t, BlockDir(dir, 1))
			_, err := m.RemoveOrphans(1, OrphanCheck{Held: func(r messages.Record) (bool, error) { return !lone[r.Revision], nil }})
			var ce *messages.CorruptionError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, ManifestName(1), ce.Path, "the damaged file is the manifest")
			assert.Equal(t, m.Tail().End, ce.Offset, "where it ends")
			assert.Contains(t, ce.Reason, "blocks/1/3.blk")
			assert.Contains(t, ce.Reason, "5 of its 200 records")
			if torn {
				assert.Contains(t, ce.Reason, "dropped as torn")
			}
			assert.Equal(t, before, listDir(t, BlockDir(dir, 1)), "nothing removed")
			assert.Equal(t, []string{"CURRENT", ManifestName(1), "blocks"}, listDir(t, dir), "the manifest as it was read")
		})
	}
	// The generation sealed into block 3 (13) is still live and lost
	// records: the seal was cut short and the generation is what was
	// damaged; it is named, not the manifest. Another live generation
	// changes nothing.
	for _, liveGen := range []uint64{13, 12} {
		t.Run(fmt.Sprintf("damaged generation/live=%d", liveGen), func(t *testing.T) {
			m, dir, lone := setup(t, false)
			before := listDir(t, BlockDir(dir, 1))
			asked := []uint64{}
			_, err := m.RemoveOrphans(1, OrphanCheck{
				Held: func(r messages.Record) (bool, error) { return !lone[r.Revision], nil },
				Live: func(gen uint64) (string, int64, bool) {
					asked = append(asked, gen)
					return "hot/g.seg", 4321, gen == liveGen
				},
			})
			var ce *messages.CorruptionError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, []uint64{13}, asked, "only the generation of the block with lost records")
			if liveGen == 13 {
				assert.Equal(t, "hot/g.seg", ce.Path, "the damaged file is the generation")
				assert.Equal(t, int64(4321), ce.Offset, "where its batches end")
				assert.Contains(t, ce.Reason, "generation 13")
			} else {
				assert.Equal(t, ManifestName(1), ce.Path, "the damaged file is the manifest")
			}
			assert.Contains(t, ce.Reason, "blocks/1/3.blk")
			assert.Contains(t, ce.Reason, "5 of its 200 records")
			assert.Equal(t, before, listDir(t, BlockDir(dir, 1)), "nothing removed")
		})
	}
	t.Run("no directory", func(t *testing.T) {
		m, err := Create(newDoer(t), t.TempDir())
		require.NoError(t, err)
		defer m.Close()
		rep, err := m.RemoveOrphans(1, OrphanCheck{})
		require.NoError(t, err)
		assert.Zero(t, rep.Removed)
	})
}
