package ringtest

import (
	"bytes"
	"fmt"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring"
)

// Run runs the conformance suite against the backend h adapts. Every
// subtest builds its own ring with h.New.
//
// NB: on Real backends one subtest lowers RLIMIT_FSIZE, which is
// process-wide, for the duration of one write: do not call Run from a test
// that runs in parallel (t.Parallel) with other tests that write files.
func Run(t *testing.T, h Harness) {
	require.NotNil(t, h.New, "ringtest: Harness.New is required")
	require.True(t, h.Real || (h.InjectShortWrite != nil && h.InjectDelay != nil),
		"ringtest: a backend that is not Real must provide InjectShortWrite and InjectDelay")

	t.Run("Op", func(t *testing.T) {
		t.Run("Nop", func(t *testing.T) { testNop(t, h) })
		t.Run("Tokens", func(t *testing.T) { testTokens(t, h) })
		t.Run("Open", func(t *testing.T) { testOpen(t, h) })
		t.Run("Close", func(t *testing.T) { testClose(t, h) })
		t.Run("ReadWrite", func(t *testing.T) { testReadWrite(t, h) })
		t.Run("CurrentPosition", func(t *testing.T) { testCurrentPosition(t, h) })
		t.Run("ReadvWritev", func(t *testing.T) { testReadvWritev(t, h) })
		t.Run("Sync", func(t *testing.T) { testSync(t, h) })
		t.Run("Fallocate", func(t *testing.T) { testFallocate(t, h) })
		t.Run("Rename", func(t *testing.T) { testRename(t, h) })
		t.Run("Unlink", func(t *testing.T) { testUnlink(t, h) })
		t.Run("Mkdir", func(t *testing.T) { testMkdir(t, h) })
		t.Run("Stat", func(t *testing.T) { testStat(t, h) })
		t.Run("ReadDir", func(t *testing.T) { testReadDir(t, h) })
		t.Run("Lock", func(t *testing.T) { testLock(t, h) })
		t.Run("DataEnd", func(t *testing.T) { testDataEnd(t, h) })
	})
	t.Run("DSync", func(t *testing.T) {
		t.Run("Write", func(t *testing.T) { testDSyncWrite(t, h) })
		t.Run("ShortWrite", func(t *testing.T) { testDSyncShortWrite(t, h) })
		t.Run("Deadline", func(t *testing.T) { testDSyncDeadline(t, h) })
	})
	t.Run("Link", func(t *testing.T) {
		t.Run("Order", func(t *testing.T) { testLinkOrder(t, h) })
		t.Run("FailureCancelsRest", func(t *testing.T) { testLinkFailure(t, h) })
	})
	t.Run("ShortWrite", func(t *testing.T) {
		t.Run("ContinuesChain", func(t *testing.T) { testShortWriteChain(t, h) })
		t.Run("Counted", func(t *testing.T) { testShortWriteCounted(t, h) })
	})
	t.Run("Deadline", func(t *testing.T) {
		t.Run("Fires", func(t *testing.T) { testDeadlineFires(t, h) })
		t.Run("DoesNotFire", func(t *testing.T) { testDeadlineQuiet(t, h) })
		t.Run("RunningSync", func(t *testing.T) { testDeadlineRunningSync(t, h) })
	})
	t.Run("Capacity", func(t *testing.T) {
		t.Run("SubmitBlocksWhenFull", func(t *testing.T) { testSubmitBlocks(t, h) })
		t.Run("BackPressure", func(t *testing.T) { testBackPressure(t, h) })
		t.Run("CQOverflow", func(t *testing.T) { testCQOverflow(t, h) })
	})
	t.Run("Close", func(t *testing.T) {
		t.Run("InFlight", func(t *testing.T) { testCloseInFlight(t, h) })
		t.Run("LeftoverCompletions", func(t *testing.T) { testCloseLeftover(t, h) })
	})
	t.Run("BadInput", func(t *testing.T) {
		t.Run("ClosedRing", func(t *testing.T) { testBadClosed(t, h) })
		t.Run("Malformed", func(t *testing.T) { testBadMalformed(t, h) })
		t.Run("BadFD", func(t *testing.T) { testBadFD(t, h) })
		t.Run("UnalignedDirect", func(t *testing.T) { testUnalignedDirect(t, h) })
	})
	t.Run("ConcurrentSubmitters", func(t *testing.T) { testConcurrentSubmitters(t, h) })
}

// opTimeout bounds every wait for completions. It is generous because the
// race detector on two loaded cores can be slow; a healthy backend answers
// in milliseconds.
const opTimeout = 30 * time.Second

// env is one subtest's ring and directory.
type env struct {
	t   *testing.T
	h   Harness
	r   ring.Ring
	dir string
	tok uint64         // the next token do assigns
	fds map[int32]bool // opened by open and not yet closed by close
}

func newEnv(t *testing.T, h Harness, opts ring.Options) *env {
	t.Helper()
	r, dir := h.New(t, opts)
	require.NotNil(t, r)
	e := &env{t: t, h: h, r: r, dir: dir, tok: 1 << 32, fds: make(map[int32]bool)}
	t.Cleanup(func() {
		// Real fds belong to the process, so they are closed directly:
		// the ring may be closed already. A simulated backend's fds go
		// with its ring.
		if h.Real {
			for fd := range e.fds {
				_ = unix.Close(int(fd))
			}
		}
	})
	return e
}

// path returns name inside the subtest's directory.
func (e *env) path(name string) string { return e.dir + "/" + name }

// reapUntil reaps completions, in the order Reap hands them out, until done
// says it has enough. If that takes longer than opTimeout it closes the
// ring (which wakes Reap) and fails the test. A Reap error ends the wait
// and is returned with what was reaped.
func (e *env) reapUntil(done func(got []ring.Completion) bool) ([]ring.Completion, error) {
	e.t.Helper()
	type result struct {
		got []ring.Completion
		err error
	}
	resc := make(chan result, 1)
	go func() {
		var res result
		buf := make([]ring.Completion, 16)
		for !done(res.got) {
			n, err := e.r.Reap(buf)
			res.got = append(res.got, buf[:n]...)
			if err != nil {
				res.err = err
				break
			}
		}
		resc <- res
	}()
	timer := time.NewTimer(opTimeout)
	defer timer.Stop()
	select {
	case res := <-resc:
		return res.got, res.err
	case <-timer.C:
		// Closing the ring wakes the reaper. Close itself may wait for an
		// op blocked on a pipe that only the test's cleanups unblock, so
		// neither is waited for here.
		go func() { _ = e.r.Close() }()
		e.t.Fatalf("ringtest: still waiting for completions after %v", opTimeout)
		return nil, nil
	}
}

// reap reaps until n final Completions (and any notices) arrived.
func (e *env) reap(n int) []ring.Completion {
	e.t.Helper()
	got, err := e.reapUntil(func(got []ring.Completion) bool { return countFinal(got) >= n })
	require.NoError(e.t, err, "Reap")
	return got
}

func countFinal(cs []ring.Completion) int {
	n := 0
	for _, c := range cs {
		if !c.Deadline {
			n++
		}
	}
	return n
}

// do submits ops as one batch with tokens of its own and returns their
// final Completions in the order of ops. It checks what every Completion
// must satisfy: one final Completion per op, its Code, the buffers handed
// back, no Deadline notice (ops passed to do carry no deadline) and no
// Late flag.
func (e *env) do(ops ...ring.Op) []ring.Completion {
	e.t.Helper()
	out, _ := e.doArrival(ops...)
	return out
}

// doArrival is do that also returns the op indexes in the order their
// final Completions were reaped.
func (e *env) doArrival(ops ...ring.Op) (byOp []ring.Completion, arrival []int) {
	e.t.Helper()
	base := e.tok
	e.tok += uint64(len(ops))
	mine := make([]ring.Op, len(ops))
	for i := range ops {
		mine[i] = ops[i]
		mine[i].Token = base + uint64(i)
	}
	require.NoError(e.t, e.r.Submit(mine), "Submit")
	got := e.reap(len(ops))
	out := make([]ring.Completion, len(ops))
	seen := make([]bool, len(ops))
	for _, c := range got {
		require.False(e.t, c.Deadline, "unexpected Deadline notice for token %d", c.Token)
		i := c.Token - base
		require.Less(e.t, i, uint64(len(ops)), "completion with unknown token %d", c.Token)
		require.False(e.t, seen[i], "two final completions for op %d (%s)", i, ops[i].Code)
		seen[i] = true
		out[i] = c
		arrival = append(arrival, int(i))
		checkHandedBack(e.t, mine[i], c)
		assert.False(e.t, c.Late, "op %d (%s) is Late without a deadline", i, ops[i].Code)
	}
	return out, arrival
}

// do1 performs one op and requires it to succeed.
func (e *env) do1(op ring.Op) ring.Completion {
	e.t.Helper()
	c := e.do(op)[0]
	require.NoError(e.t, c.Err, "%s %s", op.Code, op.Path)
	return c
}

// checkHandedBack checks that c answers op: same token and code, and the
// very buffers op carried.
func checkHandedBack(t *testing.T, op ring.Op, c ring.Completion) {
	t.Helper()
	assert.Equal(t, op.Token, c.Token)
	assert.Equal(t, op.Code, c.Code, "token %d", op.Token)
	assert.True(t, sameBuf(op.Buf, c.Buf), "token %d (%s): Buf not handed back", op.Token, op.Code)
	if assert.Len(t, c.Bufs, len(op.Bufs), "token %d (%s): Bufs not handed back", op.Token, op.Code) {
		for i := range op.Bufs {
			assert.True(t, sameBuf(op.Bufs[i], c.Bufs[i]), "token %d (%s): Bufs[%d] not handed back", op.Token, op.Code, i)
		}
	}
}

// sameBuf reports whether a and b are the same slice: same memory, length
// and capacity.
func sameBuf(a, b []byte) bool {
	return len(a) == len(b) && cap(a) == cap(b) && (a == nil) == (b == nil) &&
		unsafe.SliceData(a) == unsafe.SliceData(b)
}

// open opens name in the subtest's directory and returns the fd; the fd is
// closed when the test ends (if the ring is still open then).
func (e *env) open(name string, flags int, mode uint32) int32 {
	e.t.Helper()
	return e.openPath(e.path(name), flags, mode)
}

// openPath is open with a full path.
func (e *env) openPath(path string, flags int, mode uint32) int32 {
	e.t.Helper()
	c := e.do1(ring.Op{Code: ring.OpOpen, Path: path, Flags: flags, Mode: mode})
	require.GreaterOrEqual(e.t, c.Res, int64(0), "open returned a negative fd")
	e.fds[int32(c.Res)] = true
	return int32(c.Res)
}

// close closes fd and requires it to succeed.
func (e *env) close(fd int32) {
	e.t.Helper()
	delete(e.fds, fd)
	e.do1(ring.Op{Code: ring.OpClose, FD: fd})
}

// write writes b at off to fd and requires all of it to be written.
func (e *env) write(fd int32, b []byte, off int64) {
	e.t.Helper()
	c := e.do1(ring.Op{Code: ring.OpWrite, FD: fd, Buf: b, Offset: off})
	require.Equal(e.t, int64(len(b)), c.Res, "write of %d bytes", len(b))
}

// size returns the size of the file open as fd.
func (e *env) size(fd int32) int64 {
	e.t.Helper()
	return e.do1(ring.Op{Code: ring.OpStat, FD: fd}).Res
}

// readFile returns the contents of name, read through the ring.
func (e *env) readFile(name string) []byte {
	e.t.Helper()
	fd := e.open(name, unix.O_RDONLY, 0)
	defer e.close(fd)
	n := e.size(fd)
	buf := make([]byte, n)
	if n == 0 {
		return buf
	}
	c := e.do1(ring.Op{Code: ring.OpRead, FD: fd, Buf: buf, Offset: 0})
	require.Equal(e.t, n, c.Res, "read of %s", name)
	return buf
}

// writeFile creates (or truncates) name with data and closes it.
func (e *env) writeFile(name string, data []byte) {
	e.t.Helper()
	fd := e.open(name, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, 0o644)
	if len(data) > 0 {
		e.write(fd, data, 0)
	}
	e.close(fd)
}

// pattern returns n bytes that differ with seed and position, so that a
// misplaced or stale range does not compare equal.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7+i/251) ^ seed
	}
	return b
}

// describe lists completions for a failure message.
func describe(cs []ring.Completion) string {
	var buf bytes.Buffer
	for i, c := range cs {
		if i == 20 {
			fmt.Fprintf(&buf, "... (%d more)", len(cs)-i)
			break
		}
		fmt.Fprintf(&buf, "{tok %d %s res %d err %v deadline %v late %v} ", c.Token, c.Code, c.Res, c.Err, c.Deadline, c.Late)
	}
	return buf.String()
}

// tokenSet checks that every final completion's token is in want exactly
// once and that every token of want came back.
func tokenSet(t *testing.T, want map[uint64]bool, got []ring.Completion) {
	t.Helper()
	seen := make(map[uint64]int, len(want))
	for _, c := range got {
		if c.Deadline {
			continue
		}
		if !want[c.Token] {
			t.Errorf("completion for token %d that was never submitted (or was refused)", c.Token)
			continue
		}
		seen[c.Token]++
	}
	missing, dup := 0, 0
	for tok := range want {
		switch seen[tok] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
	}
	assert.Zero(t, missing, "tokens without a final completion (of %d)", len(want))
	assert.Zero(t, dup, "tokens with more than one final completion (of %d)", len(want))
}
