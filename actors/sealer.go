package actors

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/ringpipe/ringpipe/hot"
	"github.com/ringpipe/ringpipe/internal/testhook"
	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/snapshot"
)

// Sealer owns the manifest and the frozen hot generations. When a space's
// active generation reaches SealThreshold records or SealBytes (the
// submitter's hint), or on Flush, it creates the next generation, has the
// submitter install it, then turns the old one into a block: sort by
// (key, revision), write the block durably, commit it to the manifest,
// show it in the View, and only then retire the generation. It also
// creates spaces.
//
// Invariants (the durability order of DESIGN.md):
//  1. A block is durable before the manifest names it.
//  2. The manifest names it before its generation is retired.
//  3. The View shows it before the generation's records leave the tail
//     (one Sealed notice does both).
type Sealer struct {
	env      *Env
	ch       *Channels
	lg       *zap.Logger
	doer     *Doer // the manifest's and every segment's
	registry *atomic.Pointer[map[messages.SpaceID]messages.SpaceInfo]
	blocks   *snapshot.Cache // opens sealed blocks for readers (SetBlockCache)

	// Owned by Run; kept across restarts.
	man    *snapshot.Manifest
	spaces map[messages.SpaceID]*sealSpace
	// held answers, with heldErr, the request a failed Run was serving;
	// nil when none. Set by the failed Run, used by the next.
	held    func(error)
	heldErr error
	// unnamed are blocks written whose manifest edit failed: once the
	// manifest is recovered without them, nothing can name them, and
	// they are removed (else each failed seal on a full disk left one,
	// taking the room the disk lacked, until the next Start).
	unnamed []snapshot.BlockMeta
}

type sealSpace struct {
	info    messages.SpaceInfo
	active  uint64            // the generation writes go to (or the last one)
	needGen bool              // no active generation: create active+1
	next    *hot.Segment      // created, not yet installed
	waiting chan *hot.Segment // the submitter's answer to an install
	frozen  []*hot.Segment    // older generations, oldest first, to seal
	// postponed: finishLeftovers met a full disk last time (it warns
	// once per spell, not at every try).
	postponed bool
	// sealing is the progress of the seal of frozen[0], so that a sealer
	// restarted halfway neither writes a second block of the same
	// records nor names one twice in the manifest.
	sealing *sealProgress
}

// lacksGen says whether sp (nil: a space the sealer does not hold)
// waits for its first generation.
func (sp *sealSpace) lacksGen() bool { return sp != nil && sp.needGen }

// sealProgress is how far the seal of one generation got.
type sealProgress struct {
	gen  uint64
	meta snapshot.BlockMeta // the block, durable and named in the manifest
}

// NewSealer returns the sealer of manifest man (opened by recovery with d
// as its Doer). registry is the engine's space registry, which the sealer
// replaces when it creates a space.
func NewSealer(env *Env, ch *Channels, d *Doer, man *snapshot.Manifest,
	registry *atomic.Pointer[map[messages.SpaceID]messages.SpaceInfo]) *Sealer {
	env.Metrics.init()
	return &Sealer{env: env, ch: ch, lg: env.Log.Named("sealer"), doer: d, man: man, registry: registry,
		spaces: make(map[messages.SpaceID]*sealSpace)}
}

// AddSpace registers a recovered space: gen is its active generation, or
// when hasActive is false the last generation it had (0 for none), after
// which the sealer creates one at start; frozen are its older, unsealed
// generations. REQUIRES: Run has not started.
func (s *Sealer) AddSpace(info messages.SpaceInfo, gen uint64, hasActive bool, frozen []*hot.Segment) {
	s.spaces[info.ID] = &sealSpace{info: info, active: gen, needGen: !hasActive, frozen: frozen}
}

// Run seals until ctx ends. A request that Run was serving when it failed
// (returned an error, or panicked) is failed with that error by the next
// Run, the restarted sealer, before anything else: its caller hears of the
// failure once the supervisor has handled it. Requests still in the inbox
// wait there for the restarted sealer. Without a restart (the engine
// stops or fails) the engine answers them (ErrStopped, ErrFailed).
func (s *Sealer) Run(ctx context.Context) (err error) {
	if s.held != nil {
		s.held(fmt.Errorf("sealer failed while serving the request (it was restarted): %w", s.heldErr))
		s.held, s.heldErr = nil, nil
	}
	// fail answers the request being served with an error; nil when none
	// is (each request is answered once: by its handler, or through fail).
	var fail func(error)
	defer func() {
		if fail == nil || ctx.Err() != nil {
			return
		}
		s.held, s.heldErr = fail, err
		if err == nil {
			s.heldErr = errPanicked // the supervisor reports the panic itself
		}
	}()
	s.doer.setRoute(viaSubmitter(ctx, s.ch.Submitter, s.doer))
	defer s.doer.setRoute(nil)
	// A full disk is not a failed one (DESIGN.md §5): what it stops here
	// is postponed, as a seal is below, and not a failure of the sealer.
	// Before, a manifest write that met ENOSPC failed the sealer, and
	// each restart met it again in Recover: past the restart limit the
	// engine failed for good, and writes never resumed when space came
	// back (files audit).
	if _, err := s.manifest(); err != nil {
		if !diskFull(err) {
			return err
		}
		s.lg.Warn("manifest recovery postponed: disk full", zap.Error(err))
	}
	postponed, err := s.finishLeftovers(ctx)
	if err != nil {
		return err
	}
	// Nobody hints a space that has no generation: while something is
	// postponed, try again, from sealHintResend apart up to
	// maxPostponedRetry apart, until the disk has room.
	var retry <-chan time.Time
	delay := sealHintResend
	if postponed {
		retry = time.After(delay)
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-retry:
			retry = nil
			if postponed, err = s.finishLeftovers(ctx); err != nil {
				return err
			}
			if postponed {
				delay = min(2*delay, maxPostponedRetry)
				retry = time.After(delay)
			} else {
				delay = sealHintResend
			}
		case h := <-s.ch.SealDue:
			id := h.Space
			sp := s.spaces[id]
			if sp == nil || (sp.next == nil && sp.waiting == nil && h.Gen != sp.active) {
				continue // unknown space, or a stale hint: its generation was replaced
			}
			err := s.rotate(ctx, sp)
			if diskFull(err) {
				// The space's flushers wait for a segment to promote
				// into: they get the error rather than wait for room.
				if err := send(ctx, s.ch.Submitter, SubmitterMsg(ReplaceFailed{Space: id, Err: err})); err != nil {
					return err
				}
			}
			if err == nil {
				err = s.sealFrozen(ctx, sp)
			}
			if diskFull(err) {
				// Not a failed disk: the seal is retried at the next
				// hint (the submitter sends it again while the
				// generation stays active), and writes go on meanwhile.
				s.lg.Warn("seal postponed: disk full", zap.Uint32("space", uint32(id)), zap.Error(err))
				if retry == nil {
					// A generation rotated but not sealed is not
					// hinted again (hints name the active one).
					retry = time.After(delay)
				}
				continue
			}
			if err != nil {
				return err
			}
		case m := <-s.ch.Sealer:
			switch m := m.(type) {
			case CreateSpace:
				fail = func(err error) { m.Reply <- CreateSpaceReply{Err: err} }
				id, err := s.createSpace(ctx, m.Spec)
				fail = nil
				m.Reply <- CreateSpaceReply{ID: id, Err: err}
				if err != nil && s.man.Err() != nil && !diskFull(err) {
					return err
				}
				if diskFull(err) && retry == nil {
					// A space created without its first generation
					// (finishCreate): made once there is room.
					retry = time.After(delay)
				}
			case Flush:
				fail = func(err error) { m.Reply <- err }
				err := s.flush(ctx, m.Space)
				fail = nil
				m.Reply <- err
				if err != nil && ctx.Err() == nil && s.man.Err() != nil && !diskFull(err) {
					return err
				}
				if diskFull(err) && retry == nil {
					// The generation the Flush froze is sealed once
					// there is room, without another Flush (review
					// audit: it stayed in hot/ until the next one).
					retry = time.After(delay)
				}
			}
		}
	}
}

// maxPostponedRetry bounds the wait between two tries of work a full disk
// postponed (see Run).
const maxPostponedRetry = time.Second

// finishLeftovers finishes what recovery or a failed run left: spaces
// without an active generation, installs in progress, frozen generations.
// What a full disk stops is postponed (postponed reports it), not failed.
func (s *Sealer) finishLeftovers(ctx context.Context) (postponed bool, err error) {
	for id, sp := range s.spaces {
		if sp.needGen || sp.next != nil || sp.waiting != nil {
			if err := s.rotate(ctx, sp); diskFull(err) {
				if !sp.postponed {
					s.lg.Warn("new generation postponed: disk full", zap.Uint32("space", uint32(id)), zap.Error(err))
				}
				sp.postponed, postponed = true, true
				// Its flushers get the disk's error rather than wait.
				if err := send(ctx, s.ch.Submitter, SubmitterMsg(ReplaceFailed{Space: id, Err: err})); err != nil {
					return postponed, err
				}
				continue
			} else if err != nil {
				return postponed, err
			}
		}
		if err := s.sealFrozen(ctx, sp); diskFull(err) {
			if !sp.postponed {
				s.lg.Warn("seal postponed: disk full", zap.Uint32("space", uint32(id)), zap.Error(err))
			}
			sp.postponed, postponed = true, true
		} else if err != nil {
			return postponed, err
		} else {
			sp.postponed = false
		}
	}
	return postponed, nil
}

// createSpace creates spec's space durably, or finds it.
func (s *Sealer) createSpace(ctx context.Context, spec messages.SpaceSpec) (messages.SpaceID, error) {
	if err := spec.Validate(); err != nil {
		return 0, fmt.Errorf("create space: %w", err)
	}
	man, err := s.manifest()
	if err != nil {
		return 0, fmt.Errorf("create space %q: %w", spec.Name, err)
	}
	st := man.State()
	if info, ok := st.SpaceByName(spec.Name); ok {
		if info.SpaceSpec != spec {
			return 0, messages.SpaceExistsError(spec.Name, info.ID, info.SpaceSpec, spec)
		}
		if _, served := (*s.registry.Load())[info.ID]; served && !s.spaces[info.ID].lacksGen() {
			return info.ID, nil
		}
		// A failed earlier attempt: the manifest holds the space, the
		// engine does not serve it yet. Finish it.
		sp := s.spaces[info.ID]
		if sp == nil {
			sp = &sealSpace{info: info, needGen: true}
			s.spaces[info.ID] = sp
		}
		return info.ID, s.finishCreate(ctx, sp)
	}
	id := st.NextSpaceID()
	if _, err := man.Apply(snapshot.SpaceCreated{ID: id, Spec: spec}); err != nil {
		return 0, fmt.Errorf("create space %q: %w", spec.Name, err)
	}
	sp := &sealSpace{info: messages.SpaceInfo{ID: id, SpaceSpec: spec}, needGen: true}
	s.spaces[id] = sp
	return id, s.finishCreate(ctx, sp)
}

// finishCreate serves a space the manifest holds: the publisher's View
// gets it, its first generation is created and installed, and only then
// the registry (which Put checks) names it. Each step may be done again
// by a retried CreateSpace after a failure (AddSpace and rotate are
// idempotent for a space already added or a generation already made).
func (s *Sealer) finishCreate(ctx context.Context, sp *sealSpace) error {
	info := sp.info
	reply := make(chan error, 1)
	if err := send(ctx, s.ch.Publisher, PublisherMsg(AddSpace{Info: info, Keyer: Keyer(info.SpaceSpec), Reply: reply})); err != nil {
		return err
	}
	if err := recv(ctx, reply); err != nil {
		return fmt.Errorf("create space %q: %w", info.Name, err)
	}
	if sp.needGen {
		if err := s.rotate(ctx, sp); err != nil {
			if diskFull(err) {
				// Its writers get the disk's error (not only "no hot
				// segment") until the file comes.
				if serr := send(ctx, s.ch.Submitter, SubmitterMsg(ReplaceFailed{Space: info.ID, Err: err})); serr != nil {
					return serr
				}
				// The space is durable in the manifest: it exists, and
				// Spaces() says so, the name is taken by it, and a
				// restart shows it. Writes to it fail until its first
				// generation is made, which the sealer tries again
				// while the disk is full (finishLeftovers). Before, it
				// was half there: Spaces() omitted it while another spec
				// got ErrSpaceExists and a restart showed it (env audit).
				s.register(info)
			}
			return fmt.Errorf("create space %q: %w", info.Name, err)
		}
	}
	s.register(info)
	return nil
}

// register makes info's space known to the engine's API (the registry
// that Put and Spaces read), once.
func (s *Sealer) register(info messages.SpaceInfo) {
	if _, ok := (*s.registry.Load())[info.ID]; ok {
		return
	}
	reg := maps.Clone(*s.registry.Load())
	reg[info.ID] = info
	s.registry.Store(&reg)
	s.lg.Info("space created", zap.Uint32("space", uint32(info.ID)), zap.String("name", info.Name),
		zap.Int("dims", info.Dims), zap.Int("bits", info.Bits))
}

// flush seals the space's active generation when it holds records.
func (s *Sealer) flush(ctx context.Context, id messages.SpaceID) error {
	sp := s.spaces[id]
	if sp == nil {
		return fmt.Errorf("flush space %d: unknown space", id)
	}
	reply := make(chan SegmentStatusReply, 1)
	if err := send(ctx, s.ch.Submitter, SubmitterMsg(SegmentStatus{Space: id, Reply: reply})); err != nil {
		return err
	}
	var st SegmentStatusReply
	select {
	case st = <-reply:
	case <-ctx.Done():
		return ctx.Err()
	}
	if st.Records > 0 {
		if err := s.rotate(ctx, sp); err != nil {
			return err
		}
	}
	return s.sealFrozen(ctx, sp)
}

// rotate creates sp's next generation and has the submitter install it;
// the old active generation joins sp.frozen. Each step is kept in sp, so
// a restarted sealer continues where a failed one stopped.
func (s *Sealer) rotate(ctx context.Context, sp *sealSpace) error {
	if sp.waiting == nil {
		if sp.next == nil {
			g := hot.Gen{Space: sp.info.ID, Gen: sp.active + 1}
			seg, err := hot.Create(s.doer, s.env.Cfg.Hot, g)
			if err != nil {
				return fmt.Errorf("sealer: create %s: %w", g.FileName(), err)
			}
			sp.next = seg
		}
		reply := make(chan *hot.Segment, 1)
		if err := send(ctx, s.ch.Submitter, SubmitterMsg(InstallSegment{Space: sp.info, Seg: sp.next, Reply: reply})); err != nil {
			return err
		}
		sp.waiting = reply
	}
	var old *hot.Segment
	select {
	case old = <-sp.waiting:
	case <-ctx.Done():
		return ctx.Err()
	}
	sp.active = sp.next.Gen().Gen
	sp.next, sp.waiting, sp.needGen = nil, nil, false
	if old != nil {
		sp.frozen = append(sp.frozen, old)
	}
	return nil
}

// sealFrozen seals sp's frozen generations, oldest first.
func (s *Sealer) sealFrozen(ctx context.Context, sp *sealSpace) error {
	for len(sp.frozen) > 0 {
		if err := s.seal(ctx, sp, sp.frozen[0]); err != nil {
			return fmt.Errorf("seal space %d generation %d: %w", sp.info.ID, sp.frozen[0].Gen().Gen, err)
		}
		sp.frozen = sp.frozen[1:]
	}
	return nil
}

// seal turns one frozen generation into a block (invariants 1-3).
func (s *Sealer) seal(ctx context.Context, sp *sealSpace, seg *hot.Segment) error {
	g := seg.Gen()
	n := seg.Records()
	if n == 0 {
		return s.retire(seg)
	}
	if err := testhook.Chaos("sealer", "seal"); err != nil {
		return err
	}
	if sp.sealing == nil || sp.sealing.gen != g.Gen {
		meta, err := s.writeBlock(sp, seg)
		if err != nil {
			return err
		}
		sp.sealing = &sealProgress{gen: g.Gen, meta: meta}
	}
	meta := sp.sealing.meta
	if err := testhook.Chaos("sealer", "named"); err != nil {
		return err
	}
	blk, err := s.blocks.OpenBlockFor(s.env.Cfg.Dir, meta)
	if err != nil {
		return err
	}
	// The tail ignores a second notice for a sealed generation, so a
	// sealer restarted after sending it may send it again.
	reply := make(chan error, 1)
	if err := send(ctx, s.ch.Publisher, PublisherMsg(Sealed{Space: g.Space, Gen: g.Gen, Block: Block(blk), Reply: reply})); err != nil {
		return err
	}
	if err := recv(ctx, reply); err != nil {
		return err
	}
	if err := testhook.Chaos("sealer", "shown"); err != nil {
		return err
	}
	if err := s.retire(seg); err != nil {
		return err
	}
	sp.sealing = nil
	s.env.Metrics.SealedBlocks.Add(1)
	s.env.Metrics.Unsealed.Add(-int64(n))
	s.lg.Info("sealed", zap.Uint32("space", uint32(g.Space)), zap.Uint64("gen", g.Gen),
		zap.Uint64("block", meta.ID), zap.Int("records", n), zap.Int64("bytes", meta.Size))
	if s.man.NeedsCompaction() {
		if err := s.man.Compact(); err != nil {
			return fmt.Errorf("compact the manifest: %w", err)
		}
	}
	return nil
}

// retire retires seg's generation; a close that failed once the file was
// gone is logged, not failed (hot.CloseWarning: nothing is lost).
func (s *Sealer) retire(seg *hot.Segment) error {
	err := seg.Retire()
	var w *hot.CloseWarning
	if errors.As(err, &w) {
		g := seg.Gen()
		s.lg.Warn("retired a sealed generation whose file did not close cleanly",
			zap.Uint32("space", uint32(g.Space)), zap.Uint64("gen", g.Gen), zap.Error(w.Err))
		return nil
	}
	return err
}

// writeBlock writes seg's records as a block durably and names it in the
// manifest with the generation's seal (invariant 1).
func (s *Sealer) writeBlock(sp *sealSpace, seg *hot.Segment) (snapshot.BlockMeta, error) {
	g := seg.Gen()
	man, err := s.manifest()
	if err != nil {
		return snapshot.BlockMeta{}, err
	}
	st := man.State()
	if sealed, _ := st.SealedGen(g.Space); g.Gen <= sealed {
		// The manifest already seals it: the seal's edit was durable
		// before a failure that kept the sealer from noting it (or
		// recovery found it there): generations seal oldest first, so
		// the space's newest block is this one's.
		if bs := st.Index(g.Space).Blocks(); g.Gen == sealed && len(bs) > 0 {
			return bs[0], nil
		}
		return snapshot.BlockMeta{}, fmt.Errorf("generation %d is sealed in the manifest (up to %d) but its block is not found", g.Gen, sealed)
	}
	recs := make([]messages.Record, 0, seg.Records())
	if err := seg.ReadRecords(func(_ int64, r messages.Record) error {
		recs = append(recs, r)
		return nil
	}); err != nil {
		return snapshot.BlockMeta{}, err
	}
	entries, err := snapshot.Entries(sp.info.SpaceSpec, recs)
	if err != nil {
		return snapshot.BlockMeta{}, err
	}
	id := st.NextBlockID()
	meta, err := snapshot.WriteBlockDirect(s.doer, s.env.Cfg.Dir, g.Space, id, g.Gen, entries, s.env.Cfg.Hot.Direct)
	if err != nil {
		return snapshot.BlockMeta{}, err
	}
	_, hi := seg.RevRange()
	if _, err := man.Apply(snapshot.BlockAdded{Meta: meta}, snapshot.GenSealed{Space: g.Space, Gen: g.Gen, MaxRev: hi}); err != nil {
		s.unnamed = append(s.unnamed, meta)
		return snapshot.BlockMeta{}, err
	}
	return meta, nil
}

// errPanicked is the cause a request gets when the sealer panicked while
// serving it.
var errPanicked = errors.New("panic")

// manifest returns the manifest, ready for edits. One that failed (an
// append or sync whose outcome is unknown) is first rolled into a new file
// holding the state from before the failure (snapshot.Manifest.Recover):
// the failed file is never written or synced again, and a seal whose edit
// failed is redone in full (its block written again) from that state.
func (s *Sealer) manifest() (*snapshot.Manifest, error) {
	if cause := s.man.Err(); cause != nil {
		if err := s.man.Recover(); err != nil {
			return nil, fmt.Errorf("sealer: recover the manifest: %w", err)
		}
		s.lg.Warn("manifest rolled into a new file after a failed write", zap.NamedError("failed", cause))
	}
	if s.man.Err() == nil && len(s.unnamed) > 0 {
		s.removeUnnamed()
	}
	return s.man, nil
}

// removeUnnamed removes the blocks whose edit failed and that the live
// manifest does not name (a failed edit is not in its state; CURRENT no
// longer names the file it may have reached). Best effort: what stays is
// an orphan that RemoveOrphans deletes at the next Start.
func (s *Sealer) removeUnnamed() {
	st := s.man.State()
	for _, meta := range s.unnamed {
		named := false
		for _, b := range st.Index(meta.Space).Blocks() {
			if b.ID == meta.ID {
				named = true
				break
			}
		}
		if named {
			continue // a later seal wrote a block of the same ID
		}
		if err := ring.Unlink(s.doer, snapshot.BlockPath(s.env.Cfg.Dir, meta.Space, meta.ID)); err != nil && !errors.Is(err, syscall.ENOENT) {
			s.lg.Warn("remove a block whose manifest edit failed", zap.Uint32("space", uint32(meta.Space)),
				zap.Uint64("block", meta.ID), zap.Error(err))
		}
	}
	s.unnamed = nil
}

// Manifest returns the manifest. REQUIRES: Run is not running.
func (s *Sealer) Manifest() *snapshot.Manifest { return s.man }

// Frozen returns every segment the sealer holds, for closing at stop,
// with those of an install that Stop cut short: when the submitter
// installed the new generation, the generation it replaced (its answer,
// which the sealer did not read); when it did not (the request drained
// from its inbox), the new one.
// REQUIRES: Run and the submitter are not running, and the submitter's
// inbox is drained (DrainSubmitter).
func (s *Sealer) Frozen() []*hot.Segment {
	var out []*hot.Segment
	for _, sp := range s.spaces {
		out = append(out, sp.frozen...)
		if sp.next == nil {
			continue
		}
		if sp.waiting == nil {
			out = append(out, sp.next)
			continue
		}
		select {
		case old := <-sp.waiting: // installed: the submitter holds sp.next
			sp.active = sp.next.Gen().Gen
			sp.next, sp.waiting, sp.needGen = nil, nil, false
			if old != nil {
				sp.frozen = append(sp.frozen, old)
				out = append(out, old)
			}
		default: // never installed: nobody else holds it
			out = append(out, sp.next)
		}
	}
	return out
}

// send sends m on c unless ctx ends first.
func send[T any](ctx context.Context, c chan<- T, m T) error {
	select {
	case c <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// recv waits for a reply unless ctx ends first.
func recv(ctx context.Context, c <-chan error) error {
	select {
	case err := <-c:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
