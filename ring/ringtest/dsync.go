package ringtest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring"
)

// testDSyncWrite checks a DSync write and writev: one Op, one final
// Completion with the whole byte count, the data in the file, and one sync
// each in Stats; a generous deadline brings no notice.
func testDSyncWrite(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	fd := e.open("f", unix.O_RDWR|unix.O_CREAT, 0o644)
	before := e.r.Stats()
	a, b1, b2 := pattern(100, 1), pattern(100, 2), pattern(3000, 3)
	cs := e.do(
		ring.Op{Code: ring.OpWrite, FD: fd, Buf: a, Offset: 0, DSync: true},
		ring.Op{Code: ring.OpWritev, FD: fd, Bufs: [][]byte{b1, b2}, Offset: 4096, DSync: true},
	)
	for _, c := range cs {
		require.NoError(t, c.Err)
	}
	assert.Equal(t, int64(len(a)), cs[0].Res)
	assert.Equal(t, int64(len(b1)+len(b2)), cs[1].Res)
	after := e.r.Stats()
	assert.Equal(t, before.Syncs+2, after.Syncs, "Stats.Syncs counts DSync writes")
	assert.Equal(t, before.Completed+2, after.Completed, "one final Completion per DSync write")
	got := e.readFile("f")
	require.Len(t, got, 4096+len(b1)+len(b2))
	assert.Equal(t, a, got[:len(a)])
	assert.Equal(t, append(append([]byte(nil), b1...), b2...), got[4096:])

	// A deadline that does not pass: no notice, not Late.
	cs = e.do(ring.Op{Code: ring.OpWrite, FD: fd, Buf: a, Offset: 8192, DSync: true, Deadline: time.Minute})
	require.NoError(t, cs[0].Err)
	assert.Zero(t, e.r.Stats().DeadlinesFired-after.DeadlinesFired)
}

// testDSyncShortWrite checks that a DSync write cut short is continued in
// full (invariant 3), its sync covering all of it.
func testDSyncShortWrite(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	data := pattern(256<<10, 5)
	before := e.r.Stats()
	if h.Real {
		// A one-page pipe with a reader draining it, as in
		// testShortWriteChain (a pipe ignores the sync).
		p := newPipe(t, 4096)
		drained := p.drain(len(data))
		c := e.do(ring.Op{Code: ring.OpWrite, FD: p.w, Buf: data, Offset: -1, DSync: true})[0]
		require.NoError(t, c.Err)
		assert.Equal(t, int64(len(data)), c.Res)
		select {
		case got := <-drained:
			assert.True(t, string(got) == string(data), "the pipe carried %d bytes, want %d in order", len(got), len(data))
		case <-time.After(opTimeout):
			t.Fatal("the pipe reader did not finish")
		}
		return
	}
	fd := e.open("f", unix.O_RDWR|unix.O_CREAT, 0o644)
	h.InjectShortWrite(t, e.r)
	c := e.do(ring.Op{Code: ring.OpWrite, FD: fd, Buf: data, Offset: 0, DSync: true})[0]
	require.NoError(t, c.Err)
	assert.Equal(t, int64(len(data)), c.Res, "the DSync write completes in full")
	after := e.r.Stats()
	assert.Greater(t, after.ShortIORetries, before.ShortIORetries, "Stats.ShortIORetries counts the continuation")
	assert.Equal(t, before.Syncs+1, after.Syncs, "one sync, after the whole write")
	assert.Equal(t, data, e.readFile("f"))
}

// testDSyncDeadline checks invariant 4 on a DSync write that outlasts its
// deadline: a notice, then one final Completion, Late, that either
// completed (the whole write is then in the file) or was cancelled before
// it started (nothing written). On a real disk an 8 MiB DSync write
// outlasts a 1 ns deadline; elsewhere its sync half is delayed.
func testDSyncDeadline(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	fd := e.open("f", unix.O_RDWR|unix.O_CREAT, 0o644)
	const tok = 93
	buf := pattern(8<<20, 4)
	deadline := time.Nanosecond
	if !h.Real {
		buf = pattern(4096, 4)
		deadline = 5 * time.Millisecond
		h.InjectDelay(t, e.r, ring.OpFdatasync, 50*time.Millisecond) // the sync half is an fdatasync to faults
	}
	before := e.r.Stats()
	require.NoError(t, e.r.Submit([]ring.Op{{Code: ring.OpWrite, Token: tok, FD: fd, Buf: buf, Offset: 0, DSync: true, Deadline: deadline}}))
	got, err := e.reapUntil(func(got []ring.Completion) bool { return countFinal(got) >= 1 })
	require.NoError(t, err)
	require.Len(t, got, 2, "one notice and one final completion: %s", describe(got))
	assert.True(t, got[0].Deadline, "the notice comes first: %s", describe(got))
	final := got[1]
	assert.True(t, final.Late, "the final completion after a notice is Late")
	assert.Equal(t, uint64(tok), final.Token)
	if final.Err != nil {
		assert.ErrorIs(t, final.Err, unix.ECANCELED, "a late DSync write is either cancelled or completes")
		assert.Zero(t, e.size(fd), "a cancelled DSync write wrote nothing")
	} else {
		assert.Equal(t, int64(len(buf)), final.Res)
		assert.True(t, string(buf) == string(e.readFile("f")), "a late DSync write that completed wrote it all")
	}
	if !h.Real {
		assert.NoError(t, final.Err, "a DSync write whose sync half is running is not cancelled")
	}
	assert.Equal(t, before.DeadlinesFired+1, e.r.Stats().DeadlinesFired, "Stats.DeadlinesFired")
}
