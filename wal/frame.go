package wal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/ringpipe/ringpipe/messages"
)

// Frames are the unit of every log ringpipe writes: the staging WAL, the hot
// segments and the manifest.
//
// # Layout
//
// A frame is a 24-byte header, the payload, and zero padding up to a
// multiple of FrameAlign (8) bytes, so every frame starts 8-aligned:
//
//	[0:4)   hdrCRC   CRC-32C over bytes [4:24), seeded with the file's salt
//	[4:8)   length   payload bytes, at most MaxFrame
//	[8:12)  dataCRC  CRC-32C over the type byte followed by the payload
//	[12]    type     non-zero (zeroed space never reads as a frame)
//	[13:16)          zero
//	[16:20) back     bytes from the first frame of this frame's batch to it
//	[20:24) batchLen bytes of the whole batch, padding included
//
// All integers are little-endian.
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
// Writes are appended in order into zeroed (preallocated) space, and a
// write is acknowledged only once it and everything before it is durable.
// After a crash only the last write can therefore be damaged, and damage to
// it may be anywhere in it (any of its 512-byte sectors may be zero or
// garbage). ScanFrames reads batch after batch. When a frame is bad (its
// header or data CRC fails, its length runs off the data, or its batch
// fields disagree with its position) at offset X inside the batch that
// starts at S, it searches every FrameAlign offset after X for a valid
// frame:
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
// A header of zeros at a batch boundary followed only by zeros is the clean
// end of the log.
//
// The salt (ScanOptions.Salt) is mixed into every header CRC. A file reused
// for a new life (a recycled segment) gets a new salt, so frames left from
// its old life read as garbage, never as valid frames, and the rule above
// still holds without zeroing the file first.
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
)

const (
	// MaxFrame is the largest payload; a larger length is corruption.
	MaxFrame = 64 << 20
	// FrameHeader is the size of a frame header.
	FrameHeader = 24
	// FrameAlign is the alignment of every frame. Eight bytes keeps the
	// padding small while making the resynchronising search after a bad
	// frame look at only one offset in eight.
	FrameAlign = 8
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
	binary.LittleEndian.PutUint32(hdr[4:], uint32(n))
	crc := crc32.Update(0, castagnoli, []byte{byte(t)})
	crc = crc32.Update(crc, castagnoli, b.buf[h+FrameHeader:])
	binary.LittleEndian.PutUint32(hdr[8:], crc)
	hdr[12] = byte(t)
	binary.LittleEndian.PutUint32(hdr[16:], uint32(h-b.start))
	b.buf = append(b.buf, make([]byte, align(len(b.buf))-len(b.buf))...)
	b.frames = append(b.frames, h)
}

// Finish completes the batch (every header gets the batch length and its
// header CRC) and returns dst with the batch appended.
func (b *Batch) Finish() []byte {
	total := uint32(len(b.buf) - b.start)
	for _, h := range b.frames {
		hdr := b.buf[h : h+FrameHeader]
		binary.LittleEndian.PutUint32(hdr[20:], total)
		binary.LittleEndian.PutUint32(hdr[0:], headerCRC(b.salt, hdr))
	}
	out := b.buf
	b.buf = nil
	b.frames = b.frames[:0]
	return out
}

func headerCRC(salt uint32, hdr []byte) uint32 {
	var s [4]byte
	binary.LittleEndian.PutUint32(s[:], salt)
	crc := crc32.Update(0, castagnoli, s[:])
	return crc32.Update(crc, castagnoli, hdr[4:FrameHeader])
}

// frame is a decoded header.
type frame struct {
	t        FrameType
	payload  []byte
	size     int // bytes including header and padding
	back     int
	batchLen int
}

// parse checks the frame at off. ok is false when it is not a valid frame;
// why then says what is wrong. It never allocates and never panics.
func parse(data []byte, off int, salt uint32) (f frame, why string) {
	if len(data)-off < FrameHeader {
		return f, "header runs past the end"
	}
	hdr := data[off : off+FrameHeader]
	if binary.LittleEndian.Uint32(hdr[0:]) != headerCRC(salt, hdr) {
		return f, "header checksum mismatch"
	}
	n := binary.LittleEndian.Uint32(hdr[4:])
	if n > MaxFrame {
		return f, fmt.Sprintf("length %d exceeds MaxFrame", n)
	}
	f.t = FrameType(hdr[12])
	if f.t == 0 || hdr[13] != 0 || hdr[14] != 0 || hdr[15] != 0 {
		return f, "bad type or flags"
	}
	f.size = align(FrameHeader + int(n))
	if len(data)-off < f.size {
		return f, "frame runs past the end"
	}
	f.payload = data[off+FrameHeader : off+FrameHeader+int(n) : off+FrameHeader+int(n)]
	crc := crc32.Update(0, castagnoli, hdr[12:13])
	crc = crc32.Update(crc, castagnoli, f.payload)
	if binary.LittleEndian.Uint32(hdr[8:]) != crc {
		return f, "data checksum mismatch"
	}
	if !isZero(data[off+FrameHeader+int(n) : off+f.size]) {
		return f, "non-zero padding"
	}
	f.back = int(binary.LittleEndian.Uint32(hdr[16:]))
	f.batchLen = int(binary.LittleEndian.Uint32(hdr[20:]))
	if f.back%FrameAlign != 0 || f.batchLen%FrameAlign != 0 || f.back+f.size > f.batchLen {
		return f, "bad batch fields"
	}
	return f, ""
}

// ScanOptions configure Scan.
type ScanOptions struct {
	Path string // named in a CorruptionError
	Mode RecoveryMode
	Salt uint32 // the salt the frames were written with
}

// ScanResult says where a scan ended.
type ScanResult struct {
	// End is the offset just past the last valid batch: where the next
	// append goes.
	End int64
	// Torn is set when a damaged last batch was dropped (TolerateTornTail).
	Torn bool
	// Dirty is the offset just past the last non-zero byte at or after
	// End, rounded up to FrameAlign but not past the data (End when
	// there is none): a caller
	// that appends at End must first zero [End, Dirty) durably.
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
// the exact rule, and Scan for other salts.
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
		if off == start && isZero(data[off:min(off+FrameHeader, len(data))]) {
			// The clean end, or a torn write whose first sector is lost.
			if isZero(data[off:]) {
				res.End, res.Dirty = int64(start), int64(start)
				return res, nil
			}
			return tornOrCorrupt(data, opts, start, off, "no frame header", res)
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
			return tornOrCorrupt(data, opts, start, off, why, res)
		}
		pending = append(pending, pend{off, f})
		off += f.size
		if off-start < f.batchLen {
			continue
		}
		// The batch is complete: hand it over.
		for _, p := range pending {
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
		if off >= len(data) {
			res.End, res.Dirty = int64(start), int64(start)
			return res, nil
		}
	}
}

// tornOrCorrupt applies the rule of the package comment to a bad frame at
// bad inside the batch that starts at start.
func tornOrCorrupt(data []byte, opts ScanOptions, start, bad int, why string, res ScanResult) (ScanResult, error) {
	corrupt := func(reason string) error {
		return &messages.CorruptionError{Path: opts.Path, Offset: int64(bad), Reason: reason}
	}
	for y := align(bad + 1); y+FrameHeader <= len(data); y += FrameAlign {
		if isZero(data[y : y+FrameHeader]) {
			continue // fast path through zeroed space
		}
		f, w := parse(data, y, opts.Salt)
		if w != "" {
			continue
		}
		if y-f.back != start {
			return res, corrupt(fmt.Sprintf("%s, and a valid frame follows at offset %d", why, y))
		}
	}
	if opts.Mode == Strict {
		return res, corrupt(why + " (torn tail; Strict mode)")
	}
	res.End = int64(start)
	res.Torn = true
	res.Dirty = int64(min(start+align(lastNonZero(data[start:])+1), len(data)))
	return res, nil
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
