package snapshot

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// fdCounter is a Doer that counts the fds opened and closed through it.
// An open counts from before it is submitted and a close until after it
// completes, so open is never below the fds really open. openErr, when
// set, fails the next open with it without submitting it.
type fdCounter struct {
	ring.Doer
	mu      sync.Mutex
	open    int            // opens begun, less failed opens and closes done
	max     int            // the most open has been
	opens   map[string]int // successful opens, by path
	closes  int
	openErr error
}

func newFDCounter(d ring.Doer) *fdCounter { return &fdCounter{Doer: d, opens: map[string]int{}} }

func (f *fdCounter) Do(ops ...ring.Op) ([]ring.Completion, error) {
	f.mu.Lock()
	for _, op := range ops {
		if op.Code == ring.OpOpen && f.openErr != nil {
			err := f.openErr
			f.openErr = nil
			f.mu.Unlock()
			return []ring.Completion{{Token: op.Token, Code: op.Code, Err: err}}, nil
		}
	}
	for _, op := range ops {
		if op.Code == ring.OpOpen {
			f.open++
			f.max = max(f.max, f.open)
		}
	}
	f.mu.Unlock()
	cs, err := f.Doer.Do(ops...)
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, op := range ops {
		switch {
		case op.Code == ring.OpOpen && (err != nil || cs[i].Err != nil):
			f.open--
		case op.Code == ring.OpOpen:
			f.opens[op.Path]++
		case op.Code == ring.OpClose: // closed on Linux even when it fails
			f.open--
			f.closes++
		}
	}
	return cs, err
}

func (f *fdCounter) stats() (open, maxOpen, closes int, opens map[string]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o := make(map[string]int, len(f.opens))
	for k, v := range f.opens {
		o[k] = v
	}
	return f.open, f.max, f.closes, o
}

// fdFixture is a Cache bounded to a few fds over many blocks on a sim disk.
type fdFixture struct {
	disk   *sim.Disk
	w      ring.Doer // the writer's Doer, outside the Cache
	cnt    *fdCounter
	c      *Cache
	blocks []*Block
	wants  []map[uint64]Entry
}

// newFDFixture writes n blocks (ids 1..n, space 7) of records each and
// opens them through a Cache of maxOpen fds that caches no pages, so that
// every read goes to the block's file.
func newFDFixture(t *testing.T, seed int64, n, records, maxOpen int, fallback bool) *fdFixture {
	fx := &fdFixture{disk: sim.NewDisk(seed)}
	fx.w = ring.NewSync(fx.disk.NewRing(ring.Options{}))
	require.NoError(t, ring.MkdirDurable(fx.w, crashDir))
	m := ring.NewMux(fx.disk.NewRing(ring.Options{Entries: 8}))
	fx.cnt = newFDCounter(m)
	o := CacheOptions{Bytes: -1, Doer: fx.cnt, Close: m.Close, maxOpenFiles: maxOpen}
	if fallback {
		o.Fallback = func() (ring.Doer, func() error, error) {
			r := fx.disk.NewRing(ring.Options{Entries: 4})
			return ring.NewSync(r), r.Close, nil
		}
	}
	fx.c = NewCache(o)
	t.Cleanup(func() { assert.NoError(t, fx.c.Close()) })
	for id := range uint64(n) {
		es, meta := writeTestBlock(t, fx.w, crashDir, id+1, records, uint64(seed)*1000+id)
		b, err := fx.c.OpenBlockFor(crashDir, meta)
		require.NoError(t, err)
		require.LessOrEqual(t, fx.c.Stats().Files, maxOpen, "after opening block %d", id+1)
		fx.blocks = append(fx.blocks, b)
		fx.wants = append(fx.wants, newest(es))
	}
	return fx
}

// readPage reads the page of block i that holds key k's newest record and
// checks it.
func (fx *fdFixture) read(i int, k uint64) error {
	r, ok, err := fx.blocks[i].Get(k, nil)
	if err != nil {
		return err
	}
	if want := fx.wants[i][k]; !ok || r.Revision != want.Revision {
		return fmt.Errorf("block %d key %d: got %v %v, want revision %d", i+1, k, r.Revision, ok, want.Revision)
	}
	return nil
}

// pageKeys lists, for every page of every block, (block, first key of the
// page).
func (fx *fdFixture) pageKeys() [][2]uint64 {
	var out [][2]uint64
	for i, b := range fx.blocks {
		for _, k := range b.firstKeys {
			out = append(out, [2]uint64{uint64(i), k})
		}
	}
	return out
}

// TestCacheFDBound: with 3 fds for 20 blocks, 8 goroutines read every
// page of every block in random orders: every record is right, neither
// Stats().Files nor the fds really open (counted at the Doer) ever exceed
// 3, and blocks are reopened. Run with -race.
func TestCacheFDBound(t *testing.T) {
	const bound = 3
	fx := newFDFixture(t, 21, 20, 1000, bound, false)
	pages := fx.pageKeys()
	require.Greater(t, len(pages), 100)
	_, _, _, opens := fx.cnt.stats()
	require.Len(t, opens, 20, "each block opened once by OpenBlockFor")

	var maxFiles atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 21))
			order := rng.Perm(len(pages))
			for _, j := range order {
				if err := fx.read(int(pages[j][0]), pages[j][1]); err != nil {
					errs <- err
					return
				}
				n := int64(fx.c.Stats().Files)
				for m := maxFiles.Load(); n > m && !maxFiles.CompareAndSwap(m, n); m = maxFiles.Load() {
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	open, maxOpen, closes, opens := fx.cnt.stats()
	assert.LessOrEqual(t, maxFiles.Load(), int64(bound), "Stats().Files")
	assert.LessOrEqual(t, maxOpen, bound, "fds open at the Doer")
	assert.LessOrEqual(t, fx.c.Stats().Files, bound)
	assert.Equal(t, fx.c.Stats().Files, open, "Stats().Files is the fds open")
	total := 0
	for _, n := range opens {
		total += n
	}
	assert.Greater(t, total, 20*2, "blocks were reopened")
	assert.Equal(t, total-open, closes, "every open but the ones still open was closed")
	assert.Equal(t, uint64(8*len(pages)), fx.c.Stats().Misses, "no page cache: every read went to a file")
}

// TestCacheFDReopen: the least recently used fd is the one closed, a read
// of its block opens it again (once), and the bound holds throughout.
func TestCacheFDReopen(t *testing.T) {
	fx := newFDFixture(t, 22, 3, 1000, 2, false)
	path := func(i int) string { return BlockPath(crashDir, 7, uint64(i+1)) }
	isOpen := func(i int) bool {
		fx.c.fds.mu.Lock()
		defer fx.c.fds.mu.Unlock()
		return fx.blocks[i].src.fd >= 0
	}
	first := func(i, p int) uint64 { return fx.blocks[i].firstKeys[p] }
	assert.Equal(t, 2, fx.c.Stats().Files)
	assert.False(t, isOpen(0), "block 1, the least recently used, was closed for block 3")
	assert.True(t, isOpen(1) && isOpen(2))

	require.NoError(t, fx.read(0, first(0, 0)))
	_, _, _, opens := fx.cnt.stats()
	assert.Equal(t, 2, opens[path(0)], "block 1 reopened")
	assert.True(t, isOpen(0))
	assert.False(t, isOpen(1), "block 2 was now the least recently used")
	assert.True(t, isOpen(2))
	require.NoError(t, fx.read(0, first(0, 1)))
	require.NoError(t, fx.read(2, first(2, 1)))
	_, maxOpen, _, opens := fx.cnt.stats()
	assert.Equal(t, 2, opens[path(0)], "an open fd is reused")
	assert.Equal(t, 1, opens[path(2)])
	assert.Equal(t, 2, fx.c.Stats().Files)
	assert.LessOrEqual(t, maxOpen, 2)

	require.NoError(t, fx.read(1, first(1, 2)))
	_, _, _, opens = fx.cnt.stats()
	assert.Equal(t, 2, opens[path(1)])
	assert.False(t, isOpen(0), "block 1, read before block 3, went")
}

// TestCacheFDReopenFails: a reopen that fails - an injected EIO on the sim
// disk, a file gone (ENOENT), the process out of fds (EMFILE) - is a read
// error naming the file, not corruption; it keeps no fd, and the next read
// of the block reopens it and is right.
func TestCacheFDReopenFails(t *testing.T) {
	fx := newFDFixture(t, 23, 2, 1000, 1, false)
	full := BlockPath(crashDir, 7, 1)
	rel := filepath.Join("blocks", "7", "1.blk")
	k := fx.blocks[0].firstKeys[3]
	evict := func() {
		require.NoError(t, fx.read(1, fx.blocks[1].firstKeys[0]))
		require.Equal(t, 1, fx.c.Stats().Files)
	}
	check := func(what string, fail func(), undo func(), want error) {
		evict()
		fail()
		err := fx.read(0, k)
		require.Error(t, err, what)
		assert.ErrorIs(t, err, want, what)
		assert.ErrorContains(t, err, rel, "%s: the error names the file", what)
		assert.NotErrorIs(t, err, messages.ErrCorrupt, what)
		assert.Equal(t, 0, fx.c.Stats().Files, "%s: block 2's fd went for the open, which failed", what)
		open, _, _, _ := fx.cnt.stats()
		assert.Equal(t, 0, open, what)
		undo()
		require.NoError(t, fx.read(0, k), "%s: the next read reopens", what)
		assert.Equal(t, 1, fx.c.Stats().Files, what)
	}
	check("EIO", func() {
		fx.disk.Inject(sim.Fault{Kind: sim.EIO, Ops: []ring.Opcode{ring.OpOpen}, Path: full})
	}, func() {}, unix.EIO)
	require.Len(t, fx.disk.Hits(), 1, "the fault hit the reopen")

	data, err := fx.disk.ReadFile(full)
	require.NoError(t, err)
	check("ENOENT", func() { require.NoError(t, ring.Unlink(fx.w, full)) },
		func() { require.NoError(t, fx.disk.WriteFile(full, data)) }, unix.ENOENT)

	check("EMFILE", func() {
		fx.cnt.mu.Lock()
		fx.cnt.openErr = unix.EMFILE
		fx.cnt.mu.Unlock()
	}, func() {}, unix.EMFILE)

	// Nothing was lost on the way: every record of both blocks reads.
	for i := range fx.blocks {
		for key := range fx.wants[i] {
			require.NoError(t, fx.read(i, key))
		}
	}
	_, maxOpen, _, _ := fx.cnt.stats()
	assert.Equal(t, 1, maxOpen)
}

// TestCacheFDOneOpenPerFile: readers that all miss on the same closed
// block at once open it once between them (no second fd opened and
// leaked).
func TestCacheFDOneOpenPerFile(t *testing.T) {
	fx := newFDFixture(t, 24, 2, 2000, 1, false)
	b := fx.blocks[0]
	require.Equal(t, -1, int(b.src.fd), "block 1 was closed for block 2")
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range 10 {
				if err := fx.read(0, b.firstKeys[(g*10+i)%len(b.firstKeys)]); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	open, maxOpen, _, opens := fx.cnt.stats()
	assert.Equal(t, 2, opens[BlockPath(crashDir, 7, 1)], "OpenBlockFor's open and one reopen")
	assert.Equal(t, 1, open)
	assert.Equal(t, 1, maxOpen)
}

// TestCacheFDCloseWhileReading: Close, while 8 goroutines read 20 blocks
// through 3 fds, waits for the reads in flight and closes every fd the
// Cache opened; the reads after it go through the Fallback and are right.
func TestCacheFDCloseWhileReading(t *testing.T) {
	fx := newFDFixture(t, 25, 20, 500, 3, true)
	pages := fx.pageKeys()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	started := make(chan struct{}, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 25))
			for i := range 200 {
				if i == 10 {
					started <- struct{}{}
				}
				p := pages[rng.IntN(len(pages))]
				if err := fx.read(int(p[0]), p[1]); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for range 8 {
		<-started
	}
	require.NoError(t, fx.c.Close())
	open, maxOpen, closes, opens := fx.cnt.stats()
	assert.Zero(t, open, "Close closed every fd")
	assert.Zero(t, fx.c.Stats().Files)
	total := 0
	for _, n := range opens {
		total += n
	}
	assert.Equal(t, total, closes)
	assert.LessOrEqual(t, maxOpen, 3)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	open, _, _, opens2 := fx.cnt.stats()
	assert.Zero(t, open)
	assert.Equal(t, opens, opens2, "no open through the Cache's Doer after Close")
}

// BenchmarkCacheReopen: page reads (no page cache, so each Get reads one
// page) of random blocks among 20, on a Cache whose fds all fit ("fit")
// against one with a single fd, so that about 19 reads in 20 first close
// one block's fd and open another's ("reopen"). The difference is the cost
// of a reopen; opens/op reports how many there were.
func BenchmarkCacheReopen(b *testing.B) {
	const blocks = 20
	dir := b.TempDir()
	d := newDoer(b)
	var metas []BlockMeta
	var keys [][]uint64
	for id := range uint64(blocks) {
		es, meta := writeTestBlock(b, d, dir, id+1, 4000, 30+id)
		metas = append(metas, meta)
		var ks []uint64
		for k := range newest(es) {
			ks = append(ks, k)
		}
		keys = append(keys, ks)
	}
	for _, kind := range []ring.Kind{ring.Std, ring.URing} {
		for _, c := range []struct {
			name    string
			maxOpen int
		}{{"fit", 256}, {"reopen", 1}} {
			b.Run(fmt.Sprintf("%s/%s", kind, c.name), func(b *testing.B) {
				r, err := ring.New(ring.Options{Kind: kind, Entries: 64})
				if err != nil {
					b.Skip(err)
				}
				m := ring.NewMux(r)
				cnt := newFDCounter(m)
				cache := NewCache(CacheOptions{Bytes: -1, Doer: cnt, Close: m.Close, maxOpenFiles: c.maxOpen})
				defer cache.Close()
				var blks []*Block
				for _, meta := range metas {
					blk, err := cache.OpenBlockFor(dir, meta)
					require.NoError(b, err)
					blks = append(blks, blk)
				}
				_, _, _, before := cnt.stats()
				rng := rand.New(rand.NewPCG(1, 2))
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					i := rng.IntN(blocks)
					if _, ok, err := blks[i].Get(keys[i][rng.IntN(len(keys[i]))], nil); err != nil || !ok {
						b.Fatalf("%v %v", ok, err)
					}
				}
				b.StopTimer()
				_, _, _, after := cnt.stats()
				n := 0
				for p, v := range after {
					n += v - before[p]
				}
				b.ReportMetric(float64(n)/float64(b.N), "opens/op")
			})
		}
	}
}

// TestCacheFDReopenReplaced: a block file replaced while its fd was closed
// by a twin (the same records with one value changed: the same pages at the
// same offsets, each with a valid CRC, another checksum) is corruption
// when it is reopened, through the Cache and through the Fallback after
// Close, not the twin's value served as the block's.
func TestCacheFDReopenReplaced(t *testing.T) {
	for _, afterClose := range []bool{false, true} {
		t.Run(fmt.Sprintf("afterClose=%v", afterClose), func(t *testing.T) {
			fx := newFDFixture(t, 25, 2, 1000, 1, afterClose)
			full := BlockPath(crashDir, 7, 1)
			rel := filepath.Join("blocks", "7", "1.blk")
			b := fx.blocks[0]
			k := b.firstKeys[2]
			orig, ok, err := b.Get(k, nil)
			require.NoError(t, err)
			require.True(t, ok)
			require.NotEmpty(t, orig.Value)

			// The twin, with the value at k changed in place.
			data, err := fx.disk.ReadFile(full)
			require.NoError(t, err)
			whole, err := DecodeBlock(full, data)
			require.NoError(t, err)
			var es []Entry
			require.NoError(t, whole.All(func(e Entry) bool {
				e.Value = append([]byte(nil), e.Value...)
				if e.Key == k && e.Revision == orig.Revision {
					e.Value[0] ^= 0xff
				}
				es = append(es, e)
				return true
			}))
			twin, meta, err := EncodeBlock(7, 1, es)
			require.NoError(t, err)
			require.Len(t, twin, len(data), "the twin has the block's layout")
			require.NotEqual(t, b.Meta().Checksum, meta.Checksum)

			require.NoError(t, fx.read(1, fx.blocks[1].firstKeys[0])) // block 1's fd goes
			if afterClose {
				require.NoError(t, fx.c.Close())
			}
			require.NoError(t, fx.disk.WriteFile(full, twin))
			got, _, err := b.Get(k, nil)
			require.Error(t, err, "the twin served as the block (value changed: %v)", !bytes.Equal(got.Value, orig.Value))
			assert.ErrorIs(t, err, messages.ErrCorrupt)
			assert.ErrorContains(t, err, rel)

			require.NoError(t, fx.disk.WriteFile(full, data))
			got, ok, err = b.Get(k, nil)
			require.NoError(t, err, "the block back in place reads")
			assert.True(t, ok)
			assert.Equal(t, orig.Value, got.Value)
		})
	}
}
