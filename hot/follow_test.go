package hot

import (
	"golang.org/x/sys/unix"

	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
	"github.com/ringpipe/ringpipe/wal"
)

// olderGen writes three batches into generation 1 of space 4 and returns
// it with where each batch starts and where the last one ends.
func olderGen(t *testing.T, d ring.Doer, opts Options) (s *Segment, want []messages.Record, starts []int64, end int64) {
	t.Helper()
	s, err := Create(d, opts, Gen{Space: 4, Gen: 1})
	require.NoError(t, err)
	for b := range 3 {
		starts = append(starts, s.Size())
		batch := recs(4, 1+10*b, 3)
		require.NoError(t, s.Append(batch))
		want = append(want, batch...)
	}
	return s, want, starts, s.Size()
}

func modifyFile(t *testing.T, p string, fn func(data []byte) []byte) {
	t.Helper()
	data, err := os.ReadFile(p)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(p, fn(data), 0o644))
}

// TestFollowFrameHoldsOlderGenerationToItsEnd: the generation after an
// older one starts with a follow frame naming where the older one's
// batches end. Damage to the older generation's last batch that the
// torn-tail rule alone would drop (a bit flip, the batch's first header
// zeroed, the file cut at the batch's start) is then corruption in both
// modes, and Inspect agrees. Without a batch in the newer generation
// there is no follow frame, and the older one is read as the space's
// last write (its damaged last batch dropped in TolerateTornTail mode).
func TestFollowFrameHoldsOlderGenerationToItsEnd(t *testing.T) {
	damages := []struct {
		name string
		do   func(data []byte, last, end int64) []byte
	}{
		{"bit flip", func(data []byte, _, end int64) []byte { data[end-9] ^= 2; return data }},
		{"first header zeroed", func(data []byte, last, _ int64) []byte {
			clear(data[last : last+wal.FrameHeader])
			return data
		}},
		{"cut at the batch", func(data []byte, last, _ int64) []byte { return data[:last] }},
	}
	for _, dm := range damages {
		for _, mode := range []wal.RecoveryMode{wal.TolerateTornTail, wal.Strict} {
			for _, written := range []bool{true, false} {
				t.Run(fmt.Sprintf("%s/%v/newer written %v", dm.name, mode, written), func(t *testing.T) {
					d := stdDoer(t)
					opts := Options{Dir: filepath.Join(t.TempDir(), "hot"), SegmentSize: 1 << 16}
					s1, want, starts, end := olderGen(t, d, opts)
					s2, err := s1.Rotate()
					require.NoError(t, err)
					if written {
						require.NoError(t, s2.Append(recs(4, 100, 2)))
					}
					require.NoError(t, s1.Close())
					require.NoError(t, s2.Close())
					_, got := replay(t, d, opts, s1.Gen(), true)
					require.Equal(t, want, got, "undamaged")

					p := filepath.Join(opts.Dir, s1.Gen().FileName())
					last := starts[len(starts)-1]
					modifyFile(t, p, func(data []byte) []byte { return dm.do(data, last, end) })
					opts.Mode = mode
					_, err = Open(d, opts, s1.Gen(), true, nil)
					rep := Inspect(d, opts, s1.Gen(), nil)
					if !written {
						if mode == wal.TolerateTornTail {
							require.NoError(t, err, "no follow frame: the torn-tail rule")
							require.NoError(t, rep.Err)
							_, got := replay(t, d, opts, s1.Gen(), true)
							assert.Equal(t, want[:6], got, "the last batch dropped as a torn tail")
						}
						return
					}
					var ce *messages.CorruptionError
					require.ErrorAs(t, err, &ce)
					assert.Equal(t, filepath.Join("hot", s1.Gen().FileName()), ce.Path)
					assert.GreaterOrEqual(t, ce.Offset, last)
					assert.Less(t, ce.Offset, end)
					assert.Contains(t, ce.Reason, "generation 2's follow frame")
					var ie *messages.CorruptionError
					require.ErrorAs(t, rep.Err, &ie)
					assert.Equal(t, ce, ie, "Inspect agrees")
				})
			}
		}
	}
}

// failBatch prepares recs in s and, as a write whose fdatasync failed
// would, leaves n bytes of the batch in the file (all of it when n < 0)
// and fails the segment.
func failBatch(t *testing.T, d ring.Doer, s *Segment, recs []messages.Record, n int) {
	t.Helper()
	p, err := s.Prepare(recs)
	require.NoError(t, err)
	if n < 0 || n > p.Len {
		n = p.Len
	}
	if n > 0 {
		_, err = d.Do(ring.Op{Code: ring.OpWrite, FD: p.Write.FD, Buf: p.Write.Buf[:n], Offset: p.Off})
		require.NoError(t, err)
	}
	s.Failed(p, fmt.Errorf("injected"))
}

// TestFailedGenerationMayEndTorn: a generation abandoned after a failed
// batch is followed by one whose follow frame names its durable end, not
// the failed batch. Recovery holds it to whole batches up to that end and
// reads what follows by the torn-tail rule: a torn failed batch is
// dropped (TolerateTornTail), a whole one is read, a missing one is
// nothing; damage before the end is corruption in both modes.
func TestFailedGenerationMayEndTorn(t *testing.T) {
	for _, tc := range []struct {
		name   string
		landed int // bytes of the failed batch in the file; -1 all
		extra  bool
	}{{"torn", 100, false}, {"whole", -1, true}, {"absent", 0, false}} {
		t.Run(tc.name, func(t *testing.T) {
			d := stdDoer(t)
			opts := Options{Dir: filepath.Join(t.TempDir(), "hot"), SegmentSize: 1 << 16}
			s1, want, starts, end := olderGen(t, d, opts)
			failed := recs(4, 50, 4)
			failBatch(t, d, s1, failed, tc.landed)
			require.Error(t, s1.Err())
			require.NoError(t, s1.Freeze())
			s2, err := Create(d, opts, Gen{Space: 4, Gen: 2})
			require.NoError(t, err)
			s2.Follow(s1)
			require.NoError(t, s2.Append(recs(4, 100, 1)))
			require.NoError(t, s1.Close())
			require.NoError(t, s2.Close())

			if tc.extra {
				want = append(want, failed...)
			}
			_, got := replay(t, d, opts, s1.Gen(), true)
			assert.Equal(t, want, got)

			// Damage to the last durable batch is corruption, even with
			// the failed batch's stale frames after it.
			p := filepath.Join(opts.Dir, s1.Gen().FileName())
			modifyFile(t, p, func(data []byte) []byte { data[end-9] ^= 2; return data })
			for _, mode := range []wal.RecoveryMode{wal.TolerateTornTail, wal.Strict} {
				opts.Mode = mode
				_, err = Open(d, opts, s1.Gen(), true, nil)
				var ce *messages.CorruptionError
				require.ErrorAs(t, err, &ce, "%v", mode)
				assert.GreaterOrEqual(t, ce.Offset, starts[len(starts)-1])
			}
		})
	}
}

// TestFollowPassesLinksOn: a generation whose first batch failed (nothing
// of it durable, its follow frame included) passes its links on to the
// next, so the generation before it is still held to its end.
func TestFollowPassesLinksOn(t *testing.T) {
	d := stdDoer(t)
	opts := Options{Dir: filepath.Join(t.TempDir(), "hot"), SegmentSize: 1 << 16}
	s1, want, starts, end := olderGen(t, d, opts)
	s2, err := s1.Rotate()
	require.NoError(t, err)
	failBatch(t, d, s2, recs(4, 100, 3), 0)
	require.NoError(t, s2.Freeze())
	s3, err := Create(d, opts, Gen{Space: 4, Gen: 3})
	require.NoError(t, err)
	s3.Follow(s2)
	assert.Equal(t, []link{{gen: 1, end: end}, {gen: 2, end: 0}}, s3.follows)
	require.NoError(t, s3.Append(recs(4, 200, 1)))
	assert.Nil(t, s3.follows, "durable with the first batch")
	for _, s := range []*Segment{s1, s2, s3} {
		require.NoError(t, s.Close())
	}
	_, got := replay(t, d, opts, s1.Gen(), true)
	assert.Equal(t, want, got)
	_, got = replay(t, d, opts, Gen{Space: 4, Gen: 2}, true)
	assert.Empty(t, got)
	_, got = replay(t, d, opts, Gen{Space: 4, Gen: 3}, false)
	assert.Equal(t, recs(4, 200, 1), got)

	p := filepath.Join(opts.Dir, s1.Gen().FileName())
	modifyFile(t, p, func(data []byte) []byte { return data[:starts[2]] })
	_, err = Open(d, opts, s1.Gen(), true, nil)
	var ce *messages.CorruptionError
	require.ErrorAs(t, err, &ce)
	assert.Contains(t, ce.Reason, "generation 3's follow frame")
	assert.Equal(t, starts[2], ce.Offset)
	_ = end
}

// TestFollowOnlyBeforeTheFirstBatch: Follow does nothing once the
// generation holds a batch, and a follow frame anywhere but at the start
// of a generation is corruption.
func TestFollowOnlyBeforeTheFirstBatch(t *testing.T) {
	d := stdDoer(t)
	opts := Options{Dir: filepath.Join(t.TempDir(), "hot"), SegmentSize: 1 << 16}
	s1, _, _, _ := olderGen(t, d, opts)
	s2, err := Create(d, opts, Gen{Space: 4, Gen: 2})
	require.NoError(t, err)
	require.NoError(t, s2.Append(recs(4, 100, 1)))
	s2.Follow(s1)
	assert.Nil(t, s2.follows)
	// Forge a follow frame after the first batch.
	var b wal.Batch
	b.Begin(nil, s2.gen.salt())
	b.AddFunc(TypeFollow, func(dst []byte) []byte { return encodeLinks(dst, []link{{gen: 1, end: 8}}) })
	require.NoError(t, ring.WriteSync(d, s2.fd, b.Finish(), s2.off))
	require.NoError(t, s1.Close())
	require.NoError(t, s2.Close())
	_, err = Open(d, opts, s2.Gen(), false, nil)
	var ce *messages.CorruptionError
	require.ErrorAs(t, err, &ce)
	assert.Contains(t, ce.Reason, "not a record")
}

// TestCreateReplacesLeftover: a Create whose directory sync failed after
// it renamed a spare into place (or whose preallocation failed after it
// created the file) leaves g's file behind; the next Create of g replaces
// it and the generation works. Seen in the engine as "file exists" at every
// later rotation (TestRotateAfterFailedCreate).
func TestCreateReplacesLeftover(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spare bool
		fault sim.Fault
	}{
		{"recycled, directory sync fails", true, sim.Fault{Kind: sim.FsyncFail, Ops: []ring.Opcode{ring.OpFsync}, Path: "/db/hot"}},
		{"fresh, directory sync fails", false, sim.Fault{Kind: sim.FsyncFail, Ops: []ring.Opcode{ring.OpFsync}, Path: "/db/hot"}},
		{"fresh, preallocation fails", false, sim.Fault{Kind: sim.EIO, Ops: []ring.Opcode{ring.OpFallocate}, Path: "/db/hot"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk := sim.NewDisk(1)
			d := ring.NewSync(disk.NewRing(ring.Options{}))
			require.NoError(t, ring.Mkdir(d, "/db", 0o755))
			require.NoError(t, ring.SyncDir(d, "/"))
			opts := crashOpts
			if !tc.spare {
				opts.MaxSpares = -1
			}
			s1, err := Create(d, opts, Gen{Space: 1, Gen: 1})
			require.NoError(t, err)
			require.NoError(t, s1.Append(recs(1, 1, 3)))
			s2, err := s1.Rotate()
			require.NoError(t, err)
			require.NoError(t, s1.Retire())
			require.NoError(t, s2.Append(recs(1, 10, 3)))
			require.NoError(t, s2.Freeze())

			g := Gen{Space: 1, Gen: 3}
			disk.Inject(tc.fault)
			_, err = Create(d, opts, g)
			require.Error(t, err)
			require.Len(t, disk.Hits(), 1)
			disk.ClearFaults()
			_, err = ring.Stat(d, filepath.Join(opts.Dir, g.FileName()))
			require.NoError(t, err, "the failed Create left the file")

			s3, err := Create(d, opts, g)
			require.NoError(t, err, "the leftover is replaced")
			s3.Follow(s2)
			require.NoError(t, s3.Append(recs(1, 20, 2)))
			require.NoError(t, s3.Close())
			require.NoError(t, s2.Close())
			disk.PowerLoss(rand.New(rand.NewSource(1)))
			d = ring.NewSync(disk.NewRing(ring.Options{}))
			_, got := replay(t, d, opts, g, false)
			assert.Equal(t, recs(1, 20, 2), got)
			_, got = replay(t, d, opts, s2.Gen(), true)
			assert.Equal(t, recs(1, 10, 3), got)
		})
	}
}

// TestCrashHotCreateOverLeftover crashes a Create that replaces a leftover
// file (and the append after it) at every operation: recovery finds the
// generation missing or empty, or, once acknowledged, with the append.
func TestCrashHotCreateOverLeftover(t *testing.T) {
	g := Gen{Space: 1, Gen: 3}
	type state struct{ s2 *Segment }
	crashEvery(t, func(t *testing.T, d ring.Doer) state {
		s1, err := Create(d, crashOpts, Gen{Space: 1, Gen: 1})
		require.NoError(t, err)
		require.NoError(t, s1.Append(recs(1, 1, 3)))
		s2, err := s1.Rotate()
		require.NoError(t, err)
		require.NoError(t, s1.Retire()) // a spare
		require.NoError(t, s2.Append(recs(1, 10, 3)))
		require.NoError(t, s2.Freeze())
		// The leftover: an empty file of g, durable.
		fd, err := ring.Open(d, filepath.Join(crashOpts.Dir, g.FileName()), os.O_CREATE|os.O_RDWR, 0o644)
		require.NoError(t, err)
		require.NoError(t, ring.Close(d, fd))
		require.NoError(t, ring.SyncDir(d, crashOpts.Dir))
		return state{s2: s2}
	}, func(s state) error {
		s3, err := Create(s.s2.d, crashOpts, g)
		if err != nil {
			return err
		}
		s3.Follow(s.s2)
		return s3.Append(recs(1, 20, 2))
	}, func(t *testing.T, d ring.Doer, s state, acked bool) {
		got := load(t, d)
		assert.Equal(t, recs(1, 10, 3), got[Gen{Space: 1, Gen: 2}])
		switch r3, ok := got[g]; {
		case acked:
			require.Equal(t, recs(1, 20, 2), r3)
		case ok && len(r3) > 0:
			require.Equal(t, recs(1, 20, 2), r3)
		}
	})
}

// TestFollowGivesWayToAFullBatch: a first batch that fills a fresh file on
// its own does not fit with the follow frame; it goes without it rather
// than never fitting (ErrFull at every new generation).
func TestFollowGivesWayToAFullBatch(t *testing.T) {
	d := stdDoer(t)
	opts := Options{Dir: filepath.Join(t.TempDir(), "hot"), SegmentSize: 8192}
	s1, err := Create(d, opts, Gen{Space: 4, Gen: 1})
	require.NoError(t, err)
	require.NoError(t, s1.Append(recs(4, 1, 2)))
	s2, err := s1.Rotate()
	require.NoError(t, err)
	require.NotEmpty(t, s2.follows)
	big := recs(4, 10, 1)
	for v := int(opts.SegmentSize); ; v-- {
		big[0].Value = make([]byte, v)
		if wal.FrameSize(wal.RecordSize(big[0])) <= int(opts.SegmentSize) {
			break
		}
	}
	require.Greater(t, wal.FrameSize(wal.RecordSize(big[0])), int(opts.SegmentSize)-wal.FrameSize(linkSize))
	require.NoError(t, s2.Append(big))
	assert.Nil(t, s2.follows)
	require.NoError(t, s1.Close())
	require.NoError(t, s2.Close())
	_, got := replay(t, d, opts, s2.Gen(), false)
	assert.Equal(t, big, got)
	_, got = replay(t, d, opts, s1.Gen(), true)
	assert.Equal(t, recs(4, 1, 2), got)
}

// FuzzDecodeLinks: the follow frame's payload decoder never panics, and
// what it accepts encodes back to the same bytes.
func FuzzDecodeLinks(f *testing.F) {
	f.Add(encodeLinks(nil, []link{{gen: 1, end: 4096}}))
	f.Add(encodeLinks(nil, []link{{gen: 7, end: 0}, {gen: 8, end: 64}}))
	f.Add([]byte{1, 2, 3})
	f.Add(make([]byte, linkSize*(maxLinks+1)))
	f.Fuzz(func(t *testing.T, b []byte) {
		ls, ok := decodeLinks(b)
		if !ok {
			return
		}
		require.NotEmpty(t, ls)
		require.LessOrEqual(t, len(ls), maxLinks)
		require.Equal(t, b, encodeLinks(nil, ls))
	})
}

// frozenForRetire returns a sim disk with a generation of three records
// frozen by a rotation (the active one is closed with the test), ready
// for Retire, whose Options would keep its file as a spare.
func frozenForRetire(t *testing.T) (*sim.Disk, ring.Doer, Options, *Segment) {
	t.Helper()
	disk := sim.NewDisk(1)
	d := ring.NewSync(disk.NewRing(ring.Options{}))
	require.NoError(t, ring.Mkdir(d, "/db", 0o755))
	require.NoError(t, ring.SyncDir(d, "/"))
	opts := crashOpts
	opts.MaxSpares = 2 // would keep the file as a spare
	s1, err := Create(d, opts, Gen{Space: 1, Gen: 1})
	require.NoError(t, err)
	require.NoError(t, s1.Append(recs(1, 1, 3)))
	s2, err := s1.Rotate()
	require.NoError(t, err)
	t.Cleanup(func() { s2.Close() })
	return disk, d, opts, s1
}

// TestRetireCloseFails: a close that fails while a sealed generation is
// retired does not fail the retirement (its records are in the committed
// block; the fd is released whatever close says): Retire returns a
// *CloseWarning with the error, the file is gone (not kept as a spare), and
// a second Retire says ErrClosed. Before, the close error was dropped
// without a word (durability's TestIOErrorRecoverySweep, ci10: "close hot
// × EIO: the error did not reach a caller, nothing logged").
func TestRetireCloseFails(t *testing.T) {
	disk, d, opts, s1 := frozenForRetire(t)

	disk.Inject(sim.Fault{Kind: sim.EIO, Ops: []ring.Opcode{ring.OpClose}, Path: filepath.Join(opts.Dir, s1.Gen().FileName())})
	err := s1.Retire()
	require.Len(t, disk.Hits(), 1, "the close was the one op that failed")
	disk.ClearFaults()
	var w *CloseWarning
	require.ErrorAs(t, err, &w)
	assert.ErrorIs(t, err, unix.EIO)
	assert.Contains(t, err.Error(), s1.Gen().FileName())
	_, err = ring.Stat(d, filepath.Join(opts.Dir, s1.Gen().FileName()))
	assert.ErrorIs(t, err, unix.ENOENT, "the retired generation's file")
	list, err := spares(d, opts.Dir)
	require.NoError(t, err)
	assert.Empty(t, list, "a file whose close failed is not kept as a spare")
	assert.ErrorIs(t, s1.Retire(), ErrClosed)
}

// TestRetireCloseFailsThenRetried: when Retire's close fails and then its
// unlink or directory sync fails too, Retire returns that later error, and
// a retried Retire (its fds already released, so its own close has nothing
// to fail) still deletes the file rather than keeping it as a spare and
// reports the first close as a *CloseWarning. Before, the retry returned
// nil: the close failure was never reported.
func TestRetireCloseFailsThenRetried(t *testing.T) {
	for _, tc := range []struct {
		name  string
		op    ring.Opcode
		path  func(opts Options, g Gen) string
		error string // in the first Retire's error
	}{
		{"unlink", ring.OpUnlink, func(opts Options, g Gen) string { return filepath.Join(opts.Dir, g.FileName()) }, "retire"},
		{"sync directory", ring.OpFsync, func(opts Options, _ Gen) string { return opts.Dir }, "sync directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk, d, opts, s1 := frozenForRetire(t)
			file := filepath.Join(opts.Dir, s1.Gen().FileName())

			disk.Inject(sim.Fault{Kind: sim.EIO, Ops: []ring.Opcode{ring.OpClose}, Path: file})
			disk.Inject(sim.Fault{Kind: sim.EIO, Ops: []ring.Opcode{tc.op}, Path: tc.path(opts, s1.Gen())})
			err := s1.Retire()
			hits := disk.Hits()
			require.Len(t, hits, 2, "the close and the %s failed", tc.name)
			require.Equal(t, ring.OpClose, hits[0].Code)
			require.Equal(t, tc.op, hits[1].Code)
			disk.ClearFaults()
			require.Error(t, err)
			var w *CloseWarning
			assert.False(t, errors.As(err, &w), "not retired yet: %v", err)
			assert.ErrorIs(t, err, unix.EIO)
			assert.Contains(t, err.Error(), tc.error)

			err = s1.Retire()
			require.ErrorAs(t, err, &w, "the retry reports the first attempt's close")
			assert.ErrorIs(t, err, unix.EIO)
			assert.Contains(t, err.Error(), "close")
			assert.Contains(t, err.Error(), s1.Gen().FileName())
			_, err = ring.Stat(d, file)
			assert.ErrorIs(t, err, unix.ENOENT, "the retired generation's file")
			list, err := spares(d, opts.Dir)
			require.NoError(t, err)
			assert.Empty(t, list, "a file whose close failed is not kept as a spare, on a retry either")
			assert.ErrorIs(t, s1.Retire(), ErrClosed)
		})
	}
}
