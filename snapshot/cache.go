package snapshot

import (
	"context"

	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring"
)

// DefaultCacheBytes is a Cache's default budget of decoded pages: the hot
// pages of a few dozen 2 MiB blocks, small next to the 256 MiB heap that
// issue 4 allows an engine of 5 million records.
const DefaultCacheBytes = 32 << 20

// ErrCacheClosed is returned by reads that miss the cache of a closed Cache
// that has no Fallback.
var ErrCacheClosed = errors.New("snapshot: block cache closed")

// CacheOptions configure NewCache.
type CacheOptions struct {
	// Bytes is the budget of decoded pages kept; 0 means
	// DefaultCacheBytes, a negative value keeps none.
	Bytes int64
	// Doer performs the reads. It must be safe for concurrent use (a
	// ring.Mux): Get, Scan and View read from any goroutine.
	Doer ring.Doer
	// Close, when set, is called by Cache.Close after the block files are
	// closed, to release what Doer runs on (the Mux and its ring).
	Close func() error
	// Fallback, when set, gives a short-lived Doer, and the function that
	// releases it, for a read that misses the cache after Close: a View
	// taken before the engine stopped stays readable. Nil: such a read
	// fails with ErrCacheClosed.
	Fallback func() (ring.Doer, func() error, error)

	// maxOpenFiles bounds the block files open at once; 0 means
	// defaultMaxOpenFiles. Unexported: a knob for tests, not for users.
	maxOpenFiles int
}

// defaultMaxOpenFiles is how many block files a Cache keeps open at once.
// An engine holds one block per 16k records of each space and never merges
// them yet (1M records in each of 100 spaces is about 6,000 blocks), so one
// fd per block would meet RLIMIT_NOFILE (often 1024 soft) in the embedding
// process. 256 keeps the fds of a few hundred recently read blocks, well
// under that limit next to the WAL, hot segments and the embedder's own;
// a read of a block whose fd was closed pays a close and an open first
// (BenchmarkCacheReopen: about 11 µs more on the std ring and 19 on uring,
// next to 12-16 µs for reading and decoding the page).
const defaultMaxOpenFiles = 256

// Cache is the read path of an engine's sealed blocks: the blocks it opens
// (OpenBlockFor) keep only their meta, Bloom filter and sparse index in
// memory and read pages on demand through Doer; the Cache keeps the most
// recently used decoded pages up to a byte budget.
//
// Memory: a block of n records in p pages holds 16p bytes of index and
// 10n/8 bytes of filter (about 28 KiB for the engine's 16k-record blocks);
// pages are bounded by the budget.
//
// File descriptors: at most maxOpenFiles block files are open at once (the
// fd table). A page read takes a reference on its block's fd, opening the
// file if it is closed; when the table is full, that open first closes the
// least recently used fd that no read holds. When every open fd is held,
// the read waits for one to be released. A block's file is thus reopened
// (by its path) as often as its fd is evicted; OpenBlockFor's own read of
// the tail goes through the same table.
//
// The page cache is split into shards (by a hash of block and page), each
// an LRU list under its own mutex, so that concurrent readers rarely meet
// on a lock. Two readers that miss the same page at once both read it; the
// second insert finds the first and keeps it.
//
// Invariants:
//  1. Every read through Doer happens with mu read-held, after checking
//     closed: Close, holding mu, waits for every read in flight before it
//     closes the files and the Doer.
//  2. A shard's used is the sum of its entries' costs and, after every
//     insert, at most its cap.
//  3. Pages in the cache are verified (CRC and structure) and never
//     modified; records handed out alias them, so eviction only drops the
//     cache's reference.
//  4. fds.slots counts the fds that are open or being opened, and is at
//     most fds.max: a slot is taken before an open and given back only
//     after the close (or a failed open) returns; an evicted fd's slot
//     passes to the open that evicted it, which closes that fd first.
//  5. An fd is closed only when no read holds it (refs == 0), after it
//     left the table under fds.mu, so no read can take it again.
//  6. At most one open of a file is in flight (cachedFile.opening); other
//     readers of that file wait for it rather than open a second fd.
type Cache struct {
	d        ring.Doer
	closeFn  func() error
	fallback func() (ring.Doer, func() error, error)
	shards   []cacheShard
	nextID   atomic.Uint64
	hits     atomic.Uint64
	misses   atomic.Uint64

	mu     sync.RWMutex // see invariant 1
	closed bool         // protected by mu

	fds fdTable // the open block files (invariants 4-6)
}

// fdTable is a Cache's table of open block files. Reads take its mutex
// with the Cache's mu read-held, only to update the table, never across
// their I/O (a read waiting for a slot waits on cond). Close takes it with
// mu write-held, when no read is in flight, and closes the fds under it.
type fdTable struct {
	mu    sync.Mutex
	cond  sync.Cond // on mu: a slot, an fd's last reference or an open came free
	max   int       // set by NewCache
	slots int       // protected by mu; see invariant 4
	// lru lists the files whose fd is open, by last use: lru.next is the
	// most recent, lru.prev the least. Protected by mu.
	lru cachedFile
	// open counts the fds actually open (opened and not yet closed), for
	// Stats; at most slots.
	open atomic.Int64
}

// Shards: at most maxCacheShards, none smaller than minShardBytes, so that
// a small budget still caches whole pages.
const (
	maxCacheShards = 16
	minShardBytes  = 256 << 10
	// pageOverhead is what a cached page costs beyond its bytes and
	// offsets: its struct, its list entry and its map slot.
	pageOverhead = 128
	// openRead is how much of a block's end OpenBlockFor reads at once: the
	// footer and, for blocks up to about 40k records, index and filter
	// too, so that opening costs one read.
	openRead = 64 << 10
)

// NewCache returns a Cache that reads through o.Doer.
func NewCache(o CacheOptions) *Cache {
	budget := o.Bytes
	if budget == 0 {
		budget = DefaultCacheBytes
	}
	budget = max(budget, 0)
	n := int(min(max(budget/minShardBytes, 1), maxCacheShards))
	c := &Cache{d: o.Doer, closeFn: o.Close, fallback: o.Fallback, shards: make([]cacheShard, n)}
	c.fds.max = o.maxOpenFiles
	if c.fds.max <= 0 {
		c.fds.max = defaultMaxOpenFiles
	}
	c.fds.cond.L = &c.fds.mu
	c.fds.lru.prev, c.fds.lru.next = &c.fds.lru, &c.fds.lru
	for i := range c.shards {
		s := &c.shards[i]
		s.cap = budget / int64(n)
		s.m = make(map[pageKey]*cacheEntry)
		s.lru.prev, s.lru.next = &s.lru, &s.lru
	}
	return c
}

// CacheStats are a Cache's counters.
type CacheStats struct {
	Hits, Misses uint64 // page lookups since NewCache
	Bytes        int64  // cost of the cached pages (see pageOverhead)
	Pages        int    // pages cached
	Files        int    // block files open now (at most the Cache's bound)
}

// Stats returns the Cache's counters.
func (c *Cache) Stats() CacheStats {
	st := CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load()}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		st.Bytes += s.used
		st.Pages += len(s.m)
		s.mu.Unlock()
	}
	st.Files = int(c.fds.open.Load())
	return st
}

// cachedFile is an open block's file as the Cache reads it: its fd, when
// open, is an entry of the Cache's fd table.
type cachedFile struct {
	c    *Cache
	id   uint64    // the Cache's name for the block, for page keys
	path string    // to open (again, or after Close)
	rel  string    // path relative to the engine's directory, for errors
	want BlockMeta // what the manifest says the file is (checkReopened)

	// Protected by c.fds.mu:
	fd         int32 // open on c.d, or -1
	refs       int   // reads holding fd; it is closed only at 0
	opening    bool  // an open of path is in flight (invariant 6)
	opened     bool  // path was opened once: a later open is checked
	prev, next *cachedFile
}

// OpenBlockFor opens the block that want describes under the engine
// directory dir: it reads the file's tail (footer, filter and index),
// verifies their CRC and checks that the file is that block (its space,
// id, size and checksum must match want, or the error is a
// *messages.CorruptionError: a misdirected or stale block file). Pages are
// read later, on demand. Errors name the file relative to dir.
func (c *Cache) OpenBlockFor(dir string, want BlockMeta) (*Block, error) {
	full := BlockPath(dir, want.Space, want.ID)
	rel, err := filepath.Rel(dir, full)
	if err != nil {
		rel = full
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return nil, ErrCacheClosed
	}
	f := &cachedFile{c: c, id: c.nextID.Add(1), path: full, rel: rel, want: want, fd: -1}
	fd, err := c.acquire(f)
	if err != nil {
		return nil, fmt.Errorf("snapshot: open block %s: %w", rel, err)
	}
	b, err := c.readTail(fd, rel, want)
	if err != nil {
		c.drop(f)
		return nil, err
	}
	c.release(f)
	b.src = f
	return b, nil
}

// readTail reads and checks the end of the block file fd, which the
// manifest says is want. REQUIRES: c.mu read-held, c open.
func (c *Cache) readTail(fd int32, path string, want BlockMeta) (*Block, error) {
	size := want.Size
	if size < blockHeaderSize+tailSize {
		return nil, blockError(path, 0, "the manifest says %d bytes, shorter than header, footer and checksum", size)
	}
	n := min(size, openRead)
	buf := make([]byte, n)
	if err := c.readFull(fd, path, buf, size-n); err != nil {
		return nil, err
	}
	f, err := parseFooter(path, size, buf[n-tailSize:])
	if err != nil {
		return nil, err
	}
	if err := checkMeta(path, f.meta, want); err != nil {
		return nil, err
	}
	var region []byte
	if at := int64(f.indexOff) - (size - n); at >= 0 {
		region = buf[at : n-checksumSize]
	} else {
		region = make([]byte, f.footOff+footerSize-f.indexOff)
		if err := c.readFull(fd, path, region, int64(f.indexOff)); err != nil {
			return nil, err
		}
	}
	return newBlock(path, f, region)
}

// readFull reads len(buf) bytes at off; a file that ends sooner is
// corrupt (the manifest or the index says it is longer).
func (c *Cache) readFull(fd int32, path string, buf []byte, off int64) error {
	n, err := ring.ReadAt(c.d, fd, buf, off)
	if err != nil {
		return fmt.Errorf("snapshot: read %s: %w", path, err)
	}
	if n < len(buf) {
		return blockError(path, off+int64(n), "file ends %d bytes short", len(buf)-n)
	}
	return nil
}

// page returns page i of b, from the cache or read and verified.
func (f *cachedFile) page(ctx context.Context, b *Block, i int) (*page, error) {
	c := f.c
	k := pageKey{file: f.id, page: uint32(i)}
	s := c.shard(k)
	if p := s.get(k); p != nil {
		c.hits.Add(1)
		return p, nil
	}
	c.misses.Add(1)
	start := b.pageStart(i)
	raw := make([]byte, b.ends[i]-start)
	n, err := c.readAt(ctx, f, raw, int64(start))
	if err != nil {
		return nil, fmt.Errorf("snapshot: read %s page %d: %w", b.path, i, err)
	}
	if n < len(raw) {
		return nil, blockError(b.path, int64(start)+int64(n), "page %d: file ends %d bytes short", i, len(raw)-n)
	}
	p, err := b.decodePage(i, raw)
	if err != nil {
		return nil, err
	}
	return s.add(k, p), nil
}

// readAt reads into buf at off from f's file: through the Cache's Doer
// while it is open, else through a short-lived Doer from the Fallback.
// When ctx ends first, readAt returns ctx's error at once and leaves the
// read to finish on a goroutine of its own, which holds what the read
// needs until then: buf (the caller drops it), f's fd (a reference) and
// c.mu's read lock (Close waits for it). Before, a Get or Scan whose page
// read the disk did not answer ignored its ctx (ctxb audit).
func (c *Cache) readAt(ctx context.Context, f *cachedFile, buf []byte, off int64) (int, error) {
	c.mu.RLock()
	if !c.closed {
		fd, err := c.acquire(f)
		if err != nil {
			c.mu.RUnlock()
			return 0, fmt.Errorf("reopen: %w", err)
		}
		read := func() (int, error) {
			defer c.mu.RUnlock()
			defer c.release(f)
			return ring.ReadAt(c.d, fd, buf, off)
		}
		if ctx.Done() == nil {
			return read()
		}
		type result struct {
			n   int
			err error
		}
		done := make(chan result, 1)
		go func() {
			n, err := read()
			done <- result{n, err}
		}()
		select {
		case r := <-done:
			return r.n, r.err
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	c.mu.RUnlock()
	if c.fallback == nil {
		return 0, ErrCacheClosed
	}
	d, release, err := c.fallback()
	if err != nil {
		return 0, fmt.Errorf("snapshot: read after close: %w", err)
	}
	n, err := func() (int, error) {
		fd, err := ring.Open(d, f.path, unix.O_RDONLY, 0)
		if err != nil {
			return 0, err
		}
		if err := checkReopened(d, fd, f); err != nil {
			return 0, errors.Join(err, ring.Close(d, fd))
		}
		n, rerr := ring.ReadAt(d, fd, buf, off)
		return n, errors.Join(rerr, ring.Close(d, fd))
	}()
	return n, errors.Join(err, release())
}

// Close closes every block file, then calls CacheOptions.Close. It waits
// for the reads in flight. Cached pages stay readable, and a miss after
// Close reads through the Fallback. Close is idempotent.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	// No read is in flight (invariant 1), so no fd is held or opening.
	c.fds.mu.Lock()
	var files []*cachedFile
	for f := c.fds.lru.next; f != &c.fds.lru; f = f.next {
		files = append(files, f)
	}
	var errs []error
	for _, f := range files {
		if f.refs != 0 || f.opening {
			panic("snapshot: Cache.Close with a read in flight")
		}
		fdUnlink(f)
		if err := ring.Close(c.d, f.fd); err != nil {
			errs = append(errs, fmt.Errorf("snapshot: close %s: %w", f.rel, err))
		}
		f.fd = -1
		c.fds.open.Add(-1)
		c.fds.slots--
	}
	c.fds.mu.Unlock()
	c.mu.Unlock()
	if c.closeFn != nil {
		errs = append(errs, c.closeFn())
	}
	return errors.Join(errs...)
}

// ---------------------------------------------------------------------
// The fd table

// acquire returns f's fd holding a reference on it, opening f's file if
// its fd is closed; release gives the reference back.
// REQUIRES: c.mu read-held, c open.
func (c *Cache) acquire(f *cachedFile) (int32, error) {
	t := &c.fds
	t.mu.Lock()
	var victim *cachedFile
	for {
		if f.fd >= 0 {
			f.refs++
			fdUnlink(f)
			t.pushFront(f)
			t.mu.Unlock()
			return f.fd, nil
		}
		if !f.opening {
			if t.slots < t.max {
				t.slots++
				break
			}
			if victim = t.idle(); victim != nil {
				break // its slot passes to f
			}
		}
		// Another read opens f, or every slot is held by a read: both
		// end soon, and their end broadcasts.
		t.cond.Wait()
	}
	f.opening = true
	reopen := f.opened
	var vfd int32 = -1
	if victim != nil {
		fdUnlink(victim)
		vfd, victim.fd = victim.fd, -1
	}
	t.mu.Unlock()

	if vfd >= 0 {
		// A read-only fd: Linux closes it even when close reports an
		// error, and its data needs nothing from us, so there is nothing
		// to report.
		ring.Close(c.d, vfd) //nolint:errcheck // see above
		t.open.Add(-1)
	}
	fd, err := ring.Open(c.d, f.path, unix.O_RDONLY, 0)
	if err == nil && reopen {
		if err = checkReopened(c.d, fd, f); err != nil {
			ring.Close(c.d, fd) //nolint:errcheck // read-only; the check's error is the one to report
		}
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	f.opening = false
	t.cond.Broadcast()
	if err != nil {
		t.slots--
		return -1, err
	}
	t.open.Add(1)
	f.fd, f.refs, f.opened = fd, 1, true
	t.pushFront(f)
	return fd, nil
}

// checkReopened checks that fd, a new open of f's path, is still the
// block the manifest names: its footer (space, id, size) and the checksum
// after it must be want's. Pages are verified alone (their CRC covers
// their offset, not the block), so without this a file replaced since the
// first open (the engine never rewrites a block id; something else did)
// whose pages lie where the old ones did would be served as the old
// block. It costs one read of tailSize bytes per reopen.
func checkReopened(d ring.Doer, fd int32, f *cachedFile) error {
	size := f.want.Size
	buf := make([]byte, tailSize)
	n, err := ring.ReadAt(d, fd, buf, size-tailSize)
	if err != nil {
		return fmt.Errorf("snapshot: read %s: %w", f.rel, err)
	}
	if n < len(buf) {
		return blockError(f.rel, size-tailSize+int64(n), "reopened: the file ends %d bytes short", len(buf)-n)
	}
	ft, err := parseFooter(f.rel, size, buf)
	if err != nil {
		return err
	}
	return checkMeta(f.rel, ft.meta, f.want)
}

// release gives back the reference acquire took.
func (c *Cache) release(f *cachedFile) {
	t := &c.fds
	t.mu.Lock()
	f.refs--
	if f.refs == 0 {
		t.cond.Broadcast() // f may be the idle fd a waiting open needs
	}
	t.mu.Unlock()
}

// drop closes f's fd, on which the caller holds the only reference:
// OpenBlockFor's way out when the file is not the block it wants.
func (c *Cache) drop(f *cachedFile) {
	t := &c.fds
	t.mu.Lock()
	fdUnlink(f)
	fd := f.fd
	f.fd, f.refs = -1, 0
	t.mu.Unlock()
	ring.Close(c.d, fd) //nolint:errcheck // read-only; the read error is the one to report
	t.open.Add(-1)
	t.mu.Lock()
	t.slots--
	t.cond.Broadcast()
	t.mu.Unlock()
}

// idle returns the least recently used file whose fd no read holds, or
// nil. REQUIRES: t.mu held.
func (t *fdTable) idle() *cachedFile {
	for f := t.lru.prev; f != &t.lru; f = f.prev {
		if f.refs == 0 {
			return f
		}
	}
	return nil
}

// pushFront makes f the most recently used. REQUIRES: t.mu held, f not
// listed.
func (t *fdTable) pushFront(f *cachedFile) {
	f.prev, f.next = &t.lru, t.lru.next
	t.lru.next.prev = f
	t.lru.next = f
}

// fdUnlink takes f off the list, if it is on it. REQUIRES: the table's mu
// held.
func fdUnlink(f *cachedFile) {
	if f.prev == nil {
		return
	}
	f.prev.next, f.next.prev = f.next, f.prev
	f.prev, f.next = nil, nil
}

// ---------------------------------------------------------------------
// The page cache

// pageKey names a page of an open block.
type pageKey struct {
	file uint64
	page uint32
}

type cacheEntry struct {
	key        pageKey
	p          *page
	cost       int64
	prev, next *cacheEntry
}

// cacheShard is an LRU list of pages. lru is its sentinel: lru.next is the
// most recently used entry, lru.prev the least.
type cacheShard struct {
	mu   sync.Mutex // protects every field below
	m    map[pageKey]*cacheEntry
	lru  cacheEntry
	used int64
	cap  int64
}

func (c *Cache) shard(k pageKey) *cacheShard {
	h := mix64(k.file*0x9e3779b97f4a7c15 ^ uint64(k.page))
	return &c.shards[h%uint64(len(c.shards))]
}

func pageCost(p *page) int64 {
	return int64(cap(p.data)) + 4*int64(cap(p.offs)) + pageOverhead
}

func (s *cacheShard) get(k pageKey) *page {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[k]
	if e == nil {
		return nil
	}
	s.unlink(e)
	s.pushFront(e)
	return e.p
}

// add caches p under k, evicting the least recently used pages beyond the
// budget, and returns the page cached under k (p, or one another reader
// cached first). A page costlier than the whole shard is not cached.
func (s *cacheShard) add(k pageKey, p *page) *page {
	cost := pageCost(p)
	if cost > s.cap {
		return p
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[k]; e != nil {
		s.unlink(e)
		s.pushFront(e)
		return e.p
	}
	e := &cacheEntry{key: k, p: p, cost: cost}
	s.m[k] = e
	s.pushFront(e)
	s.used += cost
	for s.used > s.cap {
		old := s.lru.prev // never e: e alone fits
		s.unlink(old)
		delete(s.m, old.key)
		s.used -= old.cost
	}
	return p
}

func (s *cacheShard) unlink(e *cacheEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (s *cacheShard) pushFront(e *cacheEntry) {
	e.prev, e.next = &s.lru, s.lru.next
	s.lru.next.prev = e
	s.lru.next = e
}
