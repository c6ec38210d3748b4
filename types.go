// Package ringpipe is an embedded storage engine whose write path is an
// actor pipeline over Linux io_uring. Start an Engine on a directory, create
// spaces, write versioned records with Put and Delete, read them with Get,
// Scan and View, and Stop.
//
// README.md says how a write travels, what the durability suites prove,
// and what the benchmarks measured.
package ringpipe

import (
	"errors"
	"time"

	"github.com/ringpipe/ringpipe/messages"
)

// SpaceID names a space.
type SpaceID = messages.SpaceID

// SpaceSpec describes a space: a name, Dims (1..16) and Bits per dimension
// (1..32) with Dims*Bits <= 64.
type SpaceSpec = messages.SpaceSpec

// SpaceInfo is a space and its ID.
type SpaceInfo = messages.SpaceInfo

// Point is one coordinate per dimension, each < 2^Bits.
type Point = messages.Point

// Revision is a global, unique, increasing write number.
type Revision = messages.Revision

// Record is one versioned write; Value is nil for a tombstone.
type Record = messages.Record

// Box is an inclusive box: Min[i] <= p[i] <= Max[i] on every dimension.
type Box struct{ Min, Max Point }

// CorruptionError says which file is damaged and where.
// errors.Is(err, ErrCorrupt) holds for it.
type CorruptionError = messages.CorruptionError

// Errors; test with errors.Is.
var (
	ErrStopped       = errors.New("ringpipe: engine stopped")
	ErrFailed        = errors.New("ringpipe: engine failed: an actor exceeded its restart limit")
	ErrLocked        = errors.New("ringpipe: directory locked by another engine")
	ErrNotFound      = errors.New("ringpipe: not found")
	ErrUnknownSpace  = errors.New("ringpipe: unknown space")
	ErrSpaceExists   = messages.ErrSpaceExists
	ErrInvalidPoint  = messages.ErrInvalidPoint
	ErrValueTooLarge = errors.New("ringpipe: value too large")
	ErrCorrupt       = messages.ErrCorrupt
)

// Stats are the engine's counters and latency summaries.
type Stats struct {
	Backend        string // "uring" or "std"
	KernelVersion  string
	QueueDepth     int
	DirectWrites   uint64 // acknowledged from a hot segment
	StagedWrites   uint64 // acknowledged from the staging WAL
	Promoted       uint64 // staged records now in their hot segment (recovered ones too)
	StagedPending  int    // staged entries not yet promoted, those recovery staged again at Start included
	SealedBlocks   uint64
	Syncs          uint64 // fdatasync/fsync operations issued
	ShortIORetries uint64
	ActorRestarts  map[string]uint64 // by actor name
	WriteLatency   LatencySummary    // Put, enqueue to durable ack
	SyncLatency    LatencySummary    // one fdatasync
}

// LatencySummary summarises a latency distribution.
type LatencySummary struct {
	Count               uint64
	P50, P99, P999, Max time.Duration
}
