package sim

import (
	"maps"
	"sort"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring"
)

func isWrite(c ring.Opcode) bool { return c == ring.OpWrite || c == ring.OpWritev }
func isRead(c ring.Opcode) bool  { return c == ring.OpRead || c == ring.OpReadv }

// dirSize is what OpStat reports for a directory, as ext4 does.
const dirSize = 4096

// exec performs so (or, for a continued short write, its next transfer) on
// the disk as Linux would. again means a short write left a remainder that
// must be scheduled again.
// REQUIRES: d.mu held.
func (r *Ring) exec(so *simOp) (res int64, names []string, err error, again bool) {
	op := &so.op
	if so.syncing {
		if err := r.syncHalf(so); err != nil {
			return 0, nil, err, false // as io_uring reports it: -EIO, no byte count
		}
		return so.xfer, nil, nil, false
	}
	first := !so.started
	so.started = true
	if first {
		switch so.pl.kind {
		case EIO, ENOSPC:
			if op.Code == ring.OpClose {
				r.closeFD(op.FD) //nolint:errcheck // Linux closes the fd even when close reports an error
			}
			if so.pl.kind == EIO {
				return 0, nil, unix.EIO, false
			}
			return 0, nil, unix.ENOSPC, false
		}
	}
	switch op.Code {
	case ring.OpNop:
		return 0, nil, nil, false
	case ring.OpOpen:
		fd, err := r.open(op)
		return int64(fd), nil, err, false
	case ring.OpClose:
		return 0, nil, r.closeFD(op.FD), false
	case ring.OpRead, ring.OpReadv, ring.OpWrite, ring.OpWritev:
		return r.transfer(so, first)
	case ring.OpFsync, ring.OpFdatasync:
		return 0, nil, r.fsync(so, first), false
	case ring.OpFallocate:
		return 0, nil, r.fallocate(op), false
	case ring.OpRename:
		return 0, nil, r.rename(op), false
	case ring.OpUnlink:
		return 0, nil, r.unlink(op), false
	case ring.OpMkdir:
		return 0, nil, r.mkdir(op), false
	case ring.OpStat:
		size, err := r.stat(op)
		return size, nil, err, false
	case ring.OpReadDir:
		names, err := r.readDir(op)
		return int64(len(names)), names, err, false
	case ring.OpLock:
		return 0, nil, r.lock(op), false
	case ring.OpDataEnd:
		f := r.fds[op.FD]
		if f == nil {
			return 0, nil, unix.EBADF, false
		}
		if f.in.dir {
			return 0, nil, unix.EISDIR, false
		}
		return f.in.cur.dataEnd(), nil, nil, false
	}
	return 0, nil, unix.EINVAL, false
}

// open is OpOpen.
func (r *Ring) open(op *ring.Op) (int32, error) {
	acc := op.Flags & unix.O_ACCMODE
	creat := op.Flags&unix.O_CREAT != 0
	if acc == unix.O_ACCMODE || (creat && op.Flags&unix.O_DIRECTORY != 0) {
		return -1, unix.EINVAL
	}
	p := clean(op.Path)
	parent, name, in, err := r.d.lookup(p)
	if err != nil {
		return -1, err
	}
	switch {
	case in == nil && !creat:
		return -1, unix.ENOENT
	case in == nil:
		in = r.d.newInode(false)
		parent.entries[name] = in
	case creat && op.Flags&unix.O_EXCL != 0:
		return -1, unix.EEXIST
	case in.dir && (acc != unix.O_RDONLY || creat):
		return -1, unix.EISDIR
	case !in.dir && op.Flags&unix.O_DIRECTORY != 0:
		return -1, unix.ENOTDIR
	case !in.dir && op.Flags&unix.O_TRUNC != 0:
		in.setSize(0)
	}
	// The lowest free fd, as Linux allocates.
	fd := int32(3)
	for r.fds[fd] != nil {
		fd++
	}
	r.fds[fd] = &fdesc{fd: fd, in: in, path: p, access: acc, direct: op.Flags&unix.O_DIRECT != 0}
	return fd, nil
}

// closeFD is OpClose.
func (r *Ring) closeFD(fd int32) error {
	f := r.fds[fd]
	if f == nil {
		return unix.EBADF
	}
	r.release(f)
	delete(r.fds, fd)
	return nil
}

// transfer is OpRead, OpReadv, OpWrite and OpWritev. A ShortWrite fault
// moves a prefix and asks to be scheduled again for the rest.
func (r *Ring) transfer(so *simOp, first bool) (int64, []string, error, bool) {
	op := &so.op
	f := so.f // a continued transfer keeps its file, as the kernel holds a reference
	if first {
		if f = r.fds[op.FD]; f == nil {
			return 0, nil, unix.EBADF, false
		}
		so.f = f
	}
	write := isWrite(op.Code)
	if first {
		switch {
		case write && f.access == unix.O_RDONLY, !write && f.access == unix.O_WRONLY:
			return 0, nil, unix.EBADF, false
		case f.in.dir:
			return 0, nil, unix.EISDIR, false
		case op.Offset < -1:
			return 0, nil, unix.EINVAL, false
		}
		so.off = op.Offset
		if so.off == -1 {
			so.off = f.pos
		}
		if f.direct && !aligned(op, so.off) {
			return 0, nil, unix.EINVAL, false
		}
	}
	bufs := op.Bufs
	if op.Code == ring.OpRead || op.Code == ring.OpWrite {
		bufs = [][]byte{op.Buf}
	}
	want := op.Size()
	if write {
		if first && so.pl.kind == NoProgress {
			return 0, nil, ring.ErrNoProgress, false
		}
		n := want - so.xfer
		if first && so.pl.kind == ShortWrite {
			n = so.pl.bytes
		}
		f.in.write(gather(bufs, so.xfer, n), so.off+so.xfer)
		so.xfer += n
		if op.Offset == -1 {
			f.pos = so.off + so.xfer
		}
		return so.xfer, nil, nil, so.xfer < want
	}
	var n int64
	for _, b := range bufs {
		k := f.in.cur.readAt(b, so.off+n)
		n += int64(k)
		if k < len(b) {
			break // end of file
		}
	}
	if op.Offset == -1 {
		f.pos = so.off + n
	}
	if so.pl.kind == BitFlip && n > 0 {
		bit := r.d.rng.Int63n(n * 8)
		at := bit / 8
		for _, b := range bufs {
			if at < int64(len(b)) {
				b[at] ^= 1 << (bit % 8)
				break
			}
			at -= int64(len(b))
		}
	}
	return n, nil, nil, false
}

// aligned reports whether an O_DIRECT transfer at off meets the 512-byte
// alignment of offset, buffer addresses and lengths.
func aligned(op *ring.Op, off int64) bool {
	if off%SectorSize != 0 {
		return false
	}
	bufs := op.Bufs
	if op.Code == ring.OpRead || op.Code == ring.OpWrite {
		bufs = [][]byte{op.Buf}
	}
	for _, b := range bufs {
		if len(b)%SectorSize != 0 {
			return false
		}
		if len(b) > 0 && uintptr(unsafe.Pointer(&b[0]))%SectorSize != 0 {
			return false
		}
	}
	return true
}

// gather copies n bytes of the concatenation of bufs, starting at skip.
func gather(bufs [][]byte, skip, n int64) []byte {
	out := make([]byte, 0, n)
	for _, b := range bufs {
		if int64(len(out)) == n {
			break
		}
		if skip >= int64(len(b)) {
			skip -= int64(len(b))
			continue
		}
		b = b[skip:]
		skip = 0
		if rest := n - int64(len(out)); int64(len(b)) > rest {
			b = b[:rest]
		}
		out = append(out, b...)
	}
	return out
}

// syncHalf is the sync half of a DSync write (see startSyncHalf): an
// fdatasync of the bytes written, failing as an fdatasync does. Its error
// is the write's.
func (r *Ring) syncHalf(so *simOp) error {
	switch so.pl.kind {
	case EIO:
		return unix.EIO
	case ENOSPC:
		return unix.ENOSPC
	}
	return r.syncFile(so.f, so.pl.kind == FsyncFail, so.off, so.xfer)
}

// fsync is OpFsync and OpFdatasync: both make a file's data and size
// durable; on a directory fd they make its entries durable.
func (r *Ring) fsync(so *simOp, first bool) error {
	f := r.fds[so.op.FD]
	if f == nil {
		return unix.EBADF
	}
	return r.syncFile(f, first && so.pl.kind == FsyncFail, 0, -1)
}

// syncFile syncs f (only the pages of [off, off+n) and the size when
// n >= 0: a DSync write's), or fails as a sync does when fail is set.
func (r *Ring) syncFile(f *fdesc, fail bool, off, n int64) error {
	r.stats.Syncs++
	switch {
	case f.in.dir && fail:
		return unix.EIO
	case f.in.dir:
		f.in.durEntries = maps.Clone(f.in.entries)
	case fail:
		// Linux marks the dirty pages clean after a failed writeback: what
		// reached the disk is anyone's guess, and no later fsync retries it.
		var rep LossReport
		f.in.settle(r.d.rng, &rep)
		return unix.EIO
	case n >= 0:
		f.in.syncRange(off, n)
	default:
		f.in.sync()
	}
	return nil
}

// fallocate is OpFallocate: mode 0 extends the size (reading as zeros),
// FALLOC_FL_KEEP_SIZE only reserves space, which the simulation does not
// count.
func (r *Ring) fallocate(op *ring.Op) error {
	f := r.fds[op.FD]
	switch {
	case f == nil || f.access == unix.O_RDONLY:
		return unix.EBADF
	case f.in.dir:
		return unix.EISDIR
	case op.Flags&^unix.FALLOC_FL_KEEP_SIZE != 0:
		return unix.EOPNOTSUPP
	}
	if end := op.Offset + op.Length; op.Flags == 0 && end > f.in.cur.size {
		f.in.setSize(end)
	}
	return nil
}

// rename is OpRename: atomic in the current namespace, durable once both
// directories are synced.
func (r *Ring) rename(op *ring.Op) error {
	src, dst := clean(op.Path), clean(op.Path2)
	sp, sn, sin, err := r.d.lookup(src)
	if err != nil {
		return err
	}
	if sin == nil {
		return unix.ENOENT
	}
	dp, dn, din, err := r.d.lookup(dst)
	if err != nil {
		return err
	}
	switch {
	case sp == nil || dp == nil:
		return unix.EBUSY
	case sin == din:
		return nil
	case sin.dir && strings.HasPrefix(dst, src+"/"):
		return unix.EINVAL
	case din != nil && sin.dir && !din.dir:
		return unix.ENOTDIR
	case din != nil && !sin.dir && din.dir:
		return unix.EISDIR
	case din != nil && din.dir && len(din.entries) > 0:
		return unix.ENOTEMPTY
	}
	delete(sp.entries, sn)
	dp.entries[dn] = sin
	return nil
}

// unlink is OpUnlink, or rmdir with AT_REMOVEDIR.
func (r *Ring) unlink(op *ring.Op) error {
	if op.Flags&^unix.AT_REMOVEDIR != 0 {
		return unix.EINVAL
	}
	parent, name, in, err := r.d.lookup(op.Path)
	switch {
	case err != nil:
		return err
	case in == nil:
		return unix.ENOENT
	case parent == nil:
		return unix.EBUSY
	case op.Flags&unix.AT_REMOVEDIR != 0 && !in.dir:
		return unix.ENOTDIR
	case op.Flags&unix.AT_REMOVEDIR != 0 && len(in.entries) > 0:
		return unix.ENOTEMPTY
	case op.Flags&unix.AT_REMOVEDIR == 0 && in.dir:
		return unix.EISDIR
	}
	delete(parent.entries, name)
	return nil
}

// mkdir is OpMkdir.
func (r *Ring) mkdir(op *ring.Op) error {
	parent, name, in, err := r.d.lookup(op.Path)
	switch {
	case err != nil:
		return err
	case in != nil:
		return unix.EEXIST
	}
	parent.entries[name] = r.d.newInode(true)
	return nil
}

// stat is OpStat: by path, or by fd when the path is empty.
func (r *Ring) stat(op *ring.Op) (int64, error) {
	var in *inode
	if op.Path != "" {
		_, _, found, err := r.d.lookup(op.Path)
		if err != nil {
			return 0, err
		}
		if found == nil {
			return 0, unix.ENOENT
		}
		in = found
	} else {
		f := r.fds[op.FD]
		if f == nil {
			return 0, unix.EBADF
		}
		in = f.in
	}
	if in.dir {
		return dirSize, nil
	}
	return in.cur.size, nil
}

// readDir is OpReadDir: the sorted names of a directory.
func (r *Ring) readDir(op *ring.Op) ([]string, error) {
	_, _, in, err := r.d.lookup(op.Path)
	switch {
	case err != nil:
		return nil, err
	case in == nil:
		return nil, unix.ENOENT
	case !in.dir:
		return nil, unix.ENOTDIR
	}
	names := make([]string, 0, len(in.entries))
	for n := range in.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// lock is OpLock: an exclusive, non-blocking lock on the file, held per open
// file description (as flock is) until that fd closes or its ring dies.
func (r *Ring) lock(op *ring.Op) error {
	f := r.fds[op.FD]
	if f == nil {
		return unix.EBADF
	}
	if h := r.d.locks[f.in]; h != nil && h != f {
		return unix.EWOULDBLOCK
	}
	r.d.locks[f.in] = f
	return nil
}
