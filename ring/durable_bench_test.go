package ring_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring"
)

// BenchmarkDurableAppend is the engine's write path reduced to one ring:
// one durable append of a batch into a preallocated log, submitted and
// reaped before the next (one writer), in every way the ring can make it
// durable:
//
//	link        a write linked to an fdatasync (two SQEs, two CQEs)
//	dsync       one write with DSync (RWF_DSYNC: one SQE, one CQE)
//	link-async  link with IOSQE_ASYNC on the write (uring only)
//	dsync-async dsync with IOSQE_ASYNC (uring only)
//	syscall     pwrite+fdatasync on the calling goroutine, no ring at all
//	            (the reference: what bench's syncloop does)
//
// for a batch of one 100-byte record (an OpWrite) and of 32 (an OpWritev
// of 32 buffers), on io_uring and std:
//
//	go test -run '^$' -bench DurableAppend -benchtime 3000x ./ring
//
// Appends are sequential, as the engine's are, so that consecutive writes
// share pages; the file is preallocated with fallocate mode 0, as hot
// segments and WAL segments are.
func BenchmarkDurableAppend(b *testing.B) {
	for _, size := range []struct {
		name    string
		records int
	}{{"100B", 1}, {"32x100B", 32}} {
		b.Run(size.name, func(b *testing.B) {
			b.Run("syscall", func(b *testing.B) { benchSyscallAppend(b, size.records) })
			for _, v := range []struct {
				name         string
				dsync, async bool
			}{{"link", false, false}, {"dsync", true, false}, {"link-async", false, true}, {"dsync-async", true, true}} {
				b.Run(v.name, func(b *testing.B) {
					onBackends(b, func(b *testing.B, r ring.Ring, pool *ring.BufPool, dir string) {
						if v.async && !ring.SetAsyncWrites(r, true) {
							b.Skip("IOSQE_ASYNC is io_uring's")
						}
						benchRingAppend(b, r, pool, dir, size.records, v.dsync)
					})
				})
			}
		})
	}
}

// durableRecord is the record size of BenchmarkDurableAppend: bench's
// value size.
const durableRecord = 100

// benchRingAppend appends b.N batches of records durably through r.
func benchRingAppend(b *testing.B, r ring.Ring, pool *ring.BufPool, dir string, records int, dsync bool) {
	d := ring.NewSync(r)
	l := newDurableLog(b, d, pool, dir+"/log", records, max(b.N, 1))
	defer ring.Close(d, l.fd)
	ops := make([]ring.Op, 0, 2)
	cq := make([]ring.Completion, 2)
	before := r.Stats().Syncs
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ops = l.appendOps(ops[:0], i, dsync, 0)
		roundTrip(b, r, ops, cq)
	}
	b.StopTimer()
	if got := r.Stats().Syncs - before; got != uint64(b.N) {
		b.Fatalf("Stats.Syncs counted %d syncs for %d durable appends", got, b.N)
	}
	perSecond(b, b.N*records, "records/s")
}

// durableLog is a preallocated log file and the write op of one batch of
// records (one buffer, or one per record when there are several).
type durableLog struct {
	fd    int32
	batch int64
	write ring.Op
}

// newDurableLog creates path with room for appends batches of records.
func newDurableLog(b *testing.B, d ring.Doer, pool *ring.BufPool, path string, records, appends int) *durableLog {
	l := &durableLog{fd: openFile(b, d, path, unix.O_RDWR|unix.O_CREAT), batch: int64(records * durableRecord)}
	if err := ring.Fallocate(d, l.fd, 0, int64(appends)*l.batch, false); err != nil {
		b.Fatal(err)
	}
	mem := getBuf(b, pool, int(l.batch))
	l.write = ring.Op{Code: ring.OpWrite, FD: l.fd, Buf: mem}
	if records > 1 {
		bufs := make([][]byte, records)
		for j := range bufs {
			bufs[j] = mem[j*durableRecord : (j+1)*durableRecord]
		}
		l.write = ring.Op{Code: ring.OpWritev, FD: l.fd, Bufs: bufs}
	}
	return l
}

// appendOps appends to dst the ops of the i-th batch's durable append: one
// DSync write, or a write linked to an fdatasync; each with deadline.
func (l *durableLog) appendOps(dst []ring.Op, i int, dsync bool, deadline time.Duration) []ring.Op {
	w := l.write
	w.Offset = int64(i) * l.batch
	w.Deadline = deadline
	if dsync {
		w.DSync = true
		return append(dst, w)
	}
	w.Link = true
	return append(dst, w, ring.Op{Code: ring.OpFdatasync, FD: l.fd, Deadline: deadline})
}

// benchSyscallAppend is benchRingAppend with plain system calls.
func benchSyscallAppend(b *testing.B, records int) {
	fd, err := unix.Open(b.TempDir()+"/log", unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	batch := int64(records * durableRecord)
	if err := unix.Fallocate(fd, 0, 0, max(int64(b.N), 1)*batch); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, batch)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n, err := unix.Pwrite(fd, buf, int64(i)*batch)
		if err != nil || n != len(buf) {
			b.Fatal(fmt.Errorf("pwrite: %d bytes, %w", n, err))
		}
		if err := unix.Fdatasync(fd); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	perSecond(b, b.N*records, "records/s")
}

// BenchmarkDurableAppendInterleaved runs the variants of
// BenchmarkDurableAppend round-robin, one append each in turn, and reports
// each one's median latency (µs): on a shared, noisy disk the variants then
// see the same drift, which sequential sub-benchmarks do not.
//
//	go test -run '^$' -bench DurableAppendInterleaved -benchtime 2000x ./ring
//
// b.N counts rounds (one append of every variant).
func BenchmarkDurableAppendInterleaved(b *testing.B) {
	for _, size := range []struct {
		name    string
		records int
	}{{"100B", 1}, {"32x100B", 32}} {
		b.Run(size.name, func(b *testing.B) { benchInterleaved(b, size.records) })
	}
}

// appender is one variant of benchInterleaved: append does one durable
// append of the i-th batch.
type appender struct {
	name   string
	append func(i int)
	lat    []time.Duration
	submit []time.Duration // how long Submit took (ring variants)
}

func benchInterleaved(b *testing.B, records int) {
	batch := int64(records * durableRecord)
	span := max(int64(b.N), 1) * batch
	pool := ring.NewBufPool()
	defer pool.Close()
	var as []*appender

	// The reference: plain system calls.
	as = append(as, syscallAppender(b, "syscall", plainLog(b, span, 0), make([]byte, batch), batch))

	for _, kind := range []ring.Kind{ring.URing, ring.Std} {
		for _, v := range []struct {
			name         string
			dsync, async bool
			deadline     time.Duration
		}{{"link", false, false, 0}, {"dsync", true, false, 0}, {"link-async", false, true, 0}, {"dsync-async", true, true, 0},
			{"link-deadline", false, false, 2 * time.Millisecond}, {"dsync-deadline", true, false, 2 * time.Millisecond}} {
			r, err := ring.New(ring.Options{Kind: kind, Entries: benchEntries})
			if err != nil {
				b.Skipf("%s backend unavailable: %v", kind, err)
			}
			defer r.Close()
			if v.async && !ring.SetAsyncWrites(r, true) {
				continue // IOSQE_ASYNC is io_uring's
			}
			d := ring.NewSync(r)
			l := newDurableLog(b, d, pool, b.TempDir()+"/log", records, max(b.N, 1))
			defer ring.Close(d, l.fd)
			ops := make([]ring.Op, 0, 2)
			cq := make([]ring.Completion, 2)
			dsync, deadline := v.dsync, v.deadline
			a := &appender{name: v.name + "/" + kind.String()}
			as = append(as, a)
			a.append = func(i int) {
				ops = l.appendOps(ops[:0], i, dsync, deadline)
				// A deadline that passes while the op waits for a kernel
				// worker cancels it: do it again, as the engine does.
				for {
					t0 := time.Now()
					if err := r.Submit(ops); err != nil {
						b.Fatal(err)
					}
					a.submit = append(a.submit, time.Since(t0))
					if !reapCancelled(b, r, len(ops), cq) {
						break
					}
				}
			}
		}
	}
	// O_DIRECT into a recycled file: each batch padded to whole sectors,
	// written over blocks already written and synced, made durable by
	// DSync (ext4 then needs no journal commit, only a cache flush).
	sector := (batch + directSector - 1) / directSector * directSector
	for _, v := range []struct {
		kind  ring.Kind
		fresh bool // fallocated only: every write converts unwritten extents
	}{{ring.URing, false}, {ring.Std, false}, {ring.URing, true}} {
		kind := v.kind
		r, err := ring.New(ring.Options{Kind: kind, Entries: benchEntries})
		if err != nil {
			b.Skipf("%s backend unavailable: %v", kind, err)
		}
		defer r.Close()
		d := ring.NewSync(r)
		path := b.TempDir() + "/log"
		name := "direct-dsync/" + kind.String()
		if v.fresh {
			name = "direct-dsync-fresh/" + kind.String()
			fd := openFile(b, d, path, unix.O_RDWR|unix.O_CREAT)
			if err := ring.Fallocate(d, fd, 0, max(int64(b.N), 1)*sector+ring.BufLarge, false); err != nil {
				b.Fatal(err)
			}
			ring.Close(d, fd)
		} else {
			prefill(b, d, pool, path, max(int64(b.N), 1)*sector+ring.BufLarge)
		}
		fd := openFile(b, d, path, unix.O_RDWR|unix.O_DIRECT)
		defer ring.Close(d, fd)
		w := ring.Op{Code: ring.OpWrite, FD: fd, Buf: getBuf(b, pool, int(sector)), DSync: true}
		ops := make([]ring.Op, 1)
		cq := make([]ring.Completion, 2)
		a := &appender{name: name}
		as = append(as, a)
		a.append = func(i int) {
			ops[0] = w
			ops[0].Offset = int64(i) * sector
			t0 := time.Now()
			if err := r.Submit(ops); err != nil {
				b.Fatal(err)
			}
			a.submit = append(a.submit, time.Since(t0))
			reapCancelled(b, r, 1, cq)
		}
	}
	{
		path := b.TempDir() + "/log"
		d := ring.NewSync(mustRing(b))
		prefill(b, d, pool, path, max(int64(b.N), 1)*sector+ring.BufLarge)
		dfd, err := unix.Open(path, unix.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Close(dfd)
		as = append(as, syscallAppender(b, "syscall-direct", dfd, getBuf(b, pool, int(sector)), sector))
	}
	interleave(b, as)
}

// interleave runs b.N rounds of as, one append of each per round, each
// round starting one later, and reports each one's median latency (and
// its median Submit time, where it records them).
func interleave(b *testing.B, as []*appender) {
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range as {
			a := as[(i+k)%len(as)] // each round starts one variant later
			t0 := time.Now()
			a.append(i)
			a.lat = append(a.lat, time.Since(t0))
		}
	}
	b.StopTimer()
	for _, a := range as {
		slices.Sort(a.lat)
		b.ReportMetric(float64(a.lat[len(a.lat)/2].Nanoseconds())/1e3, a.name+"-p50-µs")
		if len(a.submit) > 0 {
			slices.Sort(a.submit)
			b.ReportMetric(float64(a.submit[len(a.submit)/2].Nanoseconds())/1e3, a.name+"-submit-p50-µs")
		}
	}
}

// plainLog creates a log with plain system calls, preallocated to size
// bytes (fallocate mode 0) and opened with flags added; closed when b ends.
func plainLog(b *testing.B, size int64, flags int) int {
	fd, err := unix.Open(b.TempDir()+"/log", unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC|flags, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(fd) })
	if err := unix.Fallocate(fd, 0, 0, size); err != nil {
		b.Fatal(err)
	}
	return fd
}

// syscallAppender appends buf at the i-th multiple of stride of fd with
// pwrite and makes it durable with fdatasync: no ring at all.
func syscallAppender(b *testing.B, name string, fd int, buf []byte, stride int64) *appender {
	return &appender{name: name, append: func(i int) {
		if _, err := unix.Pwrite(fd, buf, int64(i)*stride); err != nil {
			b.Fatal(err)
		}
		if err := unix.Fdatasync(fd); err != nil {
			b.Fatal(err)
		}
	}}
}

// directSector is the unit O_DIRECT batches are padded to: the logical
// block size of the disks we measure on.
const directSector = 512

func mustRing(b *testing.B) ring.Ring {
	r, err := ring.New(ring.Options{Kind: ring.Std, Entries: benchEntries})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	return r
}

// reapCancelled reaps the final completions of a batch of n ops and
// reports, instead of failing, a batch whose ops a deadline cancelled
// (ECANCELED, nothing else failed): nothing of it was performed.
func reapCancelled(b *testing.B, r ring.Ring, n int, cq []ring.Completion) bool {
	cancelled := false
	for left := n; left > 0; {
		n, err := r.Reap(cq)
		if err != nil {
			b.Fatal(err)
		}
		for _, c := range cq[:n] {
			if c.Deadline {
				continue
			}
			left--
			switch {
			case c.Err == nil:
			case errors.Is(c.Err, unix.ECANCELED):
				cancelled = true
			default:
				b.Fatalf("%s: %v", c.Code, c.Err)
			}
		}
	}
	return cancelled
}
