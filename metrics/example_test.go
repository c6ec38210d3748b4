package metrics_test

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/metrics"
)

// Serve an engine's metrics on /metrics. A real program would hand mux to
// http.ListenAndServe; the example serves it on a loopback test server and
// reads it back once.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "ringpipe-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	e, err := ringpipe.Start(ctx, ringpipe.Config{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer e.Stop(ctx)

	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewCollector(e, metrics.WithConstLabels(prometheus.Labels{"db": "example"})))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	sp, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "sensors", Dims: 2, Bits: 16})
	if err != nil {
		log.Fatal(err)
	}
	for i := range 3 {
		if _, err := e.Put(ctx, sp, ringpipe.Point{uint32(i), 0}, []byte("hello")); err != nil {
			log.Fatal(err)
		}
	}

	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "ringpipe_write_latency_seconds_count") ||
			strings.HasPrefix(line, "ringpipe_queue_capacity") {
			fmt.Println(line)
		}
	}
	// Output:
	// ringpipe_queue_capacity{db="example"} 4096
	// ringpipe_write_latency_seconds_count{db="example"} 3
}
