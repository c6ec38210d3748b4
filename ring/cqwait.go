package ring

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring/internal/uring"
)

// cqWaiter waits for the completion queue of an io_uring through Go's
// network poller instead of a blocking io_uring_enter.
//
// Why: a goroutine blocked in a system call keeps its P (the runtime's
// right to run Go code) until sysmon takes it away, 20 µs to 10 ms later.
// The reaper spends most of its life waiting for the disk, so on a
// 2-core machine a reaper blocked in io_uring_enter halved the CPU left
// to the rest of the pipeline, and a goroutine it woke right before
// blocking waited for the other P: 120-150 µs from a settled batch to the
// submitter taking the news at 64 writers, against 6-7 µs on the std
// backend (actors' stage timings, see README "Engine benchmark"). A
// goroutine parked in the poller holds no P and no thread.
//
// An io_uring fd is pollable: it is readable while the CQ holds entries,
// and every posted CQE wakes its poll waiters. The waiter owns a dup of
// the ring fd in non-blocking mode, registered with the poller by
// os.NewFile (epoll, edge-triggered); RawConn.Read re-arms before it
// checks the CQ, so a CQE posted between the check and the park wakes it.
//
// REQUIRES: one goroutine waits at a time (the ring's reaper, under
// reapMu); close only when no wait is running.
type cqWaiter struct {
	f  *os.File
	rc syscall.RawConn
}

// newCQWaiter returns a waiter for the ring open as fd, or an error when
// the poller does not take it (then the reaper blocks in io_uring_enter).
func newCQWaiter(fd int) (*cqWaiter, error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("ring: dup io_uring fd: %w", err)
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		return nil, fmt.Errorf("ring: io_uring fd non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(dup), "io_uring")
	// A file the poller refused has no deadlines: that is how os says so.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("ring: io_uring fd not pollable: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("ring: io_uring fd: %w", err)
	}
	return &cqWaiter{f: f, rc: rc}, nil
}

// wait parks until low's CQ holds an entry. Like uring.Ring.WaitCQE it
// first asks the kernel to flush an overflowed CQ, once.
func (w *cqWaiter) wait(low *uring.Ring) error {
	if low.Overflowed() {
		if err := low.FlushOverflow(); err != nil {
			return err
		}
	}
	err := w.rc.Read(func(uintptr) bool { return low.CQReady() > 0 })
	if err != nil {
		return fmt.Errorf("ring: wait for completions: %w", err)
	}
	return nil
}

func (w *cqWaiter) close() error {
	if err := w.f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("ring: close io_uring poll fd: %w", err)
	}
	return nil
}
