// Package hot holds the hot segment generations of each space: the
// preallocated logs hot/<space>-<gen>.seg that take a space's direct writes
// until the sealer turns a generation into a block.
//
// A space has one active generation, appended to in batches, and any number
// of older, immutable ones waiting for the sealer. Rotate starts the next
// generation; Retire deletes an old one once the manifest has committed its
// block. The types are plain logic without goroutines: one actor owns each
// Segment. Frames, batches and the torn-tail rule are package wal's.
//
// # Recycling
//
// A retired generation's file is kept as a spare (renamed to
// <space>-<gen>.spare after the generation it held) while fewer than
// Options.MaxSpares spares exist, and Create reuses a spare by renaming it
// into place instead of creating and fallocating a new file. Appending into
// an already-written file is cheaper: BenchmarkAppendSync measured a 4 KiB
// append+fdatasync on this ext4 machine at a median of about 190 µs into an
// already-written file against 290 µs into a freshly fallocated one (each
// fdatasync into fallocated space must also convert unwritten extents: a
// journal commit). Through the Segment API (BenchmarkSegmentAppend, one
// 4 KiB record per Append, -count=5) the medians were 338 µs fresh against
// 152 µs recycled.
//
// A recycled file holds frames of its old lives after the end. Segments are
// therefore written and scanned as wal's recyclable files: every frame
// carries its generation's salt (Gen.salt, distinct per space and
// generation), every write ends with an end marker, and the scan reads
// stale frames of another salt as the clean end, not as a torn tail, so
// Strict mode accepts a recycled segment and TolerateTornTail does not
// rewrite it on open.
//
// # Direct I/O
//
// With Options.Direct a segment that takes appends has a second fd, opened
// with O_DIRECT, and writes its batches through it with RWF_DSYNC. Each
// batch is padded (wal.Batch.PadTo, a pad frame the scan skips) so that
// it ends on a wal.Sector, and each write is the batch plus one more
// sector that starts with the end marker: whole sectors from an aligned
// buffer, starting where the previous batch ended. No write therefore
// covers a sector that holds an acknowledged batch, which matters because
// a power loss may leave any sector of an unfinished write garbage (sim
// models exactly that); rewriting the last partial sector with more bytes
// would put an acknowledged batch at that risk. Padding costs space (a
// one-record batch takes 512 bytes), which SealBytes counts.
//
// Why: ext4 cannot do a buffered write asynchronously, so io_uring hands
// every buffered batch to a kernel worker; an O_DIRECT overwrite of
// allocated, written blocks is issued from the submitting thread and only
// its cache flush waits for a worker. BenchmarkDurableAppendInterleaved
// (package ring) measured a 100-byte durable append at 220-227 µs through
// io_uring this way, against 248-274 µs buffered with RWF_DSYNC and
// 223-241 µs for pwrite+fdatasync (into written blocks; into fresh,
// fallocated ones it measured no consistent difference at one record).
//
// A file whose end is not on a sector (written without Direct, then
// reopened with it) takes its next batch through the buffered fd, padded,
// after which batches go direct. A file system that refuses O_DIRECT
// (EINVAL, as tmpfs) leaves the segment buffered; Segment.Direct says
// which. Reads (Open, ReadRecords) go through the buffered fd: Linux
// invalidates cached pages a direct write covers.
//
// # Where an older generation ends
//
// Only a space's last write can be torn by a crash, so an older generation
// ends with a whole batch, except one abandoned after a failed write or
// sync (the engine never syncs that file again and moves to a new
// generation): its failed batch may be whole, torn or absent. Recovery
// therefore needs to know where each older generation's durable batches
// end, and the generation after it records that: Follow gives a new
// generation its predecessor's durable end, and its first batch begins
// with a follow frame (TypeFollow) naming it. Opening an older generation
// checks that its batches up to that end are whole, in both modes, and
// treats only what follows (a failed batch) by the torn-tail rule. A
// generation that has no follow frame naming it (its successors hold no
// batch yet, or were written before follow frames existed) is read by the
// torn-tail rule alone, as the space's last write.
package hot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/wal"
)

// DefaultSegmentSize is the default preallocated size of a hot segment
// (Config.Preallocate's default).
const DefaultSegmentSize = 64 << 20

// TypeFollow is the frame a generation's first batch starts with when the
// generation follows others (Follow): its payload is one or more links, 16
// bytes each (little-endian uint64 generation, uint64 end), each naming an
// older generation of the space and the offset its durable batches end at.
// Usually one link names the previous generation; a previous generation
// that never made a batch durable passes its own links on. Binaries
// older than follow frames report one as corruption ("not a record").
const TypeFollow wal.FrameType = 3

// link is one entry of a follow frame.
type link struct {
	gen uint64
	end int64
}

const (
	linkSize = 16
	// maxLinks bounds a follow frame: a chain of generations that each
	// failed before their first batch passes its links on, and beyond
	// this many the oldest are dropped (those generations are then read
	// by the torn-tail rule alone). 64 links are a 1 KiB payload.
	maxLinks = 64
	// followHead is how much of a generation Open reads to find its
	// follow frame: the largest one.
	followHead = wal.FrameHeader + maxLinks*linkSize + wal.FrameAlign
)

func encodeLinks(dst []byte, ls []link) []byte {
	for _, l := range ls {
		dst = binary.LittleEndian.AppendUint64(dst, l.gen)
		dst = binary.LittleEndian.AppendUint64(dst, uint64(l.end))
	}
	return dst
}

func decodeLinks(b []byte) ([]link, bool) {
	if len(b) == 0 || len(b)%linkSize != 0 || len(b) > maxLinks*linkSize {
		return nil, false
	}
	ls := make([]link, 0, len(b)/linkSize)
	for ; len(b) > 0; b = b[linkSize:] {
		l := link{gen: binary.LittleEndian.Uint64(b), end: int64(binary.LittleEndian.Uint64(b[8:]))}
		if l.end < 0 || l.end%wal.FrameAlign != 0 {
			return nil, false
		}
		ls = append(ls, l)
	}
	return ls, true
}

// Options say where hot segments live and how they are read.
type Options struct {
	// Dir is the hot directory (the engine's <dir>/hot); Create makes it
	// when missing.
	Dir string
	// Name is Dir as CorruptionErrors name it, relative to the engine's
	// directory; default "hot".
	Name string
	// SegmentSize is the preallocated size and the most bytes a segment
	// holds; default DefaultSegmentSize.
	SegmentSize int64
	// Mode says how a torn tail is treated when a segment is opened.
	Mode wal.RecoveryMode
	// MaxSpares is how many retired files Retire keeps for Create to
	// reuse; default DefaultMaxSpares, negative for none (Retire deletes).
	MaxSpares int
	// Direct writes batches through a second fd opened with O_DIRECT (see
	// Direct I/O in the package comment). SegmentSize must then be a
	// multiple of Sector. Where the file system refuses O_DIRECT (EINVAL,
	// as tmpfs does) the segment writes through its buffered fd instead;
	// Segment.Direct says which.
	Direct bool
}

// Sector is the unit of a direct segment's writes (wal.Sector).
const Sector = wal.Sector

// DefaultMaxSpares is Options.MaxSpares' default.
const DefaultMaxSpares = 2

func (o *Options) fill() error {
	if o.Dir == "" {
		return errors.New("hot: empty Dir")
	}
	if o.Name == "" {
		o.Name = "hot"
	}
	if o.SegmentSize == 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.MaxSpares == 0 {
		o.MaxSpares = DefaultMaxSpares
	}
	if o.SegmentSize < 4096 || o.SegmentSize%wal.FrameAlign != 0 {
		return fmt.Errorf("hot: SegmentSize %d: want a multiple of %d, at least 4096", o.SegmentSize, wal.FrameAlign)
	}
	if o.Direct && o.SegmentSize%Sector != 0 {
		return fmt.Errorf("hot: SegmentSize %d: direct segments need a multiple of %d", o.SegmentSize, Sector)
	}
	return nil
}

// Gen names one generation of one space.
type Gen struct {
	Space messages.SpaceID
	Gen   uint64
}

// FileName returns g's file name, zero-padded so that names sort by space
// and then generation.
func (g Gen) FileName() string { return fmt.Sprintf("%010d-%020d.seg", g.Space, g.Gen) }

// ParseFileName returns the generation a file name names.
func ParseFileName(name string) (Gen, bool) {
	s, ok := strings.CutSuffix(name, ".seg")
	if !ok || len(s) != 31 || s[10] != '-' {
		return Gen{}, false
	}
	sp, err1 := strconv.ParseUint(s[:10], 10, 32)
	gen, err2 := strconv.ParseUint(s[11:], 10, 64)
	if err1 != nil || err2 != nil || sp == 0 || gen == 0 {
		return Gen{}, false
	}
	return Gen{messages.SpaceID(sp), gen}, true
}

// SpareName returns the name a retired file of g keeps while it waits to
// be reused: not a generation's name, so List and recovery ignore it.
func (g Gen) SpareName() string { return fmt.Sprintf("%010d-%020d.spare", g.Space, g.Gen) }

// parseSpareName returns the generation a spare's file last held.
func parseSpareName(name string) (Gen, bool) {
	s, ok := strings.CutSuffix(name, ".spare")
	if !ok {
		return Gen{}, false
	}
	return ParseFileName(s + ".seg")
}

// salt is the frame salt of a generation, so that frames of one file never
// read as valid in another (see wal's frame format).
func (g Gen) salt() uint32 {
	x := uint64(g.Space)*0x9e3779b97f4a7c15 ^ g.Gen*0xbf58476d1ce4e5b9
	return uint32(x ^ x>>32)
}

// List returns the generations in dir, sorted by space and generation. A
// missing directory holds none.
func List(d ring.Doer, dir string) ([]Gen, error) {
	names, err := ring.ReadDir(d, dir)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("hot: list %s: %w", dir, err)
	}
	var gens []Gen
	for _, n := range names {
		if g, ok := ParseFileName(n); ok {
			gens = append(gens, g)
		}
	}
	sort.Slice(gens, func(i, j int) bool {
		if gens[i].Space != gens[j].Space {
			return gens[i].Space < gens[j].Space
		}
		return gens[i].Gen < gens[j].Gen
	})
	return gens, nil
}

// Segment is one generation of one space's hot log.
//
// Invariants:
//  1. At most one batch is in flight; batches are written in order into
//     zeroed, preallocated space (so only the last can be torn).
//  2. Revs holds exactly the revisions of the records durable in the file
//     (Committed batches and, after Open, the replayed ones).
//  3. An immutable segment (rotated, or opened as an older generation)
//     takes no more appends; only an immutable segment may be retired.
//  4. After a write or sync error the segment is failed and refuses later
//     appends: the data's fate is unknown until it is reopened.
//  5. follows holds the links (see TypeFollow) that no batch of the file
//     has made durable yet; the first batch carries them.
//
// A Segment is not safe for concurrent use.
type Segment struct {
	d    ring.Doer
	opts Options
	gen  Gen

	fd      int32 // -1 once closed
	dfd     int32 // O_DIRECT fd batches are written through (Options.Direct), else -1
	off     int64 // where the next batch goes
	records int
	// The revisions held: in revs while each exceeds every one before it
	// (every direct batch, as the submitter assigns revisions in order,
	// and recovery's scan), in late otherwise (a promotion of an older
	// staged record). A sorted slice costs 8 bytes a record and an append;
	// a map cost a hash insert a record on the write path (issue 4).
	revs      []messages.Revision
	late      map[messages.Revision]struct{}
	minRev    messages.Revision
	maxRev    messages.Revision
	immutable bool
	retired   bool
	recycled  bool // Create reused a spare file
	pending   *Pending
	failed    error
	closeErr  error         // Retire's close error: a retried Retire still reports it
	follows   []link        // invariant 5
	torn      *wal.TornTail // what Open dropped

	buf   []byte // encodes batches; reused once the previous batch is done
	dbuf  []byte // a direct write's copy of buf, Sector-aligned
	batch wal.Batch
}

// Pending is a batch prepared for writing: perform Ops, then call
// Committed or Failed. The write's buffer belongs to the segment.
type Pending struct {
	Write   ring.Op // the batch, a DSync write: durable once it completes
	Off     int64
	Len     int
	revs    []messages.Revision
	follows bool // the batch starts with the follow frame
}

// Ops returns the batch's one op: a write with DSync (RWF_DSYNC), durable
// on completion, as a write linked to an fdatasync would be but in one
// kernel hand-off (BenchmarkDurableAppendInterleaved in package ring). An
// error from it may be the sync's: the file is then failed for good.
func (p *Pending) Ops() []ring.Op { return []ring.Op{p.Write} }

var (
	// ErrImmutable is returned by appends to a rotated generation.
	ErrImmutable = errors.New("hot: segment is immutable")
	// ErrBusy is returned by Prepare, Rotate and Close while a batch is
	// in flight.
	ErrBusy = errors.New("hot: a batch is already in flight")
	// ErrFull is returned by Prepare when the batch does not fit: rotate.
	ErrFull = errors.New("hot: segment full")
	// ErrClosed is returned after Close or Retire.
	ErrClosed = errors.New("hot: segment closed")
)

func (s *Segment) path() string { return filepath.Join(s.opts.Dir, s.gen.FileName()) }

// Torn returns the torn last batch Open dropped, if it did.
func (s *Segment) Torn() (wal.TornTail, bool) {
	if s.torn == nil {
		return wal.TornTail{}, false
	}
	return *s.torn, true
}

func (s *Segment) rel() string { return filepath.Join(s.opts.Name, s.gen.FileName()) }

// Create makes a new, empty generation g. When a spare file is available
// (see Recycling in the package comment) it renames the spare into place
// and syncs the directory; otherwise it creates the file, preallocates it
// (fallocate mode 0, so that appends never change the size an fdatasync
// must log), syncs it and syncs the directory. After a crash g's file is
// either missing or an empty generation (a recycled file's stale frames
// read as the clean end).
//
// A file of g left by an earlier Create that failed (say its directory
// sync) is replaced: nothing was written to it, since a Segment reaches
// its caller only from a Create that succeeded. Create fails with EEXIST
// if g's file starts with a frame header of g's own life: then it holds
// (or held) a batch of g.
func Create(d ring.Doer, opts Options, g Gen) (*Segment, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	if err := ring.MkdirDurable(d, opts.Dir); err != nil {
		return nil, fmt.Errorf("hot: create directory: %w", err)
	}
	s := newSegment(d, opts, g)
	if err := s.removeLeftover(); err != nil {
		return nil, err
	}
	if ok, err := s.recycle(); err != nil {
		s.closeFDs() //nolint:errcheck // an earlier error is the one reported
		return nil, err
	} else if ok {
		return s, nil
	}
	fd, err := ring.Open(d, s.path(), unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("hot: create %s: %w", s.rel(), err)
	}
	s.fd = fd
	if err := s.preallocate(); err != nil {
		s.closeFDs() //nolint:errcheck // an earlier error is the one reported
		return nil, err
	}
	if err := ring.SyncDir(d, opts.Dir); err != nil {
		s.closeFDs() //nolint:errcheck // an earlier error is the one reported
		return nil, fmt.Errorf("hot: create %s: sync directory: %w", s.rel(), err)
	}
	if err := s.openDirect(); err != nil {
		s.closeFDs() //nolint:errcheck // an earlier error is the one reported
		return nil, err
	}
	return s, nil
}

// removeLeftover removes a file of s's generation that an earlier Create
// left (see Create). Its unlink becomes durable with the directory sync
// that ends the Create; a crash before that leaves the file, which then
// loads as an empty generation, as it would have anyway.
func (s *Segment) removeLeftover() error {
	fd, err := ring.Open(s.d, s.path(), unix.O_RDONLY, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("hot: create %s: %w", s.rel(), err)
	}
	head := make([]byte, wal.FrameHeader)
	n, err := ring.ReadAt(s.d, fd, head, 0)
	if cerr := ring.Close(s.d, fd); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("hot: create %s: read the file in the way: %w", s.rel(), err)
	}
	if wal.HasHeader(head[:n], s.gen.salt()) {
		return fmt.Errorf("hot: create %s: it holds a batch of this generation: %w", s.rel(), unix.EEXIST)
	}
	if err := ring.Unlink(s.d, s.path()); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("hot: create %s: remove the file an earlier attempt left: %w", s.rel(), err)
	}
	return nil
}

// spares returns the spare files in the directory, oldest generation
// first.
func spares(d ring.Doer, dir string) ([]Gen, error) {
	names, err := ring.ReadDir(d, dir)
	if err != nil {
		return nil, err
	}
	var out []Gen
	for _, n := range names {
		if g, ok := parseSpareName(n); ok {
			out = append(out, g)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Gen != out[j].Gen {
			return out[i].Gen < out[j].Gen
		}
		return out[i].Space < out[j].Space
	})
	return out, nil
}

// recycle renames a spare into place as s's file, syncs the directory and
// opens it. ok is false when no spare fits (then nothing changed).
func (s *Segment) recycle() (ok bool, err error) {
	if s.opts.MaxSpares < 0 {
		return false, nil
	}
	list, err := spares(s.d, s.opts.Dir)
	if err != nil {
		return false, fmt.Errorf("hot: create %s: list spares: %w", s.rel(), err)
	}
	if len(list) == 0 {
		return false, nil
	}
	for _, old := range list {
		from := filepath.Join(s.opts.Dir, old.SpareName())
		size, err := ring.Stat(s.d, from)
		if err == nil && size != s.opts.SegmentSize {
			// Left by a Start with another Preallocate: never reusable,
			// and it would hold a spare's place for good. A spare holds
			// nothing anyone needs (its generation was sealed), so no
			// directory sync: one back after a crash is removed again.
			// A failed removal fails the Create, as a failed rename of a
			// spare does (the I/O-error sweep requires every injected
			// error to reach a caller or a log).
			if err := ring.Unlink(s.d, from); err != nil && !errors.Is(err, unix.ENOENT) {
				return false, fmt.Errorf("hot: create %s: remove spare %s of %d bytes: %w", s.rel(), old.SpareName(), size, err)
			}
			continue
		}
		if err != nil || old.salt() == s.gen.salt() {
			// Gone (another actor took it), or of a life whose frames
			// would read as this one's: not reusable.
			continue
		}
		if err := ring.Rename(s.d, from, s.path()); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return false, fmt.Errorf("hot: create %s from spare %s: %w", s.rel(), old.SpareName(), err)
		}
		if err := ring.SyncDir(s.d, s.opts.Dir); err != nil {
			return true, fmt.Errorf("hot: create %s from spare: sync directory: %w", s.rel(), err)
		}
		fd, err := ring.Open(s.d, s.path(), unix.O_RDWR, 0)
		if err != nil {
			return true, fmt.Errorf("hot: open recycled %s: %w", s.rel(), err)
		}
		s.fd = fd
		s.recycled = true
		return true, s.openDirect()
	}
	return false, nil
}

func newSegment(d ring.Doer, opts Options, g Gen) *Segment {
	return &Segment{d: d, opts: opts, gen: g, fd: -1, dfd: -1}
}

// openDirect opens the O_DIRECT fd of a segment that takes appends, when
// Options.Direct asks for one; a file system that refuses O_DIRECT
// (EINVAL) leaves the segment writing through its buffered fd.
func (s *Segment) openDirect() error {
	if !s.opts.Direct || s.dfd >= 0 {
		return nil
	}
	fd, err := wal.OpenDirect(s.d, s.path())
	if err != nil {
		return fmt.Errorf("hot: open %s for direct I/O: %w", s.rel(), err)
	}
	s.dfd = fd
	return nil
}

// closeDirect closes the O_DIRECT fd, which only appends use.
func (s *Segment) closeDirect() error {
	if s.dfd < 0 {
		return nil
	}
	fd := s.dfd
	s.dfd = -1
	if err := ring.Close(s.d, fd); err != nil {
		return fmt.Errorf("hot: close %s (direct): %w", s.rel(), err)
	}
	return nil
}

// Direct reports whether appends go through an O_DIRECT fd (Options.Direct
// and a file system that takes it).
func (s *Segment) Direct() bool { return s.dfd >= 0 }

func (s *Segment) preallocate() error {
	err := ring.Fallocate(s.d, s.fd, 0, s.opts.SegmentSize, false)
	if err == nil {
		err = ring.Fsync(s.d, s.fd) // size and allocation are metadata
	}
	if err != nil {
		return fmt.Errorf("hot: preallocate %s: %w", s.rel(), err)
	}
	return nil
}

// closeFDs closes the segment's fds and returns the first close error.
func (s *Segment) closeFDs() error {
	err := s.closeDirect()
	if s.fd >= 0 {
		if cerr := ring.Close(s.d, s.fd); err == nil {
			err = cerr
		}
		s.fd = -1
	}
	return err
}

// Open replays the existing generation g, calling fn for each record, and
// returns it ready for appends (or, when immutable is set, as an older
// generation that only the sealer reads). A torn tail is zeroed durably in
// TolerateTornTail mode; other damage is a *messages.CorruptionError. An
// older generation that a later one's follow frame names must hold whole
// batches up to the end it names, in both modes (see the package comment).
func Open(d ring.Doer, opts Options, g Gen, immutable bool, fn func(off int64, r messages.Record) error) (*Segment, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	s := newSegment(d, opts, g)
	s.immutable = immutable
	durable := int64(-1)
	var by Gen
	if immutable {
		var err error
		if durable, by, err = s.followedEnd(); err != nil {
			return nil, err
		}
	}
	fd, err := ring.Open(d, s.path(), unix.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("hot: open %s: %w", s.rel(), err)
	}
	s.fd = fd
	data, err := ring.ReadLog(s.d, s.path(), durable)
	if err != nil {
		s.closeFDs() //nolint:errcheck // an earlier error is the one reported
		return nil, fmt.Errorf("hot: read %s: %w", s.rel(), err)
	}
	if durable >= 0 {
		err = s.checkDurable(data, durable, by)
	}
	var res wal.ScanResult
	if err == nil {
		res, err = s.scanData(data, func(off int64, r messages.Record) error {
			s.note(r.Revision)
			if fn != nil {
				return fn(off, r)
			}
			return nil
		})
	}
	if err == nil && res.Dirty > res.End {
		// Zero the torn batch durably so that its stale frames never
		// reappear after later batches.
		err = ring.WriteSync(d, fd, make([]byte, res.Dirty-res.End), res.End)
		if err != nil {
			err = fmt.Errorf("hot: zero torn tail of %s: %w", s.rel(), err)
		} else if res.Torn {
			s.torn = &wal.TornTail{Path: s.rel(), Off: res.End, Bytes: res.Dirty - res.End}
		}
	}
	if err == nil && !immutable {
		// A crash may have cut the creation short of its preallocation.
		err = s.preallocate()
		if err == nil {
			err = s.openDirect()
		}
	}
	if err != nil {
		s.closeFDs() //nolint:errcheck // an earlier error is the one reported
		return nil, err
	}
	s.off = res.End
	return s, nil
}

// followedEnd finds the follow frame that names s's generation: in the
// first generation after it (of its space) that starts with a valid frame.
// end is -1 when there is none (that generation starts with a record, or
// none does).
func (s *Segment) followedEnd() (end int64, by Gen, err error) {
	gens, err := List(s.d, s.opts.Dir)
	if err != nil {
		return -1, Gen{}, err
	}
	for _, h := range gens {
		if h.Space != s.gen.Space || h.Gen <= s.gen.Gen {
			continue
		}
		head, err := readHead(s.d, filepath.Join(s.opts.Dir, h.FileName()), followHead)
		if err != nil {
			return -1, Gen{}, fmt.Errorf("hot: open %s: read the generation after it: %w", s.rel(), err)
		}
		t, payload, ok := wal.FirstFrame(head, h.salt())
		if !ok {
			continue // no batch of h is durable: h passed its links on, if any
		}
		if t != TypeFollow {
			return -1, Gen{}, nil
		}
		ls, ok := decodeLinks(payload)
		if !ok {
			return -1, Gen{}, &messages.CorruptionError{Path: filepath.Join(s.opts.Name, h.FileName()),
				Reason: "follow frame with a bad payload"}
		}
		for _, l := range ls {
			if l.gen == s.gen.Gen {
				return l.end, h, nil
			}
		}
		return -1, Gen{}, nil
	}
	return -1, Gen{}, nil
}

// readHead reads up to n bytes from the start of the file at p.
func readHead(d ring.Doer, p string, n int) ([]byte, error) {
	fd, err := ring.Open(d, p, unix.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	m, err := ring.ReadAt(d, fd, buf, 0)
	if cerr := ring.Close(d, fd); err == nil {
		err = cerr
	}
	return buf[:m], err
}

// checkDurable checks that data holds whole batches exactly up to end,
// which generation by's follow frame names as s's durable end.
func (s *Segment) checkDurable(data []byte, end int64, by Gen) error {
	rel := s.rel()
	says := fmt.Sprintf("generation %d's follow frame says its batches were durable up to %d", by.Gen, end)
	if int64(len(data)) < end {
		return &messages.CorruptionError{Path: rel, Offset: int64(len(data)), Reason: "the file ends early; " + says}
	}
	strict := *s
	strict.opts.Mode = wal.Strict
	res, err := strict.scanData(data[:end], func(int64, messages.Record) error { return nil })
	switch {
	case err != nil:
		return wal.NotTorn(err, says)
	case res.End != end:
		return &messages.CorruptionError{Path: rel, Offset: res.End,
			Reason: fmt.Sprintf("the batches end at %d; %s", res.End, says)}
	}
	return nil
}

// scanData scans data, the segment's bytes from offset 0.
func (s *Segment) scanData(data []byte, fn func(off int64, r messages.Record) error) (wal.ScanResult, error) {
	rel := s.rel()
	return wal.Scan(data, wal.ScanOptions{Path: rel, Mode: s.opts.Mode, Salt: s.gen.salt(), Recyclable: true},
		func(off int64, t wal.FrameType, payload []byte) error {
			if t == TypeFollow && off == 0 {
				if _, ok := decodeLinks(payload); ok {
					return nil
				}
			}
			if t != wal.TypeRecord {
				return &messages.CorruptionError{Path: rel, Offset: off, Reason: fmt.Sprintf("frame type %d is not a record", t)}
			}
			r, err := wal.DecodeRecord(payload)
			if err == nil && r.Space != s.gen.Space {
				err = fmt.Errorf("record of space %d in a segment of space %d", r.Space, s.gen.Space)
			}
			if err != nil {
				return &messages.CorruptionError{Path: rel, Offset: off, Reason: err.Error()}
			}
			return fn(off, r)
		})
}

// ReadRecords reads the segment's records back from the file in the order
// they were appended (for the sealer).
// REQUIRES: no batch in flight.
func (s *Segment) ReadRecords(fn func(off int64, r messages.Record) error) error {
	if s.fd < 0 {
		return ErrClosed
	}
	// Only the bytes written: the rest of the preallocated file (64 MiB
	// by default) is zeros or an older life's, and reading and scanning
	// it made every seal cost a read of the whole file.
	data := make([]byte, s.off)
	n, err := ring.ReadAt(s.d, s.fd, data, 0)
	if err != nil {
		return fmt.Errorf("hot: read %s: %w", s.rel(), err)
	}
	if int64(n) < s.off {
		return &messages.CorruptionError{Path: s.rel(), Offset: int64(n),
			Reason: fmt.Sprintf("file ends at %d, %d bytes were written", n, s.off)}
	}
	res, err := s.scanData(data, fn)
	if err == nil && res.End != s.off {
		err = &messages.CorruptionError{Path: s.rel(), Offset: res.End,
			Reason: fmt.Sprintf("the records end at %d, %d bytes were written", res.End, s.off)}
	}
	return err
}

func (s *Segment) note(rev messages.Revision) {
	switch {
	case s.records == 0 || rev > s.maxRev:
		s.revs = append(s.revs, rev)
	default:
		if s.late == nil {
			s.late = make(map[messages.Revision]struct{})
		}
		s.late[rev] = struct{}{}
	}
	if s.records == 0 || rev < s.minRev {
		s.minRev = rev
	}
	if s.records == 0 || rev > s.maxRev {
		s.maxRev = rev
	}
	s.records++
}

// Gen returns the segment's space and generation.
func (s *Segment) Gen() Gen { return s.gen }

// Has reports whether the segment holds a record of revision rev, so that a
// staged entry is never applied twice.
func (s *Segment) Has(rev messages.Revision) bool {
	if s.records == 0 || rev < s.minRev || rev > s.maxRev {
		return false
	}
	if _, ok := s.late[rev]; ok {
		return true
	}
	_, ok := slices.BinarySearch(s.revs, rev)
	return ok
}

// Records returns how many records the segment holds.
func (s *Segment) Records() int { return s.records }

// Size returns the bytes of frames the segment holds.
func (s *Segment) Size() int64 { return s.off }

// RevRange returns the lowest and highest revisions held; 0, 0 when empty.
func (s *Segment) RevRange() (lo, hi messages.Revision) { return s.minRev, s.maxRev }

// Recycled reports whether Create reused a spare file for the segment.
func (s *Segment) Recycled() bool { return s.recycled }

// Immutable reports whether the segment takes no more appends.
func (s *Segment) Immutable() bool { return s.immutable }

// Follow makes s the generation after prev: s's first batch will name
// where prev's durable batches end (see TypeFollow), so that recovery
// holds prev to exactly that end. Call it when s replaces prev as the
// space's active generation (prev frozen or failed). It does nothing once
// s holds a batch.
// REQUIRES: no batch of prev or s in flight; prev is of s's space and an
// older generation.
func (s *Segment) Follow(prev *Segment) {
	if s.off != 0 || s.pending != nil || prev == nil || prev.gen.Space != s.gen.Space || prev.gen.Gen >= s.gen.Gen {
		return
	}
	var ls []link
	if prev.off == 0 {
		// Nothing of prev is durable, its own links included: pass
		// them on.
		ls = append(ls, prev.follows...)
	}
	ls = append(ls, link{gen: prev.gen.Gen, end: prev.off})
	s.follows = ls[max(0, len(ls)-maxLinks):]
}

// Prepare encodes recs as one batch.
// REQUIRES: every record is of the segment's space and valid for
// wal.EncodeRecord. A revision the segment already holds is skipped, so
// that promoting a staged entry twice is harmless; when every record is
// skipped Prepare returns nil, nil.
func (s *Segment) Prepare(recs []messages.Record) (*Pending, error) {
	switch {
	case s.fd < 0:
		return nil, ErrClosed
	case s.immutable:
		return nil, ErrImmutable
	case s.failed != nil:
		return nil, fmt.Errorf("hot: %s failed earlier: %w", s.rel(), s.failed)
	case s.pending != nil:
		return nil, ErrBusy
	}
	p := &Pending{revs: make([]messages.Revision, 0, len(recs))}
	add := make([]int, 0, len(recs)) // indexes in recs of the records to write
	// A direct batch's revisions ascend from above every one held: none
	// is skipped, and no set of those seen is needed.
	fresh := true
	for i := range recs {
		r := &recs[i]
		if r.Space != s.gen.Space {
			return nil, fmt.Errorf("hot: record of space %d appended to %s", r.Space, s.rel())
		}
		if (i == 0 && s.records > 0 && r.Revision <= s.maxRev) || (i > 0 && r.Revision <= recs[i-1].Revision) {
			fresh = false
		}
	}
	var seen map[messages.Revision]bool
	if !fresh {
		seen = make(map[messages.Revision]bool, len(recs))
	}
	for i := range recs {
		r := &recs[i]
		if !fresh {
			if s.Has(r.Revision) || seen[r.Revision] {
				continue
			}
			seen[r.Revision] = true
		}
		add = append(add, i)
		p.revs = append(p.revs, r.Revision)
	}
	if len(add) == 0 {
		return nil, nil
	}
	for {
		s.batch.Begin(s.buf[:0], s.gen.salt())
		p.follows = s.off == 0 && len(s.follows) > 0
		if p.follows {
			ls := s.follows
			s.batch.AddFunc(TypeFollow, func(dst []byte) []byte { return encodeLinks(dst, ls) })
		}
		for _, i := range add {
			r := recs[i]
			s.batch.AddFunc(wal.TypeRecord, func(dst []byte) []byte { return wal.EncodeRecord(dst, r) })
		}
		if s.dfd >= 0 {
			s.batch.PadTo(s.off, Sector)
		}
		need := s.batch.Len()
		s.buf = s.batch.Finish()
		if s.off+int64(need) <= s.opts.SegmentSize {
			break
		}
		s.buf = s.buf[:0]
		if !p.follows {
			return nil, fmt.Errorf("%w: %s holds %d bytes, the batch needs %d of %d", ErrFull, s.rel(), s.off, need, s.opts.SegmentSize)
		}
		// A record that alone nearly fills a file would never fit
		// a fresh one after the follow frame: go without it (the older
		// generations are then read by the torn-tail rule alone).
		s.follows = nil
	}
	p.Off, p.Len = s.off, len(s.buf)
	// The end marker goes with the batch (as much of it as the file
	// holds), so that stale bytes of a recycled file's old lives never
	// sit at the end; the next batch overwrites it.
	room := s.opts.SegmentSize - s.off - int64(p.Len)
	if s.dfd >= 0 && s.off%Sector == 0 {
		p.Write = s.directWrite(p.Len, room)
	} else {
		// Buffered; on a direct segment only the first batch after
		// opening a file whose end is not on a sector, which the batch's
		// padding puts right.
		s.buf = wal.AppendEndMarker(s.buf)[:p.Len+int(min(room, wal.EndMarkerSize))]
		p.Write = ring.Op{Code: ring.OpWrite, FD: s.fd, Buf: s.buf, Offset: s.off, DSync: true}
	}
	s.pending = p
	return p, nil
}

// directWrite returns the O_DIRECT write of the batch in s.buf (n bytes,
// padded to end on a sector) and of one more sector, which starts with
// the end marker, where the file has room for it: whole sectors from a
// Sector-aligned buffer. The next batch starts in that sector; no write
// covers a sector that holds an acknowledged batch.
func (s *Segment) directWrite(n int, room int64) ring.Op {
	b := wal.DirectBuf(&s.dbuf, s.buf[:n], n+int(min(room, Sector)))
	return ring.Op{Code: ring.OpWrite, FD: s.dfd, Buf: b, Offset: s.off, DSync: true}
}

// Committed records that p's write and sync completed.
func (s *Segment) Committed(p *Pending) error {
	if p == nil || p != s.pending {
		return errors.New("hot: Committed with a batch that is not in flight")
	}
	s.pending = nil
	s.off += int64(p.Len)
	for _, r := range p.revs {
		s.note(r)
	}
	if p.follows {
		s.follows = nil // durable in the file now
	}
	return nil
}

// Failed records that p's write or sync failed: the segment is failed
// (invariant 4).
func (s *Segment) Failed(p *Pending, err error) {
	if p == s.pending {
		s.pending = nil
	}
	if s.failed == nil {
		s.failed = fmt.Errorf("hot: write %s at offset %d: %w", s.rel(), p.Off, err)
	}
}

// Append writes recs (less the revisions already held) as one batch and
// waits until it is durable.
func (s *Segment) Append(recs []messages.Record) error {
	p, err := s.Prepare(recs)
	if err != nil || p == nil {
		return err
	}
	cs, err := s.d.Do(p.Ops()...)
	if err == nil {
		for _, c := range cs {
			if c.Err != nil {
				err = &ring.PathError{Op: c.Code.String(), Path: s.rel(), Err: c.Err}
				break
			}
		}
	}
	if err != nil {
		s.Failed(p, err)
		return s.failed
	}
	return s.Committed(p)
}

// Rotate makes s immutable and creates the space's next generation, which
// it returns. After a crash either only s exists or s and an empty next
// generation: both load.
func (s *Segment) Rotate() (*Segment, error) {
	switch {
	case s.fd < 0:
		return nil, ErrClosed
	case s.pending != nil:
		return nil, ErrBusy
	case s.immutable:
		return nil, ErrImmutable
	}
	next, err := Create(s.d, s.opts, Gen{s.gen.Space, s.gen.Gen + 1})
	if err != nil {
		return nil, err
	}
	s.immutable = true
	next.Follow(s)
	s.closeDirect() //nolint:errcheck // every write through it was DSync and has settled
	return next, nil
}

// Freeze makes s immutable without creating the next generation: the
// sealer creates that itself (off the submitter's loop) and hands it over,
// and the submitter freezes the old one once its last batch is settled.
func (s *Segment) Freeze() error {
	switch {
	case s.fd < 0:
		return ErrClosed
	case s.pending != nil:
		return ErrBusy
	}
	// No I/O here: the submitter freezes from its own loop, and a
	// segment's Doer may be one that goes through the submitter. The
	// O_DIRECT fd, which takes no more writes, closes with the segment.
	s.immutable = true
	return nil
}

// Err returns the error that failed the segment, or nil.
func (s *Segment) Err() error { return s.failed }

// Retire removes the segment's file and syncs the directory: it renames
// it to a spare (g.SpareName()) while fewer than Options.MaxSpares spares
// exist, and deletes it otherwise. Either way the generation is gone once
// Retire returns nil or a *CloseWarning; after a crash it is either whole
// or gone. A Retire that failed may be called again; a close that failed
// in an earlier call is reported, as a *CloseWarning, by the call that
// retires the generation.
// REQUIRES: the manifest has committed the block sealed from s.
func (s *Segment) Retire() error {
	switch {
	case s.retired:
		return ErrClosed
	case !s.immutable:
		return fmt.Errorf("hot: retire %s: the active generation cannot be retired", s.rel())
	case s.pending != nil:
		return ErrBusy
	}
	if err := s.closeFDs(); err != nil {
		s.closeErr = err
	}
	cerr := s.closeErr
	keep := false
	// A file whose close failed is not reused: deleted, not kept.
	if s.opts.MaxSpares > 0 && s.failed == nil && cerr == nil {
		list, err := spares(s.d, s.opts.Dir)
		if err != nil {
			return fmt.Errorf("hot: retire %s: list spares: %w", s.rel(), err)
		}
		keep = len(list) < s.opts.MaxSpares
	}
	var err error
	if keep {
		err = ring.Rename(s.d, s.path(), filepath.Join(s.opts.Dir, s.gen.SpareName()))
	} else {
		err = ring.Unlink(s.d, s.path())
	}
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("hot: retire %s: %w", s.rel(), err)
	}
	if err := ring.SyncDir(s.d, s.opts.Dir); err != nil {
		return fmt.Errorf("hot: retire %s: sync directory: %w", s.rel(), err)
	}
	s.retired = true
	if cerr != nil {
		return &CloseWarning{Err: fmt.Errorf("hot: retire %s: close: %w", s.rel(), cerr)}
	}
	return nil
}

// A CloseWarning from Retire says that the generation was retired (its
// file deleted: Retire keeps no file whose close failed as a spare) but
// closing its fds failed. Nothing is lost: the generation's records are in
// the block the manifest committed before Retire, and the fd is released
// whatever close returns. The caller logs it; it is not a failure to retry
// (a second Retire returns ErrClosed).
type CloseWarning struct{ Err error }

func (w *CloseWarning) Error() string { return w.Err.Error() }
func (w *CloseWarning) Unwrap() error { return w.Err }

// Close releases the segment's fd. It is idempotent.
// REQUIRES: no batch in flight.
func (s *Segment) Close() error {
	if s.pending != nil {
		return ErrBusy
	}
	derr := s.closeDirect()
	if s.fd < 0 {
		return derr
	}
	fd := s.fd
	s.fd = -1
	if err := ring.Close(s.d, fd); err != nil {
		return fmt.Errorf("hot: close %s: %w", s.rel(), err)
	}
	return derr
}
