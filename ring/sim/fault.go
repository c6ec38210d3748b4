package sim

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ringpipe/ringpipe/ring"
)

// FaultKind is what an injected fault does to the Op it hits.
type FaultKind int

// The fault kinds. A rule hits only Ops its kind applies to; a rule that
// does not apply to an Op is not consumed by it.
const (
	// EIO fails any Op with EIO; nothing is performed (a close still
	// closes the fd, as on Linux).
	EIO FaultKind = iota + 1
	// ENOSPC fails any Op with ENOSPC; nothing is performed.
	ENOSPC
	// ShortWrite makes the first transfer of a write or writev of at least
	// two bytes move only a prefix (Fault.Bytes, or a random length). The
	// ring continues the remainder transparently (ring invariant 3) and
	// counts it in Stats.ShortIORetries, so the caller sees only the count.
	ShortWrite
	// NoProgress makes a write or writev transfer nothing: it fails with
	// ring.ErrNoProgress.
	NoProgress
	// FsyncFail fails an fsync or fdatasync with EIO (the sync half of a
	// DSync write too, whose Completion then carries the EIO). As on Linux, the
	// file's dirty data is then marked clean while its fate on the disk is
	// unknown: each not-yet-durable sector is applied, dropped or torn in
	// the durable bytes, and a later successful sync does not repair it.
	// Reads keep returning the data written (the page cache).
	FsyncFail
	// BitFlip flips one random bit in the data a read or readv returns;
	// the file is unchanged.
	BitFlip
	// Delay adds Fault.Delay of virtual time to any Op. It combines with
	// one other fault on the same Op.
	Delay
	// Queued holds any Op for Fault.Delay of virtual time before it
	// starts, as io_uring does with work waiting for a busy kernel
	// worker. A Deadline that passes while the Op waits cancels it, as
	// LINK_TIMEOUT cancels queued work: the notice, then a final
	// Completion with ECANCELED and Late, the Op not performed and the
	// rest of its chain cancelled. An Op that starts in time runs late
	// by the wait, like Delay. It combines with one other fault.
	Queued
	numKinds
)

var kindNames = [...]string{EIO: "EIO", ENOSPC: "ENOSPC", ShortWrite: "short write", NoProgress: "no progress",
	FsyncFail: "fsync failure", BitFlip: "bit flip", Delay: "delay", Queued: "queued"}

// String names the kind.
func (k FaultKind) String() string {
	if k > 0 && k < numKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("FaultKind(%d)", int(k))
}

// Fault is a fault-injection rule. A DSync write is two ops to the rules,
// each with its own index: the write, then an OpFdatasync of the same file
// (which a rule for fdatasyncs hits, and Hits lists as one).
// An Op matches it when the Op's kind is one the rule applies to, its index (see Disk.OpCount) is at least At, its
// code is in Ops (nil: any), its path starts with Path (an fd's path is the
// one it was opened with) and it runs on Ring (nil: any ring). A matching Op
// is hit with probability Prob (0 means always). A rule without Persist is
// removed after its first hit.
//
// Examples:
//
//	d.Inject(sim.Fault{Kind: sim.EIO, At: 42})                      // op 42 fails
//	d.Inject(sim.Fault{Kind: sim.FsyncFail, Prob: 0.01, Persist: true,
//		Ops: []ring.Opcode{ring.OpFdatasync}, Path: "/db/wal/"})     // 1% of WAL syncs fail
type Fault struct {
	Kind    FaultKind
	At      uint64
	Prob    float64
	Ops     []ring.Opcode
	Path    string
	Ring    *Ring
	Persist bool
	Delay   time.Duration // Delay, Queued: the added virtual latency
	Bytes   int64         // ShortWrite: bytes of the first transfer; 0: random in [1, n-1]
}

// Hit records one fault that fired.
type Hit struct {
	Index uint64 // the Op's index
	Kind  FaultKind
	Code  ring.Opcode
	Path  string
	Time  time.Duration // virtual time at which the Op started
}

// Inject arms a rule. It panics on a rule that cannot fire (an unknown
// kind, a probability outside [0, 1], a Delay rule without a delay): that is
// a bug in the test.
func (d *Disk) Inject(f Fault) {
	if f.Kind <= 0 || f.Kind >= numKinds || f.Prob < 0 || f.Prob > 1 ||
		((f.Kind == Delay || f.Kind == Queued) && f.Delay <= 0) || f.Bytes < 0 {
		panic(fmt.Sprintf("sim: invalid fault %+v", f))
	}
	f.Ops = slices.Clone(f.Ops)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.faults = append(d.faults, &f)
}

// ClearFaults disarms every rule.
func (d *Disk) ClearFaults() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.faults = nil
}

// Hits returns every fault that fired so far, in order.
func (d *Disk) Hits() []Hit {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.hits)
}

// applies reports whether kind k can hit op.
func (k FaultKind) applies(op *ring.Op) bool {
	switch k {
	case ShortWrite:
		return isWrite(op.Code) && op.Size() >= 2
	case NoProgress:
		return isWrite(op.Code) && op.Size() >= 1
	case FsyncFail:
		return op.Code == ring.OpFsync || op.Code == ring.OpFdatasync
	case BitFlip:
		return isRead(op.Code)
	}
	return true
}

// plan is what the faults decided for one Op when it started.
type plan struct {
	kind  FaultKind     // the error-class fault that hit, or 0
	delay time.Duration // the sum of Delay faults that hit
	queue time.Duration // the sum of Queued faults that hit
	bytes int64         // ShortWrite: the first transfer's length
}

// planFaults matches op against the armed rules.
// REQUIRES: d.mu held.
func (d *Disk) planFaults(r *Ring, so *simOp, p string) plan {
	var pl plan
	kept := d.faults[:0]
	for _, f := range d.faults {
		timing := f.Kind == Delay || f.Kind == Queued
		hit := (timing || pl.kind == 0) && f.Kind.applies(&so.op) && so.idx >= f.At &&
			(f.Ops == nil || slices.Contains(f.Ops, so.op.Code)) &&
			strings.HasPrefix(p, f.Path) && (f.Ring == nil || f.Ring == r) &&
			(f.Prob == 0 || d.rng.Float64() < f.Prob)
		if hit {
			d.hits = append(d.hits, Hit{Index: so.idx, Kind: f.Kind, Code: so.op.Code, Path: p, Time: d.now})
			switch f.Kind {
			case Delay:
				pl.delay += f.Delay
			case Queued:
				pl.queue += f.Delay
			default:
				pl.kind = f.Kind
				if f.Kind == ShortWrite {
					pl.bytes = f.Bytes
					if n := so.op.Size(); pl.bytes <= 0 || pl.bytes >= n {
						pl.bytes = 1 + d.rng.Int63n(n-1)
					}
				}
			}
		}
		if !hit || f.Persist {
			kept = append(kept, f)
		}
	}
	clear(d.faults[len(kept):])
	d.faults = kept
	return pl
}
