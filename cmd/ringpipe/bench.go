package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/internal/latency"
)

// benchConfig is what the bench flags say.
type benchConfig struct {
	writers       int
	valueSize     int
	duration      time.Duration
	spaces        int
	async         bool
	backend       string
	dir           string
	sealThreshold int
	directIO      bool
	json          bool
	plot          string
}

// asyncWindow is how many PutAsync tickets one writer keeps in flight with
// -async: 64 writers × 64 fill the engine's default write queue (4096).
const asyncWindow = 64

// progressEvery is how often the progress line is redrawn.
const progressEvery = 500 * time.Millisecond

// stopTimeout bounds Engine.Stop at the end of a run.
const stopTimeout = time.Minute

func parseBench(args []string, stderr io.Writer) (benchConfig, error) {
	var c benchConfig
	fs := flag.NewFlagSet("ringpipe bench", flag.ContinueOnError)
	// The flag package prints a parse error before the usage; fail prints
	// it again after. Discard the first so that it shows once, last, as
	// the errors below do. Usage writes to stderr itself.
	fs.SetOutput(io.Discard)
	fs.IntVar(&c.writers, "writers", 64, "concurrent writers")
	fs.IntVar(&c.valueSize, "value-size", 100, "bytes per value")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "how long to write")
	fs.IntVar(&c.spaces, "spaces", 1, "spaces, written round-robin by writer")
	fs.BoolVar(&c.async, "async", false, fmt.Sprintf("PutAsync with up to %d writes in flight per writer, instead of Put", asyncWindow))
	fs.StringVar(&c.backend, "backend", "uring", "the engine's I/O backend: uring or std")
	fs.StringVar(&c.dir, "dir", "", "run in `DIR` and keep it (default: a temporary directory, removed afterwards)")
	fs.IntVar(&c.sealThreshold, "seal-threshold", 0, "records per hot segment before sealing (0: the engine's default)")
	fs.BoolVar(&c.directIO, "direct-io", false, "Config.DirectIO: write the logs (hot segments, staging WAL) with O_DIRECT")
	fs.BoolVar(&c.json, "json", false, "print the result as one JSON object")
	fs.StringVar(&c.plot, "plot", "", "write the latency CDF to `FILE` (.png or .svg)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: ringpipe bench [flags]\n\nDurable-write benchmark through the public API. Flags:\n")
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, fmt.Errorf("%w: %v", errUsage, err)
	}
	bad := func(format string, args ...any) (benchConfig, error) {
		fs.Usage()
		return c, fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
	}
	switch {
	case fs.NArg() > 0:
		return bad("unexpected argument %q", fs.Arg(0))
	case c.writers < 1:
		return bad("-writers %d: want at least 1", c.writers)
	case c.valueSize < 0:
		return bad("-value-size %d: negative", c.valueSize)
	case c.duration <= 0:
		return bad("-duration %v: want a positive duration", c.duration)
	case c.spaces < 1:
		return bad("-spaces %d: want at least 1", c.spaces)
	case c.backend != "uring" && c.backend != "std":
		return bad("-backend %q: want uring or std", c.backend)
	case c.sealThreshold < 0:
		return bad("-seal-threshold %d: negative", c.sealThreshold)
	}
	if c.plot != "" {
		if ext := strings.ToLower(filepath.Ext(c.plot)); ext != ".png" && ext != ".svg" {
			return bad("-plot %q: want a .png or .svg file", c.plot)
		}
	}
	return c, nil
}

// benchResult is what a run measured; -json prints it as is.
type benchResult struct {
	Writers       int     `json:"writers"`
	ValueSize     int     `json:"value_size"`
	Spaces        int     `json:"spaces"`
	Mode          string  `json:"mode"` // "durable" (Put) or "async" (PutAsync)
	Backend       string  `json:"backend"`
	Kernel        string  `json:"kernel"`
	Dir           string  `json:"dir"`
	DirKept       bool    `json:"dir_kept"`
	SealThreshold int     `json:"seal_threshold"` // 0: the engine's default
	DirectIO      bool    `json:"direct_io"`
	Duration      float64 `json:"duration_s"` // asked for
	Elapsed       float64 `json:"elapsed_s"`  // from the first write to the last acknowledgement
	Interrupted   bool    `json:"interrupted"`

	Records    uint64  `json:"records"` // acknowledged writes
	Errors     uint64  `json:"errors"`  // failed writes
	FirstError string  `json:"first_error,omitempty"`
	Throughput float64 `json:"records_per_s"`

	// Latency is per write as the writers saw it, in microseconds: Put's
	// call to its return, or PutAsync's call to the writer seeing the
	// ticket done.
	Latency latencyJSON `json:"latency_us"`

	// The engine's counters over the run (Stats after minus before).
	DirectWrites   uint64            `json:"direct_writes"`
	StagedWrites   uint64            `json:"staged_writes"`
	Promoted       uint64            `json:"promoted"`
	StagedPending  int               `json:"staged_pending"` // at the end of the load
	SealedBlocks   uint64            `json:"sealed_blocks"`
	Syncs          uint64            `json:"syncs"`
	SyncsPerSecond float64           `json:"syncs_per_s"`
	SyncsPerRecord float64           `json:"syncs_per_record"`
	ShortIORetries uint64            `json:"short_io_retries"`
	ActorRestarts  map[string]uint64 `json:"actor_restarts"`
	Plot           string            `json:"plot,omitempty"`
}

type latencyJSON struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// bench is `ringpipe bench`.
func (a *app) bench(args []string) int {
	c, err := parseBench(args, a.stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return a.fail("bench", err)
	}
	res, plotData, err := a.runBench(c)
	if res != nil {
		if c.plot != "" && plotData != nil && res.Records > 0 {
			if perr := writePlot(c.plot, res, plotData); perr != nil {
				err = errors.Join(err, perr)
			} else {
				res.Plot = c.plot
			}
		}
		if c.json {
			enc := json.NewEncoder(a.stdout)
			enc.SetIndent("", "  ")
			if jerr := enc.Encode(res); jerr != nil {
				err = errors.Join(err, jerr)
			}
		} else {
			printBench(a.stdout, res)
		}
	}
	if err != nil {
		return a.fail("bench", err)
	}
	return exitOK
}

// runBench runs the load. It returns the result whenever the engine
// started (with err set when writes or Stop failed), and the merged
// latency histogram when c.plot asks for one.
func (a *app) runBench(c benchConfig) (*benchResult, *hdr.Histogram, error) {
	res := &benchResult{Writers: c.writers, ValueSize: c.valueSize, Spaces: c.spaces, Mode: "durable",
		Duration: c.duration.Seconds(), SealThreshold: c.sealThreshold, DirectIO: c.directIO,
		ActorRestarts: map[string]uint64{}}
	if c.async {
		res.Mode = "async"
	}
	// From here on an interrupt ends the run, not the process: one that
	// comes while the engine starts ends the load as soon as it begins.
	sigs, stopSigs := a.notify()
	defer stopSigs()
	dir := c.dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "ringpipe-bench-")
		if err != nil {
			return nil, nil, fmt.Errorf("temporary directory: %w", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else {
		res.DirKept = true
	}
	res.Dir = dir
	backend := ringpipe.BackendURing
	if c.backend == "std" {
		backend = ringpipe.BackendStd
	}
	ctx := context.Background()
	e, err := ringpipe.Start(ctx, ringpipe.Config{Dir: dir, Backend: backend, SealThreshold: c.sealThreshold,
		DirectIO: c.directIO})
	if err != nil {
		if backend == ringpipe.BackendURing && strings.Contains(err.Error(), "io_uring") {
			err = fmt.Errorf("%w (without io_uring, try -backend std)", err)
		}
		return nil, nil, fmt.Errorf("start the engine: %w", err) // err names dir
	}
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		sctx, cancel := context.WithTimeout(ctx, stopTimeout)
		defer cancel()
		if err := e.Stop(sctx); err != nil {
			return fmt.Errorf("stop the engine: %w", err)
		}
		return nil
	}
	defer stop() //nolint:errcheck // only on an early return, whose error is reported

	spaces := make([]ringpipe.SpaceID, c.spaces)
	for i := range spaces {
		spaces[i], err = e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: fmt.Sprintf("bench-%d", i), Dims: 1, Bits: 32})
		if err != nil {
			return nil, nil, fmt.Errorf("create space %d: %w", i, err)
		}
	}
	before := e.Stats()
	res.Backend, res.Kernel = before.Backend, before.KernelVersion

	l := &load{e: e, c: c, spaces: spaces, rec: latency.New(), abort: make(chan struct{})}
	if c.plot != "" {
		l.hists = make([]*hdr.Histogram, c.writers)
		for i := range l.hists {
			l.hists[i] = newPlotHist()
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	for w := range c.writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.writer(w)
		}()
	}

	progress := isTerminal(a.stderr)
	var tick <-chan time.Time
	if progress {
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		tick = t.C
	}
	deadline := time.NewTimer(c.duration)
	defer deadline.Stop()
wait:
	for {
		select {
		case <-deadline.C:
			break wait
		case <-sigs:
			res.Interrupted = true
			break wait
		case <-l.abort:
			break wait
		case <-tick:
			el := time.Since(start)
			n := l.done.Load()
			fmt.Fprintf(a.stderr, "\r%6.1fs / %v  %12d records  %10.0f records/s ", el.Seconds(), c.duration, n, float64(n)/el.Seconds())
		}
	}
	// A second interrupt kills: the default action is back.
	stopSigs()
	l.stop.Store(true)
	wg.Wait()
	elapsed := time.Since(start)
	if progress {
		fmt.Fprint(a.stderr, "\r\033[K")
	}
	after := e.Stats()
	stopErr := stop()

	res.Elapsed = elapsed.Seconds()
	res.Records = l.done.Load()
	res.Errors = l.failed.Load()
	if l.firstErr != nil {
		res.FirstError = l.firstErr.Error()
	}
	res.Throughput = float64(res.Records) / elapsed.Seconds()
	s := l.rec.Summary()
	res.Latency = latencyJSON{Count: s.Count, P50: micros(s.P50), P99: micros(s.P99), P999: micros(s.P999), Max: micros(s.Max)}
	res.setStats(before, after)

	var merged *hdr.Histogram
	if l.hists != nil {
		merged = newPlotHist()
		for _, h := range l.hists {
			merged.Merge(h)
		}
	}
	var runErr error
	if res.Errors > 0 {
		runErr = fmt.Errorf("%d %s failed, the first with: %s", res.Errors, plural(int(res.Errors), "write", "writes"), res.FirstError)
	}
	return res, merged, errors.Join(runErr, stopErr)
}

// setStats sets the engine's counters over the run: after minus before.
func (res *benchResult) setStats(before, after ringpipe.Stats) {
	res.DirectWrites = delta(before.DirectWrites, after.DirectWrites)
	res.StagedWrites = delta(before.StagedWrites, after.StagedWrites)
	res.Promoted = delta(before.Promoted, after.Promoted)
	res.StagedPending = after.StagedPending
	res.SealedBlocks = delta(before.SealedBlocks, after.SealedBlocks)
	res.Syncs = delta(before.Syncs, after.Syncs)
	res.SyncsPerSecond = float64(res.Syncs) / res.Elapsed
	if res.Records > 0 {
		res.SyncsPerRecord = float64(res.Syncs) / float64(res.Records)
	}
	res.ShortIORetries = delta(before.ShortIORetries, after.ShortIORetries)
	for name, n := range after.ActorRestarts {
		if d := delta(before.ActorRestarts[name], n); d > 0 {
			res.ActorRestarts[name] = d
		}
	}
}

// delta is after-before for a counter; a counter that went backwards (an
// I/O ring replaced by an actor restart starts again at 0) counts from 0.
func delta(before, after uint64) uint64 {
	if after < before {
		return after
	}
	return after - before
}

// load is the state the writers share.
type load struct {
	e      *ringpipe.Engine
	c      benchConfig
	spaces []ringpipe.SpaceID
	rec    *latency.Recorder
	hists  []*hdr.Histogram // one per writer (owned by it) when plotting; nil otherwise

	stop      atomic.Bool   // set when the writers are to finish
	done      atomic.Uint64 // acknowledged writes
	failed    atomic.Uint64 // failed writes
	abort     chan struct{} // closed on the first failure
	abortOnce sync.Once
	firstErr  error // the first failure; set under abortOnce, read once the writers are done
}

// fail counts a failed write and stops the run: a benchmark whose writes
// fail measures nothing.
func (l *load) fail(err error) {
	l.failed.Add(1)
	l.abortOnce.Do(func() {
		l.firstErr = err
		close(l.abort)
	})
}

// observe records one acknowledged write's latency.
func (l *load) observe(w int, d time.Duration) {
	l.rec.Record(d)
	if l.hists != nil {
		l.hists[w].RecordValue(int64(min(max(d, latency.MinDuration), latency.MaxDuration))) //nolint:errcheck // clamped into range
	}
	l.done.Add(1)
}

// writer w writes to space w%spaces at points w, w+writers, w+2*writers,
// ...: every write goes to a new point, as a log of events would.
func (l *load) writer(w int) {
	ctx := context.Background()
	space := l.spaces[w%len(l.spaces)]
	value := make([]byte, l.c.valueSize)
	for i := range value {
		value[i] = byte(w + i)
	}
	p := ringpipe.Point{uint32(w)}
	next := func() { p[0] += uint32(l.c.writers) }
	if !l.c.async {
		for !l.stop.Load() {
			t0 := time.Now()
			if _, err := l.e.Put(ctx, space, p, value); err != nil {
				l.fail(err)
				return
			}
			l.observe(w, time.Since(t0))
			next()
		}
		return
	}
	type inflight struct {
		t  *ringpipe.Ticket
		t0 time.Time
	}
	// window is a FIFO of the writer's tickets: the oldest is waited for
	// when it is full, and done ones are collected before every write.
	window := make([]inflight, 0, asyncWindow)
	settle := func(f inflight) bool {
		if _, err := f.t.Wait(ctx); err != nil {
			l.fail(err)
			return false
		}
		l.observe(w, time.Since(f.t0))
		return true
	}
	collect := func() bool {
		k := 0
		for ; k < len(window) && isDone(window[k].t); k++ {
			if !settle(window[k]) {
				return false
			}
		}
		window = append(window[:0], window[k:]...)
		return true
	}
	for !l.stop.Load() {
		if !collect() {
			return
		}
		if len(window) == asyncWindow {
			if !settle(window[0]) {
				return
			}
			window = append(window[:0], window[1:]...)
		}
		t0 := time.Now()
		t, err := l.e.PutAsync(ctx, space, p, value)
		if err != nil {
			l.fail(err)
			return
		}
		window = append(window, inflight{t, t0})
		next()
	}
	for _, f := range window {
		if !settle(f) {
			return
		}
	}
}

// isDone reports whether t's write is settled, without waiting.
func isDone(t *ringpipe.Ticket) bool {
	select {
	case <-t.Done():
		return true
	default:
		return false
	}
}

// newPlotHist returns a histogram with internal/latency's range and
// precision (1 ns steps up to 1 min, 3 significant digits).
func newPlotHist() *hdr.Histogram { return hdr.New(1, int64(latency.MaxDuration), 3) }

// notifyInterrupt delivers SIGINT and SIGTERM on a channel until stopped.
func notifyInterrupt() (<-chan os.Signal, func()) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, os.Interrupt, syscall.SIGTERM)
	return c, func() { signal.Stop(c) }
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// printBench prints a result for people.
func printBench(w io.Writer, r *benchResult) {
	call := "Put"
	if r.Mode == "async" {
		call = fmt.Sprintf("PutAsync (%d in flight per writer)", asyncWindow)
	}
	fmt.Fprintf(w, "ringpipe bench: %d writers, %d-byte values, %d %s, %s, %v\n",
		r.Writers, r.ValueSize, r.Spaces, plural(r.Spaces, "space", "spaces"), call, time.Duration(r.Duration*float64(time.Second)))
	fmt.Fprintf(w, "  backend     %s, kernel %s\n", r.Backend, r.Kernel)
	kept := "removed"
	if r.DirKept {
		kept = "kept"
	}
	fmt.Fprintf(w, "  directory   %s (%s)\n", r.Dir, kept)
	note := ""
	if r.Interrupted {
		note = " (interrupted)"
	}
	fmt.Fprintf(w, "  throughput  %s records/s: %s records in %.2f s%s\n",
		group(uint64(r.Throughput+0.5)), group(r.Records), r.Elapsed, note)
	if r.Errors > 0 {
		fmt.Fprintf(w, "  errors      %d, the first: %s\n", r.Errors, r.FirstError)
	}
	lat := r.Latency
	fmt.Fprintf(w, "  latency     p50 %s  p99 %s  p99.9 %s  max %s\n",
		fmtMicros(lat.P50), fmtMicros(lat.P99), fmtMicros(lat.P999), fmtMicros(lat.Max))
	total := r.DirectWrites + r.StagedWrites
	fmt.Fprintf(w, "  writes      %s direct (%s), %s staged (%s), %s promoted, %s pending\n",
		group(r.DirectWrites), pct(r.DirectWrites, total), group(r.StagedWrites), pct(r.StagedWrites, total),
		group(r.Promoted), group(uint64(r.StagedPending)))
	fmt.Fprintf(w, "  sealed      %d %s\n", r.SealedBlocks, plural(int(r.SealedBlocks), "block", "blocks"))
	fmt.Fprintf(w, "  syncs       %s/s (%s in all, %.3f per record)\n",
		group(uint64(r.SyncsPerSecond+0.5)), group(r.Syncs), r.SyncsPerRecord)
	if r.ShortIORetries > 0 {
		fmt.Fprintf(w, "  short I/O   %d retries\n", r.ShortIORetries)
	}
	if len(r.ActorRestarts) > 0 {
		names := make([]string, 0, len(r.ActorRestarts))
		for n := range r.ActorRestarts {
			names = append(names, n)
		}
		sort.Strings(names)
		var parts []string
		for _, n := range names {
			parts = append(parts, fmt.Sprintf("%s %d", n, r.ActorRestarts[n]))
		}
		fmt.Fprintf(w, "  restarts    %s\n", strings.Join(parts, ", "))
	}
	if r.Plot != "" {
		fmt.Fprintf(w, "  plot        %s\n", r.Plot)
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func pct(n, total uint64) string {
	if total == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(total))
}

// fmtMicros prints a latency given in µs as µs, ms or s with three
// significant digits.
func fmtMicros(us float64) string {
	unit := "µs"
	for _, u := range []string{"ms", "s"} {
		if us < 999.5 {
			break
		}
		us /= 1000
		unit = u
	}
	switch {
	case us >= 99.95:
		return fmt.Sprintf("%.0f %s", us, unit)
	case us >= 9.995:
		return fmt.Sprintf("%.1f %s", us, unit)
	}
	return fmt.Sprintf("%.2f %s", us, unit)
}

// group prints n with thousands separators.
func group(n uint64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
