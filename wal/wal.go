package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
)

// DefaultSegmentSize is the default preallocated size of a WAL segment
// (Config.Preallocate's default): large enough that rolling, which costs a
// create, a fallocate and two syncs, is rare.
const DefaultSegmentSize = 64 << 20

// Options configure Open.
type Options struct {
	// Dir is the WAL's directory (the engine's <dir>/wal). It is created
	// if missing.
	Dir string
	// Name is Dir as CorruptionErrors name it, relative to the engine's
	// directory; default "wal".
	Name string
	// SegmentSize is how many bytes each segment is preallocated to and
	// may hold; default DefaultSegmentSize. A batch larger than this is
	// refused.
	SegmentSize int64
	// Mode says how a torn tail is treated on Open.
	Mode RecoveryMode
	// Direct writes batches through a second fd of the active segment
	// opened with O_DIRECT, each batch padded (Batch.PadTo) to end on a
	// Sector, so that every write covers whole sectors none of which holds
	// an acknowledged batch. SegmentSize must be a multiple of Sector. A
	// segment whose end is off a sector (its cut, or a reopened segment)
	// takes one buffered batch first; where the file system refuses
	// O_DIRECT (EINVAL) every batch is buffered.
	Direct bool
}

// SegmentInfo describes one segment.
type SegmentInfo struct {
	Seq     uint64
	Records int
	MinRev  messages.Revision // 0 when the segment holds no record
	MaxRev  messages.Revision
	Active  bool // the segment appends go to
}

// Pending is a batch prepared for writing: the caller performs Ops, then
// reports the outcome with Committed or Failed. The buffer inside Write
// belongs to the WAL and must not be changed.
type Pending struct {
	Write ring.Op // writes the batch at its offset in the active segment, DSync
	Seq   uint64  // the segment written
	Off   int64   // where the batch starts in it
	Len   int     // bytes of the batch
	Count int     // records in the batch
	// MinRev and MaxRev are the batch's lowest and highest revisions.
	MinRev, MaxRev messages.Revision
}

// Ops returns the batch's operations, ready for Submit or Doer.Do: one
// write with DSync (RWF_DSYNC), durable on completion, as a write linked to
// an fdatasync would be but in one kernel hand-off. An error from it may be
// the sync's: the WAL is then failed (invariant 4).
func (p *Pending) Ops() []ring.Op { return []ring.Op{p.Write} }

// WAL is the staging write-ahead log: a directory of segments <seq>.log,
// each preallocated, appended to in batches, replayed in order on Open and
// retired (deleted) once every entry in it has been promoted.
//
// Invariants:
//  1. At most one batch is in flight (prepared and not yet Committed or
//     Failed). Batches are written in order into zeroed space, so after a
//     crash only the last batch of the last segment can be torn — which is
//     what lets replay tell a torn tail from corruption (see frame.go).
//  2. A segment other than the last is complete: the WAL rolls to a new
//     segment only when no batch is in flight, and every segment but the
//     first starts with a cut (see TypeCut) naming where the one before
//     it ended, so that recovery can tell a complete segment from one
//     that lost its last batches.
//  3. A segment is retired only when its highest revision is at or below
//     the caller's promotion watermark; the active segment is never
//     retired.
//  4. After a write or sync error the WAL is failed and refuses every
//     later append: the data's fate is unknown until it is reopened.
//
// A WAL is not safe for concurrent use: one actor owns it.
type WAL struct {
	d    ring.Doer // blocking I/O: roll, retire, close, Append
	opts Options

	segs    []SegmentInfo // oldest first; the last is the active one (when fd >= 0)
	lastSeq uint64        // the highest segment number Open found or roll made
	fd      int32         // the active segment's fd, -1 when there is none yet
	dfd     int32         // its O_DIRECT fd (Options.Direct), else -1
	salt    uint32        // the active segment's salt
	off     int64         // where the next batch goes in the active segment
	pending *Pending      // the batch in flight, if any
	failed  error         // sticky, see invariant 4
	closed  bool

	buf   []byte // encodes batches; reused once the previous batch is done
	dbuf  []byte // a direct write's copy of buf (DirectBuf)
	batch Batch

	torn []TornTail // what Open dropped
}

// SegmentName returns the file name of segment seq: zero-padded so that
// names sort in sequence order.
func SegmentName(seq uint64) string { return fmt.Sprintf("%020d.log", seq) }

// parseSegmentName returns the sequence number of a segment file name.
func parseSegmentName(name string) (uint64, bool) {
	s, ok := strings.CutSuffix(name, ".log")
	if !ok || len(s) != 20 {
		return 0, false
	}
	seq, err := strconv.ParseUint(s, 10, 64)
	return seq, err == nil && seq > 0
}

// segmentSalt is the salt of segment seq's frames, so that frames of one
// segment never read as valid in another file.
func segmentSalt(seq uint64) uint32 { return uint32(seq) ^ uint32(seq>>32) ^ 0x57a1 }

// TypeCut is the frame every segment but the first starts with, alone in
// its batch and durable before any batch goes into the segment. Its
// payload (two little-endian uint64s) names the durable end of the log
// when the segment began: segment Seq, offset End.
//
// A roll (the active segment is full) writes a cut naming the segment it
// leaves and where its last batch ended. Restart writes one after a failed
// batch, naming the end before the failure: recovery then reads nothing of
// segment Seq past End and nothing of the segments between Seq and the
// cut's own, which is where the failed batch went (a failed fdatasync
// leaves the page cache and the disk disagreeing about those bytes, so
// they may be whole, torn or absent after a power loss; without the cut a
// torn batch followed by a segment with data would read as corruption).
//
// Either way [0, End) of segment Seq was durable when the cut was written,
// so recovery requires it to hold exactly whole batches up to End: a
// segment that a cut names and that ends early (truncated, or its last
// batches erased) is corruption in both modes, not a torn tail. Without
// the cut a segment that lost its last batch at a batch boundary reads as
// complete. Segments written before cuts were written at rolls (and only
// then) carry none and are read as before; a reader of that format reads
// these segments unchanged, since it already honours cuts.
const TypeCut FrameType = 2

// cut is a TypeCut frame's payload.
type cut struct {
	Seq uint64
	End int64
}

const cutPayloadSize = 16

// cutFrameSize is the room a cut takes at the start of a segment.
var cutFrameSize = int64(FrameSize(cutPayloadSize))

// cutFrame returns the cut c as a batch of its own in segment seq's salt.
func cutFrame(seq uint64, c cut) []byte {
	var b Batch
	b.Begin(make([]byte, 0, cutFrameSize), segmentSalt(seq))
	b.AddFunc(TypeCut, c.encode)
	return b.Finish()
}

func (c cut) encode(dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, c.Seq)
	return binary.LittleEndian.AppendUint64(dst, uint64(c.End))
}

func decodeCut(b []byte) (cut, bool) {
	if len(b) != cutPayloadSize {
		return cut{}, false
	}
	c := cut{Seq: binary.LittleEndian.Uint64(b), End: int64(binary.LittleEndian.Uint64(b[8:]))}
	return c, c.End >= 0
}

// readCut returns the cut that segment seq starts with, if it starts with
// a valid one.
func (w *WAL) readCut(seq uint64) (cut, bool, error) {
	fd, err := ring.Open(w.d, w.path(seq), unix.O_RDONLY, 0)
	if err != nil {
		return cut{}, false, fmt.Errorf("wal: read segment %d: %w", seq, err)
	}
	buf := make([]byte, FrameSize(cutPayloadSize))
	n, err := ring.ReadAt(w.d, fd, buf, 0)
	if cerr := ring.Close(w.d, fd); err == nil {
		err = cerr
	}
	if err != nil {
		return cut{}, false, fmt.Errorf("wal: read segment %d: %w", seq, err)
	}
	f, why := parse(buf[:n], 0, segmentSalt(seq))
	if why != "" || f.t != TypeCut || f.back != 0 || f.batchLen != f.size {
		return cut{}, false, nil // a cut is a batch of its own
	}
	c, ok := decodeCut(f.payload)
	return c, ok, nil
}

// segLimit is how much of one segment recovery reads.
type segLimit struct {
	n int64 // bytes read; -1: all of it
	// exact: a later segment's cut names this segment's end, so it must
	// end there with a whole batch (see TypeCut); by names that segment.
	exact bool
	by    uint64
}

// cutLimits applies the cuts that segments start with, one limit per
// segment of seqs.
func (w *WAL) cutLimits(seqs []uint64) ([]segLimit, error) {
	limit := make([]segLimit, len(seqs))
	for i := range limit {
		limit[i].n = -1
	}
	for k := 1; k < len(seqs); k++ {
		c, ok, err := w.readCut(seqs[k])
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		for j := 0; j < k; j++ {
			switch l := &limit[j]; {
			case seqs[j] == c.Seq:
				if l.n < 0 || c.End < l.n {
					*l = segLimit{n: c.End, exact: true, by: seqs[k]}
				}
			case seqs[j] > c.Seq:
				*l = segLimit{n: 0}
			}
		}
	}
	return limit, nil
}

// Open opens the WAL in opts.Dir, creating the directory if needed, and
// replays every segment in sequence order, calling fn for each record
// (seq and off say where it is). A torn tail of the last segment is, in
// TolerateTornTail mode, zeroed durably before Open returns; any other
// damage is a *messages.CorruptionError naming the segment and offset. An
// error from fn stops Open and is returned.
func Open(d ring.Doer, opts Options, fn func(seq uint64, off int64, r messages.Record) error) (*WAL, error) {
	if opts.Dir == "" {
		return nil, errors.New("wal: empty Dir")
	}
	if opts.Name == "" {
		opts.Name = "wal"
	}
	if opts.SegmentSize == 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if opts.SegmentSize < 4096 || opts.SegmentSize%FrameAlign != 0 {
		return nil, fmt.Errorf("wal: SegmentSize %d: want a multiple of %d, at least 4096", opts.SegmentSize, FrameAlign)
	}
	if opts.Direct && opts.SegmentSize%Sector != 0 {
		return nil, fmt.Errorf("wal: SegmentSize %d: direct segments need a multiple of %d", opts.SegmentSize, Sector)
	}
	w := &WAL{d: d, opts: opts, fd: -1, dfd: -1}
	if err := ring.MkdirDurable(d, opts.Dir); err != nil {
		return nil, fmt.Errorf("wal: create directory: %w", err)
	}
	names, err := ring.ReadDir(d, opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("wal: list segments: %w", err)
	}
	var seqs []uint64
	for _, n := range names {
		if seq, ok := parseSegmentName(n); ok {
			seqs = append(seqs, seq)
		}
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	if len(seqs) > 0 {
		// A segment's name may not be durable yet (a Stop or crash cut
		// its creation before the directory sync); records acknowledged
		// from it would go with its name at a power loss.
		if err := ring.SyncDir(d, opts.Dir); err != nil {
			return nil, fmt.Errorf("wal: sync the directory: %w", err)
		}
	}

	limits, err := w.cutLimits(seqs)
	if err != nil {
		return nil, err
	}
	results := make([]ScanResult, len(seqs))
	for i, seq := range seqs {
		info, res, err := w.replayUpTo(seq, limits[i], fn)
		if err != nil {
			return nil, err
		}
		w.segs = append(w.segs, info)
		results[i] = res
	}
	// Only the last segment holding anything may be torn (invariant 2):
	// a torn segment followed by one with a valid frame was complete
	// once, so it is damaged. (A later segment with no valid frame at all
	// holds only a torn first write: nothing in it was acknowledged.)
	for i, res := range results {
		if !res.Torn {
			continue
		}
		for _, later := range results[i+1:] {
			if later.Frames > 0 {
				return nil, &messages.CorruptionError{Path: w.rel(seqs[i]), Offset: res.End,
					Reason: "torn batch in a segment followed by a non-empty one"}
			}
		}
		// Zero the torn batch durably, so its stale frames cannot
		// reappear after later batches.
		if err := w.zero(seqs[i], res.End, res.Dirty); err != nil {
			return nil, err
		}
		w.torn = append(w.torn, TornTail{Path: w.rel(seqs[i]), Off: res.End, Bytes: res.Dirty - res.End})
		results[i].Dirty = res.End
	}
	if len(seqs) == 0 {
		return w, nil
	}
	seq := seqs[len(seqs)-1]
	w.lastSeq = seq
	w.off = results[len(results)-1].End
	// A last segment larger than SegmentSize was preallocated by a life
	// with a larger Preallocate, and fallocate never shrinks a file: it
	// stays closed, the next batch rolls to a segment of today's size,
	// and Retire deletes it once its records are promoted. Before, it
	// stayed active, and so on disk at the old size, for good (files
	// audit: 1 MiB kept after Preallocate went to 64 KiB).
	size, err := ring.Stat(w.d, w.path(seq))
	if err != nil {
		return nil, fmt.Errorf("wal: stat segment %d: %w", seq, err)
	}
	if size > w.opts.SegmentSize {
		return w, nil
	}
	// The last segment becomes the active one. Preallocate it again: a
	// crash may have cut its creation short.
	if err := w.openActive(seq, false, nil); err != nil {
		return nil, err
	}
	w.segs[len(w.segs)-1].Active = true
	return w, nil
}

// Torn returns the torn last batches Open dropped, if any.
func (w *WAL) Torn() []TornTail { return w.torn }

func (w *WAL) rel(seq uint64) string  { return filepath.Join(w.opts.Name, SegmentName(seq)) }
func (w *WAL) path(seq uint64) string { return filepath.Join(w.opts.Dir, SegmentName(seq)) }

func (s *SegmentInfo) add(rev messages.Revision) {
	if s.Records == 0 || rev < s.MinRev {
		s.MinRev = rev
	}
	if rev > s.MaxRev {
		s.MaxRev = rev
	}
	s.Records++
}

// replaySegment reads and scans all of one segment.
func (w *WAL) replaySegment(seq uint64, fn func(uint64, int64, messages.Record) error) (SegmentInfo, ScanResult, error) {
	return w.replayUpTo(seq, segLimit{n: -1}, fn)
}

// replayUpTo reads and scans one segment, its first limit.n bytes when
// limit.n >= 0 (a later segment's cut, see TypeCut). When the limit is
// exact, those bytes must be whole batches, whatever the mode.
func (w *WAL) replayUpTo(seq uint64, limit segLimit, fn func(uint64, int64, messages.Record) error) (SegmentInfo, ScanResult, error) {
	info := SegmentInfo{Seq: seq}
	if limit.n == 0 {
		return info, ScanResult{}, nil
	}
	data, err := ring.ReadLog(w.d, w.path(seq), limit.n)
	if err != nil {
		return info, ScanResult{}, fmt.Errorf("wal: read segment %d: %w", seq, err)
	}
	rel := w.rel(seq)
	mode := w.opts.Mode
	if limit.exact {
		if int64(len(data)) < limit.n {
			return info, ScanResult{}, &messages.CorruptionError{Path: rel, Offset: int64(len(data)),
				Reason: fmt.Sprintf("segment ends at %d; segment %d's cut says it held %d bytes", len(data), limit.by, limit.n)}
		}
		mode = Strict // nothing before the cut may be torn
	}
	if limit.n > 0 && limit.n < int64(len(data)) {
		data = data[:limit.n]
	}
	res, err := Scan(data, ScanOptions{Path: rel, Mode: mode, Salt: segmentSalt(seq)},
		func(off int64, t FrameType, payload []byte) error {
			if t == TypeCut && off == 0 {
				if _, ok := decodeCut(payload); ok {
					return nil
				}
			}
			if t != TypeRecord {
				return &messages.CorruptionError{Path: rel, Offset: off, Reason: fmt.Sprintf("frame type %d is not a record", t)}
			}
			r, err := DecodeRecord(payload)
			if err != nil {
				return &messages.CorruptionError{Path: rel, Offset: off, Reason: err.Error()}
			}
			info.add(r.Revision)
			if fn != nil {
				return fn(seq, off, r)
			}
			return nil
		})
	if limit.exact {
		err = NotTorn(err, fmt.Sprintf("segment %d's cut says the segment held %d bytes of whole batches", limit.by, limit.n))
		if err == nil && res.End != limit.n {
			err = &messages.CorruptionError{Path: rel, Offset: res.End,
				Reason: fmt.Sprintf("the batches end at %d; segment %d's cut says they ended at %d", res.End, limit.by, limit.n)}
		}
	}
	return info, res, err
}

// zero overwrites [from, to) of segment seq with zeros and syncs it.
func (w *WAL) zero(seq uint64, from, to int64) error {
	if to <= from {
		return nil
	}
	fd, err := ring.Open(w.d, w.path(seq), unix.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("wal: zero torn tail of segment %d: %w", seq, err)
	}
	err = ring.WriteSync(w.d, fd, make([]byte, to-from), from)
	if cerr := ring.Close(w.d, fd); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("wal: zero torn tail of segment %d: %w", seq, err)
	}
	return nil
}

// openActive opens segment seq for appending, creating it when create is
// set, and preallocates it; it writes first (a cut, or nothing) at offset
// 0 and makes it durable with the preallocation. Its fd becomes w.fd.
//
// Preallocation uses fallocate mode 0, which extends the file size to
// SegmentSize at once: the space reads back as zeros (which the frame rule
// relies on), and a later fdatasync after an append inside that size never
// has to log a size change. FALLOC_FL_KEEP_SIZE would leave the size to
// grow with every append, which costs each sync a metadata update.
func (w *WAL) openActive(seq uint64, create bool, first []byte) error {
	flags := unix.O_RDWR
	if create {
		// Not O_EXCL: a file of this name that the WAL does not list
		// is one whose creation failed before any batch went into it.
		flags |= unix.O_CREAT | unix.O_TRUNC
	}
	p := w.path(seq)
	fd, err := ring.Open(w.d, p, flags, 0o644)
	if err != nil {
		return fmt.Errorf("wal: open segment %d: %w", seq, err)
	}
	err = ring.Fallocate(w.d, fd, 0, w.opts.SegmentSize, false)
	if err == nil && len(first) > 0 {
		err = ring.WriteAt(w.d, fd, first, 0)
	}
	if err == nil {
		// The allocation and size are metadata: fsync, not fdatasync.
		// It makes first durable too.
		err = ring.Fsync(w.d, fd)
	}
	if err == nil && create {
		err = ring.SyncDir(w.d, w.opts.Dir)
	}
	dfd := int32(-1)
	if err == nil && w.opts.Direct {
		dfd, err = OpenDirect(w.d, p)
	}
	if err != nil {
		ring.Close(w.d, fd) //nolint:errcheck // the first error is the one to report
		return fmt.Errorf("wal: start segment %d: %w", seq, err)
	}
	w.fd, w.dfd = fd, dfd
	w.salt = segmentSalt(seq)
	return nil
}

// closeActive closes the active segment's fds.
func (w *WAL) closeActive() error {
	var err error
	for _, fd := range []*int32{&w.dfd, &w.fd} {
		if *fd >= 0 {
			if cerr := ring.Close(w.d, *fd); err == nil {
				err = cerr
			}
			*fd = -1
		}
	}
	return err
}

// Direct reports whether batches go through an O_DIRECT fd (Options.Direct
// and a file system that takes it).
func (w *WAL) Direct() bool { return w.dfd >= 0 }

// roll closes the active segment and starts segment seq+1, which begins
// with a cut naming where the active one ends (invariant 2).
// REQUIRES: no batch in flight.
func (w *WAL) roll() error {
	next := w.lastSeq + 1
	var first []byte
	if n := len(w.segs); n > 0 {
		first = cutFrame(next, cut{Seq: w.segs[n-1].Seq, End: w.off})
	}
	if w.fd >= 0 {
		w.segs[len(w.segs)-1].Active = false
		if err := w.closeActive(); err != nil {
			return w.fail(fmt.Errorf("wal: close segment %d: %w", next-1, err))
		}
	}
	if err := w.openActive(next, true, first); err != nil {
		return w.fail(err)
	}
	w.segs = append(w.segs, SegmentInfo{Seq: next, Active: true})
	w.lastSeq = next
	w.off = int64(len(first))
	return nil
}

// Roll starts a new segment for the next batch, so that no batch is ever
// written after one whose outcome is unknown: the engine rolls a WAL it
// reopened after a write or sync error (an fsync error is never retried
// on the same file). REQUIRES: no batch in flight.
func (w *WAL) Roll() error {
	switch {
	case w.closed:
		return ErrClosed
	case w.failed != nil:
		return fmt.Errorf("wal: failed earlier: %w", w.failed)
	case w.pending != nil:
		return ErrBusy
	}
	return w.roll()
}

// Restart makes a failed WAL usable again without trusting what the
// failure left: it closes the active segment and starts a new one whose
// first frame, written and made durable before any batch, is a cut (see
// TypeCut) naming the log's durable end, so that recovery ignores the
// failed batch wherever it went. An fsync error is never retried on the
// file it hit. REQUIRES: no batch in flight.
func (w *WAL) Restart() error {
	switch {
	case w.closed:
		return ErrClosed
	case w.pending != nil:
		return ErrBusy
	}
	if w.fd >= 0 {
		w.closeActive() //nolint:errcheck // the segment failed; its fds are all that is left
		w.segs[len(w.segs)-1].Active = false
	}
	w.failed = nil
	if len(w.segs) == 0 {
		return w.roll() // nothing durable to cut back to
	}
	last := w.segs[len(w.segs)-1]
	next := last.Seq + 1
	first := cutFrame(next, cut{Seq: last.Seq, End: w.off})
	if err := w.openActive(next, true, first); err != nil {
		return w.fail(err)
	}
	w.segs = append(w.segs, SegmentInfo{Seq: next, Active: true})
	w.lastSeq = next
	w.off = int64(len(first))
	return nil
}

func (w *WAL) fail(err error) error {
	if w.failed == nil {
		w.failed = err
	}
	return err
}

// ErrBusy is returned by Prepare while a batch is in flight.
var ErrBusy = errors.New("wal: a batch is already in flight")

// ErrClosed is returned by every method after Close.
var ErrClosed = errors.New("wal: closed")

// Prepare encodes recs as one batch for the active segment, rolling to a
// new segment first (with blocking I/O on the WAL's Doer) when the batch
// does not fit. The caller performs the returned Pending's Ops and then
// calls Committed or Failed.
// REQUIRES: len(recs) > 0; every record valid for EncodeRecord.
func (w *WAL) Prepare(recs []messages.Record) (*Pending, error) {
	switch {
	case w.closed:
		return nil, ErrClosed
	case w.failed != nil:
		return nil, fmt.Errorf("wal: failed earlier: %w", w.failed)
	case w.pending != nil:
		return nil, ErrBusy
	case len(recs) == 0:
		return nil, errors.New("wal: empty batch")
	}
	p := &Pending{Count: len(recs)}
	size := 0
	for i := range recs {
		size += FrameSize(RecordSize(recs[i]))
	}
	// With Direct, PadTo adds padding that depends on where the batch
	// starts (and a fresh segment starts after its cut).
	padded := func(off int64) int64 {
		if !w.opts.Direct {
			return int64(size)
		}
		return int64(size + padding(off+int64(size), Sector))
	}
	if room := w.opts.SegmentSize - cutFrameSize; padded(cutFrameSize) > room {
		return nil, fmt.Errorf("wal: batch of %d bytes exceeds the %d bytes a segment holds after its cut", padded(cutFrameSize), room)
	}
	if w.fd < 0 || w.off+padded(w.off) > w.opts.SegmentSize {
		if err := w.roll(); err != nil {
			return nil, err
		}
	}
	w.batch.Begin(w.buf[:0], w.salt)
	for i := range recs {
		r := recs[i]
		w.batch.AddFunc(TypeRecord, func(dst []byte) []byte { return EncodeRecord(dst, r) })
		if i == 0 || r.Revision < p.MinRev {
			p.MinRev = r.Revision
		}
		if r.Revision > p.MaxRev {
			p.MaxRev = r.Revision
		}
	}
	if w.dfd >= 0 {
		w.batch.PadTo(w.off, Sector)
	}
	w.buf = w.batch.Finish()
	seg := &w.segs[len(w.segs)-1]
	p.Seq, p.Off, p.Len = seg.Seq, w.off, len(w.buf)
	p.Write = ring.Op{Code: ring.OpWrite, FD: w.fd, Buf: w.buf, Offset: w.off, DSync: true}
	if w.dfd >= 0 && w.off%Sector == 0 {
		// The segment is zeroed past its end: no end marker to write.
		p.Write.FD, p.Write.Buf = w.dfd, DirectBuf(&w.dbuf, w.buf, len(w.buf))
	}
	w.pending = p
	return p, nil
}

// Committed records that p's write and sync completed: its records are
// durable and the next batch goes after it.
func (w *WAL) Committed(p *Pending) error {
	if p == nil || p != w.pending {
		return errors.New("wal: Committed with a batch that is not in flight")
	}
	w.pending = nil
	w.off += int64(p.Len)
	seg := &w.segs[len(w.segs)-1]
	if seg.Records == 0 || p.MinRev < seg.MinRev {
		seg.MinRev = p.MinRev
	}
	if p.MaxRev > seg.MaxRev {
		seg.MaxRev = p.MaxRev
	}
	seg.Records += p.Count
	return nil
}

// Failed records that p's write or sync failed with err. The WAL is then
// failed (invariant 4): reopen it to continue.
func (w *WAL) Failed(p *Pending, err error) {
	if p == w.pending {
		w.pending = nil
	}
	w.fail(fmt.Errorf("wal: write to segment %d at offset %d: %w", p.Seq, p.Off, err))
}

// Append writes recs as one batch and waits until it is durable, using the
// WAL's Doer.
func (w *WAL) Append(recs []messages.Record) error {
	p, err := w.Prepare(recs)
	if err != nil {
		return err
	}
	cs, err := w.d.Do(p.Ops()...)
	if err == nil {
		for _, c := range cs {
			if c.Err != nil {
				err = &ring.PathError{Op: c.Code.String(), Path: w.rel(p.Seq), Err: c.Err}
				break
			}
		}
	}
	if err != nil {
		w.Failed(p, err)
		return w.failed
	}
	return w.Committed(p)
}

// Segments returns a description of every segment, oldest first.
func (w *WAL) Segments() []SegmentInfo { return append([]SegmentInfo(nil), w.segs...) }

// Oldest returns the highest revision in the oldest segment when it is
// not the active one: the first that Retire could delete; ok is false
// when there is none, or the oldest is the active one. It does not
// allocate.
func (w *WAL) Oldest() (maxRev messages.Revision, ok bool) {
	if len(w.segs) == 0 || w.segs[0].Active {
		return 0, false
	}
	return w.segs[0].MaxRev, true
}

// End returns the active segment and the offset the next batch goes to;
// seq is 0 before the first segment exists.
func (w *WAL) End() (seq uint64, off int64) {
	if w.fd < 0 {
		return 0, 0
	}
	return w.segs[len(w.segs)-1].Seq, w.off
}

// Retire deletes every segment except the active one whose highest
// revision is at or below promoted, then syncs the directory, and returns
// the retired sequence numbers.
// REQUIRES: every staged revision <= promoted is durable in its hot
// segment (the promoter's watermark).
func (w *WAL) Retire(promoted messages.Revision) ([]uint64, error) {
	if w.closed {
		return nil, ErrClosed
	}
	var retired []uint64
	keep := w.segs[:0:0]
	var err error
	// Only a prefix is retired: a segment that starts with a cut must
	// outlive the older segments the cut speaks of.
	for _, s := range w.segs {
		if err == nil && len(keep) == 0 && !s.Active && s.MaxRev <= promoted {
			if err = ring.Unlink(w.d, w.path(s.Seq)); err == nil {
				retired = append(retired, s.Seq)
				continue
			}
			err = fmt.Errorf("wal: retire segment %d: %w", s.Seq, err)
		}
		keep = append(keep, s)
	}
	w.segs = keep
	if len(retired) > 0 {
		if serr := ring.SyncDir(w.d, w.opts.Dir); serr != nil && err == nil {
			err = fmt.Errorf("wal: sync directory after retiring: %w", serr)
		}
	}
	return retired, err
}

// Close closes the active segment. A batch in flight must have been
// Committed or Failed first. Close is idempotent.
func (w *WAL) Close() error {
	if w.closed {
		return nil
	}
	if w.pending != nil {
		return ErrBusy
	}
	w.closed = true
	if err := w.closeActive(); err != nil {
		return fmt.Errorf("wal: close: %w", err)
	}
	return nil
}
