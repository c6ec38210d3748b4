package ring

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring/internal/uring"
)

// TestURingPrepDSync checks what the conformance suite cannot see from
// outside: a DSync write or writev goes to the kernel as one SQE with
// RWF_DSYNC in its rw_flags, and a plain one without.
func TestURingPrepDSync(t *testing.T) {
	rr, err := newURing(Options{Entries: 8})
	if err != nil {
		t.Skipf("io_uring unavailable: %v", err)
	}
	r := rr.(*uringRing)
	defer r.Close()
	buf := []byte("data")
	for _, c := range []struct {
		op   Op
		want uint32
	}{
		{Op{Code: OpWrite, FD: 1, Buf: buf, DSync: true}, unix.RWF_DSYNC},
		{Op{Code: OpWritev, FD: 1, Bufs: [][]byte{buf}, DSync: true}, unix.RWF_DSYNC},
		{Op{Code: OpWrite, FD: 1, Buf: buf}, 0},
		{Op{Code: OpWritev, FD: 1, Bufs: [][]byte{buf}}, 0},
	} {
		r.sqMu.Lock()
		sqe := r.prep(&uslot{op: c.op}, false)
		assert.Equal(t, c.want, sqe.OpFlags, "%s DSync=%v: rw_flags", c.op.Code, c.op.DSync)
		// Never performed: Close submits it as an internal nop.
		*sqe = uring.SQE{Opcode: uring.OpNop, Fd: -1, UserData: userData(kindInternal, 0)}
		r.sqMu.Unlock()
	}
	require.NoError(t, r.Close())
}

// TestStdDSyncFallback: where the kernel refuses RWF_DSYNC, a DSync write
// is a pwritev and an fdatasync, and still writes it all; an fdatasync
// error is the write's (a pipe cannot be synced: EINVAL).
func TestStdDSyncFallback(t *testing.T) {
	defer noRWFDSync.Store(noRWFDSync.Load())
	noRWFDSync.Store(true)
	fd, err := unix.Open(t.TempDir()+"/f", unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	require.NoError(t, err)
	defer unix.Close(fd)
	op := Op{Code: OpWritev, FD: int32(fd), Bufs: [][]byte{[]byte("ab"), []byte("cd")}, Offset: 3, DSync: true}
	res, _, _, err := execSync(&op)
	require.NoError(t, err)
	assert.Equal(t, int64(4), res)
	got := make([]byte, 8)
	n, err := unix.Pread(fd, got, 0)
	require.NoError(t, err)
	assert.Equal(t, "\x00\x00\x00abcd", string(got[:n]))

	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	op = Op{Code: OpWrite, FD: int32(p[1]), Buf: []byte("x"), Offset: -1, DSync: true}
	_, _, _, err = execSync(&op)
	assert.ErrorIs(t, err, unix.EINVAL, "the fdatasync of a pipe fails, and fails the DSync write")
}
