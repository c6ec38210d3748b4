package snapshot

import (
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

	num uint64 // the manifest's number, parsed from Name
}

// EditAt is one manifest edit and the offset of its frame.
type EditAt struct {
	Off  int64
	Edit Edit
}

// ScanManifest reads dir's live manifest as Open does in TolerateTornTail
// mode but changes no file: a torn last frame shows in Result.Torn (Open
// would drop it and rewrite the manifest). The error wraps ErrNoManifest
// when dir has no CURRENT, and is a *messages.CorruptionError for any other
// damage; the report then holds what was read before it.
func ScanManifest(d ring.Doer, dir string) (ManifestReport, error) {
	return scan(d, dir, wal.TolerateTornTail, true)
}
