package test

// Audit of Config.DirectIO end to end (the logs written O_DIRECT in padded
// whole sectors, blocks O_DIRECT but for their last partial sector), with
// recovery reading each log only up to where its data ends (ring.ReadLog:
// SEEK_DATA/SEEK_HOLE, sim's written pages). Every run checks a model
// after each restart: every acknowledged write is there with its value and
// revision, a write that failed is there wholly or not at all, no record
// is at a point nobody wrote, and, once everything is sealed, no write is
// in the blocks twice (each write has a point of its own, so a point with
// two records in the blocks is a duplicate).
//
// Replay a run with RINGPIPE_DIO_SEED=<seed> (printed by each test).

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
	"github.com/ringpipe/ringpipe/wal"
)

// dioSpec is the audit's space shape; write i is at daPoint(i).
var dioSpec = ringpipe.SpaceSpec{Name: "dio", Dims: 2, Bits: 16}

// dioCallTimeout bounds one call of a workload: a call still waiting
// after it is a hang, reported with every goroutine's stack.
const dioCallTimeout = 10 * time.Second

func dioSeed(t *testing.T) int64 { t.Helper(); return envSeed(t, "RINGPIPE_DIO_SEED") }

// dioFrames are record frame sizes around the sector and the 4 KiB page:
// each is a frame of exactly that many bytes; dioValue's plus adds one
// byte to the value, so that the frame's bytes end one byte past it (and
// its padded size is 8 more).
var dioFrames = []int{wal.Sector - 8, wal.Sector, 2 * wal.Sector, 4096 - 8, 4096, 4096 + 8}

// dioBase is the frame bytes of a record at daPoint(i) less its value:
// the same for every i.
var dioBase = wal.FrameHeader + wal.RecordSize(messages.Record{Space: 1, Revision: 1, Point: messages.Point(daPoint(0))})

// dioValue returns write i's value, of n bytes.
func dioValue(i, n int) []byte {
	v := make([]byte, n)
	rng := rand.New(rand.NewSource(int64(i)))
	rng.Read(v)
	copy(v, fmt.Appendf(nil, "w%d:", i))
	return v
}

// dioMaxValue is Config's MaxValueSize default for a log of prealloc
// bytes: the largest value whose record, with 16 coordinates, is a frame
// of at most Preallocate - 4096 bytes.
func dioMaxValue(prealloc int64) int {
	base16 := wal.RecordSize(messages.Record{Space: 1, Revision: 1, Point: make(messages.Point, 16)})
	v := 0
	for int64(wal.FrameSize(base16+v+1)) <= prealloc-4096 {
		v++
	}
	return v
}

// dioSizes returns the value sizes of a round: for each of dioFrames a
// frame of exactly that size and one whose bytes end one byte past it,
// and the largest value, those that a log of prealloc bytes takes.
func dioSizes(prealloc int64) []int {
	most := min(dioMaxValue(prealloc), 64<<10)
	var out []int
	for _, f := range dioFrames {
		for _, plus := range []int{0, 1} {
			if n := f - dioBase + plus; n <= most {
				out = append(out, n)
			}
		}
	}
	return append(out, most)
}

// dioW is one write of a run.
type dioW struct {
	i     int
	value []byte
	rev   ringpipe.Revision
	acked bool
}

// dioLog is what a run wrote, by write number.
type dioLog struct {
	ws   map[int]*dioW
	next int
}

func newDioLog() *dioLog { return &dioLog{ws: make(map[int]*dioW)} }

// hang fails the test with every goroutine's stack when err says that a
// call outlived dioCallTimeout.
func dioHang(t *testing.T, err error, what string) {
	t.Helper()
	if errors.Is(err, context.DeadlineExceeded) {
		buf := make([]byte, 1<<20)
		t.Fatalf("%s: still waiting after %v (hang); goroutines:\n%s", what, dioCallTimeout, buf[:runtime.Stack(buf, true)])
	}
}

func dioCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), dioCallTimeout)
}

// put writes write n (a new point) with one Put. must: it has to succeed.
func (l *dioLog) put(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID, size int, must bool) error {
	t.Helper()
	i := l.next
	l.next++
	w := &dioW{i: i, value: dioValue(i, size)}
	l.ws[i] = w
	ctx, cancel := dioCtx()
	defer cancel()
	rev, err := e.Put(ctx, sp, daPoint(i), w.value)
	dioHang(t, err, fmt.Sprintf("Put %d", i))
	if must {
		require.NoError(t, err, "Put %d (value %d bytes, frame %d)", i, size, wal.FrameSize(dioBase-wal.FrameHeader+size))
	}
	if err == nil {
		w.rev, w.acked = rev, true
	}
	return err
}

// burst writes one write of every size with PutAsync and then waits for
// each ticket: multi-record batches.
func (l *dioLog) burst(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID, sizes []int, must bool) {
	t.Helper()
	ctx, cancel := dioCtx()
	defer cancel()
	type pend struct {
		w  *dioW
		tk *ringpipe.Ticket
	}
	var ps []pend
	for _, s := range sizes {
		i := l.next
		l.next++
		w := &dioW{i: i, value: dioValue(i, s)}
		l.ws[i] = w
		tk, err := e.PutAsync(ctx, sp, daPoint(i), w.value)
		dioHang(t, err, fmt.Sprintf("PutAsync %d", i))
		if must {
			require.NoError(t, err, "PutAsync %d", i)
		}
		if err == nil {
			ps = append(ps, pend{w, tk})
		}
	}
	for _, p := range ps {
		rev, err := p.tk.Wait(ctx)
		dioHang(t, err, fmt.Sprintf("Ticket.Wait %d", p.w.i))
		if must {
			require.NoError(t, err, "Ticket.Wait %d", p.w.i)
		}
		if err == nil {
			p.w.rev, p.w.acked = rev, true
		}
	}
}

// check checks e against the log: every acknowledged write reads back with
// its revision and value, a failed one is absent or whole, and a Scan of
// the space finds no other record. It returns how many writes are there.
func (l *dioLog) check(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID, what string) int {
	t.Helper()
	ctx, cancel := dioCtx()
	defer cancel()
	bad := 0
	for i := 0; i < l.next && bad < 5; i++ {
		w := l.ws[i]
		rec, err := e.Get(ctx, sp, daPoint(i))
		dioHang(t, err, "Get")
		switch {
		case w.acked && err != nil:
			bad++
			t.Errorf("%s: acknowledged write %d (rev %d, %d bytes) lost: %v", what, i, w.rev, len(w.value), err)
		case w.acked && (rec.Revision != w.rev || string(rec.Value) != string(w.value)):
			bad++
			t.Errorf("%s: acknowledged write %d: got rev %d, %d bytes; want rev %d, %d bytes (equal: %v)",
				what, i, rec.Revision, len(rec.Value), w.rev, len(w.value), string(rec.Value) == string(w.value))
		case !w.acked && err == nil && string(rec.Value) != string(w.value):
			bad++
			t.Errorf("%s: failed write %d half-applied: %d bytes, want %d or none", what, i, len(rec.Value), len(w.value))
		case !w.acked && err != nil && !errors.Is(err, ringpipe.ErrNotFound):
			bad++
			t.Errorf("%s: Get of failed write %d: %v", what, i, err)
		}
	}
	n := 0
	err := e.Scan(ctx, sp, fullBox(dioSpec), func(r ringpipe.Record) bool {
		n++
		i := int(r.Point[0]) + int(r.Point[1])*65536
		if _, ok := l.ws[i]; !ok || i >= l.next {
			t.Errorf("%s: a record at %v, which no write of the run made", what, r.Point)
		}
		return true
	})
	dioHang(t, err, "Scan")
	require.NoError(t, err, "%s: Scan", what)
	return n
}

// sealedCheck flushes sp and reads every block the manifest names (sorted,
// checksummed, no record in two blocks: slRead): exactly n records, one
// per point, every acknowledged write among them, nothing left unsealed or
// staged.
func (l *dioLog) sealedCheck(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID, d slDir, n int, what string) {
	t.Helper()
	ctx, cancel := dioCtx()
	defer cancel()
	err := e.Flush(ctx, sp)
	dioHang(t, err, "Flush")
	require.NoError(t, err, "%s: Flush", what)
	assert.Zero(t, e.Telemetry().UnsealedRecords, "%s: unsealed records after Flush", what)
	assert.Zero(t, e.Stats().StagedPending, "%s: staged records after Flush", what)
	b := slRead(t, d, true)
	perPoint := make(map[pkey]int)
	for k, r := range b.recs {
		if k.space == sp {
			perPoint[keyOf(r.Point)]++
		}
	}
	dups := 0
	for p, c := range perPoint {
		if c > 1 {
			dups++
			if dups <= 5 {
				t.Errorf("%s: point %s (one write) has %d records in the blocks: a duplicate", what, p, c)
			}
		}
	}
	assert.Equal(t, n, b.spaceCount(sp), "%s: records in the blocks against records Scan found", what)
	var acked []write
	for i := 0; i < l.next; i++ {
		if w := l.ws[i]; w.acked {
			acked = append(acked, write{point: daPoint(i), rev: w.rev, value: w.value})
		}
	}
	b.has(t, what, sp, acked)
}

// dioEnv is where a run's engines keep their files.
type dioEnv struct {
	name string
	disk *sim.Disk // nil: a real directory
	cfg  ringpipe.Config
	logs *observer.ObservedLogs
}

func (v *dioEnv) dir() slDir { return slDir{dir: v.cfg.Dir, disk: v.disk} }

// dioProbe reports why a real directory cannot run an environment: the
// file system refuses O_DIRECT, or the kernel io_uring.
func dioProbe(t *testing.T, b ringpipe.Backend) string {
	t.Helper()
	dir := t.TempDir()
	fd, err := unix.Open(filepath.Join(dir, "odirect"), unix.O_RDWR|unix.O_CREAT|unix.O_DIRECT, 0o644)
	if err != nil {
		return fmt.Sprintf("the file system of %s refuses O_DIRECT: %v", dir, err)
	}
	unix.Close(fd) //nolint:errcheck // a probe
	if b == ringpipe.BackendURing {
		e, err := ringpipe.Start(ctxFor(t), ringpipe.Config{Dir: filepath.Join(dir, "uring"), Backend: b})
		if err != nil {
			return fmt.Sprintf("the kernel refuses io_uring: %v", err)
		}
		stop(t, e)
	}
	return ""
}

// newDioEnv returns an environment: "sim", "std" or "uring" (a real
// directory), with DirectIO on, a write deadline no healthy write misses
// (so that a staged write means a refused direct write), and the
// engine's warnings collected.
func newDioEnv(t *testing.T, name string, seed int64, prealloc int64) *dioEnv {
	t.Helper()
	core, logs := observer.New(zapcore.WarnLevel)
	v := &dioEnv{name: name, logs: logs}
	switch name {
	case "sim":
		v.disk = newSimDisk(t, seed)
		v.cfg = simConfig(t, v.disk)
	case "std", "uring":
		b := ringpipe.BackendStd
		if name == "uring" {
			b = ringpipe.BackendURing
		}
		if why := dioProbe(t, b); why != "" {
			t.Skip(why)
		}
		v.cfg = realConfig(t, b)
	default:
		t.Fatalf("unknown environment %q", name)
	}
	v.cfg.Logger = zap.New(zapcore.NewTee(v.cfg.Logger.Core(), core))
	v.cfg.DirectIO = true
	v.cfg.Preallocate = prealloc
	v.cfg.DirectWriteTimeout = dioCallTimeout
	return v
}

// warnings returns the engine's warnings and errors so far.
func (v *dioEnv) warnings() []string {
	var out []string
	for _, e := range v.logs.All() {
		out = append(out, fmt.Sprintf("%s: %s %v", e.Level, e.Message, e.ContextMap()))
	}
	return out
}

// ---------------------------------------------------------------------
// Frames at sector and page boundaries, on sim, std and io_uring.

// TestDirectIOAuditBoundaries: with DirectIO, one-record batches (Puts)
// and multi-record batches (PutAsync bursts) of record frames ending just
// before, exactly at and just past a sector and a 4 KiB page, in logs of
// 1 MiB and of the minimum 8192 bytes (rotations, follow frames, a record
// that nearly fills a file), with Flushes between rounds so that later
// generations are recycled spares, and Starts that turn DirectIO off and
// on again. After each Start the model holds; at the end everything is
// sealed once. No write is refused (sim refuses an unaligned O_DIRECT
// transfer as Linux does; a refused direct write would be staged: with a
// 10 s deadline nothing else stages in 1 MiB logs; an 8192-byte log
// stages what a full generation cannot take until its seal, as
// documented), and the engine logs no warning.
func TestDirectIOAuditBoundaries(t *testing.T) {
	seed := dioSeed(t)
	for _, env := range []string{"sim", "std", "uring"} {
		for _, prealloc := range []int64{testPrealloc, 8192} {
			t.Run(fmt.Sprintf("%s/prealloc%d", env, prealloc), func(t *testing.T) {
				v := newDioEnv(t, env, seed, prealloc)
				sizes := dioSizes(prealloc)
				l := newDioLog()
				e := start(t, v.cfg)
				sp := createSpace(t, e, dioSpec.Name, dioSpec.Dims, dioSpec.Bits)
				staged := uint64(0)
				round := func(what string) {
					t.Helper()
					for _, s := range sizes {
						l.put(t, e, sp, s, true)
					}
					l.burst(t, e, sp, sizes, true)
					st := e.Stats()
					if prealloc >= testPrealloc {
						assert.Equal(t, staged, st.StagedWrites, "%s: staged writes (a refused or failed direct write is staged): %+v", what, st)
					} // else a full generation stages writes until its seal, as documented
					staged = st.StagedWrites
					l.check(t, e, sp, what)
				}
				restart := func(direct bool, what string) {
					t.Helper()
					stop(t, e)
					cfg := v.cfg
					cfg.DirectIO = direct
					e = start(t, cfg)
					staged = 0
					l.check(t, e, sp, what)
				}
				round("round 1")
				restart(true, "after Stop")
				round("round 2")
				require.NoError(t, e.Flush(ctxFor(t), sp), "Flush")
				round("round 3 (after a seal)")
				require.NoError(t, e.Flush(ctxFor(t), sp), "Flush")
				round("round 4 (after two seals: a spare reused)")
				restart(false, "DirectIO off")
				round("round 5 (buffered)")
				restart(true, "DirectIO on again")
				round("round 6 (direct after buffered)")
				require.NoError(t, e.Flush(ctxFor(t), sp), "Flush")
				round("round 7")
				restart(true, "last Start")
				n := l.check(t, e, sp, "last Start")
				assert.Equal(t, l.next, n, "every write is acknowledged and read back")
				l.sealedCheck(t, e, sp, v.dir(), n, "sealed")
				stop(t, e)
				assert.Empty(t, v.warnings(), "warnings logged by a run without faults")
			})
		}
	}
}

// ---------------------------------------------------------------------
// A power loss at every operation of a direct run (sim).

// dioSweepCase is one configuration of the power-loss sweep.
type dioSweepCase struct {
	name     string
	prealloc int64
	// toggle: the Start after the power loss turns DirectIO off at half
	// the cuts (and the one after it on again).
	toggle bool
}

// TestDirectIOAuditPowerLossSweep: on the simulated disk, with DirectIO,
// a run that has spares (three seals), staged records waiting in the WAL
// (its hot file stalled) and then writes frames at sector and page
// boundaries (Puts, a PutAsync burst), promotes, seals (Flush: a new
// generation from a recycled spare, follow frames), and writes again;
// the run is cut at each of its operations in turn: from operation k on
// every operation fails with EIO (at every other cut only every sync, so that the
// writes from k on are in the page cache, unsynced), then the power is
// cut (sim tears each unsynced sector of a direct write: applied,
// dropped, zeroed or garbage). The next Start (DirectIO off at every other cut where the
// case toggles) must find the model; it then writes a round of every size
// (appending after the torn tail it dropped) and a further Start
// (DirectIO on) must find the model again, and a Flush must seal every
// record exactly once.
func TestDirectIOAuditPowerLossSweep(t *testing.T) {
	seed := dioSeed(t)
	cases := []dioSweepCase{
		{name: "prealloc1MiB", prealloc: testPrealloc},
		{name: "prealloc1MiB-toggle", prealloc: testPrealloc, toggle: true},
		{name: "prealloc8192-toggle", prealloc: 8192, toggle: true},
	}
	for ci, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dioSweep(t, c, seed+int64(ci)*1_000_003)
		})
	}
}

// dioSweepBudget bounds the cut points each case runs: past it they are
// strided over the run, from a point the seed picks (every operation of a
// shorter run is cut). RINGPIPE_DIO_FULL=1 cuts at every operation.
const dioSweepBudget = 40

func dioSweep(t *testing.T, c dioSweepCase, seed int64) {
	// The run's length in operations, from an uncut run.
	total := dioSweepRun(t, c, seed, 0, 0, nil)
	require.Positive(t, total, "the swept part did I/O")
	budget := dioSweepBudget
	if os.Getenv("RINGPIPE_DIO_FULL") != "" {
		budget = total // every operation
	}
	stride := max(1, (total+budget-1)/budget)
	start := 1 + int(uint64(seed)%uint64(stride))
	cuts := 0
	var sum dioSweepSum
	for k := start; k <= total && !t.Failed(); k += stride {
		dioSweepRun(t, c, seed+int64(k), k, cuts, &sum)
		cuts++
	}
	t.Logf("%s: %d operations in the swept part, cut at %d of them (every %d, from %d); sectors of unsynced writes at the power losses: %d applied, %d dropped, %d zeroed, %d garbage; writes checked: %d acknowledged, %d failed (%d of them found whole after recovery)",
		c.name, total, cuts, stride, start, sum.fates[sim.Applied], sum.fates[sim.Dropped], sum.fates[sim.Zeroed], sum.fates[sim.Garbage],
		sum.acked, sum.failed, sum.failedThere)
}

// dioSweepSum adds up what a sweep's cuts did.
type dioSweepSum struct {
	fates                      [4]int
	acked, failed, failedThere int
}

// dioSweepRun runs the case once, cut at operation k of the swept part
// (0: not cut); it returns how many operations the swept part did. The
// cut's index idx picks the fault (odd: only syncs fail) and, where the
// case toggles, DirectIO off at the next Start (idx/2 odd), so that every
// combination comes up whatever the stride.
func dioSweepRun(t *testing.T, c dioSweepCase, seed int64, k, idx int, sum *dioSweepSum) int {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf("cut at operation %d (seed %d): "+format, append([]any{k, seed}, args...)...)
	}
	disk := newSimDisk(t, seed)
	cfg := simConfig(t, disk)
	cfg.Logger = zap.NewNop()
	cfg.DirectIO = true
	cfg.Preallocate = c.prealloc
	sizes := dioSizes(c.prealloc)
	l := newDioLog()
	e := start(t, cfg)
	sp := createSpace(t, e, dioSpec.Name, dioSpec.Dims, dioSpec.Bits)
	ctx := ctxFor(t)
	for range 3 {
		l.put(t, e, sp, sizes[0], true)
		l.put(t, e, sp, sizes[len(sizes)/2], true)
		require.NoError(t, e.Flush(ctx, sp), "setup Flush")
	}
	stallHot(disk, sp)
	for _, n := range sizes[:3] {
		l.put(t, e, sp, n, true)
	}
	if st := e.Stats(); st.StagedPending == 0 {
		t.Logf("setup: nothing waits in the staging WAL: %+v", st)
	}
	disk.ClearFaults()
	base := disk.OpCount()
	if k > 0 {
		f := sim.Fault{Kind: sim.EIO, At: base + uint64(k), Persist: true}
		if idx%2 == 1 {
			// Only the syncs fail: the writes from k on reach the page
			// cache and are torn by the power loss.
			f.Ops = []ring.Opcode{ring.OpFdatasync, ring.OpFsync}
		}
		disk.Inject(f)
	}
	// The swept part: errors are allowed once the cut has come.
	must := false
	for _, n := range sizes {
		l.put(t, e, sp, n, must)
	}
	l.burst(t, e, sp, sizes, must)
	fctx, cancel := dioCtx()
	err := e.Flush(fctx, sp)
	cancel()
	dioHang(t, err, "Flush")
	for _, n := range sizes {
		l.put(t, e, sp, n, must)
	}
	if k == 0 {
		require.NoError(t, err, "Flush of the uncut run")
		for i := 0; i < l.next; i++ {
			require.True(t, l.ws[i].acked, "uncut run: write %d acknowledged", i)
		}
		total := int(disk.OpCount() - base)
		stop(t, e)
		return total
	}
	if len(disk.Hits()) == 0 {
		t.Logf("cut at operation %d: the run ended before it", k)
	}
	rep := disk.PowerLoss(rand.New(rand.NewSource(seed)))
	for f := range sum.fates {
		sum.fates[f] += rep.Fates[f]
	}
	sctx, scancel := context.WithTimeout(context.Background(), opTimeout)
	_ = e.Stop(sctx) // the process is dead: only release what it held
	scancel()
	disk.ClearFaults()

	after := cfg
	after.DirectIO = !(c.toggle && (idx/2)%2 == 1)
	e, err = ringpipe.Start(ctxFor(t), after)
	if err != nil {
		fail("Start after the power loss (DirectIO %v): %v", after.DirectIO, err)
		return 0
	}
	l.check(t, e, sp, fmt.Sprintf("cut at %d: after the power loss (DirectIO %v)", k, after.DirectIO))
	for i := 0; i < l.next; i++ {
		if l.ws[i].acked {
			sum.acked++
			continue
		}
		sum.failed++
		if _, err := e.Get(ctxFor(t), sp, daPoint(i)); err == nil {
			sum.failedThere++
		}
	}
	for _, n := range sizes {
		if err := l.put(t, e, sp, n, false); err != nil {
			fail("Put after recovery: %v", err)
			break
		}
	}
	l.check(t, e, sp, fmt.Sprintf("cut at %d: writes after recovery", k))
	if err := e.Stop(ctxFor(t)); err != nil {
		fail("Stop: %v", err)
	}
	cfg.DirectIO = true
	e, err = ringpipe.Start(ctxFor(t), cfg)
	if err != nil {
		fail("Start after writes following recovery: %v", err)
		return 0
	}
	n := l.check(t, e, sp, fmt.Sprintf("cut at %d: a further Start", k))
	l.sealedCheck(t, e, sp, slDir{dir: cfg.Dir, disk: disk}, n, fmt.Sprintf("cut at %d: sealed", k))
	if err := e.Stop(ctxFor(t)); err != nil {
		fail("last Stop: %v", err)
	}
	return 0
}

// ---------------------------------------------------------------------
// DirectIO turned off or on with staged records, a frozen generation and
// spares on disk.

// TestDirectIOAuditToggleStagedFrozenSpare: a life with DirectIO on (or
// off) leaves a spare file, a frozen generation (a Flush whose block could
// not be written: ENOSPC), an active generation recycled from a spare, and records waiting in the staging WAL (its hot file stalled,
// the promoter held); it ends with a Stop or a power loss. The next life
// has DirectIO the other way: the model holds, writes of every size go
// into the recovered generation, the staged records are promoted into it,
// and the life after that (DirectIO as at first) finds the model again and
// seals every record exactly once.
func TestDirectIOAuditToggleStagedFrozenSpare(t *testing.T) {
	seed := dioSeed(t)
	for _, first := range []bool{true, false} {
		for _, powerLoss := range []bool{false, true} {
			name := fmt.Sprintf("direct-%v-then-%v/stop", first, !first)
			if powerLoss {
				name = fmt.Sprintf("direct-%v-then-%v/powerloss", first, !first)
			}
			t.Run(name, func(t *testing.T) {
				disk := newSimDisk(t, seed)
				cfg := simConfig(t, disk)
				cfg.DirectIO = first
				held := cfg
				held.PromoteInterval = time.Hour
				sizes := dioSizes(cfg.Preallocate)
				l := newDioLog()
				e := start(t, held)
				ctx := ctxFor(t)
				sp := createSpace(t, e, dioSpec.Name, dioSpec.Dims, dioSpec.Bits)
				for range 3 {
					l.put(t, e, sp, sizes[0], true)
					require.NoError(t, e.Flush(ctx, sp), "Flush")
				}
				// A Flush that fails and one that seals two generations
				// leave two spares; the failing Flush after them takes one
				// for its new generation and leaves a frozen one.
				for round := range 2 {
					for _, n := range sizes {
						l.put(t, e, sp, n, true)
					}
					disk.Inject(sim.Fault{Kind: sim.ENOSPC, Path: simDir + "/blocks", Persist: true})
					require.Error(t, e.Flush(ctx, sp), "precondition: the block cannot be written")
					if round == 0 {
						disk.ClearFaults()
					}
					// In the last round the block stays unwritable until
					// the restart: the sealer tries a postponed seal again
					// once there is room, and this test wants the frozen
					// generation at the restart.
					l.burst(t, e, sp, sizes, true)
					if round == 0 {
						require.NoError(t, e.Flush(ctx, sp), "Flush of the frozen and the active generation")
					}
				}
				require.NotEmpty(t, rsSpares(disk), "precondition: a spare on disk: %v", filesUnderDisk(disk, simDir+"/hot/"))
				stallHot(disk, sp)
				for _, n := range sizes[:4] {
					l.put(t, e, sp, n, true)
				}
				disk.ClearFaults()
				disk.Inject(sim.Fault{Kind: sim.ENOSPC, Path: simDir + "/blocks", Persist: true}) // still, see above
				st := e.Stats()
				require.Positive(t, st.StagedPending, "precondition: records wait in the staging WAL: %+v", st)
				var segs int
				for _, f := range filesUnderDisk(disk, hotPrefix(sp)) {
					if strings.HasSuffix(f, ".seg") {
						segs++
					}
				}
				require.GreaterOrEqual(t, segs, 2, "precondition: a frozen and an active generation: %v", filesUnderDisk(disk, simDir+"/hot/"))
				t.Logf("before the restart: hot files %v, stats %+v", filesUnderDisk(disk, simDir+"/hot/"), st)

				other := cfg
				other.DirectIO = !first
				disk.ClearFaults()
				if powerLoss {
					e = edgePowerLoss(t, disk, e, other, seed)
				} else {
					stop(t, e)
					e = start(t, other)
				}
				l.check(t, e, sp, "after the restart with DirectIO turned")
				for _, n := range sizes {
					l.put(t, e, sp, n, true)
				}
				l.check(t, e, sp, "writes after the restart")
				ok := rsUntil(rsPrompt, func() bool { return e.Stats().StagedPending == 0 })
				assert.True(t, ok, "the staged records are promoted: %+v", e.Stats())
				l.check(t, e, sp, "after the promotions")
				stop(t, e)

				e = start(t, cfg)
				n := l.check(t, e, sp, "a further Start, DirectIO as at first")
				assert.Equal(t, l.next, n, "every write is there")
				l.burst(t, e, sp, sizes, true)
				n = l.check(t, e, sp, "a burst in the last life")
				l.sealedCheck(t, e, sp, slDir{dir: cfg.Dir, disk: disk}, n, "sealed")
				stop(t, e)
			})
		}
	}
}
