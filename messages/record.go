// Package messages is the vocabulary of ringpipe: the record types that
// every layer shares and, as the engine grows, every message the actors
// exchange. The root package aliases the public ones.
package messages

import (
	"errors"
	"fmt"
)

// SpaceID names a space. IDs are assigned by the manifest, starting at 1.
type SpaceID uint32

// Revision is a global, unique, increasing write number. 0 means none.
type Revision uint64

// Point is a space's coordinates, one per dimension, each < 2^Bits.
type Point []uint32

// SpaceSpec describes a space.
type SpaceSpec struct {
	Name string
	Dims int // 1..16
	Bits int // 1..32 per dimension, Dims*Bits <= 64
}

// SpaceInfo is a space and its ID.
type SpaceInfo struct {
	ID SpaceID
	SpaceSpec
}

// Validate reports whether spec is a legal space.
func (s SpaceSpec) Validate() error {
	switch {
	case s.Name == "":
		return errors.New("space: empty Name")
	case len(s.Name) > MaxSpaceName:
		return fmt.Errorf("space %q: Name longer than %d bytes", s.Name, MaxSpaceName)
	case s.Dims < 1 || s.Dims > 16:
		return fmt.Errorf("space %q: Dims %d not in 1..16", s.Name, s.Dims)
	case s.Bits < 1 || s.Bits > 32:
		return fmt.Errorf("space %q: Bits %d not in 1..32", s.Name, s.Bits)
	case s.Dims*s.Bits > 64:
		return fmt.Errorf("space %q: Dims*Bits = %d exceeds 64", s.Name, s.Dims*s.Bits)
	}
	return nil
}

// MaxSpaceName is the longest space name, in bytes.
const MaxSpaceName = 255

// CheckPoint reports whether p is a point of spec: the right number of
// coordinates, each below 2^Bits. The error wraps ErrInvalidPoint.
func (s SpaceSpec) CheckPoint(p Point) error {
	if len(p) != s.Dims {
		return fmt.Errorf("%w: %d coordinates, space %q has %d dimensions", ErrInvalidPoint, len(p), s.Name, s.Dims)
	}
	if s.Bits < 32 {
		lim := uint32(1) << s.Bits
		for i, c := range p {
			if c >= lim {
				return fmt.Errorf("%w: coordinate %d is %d, space %q allows < 2^%d", ErrInvalidPoint, i, c, s.Name, s.Bits)
			}
		}
	}
	return nil
}

// Record is one versioned write.
type Record struct {
	Space     SpaceID
	Point     Point
	Revision  Revision
	Value     []byte // nil for a tombstone
	Tombstone bool
}

// ErrInvalidPoint is the error of a point of the wrong shape.
var ErrInvalidPoint = errors.New("ringpipe: invalid point")

// ErrCorrupt is wrapped by every *CorruptionError.
var ErrCorrupt = errors.New("ringpipe: corrupt data")

// ErrSpaceExists is returned by CreateSpace for a name taken by a space of
// another spec.
var ErrSpaceExists = errors.New("ringpipe: space exists with a different spec")

// CorruptionError says which file is damaged and where.
// errors.Is(err, ErrCorrupt) holds for it.
type CorruptionError struct {
	Path   string // relative to the engine's directory
	Offset int64
	Reason string
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("ringpipe: corrupt %s at offset %d: %s", e.Path, e.Offset, e.Reason)
}

// Unwrap returns ErrCorrupt.
func (e *CorruptionError) Unwrap() error { return ErrCorrupt }
