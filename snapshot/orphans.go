package snapshot

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
)

// OrphanReport is what RemoveOrphans did in one space's block directory.
// Paths are relative to the engine directory.
type OrphanReport struct {
	Removed    int      // files removed: redundant blocks, unreadable ones and temporary files
	Unreadable []string // removed block files that could not be read (each a *messages.CorruptionError)
	Foreign    []string // files of names the engine does not write, left alone
}

// RemoveOrphans removes the files of space's block directory (under the
// engine directory dir) that the manifest does not name (named holds the
// ids of the blocks it names), once each is shown to be redundant.
//
// A block file the manifest does not name is normally a seal cut short: the
// block was written, and the crash came before the manifest edit naming it
// was durable. Its generation was then not retired (that waits for the
// edit), so every record of it is still in a hot generation, or in a block
// the manifest names (a seal that was redone under another id). held says
// whether a record is there. A block holding a record held nowhere is the
// other case: the edit naming it was durable (its generation was retired
// after it), and the manifest has lost it since — its damaged tail dropped
// as torn, or its end cut off. Removing the block would lose acknowledged
// records without a word, so RemoveOrphans reports a
// *messages.CorruptionError naming the block and removes nothing of the
// space. It does not re-adopt the block into the manifest: what else the
// lost edits said (other blocks, removals, retired WAL segments) is unknown,
// so the manifest's damage is the operator's to see, and the block stays
// for whoever repairs it.
//
// A block file that cannot be read whole is removed too, and listed in
// Unreadable for the caller to log: a crash cannot leave one (a block is
// synced before it is renamed into place), what it held cannot be known,
// and no edit can name it now. Temporary files of an interrupted block
// write are removed unread. dropped, when not nil, is the manifest frame
// Open dropped, named in the error.
func RemoveOrphans(d ring.Doer, dir string, space messages.SpaceID, named map[uint64]bool, dropped *Dropped,
	held func(messages.Record) (bool, error)) (OrphanReport, error) {
	var rep OrphanReport
	sdir := BlockDir(dir, space)
	names, err := ring.ReadDir(d, sdir)
	if errors.Is(err, unix.ENOENT) {
		return rep, nil
	}
	if err != nil {
		return rep, fmt.Errorf("snapshot: list %s: %w", sdir, err)
	}
	var remove []string
	for _, name := range names {
		if strings.HasSuffix(name, ".tmp") {
			remove = append(remove, name)
			continue
		}
		id, isBlock := parseBlockName(name)
		if isBlock && named[id] {
			continue
		}
		rel := filepath.Join("blocks", strconv.FormatUint(uint64(space), 10), name)
		if !isBlock {
			// Not a name the engine writes: not ours to judge.
			rep.Foreign = append(rep.Foreign, rel)
			continue
		}
		b, err := OpenBlock(d, filepath.Join(sdir, name))
		if errors.Is(err, messages.ErrCorrupt) {
			rep.Unreadable = append(rep.Unreadable, rel)
			remove = append(remove, name)
			continue
		}
		if err != nil {
			return rep, err
		}
		lost, err := notHeld(b, held)
		if err != nil {
			return rep, err
		}
		if lost > 0 {
			why := "a manifest edit naming it was lost after it was durable"
			if dropped != nil {
				why += fmt.Sprintf(" (the manifest's last frame, %s at offset %d, was dropped as torn)", dropped.Name, dropped.Offset)
			}
			meta := b.Meta()
			return rep, &messages.CorruptionError{Path: rel, Offset: 0,
				Reason: fmt.Sprintf("block not named by the manifest holds %d of its %d records (revisions %d..%d) nowhere else: %s",
					lost, meta.Count, meta.MinRev, meta.MaxRev, why)}
		}
		remove = append(remove, name)
	}
	for _, name := range remove {
		if err := ring.Unlink(d, filepath.Join(sdir, name)); err != nil && !errors.Is(err, unix.ENOENT) {
			return rep, fmt.Errorf("snapshot: remove orphaned block %s: %w", name, err)
		}
		rep.Removed++
	}
	if rep.Removed > 0 {
		if err := ring.SyncDir(d, sdir); err != nil {
			return rep, fmt.Errorf("snapshot: remove orphaned blocks: %w", err)
		}
	}
	return rep, nil
}

// parseBlockName returns the id of a block file's name, which must be
// spelled as BlockPath spells it.
func parseBlockName(name string) (uint64, bool) {
	digits, ok := strings.CutSuffix(name, ".blk")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseUint(digits, 10, 64)
	return id, err == nil && strconv.FormatUint(id, 10) == digits
}

// notHeld counts the records of b that held does not find elsewhere.
func notHeld(b *Block, held func(messages.Record) (bool, error)) (int, error) {
	lost := 0
	var herr error
	err := b.All(func(e Entry) bool {
		ok, err := held(e.Record)
		if err != nil {
			herr = err
			return false
		}
		if !ok {
			lost++
		}
		return true
	})
	return lost, errors.Join(err, herr)
}
