package ringtest

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring"
)

// This file checks every opcode on its own: results, errno values as Linux
// reports them, and the effect on the files.

func testNop(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	before := e.r.Stats()
	cs := e.do(ring.Op{Code: ring.OpNop}, ring.Op{Code: ring.OpNop})
	for _, c := range cs {
		assert.NoError(t, c.Err)
		assert.Zero(t, c.Res)
	}
	after := e.r.Stats()
	assert.Equal(t, before.Submitted+2, after.Submitted, "Stats.Submitted")
	assert.Equal(t, before.Completed+2, after.Completed, "Stats.Completed")
	assert.NotEmpty(t, e.r.Info().Backend, "Info.Backend")
	assert.Positive(t, e.r.Capacity())
}

func testTokens(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	fd := e.open("f", unix.O_RDWR|unix.O_CREAT, 0o644)
	buf := []byte("token")
	ops := []ring.Op{
		{Code: ring.OpNop, Token: 0},
		{Code: ring.OpNop, Token: math.MaxUint64},
		{Code: ring.OpNop, Token: 1 << 63},
		{Code: ring.OpWrite, Token: 42, FD: fd, Buf: buf, Offset: 0},
		{Code: ring.OpStat, Token: 7, FD: fd},
	}
	require.NoError(t, e.r.Submit(ops))
	got := e.reap(len(ops))
	want := map[uint64]bool{}
	for _, op := range ops {
		want[op.Token] = true
	}
	tokenSet(t, want, got)
	for _, c := range got {
		for _, op := range ops {
			if op.Token == c.Token {
				checkHandedBack(t, op, c)
				assert.NoError(t, c.Err, "token %d", c.Token)
			}
		}
	}
}

func testOpen(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	fd := e.open("f", unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o600)
	e.write(fd, []byte("hello"), 0)
	e.close(fd)

	c := e.do(ring.Op{Code: ring.OpOpen, Path: e.path("f"), Flags: unix.O_RDWR | unix.O_CREAT | unix.O_EXCL, Mode: 0o600})[0]
	assert.ErrorIs(t, c.Err, unix.EEXIST, "O_CREAT|O_EXCL on an existing file")
	c = e.do(ring.Op{Code: ring.OpOpen, Path: e.path("missing"), Flags: unix.O_RDONLY})[0]
	assert.ErrorIs(t, c.Err, unix.ENOENT, "open of a missing file")
	c = e.do(ring.Op{Code: ring.OpOpen, Path: e.path("f"), Flags: unix.O_RDONLY | unix.O_DIRECTORY})[0]
	assert.ErrorIs(t, c.Err, unix.ENOTDIR, "O_DIRECTORY on a file")

	fd = e.open("f", unix.O_RDWR|unix.O_CREAT, 0o600)
	assert.Equal(t, int64(5), e.size(fd), "O_CREAT without O_TRUNC keeps the contents")
	e.close(fd)
	fd = e.open("f", unix.O_RDWR|unix.O_TRUNC, 0)
	assert.Zero(t, e.size(fd), "O_TRUNC empties the file")
	e.close(fd)

	dfd := e.open(".", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	e.close(dfd)
}

func testClose(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	a := e.open("a", unix.O_RDWR|unix.O_CREAT, 0o644)
	b := e.open("b", unix.O_RDWR|unix.O_CREAT, 0o644)
	assert.NotEqual(t, a, b, "two open files have two fds")
	d := e.open(".", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	delete(e.fds, a)
	delete(e.fds, b)
	delete(e.fds, d)
	cs := e.do(ring.Op{Code: ring.OpClose, FD: a}, ring.Op{Code: ring.OpClose, FD: b}, ring.Op{Code: ring.OpClose, FD: d})
	for _, c := range cs {
		assert.NoError(t, c.Err)
	}
}

func testReadWrite(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	fd := e.open("f", unix.O_RDWR|unix.O_CREAT, 0o644)
	cs := e.do(
		ring.Op{Code: ring.OpWrite, FD: fd, Buf: []byte("hello"), Offset: 0},
		ring.Op{Code: ring.OpWrite, FD: fd, Buf: []byte("world"), Offset: 100},
	)
	for _, c := range cs {
		require.NoError(t, c.Err)
		assert.Equal(t, int64(5), c.Res)
	}
	assert.Equal(t, int64(105), e.size(fd))

	buf := make([]byte, 5)
	c := e.do1(ring.Op{Code: ring.OpRead, FD: fd, Buf: buf, Offset: 100})
	assert.Equal(t, int64(5), c.Res)
	assert.Equal(t, "world", string(buf))

	buf = make([]byte, 10)
	c = e.do1(ring.Op{Code: ring.OpRead, FD: fd, Buf: buf, Offset: 0})
	assert.Equal(t, int64(10), c.Res)
	assert.Equal(t, "hello\x00\x00\x00\x00\x00", string(buf), "the gap reads as zeros")

	buf = make([]byte, 10)
	c = e.do1(ring.Op{Code: ring.OpRead, FD: fd, Buf: buf, Offset: 100})
	assert.Equal(t, int64(5), c.Res, "a read that reaches end of file completes with what it got")
	assert.Equal(t, "world", string(buf[:5]))

	c = e.do1(ring.Op{Code: ring.OpRead, FD: fd, Buf: make([]byte, 10), Offset: 1000})
	assert.Zero(t, c.Res, "a read past end of file")

	c = e.do1(ring.Op{Code: ring.OpWrite, FD: fd, Buf: []byte{}, Offset: 0})
	assert.Zero(t, c.Res, "an empty write")

	big := pattern(1<<20+123, 3)
	e.write(fd, big, 4096)
	back := make([]byte, len(big))
	c = e.do1(ring.Op{Code: ring.OpRead, FD: fd, Buf: back, Offset: 4096})
	assert.Equal(t, int64(len(big)), c.Res)
	assert.True(t, string(back) == string(big), "1 MiB read back differs from what was written")
	e.close(fd)
}

func testCurrentPosition(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	fd := e.open("f", unix.O_RDWR|unix.O_CREAT, 0o644)
	e.write(fd, []byte("ab"), -1)
	e.write(fd, []byte("cd"), -1)
	c := e.do1(ring.Op{Code: ring.OpRead, FD: fd, Buf: make([]byte, 4), Offset: -1})
	assert.Zero(t, c.Res, "the position is after the writes")
	e.close(fd)

	fd = e.open("f", unix.O_RDONLY, 0)
	buf := make([]byte, 3)
	c = e.do1(ring.Op{Code: ring.OpRead, FD: fd, Buf: buf, Offset: -1})
	assert.Equal(t, "abc", string(buf[:c.Res]))
	c = e.do1(ring.Op{Code: ring.OpRead, FD: fd, Buf: buf, Offset: -1})
	assert.Equal(t, "d", string(buf[:c.Res]), "the second read continues at the position")
	e.close(fd)
}

func testReadvWritev(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	fd := e.open("f", unix.O_RDWR|unix.O_CREAT, 0o644)
	c := e.do1(ring.Op{Code: ring.OpWritev, FD: fd, Offset: 10,
		Bufs: [][]byte{[]byte("abc"), []byte("defgh"), []byte("ij")}})
	assert.Equal(t, int64(10), c.Res)
	assert.Equal(t, int64(20), e.size(fd))

	a, b := make([]byte, 4), make([]byte, 6)
	c = e.do1(ring.Op{Code: ring.OpReadv, FD: fd, Offset: 10, Bufs: [][]byte{a, b}})
	assert.Equal(t, int64(10), c.Res)
	assert.Equal(t, "abcd", string(a))
	assert.Equal(t, "efghij", string(b))

	a, b = make([]byte, 8), make([]byte, 8)
	c = e.do1(ring.Op{Code: ring.OpReadv, FD: fd, Offset: 14, Bufs: [][]byte{a, b}})
	assert.Equal(t, int64(6), c.Res, "a readv that reaches end of file")
	assert.Equal(t, "efghij", string(a[:6]))

	// Many small buffers, as a group commit writes them.
	var bufs [][]byte
	var want []byte
	for i := 0; i < 64; i++ {
		p := pattern(128, byte(i))
		bufs = append(bufs, p)
		want = append(want, p...)
	}
	c = e.do1(ring.Op{Code: ring.OpWritev, FD: fd, Offset: 4096, Bufs: bufs})
	assert.Equal(t, int64(len(want)), c.Res)
	assert.Equal(t, want, e.readFile("f")[4096:])
	e.close(fd)
}

func testSync(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	fd := e.open("f", unix.O_RDWR|unix.O_CREAT, 0o644)
	e.write(fd, []byte("data"), 0)
	before := e.r.Stats().Syncs
	e.do1(ring.Op{Code: ring.OpFsync, FD: fd})
	e.do1(ring.Op{Code: ring.OpFdatasync, FD: fd})
	dfd := e.open(".", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	e.do1(ring.Op{Code: ring.OpFsync, FD: dfd})
	assert.Equal(t, before+3, e.r.Stats().Syncs, "Stats.Syncs counts fsync and fdatasync")
	e.close(dfd)
	e.close(fd)
}

func testFallocate(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	fd := e.open("f", unix.O_RDWR|unix.O_CREAT, 0o644)
	e.do1(ring.Op{Code: ring.OpFallocate, FD: fd, Offset: 0, Length: 64 << 10})
	assert.Equal(t, int64(64<<10), e.size(fd), "fallocate without KEEP_SIZE extends the file")
	e.do1(ring.Op{Code: ring.OpFallocate, FD: fd, Offset: 64 << 10, Length: 1 << 20, Flags: unix.FALLOC_FL_KEEP_SIZE})
	assert.Equal(t, int64(64<<10), e.size(fd), "fallocate with KEEP_SIZE keeps the size")
	buf := pattern(4096, 1)
	c := e.do1(ring.Op{Code: ring.OpRead, FD: fd, Buf: buf, Offset: 60 << 10})
	assert.Equal(t, int64(4096), c.Res)
	assert.Equal(t, make([]byte, 4096), buf, "preallocated space reads as zeros")
	e.close(fd)

	ro := e.open("f", unix.O_RDONLY, 0)
	c = e.do(ring.Op{Code: ring.OpFallocate, FD: ro, Offset: 0, Length: 4096})[0]
	assert.ErrorIs(t, c.Err, unix.EBADF, "fallocate on a read-only fd")
	e.close(ro)
}

// testDataEnd: OpDataEnd says where a preallocated file's data ends, so
// that a log is read up to there and not through its whole preallocation.
func testDataEnd(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	fd := e.open("f", unix.O_RDWR|unix.O_CREAT, 0o644)
	end := func() int64 { return e.do1(ring.Op{Code: ring.OpDataEnd, FD: fd}).Res }
	assert.Zero(t, end(), "an empty file")
	e.do1(ring.Op{Code: ring.OpFallocate, FD: fd, Offset: 0, Length: 1 << 20})
	e.write(fd, pattern(100, 2), 0)
	got := end()
	assert.GreaterOrEqual(t, got, int64(100), "the data written")
	var fs unix.Statfs_t
	if unix.Statfs(e.dir, &fs) == nil && fs.Type == unix.TMPFS_MAGIC {
		t.Logf("tmpfs: data end %d of 1 MiB (its fallocated pages may count as data)", got)
	} else {
		assert.LessOrEqual(t, got, int64(64<<10), "the preallocation after the data is not data")
	}
	e.write(fd, pattern(10, 3), 300<<10)
	got = end()
	assert.GreaterOrEqual(t, got, int64(300<<10+10), "data further on")
	assert.LessOrEqual(t, got, int64(1<<20))
	e.write(fd, pattern(10, 4), 1<<20-10)
	assert.Equal(t, int64(1<<20), end(), "data up to the end")
	e.write(fd, pattern(10, 5), 1<<20)
	assert.Equal(t, int64(1<<20+10), end(), "a write past the end")
	e.close(fd)
	c := e.do(ring.Op{Code: ring.OpDataEnd, FD: fd})[0]
	assert.ErrorIs(t, c.Err, unix.EBADF, "a closed fd")
}

func testRename(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	e.writeFile("a", []byte("AAAA"))
	e.writeFile("b", []byte("BB"))
	e.do1(ring.Op{Code: ring.OpRename, Path: e.path("a"), Path2: e.path("b")})
	assert.Equal(t, "AAAA", string(e.readFile("b")), "rename replaces the target")
	c := e.do(ring.Op{Code: ring.OpStat, Path: e.path("a")})[0]
	assert.ErrorIs(t, c.Err, unix.ENOENT, "the source is gone")
	c = e.do(ring.Op{Code: ring.OpRename, Path: e.path("a"), Path2: e.path("c")})[0]
	assert.ErrorIs(t, c.Err, unix.ENOENT, "rename of a missing file")

	e.do1(ring.Op{Code: ring.OpMkdir, Path: e.path("d"), Mode: 0o755})
	e.do1(ring.Op{Code: ring.OpRename, Path: e.path("b"), Path2: e.path("d/b")})
	assert.Equal(t, "AAAA", string(e.readFile("d/b")), "rename into a subdirectory")
}

func testUnlink(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	e.writeFile("f", []byte("x"))
	e.do1(ring.Op{Code: ring.OpUnlink, Path: e.path("f")})
	c := e.do(ring.Op{Code: ring.OpStat, Path: e.path("f")})[0]
	assert.ErrorIs(t, c.Err, unix.ENOENT, "the file is gone")
	c = e.do(ring.Op{Code: ring.OpUnlink, Path: e.path("f")})[0]
	assert.ErrorIs(t, c.Err, unix.ENOENT, "unlink of a missing file")

	e.do1(ring.Op{Code: ring.OpMkdir, Path: e.path("d"), Mode: 0o755})
	c = e.do(ring.Op{Code: ring.OpUnlink, Path: e.path("d")})[0]
	assert.ErrorIs(t, c.Err, unix.EISDIR, "unlink of a directory without AT_REMOVEDIR")
	e.do1(ring.Op{Code: ring.OpUnlink, Path: e.path("d"), Flags: unix.AT_REMOVEDIR})
	c = e.do(ring.Op{Code: ring.OpStat, Path: e.path("d")})[0]
	assert.ErrorIs(t, c.Err, unix.ENOENT, "the directory is gone")

	e.do1(ring.Op{Code: ring.OpMkdir, Path: e.path("full"), Mode: 0o755})
	e.writeFile("full/x", nil)
	c = e.do(ring.Op{Code: ring.OpUnlink, Path: e.path("full"), Flags: unix.AT_REMOVEDIR})[0]
	assert.ErrorIs(t, c.Err, unix.ENOTEMPTY, "AT_REMOVEDIR on a directory with entries")
}

func testMkdir(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	e.do1(ring.Op{Code: ring.OpMkdir, Path: e.path("d"), Mode: 0o755})
	c := e.do(ring.Op{Code: ring.OpMkdir, Path: e.path("d"), Mode: 0o755})[0]
	assert.ErrorIs(t, c.Err, unix.EEXIST, "mkdir of an existing directory")
	c = e.do(ring.Op{Code: ring.OpMkdir, Path: e.path("missing/d"), Mode: 0o755})[0]
	assert.ErrorIs(t, c.Err, unix.ENOENT, "mkdir under a missing parent")
	e.writeFile("d/f", []byte("inside"))
	assert.Equal(t, "inside", string(e.readFile("d/f")))
}

func testStat(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	e.writeFile("f", pattern(1234, 0))
	c := e.do1(ring.Op{Code: ring.OpStat, Path: e.path("f")})
	assert.Equal(t, int64(1234), c.Res, "stat by path")
	fd := e.open("f", unix.O_RDWR, 0)
	assert.Equal(t, int64(1234), e.size(fd), "stat by fd")
	e.write(fd, []byte("more"), 2000)
	assert.Equal(t, int64(2004), e.size(fd), "stat by fd sees a write")
	e.close(fd)
	c = e.do(ring.Op{Code: ring.OpStat, Path: e.path("missing")})[0]
	assert.ErrorIs(t, c.Err, unix.ENOENT, "stat of a missing file")
	e.do1(ring.Op{Code: ring.OpStat, Path: e.dir})
}

func testReadDir(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	e.do1(ring.Op{Code: ring.OpMkdir, Path: e.path("ls"), Mode: 0o755})
	c := e.do1(ring.Op{Code: ring.OpReadDir, Path: e.path("ls")})
	assert.Empty(t, c.Names, "an empty directory")
	for _, n := range []string{"c", "a", "b"} {
		e.writeFile("ls/"+n, nil)
	}
	e.do1(ring.Op{Code: ring.OpMkdir, Path: e.path("ls/d"), Mode: 0o755})
	e.writeFile("ls/d/nested", nil)
	c = e.do1(ring.Op{Code: ring.OpReadDir, Path: e.path("ls")})
	assert.Equal(t, []string{"a", "b", "c", "d"}, c.Names, "sorted, without . and .., not recursive")

	c = e.do(ring.Op{Code: ring.OpReadDir, Path: e.path("missing")})[0]
	assert.ErrorIs(t, c.Err, unix.ENOENT, "readdir of a missing directory")
	c = e.do(ring.Op{Code: ring.OpReadDir, Path: e.path("ls/a")})[0]
	assert.ErrorIs(t, c.Err, unix.ENOTDIR, "readdir of a file")
}

// testLock checks OpLock. flock locks belong to an open file description,
// so two opens of one file conflict even in one process, and closing the
// holder's fd releases the lock.
func testLock(t *testing.T, h Harness) {
	e := newEnv(t, h, ring.Options{})
	a := e.open("LOCK", unix.O_RDWR|unix.O_CREAT, 0o644)
	b := e.open("LOCK", unix.O_RDWR, 0)
	e.do1(ring.Op{Code: ring.OpLock, FD: a})
	c := e.do(ring.Op{Code: ring.OpLock, FD: b})[0]
	assert.ErrorIs(t, c.Err, unix.EWOULDBLOCK, "a second open of the locked file")

	if h.Real {
		// Another ring of the same process, as a second engine would have.
		other := newEnv(t, h, ring.Options{})
		fd := other.openPath(e.path("LOCK"), unix.O_RDWR, 0)
		c = other.do(ring.Op{Code: ring.OpLock, FD: fd})[0]
		assert.ErrorIs(t, c.Err, unix.EWOULDBLOCK, "the locked file from another ring")
		other.close(fd)
	}

	e.close(a)
	e.do1(ring.Op{Code: ring.OpLock, FD: b})
	e.close(b)
}
