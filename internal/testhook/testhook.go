// Package testhook holds the engine's test-only switches: planted bugs that
// the durability harness must catch (its self-check, issue 5) and the
// chaos injector that makes actors panic or fail at chosen points. Being
// internal, only this module's code and tests can set them; production
// code only reads them, and an unset hook costs one atomic load.
//
// The switches are process-wide: a test that sets one must not run in
// parallel with tests that expect the engine to be correct, and must undo
// it (every setter returns its undo).
package testhook

import (
	"fmt"
	"sync/atomic"
)

// Bug names a planted bug.
type Bug uint32

// The planted bugs. Each breaks one durability rule the engine relies on.
const (
	// AckBeforeSync acknowledges direct and staged writes when their
	// write completes, without the fdatasync linked after it.
	AckBeforeSync Bug = 1 << iota
	// SkipDirSync skips the directory sync after the rename that
	// installs a file atomically (ring.WriteFileAtomic: CURRENT, MANIFEST;
	// snapshot.WriteBlock: blocks).
	SkipDirSync
	// SkipCRC accepts a frame whose payload checksum does not match.
	SkipCRC
	// MidFileAsTorn treats damage followed by a valid later batch (mid-file
	// corruption) as a torn tail, dropping the valid batches after it.
	MidFileAsTorn
)

// Bugs lists every planted bug.
var Bugs = []Bug{AckBeforeSync, SkipDirSync, SkipCRC, MidFileAsTorn}

func (b Bug) String() string {
	switch b {
	case AckBeforeSync:
		return "ack-before-sync"
	case SkipDirSync:
		return "skip-dir-sync"
	case SkipCRC:
		return "skip-crc"
	case MidFileAsTorn:
		return "mid-file-as-torn"
	}
	return fmt.Sprintf("Bug(%d)", uint32(b))
}

var planted atomic.Uint32

// Planted reports whether b is planted.
func Planted(b Bug) bool { return planted.Load()&uint32(b) != 0 }

// Plant plants b until the returned undo is called.
func Plant(b Bug) (undo func()) {
	planted.Or(uint32(b))
	return func() { planted.And(^uint32(b)) }
}

// Injector decides what happens at a chaos point of an actor: nil to go
// on, an error for the actor to return, or it panics itself.
type Injector func(actor, point string) error

var injector atomic.Pointer[Injector]

// Chaos is called by actors at points where a failure must be survivable
// (between messages, with I/O possibly in flight). It returns the
// injector's error, or nil when no injector is set.
func Chaos(actor, point string) error {
	if f := injector.Load(); f != nil {
		return (*f)(actor, point)
	}
	return nil
}

// SetInjector installs f until the returned undo is called.
func SetInjector(f Injector) (undo func()) {
	injector.Store(&f)
	return func() { injector.CompareAndSwap(&f, nil) }
}

// RestartLimit, when positive, replaces the supervisor's MaxRestarts of
// engines started from now on: the chaos suite injects far more failures
// than a real engine would survive in one window.
var RestartLimit atomic.Int64

var noInline atomic.Bool

// SetNoInline turns inline commits off (every Put takes the write queue)
// until the returned undo is called: tests and benchmarks of the actor
// path, and comparisons of the two.
func SetNoInline(off bool) (undo func()) {
	old := noInline.Swap(off)
	return func() { noInline.Store(old) }
}

// NoInline reports whether inline commits are turned off.
func NoInline() bool { return noInline.Load() }
