package sim

import (
	"maps"
	"math/rand"
	"slices"
)

// Crash kills every ring on the disk as a process kill would: their Ops in
// flight complete with EIO (Ops not yet completed were never performed),
// their fds close and their locks are released; later Submits fail with
// ErrCrashed, and Close still works. Everything written stays, synced or
// not, since the page cache survives a process.
func (d *Disk) Crash() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.crash()
}

// crash is Crash. REQUIRES: d.mu held.
func (d *Disk) crash() {
	for _, r := range slices.Clone(d.rings) {
		r.kill()
	}
	d.faults = nil // a fault belongs to the run that armed it; rules naming dead rings would never fire
}

// PowerLoss cuts the power: every ring dies as in Crash, then the namespace
// is rebuilt from durable directory entries and every surviving file from
// its durable bytes plus, per 512-byte sector of each not-yet-durable write
// (in the order they were written), one fate chosen by rng: applied,
// dropped, torn to zeros or torn to garbage. A write lands whole a third of
// the time, is lost whole a third of the time, and is otherwise torn sector
// by sector, so sectors of one write, and later writes, may survive while
// earlier ones do not. A not-yet-durable size change is applied or dropped
// whole. A nil rng uses the disk's own.
//
// Files (and directories) that are not reachable through durable entries
// are gone; their fate is listed in the report.
//
// Armed faults are cleared, as by ClearFaults.
func (d *Disk) PowerLoss(rng *rand.Rand) LossReport {
	d.mu.Lock()
	defer d.mu.Unlock()
	if rng == nil {
		rng = d.rng
	}
	d.crash()
	before := d.paths()
	var rep LossReport
	d.root.entries = maps.Clone(d.root.durEntries)
	walk(d.root, "", true, map[*inode]bool{}, func(_ string, in *inode) {
		if in.dir {
			in.entries = maps.Clone(in.durEntries)
			return
		}
		in.settle(rng, &rep)
		in.cur = in.dur.clone()
	})
	after := d.paths()
	for p := range before {
		if !after[p] {
			rep.Vanished = append(rep.Vanished, p)
		}
	}
	for p := range after {
		if !before[p] {
			rep.Revived = append(rep.Revived, p)
		}
	}
	slices.Sort(rep.Vanished)
	slices.Sort(rep.Revived)
	return rep
}
