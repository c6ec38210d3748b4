package ring

import (
	"os"
	"sort"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// execSync performs op with plain system calls and continues short reads
// and writes itself. It is the whole of the std backend's I/O and the
// uring backend's path for operations io_uring has no opcode for (stat,
// readdir, lock) or that the running kernel lacks.
//
// It returns the result, the names of OpReadDir, how many remainders it
// resubmitted after short transfers, and the error.
func execSync(op *Op) (res int64, names []string, retries uint64, err error) {
	switch op.Code {
	case OpNop:
		return 0, nil, 0, nil
	case OpOpen:
		fd, err := unix.Open(op.Path, op.Flags|unix.O_CLOEXEC, op.Mode)
		return int64(fd), nil, 0, errno(err)
	case OpClose:
		return 0, nil, 0, errno(unix.Close(int(op.FD)))
	case OpRead, OpWrite, OpReadv, OpWritev:
		return transfer(op)
	case OpFsync:
		return 0, nil, 0, errno(unix.Fsync(int(op.FD)))
	case OpFdatasync:
		return 0, nil, 0, errno(unix.Fdatasync(int(op.FD)))
	case OpFallocate:
		return 0, nil, 0, errno(unix.Fallocate(int(op.FD), uint32(op.Flags), op.Offset, op.Length))
	case OpRename:
		return 0, nil, 0, errno(unix.Rename(op.Path, op.Path2))
	case OpUnlink:
		return 0, nil, 0, errno(unix.Unlinkat(unix.AT_FDCWD, op.Path, op.Flags))
	case OpMkdir:
		return 0, nil, 0, errno(unix.Mkdir(op.Path, op.Mode))
	case OpStat:
		var st unix.Stat_t
		if op.Path != "" {
			err = unix.Stat(op.Path, &st)
		} else {
			err = unix.Fstat(int(op.FD), &st)
		}
		return st.Size, nil, 0, errno(err)
	case OpReadDir:
		ents, err := os.ReadDir(op.Path)
		if err != nil {
			return 0, nil, 0, errno(err)
		}
		names = make([]string, 0, len(ents))
		for _, e := range ents {
			names = append(names, e.Name())
		}
		sort.Strings(names)
		return int64(len(names)), names, 0, nil
	case OpLock:
		return 0, nil, 0, errno(unix.Flock(int(op.FD), unix.LOCK_EX|unix.LOCK_NB))
	case OpDataEnd:
		end, err := dataEnd(int(op.FD))
		return end, nil, 0, errno(err)
	}
	return 0, nil, 0, unix.EINVAL
}

// dataEnd is OpDataEnd: the end of fd's last data region by SEEK_DATA and
// SEEK_HOLE, or its size where the file system has neither (EINVAL).
func dataEnd(fd int) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	end := int64(0)
	for off := int64(0); off < st.Size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break // no data at or after off
		}
		if err == unix.EINVAL {
			return st.Size, nil
		}
		if err != nil {
			return 0, err
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err == unix.EINVAL {
			return st.Size, nil
		}
		if err != nil {
			return 0, err
		}
		end, off = hole, hole
	}
	return min(end, st.Size), nil
}

// noRWFDSync is set once the kernel has refused pwritev2 with RWF_DSYNC
// (Linux before 4.7, or a seccomp profile without pwritev2): DSync writes
// are then a pwritev followed by an fdatasync.
var noRWFDSync atomic.Bool

// transfer performs a read or write, resubmitting the remainder after a
// short transfer. A read stops at end of file; a write that makes no
// progress fails with ErrNoProgress. A DSync write is a pwritev2 with
// RWF_DSYNC, or a pwritev and an fdatasync where the kernel lacks it.
func transfer(op *Op) (int64, []string, uint64, error) {
	bufs := op.Bufs
	if op.Code == OpRead || op.Code == OpWrite {
		bufs = [][]byte{op.Buf}
	}
	write := op.Code == OpWrite || op.Code == OpWritev
	want := op.Size()
	var done int64
	var retries uint64
	syncAfter := false // a DSync write done without RWF_DSYNC
	// stream: the fd has no position to write at (a pipe): its offset is
	// ignored, as io_uring ignores it on such files.
	stream := op.Offset < 0
	// A transfer of 0 bytes still makes its call once, so that a bad fd
	// fails as it does on io_uring.
	for made := false; !made || done < want; {
		rest := trimBufs(bufs, done)
		var n int
		var err error
		switch {
		case write && op.DSync && !noRWFDSync.Load():
			off := int64(-1)
			if !stream {
				off = op.Offset + done
			}
			n, err = unix.Pwritev2(int(op.FD), rest, off, unix.RWF_DSYNC)
			if err == unix.EOPNOTSUPP || err == unix.ENOSYS {
				noRWFDSync.Store(true)
				continue
			}
		case stream && write:
			n, err = unix.Writev(int(op.FD), rest)
			syncAfter = op.DSync
		case stream:
			n, err = unix.Readv(int(op.FD), rest)
		case write:
			n, err = unix.Pwritev(int(op.FD), rest, op.Offset+done)
			syncAfter = op.DSync
		default:
			n, err = unix.Preadv(int(op.FD), rest, op.Offset+done)
		}
		if err == unix.EINTR {
			continue
		}
		if err == unix.ESPIPE && !stream {
			stream = true
			continue
		}
		made = true
		if err != nil {
			return done, nil, retries, errno(err)
		}
		if want == 0 {
			break
		}
		if n == 0 {
			if write {
				return done, nil, retries, ErrNoProgress
			}
			break // end of file
		}
		done += int64(n)
		if done < want {
			retries++
		}
	}
	if syncAfter {
		if err := unix.Fdatasync(int(op.FD)); err != nil {
			return done, nil, retries, errno(err)
		}
	}
	return done, nil, retries, nil
}

// trimBufs returns bufs with the first skip bytes removed, sharing memory.
func trimBufs(bufs [][]byte, skip int64) [][]byte {
	for len(bufs) > 0 && skip >= int64(len(bufs[0])) {
		skip -= int64(len(bufs[0]))
		bufs = bufs[1:]
	}
	if skip == 0 || len(bufs) == 0 {
		return bufs
	}
	out := make([][]byte, len(bufs))
	copy(out, bufs)
	out[0] = out[0][skip:]
	return out
}

// errno unwraps an *os.PathError and the like to its syscall.Errno, so that
// every backend reports the same error values.
func errno(err error) error {
	if err == nil {
		return nil
	}
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	if se, ok := err.(*os.SyscallError); ok {
		return se.Err
	}
	return err
}
