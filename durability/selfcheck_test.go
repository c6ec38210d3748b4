package durability

// Suite 9 of issue 5: the harness checks itself. Each planted bug of
// internal/testhook breaks one rule the engine relies on; the suite that
// should catch it runs with the bug planted, seed after seed, and must
// catch it (a violation, a recovery failure, corrupted data served) within
// selfcheckMaxSeeds seeds. The seeds up to the catching one then run again
// with no bug planted and must pass, so that the catch is the bug's doing.
//
//   - AckBeforeSync, SkipDirSync: the power-loss simulation of suite 1
//     (powerLossSeed, selfcheckCycles power losses per seed);
//   - SkipCRC, MidFileAsTorn: the corruption suite of suite 4 (corruptTry)
//     on damage in the middle of WAL and hot-segment files, with valid
//     batches after it.
//
// go test -run TestSelfCheck -v ./durability prints the catching seed of
// each bug.

import (
	"fmt"
	"testing"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/internal/testhook"
)

const (
	selfcheckMaxSeeds = 100
	selfcheckCycles   = 5  // power losses per seed of the power-loss check
	selfcheckDamages  = 12 // mid-file damages tried per seed of the corruption check
)

// selfcheckBug is one planted bug and the suite that must catch it: try
// runs one seed and reports whether it failed, and why.
type selfcheckBug struct {
	bug testhook.Bug
	try func(t *testing.T, seed int64) (caught bool, why string)
}

var selfcheckBugs = []selfcheckBug{
	{testhook.AckBeforeSync, selfcheckPowerLoss},
	{testhook.SkipDirSync, selfcheckPowerLoss},
	{testhook.SkipCRC, selfcheckCorruption},
	{testhook.MidFileAsTorn, selfcheckCorruption},
}

// selfcheckPowerLoss runs one seed of the power-loss simulation.
func selfcheckPowerLoss(t *testing.T, seed int64) (bool, string) {
	r := powerLossSeed(t, seed, selfcheckCycles)
	if !r.failed {
		return false, ""
	}
	return true, fmt.Sprintf("after %d power losses: %v, recovery failures %d", r.cuts, r.figures, r.recoveryFailures)
}

// selfcheckCorruption builds one seed's directory (the variants in turn:
// WAL-only records, promoted, killed with unsealed hot generations) with no
// bug planted, then tries its first mid-file damages in WAL and hot
// segment files, each with TolerateTornTail: an outcome the corruption
// suite does not allow is a catch. The bug, if planted, is unplanted while
// the directory is built and its damages classified (they must be the
// same with and without it), and planted again for the recoveries.
func selfcheckCorruption(t *testing.T, seed int64) (bool, string) {
	var bug testhook.Bug
	for _, b := range testhook.Bugs {
		if testhook.Planted(b) {
			bug |= b
		}
	}
	unplant := func() func() {
		for _, b := range testhook.Bugs {
			if bug&b != 0 {
				testhook.Plant(b)() // its undo clears b
			}
		}
		return func() {
			for _, b := range testhook.Bugs {
				if bug&b != 0 {
					testhook.Plant(b)
				}
			}
		}
	}
	replant := unplant()
	v := corruptVariants[int(seed)%len(corruptVariants)]
	img, lay := corruptBuild(t, seed, v)
	var mids []corruptDamage
	for _, d := range corruptPlan(img, newRand(seed), false) {
		k := corruptFileKind(d.file)
		if (k != "wal" && k != "hot") || (d.kind != corruptFlip && d.kind != corruptZero) {
			continue
		}
		if class, _ := corruptClassify(d, img, lay); class == corruptMid {
			mids = append(mids, d)
		}
	}
	replant()
	if len(mids) > selfcheckDamages {
		mids = mids[:selfcheckDamages]
	}
	for _, d := range mids {
		out, class, detail := corruptTry(t, seed, v, img, lay, d, ringpipe.TolerateTornTail)
		if !corruptAllowed(out, class, ringpipe.TolerateTornTail, corruptFileKind(d.file)) {
			return true, fmt.Sprintf("%s, %v (%s): %s %s", v.name, d, corruptClassNames[class], corruptOutcomeNames[out], detail)
		}
	}
	return false, ""
}

// TestSelfCheck is suite 9.
func TestSelfCheck(t *testing.T) {
	for _, sb := range selfcheckBugs {
		t.Run(sb.bug.String(), func(t *testing.T) {
			undo := testhook.Plant(sb.bug)
			t.Cleanup(undo)
			caught := int64(0)
			var why string
			for _, seed := range seedRange(1, selfcheckMaxSeeds) {
				// The seed's own failure is logged (t.Logf) by the suite
				// it runs; here it is the point, not a failure.
				if ok, w := sb.try(t, seed); ok {
					caught, why = seed, w
					break
				}
			}
			undo()
			if caught == 0 {
				t.Fatalf("the harness did not catch planted bug %s within %d seeds", sb.bug, selfcheckMaxSeeds)
			}
			t.Logf("planted bug %s: caught at seed %d: %s", sb.bug, caught, why)
			// The control: the same seeds pass with no bug planted.
			for seed := int64(1); seed <= caught; seed++ {
				if *seedFlag != 0 {
					seed = *seedFlag
				}
				if ok, w := sb.try(t, seed); ok {
					t.Errorf("seed %d fails with no bug planted, so the catch proves nothing: %s", seed, w)
				}
				if *seedFlag != 0 {
					break
				}
			}
		})
	}
}
