package wal

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
)

// life writes batches of sizes (frames each) with salt over a copy of base
// the way a recyclable file's writer does: each write is the batch followed
// by an end marker. It returns the image after every write (images[0] is
// base) and the batch boundaries.
func life(base []byte, salt uint32, sizes []int, seed uint64) (images [][]byte, starts []int) {
	return paddedLife(base, salt, sizes, seed, 0)
}

// paddedLife is life as an O_DIRECT writer does it when pad > 0: each batch
// is padded (Batch.PadTo) to end on a multiple of pad, and each write is the
// batch followed by a whole pad-sized unit that starts with the end marker.
func paddedLife(base []byte, salt uint32, sizes []int, seed uint64, pad int) (images [][]byte, starts []int) {
	rng := rand.New(rand.NewPCG(seed, 3))
	img := append([]byte(nil), base...)
	images = append(images, append([]byte(nil), img...))
	off := 0
	var b Batch
	for i, n := range sizes {
		starts = append(starts, off)
		b.Begin(nil, salt)
		for j := 0; j < n; j++ {
			p := make([]byte, 1+rng.IntN(600))
			for k := range p {
				p[k] = byte(rng.Uint32() | 1)
			}
			b.Add(FrameType(1+(i+j)%3), p)
		}
		if pad > 0 {
			b.PadTo(int64(off), pad)
		}
		w := b.Finish()
		n := len(w)
		w = AppendEndMarker(w)
		if pad > 0 {
			w = append(w, make([]byte, n+pad-len(w))...)
		}
		tail := len(w) - n // the marker (and its unit's padding)
		w = w[:min(len(w), len(img)-off)]
		copy(img[off:], w)
		off += len(w) - tail
		images = append(images, append([]byte(nil), img...))
	}
	return images, append(starts, off)
}

func recScan(t *testing.T, data []byte, mode RecoveryMode, salt uint32) ([]scanned, ScanResult, error) {
	t.Helper()
	var got []scanned
	res, err := Scan(data, ScanOptions{Path: "r.seg", Mode: mode, Salt: salt, Recyclable: true},
		func(off int64, ft FrameType, p []byte) error {
			got = append(got, scanned{off, ft, append([]byte(nil), p...)})
			return nil
		})
	return got, res, err
}

// oldLives returns a file image that went through two lives (salts 11 and
// 12), the second shorter than the first, so that the stale bytes after
// any new end start mid-frame.
func oldLives(size int) []byte {
	imgs, _ := life(make([]byte, size), 11, []int{4, 1, 6, 2, 3, 5, 2, 7}, 1)
	img := imgs[len(imgs)-1]
	imgs, _ = life(img, 12, []int{2, 3, 1}, 2)
	return imgs[len(imgs)-1]
}

func TestRecycledLogReplaysNewLifeOnly(t *testing.T) {
	base := oldLives(32 << 10)
	// An empty new life: the old frames are a clean end in Strict mode.
	got, res, err := recScan(t, base, Strict, 13)
	require.NoError(t, err)
	assert.Empty(t, got)
	assert.Equal(t, ScanResult{}, res)
	for n := 1; n <= 4; n++ {
		imgs, starts := life(base, 13, []int{3, 1, 2, 4}[:n], 5)
		img := imgs[len(imgs)-1]
		got, res, err := recScan(t, img, Strict, 13)
		require.NoError(t, err, "%d batches", n)
		assert.False(t, res.Torn)
		assert.Equal(t, int64(starts[n]), res.End)
		assert.Equal(t, res.End, res.Dirty)
		assert.Equal(t, sum([]int{3, 1, 2, 4}[:n]), len(got), "exactly the new frames")
		for _, g := range got {
			assert.Less(t, g.off, res.End, "no stale frame surfaces")
		}
		// Without Recyclable the stale bytes are a torn tail.
		_, res, err = scanAll(t, img, TolerateTornTail, 13)
		require.NoError(t, err)
		assert.True(t, res.Torn)
	}
}

// TestRecycledTornEverySector tears the last write of a new life over
// stale bytes sector by sector (lost, zeroed, garbage, and every prefix):
// the scan keeps the complete batches, drops the torn one, and after the
// repair ([End, Dirty) zeroed) and another append the log reads back
// exactly, in Strict mode.
func TestRecycledTornEverySector(t *testing.T) {
	for _, pad := range []int{0, 512} {
		t.Run(fmt.Sprintf("pad=%d", pad), func(t *testing.T) { testRecycledTornEverySector(t, pad) })
	}
}

func testRecycledTornEverySector(t *testing.T, pad int) {
	base := oldLives(32 << 10)
	sizes := []int{2, 3, 9}
	imgs, starts := paddedLife(base, 21, sizes, 7, pad)
	before, after := imgs[len(imgs)-2], imgs[len(imgs)-1]
	lastStart, lastEnd := starts[2], starts[3]
	writeEnd := lastEnd + EndMarkerSize
	if pad > 0 {
		require.Zero(t, lastStart%pad, "padded batches start on a sector")
		require.Zero(t, lastEnd%pad, "padded batches end on a sector")
		writeEnd = lastEnd + pad
	}
	for s := lastStart &^ 511; s < writeEnd; s += 512 {
		for _, kind := range []string{"lost", "zero", "garbage", "cut"} {
			name := fmt.Sprintf("%s sector at %d", kind, s)
			data := append([]byte(nil), after...)
			lo, hi := max(s, lastStart), min(s+512, writeEnd)
			switch kind {
			case "lost":
				copy(data[lo:hi], before[lo:hi])
			case "zero":
				clear(data[lo:hi])
			case "garbage":
				for i := lo; i < hi; i++ {
					data[i] = byte(i*31 + 7)
				}
			case "cut":
				copy(data[lo:writeEnd], before[lo:writeEnd])
			}
			got, res, err := recScan(t, data, TolerateTornTail, 21)
			require.NoError(t, err, name)
			switch res.End {
			case int64(lastStart):
				assert.Equal(t, sum(sizes[:2]), len(got), name)
				if kind == "garbage" && lo == lastStart {
					assert.True(t, res.Torn, "%s: a garbage first header is a torn tail", name)
				}
			case int64(lastEnd):
				assert.Equal(t, sum(sizes), len(got), name)
				assert.GreaterOrEqual(t, lo, lastEnd-lastEnd%512, "%s: only the marker's sector was damaged", name)
			default:
				t.Fatalf("%s: end %d, want %d or %d", name, res.End, lastStart, lastEnd)
			}
			if res.Torn {
				_, _, err := recScan(t, data, Strict, 21)
				assert.ErrorIs(t, err, messages.ErrCorrupt, name)
			}
			// Repair, append one more batch, and read back in Strict mode.
			clear(data[res.End:res.Dirty])
			var b Batch
			b.Begin(nil, 21)
			b.Add(2, []byte("after the repair"))
			w := AppendEndMarker(b.Finish())
			copy(data[res.End:], w)
			got2, res2, err := recScan(t, data, Strict, 21)
			require.NoError(t, err, name)
			assert.Equal(t, len(got)+1, len(got2), name)
			assert.Equal(t, res.End+int64(len(w)-EndMarkerSize), res2.End, name)
			assert.Equal(t, []byte("after the repair"), got2[len(got2)-1].payload)
		}
	}
}

// TestRecycledCorruption: damage to a batch of the current life that a
// later batch of the current life survived is corruption in both modes,
// whatever the damage looks like (garbage, zeros, a stale-looking header).
func TestRecycledCorruption(t *testing.T) {
	base := oldLives(32 << 10)
	imgs, starts := life(base, 31, []int{2, 3, 2, 1}, 9)
	img := imgs[len(imgs)-1]
	mid := starts[1]
	stale := append([]byte(nil), base[:FrameHeader]...) // a well-formed header of salt 12
	require.True(t, wellFormed(stale))
	cases := map[string]func(d []byte){
		"flip a bit in a middle payload": func(d []byte) { d[mid+FrameHeader+3] ^= 1 },
		"flip a bit in a middle salt":    func(d []byte) { d[mid+5] ^= 1 },
		"zero a middle header":           func(d []byte) { clear(d[mid : mid+FrameHeader]) },
		"stale header over a middle one": func(d []byte) { copy(d[mid:], stale) },
		"garbage over the first frame":   func(d []byte) { copy(d[0:40], base[100:140]) },
	}
	for name, damage := range cases {
		data := append([]byte(nil), img...)
		damage(data)
		for _, mode := range []RecoveryMode{TolerateTornTail, Strict} {
			_, _, err := recScan(t, data, mode, 31)
			var ce *messages.CorruptionError
			require.ErrorAs(t, err, &ce, "%s, %v", name, mode)
			assert.Less(t, ce.Offset, int64(starts[2]), name)
		}
	}
}
