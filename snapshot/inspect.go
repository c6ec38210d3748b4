package snapshot

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/wal"
)

// ManifestReport is what a read-only scan of a directory's live manifest
// found (for `ringpipe inspect` and `ringpipe verify`).
type ManifestReport struct {
	Name   string // the live manifest's file name, as CURRENT names it
	Size   int64  // the file's size
	Result wal.ScanResult
	// Edits are the manifest's edits in order, each with the offset of
	// the frame that holds it.
	Edits []EditAt
	// State is what the valid frames replay to.
	State *State
}

// EditAt is one manifest edit and the offset of its frame.
type EditAt struct {
	Off  int64
	Edit Edit
}

// ScanManifest reads dir's live manifest as Open does but changes no file:
// a torn last frame shows in Result.Torn (Open would compact it away). The
// error wraps ErrNoManifest when dir has no CURRENT, and is a
// *messages.CorruptionError for any other damage; the report then holds
// what was read before it.
func ScanManifest(d ring.Doer, dir string) (ManifestReport, error) {
	rep := ManifestReport{State: NewState()}
	cur, err := ring.ReadFile(d, filepath.Join(dir, currentName))
	if errors.Is(err, unix.ENOENT) {
		return rep, fmt.Errorf("%w in %s", ErrNoManifest, dir)
	}
	if err != nil {
		return rep, fmt.Errorf("snapshot: read CURRENT: %w", err)
	}
	name, ok := strings.CutSuffix(string(cur), "\n")
	if _, ok2 := parseManifestName(name); !ok || !ok2 {
		return rep, &messages.CorruptionError{Path: currentName, Offset: 0,
			Reason: fmt.Sprintf("CURRENT holds %q, not a manifest name", cur)}
	}
	rep.Name = name
	num, _ := parseManifestName(name)
	data, err := ring.ReadFile(d, filepath.Join(dir, name))
	if errors.Is(err, unix.ENOENT) {
		return rep, &messages.CorruptionError{Path: name, Offset: 0, Reason: "named by CURRENT but missing"}
	}
	if err != nil {
		return rep, fmt.Errorf("snapshot: read %s: %w", name, err)
	}
	rep.Size = int64(len(data))
	rep.Result, err = wal.Scan(data, wal.ScanOptions{Path: name, Mode: wal.TolerateTornTail, Salt: uint32(num)},
		func(off int64, t wal.FrameType, payload []byte) error {
			bad := func(reason string) error {
				return &messages.CorruptionError{Path: name, Offset: off, Reason: "manifest: " + reason}
			}
			if t != frameEdits {
				return bad(fmt.Sprintf("frame type %d", t))
			}
			edits, err := DecodeEdits(payload)
			if err != nil {
				return bad(err.Error())
			}
			st, err := rep.State.With(edits...)
			if err != nil {
				return bad(err.Error())
			}
			rep.State = st
			for _, e := range edits {
				rep.Edits = append(rep.Edits, EditAt{Off: off, Edit: e})
			}
			return nil
		})
	if err != nil {
		return rep, err
	}
	if rep.Result.Frames == 0 {
		return rep, &messages.CorruptionError{Path: name, Offset: 0, Reason: "manifest holds no edits"}
	}
	return rep, nil
}
