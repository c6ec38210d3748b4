package actors

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/ringpipe/ringpipe/hot"
	"github.com/ringpipe/ringpipe/internal/stagetrace"
	"github.com/ringpipe/ringpipe/internal/testhook"
	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/wal"
)

// Submitter owns the submission side: it drains the write queue in
// batches, assigns revisions, groups each batch's records by space and
// submits one DSync write (durable on completion) per touched hot segment
// (group commit), with DirectWriteTimeout as its deadline. A space whose hot file
// missed a deadline is slow: its writes go to the staging WAL until
// promotions into its hot file show fast syncs again. It also owns the
// staging WAL and the records staged in it, promotes them when the
// promoter says so, and submits the I/O the sealer and promoter ask for.
//
// Invariants:
//  1. At most one batch is in flight per file (hot segment or WAL), so a
//     torn batch is always the last one (the frame rule). Writes for a
//     busy file wait in held and go out together when it settles.
//  2. Revisions are assigned in queue order and never reused.
//  3. Every write taken from the queue is in exactly one of: a space's
//     held list, walHeld, or a flight (through its group) until its group
//     is decided by the completer.
//  4. An I/O error fails the file it happened on for good: the segment is
//     frozen and replaced by the sealer; the WAL is rolled to a new
//     segment when Run restarts. Nothing is ever written after a failed
//     write or sync on the same file.
type Submitter struct {
	env  *Env
	ch   *Channels
	lg   *zap.Logger
	doer *Doer // the WAL's: while Run runs, routed through s.do

	// Owned by Run; kept across restarts.
	wal         *wal.WAL
	batchBytes  int // the most bytes of one batch (batchBound)
	atRisk      int // records of direct batches whose deadline may reroute them
	walInflight int // records of the WAL batch in flight
	walBusy     bool
	walHeld     []*group
	walMax      messages.Revision // highest revision written to the WAL
	// retireFailed: the last retirement failed (an unlink); it is tried
	// again at the next batch, not only at the next promotion.
	retireFailed bool
	retryAt      time.Time
	walErr       error // the WAL failed: reopen and roll on restart
	nextRev      messages.Revision
	nextID       uint64
	spaces       map[messages.SpaceID]*spaceState
	// noGen holds, for a space created without its first hot file (the
	// disk was full: ReplaceFailed for a space not in spaces), the error
	// its writes get until the file comes.
	noGen       map[messages.SpaceID]error
	held        int // writes in all held lists
	staged      int // records in all staged lists
	outstanding map[*group]struct{}
	barriers    []barrier
	pubSeq      uint64     // the latest settlement number heard (see Fence)
	fbBuf       []feedback // feedback drained before a submission
	promote     int        // promotion budget from the last PromoteTick
	runCtx      context.Context
	// syncAvg is a moving average of a direct batch's durable write
	// time, what gathering is bounded by (see gathering).
	syncAvg time.Duration
	// gatherTimer wakes Run when the earliest gathering space's wait
	// ends; created by Run, stopped when it returns.
	gatherTimer *time.Timer

	// turn is held by whoever acts as the submitter: Run, except while
	// it waits for a message, and an inline commit (see Inline). Every
	// field above is owned by the holder of turn.
	turn    sync.Mutex
	running bool // Run is running (under turn)
	// regSink, set by an inline commit that holds the completer's turn
	// too, takes registrations directly instead of through the channel.
	regSink *Completer
	// inlineErr is an error an inline commit met doing the submitter's
	// work: Run returns it as its own (the actor failed).
	inlineErr error
	// stranded are writes failGroups could not hand to the publisher
	// because the engine had failed; FailPending completes them.
	stranded []*messages.Write
}

type barrier struct {
	upto  messages.Revision
	reply chan<- error
}

// spaceState is the submitter's view of one space.
type spaceState struct {
	info     messages.SpaceInfo
	seg      *hot.Segment // the active generation; nil until installed
	busy     bool         // a flight is in flight on seg
	held     []*messages.Write
	slow     bool // route writes to the staging WAL
	fast     int  // consecutive fast syncs while slow
	install  *InstallSegment
	dueAt    time.Time         // when the last seal hint for seg was sent; zero: none
	staged   []messages.Record // durable in the WAL only, by revision
	flushers []chan<- error
	// expect is how many writers of the last direct batch to settle have
	// not been seen in the queue since; until gatherBy, held writes wait
	// for them (see gathering).
	expect   int
	gatherBy time.Time
}

// Tuning. Each bound says what it protects.
const (
	// maxHeld bounds the writes waiting for busy files; beyond it the
	// submitter stops draining the queue, so callers block in Put.
	maxHeld = 16384
	// maxBatchBytes bounds one hot or WAL batch (its buffer is kept by
	// the file for reuse).
	maxBatchBytes = 4 << 20
	// fastSyncsToRecover is how many consecutive fast syncs (under half
	// the deadline) a slow space's hot file must show before direct
	// writes resume: hysteresis, so routing does not flap.
	fastSyncsToRecover = 3
	// maxGatherYields bounds the yields of one take while gathering:
	// each lets the runnable writers queue their writes; a yield that
	// brings none ends the take anyway.
	maxGatherYields = 8
	// maxStaged bounds the records waiting in the staging WAL for
	// promotion (they are held in memory, here and in the tail): beyond
	// it a slow space's writes go to its hot file anyway and wait for
	// its sync, which is the back-pressure that keeps memory bounded when
	// writes arrive faster than the hot files sync.
	maxStaged = 1 << 16
)

// NewSubmitter returns the submitter. w is the staging WAL, opened by
// recovery with d as its Doer; segs are the spaces' active generations;
// staged are the staged records recovery found unpromoted; next is the
// first revision to assign.
func NewSubmitter(env *Env, ch *Channels, d *Doer, w *wal.WAL, next messages.Revision) *Submitter {
	env.Metrics.init()
	s := &Submitter{env: env, ch: ch, lg: env.Log.Named("submitter"), doer: d, wal: w,
		nextRev: next, nextID: 1, spaces: make(map[messages.SpaceID]*spaceState),
		outstanding: make(map[*group]struct{}), batchBytes: batchBound(env.Cfg)}
	// What recovery found in the WAL counts as written to it: without
	// it the retirement mark stayed 0 until this engine staged a write,
	// and segments whose records were all promoted after a restart were
	// kept, and replayed at every Start, for as long as no write was
	// staged (disk audit).
	if w != nil {
		for _, seg := range w.Segments() {
			s.walMax = max(s.walMax, seg.MaxRev)
		}
	}
	return s
}

// batchBound is the most bytes of one batch: maxBatchBytes, or half a log
// segment when segments are smaller, so that a batch always fits a fresh
// segment (a batch larger than a segment could never be written: a
// promotion batch would seal empty generations forever, a WAL batch would
// fail its writers). A single record larger than that still goes alone.
func batchBound(c Config) int {
	n := int64(maxBatchBytes)
	for _, seg := range []int64{c.WAL.SegmentSize, c.Hot.SegmentSize} {
		if seg > 0 {
			n = min(n, seg/2)
		}
	}
	return int(max(n, 4096))
}

// AddSpace registers a space recovered from disk with its active
// generation (seg may be nil: the sealer installs one) and its staged
// records. REQUIRES: Run has not started.
func (s *Submitter) AddSpace(info messages.SpaceInfo, seg *hot.Segment, staged []messages.Record) {
	sp := s.space(info)
	sp.seg = seg
	sp.staged = append(sp.staged, staged...)
	slices.SortFunc(sp.staged, byRevision)
	s.staged += len(staged)
	s.env.Metrics.StagedPending.Add(int64(len(staged)))
	if seg != nil {
		s.env.Metrics.Unsealed.Add(int64(seg.Records()))
	}
}

func byRevision(a, b messages.Record) int {
	switch {
	case a.Revision < b.Revision:
		return -1
	case a.Revision > b.Revision:
		return 1
	}
	return 0
}

func (s *Submitter) space(info messages.SpaceInfo) *spaceState {
	sp := s.spaces[info.ID]
	if sp == nil {
		sp = &spaceState{info: info}
		s.spaces[info.ID] = sp
		delete(s.noGen, info.ID)
	}
	return sp
}

// Run submits until ctx ends.
func (s *Submitter) Run(ctx context.Context) error {
	s.turn.Lock()
	s.running = true
	defer func() {
		s.running = false
		s.turn.Unlock()
	}()
	s.runCtx = ctx
	s.doer.setRoute(func(ops []ring.Op) ([]ring.Completion, error) { return s.do(ctx, ops) })
	defer s.doer.setRoute(nil)
	if err := s.restart(); err != nil {
		return err
	}
	// A generation recovered at its threshold (a Start with a lower
	// SealThreshold, SealBytes or Preallocate, or a seal the last engine
	// did not get to) is sealed now, not at its space's next write, which
	// may never come (restart audit).
	for _, sp := range s.spaces {
		s.checkSeal(sp)
	}
	// Segments whose records recovery found all in hot generations or
	// blocks (nothing staged again) are retired now: no promotion will
	// commit to do it (WAL retirement audit).
	s.retireWAL()
	s.gatherTimer = time.NewTimer(time.Hour)
	s.gatherTimer.Stop()
	defer s.gatherTimer.Stop()
	for {
		if err := s.inlineErr; err != nil {
			s.inlineErr = nil
			return err
		}
		if err := s.step(ctx); err != nil {
			return err
		}
		if err := testhook.Chaos("submitter", "dispatched"); err != nil {
			return err
		}
		var in <-chan messages.Request
		if s.held < maxHeld {
			in = s.ch.Writes
		}
		// Waiting, the submitter lets an inline commit act for it.
		s.turn.Unlock()
		select {
		case <-ctx.Done():
			s.turn.Lock()
			return ctx.Err()
		case r := <-in:
			s.turn.Lock()
			stagetrace.Mark(stagetrace.Taken)
			if err := s.take(ctx, r); err != nil {
				return err
			}
		case m := <-s.ch.Submitter:
			s.turn.Lock()
			if err := s.control(ctx, m); err != nil {
				return err
			}
		case fb := <-s.ch.feedback:
			s.turn.Lock()
			s.fbBuf = append(s.fbBuf, fb)
		case <-s.gatherTimer.C:
			// A gathering space's wait ended: dispatch submits it.
			s.turn.Lock()
		case <-s.ch.subKick:
			s.turn.Lock()
		}
	}
}

// step applies the buffered feedback, submits everything that can go and
// answers the Syncs that are done: one round of the submitter's work,
// after which it may wait for the next message. Feedback may wait in
// fbBuf: buffered by a submit or a Do of the last round, or left by a Run
// that failed. It is applied before waiting, or a settled batch could keep
// its file busy (and its space's held writes waiting) until some other
// message came.
func (s *Submitter) step(ctx context.Context) error {
	for {
		if err := s.drainFeedback(); err != nil {
			return err
		}
		if err := s.dispatch(ctx); err != nil {
			return err
		}
		if len(s.fbBuf) == 0 {
			break // else a Do in dispatch buffered some
		}
	}
	s.checkBarriers()
	return nil
}

// restart reopens what an earlier failure left failed (invariant 4).
func (s *Submitter) restart() error {
	if s.wal != nil && s.walErr != nil && !s.walBusy {
		if err := s.reopenWAL(); err != nil && !diskFull(err) {
			return err
		}
	}
	return nil
}

// reopenWAL makes a failed WAL usable again: it starts a new segment
// whose first frame cuts the log back to its durable end (wal.Restart), so
// that the failed batch, whatever a power loss leaves of it, is never read.
func (s *Submitter) reopenWAL() error {
	if err := s.wal.Restart(); err != nil {
		return fmt.Errorf("submitter: restart the staging WAL: %w", err)
	}
	s.walErr = nil
	s.lg.Info("staging WAL restarted on a new segment")
	return nil
}

// diskFull says whether err is ENOSPC, which DESIGN.md treats as a
// condition reported to writers that clears when space returns, not as a
// failed disk.
func diskFull(err error) bool { return errors.Is(err, syscall.ENOSPC) }

// take handles one request from the write queue, then drains up to a
// batch more (waiting BatchTimeout for them when it is positive). Only
// writes wait to fill a batch: a barrier (Sync, Stop's drain) ends the
// batch at once (what came before it goes now; what comes after it waits
// for the next round), and so does a control request (the sealer's or
// the promoter's I/O, a segment, a status), which is served on the spot
// (the error is control's), and feedback (a batch settled: its file is
// free, and a Sync may be answered). Before, all of them waited out
// BatchTimeout: with a long one, Sync and Stop ran out their ctxs with an
// accepted write unsynced, Flush and CreateSpace waited as long
// (acceptance audit), and so did a Sync whose writes were durable already
// but another write had started a batch, and a missed deadline's reroute
// (knob audit); and a Sync under a steady stream of writes waited for
// BatchSize of them to be taken after it.
func (s *Submitter) take(ctx context.Context, r messages.Request) error {
	n := 0
	var timer <-chan time.Time
	gathering, yields := false, 0
	for {
		s.ch.Queued.Add(-1) // r is taken (see Channels.Queued)
		switch r := r.(type) {
		case *messages.Write:
			var ok bool
			if gathering, ok = s.takeWrite(r); ok {
				n++
			}
		case *messages.Barrier:
			s.barriers = append(s.barriers, barrier{upto: s.nextRev - 1, reply: r.Reply})
			return nil // a caller waits for what is taken: submit it now
		}
		if n >= s.env.Cfg.BatchSize || s.held >= maxHeld {
			return nil
		}
		select {
		case r = <-s.ch.Writes:
			continue
		default:
		}
		if gathering && yields < maxGatherYields {
			// The writers of the batch that just settled are coming
			// back (see gathering), most of them runnable right now
			// behind this goroutine: let them queue their writes, and
			// take them in one go. Blocking instead woke this goroutine
			// once for every write or two, 29 times per batch of 59 at
			// 64 writers (execution trace), each wake-up a dispatch.
			yields++
			runtime.Gosched()
			select {
			case r = <-s.ch.Writes:
				continue
			default:
			}
		}
		if s.env.Cfg.BatchTimeout <= 0 {
			return nil
		}
		if timer == nil {
			timer = time.After(s.env.Cfg.BatchTimeout)
		}
		select {
		case r = <-s.ch.Writes:
		case fb := <-s.ch.feedback:
			s.fbBuf = append(s.fbBuf, fb) // applied by the next step
			return nil
		case m := <-s.ch.Submitter:
			return s.control(ctx, m)
		case <-timer:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// takeWrite gives w its revision and holds it for its space's next batch.
// It reports whether the space waits for more writes (see gathering), and
// false in ok when w failed (its space has no hot segment).
func (s *Submitter) takeWrite(w *messages.Write) (gathering, ok bool) {
	w.Record.Revision = s.nextRev
	s.nextRev++
	sp := s.spaces[w.Record.Space]
	if sp == nil {
		err := fmt.Errorf("submitter: space %d has no hot segment", w.Record.Space)
		if cause := s.noGen[w.Record.Space]; cause != nil {
			// Before, the writer got only the line above: the disk's
			// error never reached it (review audit).
			err = fmt.Errorf("submitter: space %d has no hot segment yet: %w", w.Record.Space, cause)
		}
		w.Ack.Complete(0, false, err)
		return false, false
	}
	sp.held = append(sp.held, w)
	s.held++
	if sp.expect > 0 {
		sp.expect--
	}
	return sp.expect > 0, true
}

// dispatch submits everything that can go: each idle space's held writes
// (to its hot file, or staged when it is slow or unusable), the WAL's held
// groups, then promotions while the budget lasts.
func (s *Submitter) dispatch(ctx context.Context) error {
	var now, wake time.Time
	for _, sp := range s.spaces {
		if sp.install != nil && !sp.busy {
			s.install(sp)
		}
		// A busy file's held writes wait for it, unless the space is
		// slow: they go to the staging WAL, which does not wait for a
		// stalled hot file (the DirectWriteTimeout bound holds for every
		// write, not only the one that missed the deadline).
		if len(sp.held) == 0 || (sp.busy && !sp.slow) {
			continue
		}
		if sp.expect > 0 {
			if now.IsZero() {
				now = s.env.now()
			}
			if s.gathering(sp, now) {
				if wake.IsZero() || sp.gatherBy.Before(wake) {
					wake = sp.gatherBy
				}
				continue
			}
		}
		if err := s.submitHeld(ctx, sp); err != nil {
			return err
		}
	}
	if !wake.IsZero() && s.gatherTimer != nil {
		s.gatherTimer.Reset(wake.Sub(now))
	}
	if len(s.walHeld) > 0 && s.walErr != nil && diskFull(s.walErr) {
		// Disk full is not a disk error: try a new segment now, and fail
		// these writers with ENOSPC while there is no room.
		if err := s.reopenWAL(); err != nil {
			s.failGroups(fmt.Errorf("submitter: staging WAL: %w", err), s.walHeld...)
			s.walHeld = nil
		}
	}
	if len(s.walHeld) > 0 && s.walErr != nil {
		// The WAL failed and Run has not been restarted to reopen it:
		// nothing can take these writes now.
		err := s.walErr
		s.failGroups(fmt.Errorf("submitter: staging WAL failed: %w", err), s.walHeld...)
		s.walHeld = nil
		return fmt.Errorf("submitter: staging WAL failed: %w", err)
	}
	if !s.walBusy && len(s.walHeld) > 0 {
		if err := s.submitWAL(ctx); err != nil {
			return err
		}
	}
	for _, sp := range s.spaces {
		if s.promote <= 0 && len(sp.flushers) == 0 {
			continue // out of budget: only spaces a Flush waits for go on
		}
		if len(sp.staged) == 0 || sp.busy {
			continue
		}
		if !s.usable(sp) {
			if sp.seg != nil && sp.install == nil && (sp.seg.Err() != nil || sp.seg.Immutable()) {
				s.sealDue(sp) // again, if the first hint was lost
			}
			continue
		}
		if err := s.submitPromotion(ctx, sp); err != nil {
			return err
		}
	}
	return nil
}

// gathering says whether sp's held writes should wait a little longer
// before going to its hot file: group commit across cohorts.
//
// Why: with one batch in flight per file, writers that queue while a batch
// syncs go out together as soon as it settles, while the writers of the
// settled batch, acknowledged a moment later, queue behind the new batch's
// whole sync. N closed-loop writers thus split into two cohorts of N/2
// that alternate, each write costing two sync cycles (31 records per sync
// at 64 writers). Waiting for the settled batch's writers to come back
// merges the cohorts: one sync per cycle carries all N.
//
// The wait ends when as many writes have been taken since the settlement
// as the settled batch held (sp.expect reaches 0), or at sp.gatherBy: the
// average sync time after the settlement (the returning writers would
// otherwise wait a whole sync behind a batch sent now, so the held ones
// lose at most what the others gain), and at most half the
// DirectWriteTimeout. Waiting a whole sync rather than half did 78k
// against 68k recs/s at 64 writers (58 against 53 records per sync;
// bench/, alternating, 3 rounds of 3 s). With one writer expect is 0 by the time
// anything is held, so nothing waits. Slow spaces (staged) do not gather.
func (s *Submitter) gathering(sp *spaceState, now time.Time) bool {
	// A Sync or Stop waiting (a barrier) does not wait for the writers
	// that may come: before, it waited out the whole gathering (knob
	// audit: seconds, after a slow sync).
	if sp.expect <= 0 || sp.slow || !now.Before(sp.gatherBy) || !s.usable(sp) || len(s.barriers) > 0 {
		sp.expect = 0
		return false
	}
	return true
}

// noteSettled starts gathering for sp after a direct batch of n writes
// settled in d.
func (s *Submitter) noteSettled(sp *spaceState, n int, d time.Duration) {
	if s.syncAvg == 0 {
		s.syncAvg = d
	} else {
		s.syncAvg += (d - s.syncAvg) / 8
	}
	wait := min(s.syncAvg, s.env.Cfg.DirectWriteTimeout/2, maxGather)
	if n < 1 || wait <= 0 {
		sp.expect = 0
		return
	}
	sp.expect = n
	sp.gatherBy = s.env.now().Add(wait)
}

// maxGather bounds gathering's wait. The writers of a settled batch come
// back within a few hundred µs (session 11: the last of 63 at about
// 200 µs); after a slow sync, the average sync time (and half of a long
// DirectWriteTimeout) made a lone Put on an idle engine wait seconds for
// writers that were not coming (knob audit: 5 s after one 9 s sync).
const maxGather = 2 * time.Millisecond

// usable says whether sp's active segment can take a batch.
func (s *Submitter) usable(sp *spaceState) bool {
	return sp.seg != nil && sp.seg.Err() == nil && !sp.seg.Immutable() && sp.install == nil
}

// takeHeld removes a batch's worth of sp's held writes, at most limit
// records when limit > 0.
func takeHeld(sp *spaceState, limit, batchBytes int) *group {
	g := &group{space: sp.info.ID}
	size := 0
	i := 0
	for ; i < len(sp.held); i++ {
		w := sp.held[i]
		sz := wal.FrameSize(wal.RecordSize(w.Record))
		if i > 0 && (size+sz > batchBytes || (limit > 0 && i >= limit)) {
			break
		}
		size += sz
		g.writes = append(g.writes, w)
		g.recs = append(g.recs, w.Record)
	}
	sp.held = slices.Delete(sp.held, 0, i)
	return g
}

// submitHeld sends a batch of sp's held writes on its way: staged when sp
// is slow (or its segment cannot take it), else to its hot file. The
// staging backlog stays within maxStaged: a staged batch or a direct one
// with a deadline (which, missed, reroutes it to the WAL) is cut to the
// room left; with no room left the batch goes to the hot file without a
// deadline and its writers wait for the sync however long it takes (or,
// when its segment cannot take a batch now, in held).
func (s *Submitter) submitHeld(ctx context.Context, sp *spaceState) error {
	room := maxStaged - s.stagingLoad()
	usable := s.usable(sp)
	stage := !usable || (sp.slow && room > 0)
	if stage && room <= 0 {
		return nil // the segment cannot take them now: they wait in held
	}
	if sp.busy && !stage {
		return nil // they wait for the file's batch in flight
	}
	deadline := !stage && !sp.slow && room > 0
	limit := 0
	if stage || deadline {
		limit = room
	}
	g := takeHeld(sp, limit, s.batchBytes)
	s.held -= len(g.writes)
	s.outstanding[g] = struct{}{}
	if stage {
		s.walHeld = append(s.walHeld, g)
		return nil
	}
	p, err := sp.seg.Prepare(g.recs)
	if errors.Is(err, hot.ErrFull) {
		s.sealDue(sp)
	}
	if err != nil || p == nil {
		// The segment cannot take it (full, failed): stage the group.
		s.walHeld = append(s.walHeld, g)
		return nil
	}
	ops := plantedOps(p.Ops())
	f := &flight{kind: kindHot, space: sp.info.ID, gen: sp.seg.Gen().Gen, hot: p, groups: []*group{g}}
	if deadline {
		for i := range ops {
			ops[i].Deadline = s.env.Cfg.DirectWriteTimeout
		}
		f.atRisk = len(g.recs)
	}
	if err := s.submit(ctx, f, ops); err != nil {
		sp.seg.Failed(p, err)
		return s.failGroups(err, g)
	}
	s.atRisk += f.atRisk
	sp.busy = true
	s.env.Metrics.BatchSize.Record(time.Duration(len(g.recs)))
	return nil
}

// submitWAL writes the held groups to the staging WAL as one batch.
func (s *Submitter) submitWAL(ctx context.Context) error {
	var gs []*group
	var recs []messages.Record
	size := 0
	i := 0
	for ; i < len(s.walHeld); i++ {
		g := s.walHeld[i]
		sz := 0
		for _, r := range g.recs {
			sz += wal.FrameSize(wal.RecordSize(r))
		}
		if i > 0 && size+sz > s.batchBytes {
			break
		}
		size += sz
		gs = append(gs, g)
		recs = append(recs, g.recs...)
	}
	s.walHeld = slices.Delete(s.walHeld, 0, i)
	p, err := s.wal.Prepare(recs)
	if err != nil {
		s.walErr = err
		if ctx.Err() != nil {
			// Run was stopped (an actor of the unit failed, or Stop) while
			// Prepare rolled to a new segment: nothing of the batch was
			// written. Its writes wait for the next Run, whose restart
			// starts a new segment (wal.Restart cuts back to the durable
			// end, whatever the cut-short roll left), or for Stop's
			// FailPending. Before, they failed with the unit's
			// context.Canceled, which reads like the caller's own
			// (ci11, TestStagedWriteSurvivesUnitRestart).
			s.walHeld = slices.Insert(s.walHeld, 0, gs...)
			return ctx.Err()
		}
		err = fmt.Errorf("submitter: stage %d records: %w", len(recs), err)
		s.failGroups(err, gs...)
		if diskFull(err) {
			return nil // reported to the writers; retried with the next batch
		}
		return err
	}
	f := &flight{kind: kindWAL, wal: p, groups: gs}
	if err := s.submit(ctx, f, plantedOps(p.Ops())); err != nil {
		s.wal.Failed(p, err)
		s.walErr = err
		if errors.Is(err, errNotPerformed) {
			// Stopped before the batch went in flight: as above.
			s.walHeld = slices.Insert(s.walHeld, 0, gs...)
			return ctx.Err()
		}
		return s.failGroups(err, gs...)
	}
	s.walBusy = true
	s.walMax = max(s.walMax, p.MaxRev)
	s.walInflight = len(recs)
	s.env.Metrics.BatchSize.Record(time.Duration(len(recs)))
	return nil
}

// submitPromotion appends a batch of sp's staged records to its hot file.
func (s *Submitter) submitPromotion(ctx context.Context, sp *spaceState) error {
	n := len(sp.staged)
	if len(sp.flushers) == 0 {
		n = min(n, s.promote)
	}
	size := 0
	for i := 0; i < n; i++ {
		size += wal.FrameSize(wal.RecordSize(sp.staged[i]))
		if i > 0 && size > s.batchBytes {
			n = i
			break
		}
	}
	recs := slices.Clone(sp.staged[:n])
	p, err := sp.seg.Prepare(recs)
	if errors.Is(err, hot.ErrFull) {
		s.sealDue(sp)
		return nil
	}
	if err != nil {
		s.failFlushers(sp, err)
		return nil // the segment failed; the sealer replaces it
	}
	s.promote -= n
	if p == nil {
		// Every record is in the segment already.
		s.promoted(sp, recs)
		s.retireWAL()
		return nil
	}
	f := &flight{kind: kindPromote, space: sp.info.ID, gen: sp.seg.Gen().Gen, hot: p, recs: recs}
	// A deadline, as a direct batch has: while a promotion is in flight
	// the space's writes wait for its file, so a stalled promotion must
	// mark the space slow (its notice does; nothing is rerouted: the
	// records are durable in the WAL) for their wait to stay bounded.
	ops := slices.Clone(p.Ops())
	for i := range ops {
		ops[i].Deadline = s.env.Cfg.DirectWriteTimeout
	}
	if err := s.submit(ctx, f, ops); err != nil {
		sp.seg.Failed(p, err)
		return fmt.Errorf("submitter: promote into space %d: %w", sp.info.ID, err)
	}
	sp.busy = true
	return nil
}

// promoted drops recs from sp's staged records: they are now durable in
// its hot file.
func (s *Submitter) promoted(sp *spaceState, recs []messages.Record) {
	done := make(map[messages.Revision]bool, len(recs))
	for _, r := range recs {
		done[r.Revision] = true
	}
	before := len(sp.staged)
	sp.staged = slices.DeleteFunc(sp.staged, func(r messages.Record) bool { return done[r.Revision] })
	n := before - len(sp.staged)
	s.staged -= n
	s.env.Metrics.Promoted.Add(uint64(n))
	s.env.Metrics.StagedPending.Add(-int64(n))
	if len(sp.staged) == 0 {
		for _, r := range sp.flushers {
			r <- nil
		}
		sp.flushers = nil
	}
}

// failGroups fails groups the completer never saw and returns err when it
// is the ring's (the actor cannot go on).
func (s *Submitter) failGroups(err error, gs ...*group) error {
	var ws []*messages.Write
	for _, g := range gs {
		delete(s.outstanding, g)
		ws = append(ws, g.writes...)
	}
	select {
	case <-s.ch.Failed:
		// The engine failed: the publisher may be gone. FailPending
		// fails these writes (with the engine's error) once the actors
		// have stopped.
		s.stranded = append(s.stranded, ws...)
	default:
		select {
		case s.ch.Publisher <- FailAcks{Writes: ws, Err: err}:
		case <-s.ch.Failed:
			s.stranded = append(s.stranded, ws...)
		}
	}
	if errors.Is(err, ring.ErrClosed) {
		return err
	}
	return nil
}

// submit submits ops as flight f and registers it with the completer.
func (s *Submitter) submit(ctx context.Context, f *flight, ops []ring.Op) error {
	if len(ops) > maxChainOps {
		return fmt.Errorf("submitter: %d ops in one chain (most %d)", len(ops), maxChainOps)
	}
	// Drain feedback first, so that the completer never finds the
	// feedback channel full while this Submit waits for ring capacity.
	s.bufferFeedback()
	f.id = s.nextID
	s.nextID++
	for i := range ops {
		ops[i].Token = tokenOf(f.id, i)
	}
	f.left = len(ops)
	if s.regSink != nil {
		// An inline commit is the submitter and the only reaper: a
		// Submit that waited for ring capacity would wait for itself.
		s.regSink.makeRoom(len(ops))
	}
	f.start = s.env.ioTime()
	s.ch.ioMu.Lock()
	defer s.ch.ioMu.Unlock()
	if err := ctx.Err(); err != nil {
		// The completer may have stopped: nothing may go in flight.
		return fmt.Errorf("submitter: stopping: %w: %w", err, errNotPerformed)
	}
	stagetrace.Mark(stagetrace.Submitting)
	if err := s.env.Ring.Submit(ops); err != nil {
		return fmt.Errorf("submitter: submit: %w", err)
	}
	stagetrace.Mark(stagetrace.Submitted)
	// Registration follows the submission: the completer waits for it
	// when it meets the flight's first completion. The channel has room
	// for every flight the ring can hold. An idle completer waits for a
	// kick, not in the ring (see Completer.Run).
	if s.regSink != nil {
		s.regSink.register(f)
		return nil
	}
	s.ch.registers <- f
	kick(s.ch.compKick)
	return nil
}

// do is the route of the submitter's own Doer (the WAL's): submit and wait
// for the completer's answer.
func (s *Submitter) do(ctx context.Context, ops []ring.Op) ([]ring.Completion, error) {
	reply := make(chan IOResult, 1)
	f := &flight{kind: kindIO, reply: reply, comps: make([]ring.Completion, len(ops))}
	inline := s.regSink // the caller is the ring's reaper: nobody else answers
	if err := s.submit(ctx, f, slices.Clone(ops)); err != nil {
		if errors.Is(err, errNotPerformed) {
			s.doer.orphan(ops, nil) // Stop performs its closes
		}
		return nil, err
	}
	if inline != nil {
		inline.reapUntil(reply)
	}
	select {
	case r := <-reply:
		for i := range r.Completions {
			r.Completions[i].Token = ops[i].Token
		}
		return r.Completions, r.Err
	case <-ctx.Done():
		// The completer answers after all (it drains what is in flight
		// before it stops): Stop settles what the answer leaves open.
		s.doer.orphan(ops, reply)
		return nil, ctx.Err()
	}
}

func (s *Submitter) bufferFeedback() {
	for {
		select {
		case fb := <-s.ch.feedback:
			s.fbBuf = append(s.fbBuf, fb)
		default:
			return
		}
	}
}

// control handles a request from the sealer, the promoter or the engine.
func (s *Submitter) control(ctx context.Context, m SubmitterMsg) error {
	switch m := m.(type) {
	case SubmitIO:
		f := &flight{kind: kindIO, reply: m.Reply, comps: make([]ring.Completion, len(m.Ops))}
		if err := s.submit(ctx, f, slices.Clone(m.Ops)); err != nil {
			m.Reply <- IOResult{Err: err}
			if errors.Is(err, ring.ErrClosed) {
				return err
			}
		}
	case InstallSegment:
		sp := s.space(m.Space)
		sp.install = &m
		if !sp.busy {
			s.install(sp)
		}
	case SegmentStatus:
		var r SegmentStatusReply
		if sp := s.spaces[m.Space]; sp != nil {
			if sp.seg != nil {
				r.Records = sp.seg.Records()
			}
			r.Staged = len(sp.staged)
		}
		m.Reply <- r
	case PromoteTick:
		s.promote = m.Max
		before := s.promote
		if err := s.dispatch(ctx); err != nil {
			return err
		}
		s.retryRetire()
		m.Reply <- before - s.promote
		s.promote = 0
	case ReplaceFailed:
		// A flusher waits for every staged record to be promoted, and
		// then for a seal, which needs the replacement too. Its segment
		// may be usable and yet full (promotion then waits for the
		// replacement): it gets the disk's error either way.
		if sp := s.spaces[m.Space]; sp != nil {
			s.failFlushers(sp, m.Err)
		} else {
			if s.noGen == nil {
				s.noGen = make(map[messages.SpaceID]error)
			}
			s.noGen[m.Space] = m.Err
		}
	case PromoteSpace:
		sp := s.spaces[m.Space]
		if sp == nil || len(sp.staged) == 0 {
			m.Reply <- nil
			break
		}
		sp.flushers = append(sp.flushers, m.Reply)
	}
	return nil
}

// install makes sp.install's segment the active one and hands the old one
// to the sealer. REQUIRES: !sp.busy.
func (s *Submitter) install(sp *spaceState) {
	m := sp.install
	sp.install = nil
	old := sp.seg
	if old != nil {
		if err := old.Freeze(); err != nil && !errors.Is(err, hot.ErrClosed) {
			s.lg.Warn("freeze segment", zap.Uint32("space", uint32(sp.info.ID)), zap.Error(err))
		}
	}
	if old != nil {
		// The new generation's first batch names where this one's
		// durable batches end, so that recovery holds a frozen
		// generation to exactly that end (only the active one may end
		// torn). No batch of either is in flight (REQUIRES !sp.busy).
		m.Seg.Follow(old)
	}
	sp.seg = m.Seg
	sp.dueAt = time.Time{}
	if sp.slow && old != nil && old.Err() != nil {
		// A failed file's replacement starts fast.
		sp.slow, sp.fast = false, 0
		s.lg.Info("space routed to its hot segment again", zap.Uint32("space", uint32(sp.info.ID)),
			zap.String("reason", "new generation after an I/O error"))
	}
	m.Reply <- old
}

// checkSeal hints a seal of sp's active generation once it holds
// SealThreshold records or SealBytes, or fills a hot file (one recovered
// after a Start with a lower Preallocate can hold more than that).
func (s *Submitter) checkSeal(sp *spaceState) {
	if sp.seg == nil {
		return
	}
	size, full := sp.seg.Size(), s.env.Cfg.Hot.SegmentSize
	if sp.seg.Records() >= s.env.Cfg.SealThreshold || size >= s.env.Cfg.SealBytes || (full > 0 && size >= full) {
		s.sealDue(sp)
	}
}

// sealDue hints the sealer that sp's active segment should be replaced
// and sealed. The hint is sent again every sealHintResend until the
// segment is replaced (install clears dueAt): a sealer that took it and
// then failed, or postponed it because the disk was full, forgets it.
func (s *Submitter) sealDue(sp *spaceState) {
	if sp.install != nil || sp.seg == nil {
		return
	}
	now := s.env.now()
	if !sp.dueAt.IsZero() && now.Sub(sp.dueAt) < sealHintResend {
		return
	}
	select {
	case s.ch.SealDue <- SealHint{Space: sp.info.ID, Gen: sp.seg.Gen().Gen}:
		sp.dueAt = now
	default: // re-sent at the next batch or promotion tick
	}
}

// drainFeedback handles every buffered feedback message.
func (s *Submitter) drainFeedback() error {
	for len(s.fbBuf) > 0 {
		fb := s.fbBuf[0]
		s.fbBuf = s.fbBuf[1:]
		if err := s.handleFeedback(fb); err != nil {
			return err
		}
	}
	s.fbBuf = s.fbBuf[:0]
	return nil
}

func (s *Submitter) handleFeedback(fb feedback) error {
	s.pubSeq = max(s.pubSeq, fb.pubSeq)
	for _, g := range fb.done {
		delete(s.outstanding, g)
	}
	f := fb.f
	switch {
	case fb.kind == fbReroute:
		s.atRisk -= f.atRisk
		f.atRisk = 0
		sp := s.spaces[f.space]
		s.markSlow(sp, zap.Duration("deadline", s.env.Cfg.DirectWriteTimeout))
		s.walHeld = append(s.walHeld, f.groups...)
		return nil
	case f.kind == kindWAL:
		s.walBusy = false
		s.walInflight = 0
		if fb.err != nil {
			s.wal.Failed(f.wal, fb.err)
			s.walErr = fb.err
			if diskFull(fb.err) {
				return nil // the writers have it; a new segment is tried next
			}
			return fmt.Errorf("submitter: staging WAL batch of %d records: %w", f.wal.Count, fb.err)
		}
		if err := s.wal.Committed(f.wal); err != nil {
			return fmt.Errorf("submitter: %w", err)
		}
		s.stage(fb.stage)
		// Its records whose hot copy landed first were never staged:
		// the segment may be all promoted already.
		s.retireWAL()
		return nil
	case f.kind == kindHot || f.kind == kindPromote:
		s.atRisk -= f.atRisk
		f.atRisk = 0
		sp := s.spaces[f.space]
		sp.busy = false
		if fb.err != nil && errors.Is(fb.err, syscall.ECANCELED) {
			s.markSlow(sp, zap.String("reason", "deadline cancelled a batch"))
			if (f.kind == kindHot || f.kind == kindPromote) && !f.retry && s.retryHot(sp, f) {
				return nil
			}
			// Stopping: the file takes no more batches (the frame
			// rule: this one's fate is unknown); the sealer replaces it.
			sp.seg.Failed(f.hot, fb.err)
			s.sealDue(sp)
			return nil
		}
		if fb.err != nil {
			sp.seg.Failed(f.hot, fb.err)
			if f.kind == kindPromote {
				s.failFlushers(sp, fb.err)
			}
			s.lg.Error("hot segment failed", zap.Uint32("space", uint32(f.space)), zap.Uint64("gen", f.gen), zap.Error(fb.err))
			s.markSlow(sp, zap.String("reason", "I/O error"))
			s.sealDue(sp) // the sealer replaces the failed generation
			if diskFull(fb.err) {
				return nil // reported to the writers; not a disk failure
			}
			return fmt.Errorf("submitter: space %d generation %d: %w", f.space, f.gen, fb.err)
		}
		before := sp.seg.Records()
		if err := sp.seg.Committed(f.hot); err != nil {
			return fmt.Errorf("submitter: %w", err)
		}
		// What the batch added to the generation, a promotion's included
		// (it was left out: UnsealedRecords read 21 with 220 unsealed,
		// and 0 once a seal subtracted the whole generation).
		s.env.Metrics.Unsealed.Add(int64(sp.seg.Records() - before))
		if f.kind == kindPromote {
			s.promoted(sp, f.recs)
			s.observeSync(sp, fb.syncDur)
			s.retireWAL()
		} else {
			if f.rerouted {
				// A late copy: its records are in this generation now.
				// Those whose staged copy was durable first are staged;
				// they must not be promoted again, into a later
				// generation once this one is sealed (the record would
				// be in two blocks). Their promotion is done. (A staged
				// copy still in flight is not staged: the completer
				// stages only groups whose hot copy has not landed.)
				var recs []messages.Record
				for _, g := range f.groups {
					recs = append(recs, g.recs...)
				}
				s.promoted(sp, recs)
				s.retireWAL()
			} else if !f.retry {
				s.noteSettled(sp, len(f.groups[0].writes), fb.syncDur)
			}
			s.retryRetire() // no promotion may come to do it
		}
		s.checkSeal(sp)
	}
	return nil
}

// markSlow routes sp's writes to the staging WAL until its hot file shows
// fast syncs again, and logs the change once (why says what caused it).
func (s *Submitter) markSlow(sp *spaceState, why zap.Field) {
	if sp.slow {
		return
	}
	sp.slow, sp.fast = true, 0
	s.lg.Info("space routed to the staging WAL", zap.Uint32("space", uint32(sp.info.ID)), why)
}

// retryHot performs a hot batch (or a promotion) again that a missed
// deadline cancelled, and reports whether it was submitted.
//
// A cancelled op is one that had not started: a deadline cancels only
// work still queued (as io_uring's LINK_TIMEOUT does, and sim's Queued
// fault; the uring backend's deadlines only give notice), and a running
// DSync write completes late. The batch's write
// being ECANCELED therefore means that it never ran: nothing failed on the
// disk and no sync ran. No fsync error was reported, so the rule never to
// retry a failed fsync on the same file does not apply, and writing the
// same bytes at the same offset again is harmless. So the batch is
// performed again, without a deadline, and the file stays in use; the
// space stays busy meanwhile (one batch in flight per file: the frame
// rule). The writers were rerouted to the staging WAL when the deadline
// passed and are acknowledged from whichever copy is durable first.
// Before, a cancelled batch failed its file and cost a seal each time.
func (s *Submitter) retryHot(sp *spaceState, f *flight) bool {
	if s.runCtx == nil || s.runCtx.Err() != nil {
		return false // Settle after Run: nothing may be submitted
	}
	r := &flight{kind: f.kind, space: f.space, gen: f.gen, hot: f.hot, groups: f.groups, recs: f.recs, retry: true,
		rerouted: true} // its groups went to the WAL (or it was a promotion): no second reroute
	if err := s.submit(s.runCtx, r, f.hot.Ops()); err != nil {
		return false
	}
	sp.busy = true
	return true
}

// stagingLoad is how many records are staged, on their way to the staging
// WAL, or in direct batches a missed deadline would send there: what
// maxStaged bounds.
func (s *Submitter) stagingLoad() int {
	n := s.staged + s.walInflight + s.atRisk
	for _, g := range s.walHeld {
		n += len(g.recs)
	}
	return n
}

// stage adds records durable only in the WAL to their spaces' staged
// lists.
func (s *Submitter) stage(recs []messages.Record) {
	if len(recs) == 0 {
		return
	}
	for _, r := range recs {
		sp := s.spaces[r.Space]
		sp.staged = append(sp.staged, r)
		if n := len(sp.staged); n > 1 && sp.staged[n-2].Revision > r.Revision {
			slices.SortFunc(sp.staged, byRevision)
		}
	}
	s.staged += len(recs)
	s.env.Metrics.StagedPending.Add(int64(len(recs)))
	kick(s.ch.promKick)
}

// observeSync applies routing hysteresis after a sync of sp's hot file.
func (s *Submitter) observeSync(sp *spaceState, d time.Duration) {
	if !sp.slow {
		return
	}
	if d < s.env.Cfg.DirectWriteTimeout/2 {
		sp.fast++
	} else {
		sp.fast = 0
	}
	if sp.fast >= fastSyncsToRecover {
		sp.slow, sp.fast = false, 0
		s.lg.Info("space routed to its hot segment again", zap.Uint32("space", uint32(sp.info.ID)),
			zap.Int("fast_syncs", fastSyncsToRecover))
	}
}

// retireWAL deletes the WAL segments whose staged records are all
// promoted.
func (s *Submitter) retireWAL() {
	if s.walBusy {
		return // a failed retirement stays pending: tried again later
	}
	s.setRetireFailed(false)
	if s.walErr != nil {
		// A WAL that met a full disk is reopened by the next staged
		// write; with none coming, its promoted segments stayed until
		// then (files audit in ci6 at 1fb3e8b: 14 segments kept after
		// space returned, 1 after a restart). Reopen it here, and while
		// the disk is still full try again after retireRetry.
		if !diskFull(s.walErr) {
			return
		}
		if err := s.reopenWAL(); err != nil {
			s.lg.Warn("reopen the staging WAL to retire its segments", zap.Error(err))
			s.setRetireFailed(true)
			return
		}
	}
	// The cheap test first: this runs after every staged batch, and
	// most of the time only the active segment exists.
	oldest, ok := s.wal.Oldest()
	if !ok || oldest > s.walMax {
		return
	}
	mark := s.walMax
	for _, sp := range s.spaces {
		if len(sp.staged) > 0 {
			mark = min(mark, sp.staged[0].Revision-1)
		}
	}
	if oldest > mark {
		return
	}
	retired, err := s.wal.Retire(mark)
	s.setRetireFailed(err != nil)
	if err != nil {
		s.lg.Warn("retire staging WAL segments", zap.Error(err))
		return
	}
	if len(retired) > 0 {
		s.lg.Debug("staging WAL segments retired", zap.Uint64s("seqs", retired))
	}
}

// setRetireFailed records whether the last retirement failed, for the
// promoter, which ticks while one waits to be tried again.
func (s *Submitter) setRetireFailed(failed bool) {
	s.retireFailed = failed
	s.env.Metrics.RetirePending.Store(failed)
	if failed {
		s.retryAt = s.env.now().Add(retireRetry)
		kick(s.ch.promKick)
	}
}

// retryRetire tries a failed retirement again once retireRetry has passed
// (a persistent unlink failure would otherwise log at every tick).
func (s *Submitter) retryRetire() {
	if s.retireFailed && !s.env.now().Before(s.retryAt) {
		s.retireWAL()
	}
}

// retireRetry paces the retries of a failed staging WAL retirement.
const retireRetry = 100 * time.Millisecond

// checkBarriers answers every Sync whose writes are all decided.
func (s *Submitter) checkBarriers() {
	if len(s.barriers) == 0 {
		return
	}
	low := s.nextRev // lowest revision not yet decided, of every space
	for _, sp := range s.spaces {
		if len(sp.held) > 0 {
			low = min(low, sp.held[0].Record.Revision)
		}
	}
	for g := range s.outstanding {
		low = min(low, g.recs[0].Revision)
	}
	keep := s.barriers[:0]
	for _, b := range s.barriers {
		if b.upto < low {
			s.fence(b.reply)
		} else {
			keep = append(keep, b)
		}
	}
	s.barriers = keep
}

// fence answers a Sync whose writes are all decided (durable or failed)
// through the publisher, once it has acknowledged them (see Fence).
func (s *Submitter) fence(reply chan<- error) {
	m := PublisherMsg(Fence{Seq: s.pubSeq, Reply: reply})
	select {
	case <-s.ch.Failed:
		// The publisher may be gone; the writes are decided.
		reply <- nil
	default:
		select {
		case s.ch.Publisher <- m:
		case <-s.ch.Failed:
			reply <- nil
		}
	}
}

// FailPending completes every write and barrier the submitter holds with
// err. REQUIRES: Run is not running (the engine stopped or failed).
func (s *Submitter) FailPending(err error) {
	for _, sp := range s.spaces {
		for _, w := range sp.held {
			w.Ack.Complete(0, false, err)
		}
		sp.held = nil
		for _, r := range sp.flushers {
			r <- err
		}
		sp.flushers = nil
	}
	s.held = 0
	for _, g := range s.walHeld {
		for _, w := range g.writes {
			w.Ack.Complete(0, false, err)
		}
	}
	s.walHeld = nil
	for _, w := range s.stranded {
		w.Ack.Complete(0, false, err)
	}
	s.stranded = nil
	for _, b := range s.barriers {
		b.reply <- err
	}
	s.barriers = nil
}

// Settle applies the feedback the completer sent after Run returned, so
// that no file still counts a batch in flight when the engine closes it.
// A failed batch's writers got the error from the completer; a failed
// promotion's records are still in the staging WAL, so the error is
// logged (the next Start redoes the promotion; nothing else waits for it).
// REQUIRES: Run and the completer are not running.
func (s *Submitter) Settle() {
	s.bufferFeedback()
	for _, fb := range s.fbBuf {
		if err := s.handleFeedback(fb); err != nil {
			s.lg.Warn("background I/O cut short by Stop failed", zap.Error(err))
		}
	}
	s.fbBuf = s.fbBuf[:0]
}

// Segments returns the active segments. REQUIRES: Run is not running.
func (s *Submitter) Segments() []*hot.Segment {
	var out []*hot.Segment
	for _, sp := range s.spaces {
		if sp.seg != nil {
			out = append(out, sp.seg)
		}
		if sp.install != nil {
			out = append(out, sp.install.Seg)
		}
	}
	return out
}

// WAL returns the staging WAL. REQUIRES: Run is not running.
func (s *Submitter) WAL() *wal.WAL { return s.wal }

// plantedOps drops the sync from a batch (a write's DSync, or an fdatasync
// linked to it) when the harness self-check plants AckBeforeSync
// (testhook); otherwise it returns ops as they are.
func plantedOps(ops []ring.Op) []ring.Op {
	if !testhook.Planted(testhook.AckBeforeSync) {
		return ops
	}
	out := ops[:0:0]
	for _, op := range ops {
		if op.Code != ring.OpFdatasync && op.Code != ring.OpFsync {
			op.DSync = false
			out = append(out, op)
		}
	}
	out[len(out)-1].Link = false
	return out
}
