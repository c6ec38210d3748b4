// Package durability holds the proof-of-durability suites of issue 5: the
// seeded power-loss simulation, the crash-point sweep, and (added by
// others) the I/O-error, corruption, kill -9 and leak suites. The package
// itself is test-only; its non-test files are the helpers the suites
// share: the Oracle (this file), which decides whether a recovered engine
// kept its promises, and the workload (workload.go), which drives an
// engine and tells the Oracle what it did.
package durability

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/snapshot"
)

// Reader is what Oracle.Check reads a recovered engine through.
// *ringpipe.Engine implements it.
type Reader interface {
	Get(ctx context.Context, space ringpipe.SpaceID, p ringpipe.Point) (ringpipe.Record, error)
	Scan(ctx context.Context, space ringpipe.SpaceID, box ringpipe.Box, fn func(ringpipe.Record) bool) error
}

// writeState is where a write stands in the oracle's eyes.
type writeState int

const (
	// stateMaybe: submitted and not acknowledged (in flight, or its call
	// returned an error). After recovery it is wholly present or wholly
	// absent.
	stateMaybe writeState = iota
	// stateAcked: the call returned nil with a revision. After recovery it
	// is present (unless a newer write replaced it), exactly once.
	stateAcked
	// stateNever: never submitted (its PutAsync returned an error). It
	// must never be present.
	stateNever
)

// Write is one Put or Delete the workload tried, as handed out by
// Oracle.Begin. Its fields are read-only for callers; the outcome goes to
// the Oracle through Ack, Fail and NotSubmitted.
type Write struct {
	Space  ringpipe.SpaceID
	Point  ringpipe.Point
	Value  []byte // nil for a Delete (an empty Put has a non-nil, empty Value)
	Delete bool

	state writeState
	rev   ringpipe.Revision // when acked
	epoch int               // the Check count when Begin was called
	err   error             // what Fail was given
}

func (w *Write) String() string {
	what := fmt.Sprintf("put %s", brief(w.Value))
	if w.Delete {
		what = "delete"
	}
	switch w.state {
	case stateAcked:
		return fmt.Sprintf("%s (acked rev %d)", what, w.rev)
	case stateNever:
		return what + " (never submitted)"
	}
	if w.err != nil {
		return fmt.Sprintf("%s (maybe: %v)", what, w.err)
	}
	return what + " (maybe: in flight)"
}

// point is what the oracle knows of one point: the state the last Check
// saw (base) and the writes begun since.
type point struct {
	p      ringpipe.Point
	base   *Write   // the record the last Check saw as acked; nil: absent (or never checked)
	writes []*Write // begun since the last Check, in Begin order
	dead   []*Write // writes a Check found absent or superseded: never to come back
}

type space struct {
	spec   ringpipe.SpaceSpec
	points map[string]*point
}

// Oracle records every write a workload tried and checks a recovered
// engine against them. The rules (issue 5):
//
//   - acknowledged (Put/Delete returned nil) ⇒ present with its value and
//     revision, exactly once, unless a newer write to the point replaced it;
//   - maybe (in flight at the crash, or returned an error) ⇒ wholly present
//     or wholly absent;
//   - never submitted ⇒ absent;
//   - nothing else: no record nobody wrote, no torn value, no point twice;
//   - revisions acknowledged after a Check are above every revision it saw.
//
// What a Check sees becomes the baseline of the next: a maybe write found
// present counts from then on as acknowledged (with the revision it came
// back with), one found absent must stay absent. So an Oracle follows one
// directory through any number of crashes and recoveries.
//
// All methods are safe for concurrent use.
type Oracle struct {
	mu       sync.Mutex
	spaces   map[ringpipe.SpaceID]*space
	epoch    int               // Checks done
	floor    ringpipe.Revision // the highest revision seen by a Check or acknowledged
	maxAcked ringpipe.Revision // the highest revision acknowledged
	ackedRev map[ringpipe.Revision]*Write
	pending  Figures // violations found outside Check (by Ack), reported by the next Check
	problems []string
}

// maxProblems bounds the descriptions a Report keeps.
const maxProblems = 20

// NewOracle returns an Oracle that knows no spaces.
func NewOracle() *Oracle {
	return &Oracle{spaces: make(map[ringpipe.SpaceID]*space), ackedRev: make(map[ringpipe.Revision]*Write)}
}

// AddSpace tells the oracle about a space the workload writes to. Adding a
// space twice is harmless.
func (o *Oracle) AddSpace(id ringpipe.SpaceID, spec ringpipe.SpaceSpec) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.spaces[id] == nil {
		o.spaces[id] = &space{spec: spec, points: make(map[string]*point)}
	}
}

// Spaces returns the spaces the oracle knows, by ID.
func (o *Oracle) Spaces() map[ringpipe.SpaceID]ringpipe.SpaceSpec {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[ringpipe.SpaceID]ringpipe.SpaceSpec, len(o.spaces))
	for id, s := range o.spaces {
		out[id] = s.spec
	}
	return out
}

func pointKey(p ringpipe.Point) string { return fmt.Sprint([]uint32(p)) }

// Begin records a write about to be submitted: a Put of value (nil is
// taken as empty), or a Delete when del is set. Until Ack or NotSubmitted
// says otherwise the write is "maybe". Call it before Put, Delete or
// PutAsync, never after. It panics on a space AddSpace did not name (a
// bug in the test).
func (o *Oracle) Begin(id ringpipe.SpaceID, p ringpipe.Point, value []byte, del bool) *Write {
	w := &Write{Space: id, Point: slices.Clone(p), Delete: del}
	if !del {
		w.Value = append([]byte{}, value...)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	s := o.spaces[id]
	if s == nil {
		panic(fmt.Sprintf("durability: Begin on space %d, which AddSpace did not name", id))
	}
	k := pointKey(p)
	pt := s.points[k]
	if pt == nil {
		pt = &point{p: w.Point}
		s.points[k] = pt
	}
	w.epoch = o.epoch
	pt.writes = append(pt.writes, w)
	return w
}

// Ack records that w's call returned nil with revision rev. A revision
// given twice, or one acknowledged since the last Check that is not above
// every revision that Check saw, is a violation reported by the next
// Check.
func (o *Oracle) Ack(w *Write, rev ringpipe.Revision) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if w.state == stateAcked {
		panic("durability: Ack twice")
	}
	if prev := o.ackedRev[rev]; prev != nil {
		o.pending.Duplicated++
		o.problem("revision %d acknowledged for two writes: %v at %v and %v at %v", rev, prev, prev.Point, w, w.Point)
	}
	if w.epoch == o.epoch && o.epoch > 0 && rev <= o.floor {
		o.pending.RevisionErrors++
		o.problem("write at %v acknowledged with revision %d, not above %d seen before", w.Point, rev, o.floor)
	}
	w.state, w.rev = stateAcked, rev
	o.ackedRev[rev] = w
	o.maxAcked = max(o.maxAcked, rev)
}

// Fail records that w's call returned err: w stays "maybe".
func (o *Oracle) Fail(w *Write, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	w.err = err
}

// NotSubmitted records that w was never handed to the engine (PutAsync
// returned an error, so nothing was queued): it must never be present.
func (o *Oracle) NotSubmitted(w *Write, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	w.state, w.err = stateNever, err
}

// Figures count what checks found. Every field after Checks..Never is a
// violation and must stay 0.
type Figures struct {
	Checks int // Check calls
	Points int // points checked (summed over checks)
	// Writes classified by the checks: acknowledged, maybe (found present
	// or absent), never submitted.
	Acked, MaybePresent, MaybeAbsent, Never int

	AckedLost      int // an acknowledged write missing, or an older state in its place
	Duplicated     int // a write back with another revision, a revision given twice, a point twice in a Scan
	HalfApplied    int // a value nobody wrote whole (torn, mixed), a record of the wrong shape
	Phantom        int // a never-submitted write, one found absent before, or a point nobody wrote
	RevisionErrors int // a revision acknowledged after a recovery that is not above every recovered one
	ReadErrors     int // Get or Scan failed with something other than ErrNotFound
	ScanMismatches int // Scan and Get disagree, or Scan is out of key order
}

// Add adds g to f.
func (f *Figures) Add(g Figures) {
	f.Checks += g.Checks
	f.Points += g.Points
	f.Acked += g.Acked
	f.MaybePresent += g.MaybePresent
	f.MaybeAbsent += g.MaybeAbsent
	f.Never += g.Never
	f.AckedLost += g.AckedLost
	f.Duplicated += g.Duplicated
	f.HalfApplied += g.HalfApplied
	f.Phantom += g.Phantom
	f.RevisionErrors += g.RevisionErrors
	f.ReadErrors += g.ReadErrors
	f.ScanMismatches += g.ScanMismatches
}

// Violations is the number of broken promises counted in f.
func (f Figures) Violations() int {
	return f.AckedLost + f.Duplicated + f.HalfApplied + f.Phantom + f.RevisionErrors + f.ReadErrors + f.ScanMismatches
}

// String prints the violation counts, then the classification.
func (f Figures) String() string {
	return fmt.Sprintf("acknowledged lost %d, duplicated %d, half-applied %d, phantom %d, revision errors %d, "+
		"read errors %d, scan mismatches %d (checks %d, points %d, writes: acked %d, maybe present %d, "+
		"maybe absent %d, never submitted %d)",
		f.AckedLost, f.Duplicated, f.HalfApplied, f.Phantom, f.RevisionErrors, f.ReadErrors, f.ScanMismatches,
		f.Checks, f.Points, f.Acked, f.MaybePresent, f.MaybeAbsent, f.Never)
}

// Report is the outcome of one Check.
type Report struct {
	Figures
	Problems []string // the first violations, described (at most maxProblems)
	MaxRev   ringpipe.Revision
}

// Err returns nil when the check found no violation, or an error listing
// the figures and the first problems.
func (r Report) Err() error {
	if r.Violations() == 0 {
		return nil
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%d violations: %v", r.Violations(), r.Figures)
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "\n\t%s", p)
	}
	return errors.New(b.String())
}

// problem notes a violation's description. REQUIRES: o.mu held.
func (o *Oracle) problem(format string, args ...any) {
	if len(o.problems) < maxProblems {
		o.problems = append(o.problems, fmt.Sprintf(format, args...))
	}
}

// Check reads every point the oracle knows through r (Get) and every
// space whole (Scan), compares them with the writes recorded since the
// last Check, and makes what it saw the baseline of the next. Call it on a
// freshly recovered engine, with no write in progress.
func (o *Oracle) Check(ctx context.Context, r Reader) Report {
	o.mu.Lock()
	defer o.mu.Unlock()
	f := o.pending
	o.pending = Figures{}
	f.Checks = 1
	ids := make([]ringpipe.SpaceID, 0, len(o.spaces))
	for id := range o.spaces {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	prevFloor := o.floor
	next := max(o.floor, o.maxAcked)
	for _, id := range ids {
		next = max(next, o.checkSpace(ctx, r, id, o.spaces[id], prevFloor, &f))
	}
	o.floor = next
	o.epoch++
	rep := Report{Figures: f, Problems: o.problems, MaxRev: o.floor}
	o.problems = nil
	return rep
}

// checkSpace checks one space; prevFloor is the floor before this Check.
// It returns the highest revision Get found. REQUIRES: o.mu held.
func (o *Oracle) checkSpace(ctx context.Context, r Reader, id ringpipe.SpaceID, s *space, prevFloor ringpipe.Revision, f *Figures) (maxSeen ringpipe.Revision) {
	// Get of every point; what is seen becomes the new baseline.
	seen := make(map[string]ringpipe.Record) // live records found by Get
	keys := make([]string, 0, len(s.points))
	for k := range s.points {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		pt := s.points[k]
		f.Points++
		rec, err := r.Get(ctx, id, pt.p)
		switch {
		case err == nil:
			seen[k] = rec
			o.checkFound(id, pt, rec, prevFloor, f)
			maxSeen = max(maxSeen, rec.Revision)
		case errors.Is(err, ringpipe.ErrNotFound):
			o.checkAbsent(id, pt, f)
		default:
			// Unknown: the writes wait for the next Check.
			f.ReadErrors++
			o.problem("space %d: Get %v: %v", id, pt.p, err)
		}
	}

	// Scan of the whole space: the same records, in key order, each point
	// once, and no point nobody wrote.
	box := FullBox(s.spec)
	scanned := make(map[string]bool)
	var lastKey uint64
	n := 0
	err := r.Scan(ctx, id, box, func(rec ringpipe.Record) bool {
		k := pointKey(rec.Point)
		key := snapshot.Key(rec.Point, s.spec.Dims, s.spec.Bits)
		if n > 0 && key <= lastKey && !scanned[k] {
			f.ScanMismatches++
			o.problem("space %d: Scan returned %v (key %d) after key %d: not in key order", id, rec.Point, key, lastKey)
		}
		n++
		lastKey = key
		switch got, ok := seen[k]; {
		case scanned[k]:
			f.Duplicated++
			o.problem("space %d: Scan returned %v twice", id, rec.Point)
		case s.points[k] == nil:
			f.Phantom++
			o.problem("space %d: Scan returned %v (rev %d, %s), a point nobody wrote", id, rec.Point, rec.Revision, brief(rec.Value))
		case !ok:
			f.ScanMismatches++
			o.problem("space %d: Scan returned %v (rev %d), where Get found nothing", id, rec.Point, rec.Revision)
		case got.Revision != rec.Revision || !bytes.Equal(got.Value, rec.Value) || rec.Tombstone:
			f.ScanMismatches++
			o.problem("space %d: Scan returned %v rev %d %s, Get rev %d %s", id, rec.Point, rec.Revision,
				brief(rec.Value), got.Revision, brief(got.Value))
		}
		scanned[k] = true
		return true
	})
	if err != nil {
		f.ReadErrors++
		o.problem("space %d: Scan: %v", id, err)
		return maxSeen
	}
	for k, rec := range seen {
		if !scanned[k] {
			f.ScanMismatches++
			o.problem("space %d: Get found %v (rev %d) but Scan did not return it", id, rec.Point, rec.Revision)
		}
	}
	return maxSeen
}

// newestAcked returns the acknowledged write of pt (the baseline included)
// with the highest revision, or nil.
func newestAcked(pt *point) *Write {
	best := pt.base
	for _, w := range pt.writes {
		if w.state == stateAcked && (best == nil || w.rev > best.rev) {
			best = w
		}
	}
	return best
}

// classify counts the writes of pt since the last Check, given the one
// found present (nil: none).
func classify(pt *point, present *Write, f *Figures) {
	for _, w := range pt.writes {
		switch {
		case w.state == stateAcked:
			f.Acked++
		case w.state == stateNever:
			f.Never++
		case w == present:
			f.MaybePresent++
		default:
			f.MaybeAbsent++
		}
	}
}

// settle makes base pt's new baseline: every other write since the last
// Check is dead from now on.
func settle(pt *point, base *Write) {
	if pt.base != nil && pt.base != base {
		pt.dead = append(pt.dead, pt.base)
	}
	for _, w := range pt.writes {
		if w != base && !w.Delete {
			pt.dead = append(pt.dead, w)
		}
	}
	pt.base, pt.writes = base, nil
}

// checkAbsent checks a point where Get found nothing. REQUIRES: o.mu held.
func (o *Oracle) checkAbsent(id ringpipe.SpaceID, pt *point, f *Figures) {
	a := newestAcked(pt)
	var del *Write // the delete that explains the absence
	switch {
	case a == nil || a.Delete:
		del = a
	default:
		// Only a delete that may be newer than a can hide it.
		for _, w := range pt.writes {
			if w.Delete && w.state == stateMaybe {
				del = w
			}
		}
		if del == nil {
			f.AckedLost++
			o.problem("space %d point %v: acknowledged %v lost (Get: not found)", id, pt.p, a)
		}
	}
	classify(pt, del, f)
	if del != nil && del.state != stateAcked {
		// Its revision is unknown; an absent baseline says as much.
		del = nil
	}
	settle(pt, del)
}

// checkFound checks a point where Get found rec. REQUIRES: o.mu held.
func (o *Oracle) checkFound(id ringpipe.SpaceID, pt *point, rec ringpipe.Record, prevFloor ringpipe.Revision, f *Figures) {
	if rec.Tombstone || rec.Space != id || !slices.Equal(rec.Point, pt.p) {
		f.HalfApplied++
		o.problem("space %d point %v: Get returned a malformed record %+v", id, pt.p, rec)
		settle(pt, pt.base)
		return
	}
	a := newestAcked(pt)
	// Which write is it? An acknowledged one with its revision, or else a
	// maybe one with the same value.
	var from, sameValue *Write
	consider := pt.writes
	if pt.base != nil {
		consider = append([]*Write{pt.base}, pt.writes...)
	}
	for _, w := range consider {
		if w.Delete || !bytes.Equal(w.Value, rec.Value) {
			continue
		}
		switch {
		case w.state == stateAcked && w.rev == rec.Revision:
			from = w
		case w.state == stateAcked:
			sameValue = w
		case w.state == stateMaybe && (from == nil || from.state != stateAcked):
			from = w
		case w.state == stateNever:
			sameValue = w
		}
	}
	switch {
	case from == nil && sameValue != nil && sameValue.state == stateNever:
		f.Phantom++
		o.problem("space %d point %v: found %s rev %d, which was never submitted", id, pt.p, brief(rec.Value), rec.Revision)
	case from == nil && sameValue != nil:
		f.Duplicated++
		o.problem("space %d point %v: %v came back with revision %d (applied twice?)", id, pt.p, sameValue, rec.Revision)
	case from == nil && o.wasDead(pt, rec) != nil:
		if d := o.wasDead(pt, rec); d.state == stateAcked {
			f.AckedLost++
			o.problem("space %d point %v: acknowledged %v lost: the older %v is back", id, pt.p, a, d)
		} else {
			f.Phantom++
			o.problem("space %d point %v: %v is back (rev %d) after a check found it gone", id, pt.p, d, rec.Revision)
		}
	case from == nil:
		f.HalfApplied++
		o.problem("space %d point %v: found %s rev %d, which nobody wrote whole", id, pt.p, brief(rec.Value), rec.Revision)
	case a != nil && rec.Revision < a.rev:
		f.AckedLost++
		o.problem("space %d point %v: acknowledged %v lost: found %v at rev %d", id, pt.p, a, from, rec.Revision)
	case a != nil && rec.Revision == a.rev && from != a:
		f.Duplicated++
		o.problem("space %d point %v: %v found with the revision of %v", id, pt.p, from, a)
	case from.state == stateMaybe && o.ackedRev[rec.Revision] != nil:
		f.Duplicated++
		o.problem("space %d point %v: %v found with revision %d, acknowledged for %v", id, pt.p, from, rec.Revision, o.ackedRev[rec.Revision])
	case from.state == stateMaybe && from.epoch > 0 && rec.Revision <= prevFloor:
		f.RevisionErrors++
		o.problem("space %d point %v: %v found with revision %d, not above %d that an earlier recovery saw", id, pt.p, from, rec.Revision, prevFloor)
	}
	if from == nil {
		classify(pt, nil, f)
		settle(pt, pt.base)
		return
	}
	classify(pt, from, f)
	if from.state == stateMaybe {
		// Present: from now on it counts as acknowledged at the revision
		// it came back with.
		from.state, from.rev = stateAcked, rec.Revision
		o.ackedRev[rec.Revision] = from
	}
	settle(pt, from)
}

// wasDead returns the write an earlier Check found absent or superseded
// that rec is (the same value, and the same revision if it had one), or
// nil. REQUIRES: o.mu held.
func (o *Oracle) wasDead(pt *point, rec ringpipe.Record) *Write {
	for _, w := range pt.dead {
		if bytes.Equal(w.Value, rec.Value) && (w.state != stateAcked || w.rev == rec.Revision) {
			return w
		}
	}
	return nil
}

// FullBox is the box of every point of spec.
func FullBox(spec ringpipe.SpaceSpec) ringpipe.Box {
	b := ringpipe.Box{Min: make(ringpipe.Point, spec.Dims), Max: make(ringpipe.Point, spec.Dims)}
	for i := range b.Max {
		b.Max[i] = uint32(uint64(1)<<spec.Bits - 1)
	}
	return b
}

// brief describes a value for a message: its length and first bytes.
func brief(v []byte) string {
	if len(v) > 24 {
		return fmt.Sprintf("%dB %q...", len(v), v[:24])
	}
	return fmt.Sprintf("%dB %q", len(v), v)
}
