package baseline

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// SyncLoop is the simplest durable log: each Append does its own pwrite
// and fdatasync while holding a mutex, so concurrent writers queue for the
// disk one by one.
type SyncLoop struct {
	mu     sync.Mutex // protects every field below
	fd     int
	off    int64  // where the next record goes
	buf    []byte // scratch for one frame
	closed bool
	err    error // the first I/O error; sticky, as in GroupLog
}

// OpenSyncLoop creates (truncating) a SyncLoop at path, preallocating
// preallocate bytes.
func OpenSyncLoop(path string, preallocate int64) (*SyncLoop, error) {
	fd, err := create(path, preallocate)
	if err != nil {
		return nil, err
	}
	return &SyncLoop{fd: fd}, nil
}

// Append writes rec and returns once it is durable. It is safe for
// concurrent use.
func (s *SyncLoop) Append(rec []byte) error {
	if err := checkRecord(rec); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.err != nil {
		return s.err
	}
	s.buf = appendFrame(s.buf[:0], rec)
	if err := writeDurable(s.fd, s.buf, s.off); err != nil {
		s.err = err
		return err
	}
	s.off += int64(len(s.buf))
	return nil
}

// Close closes the file, returning the log's I/O error if any; later calls
// return nil.
func (s *SyncLoop) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.err
	if cerr := unix.Close(s.fd); cerr != nil && err == nil {
		err = fmt.Errorf("baseline: close log: %w", cerr)
	}
	return err
}
