package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"path/filepath"
	"slices"
	"sort"
	"strconv"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
)

// Block file format, version 1 (all integers little-endian):
//
//	header   blockHeaderSize bytes:
//	           magic "RPBLOCK\x00", version u32, dims u32, space u32,
//	           reserved u32, id u64, count u64, minKey u64, maxKey u64,
//	           minRev u64, maxRev u64, bloomBits u64, bloomK u32,
//	           reserved u32, dataLen u64
//	index    count entries of indexEntrySize bytes: key u64, rev u64,
//	         off u32 (the record's offset in data), sorted by (key, rev)
//	bloom    bloomBits/8 bytes
//	data     count records: flags u8 (bit 0: tombstone), dims coordinates
//	         u32, value length uvarint, value
//	checksum SHA-256 of every byte before it
//
// The index is a fixed-width table, so a lookup binary-searches it in place
// without decoding records. Every length is checked against the file size
// when a block is opened, and the whole structure is validated then, so the
// accessors of an open Block cannot run off its bytes.

const (
	blockVersion    = 1
	blockHeaderSize = 96
	indexEntrySize  = 20
	checksumSize    = sha256.Size
	// maxBlockData bounds the data section so that an index offset fits
	// in u32; blocks are a few MiB (Config.SealBytes), far below it.
	maxBlockData = 1<<32 - 1
	// bloomBitsPerKey gives a false-positive rate near 1% with
	// bloomHashes hash functions (k = ln2 * bits/key ≈ 6.9).
	bloomBitsPerKey = 10
	bloomHashes     = 7
)

var blockMagic = [8]byte{'R', 'P', 'B', 'L', 'O', 'C', 'K', 0}

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

// EncodeBlock builds the bytes of a block from entries, which it sorts by
// (key, revision) (a copy; entries is not modified). It refuses an empty
// block, two entries with the same key and revision, one key at two
// different points, points of different lengths or lengths outside 1..16,
// and a tombstone with a value.
func EncodeBlock(space messages.SpaceID, id uint64, entries []Entry) ([]byte, BlockMeta, error) {
	if len(entries) == 0 {
		return nil, BlockMeta{}, errors.New("snapshot: empty block")
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
		return nil, BlockMeta{}, fmt.Errorf("snapshot: block %d: point with %d coordinates", id, dims)
	}
	meta := BlockMeta{Space: space, ID: id, Count: uint64(len(es)),
		MinKey: es[0].Key, MaxKey: es[len(es)-1].Key, MinRev: es[0].Revision, MaxRev: es[0].Revision}
	dataLen := 0
	distinct := 0
	for i := range es {
		e := &es[i]
		if len(e.Point) != dims {
			return nil, BlockMeta{}, fmt.Errorf("snapshot: block %d: points of %d and %d coordinates", id, dims, len(e.Point))
		}
		if e.Tombstone && len(e.Value) > 0 {
			return nil, BlockMeta{}, fmt.Errorf("snapshot: block %d: tombstone at revision %d has a value", id, e.Revision)
		}
		if i == 0 || e.Key != es[i-1].Key {
			distinct++
		} else {
			if e.Revision == es[i-1].Revision {
				return nil, BlockMeta{}, fmt.Errorf("snapshot: block %d: key %d revision %d twice", id, e.Key, e.Revision)
			}
			if !slices.Equal(e.Point, es[i-1].Point) {
				return nil, BlockMeta{}, fmt.Errorf("snapshot: block %d: key %d at points %v and %v", id, e.Key, es[i-1].Point, e.Point)
			}
		}
		meta.MinRev = min(meta.MinRev, e.Revision)
		meta.MaxRev = max(meta.MaxRev, e.Revision)
		dataLen += 1 + 4*dims + uvarintLen(uint64(len(e.Value))) + len(e.Value)
	}
	if dataLen > maxBlockData {
		return nil, BlockMeta{}, fmt.Errorf("snapshot: block %d: %d bytes of records, more than %d", id, dataLen, maxBlockData)
	}
	bloomBits := uint64(distinct*bloomBitsPerKey+63) / 64 * 64
	indexOff := blockHeaderSize
	bloomOff := indexOff + indexEntrySize*len(es)
	dataOff := bloomOff + int(bloomBits/8)
	size := dataOff + dataLen + checksumSize
	buf := make([]byte, size)

	h := buf[:blockHeaderSize]
	copy(h, blockMagic[:])
	le := binary.LittleEndian
	le.PutUint32(h[8:], blockVersion)
	le.PutUint32(h[12:], uint32(dims))
	le.PutUint32(h[16:], uint32(space))
	le.PutUint64(h[24:], id)
	le.PutUint64(h[32:], meta.Count)
	le.PutUint64(h[40:], meta.MinKey)
	le.PutUint64(h[48:], meta.MaxKey)
	le.PutUint64(h[56:], uint64(meta.MinRev))
	le.PutUint64(h[64:], uint64(meta.MaxRev))
	le.PutUint64(h[72:], bloomBits)
	le.PutUint32(h[80:], bloomHashes)
	le.PutUint64(h[88:], uint64(dataLen))

	bloom := buf[bloomOff:dataOff]
	data := buf[dataOff : dataOff+dataLen]
	off := 0
	for i := range es {
		e := &es[i]
		ix := buf[indexOff+i*indexEntrySize:]
		le.PutUint64(ix, e.Key)
		le.PutUint64(ix[8:], uint64(e.Revision))
		le.PutUint32(ix[16:], uint32(off))
		if e.Tombstone {
			data[off] = 1
		}
		off++
		for _, c := range e.Point {
			le.PutUint32(data[off:], c)
			off += 4
		}
		off += binary.PutUvarint(data[off:], uint64(len(e.Value)))
		off += copy(data[off:], e.Value)
		bloomAdd(bloom, bloomBits, bloomHashes, e.Key)
	}
	meta.Checksum = sha256.Sum256(buf[:size-checksumSize])
	copy(buf[size-checksumSize:], meta.Checksum[:])
	meta.Size = int64(size)
	return buf, meta, nil
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

// WriteBlock writes entries as block id of space under the engine
// directory dir (BlockPath) crash-safely: it creates the block directories
// (syncing their parents), writes a temporary file, fsyncs it, renames it
// into place and syncs the directory. After a crash the block is either
// wholly there or absent. It returns the block's meta for the manifest.
func WriteBlock(d ring.Doer, dir string, space messages.SpaceID, id uint64, entries []Entry) (BlockMeta, error) {
	buf, meta, err := EncodeBlock(space, id, entries)
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
		if err := ring.SyncDir(d, step.parent); err != nil {
			return BlockMeta{}, fmt.Errorf("snapshot: write block %d: %w", id, err)
		}
	}
	if err := ring.WriteFileAtomic(d, BlockPath(dir, space, id), buf); err != nil {
		return BlockMeta{}, fmt.Errorf("snapshot: write block %d: %w", id, err)
	}
	return meta, nil
}

// Block is an open, verified block held in memory. It is immutable and
// safe for concurrent use.
type Block struct {
	meta      BlockMeta
	dims      int
	index     []byte // count * indexEntrySize
	bloom     []byte
	bloomBits uint64
	bloomK    uint32
	data      []byte
}

// OpenBlock reads the whole block file at path and verifies it (DecodeBlock).
// Corruption is reported as a *messages.CorruptionError naming path.
func OpenBlock(d ring.Doer, path string) (*Block, error) {
	data, err := ring.ReadFile(d, path)
	if err != nil {
		return nil, fmt.Errorf("snapshot: open block: %w", err)
	}
	return DecodeBlock(path, data)
}

// OpenBlockFor opens the block that want describes, under the engine
// directory dir, and checks that the file is that block: its space, id,
// size and checksum must match, or the error is a *messages.CorruptionError
// (a misdirected or stale block file).
func OpenBlockFor(d ring.Doer, dir string, want BlockMeta) (*Block, error) {
	path := BlockPath(dir, want.Space, want.ID)
	b, err := OpenBlock(d, path)
	if err != nil {
		return nil, err
	}
	if b.meta != want {
		return nil, &messages.CorruptionError{Path: path, Offset: 0,
			Reason: fmt.Sprintf("block is space %d id %d checksum %x, manifest expects space %d id %d checksum %x",
				b.meta.Space, b.meta.ID, b.meta.Checksum[:8], want.Space, want.ID, want.Checksum[:8])}
	}
	return b, nil
}

// DecodeBlock verifies and decodes the bytes of a block file; path is only
// used in errors. The Block keeps data (its values alias it). It never
// panics and never trusts a length beyond len(data): every failure is a
// *messages.CorruptionError.
func DecodeBlock(path string, data []byte) (*Block, error) {
	bad := func(off int, format string, args ...any) error {
		return &messages.CorruptionError{Path: path, Offset: int64(off), Reason: "block: " + fmt.Sprintf(format, args...)}
	}
	if len(data) < blockHeaderSize+checksumSize {
		return nil, bad(0, "%d bytes, shorter than header and checksum", len(data))
	}
	body := len(data) - checksumSize
	sum := sha256.Sum256(data[:body])
	if !bytes.Equal(sum[:], data[body:]) {
		return nil, bad(body, "checksum mismatch")
	}
	le := binary.LittleEndian
	h := data[:blockHeaderSize]
	if !bytes.Equal(h[:8], blockMagic[:]) {
		return nil, bad(0, "bad magic")
	}
	if v := le.Uint32(h[8:]); v != blockVersion {
		return nil, bad(8, "version %d, want %d", v, blockVersion)
	}
	b := &Block{meta: BlockMeta{
		Space:  messages.SpaceID(le.Uint32(h[16:])),
		ID:     le.Uint64(h[24:]),
		Count:  le.Uint64(h[32:]),
		MinKey: le.Uint64(h[40:]),
		MaxKey: le.Uint64(h[48:]),
		MinRev: messages.Revision(le.Uint64(h[56:])),
		MaxRev: messages.Revision(le.Uint64(h[64:])),
		Size:   int64(len(data)),
	}}
	copy(b.meta.Checksum[:], data[body:])
	dims := le.Uint32(h[12:])
	if dims < 1 || dims > maxDims {
		return nil, bad(12, "dims %d", dims)
	}
	b.dims = int(dims)
	b.bloomBits = le.Uint64(h[72:])
	b.bloomK = le.Uint32(h[80:])
	dataLen := le.Uint64(h[88:])
	rest := uint64(body - blockHeaderSize)
	count := b.meta.Count
	// Each record takes an index entry and at least 2+4*dims data bytes.
	if count == 0 || count > rest/(indexEntrySize+2+4*uint64(dims)) {
		return nil, bad(32, "count %d does not fit %d bytes", count, rest)
	}
	indexLen := count * indexEntrySize
	if b.bloomBits == 0 || b.bloomBits%64 != 0 || b.bloomBits/8 > rest-indexLen {
		return nil, bad(72, "bloom of %d bits does not fit", b.bloomBits)
	}
	if b.bloomK < 1 || b.bloomK > 32 {
		return nil, bad(80, "bloom hash count %d", b.bloomK)
	}
	if dataLen != rest-indexLen-b.bloomBits/8 || dataLen > maxBlockData {
		return nil, bad(88, "data length %d, the file leaves %d", dataLen, rest-indexLen-b.bloomBits/8)
	}
	indexOff := blockHeaderSize
	bloomOff := indexOff + int(indexLen)
	dataOff := bloomOff + int(b.bloomBits/8)
	b.index = data[indexOff:bloomOff]
	b.bloom = data[bloomOff:dataOff]
	b.data = data[dataOff:body]

	// Validate every index entry and record, so that the accessors can
	// decode without checks.
	minRev, maxRev := ^uint64(0), uint64(0)
	for i := 0; i < int(count); i++ {
		at := indexOff + i*indexEntrySize
		k, r, off := b.entry(i)
		if i > 0 {
			pk, pr, poff := b.entry(i - 1)
			if k < pk || (k == pk && r <= pr) {
				return nil, bad(at, "index entry %d out of (key, revision) order", i)
			}
			if off <= poff {
				return nil, bad(at, "index entry %d: offset %d not after %d", i, off, poff)
			}
		} else if off != 0 {
			return nil, bad(at, "first record at offset %d", off)
		}
		end := len(b.data)
		if i+1 < int(count) {
			_, _, next := b.entry(i + 1)
			if next > len(b.data) {
				return nil, bad(at+indexEntrySize, "index entry %d: offset %d beyond data", i+1, next)
			}
			end = next
		}
		if err := b.checkRecord(off, end); err != "" {
			return nil, bad(dataOff+off, "record %d: %s", i, err)
		}
		if i > 0 {
			if pk, _, poff := b.entry(i - 1); pk == k && !bytes.Equal(b.data[poff+1:poff+1+4*b.dims], b.data[off+1:off+1+4*b.dims]) {
				return nil, bad(dataOff+off, "record %d: key %d at two points", i, k)
			}
		}
		minRev, maxRev = min(minRev, r), max(maxRev, r)
		if !b.bloomHas(k) {
			return nil, bad(bloomOff, "bloom filter misses key %d", k)
		}
	}
	first, _, _ := b.entry(0)
	last, _, _ := b.entry(int(count) - 1)
	if first != b.meta.MinKey || last != b.meta.MaxKey {
		return nil, bad(40, "key range [%d, %d], records span [%d, %d]", b.meta.MinKey, b.meta.MaxKey, first, last)
	}
	if messages.Revision(minRev) != b.meta.MinRev || messages.Revision(maxRev) != b.meta.MaxRev {
		return nil, bad(56, "revision range [%d, %d], records span [%d, %d]", b.meta.MinRev, b.meta.MaxRev, minRev, maxRev)
	}
	return b, nil
}

// checkRecord validates the record in data[off:end]; it returns a reason
// or "".
func (b *Block) checkRecord(off, end int) string {
	fixed := 1 + 4*b.dims
	if end-off < fixed+1 {
		return "too short"
	}
	flags := b.data[off]
	if flags > 1 {
		return fmt.Sprintf("flags %#x", flags)
	}
	vlen, n := binary.Uvarint(b.data[off+fixed : end])
	if n <= 0 {
		return "bad value length"
	}
	if vlen != uint64(end-off-fixed-n) {
		return fmt.Sprintf("value length %d, record leaves %d", vlen, end-off-fixed-n)
	}
	if flags == 1 && vlen != 0 {
		return "tombstone with a value"
	}
	return ""
}

// entry returns index entry i. REQUIRES: i < count.
func (b *Block) entry(i int) (key, rev uint64, off int) {
	e := b.index[i*indexEntrySize:]
	le := binary.LittleEndian
	return le.Uint64(e), le.Uint64(e[8:]), int(le.Uint32(e[16:]))
}

func (b *Block) key(i int) uint64 {
	return binary.LittleEndian.Uint64(b.index[i*indexEntrySize:])
}

// record decodes record i. REQUIRES: i < count (validated at open).
func (b *Block) record(i int) messages.Record {
	_, rev, off := b.entry(i)
	le := binary.LittleEndian
	r := messages.Record{Space: b.meta.Space, Revision: messages.Revision(rev), Tombstone: b.data[off] == 1}
	p := make(messages.Point, b.dims)
	at := off + 1
	for j := range p {
		p[j] = le.Uint32(b.data[at:])
		at += 4
	}
	r.Point = p
	vlen, n := binary.Uvarint(b.data[at:])
	at += n
	if !r.Tombstone {
		r.Value = b.data[at : at+int(vlen) : at+int(vlen)]
	}
	return r
}

// Meta returns the block's description.
func (b *Block) Meta() BlockMeta { return b.meta }

// Len returns the number of records, every revision counted.
func (b *Block) Len() int { return int(b.meta.Count) }

// search returns the first index whose key is >= key.
func (b *Block) search(key uint64) int {
	return sort.Search(b.Len(), func(i int) bool { return b.key(i) >= key })
}

// Get returns the newest record with key (tombstones included) and true,
// or false when the block holds no record with that key. When p is not nil
// it must be the record's point; keys are unique per point in a space, so a
// mismatch means the caller's key is wrong and Get reports false.
// The record's Value aliases the block's memory: do not modify it.
func (b *Block) Get(key uint64, p messages.Point) (messages.Record, bool) {
	if key < b.meta.MinKey || key > b.meta.MaxKey {
		return messages.Record{}, false
	}
	i := b.search(key)
	if i == b.Len() || b.key(i) != key {
		return messages.Record{}, false
	}
	for i+1 < b.Len() && b.key(i+1) == key {
		i++
	}
	r := b.record(i)
	if p != nil && !slices.Equal(p, r.Point) {
		return messages.Record{}, false
	}
	return r, true
}

// MayContain reports whether the block may hold key: false means it
// certainly does not (key range and Bloom filter).
func (b *Block) MayContain(key uint64) bool {
	return key >= b.meta.MinKey && key <= b.meta.MaxKey && b.bloomHas(key)
}

// Scan calls fn, in key order, with the newest record (tombstones
// included) of every key that lies in one of ranges, until fn returns
// false. Ranges should be sorted and disjoint, as Ranges returns them; a
// key is reported at most once even when they are not sorted by Lo or
// overlap, but keys of a range that starts below an earlier one's end are
// skipped. Values alias the block's memory.
func (b *Block) Scan(ranges []KeyRange, fn func(messages.Record) bool) {
	next := uint64(0) // lowest key not yet passed
	started := false
	for _, r := range ranges {
		lo := r.Lo
		if started {
			if next == 0 { // passed the largest key
				return
			}
			lo = max(lo, next)
		}
		if lo > r.Hi || lo > b.meta.MaxKey || r.Hi < b.meta.MinKey {
			continue
		}
		for i := b.search(lo); i < b.Len(); {
			k := b.key(i)
			if k > r.Hi {
				break
			}
			j := i
			for j+1 < b.Len() && b.key(j+1) == k {
				j++
			}
			if !fn(b.record(j)) {
				return
			}
			started, next = true, k+1
			i = j + 1
		}
	}
}

// All calls fn with every record of the block, every revision, in (key,
// revision) order, until fn returns false. Values alias the block's memory.
func (b *Block) All(fn func(Entry) bool) {
	for i := range b.Len() {
		if !fn(Entry{Key: b.key(i), Record: b.record(i)}) {
			return
		}
	}
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
