package wal

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
)

func sampleRecords() []messages.Record {
	return []messages.Record{
		{Space: 1, Point: messages.Point{7}, Revision: 1, Value: []byte("hello")},
		{Space: 2, Point: messages.Point{1, 2, 3}, Revision: 1 << 40, Value: []byte{}},
		{Space: 3, Point: messages.Point{0, 0}, Revision: 9, Tombstone: true},
		{Space: 0xffffffff, Point: make(messages.Point, 16), Revision: ^messages.Revision(0), Value: make([]byte, 5000)},
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for _, r := range sampleRecords() {
		p := EncodeRecord([]byte("prefix"), r)
		require.Len(t, p, 6+RecordSize(r))
		got, err := DecodeRecord(p[6:])
		require.NoError(t, err)
		assert.Equal(t, r, got)
		if r.Tombstone {
			assert.Nil(t, got.Value)
		} else {
			assert.NotNil(t, got.Value)
		}
		// The decoded record owns its memory.
		if len(got.Value) > 0 {
			p[len(p)-1] ^= 0xff
			assert.Equal(t, r.Value[len(r.Value)-1], got.Value[len(got.Value)-1])
		}
	}
}

func TestRecordTombstoneDropsValue(t *testing.T) {
	r := messages.Record{Space: 1, Point: messages.Point{1}, Revision: 2, Tombstone: true, Value: []byte("ignored")}
	got, err := DecodeRecord(EncodeRecord(nil, r))
	require.NoError(t, err)
	assert.True(t, got.Tombstone)
	assert.Nil(t, got.Value)
}

func TestRecordDecodeErrors(t *testing.T) {
	good := EncodeRecord(nil, messages.Record{Space: 1, Point: messages.Point{1, 2}, Revision: 5, Value: []byte("abc")})
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := map[string][]byte{
		"empty":           nil,
		"short header":    good[:10],
		"space 0":         mut(func(b []byte) []byte { binary.LittleEndian.PutUint32(b, 0); return b }),
		"revision 0":      mut(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[4:], 0); return b }),
		"unknown flag":    mut(func(b []byte) []byte { b[12] = 2; return b }),
		"reserved byte":   mut(func(b []byte) []byte { b[15] = 1; return b }),
		"0 dims":          mut(func(b []byte) []byte { b[13] = 0; return b }),
		"17 dims":         mut(func(b []byte) []byte { b[13] = 17; return b }),
		"too many dims":   mut(func(b []byte) []byte { b[13] = 16; return b }),
		"value truncated": good[:len(good)-1],
		"trailing byte":   append(append([]byte(nil), good...), 0),
		"huge vlen":       mut(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[24:], 0xffffffff); return b }),
		"tombstone value": mut(func(b []byte) []byte { b[12] = 1; return b }),
	}
	for name, p := range cases {
		_, err := DecodeRecord(p)
		assert.ErrorIs(t, err, ErrBadRecord, name)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	for _, r := range sampleRecords() {
		f.Add(EncodeRecord(nil, r))
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		r, err := DecodeRecord(p)
		if err != nil {
			return
		}
		// A payload that decodes re-encodes to itself.
		assert.Equal(t, p, EncodeRecord(nil, r))
	})
}

func FuzzScanFrames(f *testing.F) {
	log, _ := buildLog([]int{1, 3, 2}, 64)
	f.Add(log, uint8(0))
	f.Add(log[:len(log)-100], uint8(1))
	f.Add(AppendFrame(nil, 1, []byte("x")), uint8(0))
	f.Add([]byte{}, uint8(1))
	imgs, _ := life(oldLives(4096), 13, []int{2, 1}, 4)
	f.Add(imgs[len(imgs)-1], uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, m uint8) {
		// Bit 0 of m picks the mode, bit 1 a recyclable file (salt 13).
		mode := RecoveryMode(m % 2)
		opts := ScanOptions{Path: "fuzz", Mode: mode}
		if m&2 != 0 {
			opts.Recyclable, opts.Salt = true, 13
		}
		var n int
		var last int64 = -1
		res, err := Scan(data, opts, func(off int64, ft FrameType, p []byte) error {
			if off <= last || ft == 0 || len(p) > MaxFrame {
				t.Fatalf("frame at %d after %d, type %d", off, last, ft)
			}
			last = off
			n++
			return nil
		})
		if err != nil {
			assert.ErrorIs(t, err, messages.ErrCorrupt)
			return
		}
		assert.Equal(t, n, res.Frames)
		assert.LessOrEqual(t, res.End, int64(len(data)))
		assert.LessOrEqual(t, res.End, res.Dirty)
		assert.LessOrEqual(t, res.Dirty, int64(len(data)))
		if mode == Strict {
			assert.False(t, res.Torn)
		}
		// What ends a scan is clean after zeroing [End, Dirty): a second
		// scan in Strict mode agrees.
		d := append([]byte(nil), data...)
		clear(d[res.End:res.Dirty])
		opts.Mode = Strict
		res2, err := Scan(d, opts, nil)
		require.NoError(t, err)
		assert.Equal(t, res.End, res2.End)
		assert.Equal(t, n, res2.Frames)
	})
}
