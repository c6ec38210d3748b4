package wal

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ringpipe/ringpipe/messages"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type scanned struct {
	off     int64
	t       FrameType
	payload []byte
}

func scanAll(t *testing.T, data []byte, mode RecoveryMode, salt uint32) ([]scanned, ScanResult, error) {
	t.Helper()
	var got []scanned
	res, err := Scan(data, ScanOptions{Path: "f.log", Mode: mode, Salt: salt}, func(off int64, ft FrameType, p []byte) error {
		got = append(got, scanned{off, ft, append([]byte(nil), p...)})
		return nil
	})
	return got, res, err
}

// buildLog returns a log of batches (sizes[i] frames in batch i, payloads
// of varying length) followed by pad zero bytes, and each batch's offset.
func buildLog(sizes []int, pad int) (data []byte, starts []int) {
	rng := rand.New(rand.NewPCG(1, 2))
	var b Batch
	for i, n := range sizes {
		starts = append(starts, len(data))
		b.Begin(data, 0)
		for j := 0; j < n; j++ {
			p := make([]byte, rng.IntN(700))
			for k := range p {
				p[k] = byte(rng.Uint32() | 1) // non-zero so that damage is visible
			}
			b.Add(FrameType(1+(i+j)%3), p)
		}
		data = b.Finish()
	}
	starts = append(starts, len(data))
	return append(data, make([]byte, pad)...), starts
}

func TestFrameRoundTrip(t *testing.T) {
	var data []byte
	var want []scanned
	for i := 0; i < 50; i++ {
		p := bytes.Repeat([]byte{byte(i)}, i*7)
		want = append(want, scanned{int64(len(data)), FrameType(i%255 + 1), p})
		data = AppendFrame(data, FrameType(i%255+1), p)
		assert.Zero(t, len(data)%FrameAlign, "frames stay aligned")
	}
	end := int64(len(data))
	data = append(data, make([]byte, 4096)...)
	for _, mode := range []RecoveryMode{TolerateTornTail, Strict} {
		var got []scanned
		e, torn, err := ScanFrames("f.log", data, mode, func(off int64, ft FrameType, p []byte) error {
			got = append(got, scanned{off, ft, append([]byte{}, p...)})
			return nil
		})
		require.NoError(t, err)
		assert.False(t, torn)
		assert.Equal(t, end, e)
		assert.Equal(t, want, got)
	}
}

func TestFrameEmptyAndZero(t *testing.T) {
	for _, data := range [][]byte{nil, {}, make([]byte, 3), make([]byte, 1<<16)} {
		got, res, err := scanAll(t, data, Strict, 0)
		require.NoError(t, err)
		assert.Empty(t, got)
		assert.Equal(t, ScanResult{}, res)
	}
}

func TestFrameSaltSeparatesLives(t *testing.T) {
	var b Batch
	b.Begin(nil, 7)
	b.Add(1, []byte("new life"))
	data := b.Finish()
	got, _, err := scanAll(t, data, Strict, 7)
	require.NoError(t, err)
	require.Len(t, got, 1)
	// Read with another salt, the frame is not valid: in a zeroed file a
	// torn tail, not data.
	got, res, err := scanAll(t, data, TolerateTornTail, 8)
	require.NoError(t, err)
	assert.Empty(t, got)
	assert.True(t, res.Torn)
	// A recycled file read as a zeroed one: stale frames are a torn tail.
	old, _ := buildLog([]int{3, 4, 5}, 0) // salt 0
	copy(old, data)
	got, res, err = scanAll(t, old, TolerateTornTail, 7)
	require.NoError(t, err)
	assert.Len(t, got, 1)
	assert.True(t, res.Torn, "stale frames read as a torn tail")
	assert.Equal(t, int64(len(data)), res.End)
}

func TestFrameCallbackError(t *testing.T) {
	data, _ := buildLog([]int{1, 1, 1}, 64)
	stop := errors.New("stop")
	n := 0
	_, _, err := ScanFrames("f", data, Strict, func(int64, FrameType, []byte) error {
		n++
		if n == 2 {
			return stop
		}
		return nil
	})
	assert.ErrorIs(t, err, stop)
	assert.Equal(t, 2, n)
}

// TestTornVersusCorrupt is the table of damage that ScanFrames must tell
// apart: damage confined to the last batch is a torn tail, damage with a
// later batch intact is corruption.
func TestTornVersusCorrupt(t *testing.T) {
	sizes := []int{2, 1, 5, 3, 4} // the last batch is a torn write's candidate
	const sector = 512
	base, starts := buildLog(sizes, 8192)
	lastStart, lastEnd := starts[len(sizes)-1], starts[len(sizes)]
	midStart := starts[2]
	type tc struct {
		name    string
		damage  func(d []byte) []byte
		torn    bool // else corrupt
		badFrom int  // offset the corruption error names is >= this
		intact  bool // the damage spares every batch: End is past the last
	}
	flip := func(off int) func([]byte) []byte {
		return func(d []byte) []byte { d[off] ^= 0x10; return d }
	}
	zero := func(from, to int) func([]byte) []byte {
		return func(d []byte) []byte { clear(d[from:to]); return d }
	}
	garbage := func(from, to int) func([]byte) []byte {
		return func(d []byte) []byte {
			rng := rand.New(rand.NewPCG(uint64(from), 9))
			for i := from; i < to; i++ {
				d[i] = byte(rng.Uint32())
			}
			return d
		}
	}
	// A sector-aligned hole inside the last batch, after its first frame.
	secIn := (lastStart/sector + 2) * sector
	require.Less(t, secIn+sector, lastEnd, "the last batch spans several sectors")
	cases := []tc{
		{"truncate in last header", func(d []byte) []byte { return d[:lastStart+10] }, true, 0, false},
		{"truncate in last batch", func(d []byte) []byte { return d[:lastEnd-100] }, true, 0, false},
		{"truncate inside last, zeros after", zero(lastEnd-300, lastEnd), true, 0, false},
		{"zero first sector of last batch", zero(lastStart, lastStart+sector), true, 0, false},
		{"zero a sector in the middle of the last batch", zero(secIn, secIn+sector), true, 0, false},
		{"garbage sector in the middle of the last batch", garbage(secIn, secIn+sector), true, 0, false},
		{"garbage after the end", garbage(lastEnd+1000, lastEnd+1000+sector), true, 0, true},
		{"flip a bit in the last frame's payload", flip(lastEnd - 30), true, 0, false},
		{"flip a bit in the last batch's first header", flip(lastStart + 5), true, 0, false},
		{"flip a bit in a middle frame's payload", flip(midStart + 40), false, midStart, false},
		{"flip a bit in a middle header", flip(midStart + 4), false, midStart, false},
		{"zero a middle batch's first sector", zero(midStart, midStart+64), false, midStart, false},
		{"garbage over a middle frame", garbage(starts[1], starts[1]+50), false, starts[1], false},
		{"flip a bit in the first frame", flip(3), false, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := c.damage(append([]byte(nil), base...))
			got, res, err := scanAll(t, data, TolerateTornTail, 0)
			if c.torn {
				require.NoError(t, err)
				assert.True(t, res.Torn)
				n, end := len(sizes)-1, lastStart
				if c.intact {
					n, end = len(sizes), lastEnd
				}
				assert.Equal(t, int64(end), res.End, "the whole torn batch is dropped")
				assert.Equal(t, sum(sizes[:n]), len(got))
				assert.GreaterOrEqual(t, res.Dirty, res.End)
				assert.True(t, isZero(data[res.Dirty:]), "nothing non-zero after Dirty")
				// Strict refuses the same data.
				_, _, err = scanAll(t, data, Strict, 0)
				var ce *messages.CorruptionError
				require.ErrorAs(t, err, &ce)
				assert.Equal(t, "f.log", ce.Path)
				assert.GreaterOrEqual(t, ce.Offset, int64(lastStart))
				// After zeroing [End, Dirty) the log is clean at End.
				clear(data[res.End:res.Dirty])
				_, res2, err := scanAll(t, data, Strict, 0)
				require.NoError(t, err)
				assert.Equal(t, res.End, res2.End)
				return
			}
			for _, mode := range []RecoveryMode{TolerateTornTail, Strict} {
				_, _, err := scanAll(t, data, mode, 0)
				var ce *messages.CorruptionError
				require.ErrorAs(t, err, &ce, "mode %v", mode)
				assert.ErrorIs(t, err, messages.ErrCorrupt)
				assert.Equal(t, "f.log", ce.Path)
				assert.GreaterOrEqual(t, ce.Offset, int64(c.badFrom))
				assert.Less(t, ce.Offset, int64(lastStart))
			}
		})
	}
}

func sum(xs []int) (n int) {
	for _, x := range xs {
		n += x
	}
	return n
}

// TestTornAtEverySector zeroes, and fills with garbage, each 512-byte
// sector of a multi-sector last batch in turn, and every prefix of it:
// each is a torn tail that drops the whole batch.
func TestTornAtEverySector(t *testing.T) {
	base, starts := buildLog([]int{3, 12}, 4096)
	lastStart, lastEnd := starts[1], starts[2]
	for s := lastStart &^ 511; s < lastEnd; s += 512 {
		for _, kind := range []string{"zero", "garbage", "cut"} {
			data := append([]byte(nil), base...)
			lo, hi := max(s, lastStart), min(s+512, lastEnd)
			switch kind {
			case "zero":
				clear(data[lo:hi])
			case "garbage":
				for i := lo; i < hi; i++ {
					data[i] = byte(i*31 + 7)
				}
			case "cut":
				clear(data[lo:])
			}
			got, res, err := scanAll(t, data, TolerateTornTail, 0)
			require.NoError(t, err, "%s sector at %d", kind, s)
			// A write cut before its first byte landed left nothing.
			nothing := kind == "cut" && lo == lastStart
			assert.Equal(t, !nothing, res.Torn, "%s sector at %d", kind, s)
			assert.Equal(t, int64(lastStart), res.End)
			assert.Equal(t, 3, len(got))
		}
	}
}

func TestFrameLengthAboveMax(t *testing.T) {
	data := AppendFrame(nil, 1, []byte("x"))
	data = AppendFrame(data, 1, []byte("y"))
	// Forge a valid-looking header with a huge length: the header CRC
	// still fails, and no allocation follows the length.
	bad := append([]byte(nil), data...)
	bad[8], bad[9], bad[10], bad[11] = 0xff, 0xff, 0xff, 0x7f
	_, _, err := scanAll(t, bad, TolerateTornTail, 0)
	assert.ErrorIs(t, err, messages.ErrCorrupt)
	f, why := parse(bad, 0, 0)
	assert.NotEmpty(t, why)
	assert.Nil(t, f.payload)
}

func TestFrameSize(t *testing.T) {
	for n := 0; n < 100; n++ {
		assert.Len(t, AppendFrame(nil, 1, make([]byte, n)), FrameSize(n), fmt.Sprint(n))
	}
}

func BenchmarkFrameEncode(b *testing.B) {
	for _, n := range []int{64, 1024, 16384} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			p := make([]byte, n)
			buf := make([]byte, 0, FrameSize(n))
			b.SetBytes(int64(n))
			for b.Loop() {
				buf = AppendFrame(buf[:0], 1, p)
			}
		})
	}
}

func BenchmarkFrameDecode(b *testing.B) {
	for _, n := range []int{64, 1024, 16384} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var data []byte
			for len(data) < 1<<20 {
				data = AppendFrame(data, 1, make([]byte, n))
			}
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, _, err := ScanFrames("b", data, Strict, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestPadTo: a padded batch ends on the alignment from any 8-aligned base,
// whatever its size (gaps too small for a header included), and a scan
// hands over its frames without the pad.
func TestPadTo(t *testing.T) {
	for base := int64(0); base < 1024; base += 8 {
		for n := 0; n < 600; n += 7 {
			var b Batch
			b.Begin(make([]byte, base), 5)
			b.Add(TypeRecord, make([]byte, n))
			b.PadTo(base, 512)
			data := b.Finish()
			require.Zero(t, len(data)%512, "base %d, payload %d", base, n)
			require.Less(t, len(data)-int(base), FrameSize(n)+512+FrameHeader, "base %d, payload %d: padded by at most a sector and a header", base, n)
			var types []FrameType
			res, err := Scan(data[base:], ScanOptions{Mode: Strict, Salt: 5}, func(_ int64, ft FrameType, _ []byte) error {
				types = append(types, ft)
				return nil
			})
			require.NoError(t, err)
			assert.Equal(t, []FrameType{TypeRecord}, types, "base %d, payload %d", base, n)
			assert.Equal(t, 1, res.Frames)
			assert.Equal(t, int64(len(data))-base, res.End)
		}
	}
}
