package actors

import (
	"slices"
	"syscall"
	"testing"
	"time"
)

// BenchmarkHandoff measures what the actors' hand-offs cost by
// themselves: a round trip through two unbuffered channels to a goroutine
// parked on the first, as when a writer hands its write to the submitter
// and is answered. "busy" sends the next one at once; "after-150µs" first
// blocks the sender in a 150 µs system call, about a durable write's
// time, so that the other side has parked and its thread gone to sleep, as
// at one writer. It reports the median round trip in µs.
//
//	go test -run '^$' -bench Handoff -benchtime 5000x ./actors
//
// On the 2-core VM (issue 4; two runs each): busy 0.26-0.41 µs;
// after-150µs (the nanosleep takes about 250 µs) 11.6-13.1 µs with
// GOMAXPROCS=2 against 1.3-1.4 µs with GOMAXPROCS=1. With an idle P the runtime
// wakes a second OS thread for each hand-off (a futex wake of a sleeping
// vCPU), which is where a one-writer Put loses its time against a
// pwrite+fdatasync loop (see BenchmarkStages in the root package).
//
// b.N counts round trips.
func BenchmarkHandoff(b *testing.B) {
	for _, pause := range []time.Duration{0, 150 * time.Microsecond} {
		name := "busy"
		if pause > 0 {
			name = "after-150µs"
		}
		b.Run(name, func(b *testing.B) {
			ping, pong := make(chan struct{}), make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for range ping {
					pong <- struct{}{}
				}
			}()
			defer func() { close(ping); <-done }()
			lat := make([]time.Duration, 0, b.N)
			ts := syscall.NsecToTimespec(int64(pause))
			for i := 0; i < b.N; i++ {
				if pause > 0 {
					syscall.Nanosleep(&ts, nil) //nolint:errcheck // an early wake-up only shortens the pause
				}
				t0 := time.Now()
				ping <- struct{}{}
				<-pong
				lat = append(lat, time.Since(t0))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2])/float64(time.Microsecond), "round-trip-p50-µs")
		})
	}
}
