// Package messages is the vocabulary of ringpipe: the record types that
// every layer shares and, as the engine grows, every message the actors
// exchange. The root package aliases the public ones.
package messages

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
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
		return errors.New("space with an empty Name")
	case len(s.Name) > MaxSpaceName:
		return fmt.Errorf("space %.32q...: Name of %d bytes, longer than %d", s.Name, len(s.Name), MaxSpaceName)
	case s.Dims < 1 || s.Dims > 16:
		return fmt.Errorf("space %q: Dims %d not in 1..16", s.Name, s.Dims)
	case s.Bits < 1 || s.Bits > 32:
		return fmt.Errorf("space %q: Bits %d not in 1..32", s.Name, s.Bits)
	case s.Dims*s.Bits > 64:
		return fmt.Errorf("space %q: Dims*Bits = %d*%d = %d exceeds 64", s.Name, s.Dims, s.Bits, s.Dims*s.Bits)
	}
	return nil
}

// CheckNewName reports whether spec's Name is fit for a new space: valid
// UTF-8, with a character other than white space, and no control
// characters (a name is printed in logs, errors and the CLI's output,
// which such characters garble). Validate does not check it, so that a
// directory whose manifest names a space otherwise still opens.
func (s SpaceSpec) CheckNewName() error {
	switch {
	case !utf8.ValidString(s.Name):
		return fmt.Errorf("space %q: Name is not valid UTF-8", s.Name)
	case strings.TrimSpace(s.Name) == "":
		return fmt.Errorf("space %q: Name is only white space", s.Name)
	case strings.IndexFunc(s.Name, unicode.IsControl) >= 0:
		i := strings.IndexFunc(s.Name, unicode.IsControl)
		r, _ := utf8.DecodeRuneInString(s.Name[i:])
		return fmt.Errorf("space %q: Name has a control character (%U at byte %d)", s.Name, r, i)
	}
	return nil
}

// MaxSpaceName is the longest space name, in bytes.
const MaxSpaceName = 255

// CheckPoint reports whether p is a point of spec: the right number of
// coordinates, each below 2^Bits. The error wraps ErrInvalidPoint.
func (s SpaceSpec) CheckPoint(p Point) error {
	if why := s.pointProblem(p); why != "" {
		return fmt.Errorf("%w: %s of space %q: %s", ErrInvalidPoint, pointString(p), s.Name, why)
	}
	return nil
}

// CheckPoint is SpaceSpec.CheckPoint with the space's ID in the message.
func (s SpaceInfo) CheckPoint(p Point) error { return s.CheckPointAs("", p) }

// CheckPointAs is CheckPoint for a point the caller calls what (a box's
// "Min" or "Max"): the message says which point, of which space (ID and
// name), and what is wrong with it.
func (s SpaceInfo) CheckPointAs(what string, p Point) error {
	why := s.pointProblem(p)
	if why == "" {
		return nil
	}
	if what != "" {
		what += " "
	}
	return fmt.Errorf("%w: %s%s of space %d %q: %s", ErrInvalidPoint, what, pointString(p), s.ID, s.Name, why)
}

// pointProblem says what is wrong with p as a point of s, or "".
func (s SpaceSpec) pointProblem(p Point) string {
	if len(p) != s.Dims {
		return fmt.Sprintf("%d coordinates, the space has %d dimensions", len(p), s.Dims)
	}
	if s.Bits < 32 {
		lim := uint32(1) << s.Bits
		for i, c := range p {
			if c >= lim {
				return fmt.Sprintf("coordinate %d is %d, the space's %d bits allow at most %d", i, c, s.Bits, lim-1)
			}
		}
	}
	return ""
}

// pointString prints p for an error message; a point too long for any
// space is summarised, not printed.
func pointString(p Point) string {
	if len(p) > 16 {
		return fmt.Sprintf("(%d coordinates)", len(p))
	}
	return fmt.Sprint([]uint32(p))
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

// SpaceExistsError is ErrSpaceExists for name, taken by space id of spec
// have, asked for with spec asked.
func SpaceExistsError(name string, id SpaceID, have, asked SpaceSpec) error {
	return fmt.Errorf("%w: %q is space %d of %d dims × %d bits, asked for %d dims × %d bits",
		ErrSpaceExists, name, id, have.Dims, have.Bits, asked.Dims, asked.Bits)
}

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
