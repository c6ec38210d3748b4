package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/internal/testhook"
	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
)

// Frames are the unit of every log ringpipe writes: the staging WAL, the hot
// segments and the manifest.
//
// # Layout
//
// A frame is a 28-byte header, the payload, and zero padding up to a
// multiple of FrameAlign (8) bytes, so every frame starts 8-aligned:
//
//	[0:4)   hdrCRC   CRC-32C over bytes [4:28)
//	[4:8)   salt     the salt of the file's life the frame was written in
//	[8:12)  length   payload bytes, at most MaxFrame
//	[12:16) dataCRC  CRC-32C over the type byte followed by the payload
//	[16]    type     non-zero (zeroed space never reads as a frame)
//	[17:20)          zero
//	[20:24) back     bytes from the first frame of this frame's batch to it
//	[24:28) batchLen bytes of the whole batch, padding included
//
// All integers are little-endian. A header is well-formed when its hdrCRC
// matches; a well-formed header belongs to the life its salt names. A frame
// is valid (in a scan with salt S) when its header is well-formed, its salt
// is S, and its length, type, payload CRC, padding and batch fields check
// out.
//
// # Batches
//
// Frames are written in batches, one write each (AppendFrame writes a batch
// of one). A batch is recovered all or nothing: ScanFrames hands a batch's
// frames to its callback only once every frame of it checked out, so a write
// cut short never leaves part of a batch behind. Every frame names its
// batch (back, batchLen), which is what tells a torn write from corruption.
//
// # Torn tail or corruption: the rule
//
// Writes are appended in order, and a write is acknowledged only once it
// and everything before it is durable. After a crash only the last write
// can therefore be damaged, and damage to it may be anywhere in it (any of
// its 512-byte sectors may be lost, zero or garbage). ScanFrames reads
// batch after batch. When a frame is bad (it is not valid, or its batch
// fields disagree with its position) at offset X inside the batch that
// starts at S, it searches every FrameAlign offset after X for a valid
// frame (of the scan's salt):
//
//   - a valid frame whose batch starts somewhere other than S means a later
//     write survived a damaged earlier one: that is corruption, in both
//     modes, reported at X;
//   - valid frames of the batch at S itself are the undamaged rest of the
//     torn write and are ignored;
//   - if nothing else is found, the batch at S is a torn tail: in
//     TolerateTornTail mode ScanFrames returns end = S and torn = true, in
//     Strict mode a *messages.CorruptionError at X.
//
// Where the log ends depends on how the file is kept:
//
//   - Zeroed files (the default): the file was preallocated with zeros and
//     never held anything else, so a header of zeros at a batch boundary
//     followed only by zeros is the clean end. Any non-zero byte after it
//     is a bad frame at that boundary (the rule above applies).
//   - Recyclable files (ScanOptions.Recyclable): the file may be reused
//     for a new life with a new salt without being zeroed, so bytes of
//     earlier lives follow the end. Their writer ends every write with an
//     end marker (AppendEndMarker: a header of zeros right after the
//     batch, overwritten by the next write). At a batch boundary, a header
//     of zeros (the marker, or never-written space), a well-formed header
//     of another salt (a recycled file's first frame of its old life), or
//     fewer than FrameHeader bytes is an end candidate. The search above
//     runs from it: no valid frame after it means the clean end, whatever
//     other bytes follow; valid frames of a batch starting there are the
//     rest of a torn write whose first header did not land (a torn tail);
//     a valid frame of any other batch is corruption.
//
// Why the recyclable rule is sound: (1) a damaged frame of the current life
// followed by a valid later batch of the current life is still found by
// the search, whether the damage left garbage, zeros or a stale-looking
// header, so it is corruption; (2) stale frames of older lives carry
// another salt, so they are never valid and never surface, and the end
// marker written with the last acknowledged batch means the scan never has
// to make sense of stale bytes (which generally start mid-frame of the old
// life) at the end; (3) a torn write of the current life over stale frames
// is a torn tail when any of its headers landed, or its first header's
// sector holds garbage; the one torn write read as a clean end is one whose
// first sector was lost or zeroed and no other header of which landed:
// nothing of it is then recognisable, and dropping it is what a torn tail
// does anyway (it was never acknowledged). Two lives of one file whose
// salts are equal would break (2); salts are 32 bits and derived from the
// life's name, so writers that recycle must keep them distinct.
//
// Consequences for writers: append at the end returned by the scan, never
// pipeline a write before the previous one is durable unless the later one
// is acknowledged only after the earlier, and zero [End, Dirty) of a torn
// tail (and make that durable) before appending over it, so that stale
// frames of the torn batch cannot later appear after a good batch.

// RecoveryMode says how a damaged last write is treated.
type RecoveryMode int

const (
	// TolerateTornTail drops a torn last batch: ScanFrames returns where
	// it began, and the caller truncates (zeroes) what follows.
	TolerateTornTail RecoveryMode = iota
	// Strict treats any bad frame as corruption.
	Strict
)

// String returns the mode's name.
func (m RecoveryMode) String() string {
	switch m {
	case TolerateTornTail:
		return "TolerateTornTail"
	case Strict:
		return "Strict"
	}
	return fmt.Sprintf("RecoveryMode(%d)", int(m))
}

// FrameType says what a frame's payload is. 0 is never a valid type, so
// zeroed space reads as "no frame".
type FrameType uint8

// Frame types used by this package. Other packages pick their own values
// for their own files; the frame layer does not interpret them.
const (
	// TypeRecord is a frame holding one EncodeRecord payload.
	TypeRecord FrameType = 1
	// TypePad is the frame layer's own: padding that Batch.PadTo adds so
	// that a batch ends on a sector boundary (O_DIRECT writers). Its
	// payload is zeros and Scan never hands it to a callback. Binaries
	// older than pad frames read one as a frame of an unknown type.
	TypePad FrameType = 0xff
)

const (
	// MaxFrame is the largest payload; a larger length is corruption.
	MaxFrame = 64 << 20
	// FrameHeader is the size of a frame header.
	FrameHeader = 28
	// FrameAlign is the alignment of every frame. Eight bytes keeps the
	// padding small while making the resynchronising search after a bad
	// frame look at only one offset in eight.
	FrameAlign = 8
	// EndMarkerSize is the size of the end marker AppendEndMarker appends.
	EndMarkerSize = FrameHeader
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// FrameSize returns the bytes a frame with an n-byte payload occupies.
func FrameSize(n int) int { return align(FrameHeader + n) }

func align(n int) int { return (n + FrameAlign - 1) &^ (FrameAlign - 1) }

// AppendFrame appends one frame (a batch of one) with salt 0 to dst.
// REQUIRES: t != 0 and len(payload) <= MaxFrame.
func AppendFrame(dst []byte, t FrameType, payload []byte) []byte {
	var b Batch
	b.Begin(dst, 0)
	b.Add(t, payload)
	return b.Finish()
}

// AppendEndMarker appends an end marker (EndMarkerSize zero bytes) to dst.
// A writer of a recyclable file (ScanOptions.Recyclable) puts one right
// after every batch, in the same write, and appends its next batch over
// it: the marker is what tells the clean end from stale bytes of the
// file's earlier lives. It is not part of the batch (the next append goes
// where the marker starts). Where fewer than EndMarkerSize bytes are left
// in the file, writing what fits is enough.
func AppendEndMarker(dst []byte) []byte { return append(dst, make([]byte, EndMarkerSize)...) }

// Batch builds a batch of frames to be written with one write and recovered
// all or nothing. The zero value is ready for Begin. A Batch is not safe
// for concurrent use.
type Batch struct {
	buf    []byte
	start  int // offset of the batch's first frame in buf
	salt   uint32
	frames []int // offset in buf of each frame's header
}

// Begin starts a batch appended to dst, whose frames will carry salt.
func (b *Batch) Begin(dst []byte, salt uint32) {
	b.buf = dst
	b.start = len(dst)
	b.salt = salt
	b.frames = b.frames[:0]
}

// Len returns the bytes the batch holds so far.
func (b *Batch) Len() int { return len(b.buf) - b.start }

// Count returns how many frames the batch holds.
func (b *Batch) Count() int { return len(b.frames) }

// Add appends a frame with a copy of payload.
// REQUIRES: t != 0 and len(payload) <= MaxFrame.
func (b *Batch) Add(t FrameType, payload []byte) {
	b.AddFunc(t, func(dst []byte) []byte { return append(dst, payload...) })
}

// AddFunc appends a frame whose payload enc appends to its argument, which
// avoids encoding the payload into a buffer of its own first.
// REQUIRES: t != 0; enc only appends, at most MaxFrame bytes.
func (b *Batch) AddFunc(t FrameType, enc func(dst []byte) []byte) {
	if t == 0 {
		panic("wal: frame type 0")
	}
	h := len(b.buf)
	b.buf = append(b.buf, make([]byte, FrameHeader)...)
	b.buf = enc(b.buf)
	n := len(b.buf) - h - FrameHeader
	if n > MaxFrame {
		panic(fmt.Sprintf("wal: frame payload of %d bytes exceeds MaxFrame", n))
	}
	hdr := b.buf[h : h+FrameHeader]
	binary.LittleEndian.PutUint32(hdr[4:], b.salt)
	binary.LittleEndian.PutUint32(hdr[8:], uint32(n))
	crc := crc32.Update(0, castagnoli, []byte{byte(t)})
	crc = crc32.Update(crc, castagnoli, b.buf[h+FrameHeader:])
	binary.LittleEndian.PutUint32(hdr[12:], crc)
	hdr[16] = byte(t)
	binary.LittleEndian.PutUint32(hdr[20:], uint32(h-b.start))
	b.buf = append(b.buf, make([]byte, align(len(b.buf))-len(b.buf))...)
	b.frames = append(b.frames, h)
}

// PadTo adds a pad frame (TypePad) so that the batch, written at offset
// base of its file, ends at a multiple of align: an O_DIRECT writer's
// batches then start and end on sector boundaries, so no write ever
// rewrites a sector that holds an earlier, acknowledged batch. A batch
// that already ends there gets nothing; a gap too small for a frame
// header is widened by align.
// REQUIRES: base is FrameAlign-aligned; align is a multiple of
// FrameAlign.
func (b *Batch) PadTo(base int64, align int) {
	if gap := padding(base+int64(b.Len()), align); gap > 0 {
		b.AddFunc(TypePad, func(dst []byte) []byte { return append(dst, make([]byte, gap-FrameHeader)...) })
	}
}

// padding returns how many bytes PadTo adds to a batch that ends at end.
func padding(end int64, align int) int {
	gap := int((int64(align) - end%int64(align)) % int64(align))
	if gap > 0 && gap < FrameHeader {
		gap += align
	}
	return gap
}

// Sector is the unit of an O_DIRECT log writer (hot segments and the WAL
// with Direct set): every batch starts and ends on a multiple of it
// (PadTo), and every write covers whole sectors from a Sector-aligned
// buffer (DirectBuf). 512 bytes is the logical block size O_DIRECT needs
// on the disks we run on, and the unit sim tears at a power loss.
const Sector = 512

// OpenDirect opens path write-only with O_DIRECT for a log writer's
// batches: fd -1 and no error when the file system refuses O_DIRECT
// (EINVAL, as tmpfs does), so that the writer stays buffered.
func OpenDirect(d ring.Doer, path string) (int32, error) {
	fd, err := ring.Open(d, path, unix.O_WRONLY|unix.O_DIRECT, 0)
	if errors.Is(err, unix.EINVAL) {
		return -1, nil
	}
	return fd, err
}

// DirectBuf copies the batch in src into *dst, a Sector-aligned buffer it
// grows as needed, zeroes it up to size and returns the first size bytes:
// the buffer of an O_DIRECT write. REQUIRES: size >= len(src).
func DirectBuf(dst *[]byte, src []byte, size int) []byte {
	if cap(*dst) < size {
		*dst = ring.AlignedBuf(max(size, 2*cap(*dst)), Sector)
	}
	b := (*dst)[:size]
	copy(b, src)
	clear(b[len(src):])
	return b
}

// Finish completes the batch (every header gets the batch length and its
// header CRC) and returns dst with the batch appended.
func (b *Batch) Finish() []byte {
	total := uint32(len(b.buf) - b.start)
	for _, h := range b.frames {
		hdr := b.buf[h : h+FrameHeader]
		binary.LittleEndian.PutUint32(hdr[24:], total)
		binary.LittleEndian.PutUint32(hdr[0:], headerCRC(hdr))
	}
	out := b.buf
	b.buf = nil
	b.frames = b.frames[:0]
	return out
}

func headerCRC(hdr []byte) uint32 { return crc32.Checksum(hdr[4:FrameHeader], castagnoli) }

// wellFormed reports whether hdr (FrameHeader bytes) is a header whose
// checksum matches, of whatever salt.
func wellFormed(hdr []byte) bool { return binary.LittleEndian.Uint32(hdr[0:]) == headerCRC(hdr) }

// frame is a decoded header.
type frame struct {
	t        FrameType
	payload  []byte
	size     int // bytes including header and padding
	back     int
	batchLen int
}

// parse checks the frame at off against salt. why is empty when it is a
// valid frame and otherwise says what is wrong. It never allocates on the
// valid path and never panics.
func parse(data []byte, off int, salt uint32) (f frame, why string) {
	if len(data)-off < FrameHeader {
		return f, "header runs past the end"
	}
	hdr := data[off : off+FrameHeader]
	if !wellFormed(hdr) {
		return f, "header checksum mismatch"
	}
	if s := binary.LittleEndian.Uint32(hdr[4:]); s != salt {
		return f, fmt.Sprintf("frame of salt %#x, not %#x", s, salt)
	}
	n := binary.LittleEndian.Uint32(hdr[8:])
	if n > MaxFrame {
		return f, fmt.Sprintf("length %d exceeds MaxFrame", n)
	}
	f.t = FrameType(hdr[16])
	if f.t == 0 || hdr[17] != 0 || hdr[18] != 0 || hdr[19] != 0 {
		return f, "bad type or flags"
	}
	f.size = align(FrameHeader + int(n))
	if len(data)-off < f.size {
		return f, "frame runs past the end"
	}
	f.payload = data[off+FrameHeader : off+FrameHeader+int(n) : off+FrameHeader+int(n)]
	crc := crc32.Update(0, castagnoli, hdr[16:17])
	crc = crc32.Update(crc, castagnoli, f.payload)
	if binary.LittleEndian.Uint32(hdr[12:]) != crc && !testhook.Planted(testhook.SkipCRC) {
		return f, "data checksum mismatch"
	}
	if !isZero(data[off+FrameHeader+int(n) : off+f.size]) {
		return f, "non-zero padding"
	}
	f.back = int(binary.LittleEndian.Uint32(hdr[20:]))
	f.batchLen = int(binary.LittleEndian.Uint32(hdr[24:]))
	if f.back%FrameAlign != 0 || f.batchLen%FrameAlign != 0 || f.back+f.size > f.batchLen {
		return f, "bad batch fields"
	}
	return f, ""
}

// FirstFrame decodes the frame at the start of data when it is valid in a
// scan with salt and starts a batch; ok is false otherwise. Only that
// frame is checked, not the rest of its batch: it suits a frame that is
// right whatever became of the frames written with it (a cut, a hot
// segment's follow frame). payload aliases data.
func FirstFrame(data []byte, salt uint32) (t FrameType, payload []byte, ok bool) {
	f, why := parse(data, 0, salt)
	if why != "" || f.back != 0 {
		return 0, nil, false
	}
	return f.t, f.payload, true
}

// HasHeader reports whether data starts with a well-formed frame header
// carrying salt: something of that life was written there, whether or
// not the frame is whole.
func HasHeader(data []byte, salt uint32) bool {
	return len(data) >= FrameHeader && wellFormed(data[:FrameHeader]) && binary.LittleEndian.Uint32(data[4:]) == salt
}

// ScanOptions configure Scan.
type ScanOptions struct {
	Path string // named in a CorruptionError
	Mode RecoveryMode
	Salt uint32 // the salt of the file's current life
	// Recyclable says the file may hold bytes of earlier lives after the
	// end, and that its writer ends every write with an end marker (see
	// AppendEndMarker and the package comment on frames). A file written
	// that way may be scanned either way while it never held anything
	// else; a recycled one only with Recyclable.
	Recyclable bool
}

// TornTail is a damaged last batch that Open dropped and zeroed
// (TolerateTornTail mode): it was never acknowledged, but recovery reports
// it.
type TornTail struct {
	Path  string // the file, relative to the engine's directory
	Off   int64  // where its whole batches end
	Bytes int64  // how many bytes from Off were zeroed
}

// ScanResult says where a scan ended.
type ScanResult struct {
	// End is the offset just past the last valid batch: where the next
	// append goes.
	End int64
	// Torn is set when a damaged last batch was dropped (TolerateTornTail).
	Torn bool
	// Dirty says what a caller that appends at End must first zero
	// durably: [End, Dirty), End when nothing. For a zeroed file it runs
	// past the last non-zero byte at or after End (rounded up to
	// FrameAlign, not past the data); for a recyclable one, past the last
	// frame of the torn batch that is still valid and at least past an
	// end marker at End (not past the data).
	Dirty int64
	// Frames is how many frames were handed to the callback.
	Frames int
}

// ScanFrames walks the frames in data (a whole file's bytes, possibly with
// preallocated zero space after the last frame), calling fn for each valid
// frame with its offset. It returns end, the offset just past the last
// valid frame (where the next append goes). A bad frame followed only by
// zeros (or that runs off the end) is a torn tail: in TolerateTornTail mode
// it returns end and torn=true; in Strict mode a *messages.CorruptionError.
// A bad frame followed by any valid frame later in the data is corruption
// in both modes: a *messages.CorruptionError naming path and the bad
// frame's offset. An error returned by fn stops the scan and is returned.
// The frames are written with salt 0; see the package comment on frames for
// the exact rule, and Scan for other salts and recyclable files.
//
// payload aliases data; fn must copy what it keeps.
func ScanFrames(path string, data []byte, mode RecoveryMode, fn func(off int64, t FrameType, payload []byte) error) (end int64, torn bool, err error) {
	r, err := Scan(data, ScanOptions{Path: path, Mode: mode}, fn)
	return r.End, r.Torn, err
}

// Scan is ScanFrames with options and a fuller result.
func Scan(data []byte, opts ScanOptions, fn func(off int64, t FrameType, payload []byte) error) (ScanResult, error) {
	var res ScanResult
	// pending holds the offsets of the frames of the batch being read;
	// they are delivered once the batch is complete.
	type pend struct {
		off int
		f   frame
	}
	var pending []pend
	start := 0 // start of the current batch == end of the last complete one
	off := 0
	for {
		if off == start {
			if end, ok := endCandidate(data, start, opts); ok {
				return resolve(data, opts, start, start, "", res)
			} else if end {
				res.End, res.Dirty = int64(start), int64(start)
				return res, nil
			}
		}
		f, why := parse(data, off, opts.Salt)
		if why == "" {
			switch {
			case f.back != off-start:
				why = fmt.Sprintf("frame says its batch starts %d bytes back, it starts %d back", f.back, off-start)
			case len(pending) > 0 && f.batchLen != pending[0].f.batchLen:
				why = "batch length differs from the batch's first frame"
			}
		}
		if why != "" {
			return resolve(data, opts, start, off, why, res)
		}
		pending = append(pending, pend{off, f})
		off += f.size
		if off-start < f.batchLen {
			continue
		}
		// The batch is complete: hand it over.
		for _, p := range pending {
			if p.f.t == TypePad {
				continue // the frame layer's own (Batch.PadTo)
			}
			if fn != nil {
				if err := fn(int64(p.off), p.f.t, p.f.payload); err != nil {
					res.End = int64(start)
					return res, err
				}
			}
			res.Frames++
		}
		pending = pending[:0]
		start = off
	}
}

// endCandidate looks at the batch boundary at off. end says the data ends
// there for certain (nothing, or only zeros, follows); candidate says the
// log may end there, subject to the search of resolve.
func endCandidate(data []byte, off int, opts ScanOptions) (end, candidate bool) {
	rest := data[off:]
	if len(rest) == 0 {
		return true, false
	}
	hdr := rest[:min(FrameHeader, len(rest))]
	if !opts.Recyclable {
		if !isZero(hdr) {
			return false, false
		}
		// The clean end, or a torn write whose first sector is lost:
		// a zeroed file holds nothing else after its end.
		return isZero(rest), false
	}
	if len(hdr) < FrameHeader || isZero(hdr) {
		return false, true
	}
	if wellFormed(hdr) && binary.LittleEndian.Uint32(hdr[4:]) != opts.Salt {
		return false, true // stale: a frame of an earlier life
	}
	return false, false
}

// resolve applies the rule of the package comment to a bad frame at bad
// inside the batch that starts at start, or (why == "") to the end
// candidate at start == bad.
func resolve(data []byte, opts ScanOptions, start, bad int, why string, res ScanResult) (ScanResult, error) {
	corrupt := func(reason string) error {
		return &messages.CorruptionError{Path: opts.Path, Offset: int64(bad), Reason: reason}
	}
	candidate := why == ""
	if candidate {
		why = "the log ends here"
	} else if !opts.Recyclable && bad == start && isZero(data[bad:min(bad+FrameHeader, len(data))]) {
		why = "no frame header"
	}
	extent := -1 // end of the last valid frame of the batch at start
	for y := align(bad + 1); y+FrameHeader <= len(data); y += FrameAlign {
		if binary.LittleEndian.Uint32(data[y+4:]) != opts.Salt || isZero(data[y:y+FrameHeader]) {
			continue // fast path: not a header of this life
		}
		f, w := parse(data, y, opts.Salt)
		if w != "" {
			continue
		}
		if y-f.back != start {
			if testhook.Planted(testhook.MidFileAsTorn) {
				break
			}
			return res, corrupt(fmt.Sprintf("%s, and a valid frame follows at offset %d", why, y))
		}
		extent = max(extent, y+f.size)
	}
	if candidate && extent < 0 {
		res.End, res.Dirty = int64(start), int64(start)
		return res, nil
	}
	if opts.Mode == Strict {
		return res, corrupt(why + strictTornSuffix)
	}
	res.End = int64(start)
	res.Torn = true
	if opts.Recyclable {
		dirty := max(extent, align(bad+FrameHeader))
		res.Dirty = int64(min(dirty, len(data)))
	} else {
		res.Dirty = int64(min(start+align(lastNonZero(data[start:])+1), len(data)))
	}
	return res, nil
}

// strictTornSuffix ends the reason of a CorruptionError for a bad last
// batch that TolerateTornTail mode would have dropped.
const strictTornSuffix = " (torn tail; Strict mode)"

// NotTorn returns err, from a Strict-mode Scan of data known to hold only
// whole batches (they were durable before a later write recorded where
// they end), with the reason of a bad last batch saying why it is not a
// torn tail: because of what. Other errors are returned as they are.
func NotTorn(err error, because string) error {
	var ce *messages.CorruptionError
	if errors.As(err, &ce) && strings.HasSuffix(ce.Reason, strictTornSuffix) {
		ce.Reason = strings.TrimSuffix(ce.Reason, strictTornSuffix) + " (not a torn tail: " + because + ")"
	}
	return err
}

// lastNonZero returns the index of the last non-zero byte of b, or -1.
func lastNonZero(b []byte) int {
	i := len(b)
	for i >= 8 && binary.LittleEndian.Uint64(b[i-8:]) == 0 {
		i -= 8
	}
	for i > 0 && b[i-1] == 0 {
		i--
	}
	return i - 1
}

// isZero reports whether b holds only zero bytes.
func isZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
