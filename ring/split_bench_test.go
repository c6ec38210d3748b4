package ring_test

import (
	"errors"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring"
)

// BenchmarkDurableAppendSplit is BenchmarkDurableAppendInterleaved's 100-byte
// DSync append (buffered, and O_DIRECT into written blocks) in three shapes:
// "inline", one goroutine submits and reaps (the other benchmark's shape);
// "split", the engine's shape: the submitting goroutine waits on a
// channel and a reaper goroutine, woken by the ring, hands it the
// completion (the engine's completer and its hop back to the writer); and
// "owner", one goroutine owns the ring, and the writer hands it each
// append and waits for its answer (a submitter that also reaps). It
// reports each variant's median latency (µs) with pwrite+fdatasync as the
// reference, round-robin as the other.
//
//	go test -run '^$' -bench DurableAppendSplit -benchtime 3000x ./ring
//
// Three runs on the 2-core VM (load 0.7-0.8, p50 µs, inline → split):
// uring direct 152-156 → 158-165, std direct 160-167 → 157-165; uring
// buffered 164-168 → 174-180, std buffered 166-171 → 163-167;
// pwrite+fdatasync 153-159. Inline, io_uring's O_DIRECT append is the
// fastest durable append here, at or below pwrite+fdatasync;
// split, io_uring pays 6-12 µs that std does not (with GOMAXPROCS=1: 17-20
// µs direct, none buffered). Session 7, two runs, uring direct over
// pwrite+fdatasync: inline 1.02-1.05×, split 1.07-1.10×, owner 1.13× (std
// owner 1.05-1.07×): the owner shape's two hand-offs cost more than the
// split shape's one plus its second thread woken by the completion.
// BenchmarkPutOneWriter and BenchmarkStages measure the engine.
//
// b.N counts rounds.
func BenchmarkDurableAppendSplit(b *testing.B) {
	const batch = durableRecord
	sector := int64((batch + directSector - 1) / directSector * directSector)
	pool := ring.NewBufPool()
	defer pool.Close()
	var as []*appender

	as = append(as, syscallAppender(b, "syscall", plainLog(b, max(int64(b.N), 1)*batch, 0), make([]byte, batch), batch))

	// Teardown order: close the rings (a reaper returns on ErrClosed), wait
	// for the reapers, then close the files with plain system calls (a
	// Doer would race the reaper for its completion).
	var reapers sync.WaitGroup
	var rings []ring.Ring
	var fds []int32
	defer func() {
		for _, r := range rings {
			r.Close()
		}
		reapers.Wait()
		for _, fd := range fds {
			unix.Close(int(fd))
		}
	}()
	for _, kind := range []ring.Kind{ring.URing, ring.Std} {
		for _, direct := range []bool{false, true} {
			for _, shape := range []string{"inline", "split", "owner"} {
				split := shape != "inline"
				r, err := ring.New(ring.Options{Kind: kind, Entries: benchEntries})
				if err != nil {
					b.Skipf("%s backend unavailable: %v", kind, err)
				}
				rings = append(rings, r)
				d := ring.NewSync(r)
				var w ring.Op
				stride := int64(batch)
				if direct {
					path := b.TempDir() + "/log"
					prefill(b, d, pool, path, max(int64(b.N), 1)*sector+ring.BufLarge)
					fd := openFile(b, d, path, unix.O_RDWR|unix.O_DIRECT)
					fds = append(fds, fd)
					w = ring.Op{Code: ring.OpWrite, FD: fd, Buf: getBuf(b, pool, int(sector)), DSync: true}
					stride = sector
				} else {
					l := newDurableLog(b, d, pool, b.TempDir()+"/log", 1, max(b.N, 1))
					fds = append(fds, l.fd)
					w = l.write
					w.DSync = true
				}
				name := "dsync"
				if direct {
					name = "direct-dsync"
				}
				name += "-" + shape
				a := &appender{name: name + "/" + kind.String()}
				as = append(as, a)
				ops := make([]ring.Op, 1)
				if !split {
					cq := make([]ring.Completion, 2)
					a.append = func(i int) {
						ops[0] = w
						ops[0].Offset = int64(i) * stride
						if err := r.Submit(ops); err != nil {
							b.Fatal(err)
						}
						reapCancelled(b, r, 1, cq)
					}
					continue
				}
				done := make(chan ring.Completion, 1)
				if shape == "owner" {
					// One goroutine owns the ring: the writer hands it
					// the append and waits; it submits, reaps and
					// answers.
					work := make(chan int)
					reapers.Add(1)
					go func() {
						defer reapers.Done()
						cq := make([]ring.Completion, 2)
						ops := make([]ring.Op, 1)
						for i := range work {
							ops[0] = w
							ops[0].Offset = int64(i) * stride
							if err := r.Submit(ops); err != nil {
								b.Error(err)
							}
							n, err := r.Reap(cq)
							if err != nil || n != 1 {
								b.Error(n, err)
							}
							done <- cq[0]
						}
					}()
					defer close(work)
					a.append = func(i int) {
						work <- i
						if c := <-done; c.Err != nil {
							b.Fatalf("%s: %v", c.Code, c.Err)
						}
					}
					continue
				}
				// The engine's shape: a reaper goroutine, woken by the
				// kernel, hands each completion to the submitter.
				reapers.Add(1)
				go func() {
					defer reapers.Done()
					cq := make([]ring.Completion, 2)
					for {
						n, err := r.Reap(cq)
						if errors.Is(err, ring.ErrClosed) {
							close(done)
							return
						}
						if err != nil {
							b.Error(err)
							close(done)
							return
						}
						for _, c := range cq[:n] {
							done <- c
						}
					}
				}()
				a.append = func(i int) {
					ops[0] = w
					ops[0].Offset = int64(i) * stride
					if err := r.Submit(ops); err != nil {
						b.Fatal(err)
					}
					if c := <-done; c.Err != nil {
						b.Fatalf("%s: %v", c.Code, c.Err)
					}
				}
			}
		}
	}
	interleave(b, as)
}
