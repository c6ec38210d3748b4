// Package sim is the simulated ring backend: an in-memory filesystem (a
// Disk) that outlives the rings (processes) using it, deterministic from a
// seed, with a virtual clock, fault injection, process crashes and power
// loss.
//
// # Model
//
// Each regular file keeps its current bytes (what reads see: the page
// cache) and its durable bytes (what a power loss keeps), plus the list of
// writes and size changes made since its last successful fsync or
// fdatasync. A power loss rebuilds each file from its durable bytes and
// applies, drops or tears (to zeros or to garbage) every not-yet-durable
// write per 512-byte sector, chosen by a caller-supplied rng.
//
// Each directory keeps its current entries and its durable entries. Entries
// made by open(O_CREAT), mkdir, rename and unlink become durable only when
// the directory itself is fsynced through an fd opened on it. After a power
// loss the namespace is rebuilt from durable entries alone: a file whose
// entry was never synced vanishes and an unlink that was never synced is
// undone.
//
// # Time and order
//
// Nothing runs in the background: a Ring starts no goroutines. Every Op is
// given a latency on the Disk's virtual clock when it starts (with seeded
// jitter, so unlinked Ops complete out of order), and Reap performs the Op
// whose completion time comes first, advancing the clock to it. An Op's
// effects therefore happen when it completes, in virtual-time order. The
// same seed and the same single-goroutine sequence of calls replay the same
// run exactly.
//
// # Concurrency
//
// One mutex on the Disk guards the Disk and every Ring on it, so any number
// of goroutines may use any number of Rings on one Disk.
package sim

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Latency is the virtual time Ops take. Each Op takes its base latency plus
// a uniformly random jitter of up to the same amount again, plus any
// injected Delay.
type Latency struct {
	Data time.Duration // read, write, readv, writev
	Sync time.Duration // fsync, fdatasync
	Meta time.Duration // every other op
}

// DefaultLatency is a fast local SSD: 10 µs per data or metadata op, 100 µs
// per sync.
var DefaultLatency = Latency{Data: 10 * time.Microsecond, Sync: 100 * time.Microsecond, Meta: 10 * time.Microsecond}

// Disk is a simulated filesystem. It outlives the Rings that use it, as a
// disk outlives processes. All methods are safe for concurrent use.
type Disk struct {
	mu   sync.Mutex // guards everything below and every field of every Ring of this Disk
	cond *sync.Cond // on mu; broadcast on any change a blocked Submit or Reap may want

	rng     *rand.Rand    // latency jitter, fault draws, fsync-failure fates
	now     time.Duration // the virtual clock; never decreases
	seq     uint64        // orders events with equal times; increases
	ops     uint64        // Ops started so far: the last started Op's index
	nextIno uint64
	lat     Latency

	root   *inode
	rings  []*Ring           // live rings in creation order
	ringID int               // numbers rings for messages
	locks  map[*inode]*fdesc // OpLock holders
	faults []*Fault          // armed rules, in injection order
	hits   []Hit             // every fault that fired
}

// NewDisk returns an empty disk (only "/" exists) whose run is determined by
// seed.
func NewDisk(seed int64) *Disk {
	d := &Disk{
		rng:   rand.New(rand.NewSource(seed)),
		lat:   DefaultLatency,
		locks: make(map[*inode]*fdesc),
	}
	d.cond = sync.NewCond(&d.mu)
	d.root = d.newInode(true)
	return d
}

// inode is a file or a directory. All fields are guarded by Disk.mu.
//
// Invariants for a regular file:
//  1. Applying pending in order to dur (all of every write) yields cur,
//     except in pages where an fsync failed (Linux marks those clean while
//     their fate on the disk is unknown; a later write re-dirties them).
//  2. dirty holds every page index cur changed in since the last sync.
type inode struct {
	ino uint64
	dir bool

	cur, dur content // regular files: what reads see; what a power loss keeps
	dirty    map[int64]struct{}
	pending  []change

	entries    map[string]*inode // directories: current names
	durEntries map[string]*inode // directories: names as of the last fsync of this directory
}

// change is one not-yet-durable modification of a file: a write (data at
// off) or, when isSize, a truncation or extension to size.
type change struct {
	off    int64
	data   []byte
	size   int64
	isSize bool
}

func (d *Disk) newInode(dir bool) *inode {
	d.nextIno++
	in := &inode{ino: d.nextIno, dir: dir}
	if dir {
		in.entries = make(map[string]*inode)
		in.durEntries = make(map[string]*inode)
	} else {
		in.cur, in.dur = newContent(), newContent()
		in.dirty = make(map[int64]struct{})
	}
	return in
}

// write stores b at off in the current bytes and remembers it as pending.
func (in *inode) write(b []byte, off int64) {
	if len(b) == 0 {
		return
	}
	in.pending = append(in.pending, change{off: off, data: append([]byte(nil), b...)})
	in.cur.writeAt(b, off, in.dirty)
}

// setSize truncates or extends the current bytes and remembers it.
func (in *inode) setSize(n int64) {
	if n == in.cur.size {
		return
	}
	in.pending = append(in.pending, change{size: n, isSize: true})
	in.cur.setSize(n, in.dirty)
}

// sync makes the current bytes and size durable.
func (in *inode) sync() {
	for idx := range in.dirty {
		if p := in.cur.pages[idx]; p != nil {
			cp := *p
			in.dur.pages[idx] = &cp
		} else {
			delete(in.dur.pages, idx)
		}
	}
	if in.dur.size > in.cur.size {
		for idx := range in.dur.pages {
			if idx*pageSize >= in.cur.size {
				delete(in.dur.pages, idx)
			}
		}
	}
	in.dur.size = in.cur.size
	in.pending = nil
	clear(in.dirty)
}

// syncRange is the sync half of a DSync write of n bytes at off: like
// Linux's RWF_DSYNC (fdatasync of that range) it makes durable the pages
// holding [off, off+n) and the size the write reached, and leaves the
// file's other dirty pages as they were, so that code relying on a DSync
// write to persist an earlier, unsynced write elsewhere in the file loses
// it at a power loss, as it would on Linux. A pending truncation or
// extension (never seen on a log being appended to) syncs the whole file:
// the journal commit that makes a size change durable carries it all.
func (in *inode) syncRange(off, n int64) {
	for _, ch := range in.pending {
		if ch.isSize {
			in.sync()
			return
		}
	}
	if n > 0 {
		p0, p1 := off/pageSize, (off+n-1)/pageSize
		for idx := p0; idx <= p1; idx++ {
			if _, ok := in.dirty[idx]; !ok {
				continue
			}
			if p := in.cur.pages[idx]; p != nil {
				cp := *p
				in.dur.pages[idx] = &cp
			} else {
				delete(in.dur.pages, idx)
			}
			delete(in.dirty, idx)
		}
		// The pending writes keep only their bytes outside those pages
		// (invariant 1: the rest is in dur now).
		lo, hi := p0*pageSize, (p1+1)*pageSize
		var kept []change
		for _, ch := range in.pending {
			end := ch.off + int64(len(ch.data))
			if ch.off < lo {
				kept = append(kept, change{off: ch.off, data: ch.data[:min(end, lo)-ch.off]})
			}
			if end > hi {
				from := max(ch.off, hi)
				kept = append(kept, change{off: from, data: ch.data[from-ch.off:]})
			}
		}
		in.pending = kept
	}
	if in.cur.size > in.dur.size {
		in.dur.size = in.cur.size
	}
}

// Fate is what a power loss (or a failed fsync) did to one sector of a
// not-yet-durable write, or to one not-yet-durable size change.
type Fate int

// The fates.
const (
	Applied Fate = iota // written as asked
	Dropped             // never reached the disk
	Zeroed              // torn: reads back as zeros
	Garbage             // torn: reads back as random bytes
	numFates
)

// String names the fate.
func (f Fate) String() string {
	switch f {
	case Applied:
		return "applied"
	case Dropped:
		return "dropped"
	case Zeroed:
		return "zeroed"
	case Garbage:
		return "garbage"
	}
	return fmt.Sprintf("fate(%d)", int(f))
}

// settle decides the fate of every pending change of in and applies the
// outcome to its durable bytes, then forgets them. A write is applied whole
// a third of the time, dropped whole a third of the time, and otherwise
// each of its sectors gets its own fate. The current bytes are
// left alone: after a failed fsync the page cache still holds them.
func (in *inode) settle(rng *rand.Rand, rep *LossReport) {
	for _, ch := range in.pending {
		if ch.isSize {
			if rng.Intn(2) == 0 {
				in.dur.setSize(ch.size, nil)
				rep.count(Applied)
			} else {
				rep.count(Dropped)
			}
			continue
		}
		// Most writes reach the disk whole or not at all; the rest are
		// torn, each sector on its own.
		whole := Fate(-1)
		switch rng.Intn(3) {
		case 0:
			whole = Applied
		case 1:
			whole = Dropped
		}
		for n := 0; n < len(ch.data); {
			off := ch.off + int64(n)
			k := SectorSize - int(off%SectorSize)
			if k > len(ch.data)-n {
				k = len(ch.data) - n
			}
			piece := ch.data[n : n+k]
			f := whole
			if f < 0 {
				f = pickFate(rng)
			}
			switch f {
			case Applied:
				in.dur.writeAt(piece, off, nil)
			case Zeroed:
				in.dur.writeAt(make([]byte, k), off, nil)
			case Garbage:
				g := make([]byte, k)
				rng.Read(g)
				in.dur.writeAt(g, off, nil)
			}
			rep.count(f)
			n += k
		}
	}
	in.pending = nil
	clear(in.dirty)
}

// pickFate chooses a sector's fate: mostly applied or dropped, sometimes
// torn.
func pickFate(rng *rand.Rand) Fate {
	switch r := rng.Intn(10); {
	case r < 4:
		return Applied
	case r < 7:
		return Dropped
	case r < 9:
		return Zeroed
	default:
		return Garbage
	}
}

// LossReport counts what a PowerLoss did.
type LossReport struct {
	Fates    [numFates]int // sectors (and size changes) by fate
	Vanished []string      // paths of the current namespace gone afterwards, sorted
	Revived  []string      // paths absent before and present afterwards, sorted
}

func (r *LossReport) count(f Fate) { r.Fates[f]++ }

// clean turns p into an absolute, cleaned path.
func clean(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return path.Clean(p)
}

// lookup resolves p in the current namespace: it returns the parent
// directory, the last name and the inode (nil if the name does not exist).
// For "/" the parent is nil. err is ENOENT for a missing parent and ENOTDIR
// when a component on the way is a file.
// REQUIRES: d.mu held.
func (d *Disk) lookup(p string) (parent *inode, name string, in *inode, err error) {
	p = clean(p)
	if p == "/" {
		return nil, "", d.root, nil
	}
	parts := strings.Split(p[1:], "/")
	dir := d.root
	for _, part := range parts[:len(parts)-1] {
		next := dir.entries[part]
		if next == nil {
			return nil, "", nil, unix.ENOENT
		}
		if !next.dir {
			return nil, "", nil, unix.ENOTDIR
		}
		dir = next
	}
	name = parts[len(parts)-1]
	return dir, name, dir.entries[name], nil
}

// walk calls fn for every entry of the namespace under dir (durable entries
// when durable is set) in sorted path order, depth first, each inode once.
func walk(dir *inode, prefix string, durable bool, seen map[*inode]bool, fn func(p string, in *inode)) {
	ents := dir.entries
	if durable {
		ents = dir.durEntries
	}
	names := make([]string, 0, len(ents))
	for n := range ents {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		in := ents[n]
		p := prefix + "/" + n
		if seen[in] {
			continue
		}
		seen[in] = true
		fn(p, in)
		if in.dir {
			walk(in, p, durable, seen, fn)
		}
	}
}

// paths lists every path of the current namespace.
func (d *Disk) paths() map[string]bool {
	out := make(map[string]bool)
	walk(d.root, "", false, map[*inode]bool{}, func(p string, _ *inode) { out[p] = true })
	return out
}

// Now returns the virtual clock: how much simulated time has passed since
// NewDisk.
func (d *Disk) Now() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.now
}

// Advance moves the virtual clock forward by dt (a simulated sleep).
func (d *Disk) Advance(dt time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if dt > 0 {
		d.now += dt
	}
}

// SetLatency replaces the latencies of Ops started from now on.
func (d *Disk) SetLatency(l Latency) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lat = l
}

// OpCount returns how many Ops have been started on the disk, by any ring.
// The next Op to start has index OpCount()+1; Fault.At refers to these
// indexes.
func (d *Disk) OpCount() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ops
}

// Files lists the regular files of the current namespace, sorted. A file
// reachable under two names (a rename durable in both directories) is listed
// once.
func (d *Disk) Files() []string { return d.list(false) }

// DurableFiles lists the regular files that a power loss now would keep.
func (d *Disk) DurableFiles() []string { return d.list(true) }

func (d *Disk) list(durable bool) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	walk(d.root, "", durable, map[*inode]bool{}, func(p string, in *inode) {
		if !in.dir {
			out = append(out, p)
		}
	})
	return out
}

// fileAt resolves p to a regular file of the current namespace.
// REQUIRES: d.mu held.
func (d *Disk) fileAt(op, p string) (*inode, error) {
	_, _, in, err := d.lookup(p)
	if err == nil && in == nil {
		err = unix.ENOENT
	}
	if err == nil && in.dir {
		err = unix.EISDIR
	}
	if err != nil {
		return nil, fmt.Errorf("sim: %s %s: %w", op, p, err)
	}
	return in, nil
}

// ReadFile returns the current bytes of the file at p (what a read sees),
// bypassing faults and the clock.
func (d *Disk) ReadFile(p string) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	in, err := d.fileAt("read", p)
	if err != nil {
		return nil, err
	}
	return in.cur.bytes(), nil
}

// ReadDurable returns the durable bytes of the file that the durable
// namespace names p: what a power loss that dropped every pending write
// would leave there.
func (d *Disk) ReadDurable(p string) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dir := d.root
	parts := strings.Split(clean(p)[1:], "/")
	for i, part := range parts {
		in := dir.durEntries[part]
		switch {
		case in == nil || (i < len(parts)-1 && !in.dir):
			return nil, fmt.Errorf("sim: read durable %s: %w", p, unix.ENOENT)
		case i == len(parts)-1 && in.dir:
			return nil, fmt.Errorf("sim: read durable %s: %w", p, unix.EISDIR)
		case i == len(parts)-1:
			return in.dur.bytes(), nil
		}
		dir = in
	}
	return nil, fmt.Errorf("sim: read durable %s: %w", p, unix.EISDIR)
}

// WriteFile creates or replaces the file at p with data, fully durable
// (data and directory entry), as a test's setup. The parent must exist.
func (d *Disk) WriteFile(p string, data []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	parent, name, in, err := d.lookup(p)
	if err == nil && parent == nil {
		err = unix.EISDIR
	}
	if err == nil && in != nil && in.dir {
		err = unix.EISDIR
	}
	if err != nil {
		return fmt.Errorf("sim: write %s: %w", p, err)
	}
	if in == nil {
		in = d.newInode(false)
		parent.entries[name] = in
	}
	in.setSize(0)
	in.write(data, 0)
	in.sync()
	parent.durEntries[name] = in
	return nil
}

// MkdirAll creates the directory p and any missing parents, durably.
func (d *Disk) MkdirAll(p string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	dir := d.root
	for _, part := range strings.Split(clean(p)[1:], "/") {
		if part == "" {
			continue
		}
		next := dir.entries[part]
		if next == nil {
			next = d.newInode(true)
			dir.entries[part] = next
		}
		if !next.dir {
			return fmt.Errorf("sim: mkdir %s: %w", p, unix.ENOTDIR)
		}
		dir.durEntries[part] = next
		dir = next
	}
	return nil
}

// FlipBit damages the file at p on purpose: bit (counted from the first
// byte's least significant bit) flips in both its current and its durable
// bytes, as a disk's bit rot would.
func (d *Disk) FlipBit(p string, bit int64) error {
	return d.corrupt("flip bit", p, func(c *content, dirty map[int64]struct{}) error {
		off := bit / 8
		if bit < 0 || off >= c.size {
			return unix.EINVAL
		}
		var b [1]byte
		c.readAt(b[:], off)
		b[0] ^= 1 << (bit % 8)
		c.writeAt(b[:], off, dirty)
		return nil
	})
}

// ZeroRange damages the file at p on purpose: [off, off+n) (clipped to its
// size) reads as zeros in both its current and its durable bytes.
func (d *Disk) ZeroRange(p string, off, n int64) error {
	return d.corrupt("zero range", p, func(c *content, dirty map[int64]struct{}) error {
		if off < 0 || n < 0 {
			return unix.EINVAL
		}
		if off+n > c.size {
			n = c.size - off
		}
		if n > 0 {
			c.writeAt(make([]byte, n), off, dirty)
		}
		return nil
	})
}

// Truncate damages the file at p on purpose: both its current and its
// durable bytes are cut (or zero-extended) to size.
func (d *Disk) Truncate(p string, size int64) error {
	return d.corrupt("truncate", p, func(c *content, dirty map[int64]struct{}) error {
		if size < 0 {
			return unix.EINVAL
		}
		c.setSize(size, dirty)
		return nil
	})
}

// corrupt applies fn to the current and the durable bytes of the file at p.
// The pending changes are kept, so a power loss may still apply them.
func (d *Disk) corrupt(what, p string, fn func(c *content, dirty map[int64]struct{}) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	in, err := d.fileAt(what, p)
	if err != nil {
		return err
	}
	if err := fn(&in.cur, in.dirty); err != nil {
		return fmt.Errorf("sim: %s %s: %w", what, p, err)
	}
	if err := fn(&in.dur, nil); err != nil {
		return fmt.Errorf("sim: %s %s (durable): %w", what, p, err)
	}
	return nil
}

// Fingerprint returns a hash of the whole disk: the current and durable
// namespaces with every file's current and durable bytes, plus the clock and
// the op counter. Two runs from the same seed that made the same calls have
// the same fingerprint.
func (d *Disk) Fingerprint() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	h := sha256.New()
	var num [8]byte
	put := func(v uint64) {
		binary.LittleEndian.PutUint64(num[:], v)
		h.Write(num[:])
	}
	put(uint64(d.now))
	put(d.ops)
	for _, durable := range []bool{false, true} {
		walk(d.root, "", durable, map[*inode]bool{}, func(p string, in *inode) {
			h.Write([]byte(p))
			put(in.ino)
			if in.dir {
				return
			}
			c := &in.cur
			if durable {
				c = &in.dur
			}
			put(uint64(c.size))
			idxs := make([]int64, 0, len(c.pages))
			for idx, pg := range c.pages {
				if *pg != (page{}) {
					idxs = append(idxs, idx)
				}
			}
			sort.Slice(idxs, func(i, j int) bool { return idxs[i] < idxs[j] })
			for _, idx := range idxs {
				put(uint64(idx))
				h.Write(c.pages[idx][:])
			}
		})
	}
	return hex.EncodeToString(h.Sum(nil))
}
