package snapshot

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
)

// fixChecksums returns data with every checksum a block file carries
// recomputed, as far as its footer and index can be followed: each page's
// CRC, the CRC of index, filter and footer, and the SHA-256. What only a
// bug or a forger produces — a damaged structure under valid checksums —
// then reaches the structural checks behind them.
func fixChecksums(data []byte) []byte {
	out := slices.Clone(data)
	size := uint64(len(out))
	if size < blockHeaderSize+tailSize {
		return out
	}
	le := binary.LittleEndian
	footOff := size - tailSize
	pages := uint64(le.Uint32(out[footOff+68:]))
	indexOff := le.Uint64(out[footOff+72:])
	if indexOff >= blockHeaderSize && indexOff <= footOff && pages <= (footOff-indexOff)/indexEntrySize {
		start := uint64(blockHeaderSize)
		for i := range pages {
			end := le.Uint64(out[indexOff+i*indexEntrySize+8:])
			if end < start+pageCRCSize || end > indexOff {
				break
			}
			crc := crc32.Update(0, castagnoli, le.AppendUint64(nil, start))
			crc = crc32.Update(crc, castagnoli, out[start:end-pageCRCSize])
			le.PutUint32(out[end-pageCRCSize:], crc)
			start = end
		}
		le.PutUint32(out[footOff+footerCRCAt:], crc32.Checksum(out[indexOff:footOff+footerCRCAt], castagnoli))
	}
	sum := sha256.Sum256(out[:size-checksumSize])
	copy(out[size-checksumSize:], sum[:])
	return out
}

// memDoer serves the reads of one file held in memory: the on-demand
// read path without a disk.
type memDoer struct{ data []byte }

func (m memDoer) Do(ops ...ring.Op) ([]ring.Completion, error) {
	out := make([]ring.Completion, len(ops))
	for i, op := range ops {
		c := ring.Completion{Token: op.Token, Code: op.Code, Buf: op.Buf}
		switch op.Code {
		case ring.OpOpen:
			c.Res = 3
		case ring.OpRead:
			if op.Offset < int64(len(m.data)) {
				c.Res = int64(copy(op.Buf, m.data[op.Offset:]))
			}
		case ring.OpClose:
		default:
			c.Err = errors.New("memDoer: unsupported op")
		}
		out[i] = c
	}
	return out, nil
}

// exerciseBlock reads b every way; every failure must be a
// *CorruptionError (the reads themselves cannot fail).
func exerciseBlock(t *testing.T, b *Block) {
	corrupt := func(err error) {
		var ce *messages.CorruptionError
		if err != nil && !errors.As(err, &ce) {
			t.Fatalf("error %v is not a *CorruptionError", err)
		}
	}
	m := b.Meta()
	n := 0
	corrupt(b.All(func(e Entry) bool {
		n++
		if n%8 == 1 { // a sample: Get reads a page like All does
			r, ok, err := b.Get(e.Key, e.Point)
			corrupt(err)
			if err == nil && (!ok || r.Revision < e.Revision) {
				t.Fatalf("Get(%d) = %v, %v; All gave revision %d", e.Key, r, ok, e.Revision)
			}
		}
		return n < 1000
	}))
	corrupt(b.Scan([]KeyRange{{0, ^uint64(0)}, {m.MinKey, m.MaxKey}}, func(messages.Record) bool { return true }))
	corrupt(b.Range(m.MinKey, m.MaxKey, func(Entry) bool { return true }))
	_, _, err := b.Get(m.MaxKey, nil)
	corrupt(err)
	_, _, err = b.Get(m.MinKey, nil)
	corrupt(err)
}

// checkForged opens data whole (DecodeBlock) and on demand (a Cache over
// memDoer, expecting the meta the file's own footer gives): each must fail
// with a *CorruptionError or yield a block that reads without panicking.
func checkForged(t *testing.T, data []byte) {
	if b, err := DecodeBlock("fuzz", data); err != nil {
		var ce *messages.CorruptionError
		if !errors.As(err, &ce) || ce.Offset < 0 || ce.Offset > int64(len(data)) {
			t.Fatalf("DecodeBlock: %v", err)
		}
	} else {
		exerciseBlock(t, b)
	}
	size := int64(len(data))
	if size < blockHeaderSize+tailSize {
		return
	}
	f, err := parseFooter("fuzz", size, data[size-tailSize:])
	if err != nil {
		return
	}
	c := NewCache(CacheOptions{Bytes: 1 << 20, Doer: memDoer{data}})
	defer c.Close()
	b, err := c.OpenBlockFor("/", f.meta)
	if err != nil {
		var ce *messages.CorruptionError
		if !errors.As(err, &ce) {
			t.Fatalf("OpenBlockFor: %v", err)
		}
		return
	}
	exerciseBlock(t, b)
}

// TestBlockForgedStructure flips bytes of a small block and fixes every
// checksum, then reads it whole and on demand (checkForged).
func TestBlockForgedStructure(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	var rev messages.Revision
	// Two pages' worth, so that page boundaries are forged too.
	good, _, err := EncodeBlock(7, 1, genEntries(t, rng, 120, &rev))
	require.NoError(t, err)
	refused := 0
	for off := range len(good) - checksumSize {
		bad := slices.Clone(good)
		bad[off] ^= byte(1) << (off % 8)
		bad = fixChecksums(bad)
		if _, err := DecodeBlock("mem", bad); err != nil {
			refused++
		}
		checkForged(t, bad)
	}
	// Most bytes are structure; values and reserved words are free.
	require.Greater(t, refused, len(good)/4)
}

// FuzzBlockForged feeds arbitrary bytes, with their checksums fixed, to
// both readers of a block file (checkForged).
func FuzzBlockForged(f *testing.F) {
	rng := rand.New(rand.NewPCG(11, 11))
	var rev messages.Revision
	for _, n := range []int{1, 3, 60} {
		buf, _, err := EncodeBlock(3, uint64(n), genEntries(f, rng, n, &rev))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(buf)
	}
	f.Add(make([]byte, blockHeaderSize+tailSize))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkForged(t, data)
		checkForged(t, fixChecksums(data))
	})
}
