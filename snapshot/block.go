package snapshot

import (
	"context"

	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
	"path/filepath"
	"slices"
	"sort"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/internal/testhook"
	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/wal"
)

// Block file format, version 3 (all integers little-endian):
//
//	header   blockHeaderSize bytes: magic "RPBLOCK\x00", version u32,
//	         reserved u32
//	pages    the records sorted by (key, revision), cut into pages of about
//	         pageTarget bytes and laid back to back from the header on. A
//	         page is its records followed by a CRC-32C (Castagnoli) of the
//	         page's file offset (u64) and its records, so that a page read
//	         on demand is verified alone, and a page read from the wrong
//	         place fails. A record is key u64, revision u64, flags u8 (bit
//	         0: tombstone), dims coordinates u32, value length uvarint,
//	         value. A record larger than pageTarget makes a page of its own.
//	index    one entry per page: its first key u64 and its end offset u64
//	         (page i spans [end of page i-1, end of page i); page 0 starts
//	         at blockHeaderSize)
//	bloom    bloomBits/8 bytes
//	footer   footerSize bytes: dims u32, space u32, id u64, count u64,
//	         minKey u64, maxKey u64, minRev u64, maxRev u64, bloomBits u64,
//	         bloomK u32, pageCount u32, indexOff u64, gen u64, reserved u32,
//	         CRC-32C u32 of index, bloom and the footer before it, magic
//	         "RPBLKEND"; gen is the hot generation sealed into the block
//	         (0: none, a block written by a test or a tool)
//	checksum SHA-256 of every byte before it; the manifest stores it too
//
// Why this shape: an open block keeps in memory only what a lookup needs
// to find its data — the footer's meta, the Bloom filter and the sparse
// index (16 bytes per page, not per record) — and reads one page per
// point lookup on demand (Cache). Index, filter and footer sit at the end,
// behind a CRC of their own, so that opening a block reads only the file's
// tail, and a writer can stream the pages out before it knows them. The
// SHA-256 names the whole contents: the manifest compares it when a block
// is opened (a misdirected or stale file), and DecodeBlock (which holds a
// whole file) and `ringpipe verify` check it against the bytes.
//
// Why gen: a seal cut short leaves a block the manifest does not name while
// its generation is still live; recovery must tell that from a manifest
// that lost the edit naming it (RemoveOrphans), and only the block can say
// which generation it came from.
//
// Versions 1 (a per-record index, checksum only over the whole file) and 2
// (no gen) are refused as corrupt: no released engine wrote them.

const (
	blockVersion    = 3
	blockHeaderSize = 16
	footerSize      = 104
	footerCRCAt     = 92 // the footer's CRC-32C, from the footer's start
	checksumSize    = sha256.Size
	tailSize        = footerSize + checksumSize
	indexEntrySize  = 16
	pageCRCSize     = 4
	// pageTarget is the page size a writer aims for: one 4 KiB read per
	// point lookup, and a sparse index of 16 bytes per 4 KiB of records
	// (0.4% of the data) in memory.
	pageTarget = 4096
	// maxPageSize bounds one page (a record of the largest value the
	// engine takes, 64 MiB, with room to spare), so that offsets inside a
	// page fit in u32.
	maxPageSize = 1 << 30
	// bloomBitsPerKey gives a false-positive rate near 1% with
	// bloomHashes hash functions (k = ln2 * bits/key ≈ 6.9).
	bloomBitsPerKey = 10
	bloomHashes     = 7
	// writeChunk is how many bytes of pages WriteBlock gathers before it
	// writes them: a 2 MiB block goes out in 8 writes through the
	// sealer's Doer, and the sealer holds no more than this of the
	// encoded block at once.
	writeChunk = 256 << 10
)

var (
	blockMagic  = [8]byte{'R', 'P', 'B', 'L', 'O', 'C', 'K', 0}
	footerMagic = [8]byte{'R', 'P', 'B', 'L', 'K', 'E', 'N', 'D'}
	castagnoli  = crc32.MakeTable(crc32.Castagnoli)
)

// minRecordSize is the smallest record of a block of dims dimensions.
func minRecordSize(dims int) int { return 8 + 8 + 1 + 4*dims + 1 }

// Entry is a record with its Hilbert key, the unit WriteBlock sorts and
// stores.
type Entry struct {
	Key uint64
	messages.Record
}

// Entries computes the keys of recs in spec, checking each point.
func Entries(spec messages.SpaceSpec, recs []messages.Record) ([]Entry, error) {
	out := make([]Entry, len(recs))
	for i, r := range recs {
		if err := spec.CheckPoint(r.Point); err != nil {
			return nil, fmt.Errorf("snapshot: record %d: %w", i, err)
		}
		out[i] = Entry{Key: Key(r.Point, spec.Dims, spec.Bits), Record: r}
	}
	return out, nil
}

// BlockMeta describes a sealed block; the manifest stores it for every
// block it names, checksum included, so that a misdirected or stale block
// file is caught when opened (OpenBlockFor).
type BlockMeta struct {
	Space    messages.SpaceID
	ID       uint64
	Count    uint64 // records, every revision counted
	MinKey   uint64
	MaxKey   uint64
	MinRev   messages.Revision
	MaxRev   messages.Revision
	Checksum [checksumSize]byte // SHA-256 of the file before its trailer
	Size     int64              // file size in bytes
}

// KeyRange returns the keys the block may hold.
func (m BlockMeta) KeyRange() KeyRange { return KeyRange{m.MinKey, m.MaxKey} }

// BlockDir returns the directory of space's blocks under the engine
// directory dir.
func BlockDir(dir string, space messages.SpaceID) string {
	return filepath.Join(dir, "blocks", strconv.FormatUint(uint64(space), 10))
}

// BlockPath returns the path of block id of space under dir.
func BlockPath(dir string, space messages.SpaceID, id uint64) string {
	return filepath.Join(BlockDir(dir, space), strconv.FormatUint(id, 10)+".blk")
}

// ---------------------------------------------------------------------
// Writing

// prepare sorts entries by (key, revision) (a copy; entries is not
// modified), checks them and computes the meta and the number of distinct
// keys. It refuses an empty block, two entries with the same key and
// revision, one key at two different points, points of different lengths
// or lengths outside 1..16, and a tombstone with a value.
func prepare(space messages.SpaceID, id uint64, entries []Entry) ([]Entry, BlockMeta, int, error) {
	if len(entries) == 0 {
		return nil, BlockMeta{}, 0, errors.New("snapshot: empty block")
	}
	es := entries
	if !slices.IsSortedFunc(es, cmpEntry) {
		// Sort a permutation, not the entries: moving 80-byte structs
		// dominated BenchmarkBlockBuild.
		order := make([]int32, len(entries))
		for i := range order {
			order[i] = int32(i)
		}
		slices.SortFunc(order, func(a, b int32) int { return cmpEntryP(&entries[a], &entries[b]) })
		es = make([]Entry, len(entries))
		for i, j := range order {
			es[i] = entries[j]
		}
	}
	dims := len(es[0].Point)
	if dims < 1 || dims > maxDims {
		return nil, BlockMeta{}, 0, fmt.Errorf("snapshot: block %d: point with %d coordinates", id, dims)
	}
	meta := BlockMeta{Space: space, ID: id, Count: uint64(len(es)),
		MinKey: es[0].Key, MaxKey: es[len(es)-1].Key, MinRev: es[0].Revision, MaxRev: es[0].Revision}
	distinct := 0
	for i := range es {
		e := &es[i]
		if len(e.Point) != dims {
			return nil, BlockMeta{}, 0, fmt.Errorf("snapshot: block %d: points of %d and %d coordinates", id, dims, len(e.Point))
		}
		if e.Tombstone && len(e.Value) > 0 {
			return nil, BlockMeta{}, 0, fmt.Errorf("snapshot: block %d: tombstone at revision %d has a value", id, e.Revision)
		}
		if recordSize(dims, len(e.Value))+pageCRCSize > maxPageSize {
			return nil, BlockMeta{}, 0, fmt.Errorf("snapshot: block %d: value of %d bytes", id, len(e.Value))
		}
		if i == 0 || e.Key != es[i-1].Key {
			distinct++
		} else {
			if e.Revision == es[i-1].Revision {
				return nil, BlockMeta{}, 0, fmt.Errorf("snapshot: block %d: key %d revision %d twice", id, e.Key, e.Revision)
			}
			if !slices.Equal(e.Point, es[i-1].Point) {
				return nil, BlockMeta{}, 0, fmt.Errorf("snapshot: block %d: key %d at points %v and %v", id, e.Key, es[i-1].Point, e.Point)
			}
		}
		meta.MinRev = min(meta.MinRev, e.Revision)
		meta.MaxRev = max(meta.MaxRev, e.Revision)
	}
	return es, meta, distinct, nil
}

func recordSize(dims, vlen int) int {
	return 8 + 8 + 1 + 4*dims + uvarintLen(uint64(vlen)) + vlen
}

func cmpEntry(a, b Entry) int { return cmpEntryP(&a, &b) }

func cmpEntryP(a, b *Entry) int {
	switch {
	case a.Key < b.Key:
		return -1
	case a.Key > b.Key:
		return 1
	case a.Revision < b.Revision:
		return -1
	case a.Revision > b.Revision:
		return 1
	}
	return 0
}

func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

// encode writes the block of the sorted, checked entries es (prepare) to
// flush, in chunks of about writeChunk bytes at increasing offsets, or,
// when flush is nil, returns the whole file. It fills in meta's Checksum
// and Size.
//
// Only the chunk being built, the sparse index and the Bloom filter are in
// memory at once: the sealer never holds the whole encoded block.
func encode(es []Entry, meta *BlockMeta, gen uint64, distinct int, flush func(b []byte, off int64) error) ([]byte, error) {
	le := binary.LittleEndian
	dims := len(es[0].Point)
	bloomBits := uint64(distinct*bloomBitsPerKey+63) / 64 * 64
	bloom := make([]byte, bloomBits/8)
	sum := sha256.New()
	var firstKeys, ends []uint64

	capHint := writeChunk + pageTarget
	if flush == nil {
		capHint = blockHeaderSize + len(es)*minRecordSize(dims) + int(bloomBits/8) + tailSize
	}
	out := make([]byte, 0, capHint)
	base := int64(0) // file offset of out[0]
	out = append(out, blockMagic[:]...)
	out = le.AppendUint32(out, blockVersion)
	out = le.AppendUint32(out, 0)

	pageStart := -1 // index in out of the current page, -1 when none is open
	endPage := func() error {
		off := base + int64(pageStart)
		crc := crc32.Update(0, castagnoli, le.AppendUint64(nil, uint64(off)))
		crc = crc32.Update(crc, castagnoli, out[pageStart:])
		out = le.AppendUint32(out, crc)
		ends = append(ends, uint64(base)+uint64(len(out)))
		pageStart = -1
		if flush != nil && len(out) >= writeChunk {
			sum.Write(out)
			if err := flush(out, base); err != nil {
				return err
			}
			base += int64(len(out))
			out = out[:0]
		}
		return nil
	}
	for i := range es {
		e := &es[i]
		n := recordSize(dims, len(e.Value))
		if pageStart >= 0 && len(out)-pageStart+n > pageTarget-pageCRCSize {
			if err := endPage(); err != nil {
				return nil, err
			}
		}
		if pageStart < 0 {
			pageStart = len(out)
			firstKeys = append(firstKeys, e.Key)
		}
		out = le.AppendUint64(out, e.Key)
		out = le.AppendUint64(out, uint64(e.Revision))
		flags := byte(0)
		if e.Tombstone {
			flags = 1
		}
		out = append(out, flags)
		for _, c := range e.Point {
			out = le.AppendUint32(out, c)
		}
		out = binary.AppendUvarint(out, uint64(len(e.Value)))
		out = append(out, e.Value...)
		bloomAdd(bloom, bloomBits, bloomHashes, e.Key)
	}
	if err := endPage(); err != nil {
		return nil, err
	}

	indexOff := uint64(base) + uint64(len(out))
	meta0 := len(out) // index, bloom and footer are contiguous in out
	for i := range firstKeys {
		out = le.AppendUint64(out, firstKeys[i])
		out = le.AppendUint64(out, ends[i])
	}
	out = append(out, bloom...)
	out = le.AppendUint32(out, uint32(dims))
	out = le.AppendUint32(out, uint32(meta.Space))
	out = le.AppendUint64(out, meta.ID)
	out = le.AppendUint64(out, meta.Count)
	out = le.AppendUint64(out, meta.MinKey)
	out = le.AppendUint64(out, meta.MaxKey)
	out = le.AppendUint64(out, uint64(meta.MinRev))
	out = le.AppendUint64(out, uint64(meta.MaxRev))
	out = le.AppendUint64(out, bloomBits)
	out = le.AppendUint32(out, bloomHashes)
	out = le.AppendUint32(out, uint32(len(firstKeys)))
	out = le.AppendUint64(out, indexOff)
	out = le.AppendUint64(out, gen)
	out = le.AppendUint32(out, 0)
	out = le.AppendUint32(out, crc32.Checksum(out[meta0:], castagnoli))
	out = append(out, footerMagic[:]...)
	sum.Write(out)
	out = sum.Sum(out)
	copy(meta.Checksum[:], out[len(out)-checksumSize:])
	meta.Size = base + int64(len(out))
	if flush != nil {
		if err := flush(out, base); err != nil {
			return nil, err
		}
		return nil, nil
	}
	return out, nil
}

// EncodeBlock builds the bytes of a block from entries, which it sorts by
// (key, revision) (a copy; entries is not modified). It refuses an empty
// block, two entries with the same key and revision, one key at two
// different points, points of different lengths or lengths outside 1..16,
// and a tombstone with a value. The block names no generation (Gen 0).
func EncodeBlock(space messages.SpaceID, id uint64, entries []Entry) ([]byte, BlockMeta, error) {
	return encodeBlock(space, id, 0, entries)
}

// encodeBlock is EncodeBlock of a block sealed from generation gen.
func encodeBlock(space messages.SpaceID, id, gen uint64, entries []Entry) ([]byte, BlockMeta, error) {
	es, meta, distinct, err := prepare(space, id, entries)
	if err != nil {
		return nil, BlockMeta{}, err
	}
	buf, err := encode(es, &meta, gen, distinct, nil)
	if err != nil {
		return nil, BlockMeta{}, err
	}
	return buf, meta, nil
}

// WriteBlock writes entries as block id of space under the engine
// directory dir (BlockPath) crash-safely: it creates the block directories
// (syncing their parents), streams the block into a temporary file in
// chunks of writeChunk bytes, fsyncs it, renames it into place and syncs
// the directory. After a crash the block is either wholly there or absent
// (a temporary file is an orphan that recovery removes). It returns the
// block's meta for the manifest. The block names no generation (Gen 0).
func WriteBlock(d ring.Doer, dir string, space messages.SpaceID, id uint64, entries []Entry) (BlockMeta, error) {
	return WriteBlockDirect(d, dir, space, id, 0, entries, false)
}

// WriteBlockDirect is WriteBlock for the seal of hot generation gen, which
// the block records (Block.Gen). When direct is set (Config.DirectIO), it
// writes the block's whole sectors through an O_DIRECT fd, from an aligned
// buffer, and only its last partial sector through the buffered fd, so
// that the file has exactly the block's size with no truncate; the fsync
// that follows makes both durable. A file system that refuses O_DIRECT
// gets buffered writes.
func WriteBlockDirect(d ring.Doer, dir string, space messages.SpaceID, id, gen uint64, entries []Entry, direct bool) (BlockMeta, error) {
	es, meta, distinct, err := prepare(space, id, entries)
	if err != nil {
		return BlockMeta{}, err
	}
	blocks := filepath.Join(dir, "blocks")
	sdir := BlockDir(dir, space)
	// NB: a directory created by an earlier call is synced again; two
	// fsyncs of small directories per seal are cheap next to the block's.
	for _, step := range []struct{ mk, parent string }{{blocks, dir}, {sdir, blocks}} {
		if err := ring.Mkdir(d, step.mk, 0o755); err != nil {
			return BlockMeta{}, fmt.Errorf("snapshot: write block %d: %w", id, err)
		}
		if err := syncDir(d, step.parent); err != nil {
			return BlockMeta{}, fmt.Errorf("snapshot: write block %d: %w", id, err)
		}
	}
	path := BlockPath(dir, space, id)
	tmp := path + ".tmp"
	fd, err := ring.Open(d, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, 0o644)
	if err != nil {
		return BlockMeta{}, fmt.Errorf("snapshot: write block %d: %w", id, err)
	}
	w := &blockWriter{d: d, fd: fd, dfd: -1}
	if direct {
		w.dfd, err = wal.OpenDirect(d, tmp)
		if err != nil {
			ring.Close(d, fd) //nolint:errcheck // the open error is the one to report
			return BlockMeta{}, fmt.Errorf("snapshot: write block %d: %w", id, err)
		}
	}
	_, werr := encode(es, &meta, gen, distinct, w.write)
	if werr == nil {
		werr = w.finish()
	}
	if werr == nil {
		werr = ring.Fsync(d, fd)
	}
	cerr := w.close()
	if err := errors.Join(werr, cerr); err != nil {
		// Nothing names tmp: remove it rather than leave one per failed
		// seal while the engine runs (a full disk fails many); a crash
		// leaves it to RemoveOrphans at the next Start.
		ring.Unlink(d, tmp) //nolint:errcheck // best effort, see above
		return BlockMeta{}, fmt.Errorf("snapshot: write block %d: %w", id, err)
	}
	if err := ring.Rename(d, tmp, path); err != nil {
		return BlockMeta{}, fmt.Errorf("snapshot: write block %d: %w", id, err)
	}
	if err := syncDir(d, sdir); err != nil {
		return BlockMeta{}, fmt.Errorf("snapshot: write block %d: %w", id, err)
	}
	return meta, nil
}

// blockWriter writes a block's chunks, which come at contiguous,
// increasing offsets: through fd, or, with an O_DIRECT dfd, whole sectors
// through dfd and the final partial one through fd (finish).
type blockWriter struct {
	d       ring.Doer
	fd, dfd int32
	carry   []byte // bytes after the last whole sector written direct
	off     int64  // file offset of carry[0]
	dbuf    []byte // aligned copy for direct writes
}

func (w *blockWriter) write(b []byte, off int64) error {
	if w.dfd < 0 {
		return ring.WriteAt(w.d, w.fd, b, off)
	}
	w.carry = append(w.carry, b...)
	if n := len(w.carry) &^ (wal.Sector - 1); n > 0 {
		if err := ring.WriteAt(w.d, w.dfd, wal.DirectBuf(&w.dbuf, w.carry[:n], n), w.off); err != nil {
			return err
		}
		w.carry = w.carry[:copy(w.carry, w.carry[n:])]
		w.off += int64(n)
	}
	return nil
}

// finish writes what is left of a direct block: less than a sector.
func (w *blockWriter) finish() error {
	if w.dfd < 0 || len(w.carry) == 0 {
		return nil
	}
	return ring.WriteAt(w.d, w.fd, w.carry, w.off)
}

func (w *blockWriter) close() error {
	var err error
	if w.dfd >= 0 {
		err = ring.Close(w.d, w.dfd)
	}
	return errors.Join(err, ring.Close(w.d, w.fd))
}

// syncDir makes the entries just created or renamed in dir durable. The
// planted bug testhook.SkipDirSync skips it, as it skips the directory
// sync of ring.WriteFileAtomic, so that the harness's self-check can show
// that a power loss then loses a block the manifest names.
func syncDir(d ring.Doer, dir string) error {
	if testhook.Planted(testhook.SkipDirSync) {
		return nil
	}
	return ring.SyncDir(d, dir)
}

// ---------------------------------------------------------------------
// Opening

// Block is an open, verified sealed block. It holds in memory its meta, its
// Bloom filter and its sparse index; its records are in pages that it reads
// on demand through a Cache (OpenBlockFor on a Cache), or that it holds
// decoded (DecodeBlock, OpenBlock). It is immutable and safe for
// concurrent use.
//
// Reads that fail — an I/O error, a page whose CRC does not match — return
// the error; a damaged page is a *messages.CorruptionError with the block's
// path and the page's offset.
type Block struct {
	meta      BlockMeta
	gen       uint64 // the hot generation sealed into it, 0 if none
	path      string // in errors
	dims      int
	firstKeys []uint64 // first key of each page
	ends      []uint64 // end offset of each page (its CRC included)
	bloom     []byte
	bloomBits uint64
	bloomK    uint32

	// Exactly one of these is set.
	pages []*page // every page, decoded (DecodeBlock)
	src   *cachedFile
}

// page is one decoded, verified page: its records and where each starts.
// Immutable once built; records read from it alias data.
type page struct {
	data []byte   // the records, without the CRC
	offs []uint32 // start of each record in data
}

func (p *page) len() int { return len(p.offs) }

func (p *page) key(j int) uint64 { return binary.LittleEndian.Uint64(p.data[p.offs[j]:]) }

// search returns the first record whose key is >= key.
func (p *page) search(key uint64) int {
	return sort.Search(p.len(), func(j int) bool { return p.key(j) >= key })
}

// record decodes record j. REQUIRES: j < p.len(); the page was verified.
func (p *page) record(space messages.SpaceID, dims, j int) (uint64, messages.Record) {
	le := binary.LittleEndian
	d := p.data[p.offs[j]:]
	key := le.Uint64(d)
	r := messages.Record{Space: space, Revision: messages.Revision(le.Uint64(d[8:])), Tombstone: d[16] == 1}
	pt := make(messages.Point, dims)
	at := 17
	for i := range pt {
		pt[i] = le.Uint32(d[at:])
		at += 4
	}
	r.Point = pt
	vlen, n := binary.Uvarint(d[at:])
	at += n
	if !r.Tombstone {
		r.Value = d[at : at+int(vlen) : at+int(vlen)]
	}
	return key, r
}

// footer is a block's parsed footer.
type footer struct {
	dims      int
	meta      BlockMeta
	bloomBits uint64
	bloomK    uint32
	pages     int
	indexOff  uint64
	gen       uint64
	bloomOff  uint64
	footOff   uint64 // where the footer starts
}

// blockError returns a *messages.CorruptionError about the block at path.
func blockError(path string, off int64, format string, args ...any) error {
	return &messages.CorruptionError{Path: path, Offset: off, Reason: "block: " + fmt.Sprintf(format, args...)}
}

// parseFooter checks the last tailSize bytes of a block file of size bytes
// (footer and checksum) and returns what they say. It trusts no length
// that does not fit the file.
func parseFooter(path string, size int64, tail []byte) (footer, error) {
	var f footer
	bad := func(off int, format string, args ...any) error {
		return blockError(path, size-tailSize+int64(off), format, args...)
	}
	if size < blockHeaderSize+tailSize || len(tail) != tailSize {
		return f, blockError(path, 0, "%d bytes, shorter than header, footer and checksum", size)
	}
	le := binary.LittleEndian
	h := tail[:footerSize]
	if !bytes.Equal(h[footerCRCAt+4:footerSize], footerMagic[:]) {
		return f, bad(footerCRCAt+4, "bad footer magic")
	}
	f.dims = int(le.Uint32(h))
	f.meta = BlockMeta{
		Space:  messages.SpaceID(le.Uint32(h[4:])),
		ID:     le.Uint64(h[8:]),
		Count:  le.Uint64(h[16:]),
		MinKey: le.Uint64(h[24:]),
		MaxKey: le.Uint64(h[32:]),
		MinRev: messages.Revision(le.Uint64(h[40:])),
		MaxRev: messages.Revision(le.Uint64(h[48:])),
		Size:   size,
	}
	copy(f.meta.Checksum[:], tail[footerSize:])
	f.bloomBits = le.Uint64(h[56:])
	f.bloomK = le.Uint32(h[64:])
	pages := uint64(le.Uint32(h[68:]))
	f.indexOff = le.Uint64(h[72:])
	f.gen = le.Uint64(h[80:])
	f.footOff = uint64(size) - tailSize
	if f.dims < 1 || f.dims > maxDims {
		return f, bad(0, "dims %d", f.dims)
	}
	if f.meta.MinKey > f.meta.MaxKey || f.meta.MinRev > f.meta.MaxRev {
		return f, bad(24, "key range [%d, %d], revision range [%d, %d]", f.meta.MinKey, f.meta.MaxKey, f.meta.MinRev, f.meta.MaxRev)
	}
	if f.bloomK < 1 || f.bloomK > 32 {
		return f, bad(64, "bloom hash count %d", f.bloomK)
	}
	minRec := uint64(minRecordSize(f.dims))
	// Pages lie in [blockHeaderSize, indexOff), each at least one record
	// and a CRC; index and bloom fill [indexOff, footOff) exactly.
	if f.indexOff < blockHeaderSize || f.indexOff > f.footOff {
		return f, bad(72, "index at %d outside the file", f.indexOff)
	}
	data := f.indexOff - blockHeaderSize
	if pages == 0 || pages > data/(minRec+pageCRCSize) {
		return f, bad(68, "%d pages in %d bytes", pages, data)
	}
	if f.meta.Count < pages || f.meta.Count > data/minRec {
		return f, bad(16, "count %d does not fit %d pages of %d bytes", f.meta.Count, pages, data)
	}
	rest := f.footOff - f.indexOff
	if rest < pages*indexEntrySize {
		return f, bad(72, "index of %d pages does not fit", pages)
	}
	f.bloomOff = f.indexOff + pages*indexEntrySize
	if f.bloomBits == 0 || f.bloomBits%64 != 0 || f.bloomBits/8 != f.footOff-f.bloomOff {
		return f, bad(56, "bloom of %d bits, the file leaves %d bytes", f.bloomBits, f.footOff-f.bloomOff)
	}
	f.pages = int(pages)
	return f, nil
}

// newBlock builds a Block from its footer and the bytes of its index,
// bloom and footer (region, from f.indexOff to f.footOff+footerSize),
// verifying their CRC and the index.
func newBlock(path string, f footer, region []byte) (*Block, error) {
	le := binary.LittleEndian
	if uint64(len(region)) != f.footOff+footerSize-f.indexOff {
		return nil, blockError(path, int64(f.indexOff), "index region of %d bytes", len(region))
	}
	crcAt := len(region) - footerSize + footerCRCAt
	if got, want := crc32.Checksum(region[:crcAt], castagnoli), le.Uint32(region[crcAt:]); got != want {
		return nil, blockError(path, int64(f.footOff)+footerCRCAt, "index, bloom and footer CRC mismatch")
	}
	b := &Block{meta: f.meta, gen: f.gen, path: path, dims: f.dims, bloomBits: f.bloomBits, bloomK: f.bloomK,
		firstKeys: make([]uint64, f.pages), ends: make([]uint64, f.pages)}
	minPage := uint64(minRecordSize(f.dims) + pageCRCSize)
	prev := uint64(blockHeaderSize)
	for i := range f.pages {
		at := i * indexEntrySize
		k, end := le.Uint64(region[at:]), le.Uint64(region[at+8:])
		if end < prev+minPage || end-prev > maxPageSize || end > f.indexOff {
			return nil, blockError(path, int64(f.indexOff)+int64(at), "page %d spans [%d, %d)", i, prev, end)
		}
		if (i > 0 && k < b.firstKeys[i-1]) || k < f.meta.MinKey || k > f.meta.MaxKey {
			return nil, blockError(path, int64(f.indexOff)+int64(at), "page %d: first key %d out of order", i, k)
		}
		b.firstKeys[i], b.ends[i] = k, end
		prev = end
	}
	if prev != f.indexOff {
		return nil, blockError(path, int64(f.indexOff), "pages end at %d, the index starts at %d", prev, f.indexOff)
	}
	if b.firstKeys[0] != f.meta.MinKey {
		return nil, blockError(path, int64(f.indexOff), "first key %d, the footer says %d", b.firstKeys[0], f.meta.MinKey)
	}
	bl := region[f.bloomOff-f.indexOff : f.footOff-f.indexOff]
	b.bloom = slices.Clone(bl) // region may be a larger read's buffer
	return b, nil
}

// pageStart returns the offset of page i.
func (b *Block) pageStart(i int) uint64 {
	if i == 0 {
		return blockHeaderSize
	}
	return b.ends[i-1]
}

// decodePage verifies page i, whose bytes (CRC included) are raw, and
// indexes its records. It never trusts a length beyond raw.
func (b *Block) decodePage(i int, raw []byte) (*page, error) {
	start := b.pageStart(i)
	bad := func(off int, format string, args ...any) error {
		return blockError(b.path, int64(start)+int64(off), "page %d: %s", i, fmt.Sprintf(format, args...))
	}
	if uint64(len(raw)) != b.ends[i]-start {
		return nil, bad(0, "read %d bytes of %d", len(raw), b.ends[i]-start)
	}
	le := binary.LittleEndian
	body := raw[:len(raw)-pageCRCSize]
	crc := crc32.Update(0, castagnoli, le.AppendUint64(nil, start))
	if crc32.Update(crc, castagnoli, body) != le.Uint32(raw[len(body):]) {
		return nil, bad(0, "CRC mismatch")
	}
	fixed := 17 + 4*b.dims
	// Offsets gather in scratch and are copied out at their exact size:
	// a cached page should not carry a slice sized for the smallest
	// records.
	var scratch [256]uint32
	p := &page{data: body, offs: scratch[:0]}
	var pk, pr uint64
	for at := 0; at < len(body); {
		if len(body)-at < fixed+1 {
			return nil, bad(at, "record too short")
		}
		k, r, flags := le.Uint64(body[at:]), le.Uint64(body[at+8:]), body[at+16]
		vlen, n := binary.Uvarint(body[at+fixed:])
		switch {
		case flags > 1:
			return nil, bad(at, "flags %#x", flags)
		case n <= 0 || vlen > uint64(len(body)-at-fixed-n):
			return nil, bad(at, "bad value length")
		case flags == 1 && vlen != 0:
			return nil, bad(at, "tombstone with a value")
		case k < b.meta.MinKey || k > b.meta.MaxKey || messages.Revision(r) < b.meta.MinRev || messages.Revision(r) > b.meta.MaxRev:
			return nil, bad(at, "key %d revision %d outside the block's ranges", k, r)
		}
		if len(p.offs) == 0 {
			if k != b.firstKeys[i] {
				return nil, bad(at, "first key %d, the index says %d", k, b.firstKeys[i])
			}
		} else {
			if k < pk || (k == pk && r <= pr) {
				return nil, bad(at, "record out of (key, revision) order")
			}
			if k == pk && !bytes.Equal(body[p.offs[len(p.offs)-1]+17:][:4*b.dims], body[at+17:][:4*b.dims]) {
				return nil, bad(at, "key %d at two points", k)
			}
		}
		if i+1 < len(b.firstKeys) && k > b.firstKeys[i+1] {
			return nil, bad(at, "key %d after the next page's first key %d", k, b.firstKeys[i+1])
		}
		p.offs = append(p.offs, uint32(at))
		pk, pr = k, r
		at += fixed + n + int(vlen)
	}
	p.offs = slices.Clone(p.offs)
	return p, nil
}

// OpenBlock reads the whole block file at path and verifies it
// (DecodeBlock): a block held in memory, for tools and tests. The engine
// opens blocks through a Cache instead. Corruption is reported as a
// *messages.CorruptionError naming path.
func OpenBlock(d ring.Doer, path string) (*Block, error) {
	data, err := ring.ReadFile(d, path)
	if err != nil {
		return nil, fmt.Errorf("snapshot: open block: %w", err)
	}
	return DecodeBlock(path, data)
}

// OpenBlockFor opens the block that want describes, under the engine
// directory dir, as OpenBlock does (whole, in memory), and checks that the
// file is that block (checkMeta).
func OpenBlockFor(d ring.Doer, dir string, want BlockMeta) (*Block, error) {
	path := BlockPath(dir, want.Space, want.ID)
	b, err := OpenBlock(d, path)
	if err != nil {
		return nil, err
	}
	if err := checkMeta(path, b.meta, want); err != nil {
		return nil, err
	}
	return b, nil
}

// checkMeta reports a *messages.CorruptionError unless a block file's
// meta is the one the manifest names: its space, id, size and checksum
// must match (a misdirected or stale block file).
func checkMeta(path string, got, want BlockMeta) error {
	if got == want {
		return nil
	}
	return &messages.CorruptionError{Path: path, Offset: 0,
		Reason: fmt.Sprintf("block is space %d id %d size %d checksum %x, manifest expects space %d id %d size %d checksum %x",
			got.Space, got.ID, got.Size, got.Checksum[:8], want.Space, want.ID, want.Size, want.Checksum[:8])}
}

// DecodeBlock verifies every byte of a block file and decodes it into a
// Block held in memory; path is only used in errors. The Block keeps data
// (its values alias it). It never panics and never trusts a length beyond
// len(data): every failure is a *messages.CorruptionError.
func DecodeBlock(path string, data []byte) (*Block, error) {
	size := int64(len(data))
	if size < blockHeaderSize+tailSize {
		return nil, blockError(path, 0, "%d bytes, shorter than header, footer and checksum", size)
	}
	body := len(data) - checksumSize
	if sum := sha256.Sum256(data[:body]); !bytes.Equal(sum[:], data[body:]) {
		return nil, blockError(path, int64(body), "checksum mismatch")
	}
	if !bytes.Equal(data[:8], blockMagic[:]) {
		return nil, blockError(path, 0, "bad magic")
	}
	if v := binary.LittleEndian.Uint32(data[8:]); v != blockVersion {
		return nil, blockError(path, 8, "version %d, want %d", v, blockVersion)
	}
	f, err := parseFooter(path, size, data[size-tailSize:])
	if err != nil {
		return nil, err
	}
	b, err := newBlock(path, f, data[f.indexOff:f.footOff+footerSize])
	if err != nil {
		return nil, err
	}
	b.pages = make([]*page, f.pages)
	n := uint64(0)
	minRev, maxRev := ^uint64(0), uint64(0)
	for i := range b.pages {
		p, err := b.decodePage(i, data[b.pageStart(i):b.ends[i]])
		if err != nil {
			return nil, err
		}
		if i > 0 {
			// Order across the page boundary; decodePage checked
			// everything inside the page.
			prev := b.pages[i-1]
			lk, _ := prev.record(b.meta.Space, b.dims, prev.len()-1)
			lr := binary.LittleEndian.Uint64(prev.data[prev.offs[prev.len()-1]+8:])
			fr := binary.LittleEndian.Uint64(p.data[8:])
			if lk == p.key(0) && (lr >= fr || !bytes.Equal(prev.data[prev.offs[prev.len()-1]+17:][:4*b.dims], p.data[17:][:4*b.dims])) {
				return nil, blockError(path, int64(b.pageStart(i)), "page %d: key %d continues the previous page out of order", i, lk)
			}
		}
		for j := range p.len() {
			k := p.key(j)
			r := binary.LittleEndian.Uint64(p.data[p.offs[j]+8:])
			minRev, maxRev = min(minRev, r), max(maxRev, r)
			if !b.bloomHas(k) {
				return nil, blockError(path, int64(f.bloomOff), "bloom filter misses key %d", k)
			}
		}
		n += uint64(p.len())
		b.pages[i] = p
	}
	if n != b.meta.Count {
		return nil, blockError(path, size-tailSize+16, "count %d, the pages hold %d records", b.meta.Count, n)
	}
	last := b.pages[len(b.pages)-1]
	if k := last.key(last.len() - 1); k != b.meta.MaxKey {
		return nil, blockError(path, size-tailSize+32, "max key %d, the records end at %d", b.meta.MaxKey, k)
	}
	if messages.Revision(minRev) != b.meta.MinRev || messages.Revision(maxRev) != b.meta.MaxRev {
		return nil, blockError(path, size-tailSize+40, "revision range [%d, %d], records span [%d, %d]",
			b.meta.MinRev, b.meta.MaxRev, minRev, maxRev)
	}
	return b, nil
}

// ---------------------------------------------------------------------
// Reading

// Meta returns the block's description.
func (b *Block) Meta() BlockMeta { return b.meta }

// Gen returns the hot generation sealed into the block, or 0 when the
// block names none (WriteBlock, EncodeBlock).
func (b *Block) Gen() uint64 { return b.gen }

// Len returns the number of records, every revision counted.
func (b *Block) Len() int { return int(b.meta.Count) }

// Pages returns how many pages the block's records fill.
func (b *Block) Pages() int { return len(b.firstKeys) }

// page returns page i, from memory or through the cache; a read from
// disk gives up when ctx ends.
func (b *Block) page(ctx context.Context, i int) (*page, error) {
	if b.pages != nil {
		return b.pages[i], nil
	}
	return b.src.page(ctx, b, i)
}

// pageFor returns the page that holds the newest record of key if the
// block has one: the last page whose first key is <= key, or -1. Every
// record with key lies in it or before it, and the last one in it.
func (b *Block) pageFor(key uint64) int {
	return sort.Search(len(b.firstKeys), func(i int) bool { return b.firstKeys[i] > key }) - 1
}

// Supersedes reports whether the block holds r's point (whose key is key)
// at r's revision or a newer one: r is sealed already, or overwritten in
// a block. Recovery and ringpipe verify ask it of WAL records and of the
// records of blocks the manifest does not name.
func (b *Block) Supersedes(key uint64, r messages.Record) (bool, error) {
	if b.meta.MaxRev < r.Revision || !b.MayContain(key) {
		return false, nil
	}
	got, ok, err := b.Get(key, r.Point)
	if err != nil {
		return false, err
	}
	return ok && got.Revision >= r.Revision, nil
}

// MayContain reports whether the block may hold key: false means it
// certainly does not (key range and Bloom filter).
func (b *Block) MayContain(key uint64) bool {
	return key >= b.meta.MinKey && key <= b.meta.MaxKey && b.bloomHas(key)
}

// Get returns the newest record with key (tombstones included) and true,
// or false when the block holds no record with that key. When p is not nil
// it must be the record's point; keys are unique per point in a space, so a
// mismatch means the caller's key is wrong and Get reports false. It reads
// at most one page. The record's Value aliases the page's memory, which is
// never modified: do not modify it.
func (b *Block) Get(key uint64, p messages.Point) (messages.Record, bool, error) {
	return b.GetContext(context.Background(), key, p)
}

// GetContext is Get whose page read gives up when ctx ends, with ctx's
// error (the read itself finishes in the background).
func (b *Block) GetContext(ctx context.Context, key uint64, p messages.Point) (messages.Record, bool, error) {
	if key < b.meta.MinKey || key > b.meta.MaxKey {
		return messages.Record{}, false, nil
	}
	i := b.pageFor(key)
	if i < 0 {
		return messages.Record{}, false, nil
	}
	pg, err := b.page(ctx, i)
	if err != nil {
		return messages.Record{}, false, err
	}
	j := pg.search(key+1) - 1 // the last record with a key <= key
	if key == ^uint64(0) {
		j = pg.len() - 1
	}
	if j < 0 || pg.key(j) != key {
		return messages.Record{}, false, nil
	}
	_, r := pg.record(b.meta.Space, b.dims, j)
	if p != nil && !slices.Equal(p, r.Point) {
		return messages.Record{}, false, nil
	}
	return r, true, nil
}

// Range calls fn, in key order, with the newest record (tombstones
// included) of every key in lo..hi, until fn returns false. It reads the
// pages that may hold those keys, one at a time. Values alias the pages'
// memory.
func (b *Block) Range(lo, hi uint64, fn func(Entry) bool) error {
	return b.RangeContext(context.Background(), lo, hi, fn)
}

// RangeContext is Range whose page reads give up when ctx ends.
func (b *Block) RangeContext(ctx context.Context, lo, hi uint64, fn func(Entry) bool) error {
	_, err := b.rangeNewest(ctx, lo, hi, fn)
	return err
}

// rangeNewest is Range; it also reports whether fn asked to stop.
func (b *Block) rangeNewest(ctx context.Context, lo, hi uint64, fn func(Entry) bool) (bool, error) {
	if lo > hi || lo > b.meta.MaxKey || hi < b.meta.MinKey {
		return false, nil
	}
	// The newest record of lo is in pageFor(lo); older ones of it may be
	// before, and are not needed.
	var (
		pend  *page // the page of the pending record, if any
		pendJ int
		pendK uint64
	)
	emit := func() bool {
		_, r := pend.record(b.meta.Space, b.dims, pendJ)
		pend = nil
		return fn(Entry{Key: pendK, Record: r})
	}
	i := max(b.pageFor(lo), 0)
	for first := true; i < len(b.firstKeys) && b.firstKeys[i] <= hi; i, first = i+1, false {
		pg, err := b.page(ctx, i)
		if err != nil {
			return false, err
		}
		j := 0
		if first {
			j = pg.search(lo)
		}
		for ; j < pg.len(); j++ {
			k := pg.key(j)
			if k > hi {
				break
			}
			if pend != nil && k != pendK && !emit() {
				return true, nil
			}
			pend, pendJ, pendK = pg, j, k
		}
	}
	if pend != nil && !emit() {
		return true, nil
	}
	return false, nil
}

// Scan calls fn, in key order, with the newest record (tombstones
// included) of every key that lies in one of ranges, until fn returns
// false. Ranges should be sorted and disjoint, as Ranges returns them; a
// key is reported at most once even when they are not sorted by Lo or
// overlap, but keys of a range that starts below an earlier one's end are
// skipped. Values alias the pages' memory.
func (b *Block) Scan(ranges []KeyRange, fn func(messages.Record) bool) error {
	next := uint64(0) // lowest key not yet passed
	started := false
	for _, r := range ranges {
		lo := r.Lo
		if started {
			if next == 0 { // passed the largest key
				return nil
			}
			lo = max(lo, next)
		}
		stopped, err := b.rangeNewest(context.Background(), lo, r.Hi, func(e Entry) bool {
			started, next = true, e.Key+1
			return fn(e.Record)
		})
		if stopped || err != nil {
			return err
		}
	}
	return nil
}

// All calls fn with every record of the block, every revision, in (key,
// revision) order, until fn returns false. It reads every page, one at a
// time. Values alias the pages' memory.
func (b *Block) All(fn func(Entry) bool) error {
	for i := range b.firstKeys {
		pg, err := b.page(context.Background(), i)
		if err != nil {
			return err
		}
		for j := range pg.len() {
			k, r := pg.record(b.meta.Space, b.dims, j)
			if !fn(Entry{Key: k, Record: r}) {
				return nil
			}
		}
	}
	return nil
}

// Bloom filter: bloomK probes by double hashing of a 64-bit mix of the key
// (Kirsch and Mitzenmacher), over bloomBits bits.

func mix64(x uint64) uint64 {
	// splitmix64's finaliser: a bijection that spreads every input bit.
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func bloomProbes(key uint64) (h1, h2 uint64) {
	h1 = mix64(key)
	h2 = mix64(h1^0x9e3779b97f4a7c15) | 1
	return h1, h2
}

func bloomAdd(bloom []byte, m uint64, k uint32, key uint64) {
	h1, h2 := bloomProbes(key)
	for i := range uint64(k) {
		bit := (h1 + i*h2) % m
		bloom[bit/8] |= 1 << (bit % 8)
	}
}

func (b *Block) bloomHas(key uint64) bool {
	h1, h2 := bloomProbes(key)
	for i := range uint64(b.bloomK) {
		bit := (h1 + i*h2) % b.bloomBits
		if b.bloom[bit/8]&(1<<(bit%8)) == 0 {
			return false
		}
	}
	return true
}
