package baseline

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// GroupLog is a durable log with group commit: Append gathers its record
// into a shared buffer and waits; one flusher goroutine loops "pwrite
// whatever has gathered, fdatasync, wake those writers". While one batch
// syncs, the next one gathers, so n concurrent writers share one sync.
//
// Invariants:
//  1. Every record in buf belongs to batch; the flusher swaps both under mu
//     and completes the old batch exactly once, after its write and sync.
//  2. Once closed is set no record joins buf; the flusher's last flush,
//     after stop is closed, therefore completes every batch.
//  3. Once err is set it never clears: after a failed write or fdatasync
//     the data's fate is unknown, so the log refuses everything after it.
type GroupLog struct {
	fd int

	mu     sync.Mutex // protects the fields below
	buf    []byte     // frames gathered for the next flush
	batch  *batch     // the waiters of the frames in buf
	closed bool
	err    error // the first I/O error; sticky

	// kick tells the flusher that buf is not empty. Room for one: a
	// pending kick already says so, so a writer that finds it full need
	// not wait.
	kick chan struct{}
	stop chan struct{} // closed by Close
	done chan struct{} // closed when the flusher has returned

	// Owned by the flusher.
	off   int64  // where the next flush writes
	spare []byte // the previous flush's buffer, reused as the next buf
}

// batch is one flush's waiters. err is written before done is closed.
type batch struct {
	done chan struct{}
	err  error
}

func newBatch() *batch { return &batch{done: make(chan struct{})} }

// OpenGroupLog creates (truncating) a GroupLog at path, preallocating
// preallocate bytes, and starts its flusher. Close stops it.
func OpenGroupLog(path string, preallocate int64) (*GroupLog, error) {
	fd, err := create(path, preallocate)
	if err != nil {
		return nil, err
	}
	l := &GroupLog{
		fd:    fd,
		batch: newBatch(),
		kick:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go l.run()
	return l, nil
}

// Append writes rec and returns once it is durable, or with the error that
// failed its batch. It is safe for concurrent use; rec may be reused once
// Append returns.
func (l *GroupLog) Append(rec []byte) error {
	if err := checkRecord(rec); err != nil {
		return err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	if l.err != nil {
		err := l.err
		l.mu.Unlock()
		return err
	}
	b := l.batch
	l.buf = appendFrame(l.buf, rec)
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
	<-b.done
	return b.err
}

// Close waits for the records already appended to become durable (or
// fail), stops the flusher and closes the file. It returns the log's I/O
// error, if any; later calls wait for the first to finish and return nil.
func (l *GroupLog) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		<-l.done
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	// The flusher has returned: nothing else touches err or fd.
	err := l.err
	if cerr := unix.Close(l.fd); cerr != nil && err == nil {
		err = fmt.Errorf("baseline: close log: %w", cerr)
	}
	return err
}

// run is the flusher.
func (l *GroupLog) run() {
	defer close(l.done)
	for {
		select {
		case <-l.kick:
			l.flush()
		case <-l.stop:
			l.flush()
			return
		}
	}
}

// flush writes and syncs what has gathered, then wakes its writers.
func (l *GroupLog) flush() {
	l.mu.Lock()
	buf, b, err := l.buf, l.batch, l.err
	if len(buf) == 0 {
		l.mu.Unlock()
		return
	}
	l.buf, l.batch = l.spare[:0], newBatch()
	l.mu.Unlock()

	if err == nil {
		if err = writeDurable(l.fd, buf, l.off); err != nil {
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
		} else {
			l.off += int64(len(buf))
		}
	}
	b.err = err
	close(b.done)
	l.spare = buf
}
