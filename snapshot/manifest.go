package snapshot

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/internal/testhook"
	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/wal"
)

// The manifest.
//
// MANIFEST-<n> is an append-only log of frames (package wal's format, salt
// n); each frame's payload is a batch of edits (EncodeEdits), so a batch is
// durable all or nothing. CURRENT holds the name of the live manifest and a
// newline. Compaction writes MANIFEST-<n+1> holding State.Edits, syncs it,
// switches CURRENT by write-temp, fsync, rename, directory sync, and then
// removes MANIFEST-<n>. After a crash at any point CURRENT names a complete
// manifest: the old one (still there, since it is removed only after the
// switch is durable) or the new one (durable before the switch).
//
// The same switch serves two more purposes. Recovery always ends with one
// (Read, then Rewrite): it never appends to a file it did not write
// itself, because what reads back from a manifest may be an edit whose
// fdatasync failed (in another process, or in a sealer that failed),
// present in the page cache but not on the disk. And Recover, after a failed append, switches to a new file
// holding the state from before it, instead of syncing the failed file
// again.

const (
	currentName    = "CURRENT"
	manifestPrefix = "MANIFEST-"
	// frameEdits is the wal frame type of a manifest frame ('M').
	frameEdits wal.FrameType = 0x4d
	// snapshotFrame bounds a compaction frame's payload; a snapshot larger
	// than this is split over several frames (the whole file is synced
	// before CURRENT names it, so its frames need not be one batch).
	snapshotFrame = 1 << 20
	// compactMin is the manifest size below which NeedsCompaction never
	// says yes: rewriting a small log buys nothing.
	compactMin = 64 << 10
)

// ErrNoManifest is returned (wrapped) by Open when dir has no CURRENT:
// the directory holds no engine yet, and Create is the way in.
var ErrNoManifest = errors.New("snapshot: no manifest")

// ManifestName returns the file name of manifest number n.
func ManifestName(n uint64) string { return fmt.Sprintf("%s%06d", manifestPrefix, n) }

func parseManifestName(name string) (uint64, bool) {
	digits, ok := strings.CutPrefix(name, manifestPrefix)
	if !ok || digits == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	return n, err == nil && n > 0
}

// Manifest is the live manifest of one engine directory: its State and the
// open log that edits are appended to.
//
// A Manifest is not safe for concurrent use: one owner (the sealer, or
// recovery) drives it; readers share the *State values it returns, which
// never change.
//
// Invariants:
//  1. Unless pending, state is what MANIFEST-<num> replays to, and every
//     byte of the file up to off is durable — written by this Manifest
//     and synced, never merely read back: a file another process (or a
//     failed Manifest) wrote may hold edits that read back from the page
//     cache but never reached the disk, so Rewrite writes what Read read
//     into a new file. While pending (fresh from Read) it takes no edit.
//  2. After an I/O error the Manifest is failed (err): the fate of the
//     write is unknown, so its file is never written or synced again.
//     Recover rolls state into a new file; nothing else writes.
//  3. last is the highest manifest number this Manifest has written or
//     tried to: a new file always takes a number above it, so that no
//     file is written twice under one name.
type Manifest struct {
	d       ring.Doer
	dir     string
	num     uint64 // the live MANIFEST-<num>
	last    uint64
	fd      int32 // MANIFEST-<num>, open for writing; -1 when closed
	off     int64 // where the next frame goes
	base    int64 // size of the file after its compacted snapshot
	state   *State
	err     error // sticky: set by the first failed write
	closed  bool
	pending bool // read by Read, not yet rewritten: takes no edit
	stale   bool // a failed switch may have left files: removeStale after the next
	tail    Tail
}

// Tail says where the manifest that Read (or Open) read ends: just past
// its last valid frame, and whether a damaged last frame was dropped
// there in TolerateTornTail mode (the torn write of an edit cut short by a
// crash, or damage that only looks like one: see RemoveOrphans).
type Tail struct {
	Name string // the manifest's file name, relative to the directory
	End  int64
	Torn bool
}

// Create makes a new, empty manifest in dir (which must exist) and makes
// CURRENT name it. It refuses a directory that already has a CURRENT.
func Create(d ring.Doer, dir string) (*Manifest, error) {
	if _, err := ring.Stat(d, filepath.Join(dir, currentName)); err == nil {
		return nil, fmt.Errorf("snapshot: create manifest in %s: CURRENT exists", dir)
	} else if !errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("snapshot: create manifest: %w", err)
	}
	m := &Manifest{d: d, dir: dir, fd: -1, state: NewState()}
	if err := m.switchTo(); err != nil {
		return nil, err
	}
	m.tail = Tail{Name: ManifestName(m.num), End: m.off}
	return m, nil
}

// Open recovers the manifest of dir: Read, then Rewrite.
func Open(d ring.Doer, dir string, mode wal.RecoveryMode) (*Manifest, error) {
	m, err := Read(d, dir, mode)
	if err != nil {
		return nil, err
	}
	if err := m.Rewrite(); err != nil {
		m.Close() //nolint:errcheck // the rewrite's error is the one to report
		return nil, err
	}
	return m, nil
}

// Read reads the manifest of dir: it reads CURRENT and replays the named
// manifest, changing no file. A torn last frame (an Apply cut short by a
// crash, never acknowledged) is dropped in TolerateTornTail mode (see
// Tail) and is a *messages.CorruptionError in Strict mode. Damage other
// than a torn tail is a *messages.CorruptionError naming the file
// (relative to dir) and offset. Without CURRENT the error wraps
// ErrNoManifest.
//
// The Manifest takes no edit until Rewrite, and its state must not be
// acted on (a generation retired because it says it is sealed) before
// then: what it read may be an edit whose sync failed, read back from the
// page cache (invariant 1). Meanwhile recovery may check the state
// against the rest of the directory (RemoveOrphans) with every file as the
// crash left it.
func Read(d ring.Doer, dir string, mode wal.RecoveryMode) (*Manifest, error) {
	rep, err := scan(d, dir, mode, false)
	if err != nil {
		return nil, err
	}
	return &Manifest{d: d, dir: dir, num: rep.num, last: rep.num, fd: -1, state: rep.State, pending: true,
		tail: Tail{Name: rep.Name, End: rep.Result.End, Torn: rep.Result.Torn}}, nil
}

// Rewrite makes what Read read durable and the Manifest writable: it
// writes the state into a new manifest, syncs it, switches CURRENT to it,
// and removes the manifest read, leftover manifests and temporary files of
// an interrupted compaction. It does nothing on a Manifest that is not
// fresh from Read.
func (m *Manifest) Rewrite() error {
	if !m.pending {
		return nil
	}
	if err := m.usable(); err != nil && !errors.Is(err, errPending) {
		return err
	}
	if err := m.switchTo(); err != nil {
		return err
	}
	m.pending = false
	return m.removeStale()
}

// Load reads the state of dir's manifest without changing any file (for
// inspection and verification), tolerating a torn tail.
func Load(d ring.Doer, dir string) (*State, error) {
	rep, err := scan(d, dir, wal.TolerateTornTail, false)
	if err != nil {
		return nil, err
	}
	return rep.State, nil
}

// scan reads dir's live manifest in mode; with edits it lists them in the
// report. It changes no file. On error the report holds what was read
// before it.
func scan(d ring.Doer, dir string, mode wal.RecoveryMode, edits bool) (ManifestReport, error) {
	rep := ManifestReport{State: NewState()}
	cur, err := ring.ReadFile(d, filepath.Join(dir, currentName))
	if errors.Is(err, unix.ENOENT) {
		return rep, fmt.Errorf("%w in %s", ErrNoManifest, dir)
	}
	if err != nil {
		return rep, fmt.Errorf("snapshot: read CURRENT: %w", err)
	}
	name, ok := strings.CutSuffix(string(cur), "\n")
	num, ok2 := parseManifestName(name)
	if !ok || !ok2 {
		return rep, &messages.CorruptionError{Path: currentName, Offset: 0,
			Reason: fmt.Sprintf("CURRENT holds %q, not a manifest name", cur)}
	}
	rep.Name, rep.num = name, num
	data, err := ring.ReadFile(d, filepath.Join(dir, name))
	if err != nil {
		// CURRENT names a manifest only once it is durable: a missing
		// one is damage, not a crash we can produce.
		if errors.Is(err, unix.ENOENT) {
			return rep, &messages.CorruptionError{Path: name, Offset: 0, Reason: "named by CURRENT but missing"}
		}
		return rep, fmt.Errorf("snapshot: read %s: %w", name, err)
	}
	rep.Size = int64(len(data))
	rep.Result, err = wal.Scan(data, wal.ScanOptions{Path: name, Mode: mode, Salt: uint32(num)},
		func(off int64, t wal.FrameType, payload []byte) error {
			bad := func(reason string) error {
				return &messages.CorruptionError{Path: name, Offset: off, Reason: "manifest: " + reason}
			}
			if t != frameEdits {
				return bad(fmt.Sprintf("frame type %d", t))
			}
			es, err := DecodeEdits(payload)
			if err != nil {
				return bad(err.Error())
			}
			st, err := rep.State.With(es...)
			if err != nil {
				return bad(err.Error())
			}
			rep.State = st
			if edits {
				for _, e := range es {
					rep.Edits = append(rep.Edits, EditAt{Off: off, Edit: e})
				}
			}
			return nil
		})
	if err != nil {
		return rep, err
	}
	if rep.Result.Frames == 0 {
		// Every manifest starts with its snapshot, written and synced
		// before CURRENT names it.
		return rep, &messages.CorruptionError{Path: name, Offset: 0, Reason: "manifest holds no edits"}
	}
	return rep, nil
}

func (m *Manifest) path(n uint64) string { return filepath.Join(m.dir, ManifestName(n)) }

// State returns the current state. It never changes; Apply returns a new one.
func (m *Manifest) State() *State { return m.state }

// Err returns the error that failed the Manifest, or nil.
func (m *Manifest) Err() error { return m.err }

// Tail says where the manifest read by Read ended (for Create, the new
// one).
func (m *Manifest) Tail() Tail { return m.tail }

// Apply appends edits as one frame, fdatasyncs it and returns the new state:
// the edits are durable on return, all or nothing. Edits that do not fit
// the state are refused before anything is written (the Manifest stays
// usable). An I/O error fails the Manifest: the edits may or may not be
// durable, and the state stays as it was before them (see Recover).
func (m *Manifest) Apply(edits ...Edit) (*State, error) {
	if err := m.usable(); err != nil {
		return nil, err
	}
	if len(edits) == 0 {
		return m.state, nil
	}
	n, err := m.state.With(edits...)
	if err != nil {
		return nil, err
	}
	payload := EncodeEdits(nil, edits)
	if len(payload) > wal.MaxFrame {
		return nil, fmt.Errorf("snapshot: %d edits take %d bytes, more than a frame holds", len(edits), len(payload))
	}
	var b wal.Batch
	b.Begin(nil, uint32(m.num))
	b.Add(frameEdits, payload)
	frame := b.Finish()
	if err := ring.WriteSync(m.d, m.fd, frame, m.off); err != nil {
		m.err = fmt.Errorf("snapshot: append to %s: %w", ManifestName(m.num), err)
		return nil, m.err
	}
	m.off += int64(len(frame))
	m.state = n
	return n, nil
}

// errPending refuses edits to a Manifest fresh from Read.
var errPending = errors.New("snapshot: manifest read but not rewritten yet (Rewrite)")

func (m *Manifest) usable() error {
	switch {
	case m.err != nil:
		return m.err
	case m.closed:
		return errors.New("snapshot: manifest closed")
	case m.pending:
		return errPending
	case m.fd < 0:
		return errors.New("snapshot: manifest closed")
	}
	return nil
}

// Recover makes a failed Manifest usable again without trusting its file:
// it writes the state as of before the failed write (every edit of it
// acknowledged, so durable) into a new manifest, syncs it, switches
// CURRENT to it and removes the failed one, whose last edit may or may
// not be on the disk (DESIGN.md: never sync a file again after a failed
// write or sync). The caller applies the failed edits again if it still
// wants them. A Manifest that has not failed is left as it is. On error
// the Manifest stays failed and Recover may be called again; each attempt
// writes a file of a new name.
func (m *Manifest) Recover() error {
	if m.err == nil {
		return nil
	}
	if m.closed || m.pending {
		return m.usable()
	}
	if m.fd >= 0 {
		// The failed file is abandoned; its error is m.err already (Linux
		// closes the fd whatever close reports).
		ring.Close(m.d, m.fd) //nolint:errcheck // see above
		m.fd = -1
	}
	m.err = nil
	return m.switchTo()
}

// Size returns the live manifest's size in bytes.
func (m *Manifest) Size() int64 { return m.off }

// NeedsCompaction reports whether the log has grown enough past its last
// snapshot that Compact would shrink it substantially.
func (m *Manifest) NeedsCompaction() bool {
	least := int64(compactMin)
	if n := testhook.ManifestCompactMin(); n > 0 {
		least = n
	}
	return m.off > least && m.off > 4*m.base
}

// Compact writes the state into a new manifest, switches CURRENT to it and
// removes the old one. The state does not change. An I/O error fails the
// Manifest; after a crash either manifest may be the live one, and both
// hold the same state.
func (m *Manifest) Compact() error {
	if err := m.usable(); err != nil {
		return err
	}
	return m.switchTo()
}

// switchTo writes State as a new MANIFEST-<last+1>, makes CURRENT name it,
// and then drops the previous one. On error the Manifest is failed.
func (m *Manifest) switchTo() (err error) {
	m.last++
	num := m.last
	defer func() {
		if err != nil {
			err = fmt.Errorf("snapshot: write %s: %w", ManifestName(num), err)
			m.err = err
			// A failed attempt may leave its file (or CURRENT's .tmp)
			// behind: the next switch that succeeds removes them.
			m.stale = true
		}
	}()
	var data []byte
	var b wal.Batch
	edits := m.state.Edits()
	for len(edits) > 0 {
		// One batch per frame: frames are bounded, and the file is synced
		// whole before anything names it.
		b.Begin(data, uint32(num))
		k, size := 0, 0
		for k < len(edits) {
			n := len(edits[k].encode(nil))
			if k > 0 && size+n > snapshotFrame {
				break
			}
			size += n
			k++
		}
		b.Add(frameEdits, EncodeEdits(nil, edits[:k]))
		data = b.Finish()
		edits = edits[k:]
	}
	// The new file: written, fsynced, renamed into place, directory synced.
	if err := ring.WriteFileAtomic(m.d, m.path(num), data); err != nil {
		return err
	}
	if err := ring.WriteFileAtomic(m.d, filepath.Join(m.dir, currentName), []byte(ManifestName(num)+"\n")); err != nil {
		return err
	}
	// CURRENT names num: it is the live manifest from here on, whatever
	// fails next.
	old, oldFD := m.num, m.fd
	m.num, m.fd, m.off, m.base = num, -1, int64(len(data)), int64(len(data))
	if oldFD >= 0 {
		if err := ring.Close(m.d, oldFD); err != nil {
			return err
		}
	}
	fd, err := ring.Open(m.d, m.path(num), unix.O_WRONLY, 0)
	if err != nil {
		return err
	}
	m.fd = fd
	if old != 0 {
		// The old manifest is garbage now; a crash before the unlink is
		// durable leaves it for the next Open to remove.
		if err := ring.Unlink(m.d, m.path(old)); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	if m.stale && m.removeStale() == nil {
		// Best effort: what stays is removed by a later switch or the
		// next Open. Before, the files of failed attempts stayed for the
		// engine's life (files audit: a disk full for 300 ms left
		// MANIFEST-N.tmp files and old manifests).
		m.stale = false
	}
	return nil
}

// removeStale removes manifests other than the live one and temporary
// files left by an interrupted compaction or CURRENT switch.
func (m *Manifest) removeStale() error {
	names, err := ring.ReadDir(m.d, m.dir)
	if err != nil {
		return fmt.Errorf("snapshot: list %s: %w", m.dir, err)
	}
	removed := false
	for _, name := range names {
		base, tmp := strings.CutSuffix(name, ".tmp")
		n, ok := parseManifestName(base)
		if !(ok && (n != m.num || tmp)) && !(tmp && base == currentName) {
			continue
		}
		if err := ring.Unlink(m.d, filepath.Join(m.dir, name)); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("snapshot: remove %s: %w", name, err)
		}
		removed = true
	}
	if removed {
		if err := ring.SyncDir(m.d, m.dir); err != nil {
			return fmt.Errorf("snapshot: remove stale manifests: %w", err)
		}
	}
	return nil
}

// Close closes the manifest's file. The state stays readable; Apply fails.
// It is idempotent.
func (m *Manifest) Close() error {
	m.closed = true
	if m.fd < 0 {
		return nil
	}
	fd := m.fd
	m.fd = -1
	if err := ring.Close(m.d, fd); err != nil {
		return fmt.Errorf("snapshot: close manifest: %w", err)
	}
	return nil
}
