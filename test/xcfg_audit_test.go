package test

// The extreme-Config audit: every Config that Start accepts must give a
// working engine (API.md: "Zero values mean default. Invalid values make
// Start return an error that names the field"; README "Details a user
// meets"). Each case takes one field (or an odd combination) to an edge
// Start still accepts and runs a small mixed workload from several
// goroutines (Put with read-back, Delete, PutAsync and Wait, Sync, Flush,
// Get, Scan), checks it against a model, then ends the engine (a clean
// Stop, or on the simulated disk a power loss with PutAsyncs in flight)
// and checks again after a restart, and once more after a Flush of every
// space. Every call is bounded; a call that does not return fails the test
// with every goroutine's stack. Values just past a limit that the other
// suites do not try are checked to be refused, naming the field.
//
// Seeds are printed; replay one with RINGPIPE_LIFECYCLE_SEED=N.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// xcSpecs are the spaces every case writes: a plane and a line.
var xcSpecs = []ringpipe.SpaceSpec{
	{Name: "plane", Dims: 2, Bits: 8},
	{Name: "line", Dims: 1, Bits: 16},
}

// xcEnv is where a case runs.
type xcEnv int

const (
	xcSim xcEnv = iota
	xcStd
	xcURing
)

// xcCase is one accepted Config and its workload.
type xcCase struct {
	name    string
	env     xcEnv
	mod     func(c *ringpipe.Config)
	writers int
	ops     int // per writer
	// val is the largest value size the workload writes (0: the
	// engine's MaxValueSize, read from its ErrValueTooLarge).
	val int
	// powerLoss ends the first engine with a power loss (sim only).
	powerLoss bool
	// slowHot (sim) makes hot-segment syncs miss the default deadline
	// now and then, so that writes are staged and promoted.
	slowHot bool
	// check runs on the first engine after the workload, before it ends.
	check func(t *testing.T, e *ringpipe.Engine, st ringpipe.Stats)
}

// xcRes is what the workload had acknowledged, per space.
type xcRes struct {
	ids    []ringpipe.SpaceID
	acks   []acks
	maxVal int // the largest value written: the checks' bound grows with it
	// limbo are the PutAsyncs of the burst before a power loss, at points
	// nothing else writes.
	limbo []xcLimbo
}

type xcLimbo struct {
	s     int
	point ringpipe.Point
	value []byte
	tk    *ringpipe.Ticket
}

// xcHang reports a call that did not return within hangTimeout, with
// every goroutine's stack (once per test).
type xcHang struct {
	once sync.Once
}

func (h *xcHang) check(t *testing.T, err error, what string) bool {
	t.Helper()
	if errors.Is(err, context.DeadlineExceeded) {
		h.once.Do(func() {
			t.Errorf("%s did not return within %v; goroutines:\n%s", what, hangTimeout, goroutineDump())
		})
		return false
	}
	return assert.NoError(t, err, what)
}

// xcValue is a value of exactly n bytes starting with tag (cut short when
// n is smaller): never nil, so an empty value is a live, empty record.
func xcValue(tag string, n int) []byte {
	v := bytes.Repeat([]byte("abcdefghijklmnopqrstuvwxyz"), n/26+1)[:n:n]
	copy(v, tag)
	return v
}

// xcOwn is writer w's i-th own point in space s (no other writer writes it).
func xcOwn(s, w, i int) ringpipe.Point {
	if s == 0 {
		return ringpipe.Point{uint32(w), uint32(i % 200)}
	}
	return ringpipe.Point{uint32(w*256 + i%200)}
}

// xcShared is one of the few points every writer writes in space s.
func xcShared(s int, rng *rand.Rand) ringpipe.Point {
	if s == 0 {
		return ringpipe.Point{uint32(240 + rng.Intn(4)), uint32(rng.Intn(4))}
	}
	return ringpipe.Point{uint32(60000 + rng.Intn(8))}
}

// xcLimboPoint is the i-th point of the burst before a power loss.
func xcLimboPoint(s, i int) ringpipe.Point {
	if s == 0 {
		return ringpipe.Point{uint32(250 + i/256), uint32(i % 256)}
	}
	return ringpipe.Point{uint32(64000 + i)}
}

// xcLimit is the MaxValueSize e enforces (scMaxValue's probe).
func xcLimit(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID) int {
	return scMaxValue(t, e, sp)
}

// xcWorkload runs c's writers on e and returns what was acknowledged.
func xcWorkload(t *testing.T, e *ringpipe.Engine, c xcCase, seed int64, maxVal int) *xcRes {
	t.Helper()
	res := &xcRes{acks: make([]acks, len(xcSpecs)), maxVal: maxVal}
	for _, spec := range xcSpecs {
		res.ids = append(res.ids, createSpace(t, e, spec.Name, spec.Dims, spec.Bits))
	}
	var hang xcHang
	call := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), hangTimeout)
	}
	var wg sync.WaitGroup
	for w := range c.writers {
		wg.Go(func() {
			rng := rand.New(rand.NewSource(seed*1000 + int64(w)))
			type pend struct {
				s  int
				w  write
				tk *ringpipe.Ticket
			}
			var pending []pend
			settle := func(what string) bool {
				for _, p := range pending {
					ctx, cancel := call()
					rev, err := p.tk.Wait(ctx)
					cancel()
					if !hang.check(t, err, fmt.Sprintf("writer %d: Wait of a PutAsync at %v (%s)", w, p.w.point, what)) {
						return false
					}
					p.w.rev = rev
					res.acks[p.s].add(p.w)
				}
				pending = pending[:0]
				return true
			}
			value := func(i int) []byte {
				n := rng.Intn(maxVal + 1)
				switch rng.Intn(8) {
				case 0:
					n = maxVal
				case 1:
					n = 0
				}
				return xcValue(fmt.Sprintf("w%d-%d|", w, i), n)
			}
			for i := range c.ops {
				s := rng.Intn(len(xcSpecs))
				sp := res.ids[s]
				ctx, cancel := call()
				var err error
				what := ""
				switch k := rng.Intn(100); {
				case k < 40: // Put at an own point, read back at once
					p, v := xcOwn(s, w, i), value(i)
					var rev ringpipe.Revision
					what = fmt.Sprintf("writer %d: Put of %d B at %v", w, len(v), p)
					if rev, err = e.Put(ctx, sp, p, v); err == nil {
						res.acks[s].add(write{point: p, rev: rev, value: v})
						var rec ringpipe.Record
						rec, err = e.Get(ctx, sp, p)
						what += " then Get"
						if err == nil {
							assert.Equal(t, rev, rec.Revision, "%s: Get after Put", what)
							assert.True(t, bytes.Equal(v, rec.Value), "%s: value read back", what)
						}
					}
				case k < 55: // Put at a shared point
					p, v := xcShared(s, rng), value(i)
					var rev ringpipe.Revision
					what = fmt.Sprintf("writer %d: Put of %d B at shared %v", w, len(v), p)
					if rev, err = e.Put(ctx, sp, p, v); err == nil {
						res.acks[s].add(write{point: p, rev: rev, value: v})
					}
				case k < 65: // Delete an own point (written or not) or a shared one
					p := xcOwn(s, w, rng.Intn(i+1))
					if rng.Intn(2) == 0 {
						p = xcShared(s, rng)
					}
					var rev ringpipe.Revision
					what = fmt.Sprintf("writer %d: Delete at %v", w, p)
					if rev, err = e.Delete(ctx, sp, p); err == nil {
						res.acks[s].add(write{point: p, rev: rev})
					}
				case k < 85: // PutAsync at an own point, waited for later
					p, v := xcOwn(s, w, i), value(i)
					var tk *ringpipe.Ticket
					what = fmt.Sprintf("writer %d: PutAsync of %d B at %v", w, len(v), p)
					if tk, err = e.PutAsync(ctx, sp, p, v); err == nil {
						pending = append(pending, pend{s: s, w: write{point: p, value: v}, tk: tk})
					}
				case k < 92: // Sync: every earlier ticket is done on return
					what = fmt.Sprintf("writer %d: Sync", w)
					if err = e.Sync(ctx); err == nil {
						for _, p := range pending {
							select {
							case <-p.tk.Done():
							default:
								t.Errorf("writer %d: Sync returned before the ticket of its earlier PutAsync at %v was done", w, p.w.point)
							}
						}
						if !settle("after Sync") {
							cancel()
							return
						}
					}
				case k < 95: // Flush
					what = fmt.Sprintf("writer %d: Flush of space %d", w, sp)
					err = e.Flush(ctx, sp)
				default: // Scan of this writer's own points: strictly increasing keys
					what = fmt.Sprintf("writer %d: Scan", w)
					box := fullBox(xcSpecs[s])
					n := 0
					err = e.Scan(ctx, sp, box, func(ringpipe.Record) bool { n++; return n < 64 })
				}
				cancel()
				if !hang.check(t, err, what) {
					return
				}
			}
			settle("at the end")
		})
	}
	// 64 MiB values on the sim under -race take seconds each.
	withinFor(t, "the workload", hangTimeout+time.Duration(maxVal>>20)*time.Second, wg.Wait)
	require.False(t, t.Failed(), "the workload failed")
	return res
}

// xcCheck checks e against the acknowledged writes.
func xcCheck(t *testing.T, e *ringpipe.Engine, res *xcRes, when string) {
	t.Helper()
	t.Logf("check %s", when)
	before := t.Failed()
	// 64 MiB values on the sim under -race take seconds each to read (and
	// a read may meet a seal of them): 10 s ran out in a CI run beside
	// other work.
	withinFor(t, "the check "+when, hangTimeout+time.Duration(res.maxVal>>20)*time.Second, func() {
		for s, spec := range xcSpecs {
			checkModel(t, engineReader(t, e), res.ids[s], res.acks[s].model(t, spec), fullBox(spec))
		}
	})
	require.False(t, !before && t.Failed(), "check %s", when)
}

// xcFlushAll flushes every space, bounded; afterwards nothing is staged.
func xcFlushAll(t *testing.T, e *ringpipe.Engine, res *xcRes, when string) {
	t.Helper()
	for _, id := range res.ids {
		var err error
		withinFor(t, fmt.Sprintf("Flush of space %d %s", id, when), hangTimeout+time.Duration(res.maxVal>>20)*time.Second,
			func() { err = e.Flush(ctxFor(t), id) })
		require.NoError(t, err, "Flush of space %d %s", id, when)
	}
	assert.Zero(t, e.Stats().StagedPending, "%s: every staged record promoted by the Flushes", when)
}

// xcConfig is the case's Config on its disk (nil for a real directory).
func xcConfig(t *testing.T, c xcCase, seed int64) (ringpipe.Config, *sim.Disk) {
	var cfg ringpipe.Config
	var disk *sim.Disk
	switch c.env {
	case xcSim:
		disk = newSimDisk(t, seed)
		cfg = simConfig(t, disk)
	case xcStd:
		cfg = realConfig(t, ringpipe.BackendStd)
	case xcURing:
		cfg = realConfig(t, ringpipe.BackendURing)
	}
	if c.mod != nil {
		c.mod(&cfg)
	}
	return cfg, disk
}

// xcStartFirst starts the case's first engine.
func xcStartFirst(t *testing.T, cfg ringpipe.Config, c xcCase) *ringpipe.Engine {
	t.Helper()
	var e *ringpipe.Engine
	var err error
	within(t, "Start", func() { e, err = ringpipe.Start(ctxFor(t), cfg) })
	if c.env == xcURing && err != nil && !strings.Contains(err.Error(), "Config.") {
		t.Skipf("io_uring refused here: %v", err)
	}
	require.NoError(t, err, "Start accepted nothing: the case's Config must be valid")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		_ = e.Stop(ctx)
	})
	return e
}

// xcRun runs case c.
func xcRun(t *testing.T, c xcCase) {
	seed := lcSeed(t)
	cfg, disk := xcConfig(t, c, seed)
	e := xcStartFirst(t, cfg, c)
	if c.slowHot {
		disk.Inject(sim.Fault{Kind: sim.Delay, Delay: 3 * time.Millisecond, Prob: 0.3, Persist: true,
			Path: simDir + "/hot/", Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync}})
	}
	// The largest value the workload writes: the case's, within what the
	// engine takes.
	probe := createSpace(t, e, "probe", 2, 8)
	limit := xcLimit(t, e, probe)
	maxVal := limit
	if c.val > 0 {
		maxVal = min(c.val, limit)
	}
	t.Logf("MaxValueSize %d; values up to %d bytes; %d writers x %d ops", limit, maxVal, c.writers, c.ops)
	res := xcWorkload(t, e, c, seed, maxVal)
	xcCheck(t, e, res, "after the workload")
	st := e.Stats()
	t.Logf("stats: direct %d, staged %d, promoted %d, pending %d, sealed %d, syncs %d, queue %d",
		st.DirectWrites, st.StagedWrites, st.Promoted, st.StagedPending, st.SealedBlocks, st.Syncs, st.QueueDepth)
	if c.check != nil {
		c.check(t, e, st)
	}

	if c.powerLoss {
		xcPowerLoss(t, e, disk, res, seed, maxVal)
	} else {
		within(t, "Stop", func() { stop(t, e) })
	}
	if disk != nil {
		disk.ClearFaults()
	}

	// Restart. Strict may refuse after a power loss (a torn tail is an
	// error there); the directory then starts tolerant.
	var allowed []error
	if c.powerLoss && cfg.WALRecovery == ringpipe.Strict {
		allowed = append(allowed, ringpipe.ErrCorrupt)
	}
	e2, err := scStart(t, cfg, allowed...)
	if err != nil {
		require.NotEmpty(t, allowed, "the restart under the same Config was refused")
		tolerant := cfg
		tolerant.WALRecovery = ringpipe.TolerateTornTail
		e2 = start(t, tolerant)
	}
	if c.powerLoss {
		xcResolveLimbo(t, e2, res)
	}
	t.Logf("after the restart: %d records pending promotion", e2.Stats().StagedPending)
	xcCheck(t, e2, res, "after the restart")
	xcFlushAll(t, e2, res, "after the restart")
	xcCheck(t, e2, res, "after the restart and a Flush of every space")
	within(t, "Stop after the restart", func() { stop(t, e2) })
}

// xcPowerLoss queues a burst of PutAsyncs at points nothing else writes,
// cuts the power with them in flight and stops the dead engine (bounded).
// Tickets that succeeded are acknowledged writes; the others are resolved
// after the restart (xcResolveLimbo).
func xcPowerLoss(t *testing.T, e *ringpipe.Engine, disk *sim.Disk, res *xcRes, seed int64, maxVal int) {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	for i := range 12 + rng.Intn(20) {
		s := i % len(xcSpecs)
		l := xcLimbo{s: s, point: xcLimboPoint(s, i), value: xcValue(fmt.Sprintf("limbo-%d|", i), rng.Intn(min(40, maxVal)+1))}
		var err error
		within(t, "PutAsync before the power loss", func() {
			l.tk, err = e.PutAsync(ctxFor(t), res.ids[s], l.point, l.value)
		})
		require.NoError(t, err)
		res.limbo = append(res.limbo, l)
	}
	rep := disk.PowerLoss(rng)
	t.Logf("power loss: %d vanished, %d revived", len(rep.Vanished), len(rep.Revived))
	var err error
	within(t, "Stop after a power loss", func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		err = e.Stop(ctx)
	})
	t.Logf("Stop after the power loss: %v", err)
	var left []xcLimbo
	for _, l := range res.limbo {
		select {
		case <-l.tk.Done():
		default:
			t.Errorf("the ticket of the PutAsync at %v is not done after Stop returned", l.point)
			continue
		}
		rev, err := l.tk.Wait(ctxFor(t))
		if err == nil {
			res.acks[l.s].add(write{point: l.point, rev: rev, value: l.value})
			continue
		}
		left = append(left, l)
	}
	t.Logf("burst of %d PutAsyncs: %d acknowledged, %d not", len(res.limbo), len(res.limbo)-len(left), len(left))
	res.limbo = left
}

// xcResolveLimbo: an unacknowledged write is wholly there (its value, at
// its point) or not at all; one that is there joins the model.
func xcResolveLimbo(t *testing.T, e *ringpipe.Engine, res *xcRes) {
	t.Helper()
	kept := 0
	for _, l := range res.limbo {
		rec, err := e.Get(ctxFor(t), res.ids[l.s], l.point)
		if errors.Is(err, ringpipe.ErrNotFound) {
			continue
		}
		require.NoError(t, err, "Get of the unacknowledged write at %v", l.point)
		require.Equal(t, l.value, rec.Value, "the unacknowledged write at %v came back changed", l.point)
		res.acks[l.s].add(write{point: l.point, rev: rec.Revision, value: l.value})
		kept++
	}
	t.Logf("unacknowledged writes: %d kept, %d gone", kept, len(res.limbo)-kept)
}

// xcDevLogger is a development logger (DPanic panics) writing into a
// buffer, and the buffer.
func xcDevLogger() (*zap.Logger, *xcBuf) {
	buf := &xcBuf{}
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(buf), zapcore.DebugLevel)
	return zap.New(core, zap.Development(), zap.AddCaller()), buf
}

type xcBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *xcBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *xcBuf) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Len()
}

// xcMostStaged: with a deadline no write can meet on the simulated disk's
// virtual clock, writes are staged. (On a real backend the deadline is a
// Go timer, which may fire after a fast write completed: there the split
// is only logged.)
func xcMostStaged(t *testing.T, _ *ringpipe.Engine, st ringpipe.Stats) {
	assert.Positive(t, st.StagedWrites, "DirectWriteTimeout 1ns: no write was staged")
	t.Logf("DirectWriteTimeout 1ns: %d direct, %d staged", st.DirectWrites, st.StagedWrites)
}

func xcLogStaged(t *testing.T, _ *ringpipe.Engine, st ringpipe.Stats) {
	t.Logf("DirectWriteTimeout 1ns on a real backend: %d direct, %d staged", st.DirectWrites, st.StagedWrites)
}

// xcMustStage: on the simulated disk a 1 ns deadline stages writes (the
// case checks nothing otherwise). With PromoteInterval 1h only Flushes of
// the workload promote; what is left pending is logged, and the Flushes
// after the restart must promote it (xcFlushAll).
func xcMustStage(t *testing.T, _ *ringpipe.Engine, st ringpipe.Stats) {
	require.Positive(t, st.StagedWrites, "the case stages no write: it checks nothing")
	t.Logf("PromoteInterval 1h: %d staged, %d promoted (by the workload's Flushes), %d pending", st.StagedWrites, st.Promoted, st.StagedPending)
}

// xcBlocks: the case seals (the sealer runs beside the writers: wait for
// it).
func xcBlocks(t *testing.T, e *ringpipe.Engine, _ ringpipe.Stats) {
	waitFor(t, e, "a sealed block", func(st ringpipe.Stats) bool { return st.SealedBlocks > 0 })
}

// xcFitFor is the largest MaxValueSize Start accepts with prealloc, read
// from its refusal of one that is too large.
func xcFitFor(t *testing.T, prealloc int64) int {
	t.Helper()
	_, err := ringpipe.Start(ctxFor(t), ringpipe.Config{Dir: t.TempDir(), Preallocate: prealloc, MaxValueSize: int(prealloc)})
	require.Error(t, err)
	m := regexp.MustCompile(`\(at most ([0-9]+)\)`).FindStringSubmatch(err.Error())
	require.NotNil(t, m, "the refusal says the largest value: %v", err)
	n, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	return n
}

// TestXcfgAudit runs every case.
func TestXcfgAudit(t *testing.T) {
	fit64k := xcFitFor(t, 64<<10)
	fit8k := xcFitFor(t, 8192)
	const maxValueLimit = valueSizeLimit
	// The smallest Preallocate that holds a value of the limit: found by
	// stepping up from 64 MiB.
	preFor64M := int64(64 << 20)
	for {
		cfg := simConfig(t, newSimDisk(t, 1))
		cfg.Preallocate, cfg.MaxValueSize = preFor64M, maxValueLimit
		e, err := ringpipe.Start(ctxFor(t), cfg)
		if err == nil {
			stop(t, e)
			break
		}
		require.ErrorContains(t, err, "Config.MaxValueSize")
		preFor64M += 4096
	}
	t.Logf("MaxValueSize fit: Preallocate 8192 -> %d, 64 KiB -> %d; 64 MiB values need Preallocate %d", fit8k, fit64k, preFor64M)

	nop := zap.NewNop()
	cases := []xcCase{
		// The pipeline's sizes.
		{name: "queue1-batch1-w64", mod: func(c *ringpipe.Config) { c.QueueCapacity, c.BatchSize = 1, 1 }, writers: 64, ops: 6, val: 64, powerLoss: true},
		{name: "queue1-w8", mod: func(c *ringpipe.Config) { c.QueueCapacity = 1 }, writers: 8, ops: 20, val: 64},
		{name: "queue1-batch1-std", env: xcStd, mod: func(c *ringpipe.Config) { c.QueueCapacity, c.BatchSize = 1, 1 }, writers: 16, ops: 8, val: 64},
		{name: "batch1-w16", mod: func(c *ringpipe.Config) { c.BatchSize = 1 }, writers: 16, ops: 10, val: 64},
		{name: "ring8-w64", mod: func(c *ringpipe.Config) { c.RingEntries = 8 }, writers: 64, ops: 6, val: 200, powerLoss: true},
		{name: "ring8-w64-uring", env: xcURing, mod: func(c *ringpipe.Config) { c.RingEntries = 8 }, writers: 64, ops: 6, val: 200},
		{name: "ring8-queue1-w64", mod: func(c *ringpipe.Config) { c.RingEntries, c.QueueCapacity, c.BatchSize = 8, 1, 1 }, writers: 64, ops: 4, val: 64},
		{name: "ring32768", mod: func(c *ringpipe.Config) { c.RingEntries = 32768 }, writers: 8, ops: 10, val: 64},
		{name: "batchtimeout-1us-w1", mod: func(c *ringpipe.Config) { c.BatchTimeout = time.Microsecond }, writers: 1, ops: 40, val: 64},
		{name: "batchtimeout-1us-w64", mod: func(c *ringpipe.Config) { c.BatchTimeout = time.Microsecond }, writers: 64, ops: 5, val: 64, powerLoss: true},
		{name: "batchtimeout-50ms-w1", mod: func(c *ringpipe.Config) { c.BatchTimeout = 50 * time.Millisecond }, writers: 1, ops: 20, val: 64},
		{name: "batchtimeout-50ms-w64", mod: func(c *ringpipe.Config) { c.BatchTimeout = 50 * time.Millisecond }, writers: 64, ops: 5, val: 64},
		{name: "batchtimeout-50ms-w64-std", env: xcStd, mod: func(c *ringpipe.Config) { c.BatchTimeout = 50 * time.Millisecond }, writers: 64, ops: 4, val: 64},
		// Deadlines.
		{name: "dwt-1ns", mod: func(c *ringpipe.Config) { c.DirectWriteTimeout = 1 }, writers: 8, ops: 20, val: 300, check: xcMostStaged},
		{name: "dwt-1ns-powerloss", mod: func(c *ringpipe.Config) { c.DirectWriteTimeout = 1 }, writers: 8, ops: 15, val: 300, powerLoss: true, check: xcMostStaged},
		{name: "dwt-1ns-std", env: xcStd, mod: func(c *ringpipe.Config) { c.DirectWriteTimeout = 1 }, writers: 8, ops: 12, val: 300, check: xcLogStaged},
		{name: "dwt-1ns-uring", env: xcURing, mod: func(c *ringpipe.Config) { c.DirectWriteTimeout = 1 }, writers: 8, ops: 12, val: 300, check: xcLogStaged},
		{name: "dwt-1h-slowhot", mod: func(c *ringpipe.Config) { c.DirectWriteTimeout = time.Hour }, writers: 16, ops: 8, val: 300, slowHot: true, powerLoss: true,
			check: func(t *testing.T, _ *ringpipe.Engine, st ringpipe.Stats) {
				assert.Zero(t, st.StagedWrites, "DirectWriteTimeout 1h: a write was staged")
			}},
		{name: "dwt-1h-uring", env: xcURing, mod: func(c *ringpipe.Config) { c.DirectWriteTimeout = time.Hour }, writers: 16, ops: 6, val: 300},
		// Promotion pace.
		{name: "promote-1ns-slowhot", mod: func(c *ringpipe.Config) { c.PromoteInterval = 1 }, writers: 8, ops: 15, val: 300, slowHot: true, powerLoss: true},
		{name: "promote-1h-dwt-1ns", mod: func(c *ringpipe.Config) { c.PromoteInterval, c.DirectWriteTimeout = time.Hour, 1 }, writers: 8, ops: 15, val: 300, check: xcMustStage},
		{name: "promote-1h-dwt-1ns-powerloss", mod: func(c *ringpipe.Config) { c.PromoteInterval, c.DirectWriteTimeout = time.Hour, 1 }, writers: 8, ops: 15, val: 300, powerLoss: true, check: xcMustStage},
		{name: "promote-1h-dwt-1ns-std", env: xcStd, mod: func(c *ringpipe.Config) { c.PromoteInterval, c.DirectWriteTimeout = time.Hour, 1 }, writers: 4, ops: 10, val: 300, check: xcLogStaged},
		// Sealing.
		{name: "seal1", mod: func(c *ringpipe.Config) { c.SealThreshold = 1 }, writers: 8, ops: 10, val: 100, powerLoss: true, check: xcBlocks},
		{name: "seal2", mod: func(c *ringpipe.Config) { c.SealThreshold = 2 }, writers: 8, ops: 10, val: 100, check: xcBlocks},
		{name: "sealbytes1", mod: func(c *ringpipe.Config) { c.SealBytes = 1 }, writers: 8, ops: 10, val: 100, powerLoss: true, check: xcBlocks},
		{name: "seal1-dwt-1ns", mod: func(c *ringpipe.Config) { c.SealThreshold, c.DirectWriteTimeout = 1, 1 }, writers: 8, ops: 10, val: 100, check: xcBlocks},
		{name: "seal1-std", env: xcStd, mod: func(c *ringpipe.Config) { c.SealThreshold = 1 }, writers: 8, ops: 8, val: 100, check: xcBlocks},
		// Values and preallocation.
		{name: "maxvalue1", mod: func(c *ringpipe.Config) { c.MaxValueSize = 1 }, writers: 8, ops: 15, powerLoss: true},
		{name: "maxvalue-fit-64k", mod: func(c *ringpipe.Config) { c.Preallocate, c.MaxValueSize = 64<<10, fit64k }, writers: 4, ops: 10, powerLoss: true},
		{name: "maxvalue-fit-64k-directio", mod: func(c *ringpipe.Config) { c.Preallocate, c.MaxValueSize, c.DirectIO = 64<<10, fit64k, true }, writers: 4, ops: 10, powerLoss: true},
		{name: "maxvalue-64MiB", mod: func(c *ringpipe.Config) { c.Preallocate, c.MaxValueSize = preFor64M, maxValueLimit }, writers: 1, ops: 2},
		{name: "prealloc-8192", mod: func(c *ringpipe.Config) { c.Preallocate = 8192 }, writers: 4, ops: 12, powerLoss: true},
		{name: "prealloc-8192-dwt-1ns", mod: func(c *ringpipe.Config) { c.Preallocate, c.DirectWriteTimeout = 8192, 1 }, writers: 4, ops: 12, powerLoss: true, check: xcMostStaged},
		{name: "prealloc-8192-directio", mod: func(c *ringpipe.Config) { c.Preallocate, c.DirectIO = 8192, true }, writers: 4, ops: 12, powerLoss: true},
		{name: "prealloc-8192-directio-strict", mod: func(c *ringpipe.Config) { c.Preallocate, c.DirectIO, c.WALRecovery = 8192, true, ringpipe.Strict }, writers: 4, ops: 12, powerLoss: true},
		{name: "prealloc-8192-directio-std", env: xcStd, mod: func(c *ringpipe.Config) { c.Preallocate, c.DirectIO = 8192, true }, writers: 4, ops: 10},
		{name: "prealloc-8192-directio-uring", env: xcURing, mod: func(c *ringpipe.Config) { c.Preallocate, c.DirectIO = 8192, true }, writers: 4, ops: 10},
		{name: "prealloc-8192-maxvalue-fit", mod: func(c *ringpipe.Config) { c.Preallocate, c.MaxValueSize = 8192, fit8k }, writers: 4, ops: 12},
		{name: "blockcache1-seal4", mod: func(c *ringpipe.Config) { c.BlockCacheBytes, c.SealThreshold = 1, 4 }, writers: 8, ops: 10, val: 300, check: xcBlocks},
		// Strict recovery with the other edges.
		{name: "strict-dwt-1ns", mod: func(c *ringpipe.Config) { c.WALRecovery, c.DirectWriteTimeout = ringpipe.Strict, 1 }, writers: 8, ops: 12, val: 300, powerLoss: true},
		{name: "strict-seal1", mod: func(c *ringpipe.Config) { c.WALRecovery, c.SealThreshold = ringpipe.Strict, 1 }, writers: 8, ops: 10, val: 100, powerLoss: true},
		{name: "strict-queue1-ring8", mod: func(c *ringpipe.Config) {
			c.WALRecovery, c.QueueCapacity, c.BatchSize, c.RingEntries = ringpipe.Strict, 1, 1, 8
		}, writers: 32, ops: 5, val: 100, powerLoss: true},
		{name: "strict-promote-1h-std", env: xcStd, mod: func(c *ringpipe.Config) {
			c.WALRecovery, c.PromoteInterval, c.DirectWriteTimeout = ringpipe.Strict, time.Hour, 1
		}, writers: 4, ops: 10, val: 300},
		// Loggers.
		{name: "logger-nil", mod: func(c *ringpipe.Config) { c.Logger = nil }, writers: 8, ops: 10, val: 100, slowHot: true, powerLoss: true},
		{name: "logger-nop", mod: func(c *ringpipe.Config) { c.Logger = nop }, writers: 8, ops: 10, val: 100, slowHot: true},
		{name: "logger-nil-std", env: xcStd, mod: func(c *ringpipe.Config) { c.Logger = nil }, writers: 4, ops: 8, val: 100},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { xcRun(t, c) })
	}
}

// TestXcfgAuditDevLogger: a development logger (DPanic panics, every level
// written) sees the engine's logs through a Start, staged writes,
// promotions, seals, a power loss and a recovery, and nothing panics.
func TestXcfgAuditDevLogger(t *testing.T) {
	lg, buf := xcDevLogger()
	xcRun(t, xcCase{name: "logger-dev", mod: func(c *ringpipe.Config) {
		c.Logger, c.SealThreshold, c.DirectWriteTimeout = lg, 8, 1
	}, writers: 8, ops: 10, val: 100, powerLoss: true})
	assert.Positive(t, buf.Len(), "the development logger got nothing")
	t.Logf("the development logger got %d bytes", buf.Len())
}

// TestXcfgAuditJustPast: values just past a limit, which the other suites
// do not try, are refused naming the field; the value at the limit is
// accepted.
func TestXcfgAuditJustPast(t *testing.T) {
	fit8k := xcFitFor(t, 8192)
	fit64k := xcFitFor(t, 64<<10)
	for _, tc := range []struct {
		name  string
		field string // "" accepted
		mod   func(c *ringpipe.Config)
	}{
		{"RingEntries=65536", "RingEntries", func(c *ringpipe.Config) { c.RingEntries = 65536 }},
		{"RingEntries=7", "RingEntries", func(c *ringpipe.Config) { c.RingEntries = 7 }},
		{"RingEntries=32767", "RingEntries", func(c *ringpipe.Config) { c.RingEntries = 32767 }},
		{"RingEntries=8", "", func(c *ringpipe.Config) { c.RingEntries = 8 }},
		{"RingEntries=32768", "", func(c *ringpipe.Config) { c.RingEntries = 32768 }},
		{"BatchSize=2,QueueCapacity=1", "BatchSize", func(c *ringpipe.Config) { c.QueueCapacity, c.BatchSize = 1, 2 }},
		{"BatchSize=1,QueueCapacity=1", "", func(c *ringpipe.Config) { c.QueueCapacity, c.BatchSize = 1, 1 }},
		{"MaxValueSize=limit+1", "MaxValueSize", func(c *ringpipe.Config) { c.MaxValueSize, c.Preallocate = valueSizeLimit+1, 128<<20 }},
		{"MaxValueSize=64MiB", "MaxValueSize", func(c *ringpipe.Config) { c.MaxValueSize, c.Preallocate = 64<<20, 128<<20 }},
		{"MaxValueSize=limit", "", func(c *ringpipe.Config) { c.MaxValueSize, c.Preallocate = valueSizeLimit, 128<<20 }},
		{"MaxValueSize=fit8k+1", "MaxValueSize", func(c *ringpipe.Config) { c.MaxValueSize, c.Preallocate = fit8k+1, 8192 }},
		{"MaxValueSize=fit64k+1", "MaxValueSize", func(c *ringpipe.Config) { c.MaxValueSize, c.Preallocate = fit64k+1, 64<<10 }},
		{"Preallocate=8192+4095", "Preallocate", func(c *ringpipe.Config) { c.Preallocate = 8192 + 4095 }},
		{"Preallocate=8191", "Preallocate", func(c *ringpipe.Config) { c.Preallocate = 8191 }},
		{"Preallocate=8192", "", func(c *ringpipe.Config) { c.Preallocate = 8192 }},
		{"Preallocate=1GiB+4096", "Preallocate", func(c *ringpipe.Config) { c.Preallocate = 1<<30 + 4096 }},
		{"Preallocate=1TiB", "Preallocate", func(c *ringpipe.Config) { c.Preallocate = 1 << 40 }},
		{"Preallocate=1GiB", "", func(c *ringpipe.Config) { c.Preallocate = 1 << 30 }},
		{"BlockCacheBytes=-1", "BlockCacheBytes", func(c *ringpipe.Config) { c.BlockCacheBytes = -1 }},
		{"QueueCapacity=-1,BatchSize=1", "QueueCapacity", func(c *ringpipe.Config) { c.QueueCapacity, c.BatchSize = -1, 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk := newSimDisk(t, 1)
			cfg := simConfig(t, disk)
			tc.mod(&cfg)
			var e *ringpipe.Engine
			var err error
			within(t, "Start", func() { e, err = ringpipe.Start(ctxFor(t), cfg) })
			if tc.field == "" {
				require.NoError(t, err, "a value at the limit is accepted")
				sp := createSpace(t, e, "s", 1, 8)
				_, err = e.Put(ctxFor(t), sp, ringpipe.Point{1}, []byte("v"))
				assert.NoError(t, err)
				stop(t, e)
				return
			}
			if e != nil {
				_ = e.Stop(ctxFor(t))
			}
			require.Error(t, err, "a value just past the limit is accepted")
			assert.Contains(t, err.Error(), "Config."+tc.field)
			assert.Empty(t, disk.Files(), "a refused Config touched the disk")
		})
	}
}

// Fixed: Start accepted Preallocate = 1 TiB (no upper limit), the engine
// took writes on the simulated disk, and the next Start died of "fatal
// error: runtime: out of memory": recovery reads a live log file whole
// (hot.Open -> ring.ReadFile). Preallocate is now at most 1 GiB, and
// TestXcfgAuditJustPast refuses 1 GiB + 4096 naming the field (the child
// process that ran the 1 TiB case is gone with it).

// TestXcfgAuditSyncTicketsTinyQueue: with a queue of 1 or 2 (every
// PutAsync and every Sync barrier waits for room), Sync returns only once
// the ticket of every PutAsync its goroutine made before is done (README:
// "Sync returns once every earlier write is durable, its ticket done").
// One run of TestXcfgAudit/queue1-w8 saw a Sync return before such a
// ticket was done, once in about ten runs, and it did not come back in
// 120 more; this is the same shape, smaller and repeated.
func TestXcfgAuditSyncTicketsTinyQueue(t *testing.T) {
	seed := lcSeed(t)
	for _, q := range []int{1, 2} {
		for round := range 8 {
			t.Run(fmt.Sprintf("queue%d-round%d", q, round), func(t *testing.T) {
				cfg := simConfig(t, newSimDisk(t, seed+int64(round)))
				cfg.Logger, cfg.QueueCapacity = nil, q
				e := start(t, cfg)
				sp := createSpace(t, e, "s", 2, 8)
				var hang xcHang
				var wg sync.WaitGroup
				for w := range 8 {
					wg.Go(func() {
						for i := range 24 {
							ctx, cancel := context.WithTimeout(context.Background(), hangTimeout)
							var tks []*ringpipe.Ticket
							for k := range 1 + i%3 {
								tk, err := e.PutAsync(ctx, sp, ringpipe.Point{uint32(w), uint32(i*3 + k)}, []byte("v"))
								if !hang.check(t, err, "PutAsync") {
									cancel()
									return
								}
								tks = append(tks, tk)
							}
							if i%2 == 0 {
								_, err := e.Put(ctx, sp, ringpipe.Point{uint32(w + 100), uint32(i)}, []byte("p"))
								hang.check(t, err, "Put")
							}
							err := e.Sync(ctx)
							cancel()
							if !hang.check(t, err, "Sync") {
								return
							}
							for k, tk := range tks {
								select {
								case <-tk.Done():
								default:
									t.Errorf("writer %d: Sync returned before the ticket of its PutAsync at %v was done",
										w, ringpipe.Point{uint32(w), uint32(i*3 + k)})
								}
							}
						}
					})
				}
				within(t, "the writers", wg.Wait)
				stop(t, e)
			})
		}
	}
}
