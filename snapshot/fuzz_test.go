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
				r, ok, err := b.Get(e.Key, e.Point)
				if err != nil || !ok || r.Revision < e.Revision {
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

// FuzzDecodeEdits decodes arbitrary manifest frame payloads: decoding must
// fail cleanly or yield edits that encode and decode to themselves, and
// applying them to a state must not panic.
func FuzzDecodeEdits(f *testing.F) {
	for _, b := range someEdits() {
		f.Add(EncodeEdits(nil, b))
	}
	var all []Edit
	for _, b := range someEdits() {
		all = append(all, b...)
	}
	f.Add(EncodeEdits(nil, all))
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, payload []byte) {
		edits, err := DecodeEdits(payload)
		if err != nil {
			return
		}
		again, err := DecodeEdits(EncodeEdits(nil, edits))
		if err != nil {
			t.Fatalf("re-encoded edits do not decode: %v", err)
		}
		if !slices.Equal(edits, again) {
			t.Fatalf("round trip changed the edits: %v != %v", edits, again)
		}
		if st, err := NewState().With(edits...); err == nil {
			st.Edits()
			st.Spaces()
		}
	})
}
