// Package wal holds ringpipe's frame format, shared by every log the engine
// writes (the staging WAL, the hot segments and the manifest), the record
// payload codec, and the staging WAL itself: segmented, preallocated logs
// that take the writes whose hot segment missed its deadline until the
// promoter has copied them into their hot segments.
//
// The types here are plain logic without goroutines and not safe for
// concurrent use; an actor owns each one. All file I/O goes through a
// ring.Doer, or through ring.Ops that the caller submits itself.
package wal
