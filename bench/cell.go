package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"sync"
	"sync/atomic"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"
)

// Histogram geometry: 1 ns to 1 min at 3 significant digits (at most 0.1%
// error), the same as the root's internal/latency, so that the numbers
// compare. Latencies above a minute are recorded as a minute.
const (
	histMin     = 1
	histMax     = int64(time.Minute)
	histSigFigs = 3
)

func newHist() *hdr.Histogram { return hdr.New(histMin, histMax, histSigFigs) }

// cellSpec is one cell: a target at a writer count, in one round.
type cellSpec struct {
	target  target
	writers int
	round   int
}

// cellResult is what one cell measured.
type cellResult struct {
	Target  string `json:"target"`
	Writers int    `json:"writers"`
	Round   int    `json:"round"`
	// Skipped says why the cell did not run (target unavailable).
	Skipped string `json:"skipped,omitempty"`

	// Records completed inside the measured window, and its length.
	Records uint64  `json:"records"`
	Seconds float64 `json:"seconds"`
	RecsPS  float64 `json:"recs_per_s"`
	Lat     latJSON `json:"latency"`
	// CPU is the process's user+system CPU time over the window, as a
	// share of all cores (1.0: every core busy); MachineCPU is the same
	// for the whole machine from /proc/stat (kernel threads included).
	CPU        float64 `json:"cpu"`
	MachineCPU float64 `json:"machine_cpu"`
	// PerRec are the store's counters over the window divided by Records
	// (e.g. ringpipe's syncs and staged writes per record).
	PerRec map[string]float64 `json:"per_record,omitempty"`
	// Gauges are the store's own latency figures at the window's end
	// (ringpipe's Stats, cumulative since the store opened), in µs.
	Gauges map[string]float64 `json:"gauges,omitempty"`

	hist *hdr.Histogram // every write that started in the window
}

// latJSON is a latency summary in nanoseconds.
type latJSON struct {
	Count uint64 `json:"count"`
	Mean  int64  `json:"mean_ns"`
	P50   int64  `json:"p50_ns"`
	P90   int64  `json:"p90_ns"`
	P99   int64  `json:"p99_ns"`
	P999  int64  `json:"p999_ns"`
	Max   int64  `json:"max_ns"`
}

func summarize(h *hdr.Histogram) latJSON {
	return latJSON{
		Count: uint64(h.TotalCount()),
		Mean:  int64(h.Mean()),
		P50:   h.ValueAtQuantile(50),
		P90:   h.ValueAtQuantile(90),
		P99:   h.ValueAtQuantile(99),
		P999:  h.ValueAtQuantile(99.9),
		Max:   h.Max(),
	}
}

// runner runs cells; it keeps one histogram per writer slot across cells
// (about 220 KB each) instead of allocating them per cell.
type runner struct {
	cfg   config
	hists []*hdr.Histogram
}

// value fills buf with the value of record i: i in its first 8 bytes, a
// fixed pattern after (as the root's benchmarks write).
func value(buf []byte, i uint64) {
	if len(buf) >= 8 {
		binary.BigEndian.PutUint64(buf, i)
	}
	for j := 8; j < len(buf); j++ {
		buf[j] = byte(j)
	}
}

// run runs one cell on a fresh directory: warm-up, then the measured
// window. Writers start an op only before the window ends; the window's
// throughput counts the ops that completed inside it, its latencies are
// those of the ops that started inside it.
func (r *runner) run(ctx context.Context, c cellSpec, profile, tracePath string) (cellResult, error) {
	res := cellResult{Target: c.target.name, Writers: c.writers, Round: c.round}
	dir, err := os.MkdirTemp(r.cfg.dir, "ringpipe-bench-"+c.target.name+"-")
	if err != nil {
		return res, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(dir)

	s, err := c.target.open(ctx, dir, r.cfg)
	if errors.Is(err, errUnavailable) {
		res.Skipped = err.Error()
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("open %s: %w", c.target.name, err)
	}
	err = r.measure(ctx, s, c, &res, profile, tracePath)
	cctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if cerr := s.close(cctx); cerr != nil && err == nil {
		err = fmt.Errorf("close %s: %w", c.target.name, cerr)
	}
	return res, err
}

func (r *runner) measure(ctx context.Context, s store, c cellSpec, res *cellResult, profile, tracePath string) error {
	for len(r.hists) < c.writers {
		r.hists = append(r.hists, newHist())
	}
	for _, h := range r.hists[:c.writers] {
		h.Reset()
	}
	runtime.GC() // the previous cell's garbage is not this cell's cost

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next      atomic.Uint64 // the next key
		completed atomic.Uint64 // ops that completed inside the window
		wg        sync.WaitGroup
		errOnce   sync.Once
		firstErr  error
	)
	start := time.Now()
	from := start.Add(r.cfg.warmup)
	to := from.Add(r.cfg.duration)
	for w := range c.writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := r.hists[w]
			buf := make([]byte, r.cfg.valueSize)
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(to) {
					return
				}
				i := next.Add(1) - 1
				value(buf, i)
				if err := s.put(ctx, i, buf); err != nil {
					errOnce.Do(func() {
						firstErr = fmt.Errorf("%s, %d writers: write %d: %w", c.target.name, c.writers, i, err)
						cancel()
					})
					return
				}
				t1 := time.Now()
				if !t0.Before(from) {
					// NB: the error is impossible: values are clamped into range.
					_ = h.RecordValue(min(int64(t1.Sub(t0)), histMax))
				}
				if !t1.Before(from) && t1.Before(to) {
					completed.Add(1)
				}
			}
		}()
	}

	// The window's edges, for the counters, the CPU usage and the profile.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var before, after snapshot
	edge := func(at time.Time) bool {
		t := time.NewTimer(time.Until(at))
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-done:
			// The writers stop at the window's end, so done and the
			// timer can be ready together.
			return !time.Now().Before(at)
		}
	}
	var perr error
	stopProfile := func() error { return nil }
	stopTrace := func() error { return nil }
	if edge(from) {
		before = takeSnapshot(s)
		if profile != "" {
			stopProfile, perr = startProfile(profile)
		}
		if tracePath != "" && perr == nil {
			stopTrace, perr = startTrace(tracePath)
		}
		if edge(to) {
			after = takeSnapshot(s)
			if g, ok := s.(gauger); ok {
				res.Gauges = g.gauges()
			}
		}
	}
	if err := stopTrace(); err != nil && perr == nil {
		perr = err
	}
	if err := stopProfile(); err != nil && perr == nil {
		perr = err
	}
	<-done
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if perr != nil {
		return perr
	}
	if after.wall.IsZero() {
		return fmt.Errorf("%s, %d writers: writers stopped before the window ended", c.target.name, c.writers)
	}

	h := newHist()
	for _, wh := range r.hists[:c.writers] {
		h.Merge(wh)
	}
	res.hist = h
	res.Records = completed.Load()
	res.Seconds = to.Sub(from).Seconds()
	res.RecsPS = float64(res.Records) / res.Seconds
	res.Lat = summarize(h)
	if wall := after.wall.Sub(before.wall).Seconds(); wall > 0 {
		res.CPU = (after.cpu - before.cpu).Seconds() / wall / float64(runtime.NumCPU())
	}
	if dt := after.machTotal - before.machTotal; dt > 0 {
		res.MachineCPU = float64(after.machBusy-before.machBusy) / float64(dt)
	}
	if before.counters != nil && res.Records > 0 {
		res.PerRec = map[string]float64{}
		for k, v := range after.counters {
			res.PerRec[k] = (v - before.counters[k]) / float64(res.Records)
		}
	}
	return nil
}

// startProfile starts a CPU profile into path and returns what stops it
// and closes the file.
func startProfile(path string) (stop func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return func() error { return nil }, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return func() error { return nil }, fmt.Errorf("cpu profile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		return nil
	}, nil
}

// startTrace starts an execution trace (go tool trace) into path and
// returns what stops it and closes the file.
func startTrace(path string) (stop func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return func() error { return nil }, fmt.Errorf("trace: %w", err)
	}
	if err := trace.Start(f); err != nil {
		f.Close()
		return func() error { return nil }, fmt.Errorf("trace: %w", err)
	}
	return func() error {
		trace.Stop()
		if err := f.Close(); err != nil {
			return fmt.Errorf("trace: %w", err)
		}
		return nil
	}, nil
}

// snapshot is the state at one edge of a cell's window.
type snapshot struct {
	wall                time.Time
	cpu                 time.Duration // process user+system CPU
	machBusy, machTotal uint64        // /proc/stat jiffies, all CPUs
	counters            map[string]float64
}

func takeSnapshot(s store) snapshot {
	sn := snapshot{wall: time.Now(), counters: s.counters()}
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
		sn.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	sn.machBusy, sn.machTotal = machineJiffies()
	return sn
}
