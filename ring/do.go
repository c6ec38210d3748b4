package ring

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/internal/testhook"
)

// Doer performs a batch of Ops and waits for them. It is how plain,
// goroutine-free code (the formats in wal, hot and snapshot) does its I/O:
// in recovery over a private ring (NewSync), inside the engine through the
// submitter and completer actors.
type Doer interface {
	// Do submits ops as one batch (Link flags as set) and returns their
	// final Completions in the order of ops. Deadline notices are dropped.
	// The error is non-nil only when the batch could not be submitted or
	// the ring died; per-op errors are in the Completions.
	Do(ops ...Op) ([]Completion, error)
}

// Sync is a Doer over a Ring that it reaps itself.
// REQUIRES: nothing else reaps the Ring. Do calls are serialised.
type Sync struct {
	mu   sync.Mutex // serialises Do: one batch in flight at a time
	r    Ring
	buf  []Completion
	next uint64
}

// NewSync returns a Doer that submits to r and reaps r itself.
func NewSync(r Ring) *Sync { return &Sync{r: r, buf: make([]Completion, 64), next: syncTokenBase} }

// syncTokenBase is where a Sync's tokens start: far from the small tokens
// other users of the same ring pick, so that a stale completion of theirs
// is recognised as foreign and skipped.
const syncTokenBase = 1 << 62

// Ring returns the Ring under s.
func (s *Sync) Ring() Ring { return s.r }

// Do implements Doer.
func (s *Sync) Do(ops ...Op) ([]Completion, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(ops) > s.r.Capacity() {
		return nil, fmt.Errorf("ring: batch of %d ops exceeds capacity %d", len(ops), s.r.Capacity())
	}
	// Tokens are ours: the caller's tokens are restored on the results.
	base := s.next
	s.next += uint64(len(ops))
	mine := make([]Op, len(ops))
	for i := range ops {
		mine[i] = ops[i]
		mine[i].Token = base + uint64(i)
	}
	if err := s.r.Submit(mine); err != nil {
		return nil, err
	}
	out := make([]Completion, len(ops))
	for left := len(ops); left > 0; {
		n, err := s.r.Reap(s.buf)
		for _, c := range s.buf[:n] {
			if c.Deadline {
				continue
			}
			i := c.Token - base
			if i >= uint64(len(ops)) {
				// Left by an earlier user of the ring (an engine's
				// actors before they stopped): not ours, skip it.
				continue
			}
			c.Token = ops[i].Token
			out[i] = c
			left--
		}
		if err != nil && left > 0 {
			return nil, err
		}
	}
	return out, nil
}

// Do1 performs one op and returns its Completion's result, with the
// Completion's error wrapped as an *os.PathError-like error naming the op.
func Do1(d Doer, op Op) (Completion, error) {
	cs, err := d.Do(op)
	if err != nil {
		return Completion{}, err
	}
	c := cs[0]
	if c.Err != nil {
		return c, opErr(op, c.Err)
	}
	return c, nil
}

// PathError describes a failed operation and the file it was on.
type PathError struct {
	Op   string
	Path string // may be empty for an fd-only op
	FD   int32
	Err  error
}

func (e *PathError) Error() string {
	if e.Path != "" {
		return fmt.Sprintf("%s %s: %v", e.Op, e.Path, e.Err)
	}
	return fmt.Sprintf("%s fd %d: %v", e.Op, e.FD, e.Err)
}

func (e *PathError) Unwrap() error { return e.Err }

func opErr(op Op, err error) error {
	return &PathError{Op: op.Code.String(), Path: op.Path, FD: op.FD, Err: err}
}

// Open opens path and returns its fd.
func Open(d Doer, path string, flags int, mode uint32) (int32, error) {
	c, err := Do1(d, Op{Code: OpOpen, Path: path, Flags: flags | unix.O_CLOEXEC, Mode: mode})
	return int32(c.Res), err
}

// Close closes fd.
func Close(d Doer, fd int32) error {
	_, err := Do1(d, Op{Code: OpClose, FD: fd})
	return err
}

// WriteAt writes all of b at off.
func WriteAt(d Doer, fd int32, b []byte, off int64) error {
	_, err := Do1(d, Op{Code: OpWrite, FD: fd, Buf: b, Offset: off})
	return err
}

// WriteSync writes all of b at off and fdatasyncs fd, linked in one batch.
func WriteSync(d Doer, fd int32, b []byte, off int64) error {
	return firstErr(d.Do(
		Op{Code: OpWrite, FD: fd, Buf: b, Offset: off, Link: true},
		Op{Code: OpFdatasync, FD: fd},
	))
}

// ReadAt reads into b at off and returns how many bytes it read; fewer than
// len(b) only at end of file.
func ReadAt(d Doer, fd int32, b []byte, off int64) (int, error) {
	c, err := Do1(d, Op{Code: OpRead, FD: fd, Buf: b, Offset: off})
	return int(c.Res), err
}

// Fsync syncs fd (data and metadata).
func Fsync(d Doer, fd int32) error {
	_, err := Do1(d, Op{Code: OpFsync, FD: fd})
	return err
}

// Fdatasync syncs fd's data and the metadata needed to read it.
func Fdatasync(d Doer, fd int32) error {
	_, err := Do1(d, Op{Code: OpFdatasync, FD: fd})
	return err
}

// Size returns the size of the file open as fd.
func Size(d Doer, fd int32) (int64, error) {
	c, err := Do1(d, Op{Code: OpStat, FD: fd})
	return c.Res, err
}

// DataEnd returns where the data of the file open as fd ends: past it, up
// to its size, the file reads as zeros (see OpDataEnd).
func DataEnd(d Doer, fd int32) (int64, error) {
	c, err := Do1(d, Op{Code: OpDataEnd, FD: fd})
	return c.Res, err
}

// Stat returns the size of the file at path.
func Stat(d Doer, path string) (int64, error) {
	c, err := Do1(d, Op{Code: OpStat, Path: path})
	return c.Res, err
}

// Rename renames from to to.
func Rename(d Doer, from, to string) error {
	_, err := Do1(d, Op{Code: OpRename, Path: from, Path2: to})
	return err
}

// Unlink removes the file at path.
func Unlink(d Doer, path string) error {
	_, err := Do1(d, Op{Code: OpUnlink, Path: path})
	return err
}

// Mkdir creates a directory; an existing one is not an error.
func Mkdir(d Doer, path string, mode uint32) error {
	_, err := Do1(d, Op{Code: OpMkdir, Path: path, Mode: mode})
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

// MkdirDurable creates directory dir if it is missing and makes its entry
// durable by syncing the parent. It syncs the parent even when dir already
// exists: an earlier process may have created it and died before its
// parent was synced, and a later power loss would then take the directory
// and everything in it.
func MkdirDurable(d Doer, dir string) error {
	if err := Mkdir(d, dir, 0o755); err != nil {
		return err
	}
	return SyncDir(d, filepath.Dir(dir))
}

// MkdirAllDurable is MkdirDurable for dir and each of its missing
// parents, top down: every directory it creates has its entry made
// durable (its parent synced) before anything is created in it, so a power
// loss never keeps a directory whose parent it took.
func MkdirAllDurable(d Doer, dir string) error {
	err := MkdirDurable(d, dir)
	if !errors.Is(err, unix.ENOENT) {
		return err
	}
	parent := filepath.Dir(dir)
	if parent == dir {
		return err
	}
	if perr := MkdirAllDurable(d, parent); perr != nil {
		return perr
	}
	return MkdirDurable(d, dir)
}

// ReadDir lists the names in the directory at path.
func ReadDir(d Doer, path string) ([]string, error) {
	c, err := Do1(d, Op{Code: OpReadDir, Path: path})
	return c.Names, err
}

// Fallocate preallocates [off, off+n) of fd without changing its size when
// keepSize is set.
func Fallocate(d Doer, fd int32, off, n int64, keepSize bool) error {
	mode := 0
	if keepSize {
		mode = unix.FALLOC_FL_KEEP_SIZE
	}
	_, err := Do1(d, Op{Code: OpFallocate, FD: fd, Offset: off, Length: n, Flags: mode})
	return err
}

// SyncDir makes the entries of directory dir (creations, renames, unlinks)
// durable: it opens dir, fsyncs it and closes it.
func SyncDir(d Doer, dir string) error {
	fd, err := Open(d, dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	serr := Fsync(d, fd)
	cerr := Close(d, fd)
	if serr != nil {
		return serr
	}
	return cerr
}

// ReadFile reads the whole file at path.
func ReadFile(d Doer, path string) ([]byte, error) {
	fd, err := Open(d, path, unix.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer Close(d, fd) //nolint:errcheck // read-only: nothing to lose
	size, err := Size(d, fd)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, size)
	n, err := ReadAt(d, fd, buf, 0)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// ReadLog reads a preallocated log file up to where its data ends (see
// DataEnd): what follows reads as zeros, and a log's scan treats the end of
// its data as zeros too. A Start over many spaces read each hot segment's
// whole preallocation (64 MiB by default) before: 100 spaces took 9-20 s
// and allocated 6.4 GiB. It reads at least the first atLeast bytes (fewer
// if the file is shorter), zeros or not, for a caller that knows how far
// the log must reach.
func ReadLog(d Doer, path string, atLeast int64) ([]byte, error) {
	fd, err := Open(d, path, unix.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer Close(d, fd) //nolint:errcheck // read-only: nothing to lose
	end, err := DataEnd(d, fd)
	if err != nil {
		return nil, err
	}
	if end < atLeast {
		size, err := Size(d, fd)
		if err != nil {
			return nil, err
		}
		end = max(end, min(atLeast, size))
	}
	buf := make([]byte, end)
	n, err := ReadAt(d, fd, buf, 0)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// WriteFileAtomic replaces path with data crash-safely: it writes a
// temporary file beside it, fsyncs it, renames it over path and syncs the
// directory. After a crash path holds either the old or the new contents.
func WriteFileAtomic(d Doer, path string, data []byte) error {
	tmp := path + ".tmp"
	fd, err := Open(d, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	werr := firstErr(d.Do(
		Op{Code: OpWrite, FD: fd, Buf: data, Offset: 0, Link: true},
		Op{Code: OpFsync, FD: fd},
	))
	cerr := Close(d, fd)
	if werr == nil {
		werr = cerr
	}
	if werr != nil {
		// Nothing names tmp: remove it rather than leave one per failed
		// attempt (a full disk fails many in a row). A crash or a failed
		// unlink leaves it to the owner's cleanup at open.
		Unlink(d, tmp) //nolint:errcheck // best effort, see above
		return werr
	}
	if err := Rename(d, tmp, path); err != nil {
		return err
	}
	if testhook.Planted(testhook.SkipDirSync) {
		return nil
	}
	return SyncDir(d, filepath.Dir(path))
}

// firstErr returns the batch error or the first per-op error.
func firstErr(cs []Completion, err error) error {
	if err != nil {
		return err
	}
	for _, c := range cs {
		if c.Err != nil {
			return &PathError{Op: c.Code.String(), Err: c.Err}
		}
	}
	return nil
}
