package durability

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring"
)

// opWatch wraps each ring an engine makes (Config.NewRing) and watches the
// ring operations go by, to check the rule of DESIGN.md "Errors from the
// disk": a file whose write or fsync failed is never synced (or written)
// again, because after a failed fsync the kernel may have dropped the
// dirty pages and a retried fsync would report success for data that is
// not on the disk.
//
// It tracks, per ring (a process), which path each fd was opened on and
// which fds and files have seen a failed write or sync (a final
// Completion with an error other than ECANCELED: a cancelled op was never
// performed). A sync or write submitted afterwards on such an fd is a
// violation; a sync of the same file through another fd opened in the same
// process is one too (the page cache, and the lie, outlive the fd). The
// poison on a path follows a rename and ends when the file is replaced
// (unlinked, or opened with O_TRUNC: nothing of the lost pages is left to
// lie about). A directory follows the fd rule only: every later create in
// it needs a directory sync, through a new fd.
//
// The sim backend records faults it injects (sim.Disk.Hits) but not the
// ops around them, so the watch sits between the engine and the ring.
type opWatch struct {
	mu sync.Mutex
	// violations are the rule breaks seen, in order; guarded by mu.
	violations []string
	// failedSyncs counts syncs that completed with an error; guarded by mu.
	failedSyncs int
	// seen counts every submitted op by code and file class (see
	// ioerrFileClass); guarded by mu.
	seen map[ioerrOpClass]int
	// read holds every path a read was submitted on; guarded by mu.
	read map[string]bool
	// done is every final Completion observed, in order; guarded by mu.
	done []watchedOp
}

// watchedOp is one completed op.
type watchedOp struct {
	code ring.Opcode
	path string
	err  error
}

// Redone reports whether, after the first failed op with code on path, an
// op with the same code on a file of the same class succeeded: the engine
// did the work again (a seal retried, a retirement redone, a directory
// synced by the next create).
func (w *opWatch) Redone(code ring.Opcode, p string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	failed := false
	for _, d := range w.done {
		switch {
		case !failed && d.code == code && d.path == p && d.err != nil:
			failed = true
		case failed && d.code == code && d.err == nil && ioerrFileClass(d.path) == ioerrFileClass(p):
			return true
		}
	}
	return false
}

// ioerrOpClass is an op code on a class of file: what the sweep's coverage
// matrix is made of.
type ioerrOpClass struct {
	Code  ring.Opcode
	Class string
}

func (c ioerrOpClass) String() string { return c.Code.String() + " " + c.Class }

func newOpWatch() *opWatch {
	return &opWatch{seen: make(map[ioerrOpClass]int), read: make(map[string]bool)}
}

// Read reports whether a read was submitted on the file at p.
func (w *opWatch) Read(p string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.read[p]
}

// wrap returns r watched.
func (w *opWatch) wrap(r ring.Ring) ring.Ring {
	return &watchedRing{Ring: r, w: w, fds: make(map[int32]string), poisonFD: make(map[int32]string),
		poisonPath: make(map[string]string), inflight: make(map[uint64][]ring.Op)}
}

// Violations returns the rule breaks seen so far.
func (w *opWatch) Violations() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.violations...)
}

// Seen returns the op classes submitted so far.
func (w *opWatch) Seen() map[ioerrOpClass]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[ioerrOpClass]int, len(w.seen))
	for k, v := range w.seen {
		out[k] = v
	}
	return out
}

// watchedRing is one ring under an opWatch. All its maps are guarded by
// w.mu.
type watchedRing struct {
	ring.Ring
	w          *opWatch
	fds        map[int32]string     // open fd → path
	poisonFD   map[int32]string     // fd → what failed on it
	poisonPath map[string]string    // path → what failed on it
	inflight   map[uint64][]ring.Op // token → submitted ops not yet completed, oldest first
}

func ioerrIsSync(c ring.Opcode) bool { return c == ring.OpFsync || c == ring.OpFdatasync }

// ioerrSyncs says whether op syncs its file: an fsync, an fdatasync, or a
// DSync write (durable on completion: its failure may be the sync's).
func ioerrSyncs(op *ring.Op) bool     { return ioerrIsSync(op.Code) || (ioerrIsWrite(op.Code) && op.DSync) }
func ioerrIsWrite(c ring.Opcode) bool { return c == ring.OpWrite || c == ring.OpWritev }

// opPath is the path an op works on: its own, or its fd's.
// REQUIRES: w.mu held.
func (r *watchedRing) opPath(op *ring.Op) string {
	if op.Path != "" {
		return path.Clean(op.Path)
	}
	return r.fds[op.FD]
}

func (r *watchedRing) Submit(ops []ring.Op) error {
	w := r.w
	w.mu.Lock()
	for i := range ops {
		op := ops[i]
		p := r.opPath(&op)
		w.seen[ioerrOpClass{op.Code, ioerrFileClass(p)}]++
		if op.Code == ring.OpRead || op.Code == ring.OpReadv {
			w.read[p] = true
		}
		if ioerrIsSync(op.Code) || ioerrIsWrite(op.Code) {
			if why, ok := r.poisonFD[op.FD]; ok {
				w.violations = append(w.violations, fmt.Sprintf("%s on fd %d (%s) after %s on that fd", op.Code, op.FD, p, why))
			} else if why, ok := r.poisonPath[p]; ok && ioerrSyncs(&op) && ioerrFileClass(p) != "dir" {
				w.violations = append(w.violations, fmt.Sprintf("%s on %s (fd %d, reopened) after %s on that file", op.Code, p, op.FD, why))
			}
		}
		r.inflight[op.Token] = append(r.inflight[op.Token], op)
	}
	w.mu.Unlock()
	err := r.Ring.Submit(ops)
	if err != nil {
		w.mu.Lock()
		for i := range ops {
			r.forget(ops[i].Token)
		}
		w.mu.Unlock()
	}
	return err
}

// forget drops the oldest in-flight op with token tok and returns it.
// REQUIRES: w.mu held.
func (r *watchedRing) forget(tok uint64) (ring.Op, bool) {
	q := r.inflight[tok]
	if len(q) == 0 {
		return ring.Op{}, false
	}
	op := q[0]
	if len(q) == 1 {
		delete(r.inflight, tok)
	} else {
		r.inflight[tok] = q[1:]
	}
	return op, true
}

func (r *watchedRing) Reap(out []ring.Completion) (int, error) {
	n, err := r.Ring.Reap(out)
	r.observe(out[:n])
	return n, err
}

func (r *watchedRing) TryReap(out []ring.Completion) (int, error) {
	n, err := r.Ring.TryReap(out)
	r.observe(out[:n])
	return n, err
}

// observe updates the fd table and the poison from final Completions.
func (r *watchedRing) observe(cs []ring.Completion) {
	w := r.w
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range cs {
		if c.Deadline {
			continue
		}
		op, ok := r.forget(c.Token)
		if !ok {
			continue
		}
		p := r.opPath(&op)
		w.done = append(w.done, watchedOp{code: op.Code, path: p, err: c.Err})
		switch op.Code {
		case ring.OpOpen:
			if c.Err == nil {
				r.fds[int32(c.Res)] = path.Clean(op.Path)
				delete(r.poisonFD, int32(c.Res))
				if op.Flags&unix.O_TRUNC != 0 {
					delete(r.poisonPath, path.Clean(op.Path))
				}
			}
		case ring.OpClose:
			delete(r.fds, op.FD) // Linux closes the fd even when close fails
			delete(r.poisonFD, op.FD)
		case ring.OpRename:
			if c.Err == nil {
				from, to := path.Clean(op.Path), path.Clean(op.Path2)
				delete(r.poisonPath, to)
				if why, ok := r.poisonPath[from]; ok {
					r.poisonPath[to] = why
					delete(r.poisonPath, from)
				}
				for fd, q := range r.fds {
					if q == from {
						r.fds[fd] = to
					}
				}
			}
		case ring.OpUnlink:
			if c.Err == nil {
				delete(r.poisonPath, path.Clean(op.Path))
			}
		}
		if c.Err == nil || errors.Is(c.Err, syscall.ECANCELED) || !(ioerrIsSync(op.Code) || ioerrIsWrite(op.Code)) {
			continue
		}
		why := fmt.Sprintf("a failed %s (%v)", op.Code, c.Err)
		r.poisonFD[op.FD] = why
		if ioerrSyncs(&op) {
			w.failedSyncs++
			r.poisonPath[p] = why
		}
	}
}

// ioerrFileClass names the kind of file at p (an absolute path on the sim disk
// under the engine's directory) for the coverage matrix.
func ioerrFileClass(p string) string {
	base := path.Base(p)
	dir := path.Base(path.Dir(p))
	switch {
	case p == "":
		return "-"
	case strings.HasSuffix(p, "/wal"), strings.HasSuffix(p, "/hot"), strings.HasSuffix(p, "/blocks"),
		dir == "blocks", p == simDir, p == "/":
		return "dir"
	case dir == "wal":
		return "wal"
	case strings.HasSuffix(base, ".seg"):
		return "hot"
	case strings.HasSuffix(base, ".spare"):
		return "spare"
	case strings.Contains(p, "/blocks/"):
		return "block"
	case strings.HasPrefix(base, "MANIFEST"):
		return "manifest"
	case strings.HasPrefix(base, "CURRENT"):
		return "CURRENT"
	case base == "LOCK":
		return "LOCK"
	}
	return "other"
}
