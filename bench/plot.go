package main

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// plotFormats are the file extensions -plot accepts.
var plotFormats = []string{".png", ".svg", ".pdf"}

func checkPlotPath(path string) error {
	ext := strings.ToLower(filepath.Ext(path))
	for _, f := range plotFormats {
		if ext == f {
			return nil
		}
	}
	return fmt.Errorf("-plot %s: the file must end in one of %s", path, strings.Join(plotFormats, ", "))
}

// writePlot draws throughput against writers, one line per target, both
// axes logarithmic, and saves it to path (format by extension).
func writePlot(path string, cfg config, m machine, rows []summaryRow) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Durable writes of %d-byte values\n%s, %d cores, Linux %s, %s", cfg.valueSize, m.CPU, m.Cores, m.Kernel, m.FS)
	p.X.Label.Text = "concurrent writers"
	p.Y.Label.Text = "records/s"
	p.X.Scale = plot.LogScale{}
	p.Y.Scale = plot.LogScale{}
	var xt []plot.Tick
	for _, w := range cfg.writers {
		xt = append(xt, plot.Tick{Value: float64(w), Label: strconv.Itoa(w)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(xt)
	p.Y.Tick.Marker = decadeTicks{}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())

	minX, maxX := math.Inf(1), math.Inf(-1)
	minY, maxY := math.Inf(1), math.Inf(-1)
	for _, t := range cfg.targets {
		// Colours and shapes by the target's place among all targets, so
		// that a target looks the same in every plot.
		i := slices.IndexFunc(allTargets, func(a target) bool { return a.name == t.name })
		var pts plotter.XYs
		for _, r := range rows {
			if r.Target == t.name && r.Rounds > 0 && r.RecsPS > 0 {
				pts = append(pts, plotter.XY{X: float64(r.Writers), Y: r.RecsPS})
				minX, maxX = math.Min(minX, float64(r.Writers)), math.Max(maxX, float64(r.Writers))
				minY, maxY = math.Min(minY, r.RecsPS), math.Max(maxY, r.RecsPS)
			}
		}
		if len(pts) == 0 {
			continue
		}
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return fmt.Errorf("plot: %w", err)
		}
		c := plotutil.Color(i)
		line.Color, points.Color = c, c
		line.Width = vg.Points(1.5)
		points.Shape = plotutil.Shape(i)
		points.Radius = vg.Points(3)
		if t.name == refTarget {
			line.Width = vg.Points(2.5)
		}
		p.Add(line, points)
		p.Legend.Add(t.name, line, points)
	}
	if !math.IsInf(minX, 0) {
		// Keep points off the frame, and the top left free for the
		// legend (both axes are logarithmic, so margins are factors).
		p.X.Min, p.X.Max = minX/2.5, maxX*1.5
		p.Y.Min, p.Y.Max = minY/1.5, maxY*5
	}
	if err := p.Save(7*vg.Inch, 4.5*vg.Inch, path); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	return nil
}

// decadeTicks labels powers of ten (1k, 10k, 100k, ...) with 2× and 5×
// minor ticks between them, for a log axis.
type decadeTicks struct{}

func (decadeTicks) Ticks(min, max float64) []plot.Tick {
	if min <= 0 || max <= 0 {
		return nil
	}
	var ticks []plot.Tick
	for d := math.Pow(10, math.Floor(math.Log10(min))); d <= max; d *= 10 {
		for _, m := range []float64{1, 2, 5} {
			v := d * m
			if v < min || v > max {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = si(v)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}

// si formats v with a k or M suffix.
func si(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'g', -1, 64) + "M"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'g', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
