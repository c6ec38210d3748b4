package snapshot

import (
	"crypto/sha256"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ringpipe/ringpipe/messages"
)

// resum returns data with its trailing checksum recomputed, so that the
// structural decoder behind the checksum gets exercised. Short inputs come
// back unchanged.
func resum(data []byte) []byte {
	if len(data) < checksumSize {
		return data
	}
	out := slices.Clone(data)
	body := len(out) - checksumSize
	sum := sha256.Sum256(out[:body])
	copy(out[body:], sum[:])
	return out
}

// FuzzOpenBlock decodes arbitrary bytes as a block file, as read and with
// the checksum fixed up: decoding must fail with a corruption error or
// yield a block whose every accessor works without panicking.
func FuzzOpenBlock(f *testing.F) {
	rng := rand.New(rand.NewPCG(9, 9))
	var rev messages.Revision
	for _, n := range []int{1, 3, 20} {
		buf, _, err := EncodeBlock(3, uint64(n), genEntries(f, rng, n, &rev))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(buf)
	}
	f.Add([]byte{})
	f.Add(make([]byte, blockHeaderSize+checksumSize))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, in := range [][]byte{data, resum(data)} {
			b, err := DecodeBlock("fuzz", in)
			if err != nil {
				if _, ok := err.(*messages.CorruptionError); !ok {
					t.Fatalf("error %v is not a *CorruptionError", err)
				}
				continue
			}
			m := b.Meta()
			n := 0
			b.All(func(e Entry) bool {
				n++
				r, ok := b.Get(e.Key, e.Point)
				if !ok || r.Revision < e.Revision {
					t.Fatalf("Get(%d) = %v, %v; All gave revision %d", e.Key, r, ok, e.Revision)
				}
				if !b.MayContain(e.Key) {
					t.Fatalf("MayContain(%d) false for a present key", e.Key)
				}
				return true
			})
			if uint64(n) != m.Count {
				t.Fatalf("All gave %d records, count %d", n, m.Count)
			}
			b.Scan([]KeyRange{{0, ^uint64(0)}, {m.MinKey, m.MaxKey}}, func(messages.Record) bool { return true })
			b.Get(m.MaxKey+1, nil)
		}
	})
}
