package testhook

import "sync/atomic"

// manifestCompactMin, when positive, replaces the size (64 KiB) below
// which snapshot.Manifest.NeedsCompaction never says yes.
var manifestCompactMin atomic.Int64

// SetManifestCompactMin makes a manifest due for compaction from n bytes
// on (still only once it has grown to four times its size after its last
// snapshot) until the returned undo is called: a crash-point sweep or a
// unit test reaches a compaction after a few edits instead of growing the
// manifest past 64 KiB first. n <= 0 restores the default.
func SetManifestCompactMin(n int64) (undo func()) {
	old := manifestCompactMin.Swap(n)
	return func() { manifestCompactMin.Store(old) }
}

// ManifestCompactMin returns the size set by SetManifestCompactMin, or 0
// when none is set.
func ManifestCompactMin() int64 { return manifestCompactMin.Load() }
