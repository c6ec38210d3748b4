package durability

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// Suite 1 of issue 5: the seeded power-loss simulation.
//
// Each seed is one directory on a simulated disk followed through many
// power losses: writers run random workloads (puts, deletes, async bursts,
// Sync, Flush; three spaces of different shapes; values of 0 B to 64 KiB),
// the power is cut at a random operation index while writes are in flight
// (sometimes during the recovery that follows instead), the engine is
// started again, and the Oracle checks what recovery found; then the
// workload goes on with the recovered engine.
//
// CI form: plSeeds seeds × plCycles power losses in the writes phase,
// plus the cuts during recovery: about 24,000 power losses, ~90 s of CPU.
// With -race a cycle costs about six times as much (22 ms of CPU against
// 3.7), so under -race plSeedsRace seeds (about 2,500 power losses)
// check the engine's synchronisation, and CI runs the full form (plSeeds)
// without -race as a step of its own (.ci/run). Soak form (RINGPIPE_SOAK=1): seeds
// from plSoakFirst until RINGPIPE_SOAK_DURATION passes, or plSoakSeeds of
// them. One seed, with its engine log on failure: go test -run
// 'TestPowerLoss$' ./durability -seed N -v.

const (
	plSeeds     = 1000      // CI: seeds
	plSeedsRace = 100       // CI with -race: seeds
	plCycles    = 20        // writes-phase power losses per seed
	plSoakSeeds = 1_000_000 // soak: seeds, unless the duration ends first
	plFirstSeed = 1         // the CI seeds are plFirstSeed, plFirstSeed+1, ...
	plSoakFirst = 10000     // the soak's seeds start here, after the CI's
)

// plTotals are the suite's figures, summed over seeds.
type plTotals struct {
	mu               sync.Mutex
	seeds            int
	cuts             int // power losses, all kinds
	recoveryCuts     int // of them, during a Start
	idleCuts         int // of them, after the writers had finished (no write in flight)
	recoveryFailures int // Start failing (with no cut during it)
	ops              int
	figures          Figures
	failed           []int64 // seeds that failed
}

func (p *plTotals) add(r plResult) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seeds++
	p.cuts += r.cuts
	p.recoveryCuts += r.recoveryCuts
	p.idleCuts += r.idleCuts
	p.recoveryFailures += r.recoveryFailures
	p.ops += r.ops
	p.figures.Add(r.figures)
	if r.failed {
		p.failed = append(p.failed, r.seed)
	}
}

func TestPowerLoss(t *testing.T) {
	n := int64(plSeeds)
	if plRace {
		n = plSeedsRace
	}
	seeds := seedRange(plFirstSeed, n)
	var deadline time.Time
	if soak() && *seedFlag == 0 {
		seeds = seedRange(plSoakFirst, plSoakSeeds)
		deadline = soakDeadline(t)
	}
	var tot plTotals
	t0, cpu0 := time.Now(), cpuTime()
	// Seeds run several at a time: much of a cycle is goroutine hand-offs
	// inside the engine, which leave the cores idle.
	parallel := 4
	next := make(chan int64)
	var wg sync.WaitGroup
	var stop atomic.Bool
	for range parallel {
		wg.Go(func() {
			for seed := range next {
				r := powerLossSeed(t, seed, plCycles)
				tot.add(r)
				if r.failed {
					t.Errorf("seed %d failed; replay: go test -run 'TestPowerLoss$' ./durability -seed %d -v", seed, seed)
					stop.Store(true)
				}
			}
		})
	}
	for _, s := range seeds {
		if stop.Load() || (!deadline.IsZero() && time.Now().After(deadline)) {
			break
		}
		next <- s
	}
	close(next)
	wg.Wait()
	el, cpu := time.Since(t0), cpuTime()-cpu0
	f := tot.figures
	if len(seeds) > 0 {
		t.Logf("seeds %d..%d (of them run: %d; replay one: -seed N)", seeds[0], seeds[len(seeds)-1], tot.seeds)
	}
	t.Logf("power-loss simulation: %d seeds, %d power losses (%d during recovery, %d with no write in flight), "+
		"%d operations, in %v (%.1f ms per power loss; CPU %v, %.1f ms per power loss)",
		tot.seeds, tot.cuts, tot.recoveryCuts, tot.idleCuts, tot.ops, el.Round(time.Millisecond),
		float64(el.Microseconds())/1000/float64(max(tot.cuts, 1)), cpu.Round(time.Millisecond),
		float64(cpu.Microseconds())/1000/float64(max(tot.cuts, 1)))
	t.Logf("acknowledged lost %d, duplicated %d, half-applied %d, recovery failures %d; phantom %d, "+
		"revision errors %d, read errors %d, scan mismatches %d",
		f.AckedLost, f.Duplicated, f.HalfApplied, tot.recoveryFailures, f.Phantom, f.RevisionErrors,
		f.ReadErrors, f.ScanMismatches)
	t.Logf("checked: %d recoveries, %d points, writes acknowledged %d, maybe found present %d, maybe found absent %d, "+
		"never submitted %d", f.Checks, f.Points, f.Acked, f.MaybePresent, f.MaybeAbsent, f.Never)
	if len(tot.failed) > 0 {
		t.Logf("failed seeds: %v", tot.failed)
	}
}

// plResult is what one seed did.
type plResult struct {
	seed                         int64
	cuts, recoveryCuts, idleCuts int
	recoveryFailures, ops        int
	figures                      Figures
	failed                       bool
}

// plConfig draws the engine configuration of a seed.
func plConfig(seed int64, disk *sim.Disk) ringpipe.Config {
	rng := newRand(seed)
	cfg := SimConfig(disk)
	cfg.SealThreshold = []int{8, 32, 128}[rng.Intn(3)]
	cfg.BatchSize = []int{1, 4, 32}[rng.Intn(3)]
	cfg.QueueCapacity = 64
	// Odd seeds write their logs O_DIRECT: padded batches in whole
	// sectors, which a power loss tears sector by sector.
	cfg.DirectIO = seed%2 == 1
	return cfg
}

// powerLossSeed runs one seed: cycles power losses, each followed by a
// recovery and a check. Failures are logged with t.Logf (the caller fails
// the test) so that seeds may run concurrently.
func powerLossSeed(t *testing.T, seed int64, cycles int) plResult {
	return powerLossSeedWith(t, seed, cycles, nil)
}

// powerLossSeedWith is powerLossSeed with the seed's Config changed by
// change (when not nil).
func powerLossSeedWith(t *testing.T, seed int64, cycles int, change func(*ringpipe.Config)) (res plResult) {
	res.seed = seed
	logf := func(format string, args ...any) {
		t.Logf("seed %d: "+format, append([]any{seed}, args...)...)
	}
	fail := func(format string, args ...any) {
		res.failed = true
		logf(format, args...)
	}
	rng := newRand(seed)
	disk := NewSimDisk(seed)
	c := newCutter(disk, seed)
	cfg := c.config(plConfig(seed, disk))
	if change != nil {
		change(&cfg)
	}
	// The engine's log of the current cycle, kept for a failure's report.
	var logBuf syncBuffer
	cfg.Logger = zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
		zapcore.AddSync(&logBuf), zap.InfoLevel))
	fail = func(format string, args ...any) {
		res.failed = true
		path := filepath.Join(os.TempDir(), fmt.Sprintf("ringpipe-powerloss-seed%d.log", seed))
		if err := os.WriteFile(path, logBuf.Bytes(), 0o644); err == nil {
			format += "; engine log of the cycle in " + path
		}
		logf(format, args...)
	}
	o := NewOracle()

	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	e, err := ringpipe.Start(ctx, cfg)
	if err != nil {
		cancel()
		fail("first Start: %v", err)
		return res
	}
	ids, err := CreateSpaces(ctx, e, o, Specs)
	cancel()
	if err != nil {
		kill(e)
		fail("%v", err)
		return res
	}
	// Slow hot-segment syncs (virtual time) for some cycles: a write that
	// misses its deadline goes to the staging WAL, so the WAL, promotion
	// and WAL retirement are cut too.
	slowHot := func() {
		if p := []float64{0, 0.05, 0.3}[rng.Intn(3)]; p > 0 {
			disk.Inject(sim.Fault{Kind: sim.Delay, Delay: 3 * time.Millisecond, Prob: p, Persist: true,
				Path: simDir + "/hot/", Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync}})
		}
	}
	var recoveryOps uint64 = 50
	for cycle := 0; cycle < cycles; cycle++ {
		logBuf.Reset()
		// The writes, and a cut at a random operation while they run.
		slowHot()
		writers := 1 + rng.Intn(4)
		span := uint64(4 + rng.Intn(120))
		if rng.Intn(8) == 0 {
			span = uint64(100 + rng.Intn(1000)) // now and then a long stretch: more seals, a compaction
		}
		fired := c.arm(disk.OpCount() + 1 + uint64(rng.Int63n(int64(span))))
		w := &Workload{Engine: e, Oracle: o, Spaces: ids, Halt: fired}
		// The writers' calls end with the process: their context is
		// cancelled at the cut. (Without that, a Sync or Flush in flight
		// at the cut would hang Stop: see TestEngineBugStopHangsOnSync.)
		wctx, wcancel := context.WithTimeout(context.Background(), opTimeout)
		var wg sync.WaitGroup
		var ops atomic.Int64
		for i := range writers {
			wrng := newRand(seed*1_000_003 + int64(cycle)*101 + int64(i))
			wg.Go(func() {
				st := w.Run(wctx, wrng, 10+int(span))
				ops.Add(int64(st.Ops))
			})
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		hung := false
		select {
		case <-fired:
		case <-done:
			// The writers finished first: cut now, nothing in flight.
			if !c.disarm() {
				c.now()
				res.idleCuts++
			}
		case <-wctx.Done():
			hung = true
			fail("cycle %d: the writers made no progress for %v (the cut at operation %d never came, "+
				"the disk is at %d): %s", cycle, opTimeout, c.at, disk.OpCount(), dumpGoroutines(seed))
			c.disarm()
			c.now()
		}
		res.cuts++
		wcancel()
		kill(e)
		<-done
		res.ops += int(ops.Load())
		if hung {
			return res
		}

		// Recovery; a fifth of the time the power fails during it too.
		for attempt := 0; ; attempt++ {
			var fired <-chan struct{}
			if attempt < 3 && rng.Intn(5) == 0 {
				fired = c.arm(disk.OpCount() + 1 + uint64(rng.Int63n(int64(recoveryOps+1))))
			}
			before := disk.OpCount()
			ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			e, err = ringpipe.Start(ctx, cfg)
			cancel()
			if fired != nil && (c.disarm() || c.isFired()) {
				// Cut during Start (or just as it returned): a dead
				// process; the next attempt must not care.
				if err == nil {
					kill(e)
				}
				res.cuts++
				res.recoveryCuts++
				continue
			}
			if err != nil {
				res.recoveryFailures++
				fail("cycle %d: Start after a power loss: %v", cycle, err)
				return res
			}
			recoveryOps = disk.OpCount() - before
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		rep := o.Check(ctx, e)
		cancel()
		res.figures.Add(rep.Figures)
		if err := rep.Err(); err != nil {
			kill(e)
			fail("cycle %d (after %d power losses, the last one: %v): %v", cycle, res.cuts, c.report.Fates, err)
			return res
		}
	}
	// A clean Stop at the end.
	ctx, cancel = context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := e.Stop(ctx); err != nil {
		fail("Stop: %v", err)
	}
	return res
}

// cpuTime returns the CPU time (user and system) the process has used: on
// a shared machine a suite's cost, where wall time is the machine's load.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// syncBuffer is a bytes.Buffer safe for concurrent use: an engine's log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// dumpGoroutines writes every goroutine's stack to a file named after seed
// in the temporary directory (a hang's evidence) and says where.
func dumpGoroutines(seed int64) string {
	return dumpGoroutinesTo(fmt.Sprintf("ringpipe-hang-seed%d.txt", seed))
}

// dumpGoroutinesTo writes every goroutine's stack to the file name in the
// temporary directory and says where ("goroutines in PATH"), or why not.
func dumpGoroutinesTo(name string) string {
	path := filepath.Join(os.TempDir(), name)
	f, err := os.Create(path)
	if err != nil {
		return fmt.Sprintf("(goroutine dump: %v)", err)
	}
	defer f.Close()
	if err := pprof.Lookup("goroutine").WriteTo(f, 2); err != nil {
		return fmt.Sprintf("(goroutine dump: %v)", err)
	}
	return "goroutines in " + path
}
