package main

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"

	"golang.org/x/sys/unix"
)

// overlapLog is an experiment, not a baseline: grouplog's group commit
// with the next batch's pwrite overlapping the previous batch's fdatasync
// (issue 4's "overlap"), to measure what that overlap could give on this
// disk before the engine's frame rule is changed for it. syncers is how
// many fdatasyncs may be in flight at once (1: the syncs are serial, only
// the writes overlap); writers are acknowledged in batch order.
type overlapLog struct {
	fd int

	mu     sync.Mutex
	buf    []byte
	batch  *olBatch
	closed bool
	err    error

	kick  chan struct{}
	stop  chan struct{}
	done  chan struct{}
	synch chan *olBatch
	wg    sync.WaitGroup
	off   int64
}

type olBatch struct {
	done chan struct{}
	prev *olBatch // acknowledged first
	err  error
}

func openOverlapLog(path string, preallocate int64, syncers int) (*overlapLog, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Fallocate(fd, 0, 0, preallocate); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Fsync(fd); err != nil {
		unix.Close(fd)
		return nil, err
	}
	l := &overlapLog{fd: fd, batch: &olBatch{done: make(chan struct{})}, kick: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}), synch: make(chan *olBatch)}
	for range syncers {
		l.wg.Add(1)
		go l.syncer()
	}
	go l.run()
	return l, nil
}

func (l *overlapLog) put(_ context.Context, _ uint64, value []byte) error {
	l.mu.Lock()
	if l.closed || l.err != nil {
		l.mu.Unlock()
		return errors.New("overlaplog: closed or failed")
	}
	b := l.batch
	var hdr [8]byte
	binary.LittleEndian.PutUint32(hdr[:], uint32(len(value)))
	l.buf = append(append(l.buf, hdr[:]...), value...)
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
	<-b.done
	return b.err
}

func (l *overlapLog) counters() map[string]float64 { return nil }

func (l *overlapLog) close(context.Context) error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	return unix.Close(l.fd)
}

func (l *overlapLog) run() {
	defer close(l.done)
	var prev *olBatch
	for {
		select {
		case <-l.kick:
			prev = l.flush(prev)
		case <-l.stop:
			l.flush(prev)
			close(l.synch)
			l.wg.Wait()
			return
		}
	}
}

// flush writes what gathered and hands the batch to a syncer; the send
// waits for a free syncer, so at most syncers batches sync while the next
// one is written.
func (l *overlapLog) flush(prev *olBatch) *olBatch {
	l.mu.Lock()
	buf, b := l.buf, l.batch
	if len(buf) == 0 {
		l.mu.Unlock()
		return prev
	}
	l.buf, l.batch = nil, &olBatch{done: make(chan struct{})}
	l.mu.Unlock()
	for len(buf) > 0 {
		n, err := unix.Pwrite(l.fd, buf, l.off)
		if err != nil {
			b.err = err
			break
		}
		buf = buf[n:]
		l.off += int64(n)
	}
	b.prev = prev
	l.synch <- b
	return b
}

func (l *overlapLog) syncer() {
	defer l.wg.Done()
	for b := range l.synch {
		if b.err == nil {
			b.err = unix.Fdatasync(l.fd)
		}
		if b.prev != nil {
			<-b.prev.done
			b.prev = nil
		}
		close(b.done)
	}
}
