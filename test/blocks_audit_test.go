package test

// The blocks audit: the read path when a space has hundreds of sealed
// blocks (DESIGN.md §3 "Reads": blocks of one space overlap in key range,
// every block carries a Bloom filter, a point lookup opens only the blocks
// whose filter and key range admit the key, a box query reads only blocks
// whose key range meets the box's Hilbert ranges), with the extreme specs
// (1×32, 2×32, 4×16, 16×4, 16×1, 3×21: keys of 16 to 64 bits), the block cache's byte bound (Config.BlockCacheBytes,
// snapshot.Cache), Views held across seals, and a fresh Start over 300
// blocks.
//
// Block I/O is counted on the simulated disk by a ring wrapper (bkRing)
// around every ring the engine makes: opens and reads of block files
// (blocks/<space>/<id>.blk), by file.
//
// Seeds: $RINGPIPE_BLOCKS_SEED replays one (envSeed).

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
	"github.com/ringpipe/ringpipe/snapshot"
)

// bkSpecs are the spaces of the scale test: the widest and narrowest
// coordinates, the most dimensions, and keys of exactly 64 bits (2×32,
// 4×16, 16×4) next to 63 (3×21), 32 (1×32) and 16 (16×1).
var bkSpecs = []ringpipe.SpaceSpec{
	{Name: "d1b32", Dims: 1, Bits: 32},
	{Name: "d2b32", Dims: 2, Bits: 32},
	{Name: "d4b16", Dims: 4, Bits: 16},
	{Name: "d16b4", Dims: 16, Bits: 4},
	{Name: "d16b1", Dims: 16, Bits: 1},
	{Name: "d3b21", Dims: 3, Bits: 21},
}

// bkMinBlocks is how many blocks each space must have: "hundreds", and
// more than the 256 block files the cache keeps open at once.
const bkMinBlocks = 300

// ---------------------------------------------------------------------
// Counting block I/O

// bkIO counts the opens and reads of block files on every ring a bkRing
// wraps.
type bkIO struct {
	mu    sync.Mutex
	opens int
	reads int
	bytes int64
	// perFile is the bytes asked of each block file, by path.
	perFile map[string]int64
}

func newBKIO() *bkIO { return &bkIO{perFile: make(map[string]int64)} }

// bkCount is a snapshot of a bkIO's counters.
type bkCount struct {
	opens, reads int
	bytes        int64
}

func (c *bkIO) count() bkCount {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bkCount{c.opens, c.reads, c.bytes}
}

func (a bkCount) sub(b bkCount) bkCount {
	return bkCount{a.opens - b.opens, a.reads - b.reads, a.bytes - b.bytes}
}

// takeFiles returns the bytes read per block file and resets them.
func (c *bkIO) takeFiles() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.perFile
	c.perFile = make(map[string]int64)
	return m
}

func bkIsBlock(p string) bool { return strings.Contains(p, "/blocks/") && strings.HasSuffix(p, ".blk") }

// bkRing wraps a ring and counts, in its bkIO, the opens of block files
// and the reads of fds it saw opened on block files. It learns an open's
// fd from its Completion, before the caller can use it.
type bkRing struct {
	ring.Ring
	io *bkIO

	mu      sync.Mutex
	opening map[uint64]string // token of an open of a block file in flight → its path
	fds     map[int32]string  // fd → block file path
}

func newBKRing(r ring.Ring, io *bkIO) *bkRing {
	return &bkRing{Ring: r, io: io, opening: make(map[uint64]string), fds: make(map[int32]string)}
}

func (r *bkRing) Submit(ops []ring.Op) error {
	r.mu.Lock()
	r.io.mu.Lock()
	for i := range ops {
		op := &ops[i]
		switch op.Code {
		case ring.OpOpen:
			if bkIsBlock(op.Path) {
				r.opening[op.Token] = op.Path
				r.io.opens++
			}
		case ring.OpRead, ring.OpReadv:
			p, ok := r.fds[op.FD]
			if !ok {
				continue
			}
			n := int64(len(op.Buf))
			for _, b := range op.Bufs {
				n += int64(len(b))
			}
			r.io.reads++
			r.io.bytes += n
			r.io.perFile[p] += n
		case ring.OpClose:
			delete(r.fds, op.FD)
		}
	}
	r.io.mu.Unlock()
	r.mu.Unlock()
	return r.Ring.Submit(ops)
}

func (r *bkRing) Reap(out []ring.Completion) (int, error) {
	n, err := r.Ring.Reap(out)
	r.seen(out[:n])
	return n, err
}

func (r *bkRing) TryReap(out []ring.Completion) (int, error) {
	n, err := r.Ring.TryReap(out)
	r.seen(out[:n])
	return n, err
}

func (r *bkRing) seen(cs []ring.Completion) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cs {
		if c.Deadline {
			continue
		}
		if p, ok := r.opening[c.Token]; ok {
			delete(r.opening, c.Token)
			if c.Err == nil {
				r.fds[int32(c.Res)] = p
			}
		}
	}
}

// bkConfig is a Config on disk whose rings count block I/O in io, with
// small generations (SealThreshold 64) and warnings only in the log.
func bkConfig(t testing.TB, disk *sim.Disk, io *bkIO) ringpipe.Config {
	cfg := simConfig(t, disk)
	cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))
	cfg.SealThreshold = 64
	cfg.NewRing = func(o ring.Options) (ring.Ring, error) { return newBKRing(disk.NewRing(o), io), nil }
	return cfg
}

// bkBlockFiles counts the block files of space on disk.
func bkBlockFiles(disk *sim.Disk, space ringpipe.SpaceID) (n int, bytes int64) {
	prefix := fmt.Sprintf("%s/blocks/%d/", simDir, space)
	for _, p := range disk.Files() {
		if strings.HasPrefix(p, prefix) && strings.HasSuffix(p, ".blk") {
			n++
			if b, err := disk.ReadFile(p); err == nil {
				bytes += int64(len(b))
			}
		}
	}
	return n, bytes
}

// ---------------------------------------------------------------------
// The workload

// bkSpace is one space of a run: its model and where each point's newest
// write went.
type bkSpace struct {
	spec ringpipe.SpaceSpec
	id   ringpipe.SpaceID
	pool []ringpipe.Point
	hist []bkWrite // every acknowledged write, in no particular order

	// Built from hist by settle:
	m *model
	// round is the round of each point's newest write (-1: the final,
	// unsealed phase).
	round map[pkey]int
	// prevLive says whether the point had a live value before its newest
	// write (for a tombstone: whether it shadows a value).
	prevLive map[pkey]bool
}

// bkWrite is one acknowledged write and the round that made it.
type bkWrite struct {
	write
	round int
}

// settle builds the model from hist: the newest write per point, its
// round, and whether it followed a live value.
func (sp *bkSpace) settle() {
	slices.SortFunc(sp.hist, func(a, b bkWrite) int { return cmpRev(a.rev, b.rev) })
	sp.m, sp.round, sp.prevLive = newModel(sp.spec), map[pkey]int{}, map[pkey]bool{}
	for _, w := range sp.hist {
		k := keyOf(w.point)
		old, had := sp.m.last[k]
		sp.prevLive[k] = had && old.value != nil
		sp.m.add(w.write)
		sp.round[k] = w.round
	}
}

func cmpRev(a, b ringpipe.Revision) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// bkMax is the largest coordinate of spec.
func bkMax(spec ringpipe.SpaceSpec) uint32 { return uint32(uint64(1)<<spec.Bits - 1) }

// bkPool is n distinct points of spec: the corners all-0, all-max and
// alternating first, random ones, and last the points of the four
// extreme keys (0, 1, the largest and the one below: 2^64-1 when
// Dims*Bits is 64).
func bkPool(rng *rand.Rand, spec ringpipe.SpaceSpec, n int) []ringpipe.Point {
	top := bkMax(spec)
	zero, all, alt := make(ringpipe.Point, spec.Dims), make(ringpipe.Point, spec.Dims), make(ringpipe.Point, spec.Dims)
	for i := range all {
		all[i] = top
		if i%2 == 1 {
			alt[i] = top
		}
	}
	seen := map[pkey]bool{}
	var out []ringpipe.Point
	add := func(p ringpipe.Point) {
		if !seen[keyOf(p)] {
			seen[keyOf(p)] = true
			out = append(out, p)
		}
	}
	add(zero)
	add(all)
	add(alt)
	extremes := bkKeyExtremes(spec)
	for len(out) < n-len(extremes) {
		add(randPoint(rng, spec))
	}
	for _, p := range extremes {
		if seen[keyOf(p)] {
			// Already in (the origin has key 0): keep n points.
			add(randPoint(rng, spec))
		}
		add(p)
	}
	return out
}

// bkTopKey is the largest key of spec: 2^(Dims*Bits) - 1.
func bkTopKey(spec ringpipe.SpaceSpec) uint64 {
	if spec.Dims*spec.Bits == 64 {
		return ^uint64(0)
	}
	return 1<<uint(spec.Dims*spec.Bits) - 1
}

// bkKeyExtremes are the points of keys 0, 1, the largest and the one
// below it.
func bkKeyExtremes(spec ringpipe.SpaceSpec) []ringpipe.Point {
	top := bkTopKey(spec)
	var out []ringpipe.Point
	for _, k := range []uint64{0, 1, top - 1, top} {
		p := snapshot.PointOf(k, spec.Dims, spec.Bits)
		if snapshot.Key(p, spec.Dims, spec.Bits) != k {
			panic(fmt.Sprintf("PointOf(%d) = %v, whose key is not %d", k, p, k))
		}
		out = append(out, p)
	}
	return out
}

// bkWriter issues a space's writes from one goroutine: Puts
// asynchronously (tickets waited for in wait), Deletes synchronously.
type bkWriter struct {
	e   *ringpipe.Engine
	sp  *bkSpace
	ctx context.Context
	tks []bkPending
}

type bkPending struct {
	tk    *ringpipe.Ticket
	p     ringpipe.Point
	v     []byte
	round int
}

func (w *bkWriter) put(p ringpipe.Point, v []byte, round int) error {
	tk, err := w.e.PutAsync(w.ctx, w.sp.id, p, v)
	if err != nil {
		return fmt.Errorf("PutAsync %v: %w", p, err)
	}
	w.tks = append(w.tks, bkPending{tk, p, v, round})
	return nil
}

func (w *bkWriter) del(p ringpipe.Point, round int) error {
	rev, err := w.e.Delete(w.ctx, w.sp.id, p)
	if err != nil {
		return fmt.Errorf("Delete %v: %w", p, err)
	}
	w.sp.hist = append(w.sp.hist, bkWrite{write{point: p, rev: rev}, round})
	return nil
}

func (w *bkWriter) wait() error {
	defer func() { w.tks = w.tks[:0] }()
	for _, pd := range w.tks {
		rev, err := pd.tk.Wait(w.ctx)
		if err != nil {
			return fmt.Errorf("Ticket.Wait %v: %w", pd.p, err)
		}
		w.sp.hist = append(w.sp.hist, bkWrite{write{point: pd.p, rev: rev, value: pd.v}, pd.round})
	}
	return nil
}

// bkValue is the value of a write: distinct per space, round and op,
// padded to size bytes.
func bkValue(name string, round, i, size int) []byte {
	v := fmt.Appendf(nil, "%s/r%d/i%d/", name, round, i)
	for len(v) < size {
		v = append(v, byte('a'+len(v)%26))
	}
	return v
}

// bkRun is a workload over several spaces on one simulated disk.
type bkRun struct {
	t      *testing.T
	disk   *sim.Disk
	io     *bkIO
	cfg    ringpipe.Config
	e      *ringpipe.Engine
	rng    *rand.Rand
	spaces []*bkSpace
}

// bkColdRounds is how many rounds write a space's cold points.
const bkColdRounds = 10

// bkBuild starts an engine on a fresh simulated disk with one space per
// spec and seals at least bkMinBlocks blocks in each (one goroutine per
// space): a pool of points per space whose first quarter ("cold") is
// written once in the first rounds and never again, the rest overwritten
// and deleted at random round after round, each round ending in a Flush
// (nine in ten; the other rounds leave their generation to the
// SealThreshold or the next Flush). Then a last phase writes and deletes
// without sealing: the live tail.
func bkBuild(t *testing.T, seed int64, specs []ringpipe.SpaceSpec, poolSize, perRound, valueSize int) *bkRun {
	t.Helper()
	r := &bkRun{t: t, disk: newSimDisk(t, seed), io: newBKIO(), rng: rand.New(rand.NewSource(seed))}
	r.cfg = bkConfig(t, r.disk, r.io)
	r.e = start(t, r.cfg)
	for _, spec := range specs {
		sp := &bkSpace{spec: spec}
		sp.id = createSpace(t, r.e, spec.Name, spec.Dims, spec.Bits)
		sp.pool = bkPool(r.rng, spec, poolSize)
		r.spaces = append(r.spaces, sp)
	}
	// The build's bound: longer than one call's, as it is many calls.
	ctx, cancel := context.WithTimeout(context.Background(), 3*opTimeout)
	defer cancel()
	errs := make([]error, len(r.spaces))
	var wg sync.WaitGroup
	for i, sp := range r.spaces {
		rng := rand.New(rand.NewSource(seed + int64(i) + 1))
		wg.Go(func() { errs[i] = r.fill(ctx, sp, rng, perRound, valueSize) })
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...), "writing")
	for _, sp := range r.spaces {
		sp.settle()
	}
	return r
}

// fill writes sp's rounds (see bkBuild).
func (r *bkRun) fill(ctx context.Context, sp *bkSpace, rng *rand.Rand, perRound, valueSize int) error {
	w := &bkWriter{e: r.e, sp: sp, ctx: ctx}
	cold := len(sp.pool) / 4
	flushes := 0
	// Each Flush after a round's writes seals one block at least; 5 to
	// spare for Flushes that found the generation sealed already.
	for round := 0; round < bkColdRounds || flushes < bkMinBlocks+5; round++ {
		if round < bkColdRounds {
			for i := round * cold / bkColdRounds; i < (round+1)*cold/bkColdRounds; i++ {
				if err := w.put(sp.pool[i], bkValue(sp.spec.Name, round, i, valueSize), round); err != nil {
					return err
				}
			}
		}
		for i := range 1 + rng.Intn(perRound) {
			p := sp.pool[cold+rng.Intn(len(sp.pool)-cold)]
			var err error
			if rng.Intn(5) == 0 {
				err = w.del(p, round)
			} else {
				err = w.put(p, bkValue(sp.spec.Name, round, 1000+i, valueSize), round)
			}
			if err != nil {
				return err
			}
		}
		if err := w.wait(); err != nil {
			return err
		}
		if rng.Intn(10) != 0 {
			if err := r.e.Flush(ctx, sp.id); err != nil {
				return fmt.Errorf("Flush %s round %d: %w", sp.spec.Name, round, err)
			}
			flushes++
		}
	}
	// Everything so far sealed, then the live tail: fewer writes than a
	// generation seals at.
	if err := r.e.Flush(ctx, sp.id); err != nil {
		return fmt.Errorf("Flush %s: %w", sp.spec.Name, err)
	}
	for i := range 40 {
		p := sp.pool[cold+rng.Intn(len(sp.pool)-cold)]
		var err error
		if i%3 == 0 {
			err = w.del(p, -1)
		} else {
			err = w.put(p, bkValue(sp.spec.Name, -1, i, valueSize), -1)
		}
		if err != nil {
			return err
		}
	}
	return w.wait()
}

// classes counts where the newest write of each point of sp lies, and
// checks that every kind is there.
func (r *bkRun) classes(sp *bkSpace, rounds int) {
	c := map[string]int{}
	for k, w := range sp.m.last {
		rd := sp.round[k]
		var where string
		switch {
		case rd < 0:
			where = "tail"
		case rd < rounds/3:
			where = "old block"
		default:
			where = "newer block"
		}
		if w.value == nil {
			if !sp.prevLive[k] {
				where = "tombstone of nothing"
			} else {
				where = "tombstone over a value, in " + where
			}
		} else {
			where = "value in " + where
		}
		c[where]++
	}
	r.t.Logf("%s: newest write per point: %v", sp.spec.Name, c)
	for _, want := range []string{"value in old block", "value in newer block", "value in tail",
		"tombstone over a value, in newer block", "tombstone over a value, in tail"} {
		assert.Positive(r.t, c[want], "%s: no point whose newest write is a %s (precondition)", sp.spec.Name, want)
	}
}

// ---------------------------------------------------------------------
// Checks

// bkAbsent returns n points of sp's space that were never written.
func bkAbsent(rng *rand.Rand, sp *bkSpace, n int) []ringpipe.Point {
	var out []ringpipe.Point
	for len(out) < n {
		p := randPoint(rng, sp.spec)
		if _, ok := sp.m.last[keyOf(p)]; !ok {
			out = append(out, p)
		}
	}
	return out
}

// bkBoxes are the boxes scanned besides the whole space: one-point boxes
// (a written point, the all-max corner, a never-written point), boxes
// that reach the top coordinate 2^Bits-1 on every dimension, and random
// boxes around written points.
func bkBoxes(rng *rand.Rand, sp *bkSpace, random int) []ringpipe.Box {
	spec := sp.spec
	top := bkMax(spec)
	one := func(p ringpipe.Point) ringpipe.Box { return ringpipe.Box{Min: p, Max: p} }
	allMax := slices.Clone(sp.pool[1])
	topKey := sp.pool[len(sp.pool)-1] // bkPool's last: the largest key
	out := []ringpipe.Box{
		one(sp.pool[rng.Intn(len(sp.pool))]),
		one(allMax),
		one(topKey),
		one(bkAbsent(rng, sp, 1)[0]),
		{Min: randPoint(rng, spec), Max: allMax},
		{Min: topKey, Max: allMax},
	}
	nearTop := make(ringpipe.Point, spec.Dims)
	for i := range nearTop {
		nearTop[i] = top - min(top, uint32(rng.Intn(3)))
	}
	out = append(out, ringpipe.Box{Min: nearTop, Max: allMax})
	for range random {
		c := sp.pool[rng.Intn(len(sp.pool))]
		b := ringpipe.Box{Min: make(ringpipe.Point, spec.Dims), Max: make(ringpipe.Point, spec.Dims)}
		for i := range c {
			w := uint64(rng.Int63n(int64(top)+1)) >> uint(rng.Intn(spec.Bits+1))
			lo := uint64(c[i]) - min(uint64(c[i]), w/2)
			b.Min[i], b.Max[i] = uint32(lo), uint32(min(uint64(top), lo+w))
		}
		out = append(out, b)
	}
	return out
}

// bkScanEqual scans box through rd and requires exactly m's live records
// inside it, in key order.
func bkScanEqual(t testing.TB, rd reader, space ringpipe.SpaceID, m *model, box ringpipe.Box) {
	t.Helper()
	want := m.live(box)
	var got []ringpipe.Record
	require.NoError(t, rd.scan(space, box, func(rec ringpipe.Record) bool {
		got = append(got, rec)
		return true
	}), "Scan %v", box)
	for i := range min(len(want), len(got)) {
		require.Equal(t, want[i].point, got[i].Point, "Scan of %v, record %d: point (key order)", box, i)
		require.Equal(t, want[i].rev, got[i].Revision, "Scan of %v, record %d: revision", box, i)
		require.Equal(t, want[i].value, got[i].Value, "Scan of %v, record %d: value", box, i)
	}
	require.Equal(t, len(want), len(got), "Scan of %v: record count", box)
}

// check reads every space through the reader mk makes for each subtest:
// Get of every point written (its newest write, or ErrNotFound), Get of
// never-written points, and Scans of the whole space and of bkBoxes.
func (r *bkRun) check(when string, mk func(testing.TB) reader) {
	for _, sp := range r.spaces {
		r.t.Run(when+"/"+sp.spec.Name, func(t *testing.T) {
			rd := mk(t)
			checkModel(t, rd, sp.id, sp.m, fullBox(sp.spec))
			for _, p := range bkAbsent(r.rng, sp, 30) {
				_, err := rd.get(sp.id, p)
				require.ErrorIs(t, err, ringpipe.ErrNotFound, "Get of never-written %v", p)
			}
			for _, b := range bkBoxes(r.rng, sp, 3) {
				bkScanEqual(t, rd, sp.id, sp.m, b)
			}
		})
	}
}

// ---------------------------------------------------------------------
// 1, 2. Correctness at scale; Bloom filters

// TestBlocksAuditScale: six spaces of the extreme specs, each with at
// least 300 blocks (more than the 256 block files kept open) whose key
// ranges all overlap, points whose newest write is in an old block, a
// newer block, the live tail, or a tombstone over an older value. Get and
// Scan (whole space, one-point boxes, boxes at the top coordinate, random
// boxes) equal the model, before and after Stop/Start (Views are read in
// TestBlocksAuditFreshStartAndCache).
//
// Then, on a Start without a page cache (BlockCacheBytes 1: every page a
// Get touches is read from disk), Gets of never-written points: DESIGN.md
// §3 says a point lookup opens only the blocks whose filter and key range
// admit the key, so an absent key must not read most blocks. The Bloom
// filters have 10 bits per key (snapshot: "a false-positive rate near
// 1%"); the bound asserted is a generous 10% of the blocks per Get on
// average. Still without a cache, readers of every space run at once
// while another space seals (concurrent).
func TestBlocksAuditScale(t *testing.T) {
	seed := envSeed(t, "RINGPIPE_BLOCKS_SEED")
	r := bkBuild(t, seed, bkSpecs, 300, 10, 24)
	for _, sp := range r.spaces {
		n, size := bkBlockFiles(r.disk, sp.id)
		t.Logf("%s: %d blocks (%d KiB), %d points, %d writes", sp.spec.Name, n, size>>10, len(sp.m.last), sp.m.count)
		require.GreaterOrEqual(t, n, bkMinBlocks, "%s: blocks (precondition)", sp.spec.Name)
		r.classes(sp, n)
	}
	r.check("before", func(t testing.TB) reader { return engineReader(t, r.e) })
	stop(t, r.e)

	// Absent Gets without a page cache.
	cfg := r.cfg
	cfg.BlockCacheBytes = 1
	c0 := r.io.count()
	r.e = start(t, cfg)
	atStart := r.io.count().sub(c0)
	total := int64(0)
	for _, sp := range r.spaces {
		_, size := bkBlockFiles(r.disk, sp.id)
		total += size
	}
	t.Logf("Start over %d KiB of blocks: %d opens, %d reads, %d KiB of block files (blocks this small are read whole: a block's open reads up to 64 KiB of its end at once)",
		total>>10, atStart.opens, atStart.reads, atStart.bytes>>10)
	ctx := ctxFor(t)
	for _, sp := range r.spaces {
		n, _ := bkBlockFiles(r.disk, sp.id)
		const gets = 200
		before := r.io.count()
		for _, p := range bkAbsent(r.rng, sp, gets) {
			_, err := r.e.Get(ctx, sp.id, p)
			require.ErrorIs(t, err, ringpipe.ErrNotFound, "%s: Get of never-written %v", sp.spec.Name, p)
		}
		absent := r.io.count().sub(before)
		before = r.io.count()
		for i := range gets {
			p := sp.pool[i%len(sp.pool)]
			_, err := r.e.Get(ctx, sp.id, p)
			if sp.m.last[keyOf(p)].value == nil {
				require.ErrorIs(t, err, ringpipe.ErrNotFound)
			} else {
				require.NoError(t, err)
			}
		}
		present := r.io.count().sub(before)
		// Not a promise (a box query reads the blocks whose key range
		// meets the box's), a figure: a Scan of a one-point box.
		before = r.io.count()
		p := bkAbsent(r.rng, sp, 1)[0]
		require.NoError(t, r.e.Scan(ctx, sp.id, ringpipe.Box{Min: p, Max: p}, noCall(t)))
		onePoint := r.io.count().sub(before)
		// Every open here reopens a block whose fd was closed (1,800
		// blocks and more, 256 fds), which reads the block's tail once
		// (checkReopened) besides the page: reads-opens are page reads.
		perGet := float64(absent.reads) / gets
		t.Logf("%s: %d blocks; a Get of an absent point: %.2f reads of block files on average (%.2f%% of the blocks), of which %.2f reopen checks (%d opens in %d Gets); of a written point %.2f reads, %.2f reopens; a Scan of a one-point box (absent point): %d reads, %d reopens",
			sp.spec.Name, n, perGet, 100*perGet/float64(n), float64(absent.opens)/gets, absent.opens, gets,
			float64(present.reads)/gets, float64(present.opens)/gets, onePoint.reads, onePoint.opens)
		assert.Less(t, perGet, 0.1*float64(n), "%s: a Get of an absent point reads %.1f of %d blocks on average: the Bloom filters do not prune", sp.spec.Name, perGet, n)
	}
	r.concurrent()
	stop(t, r.e)

	r.e = start(t, r.cfg)
	r.check("after", func(t testing.TB) reader { return engineReader(t, r.e) })
	stop(t, r.e)
}

// concurrent runs readers of every space at once, each Get and one-point
// Scan checked against the model, while a writer seals blocks of a space
// of its own (each seal opens its block through the same fd table): with
// 1,800 blocks and more, block files are closed and reopened all along
// (at most 256 stay open). Bounded by hangTimeout (a goroutine dump if
// not).
func (r *bkRun) concurrent() {
	t := r.t
	churn := createSpace(t, r.e, "churn", 2, 8)
	within(t, "concurrent reads over many blocks", func() {
		ctx, cancel := context.WithTimeout(context.Background(), hangTimeout)
		defer cancel()
		var wg sync.WaitGroup
		wg.Go(func() {
			for b := range 30 {
				for i := range 8 {
					_, err := r.e.Put(ctx, churn, ringpipe.Point{uint32(b), uint32(i)}, []byte("c"))
					if !assert.NoError(t, err, "churn Put") {
						return
					}
				}
				if !assert.NoError(t, r.e.Flush(ctx, churn), "churn Flush") {
					return
				}
			}
		})
		for g := range 4 {
			rng := rand.New(rand.NewSource(int64(g)))
			wg.Go(func() {
				bad := 0
				for i := 0; i < 120 && bad < 3; i++ {
					sp := r.spaces[rng.Intn(len(r.spaces))]
					p := sp.pool[rng.Intn(len(sp.pool))]
					want := sp.m.last[keyOf(p)]
					if i%8 == 0 {
						var got []ringpipe.Record
						err := r.e.Scan(ctx, sp.id, ringpipe.Box{Min: p, Max: p}, func(rec ringpipe.Record) bool {
							got = append(got, rec)
							return true
						})
						ok := assert.NoError(t, err, "%s: concurrent Scan of %v", sp.spec.Name, p)
						if ok && want.value == nil {
							ok = assert.Empty(t, got, "%s: concurrent Scan of deleted %v", sp.spec.Name, p)
						} else if ok && assert.Len(t, got, 1, "%s: concurrent Scan of %v", sp.spec.Name, p) {
							ok = assert.Equal(t, want.rev, got[0].Revision, "%s: concurrent Scan of %v", sp.spec.Name, p)
						}
						if !ok {
							bad++
						}
						continue
					}
					rec, err := r.e.Get(ctx, sp.id, p)
					ok := true
					if want.value == nil {
						ok = assert.ErrorIs(t, err, ringpipe.ErrNotFound, "%s: concurrent Get of deleted %v", sp.spec.Name, p)
					} else if ok = assert.NoError(t, err, "%s: concurrent Get of %v", sp.spec.Name, p); ok {
						ok = assert.Equal(t, want.rev, rec.Revision, "%s: concurrent Get of %v", sp.spec.Name, p) &&
							assert.Equal(t, want.value, rec.Value, "%s: concurrent Get of %v", sp.spec.Name, p)
					}
					if !ok {
						bad++
					}
				}
			})
		}
		wg.Wait()
	})
}

// ---------------------------------------------------------------------
// 3, 5. A fresh Start over 300 large blocks; the cache's bound; a View
// held across seals

// bkHeapInuse is HeapInuse after two collections.
func bkHeapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// bkCompact drops from sp.hist every write but each point's newest, so
// that the values of older writes can be collected; settle still gives
// the same model.
func (sp *bkSpace) compact() {
	sp.hist = sp.hist[:0:0]
	for _, w := range sp.m.last {
		sp.hist = append(sp.hist, bkWrite{w, sp.round[keyOf(w.point)]})
	}
}

// bkCloneModel is a copy of m that later writes do not change.
func bkCloneModel(m *model) *model {
	return &model{spec: m.spec, last: maps.Clone(m.last), count: m.count}
}

// TestBlocksAuditFreshStartAndCache: one space of 300 blocks of about
// 100 KiB each (64 records of 1500-byte values), larger than the 64 KiB a
// block's open reads of its tail, with a block cache of 2 MiB.
//
//   - A fresh Start (5): it opens every block, which reads the block's
//     tail (footer, filter, index; snapshot.Cache.OpenBlockFor: "Pages
//     are read later, on demand"), so no block file may be read whole.
//     The bytes read are logged. Its first Gets (a point whose newest
//     write is in the oldest block that holds one, one in the newest
//     block, an absent point) return the right answers, then every point.
//   - The cache's bound (3): Scans of the whole space, each reading every
//     page of all 300 blocks (about 29 MiB), four times; HeapInuse after
//     collection may grow by the cache's 2 MiB and a 16 MiB margin, far
//     less than the pages read.
//   - A View held across 100 more seals (3) returns the same answers as
//     when taken (a View pins what it shows), while the Engine shows the
//     new writes.
func TestBlocksAuditFreshStartAndCache(t *testing.T) {
	seed := envSeed(t, "RINGPIPE_BLOCKS_SEED")
	rng := rand.New(rand.NewSource(seed))
	disk := newSimDisk(t, seed)
	io := newBKIO()
	cfg := bkConfig(t, disk, io)
	const cacheBytes = 2 << 20
	cfg.BlockCacheBytes = cacheBytes
	e := start(t, cfg)
	spec := ringpipe.SpaceSpec{Name: "big", Dims: 2, Bits: 16}
	sp := &bkSpace{spec: spec, id: createSpace(t, e, spec.Name, spec.Dims, spec.Bits)}
	sp.pool = bkPool(rng, spec, 2000)
	ctx := ctxFor(t)
	w := &bkWriter{e: e, sp: sp, ctx: ctx}
	const perBlock, valueSize = 64, 1500
	for b := range bkMinBlocks {
		for i := range perBlock {
			require.NoError(t, w.put(sp.pool[rng.Intn(len(sp.pool))], bkValue(spec.Name, b, i, valueSize), b))
		}
		require.NoError(t, w.wait())
		require.NoError(t, e.Flush(ctx, sp.id))
	}
	sp.settle()
	sp.compact()
	n, size := bkBlockFiles(disk, sp.id)
	require.GreaterOrEqual(t, n, bkMinBlocks, "blocks (precondition)")
	require.Greater(t, size/int64(n), int64(80<<10), "blocks larger than a block open reads (precondition)")
	stop(t, e)

	// A fresh Start.
	io.takeFiles()
	c0 := io.count()
	e = start(t, cfg)
	atStart := io.count().sub(c0)
	read := io.takeFiles()
	whole, maxRead := 0, int64(0)
	for p, got := range read {
		data, err := disk.ReadFile(p)
		require.NoError(t, err)
		if got >= int64(len(data)) {
			whole++
		}
		maxRead = max(maxRead, got)
	}
	t.Logf("Start over %d blocks (%d KiB): %d opens and %d reads of block files, %d KiB (%.1f%%), at most %d KiB of one block; %d blocks read whole",
		n, size>>10, atStart.opens, atStart.reads, atStart.bytes>>10, 100*float64(atStart.bytes)/float64(size), maxRead>>10, whole)
	assert.Zero(t, whole, "a Start read %d of %d block files whole: blocks are to be opened by their tail, pages read on demand", whole, n)
	assert.Less(t, atStart.bytes, size, "a Start read as many bytes as the blocks hold")
	assert.Equal(t, n, len(read), "a Start opens every block the manifest names (README)")

	// Its first Gets.
	oldest, newest := sp.pool[0], sp.pool[0]
	for k, wr := range sp.m.last {
		if wr.value == nil {
			continue
		}
		if sp.round[k] < sp.round[keyOf(oldest)] {
			oldest = wr.point
		}
		if sp.round[k] > sp.round[keyOf(newest)] {
			newest = wr.point
		}
	}
	absent := bkAbsent(rng, sp, 1)[0]
	for _, p := range []ringpipe.Point{oldest, newest} {
		want := sp.m.last[keyOf(p)]
		rec, err := e.Get(ctx, sp.id, p)
		require.NoError(t, err, "first Get of %v (written in block %d)", p, sp.round[keyOf(p)])
		assert.Equal(t, want.rev, rec.Revision, "first Get of %v: revision", p)
		assert.Equal(t, want.value, rec.Value, "first Get of %v: value", p)
	}
	_, err := e.Get(ctx, sp.id, absent)
	assert.ErrorIs(t, err, ringpipe.ErrNotFound, "first Get of never-written %v", absent)
	checkModel(t, engineReader(t, e), sp.id, sp.m, fullBox(spec))

	// The cache's bound.
	live := len(sp.m.live(fullBox(spec)))
	h0 := bkHeapInuse()
	c0 = io.count()
	for k := range 4 {
		calls := 0
		fn := func(ringpipe.Record) bool { calls++; return true }
		if k%2 == 0 {
			require.NoError(t, e.Scan(ctxFor(t), sp.id, fullBox(spec), fn))
		} else {
			require.NoError(t, e.View().Scan(sp.id, fullBox(spec), fn))
		}
		require.Equal(t, live, calls, "Scan %d of the whole space", k)
	}
	scans := io.count().sub(c0)
	h1 := bkHeapInuse()
	growth := int64(h1) - int64(h0)
	t.Logf("4 Scans of the whole space: %d reads of block pages, %d MiB, %d opens of block files; HeapInuse %.1f MiB before, %.1f MiB after (%+.1f MiB; cache bound %d MiB)",
		scans.reads, scans.bytes>>20, scans.opens, mib(h0), mib(h1), float64(growth)/(1<<20), cacheBytes>>20)
	require.Greater(t, scans.bytes, 4*int64(cacheBytes), "the Scans read more than the cache holds (precondition)")
	assert.Less(t, growth, int64(cacheBytes+16<<20), "HeapInuse grew by %.1f MiB over 4 Scans: more than the block cache's %d MiB and a 16 MiB margin",
		float64(growth)/(1<<20), cacheBytes>>20)

	// A View held across 100 more seals.
	v := e.View()
	vrev := v.Revision()
	frozen := bkCloneModel(sp.m)
	w = &bkWriter{e: e, sp: sp, ctx: ctxFor(t)}
	for b := range 100 {
		round := bkMinBlocks + b
		for i := range 6 {
			p := sp.pool[rng.Intn(len(sp.pool))]
			if i%3 == 0 {
				require.NoError(t, w.wait())
				require.NoError(t, w.del(p, round))
			} else {
				require.NoError(t, w.put(p, bkValue(spec.Name, round, i, 16), round))
			}
		}
		require.NoError(t, w.wait())
		require.NoError(t, e.Flush(w.ctx, sp.id))
	}
	sp.settle()
	n2, _ := bkBlockFiles(disk, sp.id)
	require.GreaterOrEqual(t, n2, n+100, "100 more blocks (precondition)")
	assert.Equal(t, vrev, v.Revision(), "View.Revision after 100 seals")
	checkModel(t, viewReader(v), sp.id, frozen, fullBox(spec))
	for _, b := range bkBoxes(rng, sp, 1) {
		bkScanEqual(t, viewReader(v), sp.id, frozen, b)
	}
	checkModel(t, engineReader(t, e), sp.id, sp.m, fullBox(spec))
	stop(t, e)
	// And after Stop (pages the cache lacks are read through short-lived
	// rings, so a sample), the View still reads what it showed.
	for _, b := range bkBoxes(rng, sp, 0)[:4] {
		bkScanEqual(t, viewReader(v), sp.id, frozen, b)
	}
	sample := &model{spec: spec, last: bkSample(rng, frozen.last, 200)}
	empty := ringpipe.Box{Min: sp.pool[1], Max: make(ringpipe.Point, spec.Dims)} // Min > Max: Gets only
	checkModel(t, viewReader(v), sp.id, sample, empty)
}

// bkSample returns n entries of m chosen at random (all if fewer).
func bkSample(rng *rand.Rand, m map[pkey]write, n int) map[pkey]write {
	keys := slices.Sorted(maps.Keys(m))
	rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	out := make(map[pkey]write, n)
	for _, k := range keys[:min(n, len(keys))] {
		out[k] = m[k]
	}
	return out
}

// ---------------------------------------------------------------------
// 4. Scans that end early, empty regions, cancelled contexts, unknown
// spaces

// TestBlocksAuditScanEnds: on a space of 300 blocks (points in the lower
// half of x only; a strip above it written and then all deleted):
//   - a Scan whose fn returns false at its k-th call is called exactly k
//     times, with the first k records of the model (Engine and View;
//     the whole space and a box of many key ranges);
//   - a Scan of a region never written, of a region whose every point was
//     deleted, and of a box with Min > Max calls nothing and returns nil;
//   - a Scan whose ctx is cancelled by its fn returns ctx's error within
//     the engine's check interval (README: every 256 records), and one
//     whose ctx has ended before it calls nothing;
//   - a View taken before the space was created does not know it
//     (ErrUnknownSpace from View.Scan and View.Get, API "it never
//     changes").
func TestBlocksAuditScanEnds(t *testing.T) {
	seed := envSeed(t, "RINGPIPE_BLOCKS_SEED")
	rng := rand.New(rand.NewSource(seed))
	disk := newSimDisk(t, seed)
	e := start(t, bkConfig(t, disk, newBKIO()))
	before := e.View()
	spec := ringpipe.SpaceSpec{Name: "ends", Dims: 2, Bits: 16}
	sp := &bkSpace{spec: spec, id: createSpace(t, e, spec.Name, spec.Dims, spec.Bits)}
	const half = 1 << 15
	for len(sp.pool) < 2500 {
		p := randPoint(rng, spec)
		p[0] %= half
		sp.pool = append(sp.pool, p)
	}
	var strip []ringpipe.Point // x in [half, half+64), all deleted
	for x := range uint32(64) {
		strip = append(strip, ringpipe.Point{half + x, uint32(rng.Intn(1 << 16))})
	}
	ctx := ctxFor(t)
	w := &bkWriter{e: e, sp: sp, ctx: ctx}
	for b := range bkMinBlocks {
		for i := range 20 {
			var p ringpipe.Point
			if b < 125 {
				p = sp.pool[b*20+i] // every point once, then at random
			} else {
				p = sp.pool[rng.Intn(len(sp.pool))]
			}
			require.NoError(t, w.put(p, bkValue(spec.Name, b, i, 8), b))
		}
		switch {
		case b < 64:
			require.NoError(t, w.put(strip[b], bkValue(spec.Name, b, -1, 8), b))
		case b < 128:
			require.NoError(t, w.wait())
			require.NoError(t, w.del(strip[b-64], b))
		}
		require.NoError(t, w.wait())
		require.NoError(t, e.Flush(ctx, sp.id))
	}
	sp.settle()
	n, _ := bkBlockFiles(disk, sp.id)
	require.GreaterOrEqual(t, n, bkMinBlocks, "blocks (precondition)")
	full := fullBox(spec)
	liveAll := sp.m.live(full)
	require.Greater(t, len(liveAll), 2000, "live points (precondition)")

	v := e.View()
	scans := map[string]func(context.Context, ringpipe.Box, func(ringpipe.Record) bool) error{
		"Engine": func(c context.Context, b ringpipe.Box, fn func(ringpipe.Record) bool) error {
			return e.Scan(c, sp.id, b, fn)
		},
		"View": func(_ context.Context, b ringpipe.Box, fn func(ringpipe.Record) bool) error {
			return v.Scan(sp.id, b, fn)
		},
	}
	many := ringpipe.Box{Min: ringpipe.Point{1000, 3000}, Max: ringpipe.Point{29000, 61000}}
	for name, scan := range scans {
		t.Run("stop/"+name, func(t *testing.T) {
			for _, box := range []ringpipe.Box{full, many} {
				want := sp.m.live(box)
				for _, k := range []int{1, 2, 255, 256, 257, 1000} {
					if k > len(want) {
						continue
					}
					var got []ringpipe.Record
					err := scan(ctxFor(t), box, func(r ringpipe.Record) bool {
						got = append(got, r)
						return len(got) < k
					})
					require.NoError(t, err, "Scan of %v stopped at call %d", box, k)
					require.Len(t, got, k, "Scan of %v whose fn returns false at call %d: calls", box, k)
					for i := range got {
						require.Equal(t, want[i].point, got[i].Point, "Scan of %v, record %d", box, i)
						require.Equal(t, want[i].rev, got[i].Revision, "Scan of %v, record %d", box, i)
					}
				}
			}
		})
		t.Run("empty/"+name, func(t *testing.T) {
			for what, box := range map[string]ringpipe.Box{
				"never written": {Min: ringpipe.Point{half + 64, 0}, Max: ringpipe.Point{1<<16 - 1, 1<<16 - 1}},
				"all deleted":   {Min: ringpipe.Point{half, 0}, Max: ringpipe.Point{half + 63, 1<<16 - 1}},
				"Min > Max":     {Min: ringpipe.Point{100, 5}, Max: ringpipe.Point{99, 60000}},
				"one deleted":   {Min: strip[7], Max: strip[7]},
			} {
				require.Empty(t, sp.m.live(box), "%s: the model's records (precondition)", what)
				err := scan(ctxFor(t), box, noCall(t))
				assert.NoError(t, err, "Scan of the region %s %v", what, box)
			}
		})
	}
	t.Run("cancel", func(t *testing.T) {
		for _, at := range []int{1, 10, 300} {
			c, cancel := context.WithCancel(context.Background())
			calls := 0
			err := e.Scan(c, sp.id, full, func(ringpipe.Record) bool {
				calls++
				if calls == at {
					cancel()
				}
				return true
			})
			cancel()
			t.Logf("Scan cancelled at call %d of %d: %d calls, %v", at, len(liveAll), calls, err)
			assert.ErrorIs(t, err, context.Canceled, "Scan whose ctx was cancelled at call %d", at)
			assert.LessOrEqual(t, calls, at+256, "calls after the cancel (README: ctx checked every 256 records)")
		}
		c, cancel := context.WithCancel(context.Background())
		cancel()
		assert.ErrorIs(t, e.Scan(c, sp.id, full, noCall(t)), context.Canceled, "Scan with an ended ctx")
	})
	t.Run("view before the space", func(t *testing.T) {
		err := before.Scan(sp.id, full, noCall(t))
		assert.ErrorIs(t, err, ringpipe.ErrUnknownSpace, "View.Scan of a space created after the View")
		_, err = before.Get(sp.id, sp.pool[0])
		assert.ErrorIs(t, err, ringpipe.ErrUnknownSpace, "View.Get of a space created after the View")
		// The space's later View shows it.
		bkScanEqual(t, viewReader(v), sp.id, sp.m, many)
	})
	stop(t, e)
}
