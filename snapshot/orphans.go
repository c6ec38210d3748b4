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

// OrphanCheck is what RemoveOrphans asks recovery about one space.
type OrphanCheck struct {
	// Held says whether a record is in a live hot generation or in a
	// block the manifest names. Nil: nowhere.
	Held func(messages.Record) (bool, error)
	// Live says whether the space's hot generation gen is live (recovery
	// found its file and the manifest does not seal it): if so, rel is
	// its path relative to the engine directory and end is where its
	// valid batches end. Nil: none is.
	Live func(gen uint64) (rel string, end int64, ok bool)
}

// RemoveOrphans removes the files of space's block directory that the
// manifest does not name, once each is shown to be redundant. Recovery
// calls it between Read and Rewrite, so that what it reports still names
// the manifest as it was read.
//
// A block file the manifest does not name is normally a seal cut short: the
// block was written, and the crash came before the manifest edit naming it
// was durable. Its generation was then not retired (that waits for the
// edit), so every record of it is still in a hot generation, or in a block
// the manifest names (a seal that was redone under another id).
// check.Held says whether a record is there. A block holding a record held
// nowhere is damage, and which file is damaged depends on whether the
// generation sealed into the block (Block.Gen) is still live:
//
//   - It is (check.Live): the seal was cut short, and the generation has
//     lost records it held durably — its last batches damaged, and dropped
//     as a torn tail or cut off at a batch boundary. RemoveOrphans reports
//     a *messages.CorruptionError naming the generation's file and where
//     its batches end.
//   - It is not: the edit naming the block was durable (the generation
//     was retired after it), and the manifest has lost it since — its
//     damaged last frame dropped as torn, or its end cut off at a frame
//     boundary. RemoveOrphans reports a *messages.CorruptionError naming
//     the manifest and where it ends (Tail), with the block in the reason.
//
// Either way it removes nothing of the space: removing the block would
// lose acknowledged records without a word. Nor does it re-adopt the
// block: what else a lost edit said (other blocks, removals, retired WAL
// segments, spaces) is unknown, so the damage is the operator's to see,
// and the block stays for whoever repairs the directory.
//
// A block file that cannot be read whole is removed too, and listed in
// Unreadable for the caller to log: a crash cannot leave one (a block is
// synced before it is renamed into place), what it held cannot be known,
// and no edit can name it now. Temporary files of an interrupted block
// write are removed unread; files of other names are left alone.
func (m *Manifest) RemoveOrphans(space messages.SpaceID, check OrphanCheck) (OrphanReport, error) {
	rep, remove, err := checkOrphans(m.d, m.dir, m.state, m.LostEdit, space, check)
	if err != nil {
		return rep, err
	}
	d, sdir := m.d, BlockDir(m.dir, space)
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

// CheckOrphans is RemoveOrphans's verdict on the manifest ScanManifest
// read (rep), changing nothing: the names (in space's block directory)
// that RemoveOrphans would remove, the report without Removed, and the
// *messages.CorruptionError it would return. ringpipe verify tells damage
// from what recovery repairs by it.
func CheckOrphans(d ring.Doer, dir string, rep ManifestReport, space messages.SpaceID, check OrphanCheck) (OrphanReport, []string, error) {
	tail := Tail{Name: rep.Name, End: rep.Result.End, Torn: rep.Result.Torn}
	return checkOrphans(d, dir, rep.State, func(what string) error { return lostEdit(tail, what) }, space, check)
}

// checkOrphans is the analysis of RemoveOrphans: it returns what to
// remove, or the damage that forbids removing anything.
func checkOrphans(d ring.Doer, dir string, state *State, lostEditFn func(string) error, space messages.SpaceID,
	check OrphanCheck) (OrphanReport, []string, error) {
	var rep OrphanReport
	named := make(map[uint64]bool)
	for _, b := range state.Index(space).Blocks() {
		named[b.ID] = true
	}
	sdir := BlockDir(dir, space)
	names, err := ring.ReadDir(d, sdir)
	if errors.Is(err, unix.ENOENT) {
		return rep, nil, nil
	}
	if err != nil {
		return rep, nil, fmt.Errorf("snapshot: list %s: %w", sdir, err)
	}
	var remove []string
	for _, name := range names {
		if base, ok := strings.CutSuffix(name, ".tmp"); ok {
			if _, isBlock := parseBlockName(base); isBlock {
				// A block write cut short (writeBlock's <id>.blk.tmp).
				remove = append(remove, name)
			} else {
				// Not a name the engine writes: a user's file (or
				// directory) is not ours to delete. Before, any *.tmp
				// was removed, and a directory so named failed every
				// Start (files audit).
				rep.Foreign = append(rep.Foreign, filepath.Join("blocks", strconv.FormatUint(uint64(space), 10), name))
			}
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
			return rep, nil, err
		}
		lost, err := notHeld(b, check.Held)
		if err != nil {
			return rep, nil, err
		}
		if lost > 0 {
			meta := b.Meta()
			if check.Live != nil && b.Gen() != 0 {
				if hot, end, ok := check.Live(b.Gen()); ok {
					return rep, nil, &messages.CorruptionError{Path: hot, Offset: end, Reason: fmt.Sprintf(
						"hot: generation %d's batches end here, but %s, sealed from it by a seal cut short "+
							"(the manifest does not name the block), holds %d of its %d records (revisions %d..%d) "+
							"that the generation no longer does: the generation was damaged after they were durable",
						b.Gen(), rel, lost, meta.Count, meta.MinRev, meta.MaxRev)}
				}
			}
			return rep, nil, lostEditFn(fmt.Sprintf("naming %s: the block holds %d of its %d records (revisions %d..%d) "+
				"nowhere else, so the edit was durable once (its generation was retired after it)",
				rel, lost, meta.Count, meta.MinRev, meta.MaxRev))
		}
		remove = append(remove, name)
	}
	return rep, remove, nil
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

// notHeld counts the records of b that held does not find elsewhere (nil:
// none is found).
func notHeld(b *Block, held func(messages.Record) (bool, error)) (int, error) {
	if held == nil {
		return int(b.Meta().Count), nil
	}
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

// LostEdit reports that the rest of the directory proves the manifest held
// an edit, durable once, that it holds no more (what is said
// "an edit <what> was lost"): a *messages.CorruptionError naming the
// manifest as Read found it and where it ends, where the edit should be.
func (m *Manifest) LostEdit(what string) error { return lostEdit(m.tail, what) }

func lostEdit(tail Tail, what string) error {
	reason := "manifest: an edit " + what + " was lost"
	if tail.Torn {
		reason += "; the manifest's damaged last frame, here, was dropped as torn"
	} else {
		reason += "; the manifest ends here"
	}
	return &messages.CorruptionError{Path: tail.Name, Offset: tail.End, Reason: reason}
}
