package uring

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BenchmarkWaitStrategies measures one durable 100-byte append at a time
// (a one-writer Put's I/O) in every way this binding can submit it and
// wait for it, against pwrite+fdatasync, each variant alone on the
// machine for a block of appends (as bench/'s targets run), the blocks
// taken in turn:
//
//	go test -run '^$' -bench WaitStrategies -benchtime 3000x ./ring/internal/uring
//
// (RINGPIPE_EXP_BLOCK sets the block, 250 by default; RINGPIPE_EXP_ONLY=a,b
// keeps the variants whose names contain a or b, and syscall.) Variants:
// syscall-dsync is pwritev2 RWF_DSYNC; uring-dsync-* one write with
// RWF_DSYNC, uring-link-* a write linked to an fdatasync; then how the
// completion is awaited: -enter in io_uring_enter (submit and wait in one
// call), -poll in Go's poller (as ring's cqWaiter), -spin with
// runtime.Gosched until the CQ holds it, -sleep10 a 10 µs kernel wait
// then spinning; sqpoll-* with IORING_SETUP_SQPOLL (a kernel thread takes
// the SQ; 50 ms idle). It reports each variant's p50 in µs, its ratio to
// syscall, and the p50 of the io_uring_enter that submits (where the
// submit is a call of its own).
//
// Session 17, 2-core VM, five quiet runs (ratios of p50 to
// pwrite+fdatasync): -enter 1.12-1.72×, -poll 1.21-1.92×, -spin
// 0.91-1.11×, -sleep10 0.90-1.10×, sqpoll-dsync-spin 0.77-0.87×; the
// submit of a -poll append takes 11-13 µs and of a -spin one 2.5 µs.
// (Under load the spinning variants collapse: 10-30× while a CI run
// shared the 2 cores.) What costs is waking
// an idle vCPU (the io-wq worker that does a buffered DSYNC write, then
// the waiting thread); what keeps a CPU busy avoids it, at the price of
// that CPU. In the engine (inline commit) the wait in io_uring_enter
// instead of the poller gained nothing measurable (BenchmarkStages and
// bench/, A/B, session 17), and polling lost (session 9).
const (
	expSQPoll     = 1 << 1
	expNeedWakeup = 1 << 0
	expSQWakeup   = 1 << 1
)

type expVariant struct {
	name string
	run  func(off int64) error
	lat  []time.Duration
}

func expFile(t testing.TB, n int64, direct bool) int {
	flags := unix.O_RDWR | unix.O_CREAT
	fd, err := unix.Open(t.TempDir()+"/log", flags, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if direct {
		// zero-filled, written blocks
		z := make([]byte, 1<<20)
		for off := int64(0); off < n; off += int64(len(z)) {
			if _, err := unix.Pwrite(fd, z, off); err != nil {
				t.Fatal(err)
			}
		}
	} else if err := unix.Fallocate(fd, 0, 0, n); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fsync(fd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func BenchmarkWaitStrategies(b *testing.B) {
	t := b
	rounds := max(b.N, 1)
	const rec = 100
	size := int64(rounds*rec) + 1<<20
	buf := make([]byte, rec)

	var vs []*expVariant
	subLat := map[string][]time.Duration{}
	defer func() {
		for n, l := range subLat {
			slices.Sort(l)
			b.ReportMetric(float64(l[len(l)/2])/1e3, n+"-submit-p50-µs")
		}
	}()
	{
		fd := expFile(t, size, false)
		vs = append(vs, &expVariant{name: "syscall", run: func(off int64) error {
			if _, err := unix.Pwrite(fd, buf, off); err != nil {
				return err
			}
			return unix.Fdatasync(fd)
		}})
	}
	{
		fd := expFile(t, size, false)
		vs = append(vs, &expVariant{name: "syscall-dsync", run: func(off int64) error {
			_, err := unix.Pwritev2(fd, [][]byte{buf}, off, unix.RWF_DSYNC)
			return err
		}})
	}
	// wait: "enter" (submit and wait in one io_uring_enter), "spin"
	// (Gosched until the CQ holds it), "poll" (Go's netpoller, as ring's
	// cqWaiter), "sleep10" (EXT_ARG 10 µs wait, then spin).
	mk := func(name string, sqpoll bool, link bool, wait string) {
		fd := expFile(t, size, false)
		var r *Ring
		var err error
		if sqpoll {
			p := Params{Flags: expSQPoll, SQThreadIdle: 50}
			f, e := setup(8, &p)
			if e != nil {
				t.Fatalf("%s: %v", name, e)
			}
			r = &Ring{fd: f, params: p}
			if err := r.mmap(); err != nil {
				t.Fatal(err)
			}
		} else {
			r, err = Setup(8, 0, []uint32{SetupNoSQArray, SetupSubmitAll})
			if err != nil {
				t.Fatal(err)
			}
		}
		var rc syscall.RawConn
		if wait == "poll" {
			dup, err := unix.FcntlInt(uintptr(r.fd), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			unix.SetNonblock(dup, true)
			f := os.NewFile(uintptr(dup), "io_uring")
			rc, _ = f.SyscallConn()
			t.Cleanup(func() { f.Close() })
		}
		t.Cleanup(func() { r.Close() })
		cq := make([]CQE, 4)
		ts := unix.Timespec{Nsec: 10_000}
		vs = append(vs, &expVariant{name: name, run: func(off int64) error {
			s := r.GetSQE()
			s.Opcode = OpWrite
			s.Fd = int32(fd)
			s.Addr = uint64(uintptr(unsafe.Pointer(&buf[0])))
			s.Len = rec
			s.Off = uint64(off)
			want := 1
			if link {
				s.Flags = SQELink
				f := r.GetSQE()
				f.Opcode = OpFsync
				f.Fd = int32(fd)
				f.OpFlags = FsyncDatasync
				want = 2
			} else {
				s.OpFlags = unix.RWF_DSYNC
			}
			if sqpoll {
				r.Flush()
				if atomic.LoadUint32(r.sqFlags)&expNeedWakeup != 0 {
					if _, err := r.Enter(0, 0, expSQWakeup); err != nil {
						return err
					}
				}
			} else if wait == "enter" {
				if _, err := r.Submit(uint32(want)); err != nil {
					return err
				}
			} else {
				t0 := time.Now()
				if _, err := r.Submit(0); err != nil {
					return err
				}
				subLat[name] = append(subLat[name], time.Since(t0))
			}
			got := 0
			slept := false
			for got < want {
				if r.CQReady() == 0 {
					switch wait {
					case "spin":
						runtime.Gosched()
					case "poll":
						if err := rc.Read(func(uintptr) bool { return r.CQReady() > 0 }); err != nil {
							return err
						}
					case "sleep10":
						if slept {
							runtime.Gosched()
							continue
						}
						slept = true
						arg := struct {
							sigmask, sigmaskSz, pad uint64
							ts                      uint64
						}{ts: uint64(uintptr(unsafe.Pointer(&ts)))}
						unix.Syscall6(sysEnter, uintptr(r.fd), 0, 1, enterGetEvents|1<<3, uintptr(unsafe.Pointer(&arg)), unsafe.Sizeof(arg))
					default:
						if _, err := r.Enter(0, 1, enterGetEvents); err != nil && err != unix.EINTR {
							return err
						}
					}
					continue
				}
				n := r.PeekCQEs(cq)
				for _, c := range cq[:n] {
					if err := Errno(c.Res); err != nil {
						return err
					}
				}
				got += n
			}
			runtime.KeepAlive(buf)
			return nil
		}})
	}
	mk("uring-dsync-enter", false, false, "enter")
	mk("uring-dsync-poll", false, false, "poll")
	mk("uring-dsync-spin", false, false, "spin")
	mk("uring-dsync-sleep10", false, false, "sleep10")
	mk("uring-link-enter", false, true, "enter")
	mk("uring-link-poll", false, true, "poll")
	mk("sqpoll-dsync-enter", true, false, "enter")
	mk("sqpoll-dsync-spin", true, false, "spin")
	mk("sqpoll-link-enter", true, true, "enter")

	block := 250
	if v := os.Getenv("RINGPIPE_EXP_BLOCK"); v != "" {
		if _, err := fmt.Sscan(v, &block); err != nil || block < 1 {
			b.Fatalf("RINGPIPE_EXP_BLOCK=%q: want a positive count", v)
		}
	}
	b.ResetTimer()
	offs := make([]int64, len(vs))
	for done := 0; done < rounds; done += block {
		for vi, v := range vs {
			if !expWanted(v.name) {
				continue
			}
			for range block {
				t0 := time.Now()
				if err := v.run(offs[vi]); err != nil {
					t.Fatalf("%s: %v", v.name, err)
				}
				v.lat = append(v.lat, time.Since(t0))
				offs[vi] += rec
			}
		}
	}
	b.StopTimer()
	var base time.Duration
	for _, v := range vs {
		if len(v.lat) == 0 {
			continue
		}
		slices.Sort(v.lat)
		p50 := v.lat[len(v.lat)/2]
		if base == 0 {
			base = p50
		}
		b.ReportMetric(float64(p50)/1e3, v.name+"-p50-µs")
		b.ReportMetric(float64(p50)/float64(base), v.name+"/syscall")
	}
}

func expWanted(name string) bool {
	w := os.Getenv("RINGPIPE_EXP_ONLY")
	if w == "" || name == "syscall" {
		return true
	}
	for _, p := range strings.Split(w, ",") {
		if strings.Contains(name, p) {
			return true
		}
	}
	return false
}
