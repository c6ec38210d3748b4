package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
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

// newStdCache returns a Cache reading through a Mux over a fresh std ring,
// closed at cleanup, with the given budget and no Fallback.
func newStdCache(t testing.TB, budget int64) *Cache {
	r, err := ring.New(ring.Options{Kind: ring.Std, Entries: 16})
	require.NoError(t, err)
	m := ring.NewMux(r)
	c := NewCache(CacheOptions{Bytes: budget, Doer: m, Close: m.Close})
	t.Cleanup(func() { assert.NoError(t, c.Close()) })
	return c
}

// writeTestBlock writes n random entries as block id of space 7 under dir
// and returns them and the block's meta.
func writeTestBlock(t testing.TB, d ring.Doer, dir string, id uint64, n int, seed uint64) ([]Entry, BlockMeta) {
	rng := rand.New(rand.NewPCG(seed, seed))
	var rev messages.Revision
	es := genEntries(t, rng, n, &rev)
	meta, err := WriteBlock(d, dir, 7, id, es)
	require.NoError(t, err)
	return es, meta
}

// checkBlockAgainst compares every way of reading b with es.
func checkBlockAgainst(t *testing.T, b *Block, es []Entry) {
	t.Helper()
	want := newest(es)
	for k, e := range want {
		got, ok, err := b.Get(k, e.Point)
		require.NoError(t, err)
		require.True(t, ok, "key %d", k)
		require.Equal(t, e.Record, got)
	}
	sorted := slices.Clone(es)
	slices.SortFunc(sorted, cmpEntry)
	i := 0
	require.NoError(t, b.All(func(e Entry) bool {
		require.Equal(t, sorted[i].Key, e.Key)
		require.Equal(t, sorted[i].Record, e.Record)
		i++
		return true
	}))
	require.Equal(t, len(sorted), i)
	n := 0
	require.NoError(t, b.Scan([]KeyRange{{0, ^uint64(0)}}, func(r messages.Record) bool {
		n++
		require.Equal(t, want[Key(r.Point, 2, 16)].Revision, r.Revision)
		return true
	}))
	require.Equal(t, len(want), n)
}

// TestCacheReadsOnDemand: a block opened through a Cache holds its index
// and filter, reads nothing more until asked, then answers as the block
// decoded whole does, reading each page once while the budget holds it.
func TestCacheReadsOnDemand(t *testing.T) {
	d := newDoer(t)
	dir := t.TempDir()
	es, meta := writeTestBlock(t, d, dir, 1, 20000, 1)
	c := newStdCache(t, 64<<20)

	b, err := c.OpenBlockFor(dir, meta)
	require.NoError(t, err)
	assert.Equal(t, meta, b.Meta())
	assert.Nil(t, b.pages, "nothing decoded at open")
	st := c.Stats()
	assert.Equal(t, CacheStats{Files: 1}, st, "open reads only the tail, which is not cached")
	pages := b.Pages()
	assert.Greater(t, pages, 100, "20000 records fill many 4 KiB pages")
	// What an open block keeps: 16 bytes of index per page and the filter.
	assert.Len(t, b.firstKeys, pages)
	assert.Less(t, 16*pages+len(b.bloom), int(meta.Size)/20, "index and filter are a small part of the block")

	checkBlockAgainst(t, b, es)
	st = c.Stats()
	assert.Equal(t, uint64(pages), st.Misses, "each page read once")
	assert.Equal(t, pages, st.Pages)
	assert.Greater(t, st.Hits, uint64(pages))

	whole, err := OpenBlock(d, BlockPath(dir, 7, 1))
	require.NoError(t, err)
	assert.Equal(t, pages, whole.Pages())
}

// TestCacheBudget: the cached pages never cost more than the budget;
// evicted pages are read again, and a hot page stays.
func TestCacheBudget(t *testing.T) {
	d := newDoer(t)
	dir := t.TempDir()
	es, meta := writeTestBlock(t, d, dir, 1, 20000, 2)
	const budget = 256 << 10
	c := newStdCache(t, budget)
	b, err := c.OpenBlockFor(dir, meta)
	require.NoError(t, err)
	pages := b.Pages()
	require.Greater(t, int64(pages)*pageTarget, int64(2*budget), "the block is larger than the budget")

	for pass := range 2 {
		require.NoError(t, b.All(func(Entry) bool { return true }))
		st := c.Stats()
		assert.LessOrEqual(t, st.Bytes, int64(budget), "pass %d", pass)
		assert.Less(t, st.Pages, pages)
		assert.Equal(t, uint64((pass+1)*pages), st.Misses, "a sequential pass larger than an LRU misses every page")
	}
	hot := newest(es)[b.firstKeys[0]] // in the first page, which the passes evicted
	before := c.Stats()
	for range 100 {
		_, ok, err := b.Get(hot.Key, hot.Point)
		require.NoError(t, err)
		require.True(t, ok)
	}
	after := c.Stats()
	assert.Equal(t, before.Misses+1, after.Misses, "one miss, then hits")
	assert.Equal(t, before.Hits+99, after.Hits)

	// A negative budget caches nothing, and still reads right.
	none := newStdCache(t, -1)
	b2, err := none.OpenBlockFor(dir, meta)
	require.NoError(t, err)
	checkBlockAgainst(t, b2, es)
	assert.Zero(t, none.Stats().Bytes)
}

// TestCacheConcurrent: readers on several goroutines Get and Scan three
// blocks through one small Cache (evicting all the time) and always see
// the right records. Run with -race.
func TestCacheConcurrent(t *testing.T) {
	d := newDoer(t)
	dir := t.TempDir()
	c := newStdCache(t, 300<<10)
	var blocks []*Block
	var wants []map[uint64]Entry
	for id := range uint64(3) {
		es, meta := writeTestBlock(t, d, dir, id+1, 8000, 10+id)
		b, err := c.OpenBlockFor(dir, meta)
		require.NoError(t, err)
		blocks = append(blocks, b)
		wants = append(wants, newest(es))
	}
	keys := make([][]uint64, len(wants))
	for i, w := range wants {
		for k := range w {
			keys[i] = append(keys[i], k)
		}
		slices.Sort(keys[i])
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for range 400 {
				i := rng.IntN(len(blocks))
				k := keys[i][rng.IntN(len(keys[i]))]
				if rng.IntN(8) == 0 {
					// A short scan from k: the newest of each key, in order.
					var got []Entry
					err := blocks[i].Range(k, ^uint64(0), func(e Entry) bool { got = append(got, e); return len(got) < 50 })
					if err != nil {
						errs <- err
						return
					}
					j, _ := slices.BinarySearch(keys[i], k)
					for n, e := range got {
						if e.Key != keys[i][j+n] || e.Revision != wants[i][e.Key].Revision {
							errs <- fmt.Errorf("block %d scan from %d: record %d is key %d rev %d", i, k, n, e.Key, e.Revision)
							return
						}
					}
					continue
				}
				r, ok, err := blocks[i].Get(k, nil)
				if err != nil || !ok || r.Revision != wants[i][k].Revision {
					errs <- fmt.Errorf("block %d key %d: %v %v %v", i, k, r, ok, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	st := c.Stats()
	assert.LessOrEqual(t, st.Bytes, int64(300<<10))
	assert.Greater(t, st.Misses, uint64(0))
}

// TestCacheDamage: damage found on demand is a *CorruptionError naming
// the file (relative to the engine's directory) and the damaged page's
// offset; other pages still read. Damage in the tail, a short file and a
// file that is not the manifest's block fail the open.
func TestCacheDamage(t *testing.T) {
	d := newDoer(t)
	dir := t.TempDir()
	es, meta := writeTestBlock(t, d, dir, 1, 3000, 3)
	path := BlockPath(dir, 7, 1)
	good, err := os.ReadFile(path)
	require.NoError(t, err)
	c := newStdCache(t, 0)
	rel := filepath.Join("blocks", "7", "1.blk")

	b, err := c.OpenBlockFor(dir, meta)
	require.NoError(t, err)
	const victim = 5
	start, end := b.pageStart(victim), b.ends[victim]
	bad := slices.Clone(good)
	bad[(start+end)/2] ^= 0x04
	require.NoError(t, os.WriteFile(path, bad, 0o644))

	sawBad, sawGood := false, false
	for _, e := range newest(es) {
		_, _, err := b.Get(e.Key, e.Point)
		if b.pageFor(e.Key) == victim {
			var ce *messages.CorruptionError
			require.ErrorAs(t, err, &ce, "key %d in the damaged page", e.Key)
			assert.Equal(t, rel, ce.Path)
			assert.Equal(t, int64(start), ce.Offset)
			assert.Contains(t, ce.Reason, "CRC")
			sawBad = true
		} else {
			require.NoError(t, err)
			sawGood = true
		}
	}
	assert.True(t, sawBad && sawGood)
	err = b.All(func(Entry) bool { return true })
	assert.ErrorIs(t, err, messages.ErrCorrupt, "All reaches the damaged page")
	err = b.Scan([]KeyRange{{0, ^uint64(0)}}, func(messages.Record) bool { return true })
	assert.ErrorIs(t, err, messages.ErrCorrupt, "so does a full Scan")

	// Damage the open reads: the index, the filter, the footer, the
	// trailer; and a truncated file.
	for _, off := range []int{int(meta.Size) - tailSize - 1, int(b.ends[len(b.ends)-1]) + 3, int(meta.Size) - tailSize + 20, int(meta.Size) - 1} {
		bad := slices.Clone(good)
		bad[off] ^= 0x01
		require.NoError(t, os.WriteFile(path, bad, 0o644))
		_, err := c.OpenBlockFor(dir, meta)
		var ce *messages.CorruptionError
		require.ErrorAs(t, err, &ce, "flip at %d", off)
		assert.Equal(t, rel, ce.Path)
	}
	require.NoError(t, os.WriteFile(path, good[:len(good)-10], 0o644))
	_, err = c.OpenBlockFor(dir, meta)
	assert.ErrorIs(t, err, messages.ErrCorrupt, "truncated")

	// A whole, valid block where the manifest expects another.
	require.NoError(t, os.WriteFile(path, good, 0o644))
	other := meta
	other.Checksum[3] ^= 1
	_, err = c.OpenBlockFor(dir, other)
	assert.ErrorIs(t, err, messages.ErrCorrupt)
	assert.ErrorContains(t, err, "manifest expects")
	_, err = c.OpenBlockFor(dir, BlockMeta{Space: 7, ID: 99, Size: meta.Size})
	assert.ErrorIs(t, err, unix.ENOENT, "a missing block is not corruption")
	assert.NotErrorIs(t, err, messages.ErrCorrupt)
	assert.Equal(t, 1, c.Stats().Files, "failed opens keep no file")
}

// simCache writes a block on a sim disk and opens it through a Cache on
// its own sim ring, as the engine does.
func simCache(t *testing.T, seed int64, fallback func() (ring.Doer, func() error, error)) (*sim.Disk, *Cache, *Block, []Entry) {
	disk := sim.NewDisk(seed)
	w := ring.NewSync(disk.NewRing(ring.Options{}))
	require.NoError(t, ring.MkdirDurable(w, crashDir))
	es, meta := writeTestBlock(t, w, crashDir, 1, 4000, uint64(seed))
	m := ring.NewMux(disk.NewRing(ring.Options{Entries: 8}))
	c := NewCache(CacheOptions{Doer: m, Close: m.Close, Fallback: fallback})
	t.Cleanup(func() { assert.NoError(t, c.Close()) })
	b, err := c.OpenBlockFor(crashDir, meta)
	require.NoError(t, err)
	return disk, c, b, es
}

// TestCacheFaults: on the simulated disk, an I/O error on a page read is
// that error (not corruption), a bit flipped in flight is corruption, and
// neither poisons the cache: the next read is right.
func TestCacheFaults(t *testing.T) {
	disk, _, b, es := simCache(t, 5, nil)
	for i, f := range []struct {
		kind    sim.FaultKind
		corrupt bool
	}{{sim.EIO, false}, {sim.BitFlip, true}} {
		e := newest(es)[b.firstKeys[2+3*i]] // a page not read yet
		disk.Inject(sim.Fault{Kind: f.kind, Ops: []ring.Opcode{ring.OpRead}, Path: BlockDir(crashDir, 7)})
		_, _, err := b.Get(e.Key, e.Point)
		require.Error(t, err, "%v", f.kind)
		assert.Equal(t, f.corrupt, errors.Is(err, messages.ErrCorrupt), "%v: %v", f.kind, err)
		if !f.corrupt {
			assert.ErrorIs(t, err, unix.EIO)
		}
		r, ok, err := b.Get(e.Key, e.Point)
		require.NoError(t, err, "%v: the fault is gone, the page reads", f.kind)
		require.True(t, ok)
		assert.Equal(t, newest(es)[e.Key].Revision, r.Revision)
	}
}

// TestCacheAfterClose: after Close, cached pages still answer, a miss
// reads through the Fallback (a View outlives its engine), and without
// one it fails with ErrCacheClosed. Opening is refused.
func TestCacheAfterClose(t *testing.T) {
	var fallbacks atomic.Int64
	var disk *sim.Disk
	disk, c, b, es := simCache(t, 6, func() (ring.Doer, func() error, error) {
		fallbacks.Add(1)
		r := disk.NewRing(ring.Options{Entries: 4})
		return ring.NewSync(r), r.Close, nil
	})
	want := newest(es)
	first := es[0]
	_, _, err := b.Get(first.Key, first.Point)
	require.NoError(t, err)
	require.Equal(t, 1, c.Stats().Files)
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "idempotent")
	assert.Zero(t, c.Stats().Files, "Close closed the block file")

	_, ok, err := b.Get(first.Key, first.Point)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Zero(t, fallbacks.Load(), "a cached page needs no read")
	checkBlockAgainst(t, b, es)
	assert.Positive(t, fallbacks.Load(), "misses read through the Fallback")
	assert.Len(t, want, len(newest(es)))
	_, err = c.OpenBlockFor(crashDir, b.Meta())
	assert.ErrorIs(t, err, ErrCacheClosed)

	_, c2, b2, es2 := simCache(t, 7, nil)
	require.NoError(t, c2.Close())
	_, _, err = b2.Get(es2[0].Key, es2[0].Point)
	assert.ErrorIs(t, err, ErrCacheClosed)
}

// TestCacheCloseWhileReading: Close waits for the reads in flight; reads
// racing with it succeed, before it through the Mux, after it through the
// Fallback.
func TestCacheCloseWhileReading(t *testing.T) {
	var disk *sim.Disk
	disk, c, b, es := simCache(t, 8, func() (ring.Doer, func() error, error) {
		r := disk.NewRing(ring.Options{Entries: 4})
		return ring.NewSync(r), r.Close, nil
	})
	want := newest(es)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	started := make(chan struct{}, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for i := range 300 {
				if i == 10 {
					started <- struct{}{}
				}
				e := es[rng.IntN(len(es))]
				r, ok, err := b.Get(e.Key, e.Point)
				if err != nil || !ok || r.Revision != want[e.Key].Revision {
					errs <- fmt.Errorf("key %d: %v %v", e.Key, ok, err)
					return
				}
			}
		}()
	}
	for range 4 {
		<-started
	}
	require.NoError(t, c.Close())
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// TestWriteBlockStreams: WriteBlock writes a block in chunks, never the
// whole encoded block at once, and the bytes are those EncodeBlock makes.
func TestWriteBlockStreams(t *testing.T) {
	d := &countingDoer{Doer: newDoer(t)}
	dir := t.TempDir()
	es, meta := writeTestBlock(t, d, dir, 1, 30000, 4)
	require.Greater(t, meta.Size, int64(4*writeChunk))
	assert.GreaterOrEqual(t, d.writes, int(meta.Size/writeChunk))
	assert.Less(t, d.maxWrite, writeChunk+pageTarget+int(meta.Size)/20, "no write holds much more than a chunk")
	got, err := os.ReadFile(BlockPath(dir, 7, 1))
	require.NoError(t, err)
	want, wmeta, err := EncodeBlock(7, 1, es)
	require.NoError(t, err)
	assert.Equal(t, meta, wmeta)
	assert.True(t, slices.Equal(want, got), "streamed and encoded bytes agree")
}

type countingDoer struct {
	ring.Doer
	writes, maxWrite int
}

func (c *countingDoer) Do(ops ...ring.Op) ([]ring.Completion, error) {
	for _, op := range ops {
		if op.Code == ring.OpWrite {
			c.writes++
			c.maxWrite = max(c.maxWrite, len(op.Buf))
		}
	}
	return c.Doer.Do(ops...)
}

// TestBlockPages: records fill pages of about pageTarget bytes, a record
// larger than that makes a page of its own, and lookups find records on
// either side of every page boundary, including a key whose revisions
// span two pages.
func TestBlockPages(t *testing.T) {
	var es []Entry
	rev := messages.Revision(0)
	add := func(k uint64, vlen int) {
		rev++
		es = append(es, Entry{Key: k, Record: messages.Record{Point: messages.Point{uint32(k)}, Revision: rev,
			Value: binary.LittleEndian.AppendUint64(make([]byte, 0, vlen+8), uint64(rev))[:max(8, vlen)]}})
	}
	for k := range uint64(200) {
		add(k, 50)
	}
	for range 300 { // one key, many revisions: it spans pages
		add(500, 40)
	}
	add(600, 3*pageTarget) // a page of its own
	add(601, 10)
	buf, _, err := EncodeBlock(1, 1, es)
	require.NoError(t, err)
	b, err := DecodeBlock("mem", buf)
	require.NoError(t, err)
	require.Greater(t, b.Pages(), 5)
	for i := range b.Pages() {
		size := b.ends[i] - b.pageStart(i)
		p := b.pages[i]
		if p.len() > 1 {
			assert.LessOrEqual(t, size, uint64(pageTarget), "page %d", i)
		}
	}
	big := b.pageFor(600)
	assert.Equal(t, 1, b.pages[big].len(), "the large record is alone in its page")
	assert.Greater(t, b.pageFor(500), b.pageFor(499)+1, "key 500's revisions span pages")

	want := newest(es)
	for k, e := range want {
		r, ok, err := b.Get(k, e.Point)
		require.NoError(t, err)
		require.True(t, ok, "key %d", k)
		require.Equal(t, e.Revision, r.Revision)
		// Range starting at every key sees it first, newest.
		var first Entry
		require.NoError(t, b.Range(k, k, func(e Entry) bool { first = e; return false }))
		require.Equal(t, e.Revision, first.Revision)
	}
	n := 0
	require.NoError(t, b.Range(0, ^uint64(0), func(Entry) bool { n++; return true }))
	assert.Equal(t, len(want), n)
	one, _, err := EncodeBlock(1, 2, es[:1])
	require.NoError(t, err)
	b1, err := DecodeBlock("mem", one)
	require.NoError(t, err)
	assert.Equal(t, 1, b1.Pages())
	_, ok, err := b1.Get(^uint64(0), nil)
	require.NoError(t, err)
	assert.False(t, ok)
}

func BenchmarkCacheGet(b *testing.B) {
	dir := b.TempDir()
	d := newDoer(b)
	es, meta := writeTestBlock(b, d, dir, 1, 16384, 5)
	keys := make([]uint64, 0, len(es))
	for k := range newest(es) {
		keys = append(keys, k)
	}
	for _, kind := range []ring.Kind{ring.Std, ring.URing} {
		for _, c := range []struct {
			name   string
			budget int64
		}{{"hit", 64 << 20}, {"miss", -1}} {
			b.Run(fmt.Sprintf("%s/%s", kind, c.name), func(b *testing.B) {
				r, err := ring.New(ring.Options{Kind: kind, Entries: 64})
				if err != nil {
					b.Skip(err)
				}
				m := ring.NewMux(r)
				cache := NewCache(CacheOptions{Bytes: c.budget, Doer: m, Close: m.Close})
				defer cache.Close()
				blk, err := cache.OpenBlockFor(dir, meta)
				require.NoError(b, err)
				require.NoError(b, blk.All(func(Entry) bool { return true })) // warm
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					rng := rand.New(rand.NewPCG(1, 2))
					for pb.Next() {
						if _, ok, err := blk.Get(keys[rng.IntN(len(keys))], nil); err != nil || !ok {
							b.Errorf("%v %v", ok, err)
							return
						}
					}
				})
			})
		}
	}
}
