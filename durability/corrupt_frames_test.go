package durability

import (
	"encoding/binary"
	"hash/crc32"
	"path"
	"testing"

	"github.com/ringpipe/ringpipe/hot"
	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/wal"
)

// The corruption suite must know, for a damaged log file, whether the
// corruptDamage lies in the middle (a batch after it is intact: corruption that
// recovery must report) or in the tail (nothing intact after it: what a
// torn last write looks like), and which records the damaged batches held.
// It reads that from the undamaged file with corruptBatches, a reader of the
// frame layout documented in wal/frame.go; it checks headers only (the
// file is known good) and is no substitute for wal.Scan.

// corruptFrame is one frame of a log file.
type corruptFrame struct {
	off, size  int64
	batchStart int64
	typ        byte
	payload    []byte
}

// corruptBatch is one batch: the frames written by one write.
type corruptBatch struct {
	start, end int64
	frames     []corruptFrame
}

// corruptCRCTable is CRC-32C, the frames' checksum.
var corruptCRCTable = crc32.MakeTable(crc32.Castagnoli)

// corruptBatches returns the batches of a log file's life with the given
// salt, in order: frames from offset 0 while headers are well-formed and
// carry the salt. A zero header (the end of a zeroed file, or a recyclable
// file's end marker) or a frame of another life ends it.
func corruptBatches(data []byte, salt uint32) []corruptBatch {
	var out []corruptBatch
	for off := int64(0); off+wal.FrameHeader <= int64(len(data)); {
		hdr := data[off : off+wal.FrameHeader]
		if binary.LittleEndian.Uint32(hdr[0:]) != crc32.Checksum(hdr[4:], corruptCRCTable) {
			break
		}
		if binary.LittleEndian.Uint32(hdr[4:]) != salt {
			break
		}
		n := int64(binary.LittleEndian.Uint32(hdr[8:]))
		size := (wal.FrameHeader + n + wal.FrameAlign - 1) &^ (wal.FrameAlign - 1)
		if off+size > int64(len(data)) {
			break
		}
		start := off - int64(binary.LittleEndian.Uint32(hdr[20:]))
		batchLen := int64(binary.LittleEndian.Uint32(hdr[24:]))
		f := corruptFrame{off: off, size: size, batchStart: start, typ: hdr[16],
			payload: data[off+wal.FrameHeader : off+wal.FrameHeader+n]}
		if len(out) == 0 || out[len(out)-1].start != start {
			out = append(out, corruptBatch{start: start, end: start + batchLen})
		}
		b := &out[len(out)-1]
		b.frames = append(b.frames, f)
		off += size
	}
	return out
}

// corruptSalt returns the salt of the current life of the log file at p
// (an absolute path of kind wal, hot or manifest). A recycled hot segment
// begins with frames of its old life, so its salt must come from its name:
// hot's Gen.salt is unexported and mirrored here, and
// TestCorruptHotSaltMirror checks the mirror against files hot writes.
// WAL segments and manifests are never recycled: their first frame's salt
// is their life's.
func corruptSalt(p string, data []byte) uint32 {
	if g, ok := hot.ParseFileName(path.Base(p)); ok {
		x := uint64(g.Space)*0x9e3779b97f4a7c15 ^ g.Gen*0xbf58476d1ce4e5b9
		return uint32(x ^ x>>32)
	}
	if len(data) < 8 {
		return 0
	}
	return binary.LittleEndian.Uint32(data[4:])
}

// records decodes the record frames of b (the WAL's and hot segments'
// type 1 frames; the manifest's frames hold edits and give none).
func (b corruptBatch) records() []messages.Record {
	var out []messages.Record
	for _, f := range b.frames {
		if wal.FrameType(f.typ) != wal.TypeRecord {
			continue
		}
		if r, err := wal.DecodeRecord(f.payload); err == nil {
			out = append(out, r)
		}
	}
	return out
}

// TestCorruptHotSaltMirror: corruptSalt's copy of hot's generation salt
// names the frames hot writes, for fresh and recycled files.
func TestCorruptHotSaltMirror(t *testing.T) {
	disk := NewSimDisk(1)
	r := disk.NewRing(ring.Options{})
	defer r.Close()
	d := ring.NewSync(r)
	opts := hot.Options{Dir: simDir + "/hot", SegmentSize: 64 << 10}
	for _, g := range []hot.Gen{{Space: 1, Gen: 1}, {Space: 1, Gen: 2}, {Space: 7, Gen: 12345}} {
		seg, err := hot.Create(d, opts, g)
		if err != nil {
			t.Fatal(err)
		}
		if err := seg.Append([]messages.Record{{Space: g.Space, Point: messages.Point{1}, Revision: messages.Revision(g.Gen), Value: []byte("v")}}); err != nil {
			t.Fatal(err)
		}
		p := opts.Dir + "/" + g.FileName()
		data, err := disk.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		bs := corruptBatches(data, corruptSalt(p, data))
		if len(bs) != 1 || len(bs[0].records()) != 1 {
			t.Fatalf("%s: %d batches with the mirrored salt, want 1 holding the record", g.FileName(), len(bs))
		}
		if g.Gen == 2 && !seg.Recycled() {
			t.Fatalf("%s is not recycled: the test does not check a recycled file", g.FileName())
		}
		if g.Gen == 1 {
			// A spare: generation 2 recycles it.
			if err := seg.Freeze(); err != nil {
				t.Fatal(err)
			}
			if err := seg.Retire(); err != nil {
				t.Fatal(err)
			}
		} else if err := seg.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
