package sim

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring"
)

// newTest returns a disk with directory /t, a ring on it and a Doer over
// the ring. The ring is closed at the end of the test.
func newTest(t *testing.T, seed int64) (*Disk, *Ring, *ring.Sync) {
	t.Helper()
	d := NewDisk(seed)
	require.NoError(t, d.MkdirAll("/t"))
	r := d.NewRing(ring.Options{})
	t.Cleanup(func() { _ = r.Close() })
	return d, r, ring.NewSync(r)
}

// do1 performs one op and returns its Completion.
func do1(t *testing.T, s *ring.Sync, op ring.Op) ring.Completion {
	t.Helper()
	cs, err := s.Do(op)
	require.NoError(t, err)
	return cs[0]
}

func TestOpenErrors(t *testing.T) {
	_, _, s := newTest(t, 1)
	open := func(p string, flags int) error {
		return do1(t, s, ring.Op{Code: ring.OpOpen, Path: p, Flags: flags, Mode: 0o644}).Err
	}
	assert.ErrorIs(t, open("/t/missing", unix.O_RDONLY), unix.ENOENT)
	assert.ErrorIs(t, open("/nodir/f", unix.O_RDWR|unix.O_CREAT), unix.ENOENT, "missing parent")
	require.NoError(t, open("/t/f", unix.O_RDWR|unix.O_CREAT|unix.O_EXCL))
	assert.ErrorIs(t, open("/t/f", unix.O_RDWR|unix.O_CREAT|unix.O_EXCL), unix.EEXIST)
	assert.ErrorIs(t, open("/t/f/x", unix.O_RDWR|unix.O_CREAT), unix.ENOTDIR, "a file as a parent")
	assert.ErrorIs(t, open("/t/f", unix.O_RDONLY|unix.O_DIRECTORY), unix.ENOTDIR)
	assert.ErrorIs(t, open("/t", unix.O_RDWR), unix.EISDIR)
	assert.ErrorIs(t, open("/t", unix.O_RDONLY|unix.O_CREAT), unix.EISDIR)
	assert.NoError(t, open("/t", unix.O_RDONLY|unix.O_DIRECTORY))
	assert.NoError(t, open("t/../t/./f", unix.O_RDONLY), "paths are cleaned")
}

func TestFileOps(t *testing.T) {
	d, _, s := newTest(t, 1)
	fd, err := ring.Open(s, "/t/f", unix.O_RDWR|unix.O_CREAT, 0o644)
	require.NoError(t, err)
	require.NoError(t, ring.WriteAt(s, fd, []byte("hello"), 0))
	require.NoError(t, ring.WriteAt(s, fd, []byte("world"), 10000))
	size, err := ring.Size(s, fd)
	require.NoError(t, err)
	assert.Equal(t, int64(10005), size)
	buf := make([]byte, 20)
	n, err := ring.ReadAt(s, fd, buf, 9990)
	require.NoError(t, err)
	assert.Equal(t, 15, n, "short at end of file")
	assert.Equal(t, append(make([]byte, 10), "world"...), buf[:n])
	n, err = ring.ReadAt(s, fd, buf, 10005)
	require.NoError(t, err)
	assert.Zero(t, n, "0 at end of file")

	// A read-only fd refuses writes; a write-only one refuses reads.
	ro, err := ring.Open(s, "/t/f", unix.O_RDONLY, 0)
	require.NoError(t, err)
	assert.ErrorIs(t, ring.WriteAt(s, ro, []byte("x"), 0), unix.EBADF)
	wo, err := ring.Open(s, "/t/f", unix.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = ring.ReadAt(s, wo, buf, 0)
	assert.ErrorIs(t, err, unix.EBADF)
	require.NoError(t, ring.Close(s, ro))
	assert.ErrorIs(t, ring.Close(s, ro), unix.EBADF, "closed twice")
	assert.ErrorIs(t, ring.Fsync(s, 99), unix.EBADF, "unknown fd")

	// A 64 MiB preallocation is cheap and reads as zeros.
	require.NoError(t, ring.Fallocate(s, fd, 0, 64<<20, false))
	size, _ = ring.Size(s, fd)
	assert.Equal(t, int64(64<<20), size)
	require.NoError(t, ring.Fallocate(s, fd, 0, 128<<20, true))
	size, _ = ring.Size(s, fd)
	assert.Equal(t, int64(64<<20), size, "KEEP_SIZE")
	n, err = ring.ReadAt(s, fd, buf, 60<<20)
	require.NoError(t, err)
	assert.Equal(t, make([]byte, 20), buf[:n])

	// O_TRUNC empties the file.
	fd2, err := ring.Open(s, "/t/f", unix.O_RDWR|unix.O_TRUNC, 0)
	require.NoError(t, err)
	size, _ = ring.Size(s, fd2)
	assert.Zero(t, size)
	got, err := d.ReadFile("/t/f")
	require.NoError(t, err)
	assert.Empty(t, got)
}

func TestNamespaceOps(t *testing.T) {
	_, _, s := newTest(t, 1)
	require.NoError(t, ring.Mkdir(s, "/t/d", 0o755))
	assert.ErrorIs(t, do1(t, s, ring.Op{Code: ring.OpMkdir, Path: "/t/d"}).Err, unix.EEXIST)
	assert.ErrorIs(t, do1(t, s, ring.Op{Code: ring.OpMkdir, Path: "/t/x/y"}).Err, unix.ENOENT)
	require.NoError(t, ring.WriteFileAtomic(s, "/t/d/f", []byte("one")))
	require.NoError(t, ring.WriteFileAtomic(s, "/t/d/f", []byte("two")))
	got, err := ring.ReadFile(s, "/t/d/f")
	require.NoError(t, err)
	assert.Equal(t, "two", string(got))
	names, err := ring.ReadDir(s, "/t/d")
	require.NoError(t, err)
	assert.Equal(t, []string{"f"}, names)

	assert.ErrorIs(t, ring.Unlink(s, "/t/d"), unix.EISDIR)
	assert.ErrorIs(t, do1(t, s, ring.Op{Code: ring.OpUnlink, Path: "/t/d", Flags: unix.AT_REMOVEDIR}).Err, unix.ENOTEMPTY)
	assert.ErrorIs(t, do1(t, s, ring.Op{Code: ring.OpUnlink, Path: "/t/d/f", Flags: unix.AT_REMOVEDIR}).Err, unix.ENOTDIR)
	assert.ErrorIs(t, ring.Rename(s, "/t/d", "/t/d/sub"), unix.EINVAL, "a directory into itself")
	require.NoError(t, ring.Mkdir(s, "/t/e", 0o755))
	assert.ErrorIs(t, ring.Rename(s, "/t/e", "/t/d"), unix.ENOTEMPTY)
	assert.ErrorIs(t, ring.Rename(s, "/t/d/f", "/t/e"), unix.EISDIR)
	assert.ErrorIs(t, ring.Rename(s, "/t/e", "/t/d/f"), unix.ENOTDIR)
	require.NoError(t, ring.Rename(s, "/t/d/f", "/t/g"))
	require.NoError(t, ring.Unlink(s, "/t/g"))
	_, err = ring.Stat(s, "/t/g")
	assert.ErrorIs(t, err, unix.ENOENT)
	require.NoError(t, do1(t, s, ring.Op{Code: ring.OpUnlink, Path: "/t/d", Flags: unix.AT_REMOVEDIR}).Err)
	_, err = ring.ReadDir(s, "/t/d")
	assert.ErrorIs(t, err, unix.ENOENT)
}
