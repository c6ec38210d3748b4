package sim

import (
	"bytes"
	"errors"
	"math/rand"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring"
)

// createDurable creates path with its directory entry synced and returns
// an fd open for writing.
func createDurable(t *testing.T, s *ring.Sync, p string) int32 {
	t.Helper()
	fd, err := ring.Open(s, p, unix.O_RDWR|unix.O_CREAT, 0o644)
	require.NoError(t, err)
	require.NoError(t, ring.SyncDir(s, "/t"))
	return fd
}

// TestPowerLossUnsyncedWrites: a synced write always survives; over many
// seeds an unsynced one is sometimes kept whole, sometimes gone and
// sometimes torn, per 512-byte sector.
func TestPowerLossUnsyncedWrites(t *testing.T) {
	synced := bytes.Repeat([]byte("S"), 4096)
	unsynced := bytes.Repeat([]byte("U"), 8*SectorSize)
	var whole, gone, torn int
	var fates [numFates]int
	for seed := int64(1); seed <= 40; seed++ {
		d, _, s := newTest(t, seed)
		fd := createDurable(t, s, "/t/f")
		require.NoError(t, ring.WriteSync(s, fd, synced, 0))
		require.NoError(t, ring.WriteAt(s, fd, unsynced, 4096))
		rep := d.PowerLoss(rand.New(rand.NewSource(seed)))
		for f, n := range rep.Fates {
			fates[f] += n
		}
		got, err := d.ReadFile("/t/f")
		require.NoError(t, err)
		require.GreaterOrEqual(t, len(got), 4096, "seed %d: the synced part is cut", seed)
		require.Equal(t, synced, got[:4096], "seed %d: the synced part changed", seed)
		tail := got[4096:]
		switch {
		case len(tail) == 0:
			gone++
		case bytes.Equal(tail, unsynced):
			whole++
		default:
			torn++
		}
	}
	t.Logf("unsynced write over 40 seeds: whole %d, gone %d, torn %d; sector fates %v", whole, gone, torn, fates)
	assert.Positive(t, gone, "an unsynced write vanished for some seed")
	assert.Positive(t, torn, "an unsynced write was torn for some seed")
	assert.Positive(t, fates[Applied], "some unsynced sector survived")
	assert.Positive(t, fates[Dropped], "some unsynced sector was dropped")
	assert.Positive(t, fates[Zeroed]+fates[Garbage], "some unsynced sector was torn")
	assert.Positive(t, fates[Garbage], "some unsynced sector was torn to garbage")
}

// TestPowerLossModel runs random writes, truncations and syncs against a
// model and checks after each power loss that every sector not changed since
// the last successful sync holds exactly its synced bytes.
func TestPowerLossModel(t *testing.T) {
	const sectors = 32
	for seed := int64(1); seed <= 30; seed++ {
		rng := rand.New(rand.NewSource(seed))
		d, _, s := newTest(t, seed)
		fd := createDurable(t, s, "/t/f")
		model := make([]byte, sectors*SectorSize) // as of the last sync
		cur := make([]byte, sectors*SectorSize)
		touched := make([]bool, sectors) // changed since the last sync
		for step := 0; step < 40; step++ {
			switch rng.Intn(4) {
			case 0:
				require.NoError(t, ring.Fdatasync(s, fd))
				copy(model, cur)
				clear(touched)
			default:
				first, n := rng.Intn(sectors), 1+rng.Intn(4)
				if first+n > sectors {
					n = sectors - first
				}
				off := first*SectorSize + rng.Intn(SectorSize/2)
				end := (first+n)*SectorSize - rng.Intn(SectorSize/2)
				b := make([]byte, end-off)
				rng.Read(b)
				require.NoError(t, ring.WriteAt(s, fd, b, int64(off)))
				copy(cur[off:], b)
				for i := first; i < first+n; i++ {
					touched[i] = true
				}
			}
		}
		d.PowerLoss(rand.New(rand.NewSource(-seed)))
		got, err := d.ReadFile("/t/f")
		require.NoError(t, err)
		got = append(got, make([]byte, len(model))...) // past the end reads as zeros
		for i := 0; i < sectors; i++ {
			if touched[i] {
				continue
			}
			sec := func(b []byte) []byte { return b[i*SectorSize : (i+1)*SectorSize] }
			require.Equal(t, sec(model), sec(got), "seed %d: synced sector %d changed", seed, i)
		}
	}
}

// TestPowerLossDirectoryEntries: a file whose directory was not synced
// vanishes, one whose directory was synced stays; an unsynced unlink is
// undone.
func TestPowerLossDirectoryEntries(t *testing.T) {
	d, _, s := newTest(t, 1)
	fd, err := ring.Open(s, "/t/new", unix.O_RDWR|unix.O_CREAT, 0o644)
	require.NoError(t, err)
	require.NoError(t, ring.WriteSync(s, fd, []byte("data"), 0)) // the data is durable, the name is not
	rep := d.PowerLoss(nil)
	assert.Equal(t, []string{"/t/new"}, rep.Vanished)
	assert.Empty(t, d.Files())

	r := d.NewRing(ring.Options{})
	defer r.Close()
	s = ring.NewSync(r)
	fd, err = ring.Open(s, "/t/new", unix.O_RDWR|unix.O_CREAT, 0o644)
	require.NoError(t, err)
	require.NoError(t, ring.WriteSync(s, fd, []byte("data"), 0))
	require.NoError(t, ring.SyncDir(s, "/t"))
	assert.Equal(t, []string{"/t/new"}, d.DurableFiles())
	d.PowerLoss(nil)
	got, err := d.ReadFile("/t/new")
	require.NoError(t, err, "a file whose directory was synced survives")
	assert.Equal(t, "data", string(got))

	// An unlink that was never synced is undone; a synced one is not.
	r2 := d.NewRing(ring.Options{})
	defer r2.Close()
	s = ring.NewSync(r2)
	require.NoError(t, ring.Unlink(s, "/t/new"))
	rep = d.PowerLoss(nil)
	assert.Equal(t, []string{"/t/new"}, rep.Revived)
	r3 := d.NewRing(ring.Options{})
	defer r3.Close()
	s = ring.NewSync(r3)
	require.NoError(t, ring.Unlink(s, "/t/new"))
	require.NoError(t, ring.SyncDir(s, "/t"))
	d.PowerLoss(nil)
	assert.Empty(t, d.Files())

	// A directory made but never synced into its parent vanishes with its files.
	r4 := d.NewRing(ring.Options{})
	defer r4.Close()
	s = ring.NewSync(r4)
	require.NoError(t, ring.Mkdir(s, "/t/sub", 0o755))
	require.NoError(t, ring.WriteFileAtomic(s, "/t/sub/f", []byte("x"))) // syncs /t/sub, not /t
	d.PowerLoss(nil)
	_, err = d.ReadFile("/t/sub/f")
	assert.ErrorIs(t, err, unix.ENOENT)
}

// TestPowerLossRename: a rename is durable once its directories are synced;
// before that the old name (and contents) come back.
func TestPowerLossRename(t *testing.T) {
	d, _, s := newTest(t, 1)
	require.NoError(t, ring.WriteFileAtomic(s, "/t/cur", []byte("old")))
	// WriteFileAtomic without its final directory sync.
	fd, err := ring.Open(s, "/t/cur.tmp", unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, 0o644)
	require.NoError(t, err)
	require.NoError(t, ring.WriteAt(s, fd, []byte("new"), 0))
	require.NoError(t, ring.Fsync(s, fd))
	require.NoError(t, ring.Rename(s, "/t/cur.tmp", "/t/cur"))
	got, _ := d.ReadFile("/t/cur")
	require.Equal(t, "new", string(got), "rename is atomic at once in the namespace")
	d.PowerLoss(nil)
	got, err = d.ReadFile("/t/cur")
	require.NoError(t, err)
	assert.Equal(t, "old", string(got), "an unsynced rename is undone")
	assert.Equal(t, []string{"/t/cur"}, d.Files(), "the temporary file never had a durable name")

	r := d.NewRing(ring.Options{})
	defer r.Close()
	s = ring.NewSync(r)
	require.NoError(t, ring.WriteFileAtomic(s, "/t/cur", []byte("new")))
	d.PowerLoss(nil)
	got, _ = d.ReadFile("/t/cur")
	assert.Equal(t, "new", string(got), "a synced rename stays")

	// Across directories: both must be synced.
	r = d.NewRing(ring.Options{})
	defer r.Close()
	s = ring.NewSync(r)
	require.NoError(t, ring.Mkdir(s, "/t/b", 0o755))
	require.NoError(t, ring.SyncDir(s, "/t"))
	require.NoError(t, ring.Rename(s, "/t/cur", "/t/b/cur"))
	require.NoError(t, ring.SyncDir(s, "/t"))
	d.PowerLoss(nil)
	assert.Empty(t, d.Files(), "source synced, target not: the file is lost")

	d2, _, s2 := newTest(t, 2)
	require.NoError(t, ring.Mkdir(s2, "/t/b", 0o755))
	require.NoError(t, ring.WriteFileAtomic(s2, "/t/cur", []byte("v")))
	require.NoError(t, ring.Rename(s2, "/t/cur", "/t/b/cur"))
	require.NoError(t, ring.SyncDir(s2, "/t/b"))
	require.NoError(t, ring.SyncDir(s2, "/t"))
	d2.PowerLoss(nil)
	assert.Equal(t, []string{"/t/b/cur"}, d2.Files())
}

// TestPowerLossTruncate: an unsynced truncation is applied or not, whole.
func TestPowerLossTruncate(t *testing.T) {
	sizes := map[int]bool{}
	for seed := int64(1); seed <= 20; seed++ {
		d, _, s := newTest(t, seed)
		require.NoError(t, ring.WriteFileAtomic(s, "/t/f", bytes.Repeat([]byte("x"), 1000)))
		_, err := ring.Open(s, "/t/f", unix.O_RDWR|unix.O_TRUNC, 0)
		require.NoError(t, err)
		d.PowerLoss(rand.New(rand.NewSource(seed)))
		got, err := d.ReadFile("/t/f")
		require.NoError(t, err)
		sizes[len(got)] = true
		if len(got) == 1000 {
			assert.Equal(t, bytes.Repeat([]byte("x"), 1000), got)
		}
	}
	assert.Equal(t, map[int]bool{0: true, 1000: true}, sizes)
}

// TestCrashKeepsPageCache: a process crash loses nothing written, even
// unsynced; the rings die and their locks go with them.
func TestCrashKeepsPageCache(t *testing.T) {
	d, r, s := newTest(t, 1)
	fd, err := ring.Open(s, "/t/f", unix.O_RDWR|unix.O_CREAT, 0o644)
	require.NoError(t, err)
	require.NoError(t, ring.WriteAt(s, fd, []byte("unsynced"), 0))
	require.NoError(t, do1(t, s, ring.Op{Code: ring.OpLock, FD: fd}).Err)
	other := d.NewRing(ring.Options{})
	so := ring.NewSync(other)
	ofd, err := ring.Open(so, "/t/f", unix.O_RDWR, 0)
	require.NoError(t, err)
	assert.ErrorIs(t, do1(t, so, ring.Op{Code: ring.OpLock, FD: ofd}).Err, unix.EWOULDBLOCK, "held by another ring")

	require.NoError(t, r.Submit([]ring.Op{{Code: ring.OpNop, Token: 7}}))
	d.Crash()
	out := make([]ring.Completion, 4)
	n, err := r.Reap(out)
	require.NoError(t, err)
	require.Equal(t, 1, n, "the op in flight completes")
	assert.ErrorIs(t, out[0].Err, unix.EIO)
	_, err = r.Reap(out)
	assert.ErrorIs(t, err, ErrCrashed)
	assert.ErrorIs(t, err, ring.ErrClosed)
	assert.ErrorIs(t, r.Submit([]ring.Op{{Code: ring.OpNop}}), ErrCrashed)
	require.NoError(t, r.Close())
	require.NoError(t, other.Close())

	got, err := d.ReadFile("/t/f")
	require.NoError(t, err)
	assert.Equal(t, "unsynced", string(got))
	r2 := d.NewRing(ring.Options{})
	defer r2.Close()
	s2 := ring.NewSync(r2)
	fd, err = ring.Open(s2, "/t/f", unix.O_RDWR, 0)
	require.NoError(t, err)
	assert.NoError(t, do1(t, s2, ring.Op{Code: ring.OpLock, FD: fd}).Err, "the dead ring's lock is released")
}

// TestPowerLossInFlight: a power loss with Ops in flight and a Reap blocked
// in another goroutine ends them all and leaks nothing (TestMain checks).
func TestPowerLossInFlight(t *testing.T) {
	d, r, s := newTest(t, 1)
	fd := createDurable(t, s, "/t/f")
	idle := d.NewRing(ring.Options{})
	reaped := make(chan error, 1)
	go func() {
		_, err := idle.Reap(make([]ring.Completion, 1))
		reaped <- err
	}()
	ops := []ring.Op{
		{Code: ring.OpWrite, FD: fd, Buf: []byte("a"), Offset: 0, Link: true, Token: 1},
		{Code: ring.OpFdatasync, FD: fd, Token: 2},
		{Code: ring.OpNop, Token: 3},
	}
	require.NoError(t, r.Submit(ops))
	d.PowerLoss(rand.New(rand.NewSource(1)))
	require.ErrorIs(t, <-reaped, ErrCrashed, "a blocked Reap wakes")
	out := make([]ring.Completion, 8)
	n, err := r.Reap(out)
	require.NoError(t, err)
	require.Equal(t, 3, n, "every op gets a final completion")
	for _, c := range out[:n] {
		assert.True(t, errors.Is(c.Err, unix.EIO) || errors.Is(c.Err, unix.ECANCELED), "token %d: %v", c.Token, c.Err)
	}
	require.NoError(t, idle.Close())
	require.NoError(t, r.Close())
	require.NoError(t, r.Close(), "Close is idempotent")
	got, err := d.ReadFile("/t/f")
	require.NoError(t, err)
	assert.Empty(t, got, "an op that had not completed was never performed")
}

// TestPreallocatedLog: a 64 MiB preallocated log with many small synced
// appends costs little, and a power loss keeps every synced append.
func TestPreallocatedLog(t *testing.T) {
	d, _, s := newTest(t, 1)
	fd := createDurable(t, s, "/t/wal")
	require.NoError(t, ring.Fallocate(s, fd, 0, 64<<20, false))
	require.NoError(t, ring.Fsync(s, fd))
	rec := bytes.Repeat([]byte("r"), 128)
	const n = 3000
	for i := 0; i < n; i++ {
		require.NoError(t, ring.WriteSync(s, fd, rec, int64(i*len(rec))))
	}
	require.NoError(t, ring.WriteAt(s, fd, rec, n*128)) // one unsynced append
	d.PowerLoss(rand.New(rand.NewSource(1)))
	got, err := d.ReadFile("/t/wal")
	require.NoError(t, err)
	require.Len(t, got, 64<<20, "the preallocated size is durable")
	assert.Equal(t, bytes.Repeat(rec, n), got[:n*128])
	assert.Equal(t, make([]byte, 1<<20), got[(n+1)*128:(n+1)*128+1<<20], "the preallocated rest reads as zeros")
	t.Logf("virtual time for %d synced appends: %v", n, d.Now())
}
