//go:build stagetrace

package ringpipe_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/internal/baseline"
	"github.com/ringpipe/ringpipe/internal/stagetrace"
)

// BenchmarkStages splits a one-writer Put into the stages of
// internal/stagetrace: each sub-benchmark starts one engine, and each
// round does one Put and one append to internal/baseline's SyncLoop
// (pwrite+fdatasync), the reference. It reports the median of each stage
// (the time from the previous stage's stamp), of the whole Put, of
// SyncLoop's append, and the ratio of the two medians: issue 4's
// one-writer target, in one process, one engine at a time.
//
//	go test -tags stagetrace -run '^$' -bench Stages -benchtime 3000x .
//
// The medians of the stages do not add up to the median of the whole.
// Without the tag the stamps compile to nothing and this file is not
// built.
//
// b.N counts rounds.
func BenchmarkStages(b *testing.B) {
	for _, be := range benchBackends {
		for _, direct := range []bool{false, true} {
			name := be.name
			if direct {
				name += "-direct"
			}
			b.Run(name, func(b *testing.B) {
				benchStages(b, ringpipe.Config{Backend: be.backend, DirectIO: direct})
			})
		}
	}
}

func benchStages(b *testing.B, cfg ringpipe.Config) {
	ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
	defer cancel()
	e, space := startEngineConfig(ctx, b, cfg)
	defer stopEngine(b, e)
	l, err := baseline.OpenSyncLoop(filepath.Join(b.TempDir(), "log"), ringpipe.DefaultPreallocate)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	for i := 0; i < 50; i++ { // warm up
		if _, err := e.Put(ctx, space, ringpipe.Point{uint32(i)}, benchValue(i)); err != nil {
			b.Fatal(err)
		}
	}
	var stages [stagetrace.NumStages][]time.Duration
	var whole, loop []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := e.Put(ctx, space, ringpipe.Point{uint32(1000 + i)}, benchValue(i)); err != nil {
			b.Fatal(err)
		}
		st := stagetrace.Last()
		for s := stagetrace.Queued; s < stagetrace.NumStages; s++ {
			stages[s] = append(stages[s], time.Duration(st[s]-st[s-1]))
		}
		whole = append(whole, time.Duration(st[stagetrace.PutReturn]-st[stagetrace.PutStart]))
		t0 := time.Now()
		if err := l.Append(benchValue(i)); err != nil {
			b.Fatal(err)
		}
		loop = append(loop, time.Since(t0))
	}
	b.StopTimer()
	b.ReportMetric(float64(e.Telemetry().InlineCommits)/float64(b.N+50), "inline/put")
	med := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2]) / float64(time.Microsecond)
	}
	for s := stagetrace.Queued; s < stagetrace.NumStages; s++ {
		b.ReportMetric(med(stages[s]), "to-"+s.String()+"-p50-µs")
	}
	p, sl := med(whole), med(loop)
	b.ReportMetric(p, "put-p50-µs")
	b.ReportMetric(sl, "syncloop-p50-µs")
	b.ReportMetric(p/sl, "put/syncloop")
}
