package wal

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ringpipe/ringpipe/messages"
)

// A record payload (the payload of a TypeRecord frame) is, little-endian:
//
//	[0:4)   space     SpaceID, non-zero
//	[4:12)  revision  non-zero
//	[12]    flags     bit 0: tombstone; the other bits zero
//	[13]    dims      number of coordinates, 1..16
//	[14:16)           zero
//	        coords    dims × uint32
//	        vlen      uint32, 0 for a tombstone
//	        value     vlen bytes; the payload ends here
const recordFixed = 16

// maxDims is the most coordinates a point may have (messages.SpaceSpec).
const maxDims = 16

// ErrBadRecord is wrapped by every error DecodeRecord returns.
var ErrBadRecord = errors.New("wal: bad record")

// RecordSize returns the payload size EncodeRecord produces for r.
func RecordSize(r messages.Record) int { return recordFixed + 4*len(r.Point) + 4 + len(r.Value) }

// EncodeRecord appends r's payload encoding to dst. A tombstone's value is
// not written.
// REQUIRES: 1 <= len(r.Point) <= 16; r.Space and r.Revision non-zero.
func EncodeRecord(dst []byte, r messages.Record) []byte {
	var fixed [recordFixed]byte
	binary.LittleEndian.PutUint32(fixed[0:], uint32(r.Space))
	binary.LittleEndian.PutUint64(fixed[4:], uint64(r.Revision))
	value := r.Value
	if r.Tombstone {
		fixed[12] = 1
		value = nil
	}
	fixed[13] = byte(len(r.Point))
	dst = append(dst, fixed[:]...)
	for _, c := range r.Point {
		dst = binary.LittleEndian.AppendUint32(dst, c)
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(value)))
	return append(dst, value...)
}

// DecodeRecord decodes a record payload. The record owns its Point and
// Value (nothing aliases payload). A tombstone has a nil Value; a live
// record with an empty value has a non-nil empty one. Every error wraps
// ErrBadRecord; the caller adds the file and offset.
func DecodeRecord(payload []byte) (messages.Record, error) {
	bad := func(format string, args ...any) (messages.Record, error) {
		return messages.Record{}, fmt.Errorf("%w: %s", ErrBadRecord, fmt.Sprintf(format, args...))
	}
	if len(payload) < recordFixed {
		return bad("%d bytes, shorter than the %d-byte header", len(payload), recordFixed)
	}
	var r messages.Record
	r.Space = messages.SpaceID(binary.LittleEndian.Uint32(payload[0:]))
	r.Revision = messages.Revision(binary.LittleEndian.Uint64(payload[4:]))
	flags, dims := payload[12], int(payload[13])
	switch {
	case r.Space == 0:
		return bad("space 0")
	case r.Revision == 0:
		return bad("revision 0")
	case flags&^1 != 0 || payload[14] != 0 || payload[15] != 0:
		return bad("unknown flags %#x", flags)
	case dims < 1 || dims > maxDims:
		return bad("%d dimensions, not in 1..%d", dims, maxDims)
	}
	r.Tombstone = flags&1 != 0
	rest := payload[recordFixed:]
	if len(rest) < 4*dims+4 {
		return bad("%d dimensions need %d bytes, %d left", dims, 4*dims+4, len(rest))
	}
	r.Point = make(messages.Point, dims)
	for i := range r.Point {
		r.Point[i] = binary.LittleEndian.Uint32(rest[4*i:])
	}
	rest = rest[4*dims:]
	vlen := binary.LittleEndian.Uint32(rest)
	rest = rest[4:]
	switch {
	case uint64(vlen) != uint64(len(rest)):
		return bad("value length %d, %d bytes left", vlen, len(rest))
	case r.Tombstone && vlen != 0:
		return bad("tombstone with a %d-byte value", vlen)
	}
	if !r.Tombstone {
		r.Value = append(make([]byte, 0, len(rest)), rest...)
	}
	return r, nil
}
