package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ringpipe/ringpipe/messages"
)

// Edit is one change to the manifest's State. The set is closed: the types
// of this file. A batch of edits passed to Manifest.Apply is written as one
// frame and so is durable all or nothing.
type Edit interface {
	// apply changes the builder's private state, or returns an error
	// naming why the edit does not fit it.
	apply(b *builder) error
	encode(dst []byte) []byte
}

// SpaceCreated registers a space.
type SpaceCreated struct {
	ID   messages.SpaceID // State.NextSpaceID for a new space
	Spec messages.SpaceSpec
}

// BlockAdded adds a durable block to its space's index.
// REQUIRES: the block file is durable before the edit is applied.
type BlockAdded struct {
	Meta BlockMeta
}

// BlockRemoved drops a block from its space's index (a merge replaced it).
// The file may be removed once the edit is durable and no reader holds it.
type BlockRemoved struct {
	Space messages.SpaceID
	ID    uint64
}

// GenSealed records that hot generation Gen of Space is sealed into blocks
// (committed in the same Apply) and may be retired; MaxRev is the highest
// revision it held. Generations of a space are sealed in increasing order.
type GenSealed struct {
	Space  messages.SpaceID
	Gen    uint64
	MaxRev messages.Revision
}

// WALRetired records that every staging WAL segment up to and including
// Seq is promoted and may be (or has been) removed.
type WALRetired struct {
	Seq uint64
}

// NextIDs raises the counters from which new space and block ids are
// drawn; a counter never goes down. Compaction writes it so that ids of
// removed blocks or spaces are never reused.
type NextIDs struct {
	Space messages.SpaceID
	Block uint64
}

// Edit kinds on disk.
const (
	kindSpaceCreated byte = 1
	kindBlockAdded   byte = 2
	kindBlockRemoved byte = 3
	kindGenSealed    byte = 4
	kindWALRetired   byte = 5
	kindNextIDs      byte = 6
)

func (e SpaceCreated) encode(dst []byte) []byte {
	dst = append(dst, kindSpaceCreated)
	dst = binary.AppendUvarint(dst, uint64(e.ID))
	dst = binary.AppendUvarint(dst, uint64(e.Spec.Dims))
	dst = binary.AppendUvarint(dst, uint64(e.Spec.Bits))
	dst = binary.AppendUvarint(dst, uint64(len(e.Spec.Name)))
	return append(dst, e.Spec.Name...)
}

func (e BlockAdded) encode(dst []byte) []byte {
	m := &e.Meta
	dst = append(dst, kindBlockAdded)
	dst = binary.AppendUvarint(dst, uint64(m.Space))
	dst = binary.AppendUvarint(dst, m.ID)
	dst = binary.AppendUvarint(dst, m.Count)
	dst = binary.LittleEndian.AppendUint64(dst, m.MinKey)
	dst = binary.LittleEndian.AppendUint64(dst, m.MaxKey)
	dst = binary.AppendUvarint(dst, uint64(m.MinRev))
	dst = binary.AppendUvarint(dst, uint64(m.MaxRev))
	dst = append(dst, m.Checksum[:]...)
	return binary.AppendUvarint(dst, uint64(m.Size))
}

func (e BlockRemoved) encode(dst []byte) []byte {
	dst = append(dst, kindBlockRemoved)
	dst = binary.AppendUvarint(dst, uint64(e.Space))
	return binary.AppendUvarint(dst, e.ID)
}

func (e GenSealed) encode(dst []byte) []byte {
	dst = append(dst, kindGenSealed)
	dst = binary.AppendUvarint(dst, uint64(e.Space))
	dst = binary.AppendUvarint(dst, e.Gen)
	return binary.AppendUvarint(dst, uint64(e.MaxRev))
}

func (e WALRetired) encode(dst []byte) []byte {
	return binary.AppendUvarint(append(dst, kindWALRetired), e.Seq)
}

func (e NextIDs) encode(dst []byte) []byte {
	dst = append(dst, kindNextIDs)
	dst = binary.AppendUvarint(dst, uint64(e.Space))
	return binary.AppendUvarint(dst, e.Block)
}

// EncodeEdits returns the payload of one manifest frame holding edits: a
// uvarint count, then each edit as a kind byte and its fields (uvarints,
// fixed 8-byte keys, the 32-byte checksum, length-prefixed names).
func EncodeEdits(dst []byte, edits []Edit) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(edits)))
	for _, e := range edits {
		dst = e.encode(dst)
	}
	return dst
}

// errShortEdit is the decoder's sticky error for a payload that ends early.
var errShortEdit = errors.New("edit runs past the end of its frame")

// editReader reads fields from a payload; the first failure sticks and
// every later read returns zero.
type editReader struct {
	b   []byte
	err error
}

func (r *editReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		if n == 0 {
			r.err = errShortEdit
		} else {
			r.err = errors.New("uvarint overflows 64 bits")
		}
		return 0
	}
	r.b = r.b[n:]
	return v
}

// small reads a uvarint that must fit in bits bits.
func (r *editReader) small(bits int, what string) uint64 {
	v := r.uvarint()
	if r.err == nil && v>>uint(bits) != 0 {
		r.err = fmt.Errorf("%s %d out of range", what, v)
		return 0
	}
	return v
}

func (r *editReader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.err = errShortEdit
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *editReader) u64() uint64 {
	b := r.bytes(8)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

// DecodeEdits decodes a frame payload written by EncodeEdits. It never
// panics and allocates at most in proportion to len(payload); the error
// says what is wrong (the caller names the file and offset).
func DecodeEdits(payload []byte) ([]Edit, error) {
	r := &editReader{b: payload}
	n := r.uvarint()
	// Every edit takes at least two bytes, which bounds the allocation.
	if r.err == nil && n > uint64(len(r.b))/2 {
		return nil, fmt.Errorf("%d edits cannot fit %d bytes", n, len(r.b))
	}
	edits := make([]Edit, 0, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		kind := r.bytes(1)
		if kind == nil {
			break
		}
		var e Edit
		switch kind[0] {
		case kindSpaceCreated:
			var sc SpaceCreated
			sc.ID = messages.SpaceID(r.small(32, "space id"))
			sc.Spec.Dims = int(r.small(8, "dims"))
			sc.Spec.Bits = int(r.small(8, "bits"))
			nl := r.small(16, "name length")
			sc.Spec.Name = string(r.bytes(int(nl)))
			e = sc
		case kindBlockAdded:
			var m BlockMeta
			m.Space = messages.SpaceID(r.small(32, "space id"))
			m.ID = r.uvarint()
			m.Count = r.uvarint()
			m.MinKey = r.u64()
			m.MaxKey = r.u64()
			m.MinRev = messages.Revision(r.uvarint())
			m.MaxRev = messages.Revision(r.uvarint())
			copy(m.Checksum[:], r.bytes(checksumSize))
			m.Size = int64(r.small(63, "size"))
			e = BlockAdded{Meta: m}
		case kindBlockRemoved:
			e = BlockRemoved{Space: messages.SpaceID(r.small(32, "space id")), ID: r.uvarint()}
		case kindGenSealed:
			e = GenSealed{Space: messages.SpaceID(r.small(32, "space id")), Gen: r.uvarint(), MaxRev: messages.Revision(r.uvarint())}
		case kindWALRetired:
			e = WALRetired{Seq: r.uvarint()}
		case kindNextIDs:
			e = NextIDs{Space: messages.SpaceID(r.small(32, "space id")), Block: r.uvarint()}
		default:
			return nil, fmt.Errorf("edit %d: unknown kind %d", i, kind[0])
		}
		if r.err != nil {
			break
		}
		edits = append(edits, e)
	}
	if r.err != nil {
		return nil, fmt.Errorf("edit %d: %w", len(edits), r.err)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%d bytes after the last edit", len(r.b))
	}
	return edits, nil
}
