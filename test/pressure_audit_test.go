package test

// The back-pressure and slow-disk audit: what a user expects of the engine
// when the disk is slow for a long time rather than broken. Checked against
// DESIGN.md §1 ("Deadline routing (the staging WAL)", "Errors from the
// disk"), §5 and API.md (QueueCapacity, DirectWriteTimeout, PromoteInterval;
// Put blocks when the queue is full; ctx semantics). What routing_test.go,
// faults_test.go, hang_test.go, TestAuditStalledHotFileDoesNotStallWriters,
// TestDesignRoutePerSpace, TestDesignUnwritableHotSegmentRoutesToWAL and
// TestContractCancelBeforeQueued prove already is not repeated.
//
// The sim backend's Delay faults are virtual: they make deadlines fire
// but cost no real time, while the engine measures sync latency (and so its
// routing hysteresis) on the real clock. slowRing adds the real time: it
// withholds the final Completions of writes and syncs on chosen files
// until a real-time delay has passed since their submission, or until
// told (a stall).

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"path"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// prStalled is the delay of a file that does not answer until told.
const prStalled = time.Duration(-1)

// prMaxStaged is actors.maxStaged: the most records the submitter keeps
// staged (in the WAL, waiting for promotion) before a slow space's writes
// wait for its hot file instead.
const prMaxStaged = 1 << 16

// prMaxHeld is actors.maxHeld: the most writes the submitter holds for
// busy files before it stops draining the write queue.
const prMaxHeld = 16384

// prHeapBound is a loose bound on the growth of the live Go heap in
// TestPressureSlowHotFileLongRun while writers push against a stalled hot
// file (issue 4's heap target for 5M Puts).
const prHeapBound = 256 << 20

// liveHeap is the Go heap's live bytes: HeapAlloc right after a GC
// (HeapAlloc alone counts garbage, also other tests').
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// prWALKey matches the staging WAL's files.
const prWALKey = "/wal/"

// prHotKey matches the hot segment files of space.
func prHotKey(space ringpipe.SpaceID) string { return "/hot/" + path.Base(hotPrefix(space)) }

// slowCtl holds the real-time delays of the files a test slows, by a
// substring of their path, for every ring it made (each Start makes new
// ones). A delay is 0 (normal), positive, or prStalled.
type slowCtl struct {
	mu       sync.Mutex
	delays   map[string]time.Duration
	withheld map[string]int // completions ever withheld, by key
	rings    []*slowRing
}

func newSlowCtl(keys ...string) *slowCtl {
	c := &slowCtl{delays: make(map[string]time.Duration), withheld: make(map[string]int)}
	for _, k := range keys {
		c.delays[k] = 0
	}
	return c
}

// config makes cfg's rings slowRings over disk.
func (c *slowCtl) config(cfg ringpipe.Config, disk *sim.Disk) ringpipe.Config {
	cfg.NewRing = func(o ring.Options) (ring.Ring, error) {
		r := &slowRing{Ring: disk.NewRing(o), ctl: c, opens: map[uint64]string{},
			fds: map[int32]string{}, track: map[uint64]slowOp{}}
		c.mu.Lock()
		c.rings = append(c.rings, r)
		c.mu.Unlock()
		return r, nil
	}
	return cfg
}

// set changes key's delay; completions withheld that are now due are
// handed back at once.
func (c *slowCtl) set(key string, d time.Duration) {
	c.mu.Lock()
	if _, ok := c.delays[key]; !ok {
		panic("slowCtl: unknown key " + key) // a test bug: keys are known before files open
	}
	c.delays[key] = d
	rings := slices.Clone(c.rings)
	c.mu.Unlock()
	for _, r := range rings {
		r.wake()
	}
}

// normal sets every delay back to 0.
func (c *slowCtl) normal() {
	c.mu.Lock()
	var keys []string
	for k := range c.delays {
		keys = append(keys, k)
	}
	c.mu.Unlock()
	for _, k := range keys {
		c.set(k, 0)
	}
}

// match returns the key that p falls under, or "".
func (c *slowCtl) match(p string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.delays {
		if strings.Contains(p, k) {
			return k
		}
	}
	return ""
}

// due says whether a completion of an op on key's files submitted at is
// due at now.
func (c *slowCtl) due(key string, at, now time.Time) (bool, time.Time) {
	c.mu.Lock()
	d := c.delays[key]
	c.mu.Unlock()
	if d == prStalled {
		return false, time.Time{}
	}
	when := at.Add(d)
	return !now.Before(when), when
}

// withheldOf is how many completions of key's files were ever withheld.
func (c *slowCtl) withheldOf(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.withheld[key]
}

// heldPeak is the most completions any ring withheld at once.
func (c *slowCtl) heldPeak() int {
	c.mu.Lock()
	rings := slices.Clone(c.rings)
	c.mu.Unlock()
	n := 0
	for _, r := range rings {
		r.mu.Lock()
		n = max(n, r.peak)
		r.mu.Unlock()
	}
	return n
}

type slowOp struct {
	key string
	at  time.Time
}

type heldComp struct {
	c ring.Completion
	slowOp
}

// slowRing is a sim ring whose writes and syncs on the files of its
// ctl's keys complete late in real time (see slowCtl). Deadline notices
// are not withheld: they come from the sim's virtual clock, so a test
// that wants them injects a sim.Delay fault on the same files. Closing the
// ring, or its death in a power loss, hands back what it withheld.
type slowRing struct {
	ring.Ring
	ctl *slowCtl

	mu     sync.Mutex
	opens  map[uint64]string // tokens of opens → the key of their path ("" none)
	fds    map[int32]string  // open fds → key
	track  map[uint64]slowOp // tokens of writes and syncs on slowed files
	held   []heldComp
	peak   int
	done   bool // closed or dead: withhold nothing
	timer  *time.Timer
	timeAt time.Time
}

const slowWakeToken = ^uint64(0) - 11

func (r *slowRing) wake() {
	_ = r.Ring.Submit([]ring.Op{{Code: ring.OpNop, Token: slowWakeToken}}) // wakes a blocked Reap
}

func (r *slowRing) Submit(ops []ring.Op) error {
	now := time.Now()
	r.mu.Lock()
	for _, op := range ops {
		switch op.Code {
		case ring.OpOpen:
			r.opens[op.Token] = r.ctl.match(op.Path)
		case ring.OpWrite, ring.OpWritev, ring.OpFdatasync, ring.OpFsync:
			if k := r.fds[op.FD]; k != "" {
				r.track[op.Token] = slowOp{key: k, at: now}
			}
		}
	}
	r.mu.Unlock()
	return r.Ring.Submit(ops)
}

// take moves into out what may be returned of the n completions reaped
// into it, withholding what is not due, and then what withheld is due;
// it returns how many and the earliest time a withheld one falls due.
func (r *slowRing) take(out []ring.Completion, n int) (int, time.Time) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	k := 0
	for _, c := range out[:n] {
		if c.Token == slowWakeToken {
			continue
		}
		if key, ok := r.opens[c.Token]; ok {
			delete(r.opens, c.Token)
			if c.Err == nil {
				if key != "" {
					r.fds[int32(c.Res)] = key
				} else {
					delete(r.fds, int32(c.Res)) // a reused fd number
				}
			}
		}
		if op, ok := r.track[c.Token]; ok && !c.Deadline {
			delete(r.track, c.Token)
			if due, _ := r.ctl.due(op.key, op.at, now); !due && !r.done {
				r.held = append(r.held, heldComp{c: c, slowOp: op})
				r.peak = max(r.peak, len(r.held))
				r.ctl.mu.Lock()
				r.ctl.withheld[op.key]++
				r.ctl.mu.Unlock()
				continue
			}
		}
		out[k] = c
		k++
	}
	var next time.Time
	kept := r.held[:0]
	for _, h := range r.held {
		due, when := r.ctl.due(h.key, h.at, now)
		if (due || r.done) && k < len(out) {
			out[k] = h.c
			k++
			continue
		}
		if !when.IsZero() && (next.IsZero() || when.Before(next)) {
			next = when
		}
		kept = append(kept, h)
	}
	clear(r.held[len(kept):])
	r.held = kept
	return k, next
}

// arm makes sure a wake-up comes at next (a blocked Reap then hands back
// what fell due).
func (r *slowRing) arm(next time.Time) {
	if next.IsZero() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done || (r.timer != nil && !r.timeAt.After(next) && time.Now().Before(r.timeAt)) {
		return
	}
	if r.timer != nil {
		r.timer.Stop()
	}
	r.timeAt = next
	r.timer = time.AfterFunc(time.Until(next), r.wake)
}

func (r *slowRing) finish() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done = true
	if r.timer != nil {
		r.timer.Stop()
	}
}

func (r *slowRing) Reap(out []ring.Completion) (int, error) {
	for {
		k, next := r.take(out, 0)
		if k > 0 {
			return k, nil
		}
		r.arm(next)
		n, err := r.Ring.Reap(out)
		if err != nil {
			r.finish() // closed or dead: what is withheld comes back now
			if k, _ := r.take(out, n); k > 0 {
				return k, nil
			}
			return 0, err
		}
		if k, _ := r.take(out, n); k > 0 {
			return k, nil
		}
	}
}

func (r *slowRing) TryReap(out []ring.Completion) (int, error) {
	if k, _ := r.take(out, 0); k > 0 {
		return k, nil
	}
	n, err := r.Ring.TryReap(out)
	if err != nil {
		r.finish()
		if k, _ := r.take(out, n); k > 0 {
			return k, nil
		}
		return 0, err
	}
	k, _ := r.take(out, n)
	return k, nil
}

func (r *slowRing) Close() error {
	r.finish()
	return r.Ring.Close()
}

// prVirtualDelay makes every write and sync of prefix's files take an
// hour of the sim's virtual time, so that each one's DirectWriteTimeout
// deadline fires (virtually); slowRing decides when it completes in real
// time.
func prVirtualDelay(disk *sim.Disk, prefix string) {
	disk.Inject(sim.Fault{Kind: sim.Delay, Delay: time.Hour, Path: prefix,
		Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync, ring.OpWrite, ring.OpWritev}, Persist: true})
}

// prMonitor samples Stats and the Go heap until stopped, keeping peaks.
type prMonitor struct {
	e          *ringpipe.Engine
	stop       chan struct{}
	done       chan struct{}
	peakStaged atomic.Int64
	peakHeap   atomic.Uint64
}

func startMonitor(e *ringpipe.Engine) *prMonitor {
	m := &prMonitor{e: e, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			m.sample(i%4 == 0)
			select {
			case <-m.stop:
				m.sample(true)
				return
			case <-tick.C:
			}
		}
	}()
	return m
}

func (m *prMonitor) sample(heap bool) {
	st := m.e.Stats()
	prMax(&m.peakStaged, int64(st.StagedPending))
	if heap {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		for {
			old := m.peakHeap.Load()
			if ms.HeapAlloc <= old || m.peakHeap.CompareAndSwap(old, ms.HeapAlloc) {
				break
			}
		}
	}
}

func (m *prMonitor) end() {
	close(m.stop)
	<-m.done
}

func prMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// prCheckAll is checkModel for large models: one Scan of the whole space
// must hold every live record of m once, with its revision and value, and
// nothing else; Get is checked on a sample. (checkModel's Get of every
// point and sort by key take tens of seconds under -race at 100k points.)
func prCheckAll(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID, spec ringpipe.SpaceSpec, m *model) {
	t.Helper()
	ctx := ctxFor(t)
	got := make(map[pkey]ringpipe.Record, len(m.last))
	dups := 0
	require.NoError(t, e.Scan(ctx, sp, fullBox(spec), func(r ringpipe.Record) bool {
		k := keyOf(r.Point)
		if _, ok := got[k]; ok {
			dups++
		}
		got[k] = r
		return true
	}), "Scan")
	assert.Zero(t, dups, "points the Scan returned more than once")
	live, bad, i := 0, 0, 0
	for k, w := range m.last {
		i++
		rec, ok := got[k]
		if w.value == nil {
			assert.False(t, ok, "%v: deleted at rev %d, Scan shows rev %d", w.point, w.rev, rec.Revision)
			continue
		}
		live++
		if !ok || rec.Revision != w.rev || string(rec.Value) != string(w.value) {
			bad++
			if bad <= 5 {
				t.Errorf("%v: acknowledged rev %d %q; Scan shows %v rev %d %q", w.point, w.rev, w.value, ok, rec.Revision, rec.Value)
			}
			continue
		}
		if i%97 == 0 {
			r, err := e.Get(ctx, sp, w.point)
			if assert.NoError(t, err, "Get %v", w.point) {
				assert.Equal(t, w.rev, r.Revision, "Get %v", w.point)
			}
		}
	}
	assert.Zero(t, bad, "acknowledged writes missing or wrong in the Scan")
	assert.Equal(t, live, len(got), "records in the Scan")
}

// TestPressureSlowHotFileLongRun: DESIGN.md §1 deadline routing over a
// long slow period, and the staging backlog's bound (actors.maxStaged).
// One space's hot file is slow for a long time: every write and sync of it
// misses DirectWriteTimeout (on the sim's clock) and takes 5 ms of real
// time, more than the hysteresis' "fast" bound. Thousands of Puts are all
// acknowledged from the staging WAL while promotion creeps on, and the
// space stays routed to the WAL (no flapping, no further deadlines). Then
// the file stops answering altogether while PutAsync writers push on: the
// staged backlog grows up to the cap and no further, the writers then
// block (the queue full) instead of memory growing. When the file
// recovers: every write is acknowledged, everything staged is promoted,
// writes go direct again, the WAL segments are retired, and after a clean
// Stop and a power loss every acknowledged write is there exactly once.
func TestPressureSlowHotFileLongRun(t *testing.T) {
	disk := newSimDisk(t, 201)
	hotKey := prHotKey(1) // the first space created gets ID 1
	ctl := newSlowCtl(hotKey)
	cfg := ctl.config(simConfig(t, disk), disk)
	cfg.QueueCapacity = 256
	cfg.BatchSize = 128
	core, logs := observer.New(zapcore.InfoLevel)
	cfg.Logger = zap.New(zapcore.NewTee(core, cfg.Logger.Core()))
	e := start(t, cfg)
	t.Cleanup(ctl.normal) // before start's Stop
	spec := ringpipe.SpaceSpec{Name: "slow", Dims: 2, Bits: 20}
	sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
	require.Equal(t, ringpipe.SpaceID(1), sp)
	// The test's calls take longer in all than opTimeout.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var all acks

	for i := range 20 {
		p := ringpipe.Point{0, uint32(i)}
		v := fmt.Appendf(nil, "warm-%d", i)
		rev, err := e.Put(ctx, sp, p, v)
		require.NoError(t, err)
		all.add(write{point: p, rev: rev, value: v})
	}
	require.Zero(t, e.Stats().StagedWrites, "no staging before the file is slow")

	// Phase A: slow, but it answers.
	ctl.set(hotKey, 5*time.Millisecond)
	prVirtualDelay(disk, hotPrefix(sp))
	mon := startMonitor(e)
	stA, telA := e.Stats(), e.Telemetry()
	const writersA, perA = 8, 750
	var wg sync.WaitGroup
	var failedA atomic.Int64
	t0 := time.Now()
	for w := range writersA {
		wg.Go(func() {
			for i := range perA {
				p := ringpipe.Point{uint32(1 + w), uint32(i)}
				v := fmt.Appendf(nil, "a-w%d-%d", w, i)
				rev, err := e.Put(ctx, sp, p, v)
				if err != nil {
					failedA.Add(1)
					assert.NoError(t, err, "phase A: writer %d Put %d", w, i)
					return
				}
				all.add(write{point: p, rev: rev, value: v})
			}
		})
	}
	lcWait(t, "phase A writers", lcDone(&wg))
	durA := time.Since(t0)
	require.Zero(t, failedA.Load(), "Puts failed while the hot file was slow")
	stA2, telA2 := e.Stats(), e.Telemetry()
	t.Logf("phase A (slow hot file, %d Puts in %v): staged %d, direct %d, promoted %d, pending %d, deadlines fired %d, peak staged %d, WriteLatency p50 %v p99 %v",
		writersA*perA, durA.Round(time.Millisecond), stA2.StagedWrites-stA.StagedWrites, stA2.DirectWrites-stA.DirectWrites,
		stA2.Promoted-stA.Promoted, stA2.StagedPending, telA2.DeadlinesFired-telA.DeadlinesFired, mon.peakStaged.Load(),
		stA2.WriteLatency.P50, stA2.WriteLatency.P99)
	assert.Equal(t, uint64(writersA*perA), stA2.StagedWrites-stA.StagedWrites, "every Put acknowledged from the staging WAL")
	assert.Zero(t, stA2.DirectWrites-stA.DirectWrites, "no Put acknowledged from the slow hot file")
	assert.Positive(t, stA2.Promoted-stA.Promoted, "promotion goes on into the slow hot file")
	// Route per space with hysteresis: once slow, the space's writes do
	// not try the hot file again while its syncs stay slow. (Deadlines
	// fired count promotions too, which miss theirs into a slow file, so
	// the routing log says it.)
	assert.Empty(t, logs.FilterMessage("space routed to its hot segment again").All(),
		"the space flapped back to direct writes while its file stayed slow")

	// Phase B: the hot file stops answering. PutAsync writers push on.
	heap0 := liveHeap()
	ctl.set(hotKey, prStalled)
	stB := e.Stats()
	tB := time.Now()
	const writersB, perB = 4, 25000 // 100k: beyond what the bounds let in
	var accepted atomic.Int64
	var muB sync.Mutex // guards tickets, points and values
	tickets := make([][]*ringpipe.Ticket, writersB)
	points := make([][]ringpipe.Point, writersB)
	values := make([][][]byte, writersB)
	var wgB sync.WaitGroup
	for w := range writersB {
		wgB.Go(func() {
			for i := range perB {
				p := ringpipe.Point{uint32(100 + w), uint32(i)}
				v := fmt.Appendf(nil, "b-w%d-%d", w, i)
				tk, err := e.PutAsync(ctx, sp, p, v)
				if !assert.NoError(t, err, "phase B: writer %d PutAsync %d", w, i) {
					return
				}
				muB.Lock()
				tickets[w] = append(tickets[w], tk)
				points[w] = append(points[w], p)
				values[w] = append(values[w], v)
				muB.Unlock()
				accepted.Add(1)
			}
		})
	}
	// Wait for the writers to block: nothing accepted for two seconds with
	// the queue full. If they get through everything instead, nothing
	// bounded what the engine took in.
	doneB := lcDone(&wgB)
	var plateau int64
	func() {
		last, since := int64(-1), time.Now()
		deadline := time.Now().Add(eventualTimeout)
		for {
			select {
			case <-doneB:
				st := e.Stats()
				t.Errorf("the writers were never blocked: %d writes accepted while the hot file did not answer (stats %+v)", accepted.Load(), st)
				return
			case <-time.After(50 * time.Millisecond):
			}
			n := accepted.Load()
			if n != last {
				last, since = n, time.Now()
			}
			if time.Since(since) > 2*time.Second && e.Stats().QueueDepth == cfg.QueueCapacity {
				plateau = n
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("the writers neither blocked nor finished: %d accepted; stats %+v", n, e.Stats())
				return
			}
		}
	}()
	stB2 := e.Stats()
	heap1 := liveHeap()
	ackedB := 0
	muB.Lock()
	for w := range writersB {
		for _, tk := range tickets[w] {
			select {
			case <-tk.Done():
				ackedB++
			default:
			}
		}
	}
	muB.Unlock()
	t.Logf("phase B (hot file stalled, %v): %d PutAsync accepted before the writers blocked, %d of them acknowledged (staged %d); staged pending %d (peak %d, cap %d); queue %d/%d; live heap %d MiB before, %d MiB once blocked (HeapAlloc peak %d MiB, garbage and other tests' included); %d completions withheld",
		time.Since(tB).Round(time.Millisecond), plateau, ackedB, stB2.StagedWrites-stB.StagedWrites, stB2.StagedPending, mon.peakStaged.Load(), prMaxStaged,
		stB2.QueueDepth, cfg.QueueCapacity, heap0>>20, heap1>>20, mon.peakHeap.Load()>>20, ctl.heldPeak())
	assert.LessOrEqual(t, mon.peakStaged.Load(), int64(prMaxStaged), "the staged backlog is capped")
	// Loose: the sim disk's files are in the heap too. What it guards
	// against is growth with the writes offered.
	assert.Less(t, int64(heap1)-int64(heap0), int64(prHeapBound), "growth of the live Go heap while the writers pushed against a stalled hot file")
	assert.Greater(t, stB2.StagedWrites-stB.StagedWrites, uint64(prMaxStaged/2), "writes were acknowledged from the WAL while the hot file stalled")
	assert.LessOrEqual(t, plateau, int64(prMaxStaged+prMaxHeld+cfg.QueueCapacity+writersB),
		"writes accepted while the hot file stalled: bounded by the staged cap, the held writes and the queue")

	// Phase C: the file answers again.
	tC := time.Now()
	ctl.set(hotKey, 0)
	disk.ClearFaults()
	lcWait(t, "phase B writers after the hot file recovered", doneB)
	mon.end()
	tWriters := time.Since(tC)
	for w := range writersB {
		for i, tk := range tickets[w] {
			wctx, cancel := context.WithTimeout(ctx, hangTimeout)
			rev, err := tk.Wait(wctx)
			cancel()
			if err != nil {
				buf := make([]byte, 16<<20)
				t.Fatalf("phase B write %v (writer %d, %d of %d): %v; stats %+v; goroutines:\n%s",
					points[w][i], w, i, len(tickets[w]), err, e.Stats(), buf[:runtime.Stack(buf, true)])
			}
			all.add(write{point: points[w][i], rev: rev, value: values[w][i]})
		}
	}
	tAcked := time.Since(tC)
	// Some 80k staged writes: under -race beside other tests, more than
	// waitFor's 20 s.
	waitForWithin(t, e, 2*time.Minute, "promotion of every staged write", func(st ringpipe.Stats) bool {
		return st.StagedPending == 0 && st.Promoted >= st.StagedWrites
	})
	tPromoted := time.Since(tC)
	direct := e.Stats().DirectWrites
	rng := rand.New(rand.NewSource(201))
	deadline := time.Now().Add(eventualTimeout)
	recovered := 0
	for ; e.Stats().DirectWrites == direct; recovered++ {
		require.True(t, time.Now().Before(deadline), "the space never went back to direct writes (%d Puts): %+v", recovered, e.Stats())
		p := ringpipe.Point{200, uint32(rng.Intn(1 << 20))}
		v := fmt.Appendf(nil, "c-%d", recovered)
		rev, err := e.Put(ctx, sp, p, v)
		require.NoError(t, err)
		all.add(write{point: p, rev: rev, value: v})
	}
	tDirect := time.Since(tC)
	walDir := simDir + "/wal/"
	deadline = time.Now().Add(eventualTimeout)
	for len(filesUnderDisk(disk, walDir)) > 1 && time.Now().Before(deadline) {
		time.Sleep(pollEvery) // retirement follows the last promotion's settlement
	}
	st := e.Stats()
	t.Logf("phase C (the file answers again): writers done after %v, every write acknowledged after %v, everything promoted after %v, direct again after %v (%d Puts); WAL segments left %v; stats %+v",
		tWriters.Round(time.Millisecond), tAcked.Round(time.Millisecond), tPromoted.Round(time.Millisecond), tDirect.Round(time.Millisecond),
		recovered, filesUnderDisk(disk, walDir), st)
	assert.Len(t, filesUnderDisk(disk, walDir), 1, "WAL segments left once every staged write is promoted")

	tD := time.Now()
	m := all.model(t, spec) // no revision acknowledged twice
	prCheckAll(t, e, sp, spec, m)
	stop(t, e)
	disk.PowerLoss(rand.New(rand.NewSource(201)))
	e = start(t, cfg)
	assert.Zero(t, e.Stats().StagedPending, "promoted writes are not staged again")
	prCheckAll(t, e, sp, spec, m)
	stop(t, e)
	t.Logf("checked %d acknowledged writes before and after a power loss (%v)", len(m.last), time.Since(tD).Round(time.Millisecond))
}

// prWriter runs one goroutine's Puts into sp and records what each
// returned: acknowledged writes in good, failed ones in failed (wholly
// present or absent after a restart), latencies of successful ones.
type prWriter struct {
	e      *ringpipe.Engine
	sp     ringpipe.SpaceID
	good   *acks
	mu     sync.Mutex
	failed []attempt
	errs   []error
	lat    []time.Duration
}

func (w *prWriter) put(ctx context.Context, p ringpipe.Point, v []byte) error {
	t0 := time.Now()
	rev, err := w.e.Put(ctx, w.sp, p, v)
	d := time.Since(t0)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.failed = append(w.failed, attempt{space: w.sp, point: p, value: v})
		w.errs = append(w.errs, err)
		return err
	}
	w.good.add(write{point: p, rev: rev, value: v})
	w.lat = append(w.lat, d)
	return nil
}

// run starts writers goroutines of per Puts each (points {row+g, i}),
// each stopping at its first error; the returned channel is closed once
// they have all returned.
func (w *prWriter) run(ctx context.Context, writers, per int, row uint32, tag string) <-chan struct{} {
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range per {
				if w.put(ctx, ringpipe.Point{row + uint32(g), uint32(i)}, fmt.Appendf(nil, "%s-w%d-%d", tag, g, i)) != nil {
					return
				}
			}
		})
	}
	return lcDone(&wg)
}

// latencies returns the latencies recorded since from, sorted, and resets
// nothing.
func (w *prWriter) latencies(from int) []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := slices.Clone(w.lat[from:])
	slices.Sort(out)
	return out
}

func (w *prWriter) count() int { w.mu.Lock(); defer w.mu.Unlock(); return len(w.lat) }

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return ds[min(len(ds)-1, int(float64(len(ds))*p))]
}

// TestPressureBothRoutesSlow: the hot file and the staging WAL are both
// slow (every write and sync of either takes 20 ms of real time; the hot
// file's also miss DirectWriteTimeout on the sim's clock). Puts get slower
// (each takes at least the 20 ms: it waits for one of the two copies) but
// none fails and none is lost. Stop comes while 16 writers run, with a
// 30 ms ctx (shorter than the drain) or an ample one: it returns (nil, or
// ctx's error with the short one), every Put returns nil or ErrStopped, no
// goroutine is left (goleak), and after a power loss the next Start has
// every acknowledged write, and every failed one wholly or not at all.
func TestPressureBothRoutesSlow(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stopCtx time.Duration
	}{{"stop-30ms", 30 * time.Millisecond}, {"stop-ample", opTimeout}} {
		t.Run(tc.name, func(t *testing.T) { bothRoutesSlow(t, tc.stopCtx) })
	}
}

func bothRoutesSlow(t *testing.T, stopCtx time.Duration) {
	f := prStartWarm(t, 202, 8, 10, prWALKey)
	disk, hotKey, ctl, cfg, e, spec, sp, ctx, w := f.disk, f.hotKey, f.ctl, f.cfg, f.e, f.spec, f.sp, f.ctx, f.w
	good := f.good
	require.Empty(t, w.errs, "Puts failed on a healthy disk")
	lat0 := w.latencies(0)

	const slow = 20 * time.Millisecond
	ctl.set(hotKey, slow)
	ctl.set(prWALKey, slow)
	prVirtualDelay(disk, hotPrefix(sp))
	st0 := e.Stats()
	n0 := w.count()
	lcWait(t, "writers on the slow disk", w.run(ctx, 8, 15, 100, "slow"))
	assert.Empty(t, w.errs, "Puts failed on a slow disk")
	lat1 := w.latencies(n0)
	st1 := e.Stats()
	t.Logf("Put latency, healthy: p50 %v max %v; both routes slow (%v): p50 %v max %v (%d Puts: %d staged, %d direct)",
		pct(lat0, 0.5), pct(lat0, 1), slow, pct(lat1, 0.5), pct(lat1, 1), len(lat1),
		st1.StagedWrites-st0.StagedWrites, st1.DirectWrites-st0.DirectWrites)
	require.NotEmpty(t, lat1)
	assert.GreaterOrEqual(t, lat1[0], slow, "a Put on the slow disk returned before either copy could be durable")

	// Stop while 16 writers run on the slow disk.
	n1 := w.count()
	running := w.run(ctx, 16, 1000, 200, "stop")
	require.Eventually(t, func() bool { return w.count() >= n1+32 }, hangTimeout, time.Millisecond, "the writers make progress")
	sctx, cancel := context.WithTimeout(context.Background(), stopCtx)
	defer cancel()
	var stopErr error
	var took time.Duration
	within(t, "Stop on a slow disk", func() {
		t0 := time.Now()
		stopErr = e.Stop(sctx)
		took = time.Since(t0)
	})
	lcWait(t, "writers after Stop", running)
	w.mu.Lock()
	errs := slices.Clone(w.errs)
	w.mu.Unlock()
	t.Logf("Stop with a %v ctx took %v and returned %v; %d Puts acknowledged in all, %d cut short", stopCtx, took, stopErr, w.count(), len(errs))
	if stopCtx >= opTimeout {
		assert.NoError(t, stopErr, "Stop with an ample ctx on a slow disk")
	} else if stopErr != nil {
		assert.ErrorIs(t, stopErr, context.DeadlineExceeded, "Stop's error")
	}
	for _, err := range errs {
		assert.ErrorIs(t, err, ringpipe.ErrStopped, "a Put that Stop cut short")
	}
	// Stop stopped every goroutine the engine started (this test's own
	// have returned).
	goleak.VerifyNone(t)

	ctl.normal()
	disk.ClearFaults()
	disk.PowerLoss(rand.New(rand.NewSource(202)))
	e = start(t, cfg)
	checkModelLive(t, e, sp, good.model(t, spec), w.failed)
	stop(t, e)
}

// TestPressureQueueFull: API.md QueueCapacity and ctx semantics. The disk
// stops answering, so the submitter stops draining the write queue (its
// held writes reach their bound) and the queue (8) fills. Then: Puts
// block; a Put and a Delete whose ctx ends while blocked return ctx's
// error (deadline or cancel); Stop, called while Puts are blocked, makes
// each of them return ErrStopped; once the disk answers Stop drains and
// acknowledges everything it had accepted. After a restart, none of the
// Puts and Deletes that returned an error is applied ("A context
// cancelled before the write is queued means not applied"; a write Stop
// refused before it was queued is not either), and every accepted write is.
func TestPressureQueueFull(t *testing.T) {
	cfg, _, gate := gatedConfig(t, 203)
	cfg.QueueCapacity = 8
	cfg.BatchSize = 4
	e := start(t, cfg)
	t.Cleanup(gate.release) // before start's Stop
	spec := ringpipe.SpaceSpec{Name: "s", Dims: 2, Bits: 16}
	sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kept, err := e.Put(ctx, sp, ringpipe.Point{0, 0}, []byte("kept"))
	require.NoError(t, err)

	gate.shut()
	// Fill the pipeline until PutAsync finds no room: the queue, and the
	// writes the submitter holds for busy files (actors' maxHeld, 16384).
	// A slow submitter (CI, -race) can leave the queue full for 50 ms
	// before the pipeline is (as in TestContractCancelBeforeQueued, ci9);
	// the Puts below would then find room, be queued and be applied, as
	// they may be. So the pipeline counts as full only after three
	// refusals in a row past the submitter's hold; every refused write is
	// checked absent below.
	const held = 16384
	var tickets []*ringpipe.Ticket
	var accepted, refused []ringpipe.Point // the points of tickets, of refused writes
	for i, inARow := 0, 0; inARow < 3 || len(tickets) < held; i++ {
		require.Less(t, i, 1<<16, "the write queue never filled")
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		tk, err := e.PutAsync(short, sp, ringpipe.Point{1, uint32(i)}, []byte("queued"))
		cancel()
		if err != nil {
			require.ErrorIs(t, err, context.DeadlineExceeded, "PutAsync %d", i)
			refused = append(refused, ringpipe.Point{1, uint32(i)})
			inARow++
			continue
		}
		inARow = 0
		tickets = append(tickets, tk)
		accepted = append(accepted, ringpipe.Point{1, uint32(i)})
	}
	st := e.Stats()
	t.Logf("%d writes accepted, %d refused, before the pipeline was full (queue %d/%d)", len(tickets), len(refused), st.QueueDepth, cfg.QueueCapacity)
	require.Equal(t, cfg.QueueCapacity, st.QueueDepth, "the queue is full")

	type result struct {
		p   ringpipe.Point
		err error
	}
	const nBlocked = 4
	blocked := make(chan result, nBlocked)
	for j := range nBlocked {
		go func() {
			p := ringpipe.Point{2, uint32(j)}
			_, err := e.Put(ctx, sp, p, []byte("blocked"))
			blocked <- result{p, err}
		}()
	}
	// Puts whose ctx ends while they wait for room.
	dctx, dcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = e.Put(dctx, sp, ringpipe.Point{3, 0}, []byte("deadline"))
	dcancel()
	assert.ErrorIs(t, err, context.DeadlineExceeded, "a Put whose deadline passed while the queue was full")
	assert.NotContains(t, fmt.Sprint(err), "wait until durable", "the Put was refused at the queue")
	cctx, ccancel := context.WithCancel(ctx)
	time.AfterFunc(100*time.Millisecond, ccancel)
	_, err = e.Put(cctx, sp, ringpipe.Point{3, 1}, []byte("cancelled"))
	ccancel()
	assert.ErrorIs(t, err, context.Canceled, "a Put cancelled while the queue was full")
	assert.NotContains(t, fmt.Sprint(err), "wait until durable", "the cancelled Put was refused at the queue")
	dctx, dcancel = context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = e.Delete(dctx, sp, ringpipe.Point{0, 0})
	dcancel()
	assert.ErrorIs(t, err, context.DeadlineExceeded, "a Delete whose deadline passed while the queue was full")
	assert.NotContains(t, fmt.Sprint(err), "wait until durable", "the Delete was refused at the queue")
	select {
	case r := <-blocked:
		t.Errorf("a Put at %v returned (%v) while the queue was full and the disk did not answer", r.p, r.err)
		blocked <- r
	default:
	}

	// Stop while Puts are blocked.
	stopped := make(chan error, 1)
	go func() { stopped <- e.Stop(ctx) }()
	var stoppedPuts []ringpipe.Point
	for range nBlocked {
		select {
		case r := <-blocked:
			assert.ErrorIs(t, r.err, ringpipe.ErrStopped, "a Put blocked on the full queue when Stop came (%v)", r.p)
			stoppedPuts = append(stoppedPuts, r.p)
		case <-time.After(hangTimeout):
			buf := make([]byte, 16<<20)
			gate.release()
			t.Fatalf("a Put blocked on the full queue did not return %v after Stop; goroutines:\n%s", hangTimeout, buf[:runtime.Stack(buf, true)])
		}
	}
	gate.release()
	select {
	case err := <-stopped:
		assert.NoError(t, err, "Stop, once the disk answers again")
	case <-time.After(hangTimeout):
		buf := make([]byte, 16<<20)
		t.Fatalf("Stop did not return %v after the disk answered; goroutines:\n%s", hangTimeout, buf[:runtime.Stack(buf, true)])
	}
	revs := make([]ringpipe.Revision, len(tickets))
	for i, tk := range tickets {
		select {
		case <-tk.Done():
		default:
			t.Fatalf("accepted write %d not done after Stop returned", i)
		}
		revs[i], err = tk.Wait(ctx)
		require.NoError(t, err, "accepted write %d: Stop drains and acknowledges what was accepted", i)
	}

	e = start(t, cfg)
	for _, p := range append(append([]ringpipe.Point{{3, 0}, {3, 1}}, refused...), stoppedPuts...) {
		rec, err := e.Get(ctx, sp, p)
		assert.ErrorIs(t, err, ringpipe.ErrNotFound, "%v: a write that returned an error before it was queued is applied (%q rev %d)", p, rec.Value, rec.Revision)
	}
	rec, err := e.Get(ctx, sp, ringpipe.Point{0, 0})
	if assert.NoError(t, err, "the Delete whose ctx ended while blocked was applied") {
		assert.Equal(t, kept, rec.Revision)
	}
	for i, rev := range revs {
		rec, err := e.Get(ctx, sp, accepted[i])
		if !assert.NoError(t, err, "accepted write %d", i) || !assert.Equal(t, rev, rec.Revision, "accepted write %d", i) {
			break
		}
	}
	stop(t, e)
}

// TestPressureFlushSlowSpace: Flush of a space whose records wait in the
// staging WAL because its hot file does not answer. A Flush whose ctx
// ends first returns ctx's error, having sealed nothing; a Flush without
// a deadline waits, and completes (promoted, sealed, visible) once the
// file answers. A second round cuts one Flush short while promotion cannot
// proceed, and then, with the hot file back, one whose seal cannot write
// its block; a power loss follows while the block still does not answer:
// the next Start shows every acknowledged write exactly once, and a Flush
// then completes.
func TestPressureFlushSlowSpace(t *testing.T) {
	const blockKey = "/blocks/"
	f := prStartWarm(t, 204, 1, 5, blockKey)
	disk, hotKey, ctl, cfg, e, spec, sp, ctx, w := f.disk, f.hotKey, f.ctl, f.cfg, f.e, f.spec, f.sp, f.ctx, f.w
	good := f.good

	stall := func(row uint32, tag string) {
		t.Helper()
		ctl.set(hotKey, prStalled)
		prVirtualDelay(disk, hotPrefix(sp))
		lcWait(t, "writers while the hot file stalls", w.run(ctx, 4, 25, row, tag))
		require.Empty(t, w.errs)
		require.Positive(t, e.Stats().StagedPending, "writes wait in the staging WAL")
	}
	flushShort := func(while string) {
		t.Helper()
		sealed := e.Stats().SealedBlocks
		fctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		var err error
		within(t, "a Flush with a 200 ms ctx", func() { err = e.Flush(fctx, sp) })
		assert.ErrorIs(t, err, context.DeadlineExceeded, "Flush while %s", while)
		st := e.Stats()
		assert.Equal(t, sealed, st.SealedBlocks, "a Flush that returned an error sealed a block")
		checkModel(t, engineReader(t, e), sp, good.model(t, spec), fullBox(spec))
	}

	stall(10, "a")
	flushShort("promotion cannot proceed")
	flushed := make(chan error, 1)
	go func() { flushed <- e.Flush(ctx, sp) }()
	select {
	case err := <-flushed:
		t.Errorf("Flush returned (%v) while the staged records could not be promoted", err)
	case <-time.After(300 * time.Millisecond):
	}
	sealed := e.Stats().SealedBlocks
	ctl.set(hotKey, 0)
	disk.ClearFaults()
	select {
	case err := <-flushed:
		assert.NoError(t, err, "Flush once the hot file answers")
	case <-time.After(hangTimeout):
		buf := make([]byte, 16<<20)
		t.Fatalf("Flush did not return %v after the hot file answered; stats %+v; goroutines:\n%s", hangTimeout, e.Stats(), buf[:runtime.Stack(buf, true)])
	}
	st := e.Stats()
	assert.Zero(t, st.StagedPending, "Flush promoted every staged record")
	assert.Greater(t, st.SealedBlocks, sealed, "Flush sealed a block")
	assert.Zero(t, e.Telemetry().UnsealedRecords, "Flush sealed every record")
	checkModel(t, engineReader(t, e), sp, good.model(t, spec), fullBox(spec))

	stall(20, "b")
	flushShort("promotion cannot proceed")
	ctl.set(hotKey, 0)
	disk.ClearFaults()
	ctl.set(blockKey, prStalled)
	lcWait(t, "writers while block writes stall", w.run(ctx, 2, 10, 30, "c"))
	require.Empty(t, w.errs)
	flushShort("the seal's block write does not answer")
	assert.Positive(t, ctl.withheldOf(blockKey), "the seal's block I/O was withheld")
	disk.PowerLoss(rand.New(rand.NewSource(204)))
	sctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	within(t, "Stop after a power loss", func() { t.Logf("Stop after the power loss: %v", e.Stop(sctx)) })
	ctl.normal()
	disk.ClearFaults()
	e = start(t, cfg)
	checkModel(t, engineReader(t, e), sp, good.model(t, spec), fullBox(spec))
	require.NoError(t, e.Flush(ctx, sp), "Flush after the restart")
	assert.Zero(t, e.Stats().StagedPending)
	checkModel(t, engineReader(t, e), sp, good.model(t, spec), fullBox(spec))
	stop(t, e)
}

// prWarm is an engine on a sim disk whose first space's hot file a slowCtl
// controls, after a few healthy writes.
type prWarm struct {
	disk   *sim.Disk
	hotKey string
	ctl    *slowCtl
	cfg    ringpipe.Config
	e      *ringpipe.Engine
	spec   ringpipe.SpaceSpec
	sp     ringpipe.SpaceID
	ctx    context.Context
	good   *acks
	w      *prWriter
}

// prStartWarm starts it on a sim disk of seed, with the first space's hot
// file and the paths under slowKeys under a slowCtl's control, and warms it
// with writers goroutines of each healthy Puts.
func prStartWarm(t *testing.T, seed int64, writers, each int, slowKeys ...string) prWarm {
	t.Helper()
	f := prWarm{disk: newSimDisk(t, seed), hotKey: prHotKey(1), spec: ringpipe.SpaceSpec{Name: "s", Dims: 2, Bits: 16}}
	f.ctl = newSlowCtl(append([]string{f.hotKey}, slowKeys...)...)
	f.cfg = f.ctl.config(simConfig(t, f.disk), f.disk)
	f.e = start(t, f.cfg)
	t.Cleanup(f.ctl.normal)
	f.sp = createSpace(t, f.e, f.spec.Name, f.spec.Dims, f.spec.Bits)
	require.Equal(t, ringpipe.SpaceID(1), f.sp)
	f.ctx = ctxFor(t)
	f.good = new(acks)
	f.w = &prWriter{e: f.e, sp: f.sp, good: f.good}
	lcWait(t, "healthy writers", f.w.run(f.ctx, writers, each, 0, "warm"))
	return f
}

// TestPressureDiskFullBothRoutes: DESIGN.md "Disk full (ENOSPC) is
// reported to writers and clears when space returns", with both routes
// unavailable: the space is slow (its hot file does not answer, so its
// writes go to the staging WAL) and the WAL's disk is full. Puts return
// an error that says the disk is full (errors.Is ENOSPC), neither hang
// nor say ErrFailed; once space returns, Puts succeed again on the same
// engine, still through the WAL while the hot file stalls, and directly
// once it answers. A restart after a power loss shows every acknowledged
// write, and each failed one wholly or not at all.
func TestPressureDiskFullBothRoutes(t *testing.T) {
	f := prStartWarm(t, 205, 1, 5)
	disk, hotKey, ctl, cfg, e, spec, sp, ctx, w := f.disk, f.hotKey, f.ctl, f.cfg, f.e, f.spec, f.sp, f.ctx, f.w
	good := f.good

	// The space turns slow: its next write misses its deadline and is
	// acknowledged from the WAL; later ones go to the WAL at once.
	ctl.set(hotKey, prStalled)
	prVirtualDelay(disk, hotPrefix(sp))
	require.NoError(t, w.put(ctx, ringpipe.Point{1, 0}, []byte("slow")))
	require.Equal(t, uint64(1), e.Stats().StagedWrites, "the write was acknowledged from the staging WAL")

	enospc := sim.Fault{Kind: sim.ENOSPC, Persist: true, Path: simDir + "/wal/",
		Ops: []ring.Opcode{ring.OpWrite, ring.OpWritev, ring.OpFallocate}}
	disk.Inject(enospc)
	hits := len(disk.Hits())
	n0 := len(w.errs)
	within(t, "Puts while both routes are unavailable", func() {
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Go(func() {
				for i := range 5 {
					pctx, cancel := context.WithTimeout(ctx, hangTimeout/2)
					_ = w.put(pctx, ringpipe.Point{10 + uint32(g), uint32(i)}, []byte("full"))
					cancel()
				}
			})
		}
		wg.Wait()
	})
	w.mu.Lock()
	errs := slices.Clone(w.errs[n0:])
	w.mu.Unlock()
	t.Logf("while the WAL's disk was full: %d of 20 Puts failed; first error: %v; stats %+v", len(errs), errors.Join(errs[:min(1, len(errs))]...), e.Stats())
	assert.Greater(t, len(disk.Hits()), hits, "the ENOSPC fault fired")
	assert.Len(t, errs, 20, "Puts that succeeded with both routes unavailable")
	for _, err := range errs {
		assert.ErrorIs(t, err, unix.ENOSPC, "the error says the disk is full")
		assert.NotErrorIs(t, err, ringpipe.ErrFailed, "a full disk failed the engine")
		assert.NotErrorIs(t, err, context.DeadlineExceeded, "a Put hung")
	}

	// Space returns; the hot file still does not answer.
	disk.ClearFaults()
	prVirtualDelay(disk, hotPrefix(sp))
	staged := e.Stats().StagedWrites
	n1 := len(w.errs)
	within(t, "Puts once space returned", func() {
		for i := range 10 {
			pctx, cancel := context.WithTimeout(ctx, hangTimeout/2)
			assert.NoError(t, w.put(pctx, ringpipe.Point{20, uint32(i)}, []byte("room again")), "Put %d once space returned", i)
			cancel()
		}
	})
	assert.Len(t, w.errs, n1)
	assert.Equal(t, staged+10, e.Stats().StagedWrites, "acknowledged from the staging WAL (the hot file still stalls)")
	assert.False(t, e.Telemetry().Failed, "the engine failed")
	t.Logf("actor restarts: %v", e.Stats().ActorRestarts)

	ctl.set(hotKey, 0)
	disk.ClearFaults()
	require.NoError(t, e.Flush(ctx, sp), "Flush once the hot file answers")
	lcWait(t, "writers once both routes are back", w.run(ctx, 2, 10, 30, "after"))
	assert.Len(t, w.errs, n1, "Puts failed once both routes were back")
	m := good.model(t, spec)
	checkModelLive(t, e, sp, m, w.failed)
	stop(t, e)
	disk.PowerLoss(rand.New(rand.NewSource(205)))
	e = start(t, cfg)
	checkModelLive(t, e, sp, m, w.failed)
	stop(t, e)
}

// prWaitOrDump waits for done for at most hangTimeout; on timeout it
// fails the test (without ending it) with what and every goroutine's
// stack, and returns false.
func prWaitOrDump(t *testing.T, what string, done <-chan struct{}) bool {
	t.Helper()
	timer := time.NewTimer(hangTimeout)
	defer timer.Stop()
	select {
	case <-done:
		return true
	case <-timer.C:
		var b strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
		t.Errorf("%s: still waiting after %v; goroutines:\n%s", what, hangTimeout, b.String())
		return false
	}
}

// TestPressureDiskFullWhenSpaceTurnsSlow: DESIGN.md §1 "A stalled hot
// segment file therefore never stalls writers for longer than the deadline
// plus one WAL sync" and "Disk full (ENOSPC) is reported to writers", in
// the other order from TestPressureDiskFullBothRoutes: the staging WAL's
// disk is full first, then the hot file stops answering. The writes that
// miss their deadline cannot be staged; their writers, whose ctx never
// ends (as a user's Put often has), must get the disk-full error, not wait
// for the stalled file. Once space returns and the file answers, writes
// succeed on the same engine; after a power loss and a restart every
// acknowledged write is there, each failed one wholly or not at all.
//
// "4 writers" (queued, group commit) passes: the staged copy's ENOSPC
// fails the writers at once (their hot copy may still land, which the
// contract allows after an error).
//
// "lone writer" failed before the fix: the Put, committed inline, stayed
// blocked in Inline.reap's Reap on the stalled hot write after the
// publisher had failed its ack with ENOSPC (nothing woke it). An inline
// commit now stops reaping once its batch is rerouted: the actors take
// over, and the caller waits for its ack as if it had queued the write.
func TestPressureDiskFullWhenSpaceTurnsSlow(t *testing.T) {
	for _, tc := range []struct {
		name    string
		writers int
	}{{"lone writer", 1}, {"4 writers", 4}} {
		t.Run(tc.name, func(t *testing.T) {
			f := prStartWarm(t, 206, 1, 5)
			disk, hotKey, ctl, cfg, e, spec, sp, ctx, w := f.disk, f.hotKey, f.ctl, f.cfg, f.e, f.spec, f.sp, f.ctx, f.w
			good := f.good

			disk.Inject(sim.Fault{Kind: sim.ENOSPC, Persist: true, Path: simDir + "/wal/",
				Ops: []ring.Opcode{ring.OpWrite, ring.OpWritev, ring.OpFallocate}})
			ctl.set(hotKey, prStalled)
			prVirtualDelay(disk, hotPrefix(sp))
			inline0 := e.Telemetry().InlineCommits
			t0 := time.Now()
			// No deadline of their own: only the engine can end these Puts.
			done := w.run(context.Background(), tc.writers, 1, 10, "full")
			if !prWaitOrDump(t, fmt.Sprintf("%d Put(s) with both routes unavailable (inline commits %d)",
				tc.writers, e.Telemetry().InlineCommits-inline0), done) {
				ctl.set(hotKey, 0) // the stalled file answers: the Put returns
				lcWait(t, "the Puts once the hot file answered", done)
			}
			w.mu.Lock()
			errs := slices.Clone(w.errs)
			w.mu.Unlock()
			t.Logf("%d writer(s), %d committed inline: %d failed after %v; first error: %v",
				tc.writers, e.Telemetry().InlineCommits-inline0, len(errs), time.Since(t0), errors.Join(errs[:min(1, len(errs))]...))
			for _, err := range errs {
				assert.ErrorIs(t, err, unix.ENOSPC, "the error says the disk is full")
				assert.NotErrorIs(t, err, ringpipe.ErrFailed, "a full disk failed the engine")
			}

			ctl.normal()
			disk.ClearFaults()
			n1 := len(errs)
			lcWait(t, "writers once both routes are back", w.run(ctx, 2, 10, 30, "after"))
			assert.Len(t, w.errs, n1, "Puts failed once space returned and the hot file answered")
			assert.False(t, e.Telemetry().Failed, "the engine failed")
			m := good.model(t, spec)
			checkModelLive(t, e, sp, m, w.failed)
			stop(t, e)
			disk.PowerLoss(rand.New(rand.NewSource(206)))
			e = start(t, cfg)
			checkModelLive(t, e, sp, m, w.failed)
			stop(t, e)
		})
	}
}
