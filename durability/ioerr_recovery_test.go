package durability

import (
	"context"
	"maps"
	"path"
	"slices"
	"testing"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// dirImage is an engine directory frozen as bytes, to be loaded on fresh
// simulated disks: the recovery sweep and the corruption suite start many
// engines on copies of one directory.
type dirImage struct {
	files map[string][]byte // absolute path on the disk → durable bytes
	specs map[ringpipe.SpaceID]ringpipe.SpaceSpec
	// truth is what a fault-free recovery of the image shows: every live
	// record of every space.
	truth map[ringpipe.SpaceID][]ringpipe.Record
}

// captureImage freezes disk (which no engine may be using): its durable
// state (what a power loss now would keep), or with current its current
// state (what the next process sees after a crash).
func captureImage(t testing.TB, disk *sim.Disk, current bool) *dirImage {
	t.Helper()
	img := &dirImage{files: make(map[string][]byte)}
	list, read := disk.DurableFiles, disk.ReadDurable
	if current {
		list, read = disk.Files, disk.ReadFile
	}
	for _, p := range list() {
		b, err := read(p)
		if err != nil {
			t.Fatalf("image: %v", err)
		}
		img.files[p] = b
	}
	return img
}

// load writes the image onto disk, durably.
func (img *dirImage) load(t testing.TB, disk *sim.Disk) {
	t.Helper()
	for _, d := range []string{simDir + "/wal", simDir + "/hot", simDir + "/blocks"} {
		if err := disk.MkdirAll(d); err != nil {
			t.Fatalf("image: %v", err)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(img.files)) {
		if err := disk.MkdirAll(path.Dir(p)); err != nil {
			t.Fatalf("image: %v", err)
		}
		if err := disk.WriteFile(p, img.files[p]); err != nil {
			t.Fatalf("image: %v", err)
		}
	}
}

// readTruth records what e shows of every space the oracle knows.
func (img *dirImage) readTruth(ctx context.Context, e *ringpipe.Engine, specs map[ringpipe.SpaceID]ringpipe.SpaceSpec) error {
	img.specs = specs
	img.truth = make(map[ringpipe.SpaceID][]ringpipe.Record)
	for id, spec := range specs {
		var recs []ringpipe.Record
		if err := e.Scan(ctx, id, FullBox(spec), func(r ringpipe.Record) bool {
			recs = append(recs, r)
			return true
		}); err != nil {
			return err
		}
		img.truth[id] = recs
	}
	return nil
}

// oracle returns a fresh Oracle that knows the image's records as
// acknowledged writes: a recovery of the image must show exactly them.
func (img *dirImage) oracle() *Oracle {
	o := NewOracle()
	for id, spec := range img.specs {
		o.AddSpace(id, spec)
		for _, r := range img.truth[id] {
			o.Ack(o.Begin(id, r.Point, r.Value, false), r.Revision)
		}
	}
	return o
}

// ioerrImage builds the directory the recovery sweep starts on: the
// sweep's workload, then a clean Stop (cut false) or a power loss with
// asynchronous writes in flight (cut true, so that recovery has torn tails
// to drop and zero). Its truth is what a fault-free recovery shows, which
// the workload's Oracle checks first.
func ioerrImage(t *testing.T, seed int64, cut bool) *dirImage {
	t.Helper()
	disk := NewSimDisk(seed)
	cfg := ioerrConfig(disk, newOpWatch(), nil)
	ioerrSlowHot(disk)
	ctx, cancel := context.WithTimeout(context.Background(), ioerrTimeout)
	defer cancel()
	e, err := ringpipe.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("seed %d: image: Start: %v", seed, err)
	}
	o := NewOracle()
	ids, err := CreateSpaces(ctx, e, o, ioerrSpecs)
	if err != nil {
		t.Fatalf("seed %d: image: %v", seed, err)
	}
	w := &Workload{Engine: e, Oracle: o, Spaces: ids, MaxValue: 4 << 10}
	if st := w.Run(ctx, newRand(seed), ioerrWorkloadOps()); st.Err != nil {
		t.Fatalf("seed %d: image: workload: %v", seed, st.Err)
	}
	if cut {
		rng := newRand(seed)
		for i := range 8 {
			p := ringpipe.Point{uint32(i), 63}
			v := Value(rng, 512)
			wr := o.Begin(ids[i%2], p[:ioerrSpecs[i%2].Dims], v, false)
			if _, err := e.PutAsync(ctx, ids[i%2], p[:ioerrSpecs[i%2].Dims], v); err != nil {
				o.NotSubmitted(wr, err)
			}
		}
		disk.PowerLoss(newRand(seed))
		dead, stop := context.WithCancel(context.Background())
		stop()
		_ = e.Stop(dead) // the process is dead: Stop only stops the goroutines
	} else if err := e.Stop(ctx); err != nil {
		t.Fatalf("seed %d: image: Stop: %v", seed, err)
	}
	img := captureImage(t, disk, false)
	img.recoverTruth(t, ctx, seed, o, func(disk *sim.Disk) ringpipe.Config { return ioerrConfig(disk, newOpWatch(), nil) })
	return img
}

// recoverTruth recovers img on a fresh disk of seed, fault-free, with the
// Config cfg makes; checks o, the Oracle of the run that made img,
// against it; and reads its truth (readTruth). It stops that engine.
func (img *dirImage) recoverTruth(t *testing.T, ctx context.Context, seed int64, o *Oracle, cfg func(*sim.Disk) ringpipe.Config) {
	t.Helper()
	disk := NewSimDisk(seed)
	img.load(t, disk)
	e, err := ringpipe.Start(ctx, cfg(disk))
	if err != nil {
		t.Fatalf("seed %d: image: fault-free recovery: %v", seed, err)
	}
	defer func() { _ = e.Stop(ctx) }()
	if err := o.Check(ctx, e).Err(); err != nil {
		t.Fatalf("seed %d: image: fault-free recovery: %v", seed, err)
	}
	if err := img.readTruth(ctx, e, o.Spaces()); err != nil {
		t.Fatalf("seed %d: image: %v", seed, err)
	}
}

// TestIOErrorRecoverySweep is the sweep on Start: every fault kind at
// every op index, once and persistent, of a run that recovers a populated
// directory (left by a clean Stop, or by a power loss with writes in
// flight), then writes a little and stops. After each run: power loss,
// fault-free Start, and the recovered engine must show exactly what a
// fault-free recovery of the directory shows, plus the run's own writes.
func TestIOErrorRecoverySweep(t *testing.T) {
	seeds := seedRange(1, 1)
	if soak() {
		seeds = seedRange(1, 8)
	}
	tt := newIOErrTotals()
	for _, seed := range seeds {
		for _, cut := range []bool{false, true} {
			if *ioerrKindFlag != "" && cut != *ioerrCutFlag {
				continue
			}
			label := map[bool]string{false: "stopped", true: "power-cut"}[cut]
			sc := ioerrScenario{seed: seed, ops: 8, image: ioerrImage(t, seed, cut), label: label}
			if ioerrReplay(t, sc) {
				return
			}
			ref := ioerrRun(t, sc, nil, nil)
			if ref.callerErrs != 0 || ref.restarts != 0 || ref.finalErr != nil || ref.report.Err() != nil {
				t.Fatalf("seed %d %s: the reference run is not clean: errors %d (%v), restarts %d, recovery %v, oracle %v",
					seed, label, ref.callerErrs, ref.firstErr, ref.restarts, ref.finalErr, ref.report.Err())
			}
			// The ops after Start are the running engine's, which
			// TestIOErrorSweep covers: sweep Start and a margin after it
			// (the whole run in the soak).
			upto := ref.startOps + ref.startOps/4
			if soak() {
				upto = ref.opsRun
			}
			t.Logf("seed %d %s: the reference run's Start takes %d ring ops of %d (%d files to recover); sweeping 1..%d",
				seed, label, ref.startOps, ref.opsRun, len(sc.image.files), upto)
			ioerrSweep(t, sc, upto, tt)
		}
	}
	if ioerrRace {
		t.Log("under -race: faults once only; the persistent half runs without -race (see ioerr_race_test.go)")
	}
	tt.print(t, "recovery")
}
