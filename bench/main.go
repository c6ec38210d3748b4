// Command bench runs one durable small-write load side by side against
// ringpipe (io_uring and std backends), Pebble with Sync writes, a minimal
// group-commit log and a write+fdatasync-per-record loop, and prints a
// Markdown table of throughput and latency percentiles with each target's
// ratio to ringpipe-uring. See README.md.
//
//	cd bench && go run . [-writers 1,16,64,256] [-duration 5s] [-rounds 2] [-json FILE] [-plot FILE.png]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ringpipe/ringpipe"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// config is a parsed command line.
type config struct {
	writers    []int
	targets    []target
	duration   time.Duration
	warmup     time.Duration
	rounds     int
	valueSize  int
	dir        string
	jsonPath   string
	plotPath   string
	cpuprofile string
	tracePath  string
	quiet      bool
	// ringpipe holds the engine's tuning flags; zero fields are the
	// engine's defaults (the comparison's setting).
	ringpipe ringpipe.Config
}

// Short mode's defaults: the whole comparison end to end in a few seconds.
const (
	shortWriters  = "1,4"
	shortDuration = 200 * time.Millisecond
	shortWarmup   = 50 * time.Millisecond
)

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var names, defaults []string
	for _, t := range allTargets {
		names = append(names, t.name)
		if !t.experiment {
			defaults = append(defaults, t.name)
		}
	}
	writers := fs.String("writers", "1,16,64,256", "comma-separated concurrent writer counts")
	targets := fs.String("targets", strings.Join(defaults, ","), "comma-separated targets to run, of: "+strings.Join(names, ", ")+
		" (the default leaves out the experiments)")
	duration := fs.Duration("duration", 5*time.Second, "measured time per cell (one target at one writer count in one round)")
	warmup := fs.Duration("warmup", time.Second, "unmeasured writes before each cell's measured time")
	rounds := fs.Int("rounds", 2, "rounds; in each, the targets run one after another at each writer count")
	valueSize := fs.Int("value-size", 100, "bytes per value")
	dir := fs.String("dir", os.TempDir(), "parent of the cells' fresh temporary directories (the disk under test)")
	short := fs.Bool("short", false, "quick check: writers "+shortWriters+", "+shortDuration.String()+" per cell, "+shortWarmup.String()+" warm-up, 1 round (explicit flags win)")
	jsonPath := fs.String("json", "", "write the raw numbers (every cell, the summary, the targets) as JSON to `FILE`")
	plotPath := fs.String("plot", "", "plot throughput against writers per target to `FILE` (.png, .svg or .pdf)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of each cell's measured window to `FILE` (with -<target>-w<N>-r<round> before the extension when more than one cell runs)")
	tracePath := fs.String("trace", "", "write an execution trace (go tool trace) of each cell's measured window to `FILE` (named per cell like -cpuprofile)")
	quiet := fs.Bool("q", false, "no progress lines on stderr")
	var rp ringpipe.Config
	fs.IntVar(&rp.BatchSize, "ringpipe-batch-size", 0, "ringpipe Config.BatchSize (0: the engine's default)")
	fs.DurationVar(&rp.BatchTimeout, "ringpipe-batch-timeout", 0, "ringpipe Config.BatchTimeout (0: the engine's default)")
	fs.IntVar(&rp.SealThreshold, "ringpipe-seal-threshold", 0, "ringpipe Config.SealThreshold in records (0: the engine's default)")
	fs.Int64Var(&rp.SealBytes, "ringpipe-seal-bytes", 0, "ringpipe Config.SealBytes (0: the engine's default)")
	fs.Int64Var(&rp.Preallocate, "ringpipe-preallocate", 0, "ringpipe Config.Preallocate in bytes per log file (0: the engine's default)")
	fs.DurationVar(&rp.DirectWriteTimeout, "ringpipe-direct-write-timeout", 0, "ringpipe Config.DirectWriteTimeout (0: the engine's default)")
	fs.BoolVar(&rp.DirectIO, "ringpipe-direct-io", false, "ringpipe Config.DirectIO: hot segments and the staging WAL written O_DIRECT")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: go run . [flags]\n\nTargets:")
		for _, t := range allTargets {
			fmt.Fprintf(fs.Output(), "  %-15s %s\n", t.name, t.desc)
		}
		fmt.Fprintln(fs.Output(), "\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *short {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["writers"] {
			*writers = shortWriters
		}
		if !set["duration"] {
			*duration = shortDuration
		}
		if !set["warmup"] {
			*warmup = shortWarmup
		}
		if !set["rounds"] {
			*rounds = 1
		}
	}

	cfg := config{
		duration:   *duration,
		warmup:     *warmup,
		rounds:     *rounds,
		valueSize:  *valueSize,
		dir:        *dir,
		jsonPath:   *jsonPath,
		plotPath:   *plotPath,
		cpuprofile: *cpuprofile,
		tracePath:  *tracePath,
		quiet:      *quiet,
		ringpipe:   rp,
	}
	for _, s := range strings.Split(*writers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 1<<16 {
			return config{}, fmt.Errorf("-writers %q: %q is not a writer count (1..65536)", *writers, s)
		}
		if !slices.Contains(cfg.writers, n) {
			cfg.writers = append(cfg.writers, n)
		}
	}
	slices.Sort(cfg.writers)
	want := map[string]bool{}
	for _, s := range strings.Split(*targets, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(names, s) {
			return config{}, fmt.Errorf("-targets: unknown target %q (have %s)", s, strings.Join(names, ", "))
		}
		want[s] = true
	}
	for _, t := range allTargets {
		if want[t.name] {
			cfg.targets = append(cfg.targets, t)
		}
	}
	switch {
	case cfg.duration <= 0:
		return config{}, fmt.Errorf("-duration %s: must be positive", cfg.duration)
	case cfg.warmup < 0:
		return config{}, fmt.Errorf("-warmup %s: must not be negative", cfg.warmup)
	case cfg.rounds < 1:
		return config{}, fmt.Errorf("-rounds %d: must be at least 1", cfg.rounds)
	case cfg.valueSize < 1 || cfg.valueSize > 1<<20:
		return config{}, fmt.Errorf("-value-size %d: must be 1..1048576 (ringpipe's default MaxValueSize)", cfg.valueSize)
	}
	if st, err := os.Stat(cfg.dir); err != nil || !st.IsDir() {
		return config{}, fmt.Errorf("-dir %s: not a directory", cfg.dir)
	}
	if cfg.plotPath != "" {
		if err := checkPlotPath(cfg.plotPath); err != nil {
			return config{}, err
		}
	}
	return cfg, nil
}

// run is the program: parse args, run every cell, report.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	m := describeMachine(cfg.dir)
	m.sampleLoad(0)
	cells, err := runCells(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	m.sampleLoad(1)
	rows := summarizeCells(cfg, cells)
	goals := judgeGoals(rows)
	printReport(stdout, cfg, m, rows, goals)
	if cfg.jsonPath != "" {
		if err := writeJSON(cfg.jsonPath, cfg, m, cells, rows, goals); err != nil {
			return err
		}
	}
	if cfg.plotPath != "" {
		if err := writePlot(cfg.plotPath, cfg, m, rows); err != nil {
			return err
		}
	}
	return nil
}

// runCells runs every cell: at each writer count, rounds × every target,
// the targets alternating (each round starts one target later, so no
// target always follows the same one).
func runCells(ctx context.Context, cfg config, stderr io.Writer) ([]cellResult, error) {
	r := &runner{cfg: cfg}
	total := len(cfg.writers) * cfg.rounds * len(cfg.targets)
	var cells []cellResult
	skipped := map[string]bool{}
	for _, w := range cfg.writers {
		for round := range cfg.rounds {
			for k := range cfg.targets {
				t := cfg.targets[(k+round)%len(cfg.targets)]
				c := cellSpec{target: t, writers: w, round: round}
				if skipped[t.name] {
					cells = append(cells, cellResult{Target: t.name, Writers: w, Round: round, Skipped: "unavailable"})
					continue
				}
				profile, tr := "", ""
				if cfg.cpuprofile != "" {
					profile = profilePath(cfg.cpuprofile, c, total)
				}
				if cfg.tracePath != "" {
					tr = profilePath(cfg.tracePath, c, total)
				}
				res, err := r.run(ctx, c, profile, tr)
				if err != nil {
					return nil, err
				}
				cells = append(cells, res)
				if res.Skipped != "" {
					skipped[t.name] = true
				}
				if !cfg.quiet {
					fmt.Fprintf(stderr, "[%d/%d] %s\n", len(cells), total, progressLine(res))
				}
			}
		}
	}
	return cells, nil
}

func progressLine(c cellResult) string {
	if c.Skipped != "" {
		return fmt.Sprintf("%d writers, %s, round %d: skipped: %s", c.Writers, c.Target, c.Round+1, c.Skipped)
	}
	return fmt.Sprintf("%d writers, %s, round %d: %s recs/s, p50 %s µs, p99 %s µs, CPU %.0f%%",
		c.Writers, c.Target, c.Round+1, thousands(c.RecsPS), micros(c.Lat.P50), micros(c.Lat.P99), 100*c.CPU)
}

// profilePath is where cell c's CPU profile goes: path itself when it is
// the only cell, else path with -<target>-w<N>-r<round> before the
// extension.
func profilePath(path string, c cellSpec, cells int) string {
	if cells == 1 {
		return path
	}
	ext := filepath.Ext(path)
	return fmt.Sprintf("%s-%s-w%d-r%d%s", strings.TrimSuffix(path, ext), c.target.name, c.writers, c.round+1, ext)
}
