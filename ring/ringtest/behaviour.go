package ringtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring"
)

// This file checks the invariants of package ring's doc: linked chains,
// short-write continuation, deadlines, capacity, Close and bad input.

// badFD is a descriptor number that is never open: it is above any
// RLIMIT_NOFILE a process gets.
const badFD = int32(math.MaxInt32)

// testLinkOrder runs two chains of overlapping writes in one batch: each
// chain's writes must happen in order (the last one wins) and complete in
// order, with the fdatasync after them.
func testLinkOrder(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	files := []string{"a", "b"}
	fds := []int32{e.open("a", unix.O_RDWR|unix.O_CREAT, 0o644), e.open("b", unix.O_RDWR|unix.O_CREAT, 0o644)}
	const steps = 12
	var ops []ring.Op
	chainOf := map[int]int{} // op index → chain
	for ch, fd := range fds {
		for i := 0; i < steps; i++ {
			chainOf[len(ops)] = ch
			ops = append(ops, ring.Op{Code: ring.OpWrite, FD: fd, Offset: 0, Link: true,
				Buf: []byte(fmt.Sprintf("%s%03d", files[ch], i))})
		}
		chainOf[len(ops)] = ch
		ops = append(ops, ring.Op{Code: ring.OpFdatasync, FD: fd, Link: true})
		chainOf[len(ops)] = ch
		ops = append(ops, ring.Op{Code: ring.OpStat, FD: fd}) // ends the chain
	}
	cs, arrival := e.doArrival(ops...)
	for i, c := range cs {
		require.NoError(t, c.Err, "op %d (%s)", i, ops[i].Code)
	}
	last := map[int]int{0: -1, 1: -1}
	for _, i := range arrival {
		ch := chainOf[i]
		assert.Greater(t, i, last[ch], "chain %d: op %d completed after op %d", ch, last[ch], i)
		last[ch] = i
	}
	for ch, name := range files {
		assert.Equal(t, fmt.Sprintf("%s%03d", name, steps-1), string(e.readFile(name)), "chain %d: the last write wins", ch)
		assert.Equal(t, int64(4), cs[(ch+1)*(steps+2)-1].Res, "chain %d: stat after the writes", ch)
	}
}

// testLinkFailure checks that a failing chain member cancels the rest of
// its chain (ECANCELED, not performed) and nothing outside the chain.
func testLinkFailure(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	fd := e.open("f", unix.O_RDWR|unix.O_CREAT, 0o644)
	cs := e.do(
		// A chain that fails in the middle.
		ring.Op{Code: ring.OpWrite, FD: fd, Buf: []byte("xxxx"), Offset: 0, Link: true},
		ring.Op{Code: ring.OpWrite, FD: badFD, Buf: []byte("bad"), Offset: 0, Link: true},
		ring.Op{Code: ring.OpWrite, FD: fd, Buf: []byte("yyyy"), Offset: 0, Link: true},
		ring.Op{Code: ring.OpFdatasync, FD: fd},
		// Independent ops after it in the same batch.
		ring.Op{Code: ring.OpNop},
		ring.Op{Code: ring.OpWrite, FD: fd, Buf: []byte("zz"), Offset: 100},
		// A chain whose first member fails.
		ring.Op{Code: ring.OpFsync, FD: badFD, Link: true},
		ring.Op{Code: ring.OpWrite, FD: fd, Buf: []byte("QQQQ"), Offset: 200, Link: true},
		ring.Op{Code: ring.OpNop},
	)
	assert.NoError(t, cs[0].Err, "the member before the failure")
	assert.ErrorIs(t, cs[1].Err, unix.EBADF, "the failing member")
	assert.ErrorIs(t, cs[2].Err, unix.ECANCELED, "a write after the failure")
	assert.ErrorIs(t, cs[3].Err, unix.ECANCELED, "the fdatasync after the failure")
	assert.NoError(t, cs[4].Err, "an unlinked nop after the chain")
	assert.NoError(t, cs[5].Err, "an unlinked write after the chain")
	assert.ErrorIs(t, cs[6].Err, unix.EBADF, "a failing first member")
	assert.ErrorIs(t, cs[7].Err, unix.ECANCELED)
	assert.ErrorIs(t, cs[8].Err, unix.ECANCELED)

	got := e.readFile("f")
	require.Len(t, got, 102, "the write at 200 was cancelled, so it must not extend the file")
	assert.Equal(t, "xxxx", string(got[:4]), "the cancelled write must not happen")
	assert.Equal(t, "zz", string(got[100:]))
}

// testShortWriteChain checks that a write cut short is continued and still
// carries its chain: the fdatasync linked to it runs after all of it.
func testShortWriteChain(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	fd := e.open("f", unix.O_RDWR|unix.O_CREAT, 0o644)
	before := e.r.Stats()
	data := pattern(256<<10, 9)
	var ops []ring.Op
	var drained <-chan []byte
	if h.Real {
		// A pipe holding one page with a reader draining it: io_uring's
		// non-blocking attempt writes what fits and returns short. (std's
		// blocking write(2) waits for the reader instead; either way the
		// whole write must arrive, in order, before the fdatasync runs.)
		p := newPipe(t, 4096)
		drained = p.drain(len(data))
		ops = []ring.Op{
			{Code: ring.OpWrite, FD: p.w, Buf: data, Offset: -1, Link: true},
			{Code: ring.OpFdatasync, FD: fd},
		}
	} else {
		h.InjectShortWrite(t, e.r)
		ops = []ring.Op{
			{Code: ring.OpWrite, FD: fd, Buf: data, Offset: 0, Link: true},
			{Code: ring.OpFdatasync, FD: fd},
		}
	}
	cs, arrival := e.doArrival(ops...)
	require.NoError(t, cs[0].Err, "the write")
	assert.Equal(t, int64(len(data)), cs[0].Res, "the write completes in full")
	assert.NoError(t, cs[1].Err, "the linked fdatasync runs after the continued write")
	assert.Equal(t, []int{0, 1}, arrival, "the write completes before its fdatasync")
	after := e.r.Stats()
	assert.Equal(t, before.Syncs+1, after.Syncs, "the fdatasync was performed")
	if h.Real {
		select {
		case got := <-drained:
			assert.True(t, string(got) == string(data), "the pipe carried %d bytes, want %d in order", len(got), len(data))
		case <-time.After(opTimeout):
			t.Fatal("the pipe reader did not finish")
		}
		t.Logf("short-write retries through a %d-byte pipe: %d", 4096, after.ShortIORetries-before.ShortIORetries)
	} else {
		assert.Greater(t, after.ShortIORetries, before.ShortIORetries, "Stats.ShortIORetries counts the continuation")
		assert.Equal(t, data, e.readFile("f"))
	}
}

// testShortWriteCounted provokes a short write that Stats must count. On a
// real kernel, RLIMIT_FSIZE cuts a writev at the limit (a short write) and
// fails its continuation with EFBIG, which cancels the linked fdatasync.
// Elsewhere an injected short writev must be continued in full.
func testShortWriteCounted(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	fd := e.open("f", unix.O_RDWR|unix.O_CREAT, 0o644)
	bufs := [][]byte{pattern(32<<10, 1), pattern(32<<10, 2), pattern(32<<10, 3), pattern(32<<10, 4)}
	ops := []ring.Op{
		{Code: ring.OpWritev, FD: fd, Bufs: bufs, Offset: 0, Link: true},
		{Code: ring.OpFdatasync, FD: fd},
	}
	before := e.r.Stats()
	if !h.Real {
		h.InjectShortWrite(t, e.r)
		cs := e.do(ops...)
		require.NoError(t, cs[0].Err)
		assert.Equal(t, int64(128<<10), cs[0].Res)
		assert.NoError(t, cs[1].Err)
		assert.Greater(t, e.r.Stats().ShortIORetries, before.ShortIORetries, "Stats.ShortIORetries")
		var want []byte
		for _, b := range bufs {
			want = append(want, b...)
		}
		assert.Equal(t, want, e.readFile("f"))
		return
	}

	const limit = 64 << 10
	var cs []ring.Completion
	func() {
		// RLIMIT_FSIZE is process-wide, so it is lowered only for this one
		// batch. A write past it raises SIGXFSZ, ignored meanwhile.
		signal.Ignore(syscall.SIGXFSZ)
		defer signal.Reset(syscall.SIGXFSZ)
		var old unix.Rlimit
		require.NoError(t, unix.Getrlimit(unix.RLIMIT_FSIZE, &old))
		require.NoError(t, unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: limit, Max: old.Max}))
		defer func() { require.NoError(t, unix.Setrlimit(unix.RLIMIT_FSIZE, &old)) }()
		cs = e.do(ops...)
	}()
	assert.ErrorIs(t, cs[0].Err, unix.EFBIG, "the continuation beyond RLIMIT_FSIZE")
	assert.ErrorIs(t, cs[1].Err, unix.ECANCELED, "the fdatasync linked to a failed write")
	assert.Greater(t, e.r.Stats().ShortIORetries, before.ShortIORetries,
		"Stats.ShortIORetries counts the continuation of the write cut at the limit")
	assert.Equal(t, int64(limit), e.size(fd), "the part below the limit was written")
	got := e.readFile("f")
	assert.True(t, string(got) == string(append(bufs[0], bufs[1]...)), "the bytes below the limit")
}

// testDeadlineFires checks invariant 4: a notice first, then the final
// Completion with Late set, cancelled or completed.
func testDeadlineFires(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	const tok = 77
	var op ring.Op
	var p *pipe
	if h.Real {
		// Nothing is written to the pipe, so the read blocks.
		p = newPipe(t, 0)
		op = ring.Op{Code: ring.OpRead, Token: tok, FD: p.r, Buf: make([]byte, 8), Offset: -1, Deadline: 5 * time.Millisecond}
	} else {
		fd := e.open("f", unix.O_RDWR|unix.O_CREAT, 0o644)
		h.InjectDelay(t, e.r, ring.OpFdatasync, 50*time.Millisecond)
		op = ring.Op{Code: ring.OpFdatasync, Token: tok, FD: fd, Deadline: 5 * time.Millisecond}
	}
	before := e.r.Stats()
	require.NoError(t, e.r.Submit([]ring.Op{op}))
	got, err := e.reapUntil(func(got []ring.Completion) bool { return len(got) >= 1 })
	require.NoError(t, err)
	notice := got[0]
	assert.True(t, notice.Deadline, "the first completion is the Deadline notice: %s", describe(got))
	assert.Equal(t, uint64(tok), notice.Token)
	assert.Equal(t, op.Code, notice.Code)
	if countFinal(got) == 0 {
		if h.Real {
			// std cannot cancel a blocked read: feed it so it completes late.
			_, err := unix.Write(int(p.w), []byte("deadline"))
			require.NoError(t, err)
		}
		got = append(got, e.reap(1)...)
	}
	require.Len(t, got, 2, "one notice and one final completion: %s", describe(got))
	final := got[1]
	assert.False(t, final.Deadline)
	assert.True(t, final.Late, "the final completion after a notice is Late")
	assert.Equal(t, uint64(tok), final.Token)
	if final.Err != nil {
		assert.ErrorIs(t, final.Err, unix.ECANCELED, "a late op is either cancelled or completes")
	} else if h.Real {
		assert.Equal(t, int64(8), final.Res)
		assert.Equal(t, "deadline", string(final.Buf))
	}
	checkHandedBack(t, op, final)
	st := e.r.Stats()
	assert.Equal(t, before.DeadlinesFired+1, st.DeadlinesFired, "Stats.DeadlinesFired")
	assert.Equal(t, before.Completed+1, st.Completed, "a notice is not a completion")
}

// testDeadlineRunningSync checks invariant 4 for an fdatasync that is
// already running when its deadline passes (on io_uring, in a kernel
// worker, where nothing can cancel it): the notice must come all the
// same, or a stalled sync is never noticed. (The io_uring backend once
// took its deadlines from LINK_TIMEOUT and missed exactly this case: the
// timeout completes with -EALREADY there, not -ETIME.) Real backends only:
// the sync's own duration (several MiB dirty) is what outlasts the
// deadline.
func testDeadlineRunningSync(t *testing.T, h Harness) {
	if !h.Real {
		t.Skip("needs a real disk: the sync must outlast its deadline while running")
	}
	e := newEnv(t, h, ring.Options{})
	fd := e.open("f", unix.O_RDWR|unix.O_CREAT, 0o644)
	const tok = 91
	before := e.r.Stats()
	buf := pattern(8<<20, 3)
	require.NoError(t, e.r.Submit([]ring.Op{
		{Code: ring.OpWrite, FD: fd, Buf: buf, Offset: 0, Link: true},
		{Code: ring.OpFdatasync, Token: tok, FD: fd, Deadline: time.Nanosecond},
	}))
	got, err := e.reapUntil(func(got []ring.Completion) bool { return countFinal(got) >= 2 })
	require.NoError(t, err)
	var notices, finals []ring.Completion
	for _, c := range got {
		if c.Token != tok {
			continue
		}
		if c.Deadline {
			notices = append(notices, c)
		} else {
			finals = append(finals, c)
		}
	}
	require.Len(t, notices, 1, "one Deadline notice for the sync: %s", describe(got))
	require.Len(t, finals, 1, "one final completion for the sync: %s", describe(got))
	assert.True(t, finals[0].Late, "the sync's final completion is Late")
	if finals[0].Err != nil {
		assert.ErrorIs(t, finals[0].Err, unix.ECANCELED, "a late sync is either cancelled or completes")
	}
	assert.Equal(t, before.DeadlinesFired+1, e.r.Stats().DeadlinesFired, "Stats.DeadlinesFired")
}

// testDeadlineQuiet checks that fast ops with a generous deadline get no
// notice and no Late flag, and that no notice turns up afterwards.
func testDeadlineQuiet(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	fd := e.open("f", unix.O_RDWR|unix.O_CREAT, 0o644)
	const d = time.Minute
	cs := e.do(
		ring.Op{Code: ring.OpWrite, FD: fd, Buf: pattern(4096, 0), Offset: 0, Deadline: d, Link: true},
		ring.Op{Code: ring.OpFdatasync, FD: fd, Deadline: d},
		ring.Op{Code: ring.OpNop, Deadline: d},
	)
	for _, c := range cs {
		assert.NoError(t, c.Err)
	}
	n, err := e.r.TryReap(make([]ring.Completion, 4))
	require.NoError(t, err)
	assert.Zero(t, n, "nothing more after the final completions")
	assert.Zero(t, e.r.Stats().DeadlinesFired)
}

// testSubmitBlocks checks that Submit waits while Capacity() ops are in
// flight and proceeds once one is reaped.
func testSubmitBlocks(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{Entries: 8, Capacity: 16})
	capacity := e.r.Capacity()
	require.LessOrEqual(t, capacity, 4096, "a small Capacity keeps this test cheap")
	want := map[uint64]bool{}
	for tok := 0; tok < capacity; {
		var batch []ring.Op
		for ; tok < capacity && len(batch) < 8; tok++ {
			batch = append(batch, ring.Op{Code: ring.OpNop, Token: uint64(tok)})
			want[uint64(tok)] = true
		}
		require.NoError(t, e.r.Submit(batch))
	}
	extra := uint64(capacity)
	want[extra] = true
	submitted := make(chan error, 1)
	go func() { submitted <- e.r.Submit([]ring.Op{{Code: ring.OpNop, Token: extra}}) }()
	// A negative check needs some wait; 50 ms is long enough for a
	// non-blocking Submit to return on any machine.
	select {
	case err := <-submitted:
		t.Fatalf("Submit returned (%v) with %d of %d ops in flight", err, capacity, capacity)
	case <-time.After(50 * time.Millisecond):
	}
	got, err := e.reapUntil(func(got []ring.Completion) bool { return len(got) >= 1 })
	require.NoError(t, err)
	select {
	case err := <-submitted:
		require.NoError(t, err, "Submit after a Reap made room")
	case <-time.After(opTimeout):
		_ = e.r.Close() // wakes the blocked Submit
		<-submitted
		t.Fatal("Submit still blocked after a Reap made room")
	}
	got = append(got, e.reap(capacity+1-countFinal(got))...)
	tokenSet(t, want, got)
}

// testBackPressure submits far more than Capacity() from one goroutine
// while another reaps: nothing is lost, every token comes back once.
func testBackPressure(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{Entries: 8, Capacity: 16})
	fd := e.open("f", unix.O_RDWR|unix.O_CREAT, 0o644)
	const total = 2000
	want := map[uint64]bool{}
	for tok := uint64(0); tok < total; tok++ {
		want[tok] = true
	}
	errc := make(chan error, 1)
	go func() {
		tok := uint64(0)
		for size := 1; tok < total; size = size%8 + 1 {
			var batch []ring.Op
			for ; tok < total && len(batch) < size; tok++ {
				op := ring.Op{Code: ring.OpNop, Token: tok}
				if tok%5 == 0 {
					op = ring.Op{Code: ring.OpWrite, Token: tok, FD: fd, Buf: binary.LittleEndian.AppendUint64(nil, tok), Offset: int64(tok) * 8}
				}
				batch = append(batch, op)
			}
			if err := e.r.Submit(batch); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	got := e.reap(total)
	require.NoError(t, <-errc, "Submit")
	tokenSet(t, want, got)
	for _, c := range got {
		assert.NoError(t, c.Err, "token %d", c.Token)
	}
	file := e.readFile("f")
	for tok := uint64(0); tok < total; tok += 5 {
		require.Equal(t, tok, binary.LittleEndian.Uint64(file[tok*8:]), "record of token %d", tok)
	}
}

// testCQOverflow fills more completions than io_uring's CQ holds (2 ×
// Entries) before reaping any: every backend must deliver all of them.
func testCQOverflow(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{Entries: 8, Capacity: 64})
	require.GreaterOrEqual(t, e.r.Capacity(), 64, "the harness must honour Options.Capacity")
	before := e.r.Stats()
	want := map[uint64]bool{}
	for b := 0; b < 8; b++ {
		batch := make([]ring.Op, 8)
		for i := range batch {
			tok := uint64(b*8 + i)
			batch[i] = ring.Op{Code: ring.OpNop, Token: tok}
			want[tok] = true
		}
		require.NoError(t, e.r.Submit(batch), "batch %d", b)
	}
	got := e.reap(64)
	tokenSet(t, want, got)
	st := e.r.Stats()
	assert.Equal(t, before.Completed+64, st.Completed)
	n, err := e.r.TryReap(make([]ring.Completion, 8))
	require.NoError(t, err)
	assert.Zero(t, n, "nothing beyond the 64")
	t.Logf("CQ overflows flushed: %d", st.CQOverflows-before.CQOverflows)
}

// testCloseInFlight closes a ring with chains, nops and (on a real kernel)
// a read blocked on a pipe in flight, while a reaper runs and Submit races
// Close. Every accepted op gets exactly one final completion, Reap ends
// with ErrClosed, and later calls are refused without panicking.
func testCloseInFlight(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	fd := e.open("f", unix.O_RDWR|unix.O_CREAT, 0o644)
	want := map[uint64]bool{}
	tok := uint64(0)
	submit := func(ops ...ring.Op) error {
		for i := range ops {
			ops[i].Token = tok + uint64(i)
		}
		err := e.r.Submit(ops)
		if err == nil {
			for i := range ops {
				want[tok+uint64(i)] = true
			}
		}
		tok += uint64(len(ops))
		return err
	}
	chainStart := map[uint64]bool{}
	// Enough chains that Close finds some still queued or running: 240
	// ops, within the default Capacity of every backend (256 on io_uring).
	for i := 0; i < 80; i++ {
		chainStart[tok] = true
		require.NoError(t, submit(
			ring.Op{Code: ring.OpWrite, FD: fd, Buf: pattern(4096, byte(i)), Offset: int64(i) * 4096, Link: true},
			ring.Op{Code: ring.OpFdatasync, FD: fd}))
		require.NoError(t, submit(ring.Op{Code: ring.OpNop}))
	}
	var p *pipe
	pipeTok := uint64(math.MaxUint64)
	if h.Real {
		p = newPipe(t, 0)
		pipeTok = tok
		require.NoError(t, submit(ring.Op{Code: ring.OpRead, FD: p.r, Buf: make([]byte, 8), Offset: -1}))
	}

	type result struct {
		got []ring.Completion
		err error
	}
	reaped := make(chan result, 1)
	go func() {
		var res result
		buf := make([]ring.Completion, 7)
		for {
			n, err := e.r.Reap(buf)
			res.got = append(res.got, buf[:n]...)
			if err != nil {
				res.err = err
				break
			}
		}
		reaped <- res
	}()
	closed := make(chan error, 1)
	go func() { closed <- e.r.Close() }()

	// Submit races Close until Close refuses it.
	stop := time.Now().Add(opTimeout)
	for {
		err := submit(ring.Op{Code: ring.OpNop})
		if errors.Is(err, ring.ErrClosed) {
			break
		}
		require.NoError(t, err, "Submit while closing")
		if time.Now().After(stop) {
			t.Errorf("Submit still accepted ops %v after Close began", opTimeout)
			break
		}
	}
	if p != nil {
		// A backend that cannot cancel a blocked read sees end of file.
		p.closeW()
	}
	wait := func(what string, c <-chan struct{}) {
		select {
		case <-c:
		case <-time.After(opTimeout):
			t.Fatalf("%s did not return within %v", what, opTimeout)
		}
	}
	var closeErr error
	closeDone := make(chan struct{})
	go func() { closeErr = <-closed; close(closeDone) }()
	wait("Close", closeDone)
	assert.NoError(t, closeErr, "Close")
	var res result
	reapDone := make(chan struct{})
	go func() { res = <-reaped; close(reapDone) }()
	wait("Reap", reapDone)

	assert.ErrorIs(t, res.err, ring.ErrClosed, "Reap ends with ErrClosed")
	tokenSet(t, want, res.got)
	byTok := map[uint64]ring.Completion{}
	for _, c := range res.got {
		if c.Deadline {
			continue
		}
		byTok[c.Token] = c
		if c.Err != nil {
			assert.ErrorIs(t, c.Err, unix.ECANCELED, "token %d (%s): the only error Close may cause", c.Token, c.Code)
		}
	}
	for start := range chainStart {
		if byTok[start].Err != nil {
			assert.ErrorIs(t, byTok[start+1].Err, unix.ECANCELED, "the fdatasync of a cancelled write (token %d)", start+1)
		}
	}
	cancelled := 0
	for _, c := range byTok {
		if errors.Is(c.Err, unix.ECANCELED) {
			cancelled++
		}
	}
	t.Logf("%d ops accepted, %d cancelled by Close", len(want), cancelled)
	if c, ok := byTok[pipeTok]; ok && c.Err == nil {
		assert.Zero(t, c.Res, "the blocked read saw end of file")
	}

	n, err := e.r.Reap(make([]ring.Completion, 4))
	assert.Zero(t, n)
	assert.ErrorIs(t, err, ring.ErrClosed, "Reap after the end")
	n, err = e.r.TryReap(make([]ring.Completion, 4))
	assert.Zero(t, n)
	assert.ErrorIs(t, err, ring.ErrClosed, "TryReap after the end")
	assert.ErrorIs(t, e.r.Submit([]ring.Op{{Code: ring.OpNop}}), ring.ErrClosed, "Submit after Close")
	assert.NoError(t, e.r.Close(), "Close twice")
	st := e.r.Stats()
	assert.Equal(t, st.Submitted, st.Completed, "Stats: every submitted op completed")
}

// testCloseLeftover checks that completions not yet reaped at Close stay
// reapable, and that Reap says ErrClosed only after them.
func testCloseLeftover(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	want := map[uint64]bool{}
	var ops []ring.Op
	for tok := uint64(1); tok <= 4; tok++ {
		ops = append(ops, ring.Op{Code: ring.OpNop, Token: tok})
		want[tok] = true
	}
	require.NoError(t, e.r.Submit(ops))
	require.NoError(t, e.r.Close())
	got, err := e.reapUntil(func([]ring.Completion) bool { return false })
	assert.ErrorIs(t, err, ring.ErrClosed)
	tokenSet(t, want, got)
}

func testBadClosed(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	require.NoError(t, e.r.Close())
	assert.NotPanics(t, func() {
		assert.ErrorIs(t, e.r.Submit([]ring.Op{{Code: ring.OpNop}}), ring.ErrClosed, "Submit")
		n, err := e.r.Reap(make([]ring.Completion, 1))
		assert.Zero(t, n)
		assert.ErrorIs(t, err, ring.ErrClosed, "Reap")
		n, err = e.r.TryReap(make([]ring.Completion, 1))
		assert.Zero(t, n)
		assert.ErrorIs(t, err, ring.ErrClosed, "TryReap")
		assert.NoError(t, e.r.Close(), "Close twice")
		_ = e.r.Stats()
		_ = e.r.Info()
	})
}

// testBadMalformed checks that Submit refuses what ring.Validate refuses,
// with an *OpError naming the op, and submits nothing of such a batch.
func testBadMalformed(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	fd := e.open("f", unix.O_RDWR|unix.O_CREAT, 0o644)
	nop := ring.Op{Code: ring.OpNop}
	cases := []struct {
		name  string
		ops   []ring.Op
		index int
	}{
		{"unknown opcode", []ring.Op{{Code: ring.Opcode(200)}}, 0},
		{"nil read buffer", []ring.Op{{Code: ring.OpRead, FD: fd}}, 0},
		{"nil write buffer mid-batch", []ring.Op{nop, {Code: ring.OpWrite, FD: fd}, nop}, 1},
		{"readv without buffers", []ring.Op{{Code: ring.OpReadv, FD: fd}}, 0},
		{"writev with too many buffers", []ring.Op{{Code: ring.OpWritev, FD: fd, Bufs: make([][]byte, ring.MaxIovecs+1)}}, 0},
		{"writev at a negative offset", []ring.Op{{Code: ring.OpWritev, FD: fd, Bufs: [][]byte{{1}}, Offset: -1}}, 0},
		{"negative deadline", []ring.Op{{Code: ring.OpNop, Deadline: -time.Second}}, 0},
		{"DSync on a read", []ring.Op{nop, {Code: ring.OpRead, FD: fd, Buf: make([]byte, 8), DSync: true}}, 1},
		{"DSync on an fdatasync", []ring.Op{{Code: ring.OpFdatasync, FD: fd, DSync: true}}, 0},
		{"last op linked", []ring.Op{nop, {Code: ring.OpNop, Link: true}}, 1},
		{"open without a path", []ring.Op{{Code: ring.OpOpen}}, 0},
		{"rename without a target", []ring.Op{{Code: ring.OpRename, Path: e.path("f")}}, 0},
		{"fallocate of nothing", []ring.Op{{Code: ring.OpFallocate, FD: fd, Length: 0}}, 0},
	}
	before := e.r.Stats().Submitted
	for _, c := range cases {
		assert.NotPanics(t, func() {
			err := e.r.Submit(c.ops)
			var oe *ring.OpError
			if assert.ErrorAs(t, err, &oe, c.name) {
				assert.Equal(t, c.index, oe.Index, c.name)
			}
		}, c.name)
	}
	tooMany := make([]ring.Op, e.r.Capacity()+1)
	assert.Error(t, e.r.Submit(tooMany), "a batch larger than Capacity can never fit")
	assert.Equal(t, before, e.r.Stats().Submitted, "nothing of a refused batch is submitted")

	// The ring still works, and no op of a refused batch turns up.
	e.do1(ring.Op{Code: ring.OpNop})
	n, err := e.r.TryReap(make([]ring.Completion, 4))
	require.NoError(t, err)
	assert.Zero(t, n, "a completion from a refused batch")
}

func testBadFD(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	buf := make([]byte, 16)
	ops := []ring.Op{
		{Code: ring.OpRead, FD: badFD, Buf: buf},
		{Code: ring.OpWrite, FD: badFD, Buf: buf},
		{Code: ring.OpReadv, FD: badFD, Bufs: [][]byte{buf}},
		{Code: ring.OpWritev, FD: badFD, Bufs: [][]byte{buf}},
		{Code: ring.OpFsync, FD: badFD},
		{Code: ring.OpFdatasync, FD: badFD},
		{Code: ring.OpFallocate, FD: badFD, Length: 4096},
		{Code: ring.OpStat, FD: badFD},
		{Code: ring.OpLock, FD: badFD},
		{Code: ring.OpClose, FD: badFD},
		{Code: ring.OpRead, FD: -1, Buf: buf},
	}
	cs := e.do(ops...)
	for i, c := range cs {
		assert.ErrorIs(t, c.Err, unix.EBADF, "%s on fd %d", ops[i].Code, ops[i].FD)
	}
}

// testUnalignedDirect checks O_DIRECT's alignment rules on a real kernel:
// a pool buffer works, an unaligned buffer, length or offset is EINVAL.
func testUnalignedDirect(t *testing.T, h Harness) {
	if !h.Real {
		t.Skip("O_DIRECT alignment is enforced by the real kernel only")
	}
	e := newEnv(t, h, ring.Options{})
	c := e.do(ring.Op{Code: ring.OpOpen, Path: e.path("direct"), Flags: unix.O_RDWR | unix.O_CREAT | unix.O_DIRECT, Mode: 0o644})[0]
	if errors.Is(c.Err, unix.EINVAL) {
		t.Skipf("the file system of %s does not support O_DIRECT (tmpfs?); use a directory on ext4 or xfs", e.dir)
	}
	require.NoError(t, c.Err)
	fd := int32(c.Res)
	e.fds[fd] = true
	pool := ring.NewBufPool()
	defer func() { assert.NoError(t, pool.Close()) }()
	mem, err := pool.Get(3 * 4096)
	require.NoError(t, err)
	defer func() { assert.NoError(t, pool.Put(mem)) }()
	copy(mem, pattern(len(mem), 5))
	aligned := mem[:4096]

	cs := e.do(
		ring.Op{Code: ring.OpWrite, FD: fd, Buf: aligned, Offset: 0},
		ring.Op{Code: ring.OpWrite, FD: fd, Buf: mem[1 : 1+4096], Offset: 4096},
		ring.Op{Code: ring.OpWrite, FD: fd, Buf: aligned[:100], Offset: 8192},
		ring.Op{Code: ring.OpWrite, FD: fd, Buf: aligned, Offset: 1},
	)
	require.NoError(t, cs[0].Err, "an aligned O_DIRECT write")
	assert.Equal(t, int64(4096), cs[0].Res)
	assert.ErrorIs(t, cs[1].Err, unix.EINVAL, "an unaligned buffer")
	assert.ErrorIs(t, cs[2].Err, unix.EINVAL, "an unaligned length")
	assert.ErrorIs(t, cs[3].Err, unix.EINVAL, "an unaligned offset")
	// After the write: a read at end of file returns 0 before any check.
	c = e.do(ring.Op{Code: ring.OpRead, FD: fd, Buf: mem[4097 : 4097+4096], Offset: 0})[0]
	assert.ErrorIs(t, c.Err, unix.EINVAL, "a read into an unaligned buffer")
	back := mem[8192:]
	c = e.do1(ring.Op{Code: ring.OpRead, FD: fd, Buf: back, Offset: 0})
	assert.Equal(t, int64(4096), c.Res)
	assert.Equal(t, pattern(3*4096, 5)[:4096], back, "an aligned O_DIRECT read")
	e.close(fd)
}

// testConcurrentSubmitters runs 8 goroutines submitting 500 ops each while
// one reaper runs; with -race this also checks the backend's locking.
func testConcurrentSubmitters(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	fd := e.open("f", unix.O_RDWR|unix.O_CREAT, 0o644)
	const goroutines, perG = 8, 500
	want := map[uint64]bool{}
	for tok := uint64(0); tok < goroutines*perG; tok++ {
		want[tok] = true
	}
	var wg sync.WaitGroup
	errc := make(chan error, goroutines)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < perG; {
				var batch []ring.Op
				for size := 1 + i%4; size > 0 && i < perG; size-- {
					tok := uint64(g*perG + i)
					op := ring.Op{Code: ring.OpNop, Token: tok}
					if i%2 == 0 {
						op = ring.Op{Code: ring.OpWrite, Token: tok, FD: fd, Buf: binary.LittleEndian.AppendUint64(nil, tok), Offset: int64(tok) * 8}
					}
					batch = append(batch, op)
					i++
				}
				if err := e.r.Submit(batch); err != nil {
					errc <- err
					return
				}
			}
		}(g)
	}
	got := e.reap(goroutines * perG)
	wg.Wait()
	close(errc)
	for err := range errc {
		require.NoError(t, err, "Submit")
	}
	tokenSet(t, want, got)
	for _, c := range got {
		require.NoError(t, c.Err, "token %d", c.Token)
		if c.Code == ring.OpWrite {
			assert.Equal(t, int64(8), c.Res)
		}
	}
	file := e.readFile("f")
	for tok := uint64(0); tok < goroutines*perG; tok++ {
		if tok%perG%2 == 0 {
			require.Equal(t, tok, binary.LittleEndian.Uint64(file[tok*8:]), "record of token %d", tok)
		}
	}
}

// pipe is an OS pipe for Real backends: a vehicle for blocking reads and
// short writes.
type pipe struct {
	r, w    int32
	mu      sync.Mutex
	wClosed bool
}

// newPipe returns a pipe, its capacity set to size bytes when size > 0.
// Both ends are closed when the test ends.
func newPipe(t *testing.T, size int) *pipe {
	t.Helper()
	var fds [2]int
	require.NoError(t, unix.Pipe2(fds[:], unix.O_CLOEXEC))
	p := &pipe{r: int32(fds[0]), w: int32(fds[1])}
	t.Cleanup(func() {
		p.closeW() // wakes a reader blocked on the other end
		_ = unix.Close(fds[0])
	})
	if size > 0 {
		got, err := unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, size)
		require.NoError(t, err, "F_SETPIPE_SZ")
		require.Equal(t, size, got, "pipe capacity")
	}
	return p
}

// closeW closes the write end once.
func (p *pipe) closeW() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.wClosed {
		p.wClosed = true
		_ = unix.Close(int(p.w))
	}
}

// drain reads n bytes (or until end of file) from the pipe on a goroutine
// and sends what it read.
func (p *pipe) drain(n int) <-chan []byte {
	out := make(chan []byte, 1)
	go func() {
		var got []byte
		buf := make([]byte, 64<<10)
		for len(got) < n {
			k, err := unix.Read(int(p.r), buf)
			if err == unix.EINTR {
				continue
			}
			if err != nil || k == 0 {
				break
			}
			got = append(got, buf[:k]...)
		}
		out <- got
	}()
	return out
}
