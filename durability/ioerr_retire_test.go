package durability

// The I/O-error sweep on retirement: EIO and ENOSPC, once and persistent,
// at every unlink and rename of a workload that seals, retires and rolls
// files all the time. TestIOErrorSweep injects at every op index of its
// short workload, whose 300-400 ops include 13-19 renames (blocks
// installed, generations turned into spares and back) and no unlink at
// all: it never fills a staging WAL segment (nothing to retire), never
// compacts the manifest while running, and never has enough spares for a
// retired generation to be unlinked. The recovery sweep reaches three more
// (Start's manifest roll). Here the faults skip every other op
// (sim.Fault.Ops), so each run hits the first unlink or rename at or after
// its index, and the sweep steps from one hit to the next: every such op
// of the run is hit once per (kind, mode). Both modes run under -race:
// the points are few.
//
// What is renamed or unlinked, and by whom:
//
//   - a block's .tmp renamed into place, a sealed hot generation renamed
//     to a spare (or unlinked when enough spares exist) and a spare
//     renamed into place as a new generation: the sealer;
//   - a staging WAL segment whose records are all promoted, unlinked: the
//     submitter, for the promoter (a failure is logged and retried at the
//     next promotion);
//   - the manifest compacted: MANIFEST-n.tmp and CURRENT.tmp renamed into
//     place, the old manifest unlinked: the sealer (compaction is made due
//     after a few edits, testhook.SetManifestCompactMin);
//   - at Start, what crashes left (retireImage): stale manifests, orphan
//     blocks and their .tmp files, sealed generations.
//
// The verdicts are the sweep's (ioerrTotals): nothing acknowledged lost,
// no fsync-rule break, no call hung or stuck, every error reaching a
// caller, a restart or a log line, and a fault-free Start after the power
// loss that succeeds (whatever a failed unlink left behind, the next Start
// removes or ignores).
//
// Replay one injection with logs (the flags every failure prints; add
// -ioerr.leftovers for the Start with leftovers):
//
//	go test ./durability -run 'TestIOErrorSweepRetire$' -v -seed 1 -ioerr.kind EIO -ioerr.at 57 -ioerr.op unlink [-ioerr.persist]

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"maps"
	"path"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/hot"
	"github.com/ringpipe/ringpipe/internal/testhook"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
	"github.com/ringpipe/ringpipe/snapshot"
)

// retireOps are the ops the sweep injects at.
var retireOps = []ring.Opcode{ring.OpUnlink, ring.OpRename}

// retireKinds are the fault kinds that apply to them.
var retireKinds = []sim.FaultKind{sim.EIO, sim.ENOSPC}

// retireScenario is the sweep's workload: 8 KiB logs (a staging WAL
// segment fills after a few staged batches; SealBytes half of it, so a
// hot generation seals before it is full), values of at most 1 KiB (an
// async burst of 8 fits one segment), Flush one operation in ten (the
// default mix's 4 in 100 seals rarely between the threshold's seals).
// Space 2's hot syncs are slow (ioerrSlowHot): its writes are staged,
// promoted, and the WAL's segments roll and retire.
func retireScenario(seed int64) ioerrScenario {
	ops := 60
	if soak() {
		ops = 150
	}
	return ioerrScenario{seed: seed, ops: ops, label: "running", maxValue: 1 << 10,
		mix: Mix{Put: 56, Delete: 14, Async: 22, Sync: 4, Flush: 10},
		tune: func(c *ringpipe.Config) {
			c.Preallocate = retirePreallocate
			c.SealBytes = retirePreallocate / 2
		}}
}

// retirePreallocate is the scenario's Config.Preallocate: the size of
// its WAL segments and hot generations.
const retirePreallocate = 8 << 10

// retireCompactMin makes the manifest due for compaction as soon as it
// has grown to four times its last snapshot.
const retireCompactMin = 1

var retireLeftoversFlag = flag.Bool("ioerr.leftovers", false,
	"with -ioerr.kind, in TestIOErrorSweepRetire: the Start of a directory with leftovers (retireImage)")

// TestIOErrorSweepRetire is the sweep on unlinks and renames, of the
// running engine and of a Start that cleans up what crashes left.
func TestIOErrorSweepRetire(t *testing.T) {
	// Process-wide; no test of this package runs in parallel.
	defer testhook.SetManifestCompactMin(retireCompactMin)()
	seeds := seedRange(1, 1)
	if soak() {
		seeds = seedRange(1, 6)
	}
	tt := newIOErrTotals()
	for _, seed := range seeds {
		for _, leftovers := range []bool{false, true} {
			if *ioerrKindFlag != "" && leftovers != *retireLeftoversFlag {
				continue
			}
			sc := retireScenario(seed)
			// The classes of unlinks and renames the scenario is for.
			want := []string{"rename block", "rename hot", "rename spare", "unlink wal",
				"rename manifest", "rename CURRENT", "unlink manifest"}
			if leftovers {
				sc.image, sc.label = retireImage(t, seed), "leftovers"
				sc.ops = retireLeftoverOps
				want = []string{"unlink block", "unlink hot", "unlink manifest", "rename manifest", "rename CURRENT"}
			}
			if ioerrReplay(t, sc) {
				return
			}
			ref := ioerrRun(t, sc, nil, nil)
			if ref.callerErrs != 0 || ref.restarts != 0 || ref.finalErr != nil || ref.report.Err() != nil {
				t.Fatalf("seed %d %s: the reference run is not clean: errors %d (%v), restarts %d, recovery %v, oracle %v",
					seed, sc.label, ref.callerErrs, ref.firstErr, ref.restarts, ref.finalErr, ref.report.Err())
			}
			classes := retireClasses(ref.seen)
			t.Logf("seed %d %s: the reference run takes %d ring ops (Start %d), %d of them unlinks and renames: %s",
				seed, sc.label, ref.opsRun, ref.startOps, retireCount(ref.seen), retireFormat(classes))
			for _, c := range want {
				if classes[c] == 0 {
					t.Fatalf("seed %d %s: the reference run does no %s (it does %s)", seed, sc.label, c, retireFormat(classes))
				}
			}
			retireSweep(t, sc, tt)
		}
	}
	// The coverage matrix of the unlinks and renames only: the sweep
	// injects nowhere else.
	for k := range tt.universe {
		if !strings.HasPrefix(k, "unlink ") && !strings.HasPrefix(k, "rename ") {
			delete(tt.universe, k)
		}
	}
	tt.print(t, "retirement")
}

// retireLeftoverOps is the workload after the Start of retireImage: a few
// seals, each retiring its generation by unlink (the spares are full).
const retireLeftoverOps = 20

// retireImage is the directory retireScenario leaves after a clean Stop,
// plus what crashes leave for Start to clean up, each a file a crash
// between two steps of the engine leaves behind:
//
//   - an old manifest (a compaction cut after CURRENT was switched and
//     before the old manifest was unlinked);
//   - a block's .tmp (a seal cut before the rename) and a block the
//     manifest does not name (cut before the edit; its records are in a
//     named block, a copy of which it is);
//   - a sealed hot generation (cut before its retirement);
//   - two spares of another size (left by a smaller Preallocate), which
//     Create cannot reuse, so that Retire unlinks rather than keep a
//     spare.
//
// Its truth is what a fault-free recovery shows, which the workload's
// Oracle checks first.
func retireImage(t *testing.T, seed int64) *dirImage {
	t.Helper()
	sc := retireScenario(seed)
	disk := NewSimDisk(seed)
	ioerrSlowHot(disk)
	ctx, cancel := context.WithTimeout(context.Background(), ioerrTimeout)
	defer cancel()
	e, err := ringpipe.Start(ctx, sc.config(disk, newOpWatch(), nil))
	if err != nil {
		t.Fatalf("seed %d: image: Start: %v", seed, err)
	}
	o := NewOracle()
	ids, err := CreateSpaces(ctx, e, o, ioerrSpecs)
	if err != nil {
		t.Fatalf("seed %d: image: %v", seed, err)
	}
	w := &Workload{Engine: e, Oracle: o, Spaces: ids, Mix: sc.mix, MaxValue: sc.maxValue}
	if st := w.Run(ctx, newRand(seed), sc.ops); st.Err != nil {
		t.Fatalf("seed %d: image: workload: %v", seed, st.Err)
	}
	if err := e.Stop(ctx); err != nil {
		t.Fatalf("seed %d: image: Stop: %v", seed, err)
	}
	img := captureImage(t, disk, false)

	// The leftovers.
	current := strings.TrimSpace(string(img.files[simDir+"/CURRENT"]))
	var live uint64
	if _, err := fmt.Sscanf(current, "MANIFEST-%d", &live); err != nil || live < 2 {
		t.Fatalf("seed %d: image: CURRENT names %q", seed, current)
	}
	img.files[simDir+"/"+snapshot.ManifestName(live-1)] = img.files[simDir+"/"+current]
	var block string // the named block of space 1 with the highest id
	var top uint64
	for p := range img.files {
		var id uint64
		if _, err := fmt.Sscanf(path.Base(p), "%d.blk", &id); err == nil && path.Dir(p) == simDir+"/blocks/1" && id >= top {
			block, top = p, id
		}
	}
	if block == "" {
		t.Fatalf("seed %d: image: space 1 has no block", seed)
	}
	img.files[fmt.Sprintf("%s/blocks/1/%d.blk", simDir, top+100)] = img.files[block]
	img.files[fmt.Sprintf("%s/blocks/1/%d.blk.tmp", simDir, top+101)] = img.files[block][:len(img.files[block])/2]
	hotDir := simDir + "/hot/"
	if _, ok := img.files[hotDir+hot.Gen{Space: 1, Gen: 1}.FileName()]; ok {
		t.Fatalf("seed %d: image: generation 1 of space 1 is live", seed)
	}
	img.files[hotDir+hot.Gen{Space: 1, Gen: 1}.FileName()] = make([]byte, retirePreallocate)
	for g := range uint64(2) {
		img.files[hotDir+hot.Gen{Space: 2, Gen: 1000 + g}.SpareName()] = make([]byte, retirePreallocate/2)
	}
	img.recoverTruth(t, ctx, seed, o, func(disk *sim.Disk) ringpipe.Config { return sc.config(disk, newOpWatch(), nil) })
	return img
}

// retireSweep runs sc with each kind, once and persistent, at every unlink
// and rename: one chain of runs per (kind, mode), each run's fault armed
// just past the op the chain's previous run hit.
func retireSweep(t *testing.T, sc ioerrScenario, tt *ioerrTotals) {
	type result struct {
		name string
		o    ioerrOutcome
	}
	results := make(chan result)
	var wg sync.WaitGroup
	for _, persist := range []bool{false, true} {
		for _, kind := range retireKinds {
			wg.Go(func() {
				for k := uint64(1); ; {
					f := sim.Fault{Kind: kind, At: k, Persist: persist, Ops: retireOps}
					o := ioerrRun(t, sc, &f, nil)
					results <- result{retireName(sc, kind, k, persist), o}
					if len(o.hits) == 0 {
						return
					}
					k = o.hits[0].Index + 1
				}
			})
		}
	}
	go func() { wg.Wait(); close(results) }()
	hit := make(map[string]int) // op class → runs whose first hit was one
	for r := range results {
		if len(r.o.hits) > 0 {
			h := r.o.hits[0]
			hit[ioerrOpClass{h.Code, ioerrFileClass(h.Path)}.String()]++
		}
		if msg := tt.add(r.name, r.o); msg != "" {
			t.Errorf("%s", msg)
		}
	}
	t.Logf("seed %d %s: points injected by op (%d kinds × once, persistent): %s (GOMAXPROCS %d)", sc.seed, sc.label,
		len(retireKinds), retireFormat(hit), runtime.GOMAXPROCS(0))
}

func retireName(sc ioerrScenario, kind sim.FaultKind, k uint64, persist bool) string {
	return fmt.Sprintf("seed %d retirement (%s) %s %s at the first unlink or rename from op %d",
		sc.seed, ioerrWhere(sc), kind, faultMode(persist), k)
}

// retireClasses returns the unlinks and renames of seen by file class
// ("unlink wal": 2).
func retireClasses(seen map[ioerrOpClass]int) map[string]int {
	out := make(map[string]int)
	for c, n := range seen {
		if slices.Contains(retireOps, c.Code) {
			out[c.String()] += n
		}
	}
	return out
}

func retireCount(seen map[ioerrOpClass]int) int {
	n := 0
	for _, v := range retireClasses(seen) {
		n += v
	}
	return n
}

func retireFormat(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// TestFlushWhileHotSegmentFullAndDiskFull: a space's staged records wait
// for promotion into its active hot generation, which is full, and no
// replacement can be made: the disk has no room for a new file (ENOSPC
// from every open and rename under hot/, while the open file still takes
// writes). Flush
// must return the disk's error, not wait for room that never comes: the
// sealer told the submitter that the replacement failed, and the submitter
// failed a space's flushers only when its segment could take no batch at
// all (failed, frozen), not when it was merely full. Found by
// TestIOErrorSweepRetire (ENOSPC persistent from a spare's rename: "a call
// waited until the run's deadline", flush space 2: promote its staged
// records). Once the disk has room again, Flush succeeds and every
// acknowledged write reads back.
func TestFlushWhileHotSegmentFullAndDiskFull(t *testing.T) {
	disk := NewSimDisk(1)
	cfg := SimConfig(disk)
	cfg.Preallocate = retirePreallocate
	cfg.SealBytes = retirePreallocate / 2
	ctx, cancel := context.WithTimeout(context.Background(), ioerrTimeout)
	defer cancel()
	e, err := ringpipe.Start(ctx, cfg)
	require.NoError(t, err)
	defer func() { assert.NoError(t, e.Stop(ctx)) }()
	sp, err := e.CreateSpace(ctx, Specs[0])
	require.NoError(t, err)
	// Every hot sync misses the deadline: the writes are staged, and
	// promoted into the hot file until it is full.
	disk.Inject(sim.Fault{Kind: sim.Delay, Delay: 3 * time.Millisecond, Persist: true,
		Path: simDir + "/hot/", Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync}})
	disk.Inject(sim.Fault{Kind: sim.ENOSPC, Persist: true, At: disk.OpCount() + 1,
		Path: simDir + "/hot/", Ops: []ring.Opcode{ring.OpOpen, ring.OpRename}})
	acked := map[uint32][]byte{}
	for i := range 24 {
		v := bytes.Repeat([]byte{byte(i)}, 1<<10)
		_, err := e.Put(ctx, sp, ringpipe.Point{uint32(i)}, v)
		require.NoError(t, err, "put %d: the staging WAL has room", i)
		acked[uint32(i)] = v
	}
	require.Positive(t, e.Stats().StagedWrites, "the writes were not staged")
	flushFullThenRoom(t, ctx, e, disk, sp, acked)
}
