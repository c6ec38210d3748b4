package ring_test

import (
	"errors"
	"math/rand/v2"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring"
)

// The ring benchmarks run every scenario on io_uring and on std in one run,
// as sub-benchmarks named <scenario>/uring and <scenario>/std:
//
//	go test -run '^$' -bench . -benchtime 2000x ./ring
//
// Each reports ns/op and a rate (syncs/s, records/s, writes/s or reads/s).
// Files live in b.TempDir(), on the disk under test (ext4 here). Buffers
// come from a BufPool: off the Go heap and page-aligned, as the engine
// hands them to the kernel.

// benchEntries is the io_uring SQ size of the benchmark rings: room for 32
// ops in flight with the CQ (2 × entries) never full.
const benchEntries = 64

// benchDepth is how many ops the pipelined scenarios keep in flight: a
// group commit's worth.
const benchDepth = 32

// benchFileSize is the file the random-offset scenarios use: larger than
// one batch's reach, small enough to set up in milliseconds.
const benchFileSize = 16 << 20

// onBackends runs bench as <name>/uring and <name>/std, each with a fresh
// ring. A backend that cannot be built is skipped with the reason.
func onBackends(b *testing.B, bench func(b *testing.B, r ring.Ring, pool *ring.BufPool, dir string)) {
	for _, kind := range []ring.Kind{ring.URing, ring.Std} {
		b.Run(kind.String(), func(b *testing.B) {
			// The pool is closed after the ring, so that no op can still
			// use its memory.
			pool := ring.NewBufPool()
			defer pool.Close()
			r, err := ring.New(ring.Options{Kind: kind, Entries: benchEntries})
			if err != nil {
				b.Skipf("%s backend unavailable: %v", kind, err)
			}
			defer r.Close()
			b.ReportAllocs()
			bench(b, r, pool, b.TempDir())
		})
	}
}

// getBuf returns a pool buffer of n bytes filled with a pattern.
func getBuf(b *testing.B, pool *ring.BufPool, n int) []byte {
	buf, err := pool.Get(n)
	if err != nil {
		b.Fatal(err)
	}
	for i := range buf {
		buf[i] = byte(i*13 + 1)
	}
	return buf
}

// openFile opens path through d, failing the benchmark on error.
func openFile(b *testing.B, d ring.Doer, path string, flags int) int32 {
	fd, err := ring.Open(d, path, flags, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	return fd
}

// prefill creates path with size bytes of data on disk (written and synced,
// so that later writes overwrite allocated, written blocks) and closes it.
func prefill(b *testing.B, d ring.Doer, pool *ring.BufPool, path string, size int64) {
	fd := openFile(b, d, path, unix.O_RDWR|unix.O_CREAT|unix.O_TRUNC)
	if err := ring.Fallocate(d, fd, 0, size, false); err != nil {
		b.Fatal(err)
	}
	chunk := getBuf(b, pool, ring.BufLarge)
	for off := int64(0); off < size; off += int64(len(chunk)) {
		if err := ring.WriteAt(d, fd, chunk, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := ring.Fdatasync(d, fd); err != nil {
		b.Fatal(err)
	}
	if err := ring.Close(d, fd); err != nil {
		b.Fatal(err)
	}
	if err := pool.Put(chunk); err != nil {
		b.Fatal(err)
	}
}

// roundTrip submits ops as one batch and reaps their final completions,
// failing on any error. cq is scratch space of at least len(ops).
func roundTrip(b *testing.B, r ring.Ring, ops []ring.Op, cq []ring.Completion) {
	if err := r.Submit(ops); err != nil {
		b.Fatal(err)
	}
	for left := len(ops); left > 0; {
		n, err := r.Reap(cq)
		if err != nil {
			b.Fatal(err)
		}
		for _, c := range cq[:n] {
			if c.Deadline {
				continue
			}
			if c.Err != nil {
				b.Fatalf("%s: %v", c.Code, c.Err)
			}
			left--
		}
	}
}

// pipeline performs n ops with depth of them in flight: op(slot, i) builds
// the i-th op, to run in slot (0 <= slot < depth, each slot owning its
// buffer); a slot is refilled as soon as its completion is reaped.
func pipeline(b *testing.B, r ring.Ring, n, depth int, op func(slot, i int) ring.Op) {
	cq := make([]ring.Completion, depth)
	batch := make([]ring.Op, 0, depth)
	issued := 0
	for slot := 0; slot < depth && issued < n; slot++ {
		o := op(slot, issued)
		o.Token = uint64(slot)
		batch = append(batch, o)
		issued++
	}
	if err := r.Submit(batch); err != nil {
		b.Fatal(err)
	}
	for done := 0; done < n; {
		k, err := r.Reap(cq)
		if err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
		for _, c := range cq[:k] {
			if c.Deadline {
				continue
			}
			if c.Err != nil {
				b.Fatalf("%s: %v", c.Code, c.Err)
			}
			if c.Res != int64(len(c.Buf)) {
				b.Fatalf("%s: %d of %d bytes", c.Code, c.Res, len(c.Buf))
			}
			done++
			if issued < n {
				o := op(int(c.Token), issued)
				o.Token = c.Token
				batch = append(batch, o)
				issued++
			}
		}
		if len(batch) > 0 {
			if err := r.Submit(batch); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// perSecond reports count events over the benchmark's elapsed time.
func perSecond(b *testing.B, count int, unit string) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(count)/s, unit)
	}
}

// appendSpan is how much of a preallocated log the append scenarios cycle
// through: one 4 KiB block per iteration, wrapping at 64 MiB.
func appendSpan(n int) int64 { return int64(min(max(n, 1), 16384)) * 4096 }

// BenchmarkWriteFdatasync is one durable 4 KiB append: a write linked to an
// fdatasync, one submission, into a preallocated file.
func BenchmarkWriteFdatasync(b *testing.B) {
	onBackends(b, func(b *testing.B, r ring.Ring, pool *ring.BufPool, dir string) {
		d := ring.NewSync(r)
		fd := openFile(b, d, dir+"/log", unix.O_RDWR|unix.O_CREAT)
		defer ring.Close(d, fd)
		span := appendSpan(b.N)
		if err := ring.Fallocate(d, fd, 0, span, false); err != nil {
			b.Fatal(err)
		}
		buf := getBuf(b, pool, 4096)
		ops := make([]ring.Op, 2)
		cq := make([]ring.Completion, 2)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			ops[0] = ring.Op{Code: ring.OpWrite, FD: fd, Buf: buf, Offset: int64(i) * 4096 % span, Link: true}
			ops[1] = ring.Op{Code: ring.OpFdatasync, FD: fd}
			roundTrip(b, r, ops, cq)
		}
		b.StopTimer()
		perSecond(b, b.N, "syncs/s")
	})
}

// BenchmarkWritevFdatasync is a group commit: 32 records of 128 B in one
// writev linked to one fdatasync, one submission. One op is one batch.
func BenchmarkWritevFdatasync(b *testing.B) {
	const records, recordSize = 32, 128
	onBackends(b, func(b *testing.B, r ring.Ring, pool *ring.BufPool, dir string) {
		d := ring.NewSync(r)
		fd := openFile(b, d, dir+"/log", unix.O_RDWR|unix.O_CREAT)
		defer ring.Close(d, fd)
		span := appendSpan(b.N)
		if err := ring.Fallocate(d, fd, 0, span, false); err != nil {
			b.Fatal(err)
		}
		mem := getBuf(b, pool, records*recordSize)
		bufs := make([][]byte, records)
		for j := range bufs {
			bufs[j] = mem[j*recordSize : (j+1)*recordSize]
		}
		ops := make([]ring.Op, 2)
		cq := make([]ring.Completion, 2)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			ops[0] = ring.Op{Code: ring.OpWritev, FD: fd, Bufs: bufs, Offset: int64(i) * 4096 % span, Link: true}
			ops[1] = ring.Op{Code: ring.OpFdatasync, FD: fd}
			roundTrip(b, r, ops, cq)
		}
		b.StopTimer()
		perSecond(b, b.N*records, "records/s")
	})
}

// BenchmarkBufferedWrite is 4 KiB buffered writes (no sync) with 32 in
// flight, sequential through a 4 MiB file.
func BenchmarkBufferedWrite(b *testing.B) {
	const span = 4 << 20
	onBackends(b, func(b *testing.B, r ring.Ring, pool *ring.BufPool, dir string) {
		d := ring.NewSync(r)
		fd := openFile(b, d, dir+"/data", unix.O_RDWR|unix.O_CREAT)
		defer ring.Close(d, fd)
		bufs := getBufs(b, pool, benchDepth, 4096)
		b.ResetTimer()
		pipeline(b, r, b.N, benchDepth, func(slot, i int) ring.Op {
			return ring.Op{Code: ring.OpWrite, FD: fd, Buf: bufs[slot], Offset: int64(i) * 4096 % span}
		})
		b.StopTimer()
		perSecond(b, b.N, "writes/s")
	})
}

// BenchmarkDirectWrite is O_DIRECT 4 KiB overwrites at random offsets of a
// preallocated, already-written 16 MiB file with 32 in flight: the case
// where io_uring's writes are truly asynchronous.
func BenchmarkDirectWrite(b *testing.B) {
	onBackends(b, func(b *testing.B, r ring.Ring, pool *ring.BufPool, dir string) {
		d := ring.NewSync(r)
		path := dir + "/data"
		prefill(b, d, pool, path, benchFileSize)
		fd, err := ring.Open(d, path, unix.O_RDWR|unix.O_DIRECT, 0)
		if errors.Is(err, unix.EINVAL) {
			b.Skipf("O_DIRECT unsupported in %s: %v", dir, err)
		}
		if err != nil {
			b.Fatal(err)
		}
		defer ring.Close(d, fd)
		bufs := getBufs(b, pool, benchDepth, 4096)
		rng := rand.New(rand.NewPCG(1, 2))
		b.ResetTimer()
		pipeline(b, r, b.N, benchDepth, func(slot, i int) ring.Op {
			return ring.Op{Code: ring.OpWrite, FD: fd, Buf: bufs[slot], Offset: rng.Int64N(benchFileSize/4096) * 4096}
		})
		b.StopTimer()
		perSecond(b, b.N, "writes/s")
	})
}

// BenchmarkRandomRead is 4 KiB reads at random offsets of a 16 MiB file
// (in the page cache) with 32 in flight.
func BenchmarkRandomRead(b *testing.B) {
	onBackends(b, func(b *testing.B, r ring.Ring, pool *ring.BufPool, dir string) {
		d := ring.NewSync(r)
		path := dir + "/data"
		prefill(b, d, pool, path, benchFileSize)
		fd := openFile(b, d, path, unix.O_RDONLY)
		defer ring.Close(d, fd)
		bufs := getBufs(b, pool, benchDepth, 4096)
		rng := rand.New(rand.NewPCG(3, 4))
		b.ResetTimer()
		pipeline(b, r, b.N, benchDepth, func(slot, i int) ring.Op {
			return ring.Op{Code: ring.OpRead, FD: fd, Buf: bufs[slot], Offset: rng.Int64N(benchFileSize/4096) * 4096}
		})
		b.StopTimer()
		perSecond(b, b.N, "reads/s")
	})
}

// getBufs returns n pooled buffers of size bytes, one per pipeline slot.
func getBufs(b *testing.B, pool *ring.BufPool, n, size int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = getBuf(b, pool, size)
	}
	return bufs
}
