package main

import (
	"fmt"
	"image/color"
	"math"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// The plot is the latency CDF drawn the way latency tails are read: the
// latency (log scale) across, and the share of writes at or below it up
// the side on a "nines" scale (50%, 90%, 99%, 99.9%, ...), so that p99.9
// and the maximum are as legible as the median. Plotted as y = -log10(1-q)
// for the quantile q; the last point (q = 1, the maximum) sits at the
// nines of one write in the whole count.

// plotTicksPerHalf is how many CDF points hdrhistogram's percentile
// iterator gives per halving of the remaining tail.
const plotTicksPerHalf = 5

// writePlot writes the latency CDF of h for result r to file; the format
// (PNG or SVG) follows the file's extension.
func writePlot(file string, r *benchResult, h *hdr.Histogram) error {
	pts, ymax := cdfPoints(h)
	if len(pts) == 0 {
		return fmt.Errorf("plot %s: no latencies recorded", file)
	}
	p := plot.New()
	call := "Put"
	if r.Mode == "async" {
		call = "PutAsync"
	}
	p.Title.Text = fmt.Sprintf("ringpipe %s latency: %d writers, %d B values, %s backend, %s records/s",
		call, r.Writers, r.ValueSize, r.Backend, group(uint64(r.Throughput+0.5)))
	p.X.Label.Text = "latency (ms)"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Label.Text = "writes at or below the latency"
	p.Y.Min, p.Y.Max = 0, math.Ceil(ymax)
	p.Y.Tick.Marker = plot.TickerFunc(ninesTicks)
	p.Add(plotter.NewGrid())

	line, err := plotter.NewLine(pts)
	if err != nil {
		return fmt.Errorf("plot %s: %w", file, err)
	}
	line.Color = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	line.Width = vg.Points(1.5)
	p.Add(line)

	// Mark the percentiles the text output prints.
	lat := r.Latency
	marks := []struct {
		name string
		us   float64
		q    float64
	}{{"p50", lat.P50, 0.5}, {"p99", lat.P99, 0.99}, {"p99.9", lat.P999, 0.999}, {"max", lat.Max, -1}}
	var xys plotter.XYs
	var labels []string
	for _, m := range marks {
		y := ymax
		if m.q >= 0 {
			y = nines(m.q)
		}
		if y > ymax {
			continue // too few writes for this percentile to mean much
		}
		xys = append(xys, plotter.XY{X: math.Max(m.us/1000, 1e-3), Y: y})
		labels = append(labels, fmt.Sprintf(" %s %s", m.name, fmtMicros(m.us)))
	}
	if len(xys) > 0 {
		sc, err := plotter.NewScatter(xys)
		if err != nil {
			return fmt.Errorf("plot %s: %w", file, err)
		}
		sc.Color = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
		lb, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: labels})
		if err != nil {
			return fmt.Errorf("plot %s: %w", file, err)
		}
		p.Add(sc, lb)
	}
	if err := p.Save(9*vg.Inch, 5.5*vg.Inch, file); err != nil {
		return fmt.Errorf("plot %s: %w", file, err)
	}
	return nil
}

// cdfPoints returns the CDF of h as (latency in ms, nines) points and the
// nines of the last point.
func cdfPoints(h *hdr.Histogram) (plotter.XYs, float64) {
	n := h.TotalCount()
	if n == 0 {
		return nil, 0
	}
	top := math.Log10(float64(n)) // the nines of one write in n
	var pts plotter.XYs
	for _, b := range h.CumulativeDistributionWithTicks(plotTicksPerHalf) {
		y := top
		if q := b.Quantile / 100; q < 1 {
			y = math.Min(nines(q), top)
		}
		pts = append(pts, plotter.XY{X: float64(b.ValueAt) / float64(time.Millisecond), Y: y})
	}
	return pts, top
}

// nines maps quantile q to the plot's y: -log10(1-q).
func nines(q float64) float64 { return -math.Log10(1 - q) }

// ninesTicks labels the y axis at 0%, 50%, 90%, 99%, 99.9%, ...
func ninesTicks(lo, hi float64) []plot.Tick {
	ticks := []plot.Tick{{Value: 0, Label: "0%"}, {Value: nines(0.5), Label: "50%"}}
	for k := 1; float64(k) <= hi+1e-9; k++ {
		pct := 100 * (1 - math.Pow(10, -float64(k)))
		ticks = append(ticks, plot.Tick{Value: float64(k), Label: fmt.Sprintf("%.*f%%", max(0, k-2), pct)})
	}
	out := ticks[:0]
	for _, t := range ticks {
		if t.Value >= lo-1e-9 && t.Value <= hi+1e-9 {
			out = append(out, t)
		}
	}
	return out
}
