package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ringpipe/ringpipe"
)

// summaryRow is one (writers, target) pair over all its rounds: the
// records and seconds of the rounds added up, the latency histograms
// merged.
type summaryRow struct {
	Writers int     `json:"writers"`
	Target  string  `json:"target"`
	Skipped string  `json:"skipped,omitempty"`
	Rounds  int     `json:"rounds"`
	Records uint64  `json:"records"`
	Seconds float64 `json:"seconds"`
	RecsPS  float64 `json:"recs_per_s"`
	// RoundRecsPS is each round's throughput, to judge the noise.
	RoundRecsPS []float64          `json:"round_recs_per_s"`
	Lat         latJSON            `json:"latency"`
	CPU         float64            `json:"cpu"`
	MachineCPU  float64            `json:"machine_cpu"`
	PerRec      map[string]float64 `json:"per_record,omitempty"`
	// Gauges are the last round's (see cellResult.Gauges).
	Gauges map[string]float64 `json:"gauges,omitempty"`
	// ThrRatio is RecsPS over the reference target's at the same writer
	// count, P99Ratio the same for p99 latency; 0 when undefined.
	ThrRatio float64 `json:"recs_ratio_vs_ref"`
	P99Ratio float64 `json:"p99_ratio_vs_ref"`
}

// summarize folds the cells into one row per (writers, target), in the
// order of cfg.writers and cfg.targets.
func summarizeCells(cfg config, cells []cellResult) []summaryRow {
	var rows []summaryRow
	for _, w := range cfg.writers {
		var ref *summaryRow
		first := len(rows)
		for _, t := range cfg.targets {
			row := summaryRow{Writers: w, Target: t.name}
			h := newHist()
			var perRecW map[string]float64
			for _, c := range cells {
				if c.Writers != w || c.Target != t.name {
					continue
				}
				if c.Skipped != "" {
					row.Skipped = c.Skipped
					continue
				}
				row.Rounds++
				row.Records += c.Records
				row.Seconds += c.Seconds
				row.RoundRecsPS = append(row.RoundRecsPS, c.RecsPS)
				row.CPU += c.CPU * c.Seconds
				row.MachineCPU += c.MachineCPU * c.Seconds
				if c.hist != nil {
					h.Merge(c.hist)
				}
				if c.Gauges != nil {
					row.Gauges = c.Gauges
				}
				for k, v := range c.PerRec {
					if perRecW == nil {
						perRecW = map[string]float64{}
					}
					perRecW[k] += v * float64(c.Records)
				}
			}
			if row.Rounds > 0 {
				row.Skipped = ""
				row.RecsPS = float64(row.Records) / row.Seconds
				row.CPU /= row.Seconds
				row.MachineCPU /= row.Seconds
				row.Lat = summarize(h)
				if row.Records > 0 && perRecW != nil {
					row.PerRec = map[string]float64{}
					for k, v := range perRecW {
						row.PerRec[k] = v / float64(row.Records)
					}
				}
			}
			rows = append(rows, row)
		}
		for i := first; i < len(rows); i++ {
			if rows[i].Target == refTarget && rows[i].measured() {
				ref = &rows[i]
			}
		}
		if ref == nil {
			continue
		}
		for i := first; i < len(rows); i++ {
			r := &rows[i]
			if !r.measured() {
				continue
			}
			r.ThrRatio = ratio(r.RecsPS, ref.RecsPS)
			r.P99Ratio = ratio(float64(r.Lat.P99), float64(ref.Lat.P99))
		}
	}
	return rows
}

// measured says whether the row has numbers to compare: it ran, and
// writes completed and started inside its windows (a disk stall longer
// than a short window can leave a cell with none).
func (r *summaryRow) measured() bool {
	return r.Rounds > 0 && r.Records > 0 && r.Lat.Count > 0
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// goal is one of issue 6's targets, judged on a run.
type goal struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Op    string  `json:"op"` // ">=" or "<="
	Limit float64 `json:"limit"`
	Met   bool    `json:"met"`
	// Missing says why the goal could not be judged (a cell not run).
	Missing string `json:"missing,omitempty"`
}

// judgeGoals evaluates issue 6's targets: at 64 writers ringpipe's
// throughput at least 1.5× Pebble's and its p99 at most a fifth of
// Pebble's; at one writer ringpipe's p50 within 1.25× of the
// write+fdatasync loop's.
func judgeGoals(rows []summaryRow) []goal {
	find := func(w int, t string) *summaryRow {
		for i := range rows {
			if rows[i].Writers == w && rows[i].Target == t && rows[i].measured() {
				return &rows[i]
			}
		}
		return nil
	}
	mk := func(name string, w int, other string, op string, limit float64, val func(ref, o *summaryRow) float64) goal {
		g := goal{Name: name, Op: op, Limit: limit}
		ref, o := find(w, refTarget), find(w, other)
		if ref == nil || o == nil {
			g.Missing = fmt.Sprintf("needs measured writes of %s and %s at %d writer(s)", refTarget, other, w)
			return g
		}
		g.Value = val(ref, o)
		if op == ">=" {
			g.Met = g.Value >= limit
		} else {
			g.Met = g.Value <= limit
		}
		return g
	}
	return []goal{
		mk("64 writers: ringpipe-uring recs/s ÷ pebble-sync recs/s", 64, pebbleTarget, ">=", 1.5,
			func(ref, o *summaryRow) float64 { return ratio(ref.RecsPS, o.RecsPS) }),
		mk("64 writers: ringpipe-uring p99 ÷ pebble-sync p99", 64, pebbleTarget, "<=", 0.2,
			func(ref, o *summaryRow) float64 { return ratio(float64(ref.Lat.P99), float64(o.Lat.P99)) }),
		mk("1 writer: ringpipe-uring p50 ÷ syncloop p50", 1, loopTarget, "<=", 1.25,
			func(ref, o *summaryRow) float64 { return ratio(float64(ref.Lat.P50), float64(o.Lat.P50)) }),
	}
}

// printReport writes the Markdown report: machine, load, table, goals.
func printReport(w io.Writer, cfg config, m machine, rows []summaryRow, goals []goal) {
	fmt.Fprintf(w, "Machine: %s\n\n", m)
	fmt.Fprintf(w, "Load: %d-byte values, each write durable before the writer's next; %s per cell after %s of warm-up, %d round(s), targets alternating round-robin at each writer count.\n\n",
		cfg.valueSize, cfg.duration, cfg.warmup, cfg.rounds)
	if t := ringpipeTuning(cfg.ringpipe); t != "" {
		fmt.Fprintf(w, "**ringpipe not at its defaults:** %s.\n\n", t)
	}
	fmt.Fprintln(w, "| writers | target | recs/s | p50 µs | p99 µs | p99.9 µs | recs/s ÷ uring | p99 ÷ uring | CPU | syncs/rec |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		if !r.measured() {
			reason := "not run"
			switch {
			case r.Skipped != "":
				reason = "skipped: " + r.Skipped
			case r.Rounds > 0:
				reason = fmt.Sprintf("no write completed in %s", time.Duration(r.Seconds*float64(time.Second)).Round(time.Millisecond))
			}
			fmt.Fprintf(w, "| %d | %s | %s | | | | | | | |\n", r.Writers, r.Target, reason)
			continue
		}
		syncs := "–"
		if v, ok := r.PerRec["syncs"]; ok {
			syncs = strconv.FormatFloat(v, 'f', 3, 64)
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %s | %.0f%% | %s |\n",
			r.Writers, r.Target, thousands(r.RecsPS), micros(r.Lat.P50), micros(r.Lat.P99), micros(r.Lat.P999),
			times(r.ThrRatio), times(r.P99Ratio), 100*r.CPU, syncs)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "CPU: the benchmark process's CPU time over the measured window, as a share of all cores. syncs/rec: fdatasyncs the engine issued per write (ringpipe's Stats).")
	fmt.Fprintln(w)
	printInternals(w, rows)
	fmt.Fprintln(w, "Issue 6's targets:")
	fmt.Fprintln(w)
	for _, g := range goals {
		switch {
		case g.Missing != "":
			fmt.Fprintf(w, "- %s %s %.2f: not judged (%s)\n", g.Name, g.Op, g.Limit, g.Missing)
		case g.Met:
			fmt.Fprintf(w, "- %s = %.2f, target %s %.2f: **met**\n", g.Name, g.Value, g.Op, g.Limit)
		default:
			fmt.Fprintf(w, "- %s = %.2f, target %s %.2f: **not met**\n", g.Name, g.Value, g.Op, g.Limit)
		}
	}
}

// printInternals writes what ringpipe's Stats say about its cells: how
// writes were grouped and routed, and the engine's own view of fdatasync
// and Put latency (cumulative over the cell's last round, warm-up
// included).
func printInternals(w io.Writer, rows []summaryRow) {
	var any bool
	for _, r := range rows {
		if r.Gauges != nil {
			any = true
		}
	}
	if !any {
		return
	}
	fmt.Fprintln(w, "ringpipe's own Stats per cell (records per fdatasync, share of writes acknowledged from the staging WAL, seals per 100k writes; fdatasync and Put latency as the engine measures them, in µs):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| writers | target | recs/sync | staged | seals/100k | fdatasync p50 | fdatasync p99 | Put p50 | Put p99 |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		if r.Gauges == nil {
			continue
		}
		perSync := "–"
		if v := r.PerRec["syncs"]; v > 0 {
			perSync = strconv.FormatFloat(1/v, 'f', 1, 64)
		}
		fmt.Fprintf(w, "| %d | %s | %s | %.1f%% | %.1f | %s | %s | %s | %s |\n",
			r.Writers, r.Target, perSync, 100*r.PerRec["staged"], 1e5*r.PerRec["sealed"],
			thousands(r.Gauges["sync_p50_us"]), thousands(r.Gauges["sync_p99_us"]),
			thousands(r.Gauges["write_p50_us"]), thousands(r.Gauges["write_p99_us"]))
	}
	fmt.Fprintln(w)
}

// ringpipeTuning lists the ringpipe Config fields the flags set; "" when
// the engine runs with its defaults.
func ringpipeTuning(c ringpipe.Config) string {
	var f []string
	if c.BatchSize != 0 {
		f = append(f, fmt.Sprintf("BatchSize %d", c.BatchSize))
	}
	if c.BatchTimeout != 0 {
		f = append(f, fmt.Sprintf("BatchTimeout %s", c.BatchTimeout))
	}
	if c.SealThreshold != 0 {
		f = append(f, fmt.Sprintf("SealThreshold %d", c.SealThreshold))
	}
	if c.SealBytes != 0 {
		f = append(f, fmt.Sprintf("SealBytes %d", c.SealBytes))
	}
	if c.Preallocate != 0 {
		f = append(f, fmt.Sprintf("Preallocate %d", c.Preallocate))
	}
	if c.DirectWriteTimeout != 0 {
		f = append(f, fmt.Sprintf("DirectWriteTimeout %s", c.DirectWriteTimeout))
	}
	if c.DirectIO {
		f = append(f, "DirectIO")
	}
	return strings.Join(f, ", ")
}

// thousands formats v rounded to an integer with comma separators.
func thousands(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// micros formats a duration in nanoseconds as whole µs (one decimal below
// 10 µs).
func micros(ns int64) string {
	us := float64(ns) / float64(time.Microsecond)
	if us < 10 {
		return strconv.FormatFloat(us, 'f', 1, 64)
	}
	return thousands(us)
}

func times(r float64) string {
	if r == 0 {
		return "–"
	}
	return strconv.FormatFloat(r, 'f', 2, 64) + "×"
}

// jsonReport is what -json writes.
type jsonReport struct {
	Config  jsonConfig   `json:"config"`
	Machine machine      `json:"machine"`
	Cells   []cellResult `json:"cells"`
	Summary []summaryRow `json:"summary"`
	Goals   []goal       `json:"goals"`
}

type jsonConfig struct {
	Writers    []int    `json:"writers"`
	Targets    []string `json:"targets"`
	DurationNS int64    `json:"duration_ns"`
	WarmupNS   int64    `json:"warmup_ns"`
	Rounds     int      `json:"rounds"`
	ValueSize  int      `json:"value_size"`
	Reference  string   `json:"reference"`
	// RingpipeTuning lists Config fields set away from the defaults.
	RingpipeTuning string `json:"ringpipe_tuning,omitempty"`
}

func writeJSON(path string, cfg config, m machine, cells []cellResult, rows []summaryRow, goals []goal) error {
	jc := jsonConfig{
		Writers:        slices.Clone(cfg.writers),
		DurationNS:     int64(cfg.duration),
		WarmupNS:       int64(cfg.warmup),
		Rounds:         cfg.rounds,
		ValueSize:      cfg.valueSize,
		Reference:      refTarget,
		RingpipeTuning: ringpipeTuning(cfg.ringpipe),
	}
	for _, t := range cfg.targets {
		jc.Targets = append(jc.Targets, t.name)
	}
	b, err := json.MarshalIndent(jsonReport{Config: jc, Machine: m, Cells: cells, Summary: rows, Goals: goals}, "", "  ")
	if err != nil {
		return fmt.Errorf("json: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("json: %w", err)
	}
	return nil
}
