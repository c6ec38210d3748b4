package actors

import (
	"context"
	"errors"
	"fmt"
	"go.uber.org/zap"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/ringpipe/ringpipe/internal/stagetrace"
	"github.com/ringpipe/ringpipe/internal/testhook"
	"github.com/ringpipe/ringpipe/livetail"
	"github.com/ringpipe/ringpipe/ring"
)

// Completer reaps the ring: it matches each completion to its flight,
// decides when a group of writes is durable (from its hot copy or its
// staged copy, whichever is first) or failed, hands those decisions to the
// publisher (which acknowledges after publishing), turns a missed deadline
// into a reroute request to the submitter, answers the sealer's and
// promoter's I/O, and reports every settled flight back to the submitter.
//
// Invariants:
//  1. The holder of turn (Run, or an inline commit while Run waits idle)
//     is the ring's only reaper.
//  2. A flight is in table from its registration until its last final
//     completion; Run returns only when table is empty (the kernel may
//     still own buffers of a flight in it).
//  3. Each group is decided once: acknowledged or failed.
//  4. It never blocks on the submitter (Channels.feedback is sized for
//     every chain that can be in flight).
type Completer struct {
	env *Env
	ch  *Channels
	lg  *zap.Logger

	// Owned by Run; kept across restarts.
	table   map[uint64]*flight
	groups  map[*group]*groupState
	buf     []ring.Completion
	ringErr error        // the ring died: every later flight fails with it
	wakes   atomic.Int32 // wake-up nops submitted and not yet reaped
	maxID   uint64       // the highest flight id registered
	// reroutes counts the hot batches sent to the staging WAL (a missed
	// deadline, or a cancelled write): an inline commit stops reaping at
	// one (see Inline.reap).
	reroutes uint64
	// stranded are the messages publish could not deliver because the
	// engine had failed; FailPending hands them on.
	stranded []PublisherMsg

	// turn is held by whoever acts as the completer: Run, except while
	// it waits idle (nothing in flight), and an inline commit (see
	// Inline). Every field above except wakes is owned by its holder.
	turn    sync.Mutex
	running bool // Run is running (under turn)
	runCtx  context.Context
	// sink, set by an inline commit, collects the feedback and publisher
	// messages that settling produces, which the commit delivers itself.
	sink *inlineSink
	// seq numbers the settlements that publish (see Fence).
	seq uint64
}

// inlineSink is what an inline commit's reaping produced for the
// submitter and the publisher.
type inlineSink struct {
	fb  []feedback
	pub []PublisherMsg
}

type groupState struct {
	copies  int  // registered flights carrying the group not yet settled
	decided bool // acknowledged or failed
	hotOK   bool // its hot copy is durable
	waiting bool // its hot copy was rerouted: a staged copy will come
	// walSeen: its staged copy's flight has registered. A waiting group
	// decided by its hot copy before then keeps its state until it does,
	// so that the staged copy's settlement sees hotOK and does not stage
	// records already in their generation (they would be promoted into a
	// later one too, and counted as staged twice).
	walSeen bool
	// stagedFailed: its staged copy failed while a hot copy was still in
	// flight, which decides the group alone now.
	stagedFailed bool
}

// NewCompleter returns the completer.
func NewCompleter(env *Env, ch *Channels) *Completer {
	return &Completer{env: env, ch: ch, lg: env.Log.Named("completer"),
		table: make(map[uint64]*flight), groups: make(map[*group]*groupState),
		buf: make([]ring.Completion, 128)}
}

// wakeToken is the token of the nop that wakes a Reap when ctx ends; flight
// id 0 is never used.
const wakeToken = 0

// Run reaps until ctx ends and nothing is in flight.
func (c *Completer) Run(ctx context.Context) error {
	c.turn.Lock()
	c.running, c.runCtx = true, ctx
	defer func() {
		c.running = false
		c.turn.Unlock()
	}()
	woke := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(woke)
		// A closed or dead ring wakes Reap by itself.
		if c.env.Ring.Submit([]ring.Op{{Code: ring.OpNop, Token: wakeToken}}) == nil {
			c.wakes.Add(1)
		}
	})
	defer func() {
		if !stop() {
			<-woke
		}
	}()
	for {
		c.drainRegistrations()
		if ctx.Err() != nil {
			idle, busy := c.idle()
			if busy && len(c.table) == 0 {
				// Its submission goes in flight, or fails, at once.
				runtime.Gosched()
				continue
			}
			if idle {
				// Reap the wake-up nop too: nothing of ours may be
				// left in the ring for whoever reaps it next.
				<-woke
				if c.wakes.Load() == 0 {
					return ctx.Err()
				}
			}
		} else if len(c.table) == 0 {
			// Nothing in flight: wait for a registration's kick here,
			// not in the ring, so that an inline commit can reap its
			// own write (see Inline).
			c.turn.Unlock()
			select {
			case <-c.ch.compKick:
			case <-ctx.Done():
			}
			c.turn.Lock()
			continue
		}
		n, err := c.reapOnce()
		if err == nil && n > 0 {
			if cerr := testhook.Chaos("completer", "reaped"); cerr != nil {
				return cerr
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("completer: reap: %w", err)
		}
	}
}

// ringFailed fails everything in flight with err: the ring is closed or
// died (a simulated crash), and nothing in flight will complete any more.
func (c *Completer) ringFailed(err error) {
	c.ringErr = err
	c.drainRegistrations()
	for _, f := range c.table {
		f.err = err
		f.left = 0
		c.settle(c.runCtx, f)
	}
}

// reapUntil reaps, as the completer, until reply has its answer: the
// submitter's Do when an inline commit doing the submitter's work holds
// the completer's turn (nobody else reaps). REQUIRES: the completer's
// turn.
func (c *Completer) reapUntil(reply <-chan IOResult) {
	for len(reply) == 0 {
		c.drainRegistrations()
		c.reapOnce() //nolint:errcheck // a failed ring answers reply too
	}
}

// makeRoom reaps, as the completer, until the ring has room for n more
// ops: for an inline commit doing the submitter's work, which nobody else
// reaps for. REQUIRES: the completer's turn; the caller holds the
// submitter's turn too (so every flight in the ring is registered).
func (c *Completer) makeRoom(n int) {
	for c.ringErr == nil {
		c.drainRegistrations()
		inflight := int(c.wakes.Load())
		for _, f := range c.table {
			inflight += f.left
		}
		if inflight == 0 || inflight+n <= c.env.Ring.Capacity() {
			return
		}
		c.reapOnce() //nolint:errcheck // a failed ring sets ringErr, which ends the loop
	}
}

// reapOnce waits for completions and handles them, and fails everything
// in flight when the ring fails; it returns how many it reaped and the
// ring's error. REQUIRES: the completer's turn (Run, or an inline
// commit).
func (c *Completer) reapOnce() (int, error) { return c.reapSome(true) }

// reapSome is reapOnce, waiting for a completion or not.
func (c *Completer) reapSome(wait bool) (int, error) {
	reap := c.env.Ring.TryReap
	if wait {
		reap = c.env.Ring.Reap
	}
	n, err := reap(c.buf)
	if n > 0 {
		stagetrace.Mark(stagetrace.Reaped)
	}
	for i := 0; i < n; i++ {
		c.handle(c.runCtx, c.buf[i])
		c.buf[i] = ring.Completion{} // drop buffer references
	}
	if err != nil {
		c.ringFailed(err)
	}
	return n, err
}

// idle reports whether nothing is in flight, with the submitter unable to
// submit more (its context has ended; see Channels.ioMu). busy says the
// submitter is submitting right now: it may wait for ring capacity, which
// only reaping frees, so the completer must not wait for ioMu.
// REQUIRES: the context has ended.
func (c *Completer) idle() (idle, busy bool) {
	c.drainRegistrations()
	if !c.ch.ioMu.TryLock() {
		return false, true
	}
	defer c.ch.ioMu.Unlock()
	c.drainRegistrations()
	return len(c.table) == 0, false
}

// drainRegistrations moves every waiting registration into the table.
func (c *Completer) drainRegistrations() {
	for {
		select {
		case f := <-c.ch.registers:
			c.register(f)
		default:
			return
		}
	}
}

func (c *Completer) register(f *flight) {
	c.maxID = max(c.maxID, f.id)
	c.table[f.id] = f
	for _, g := range f.groups {
		st := c.groups[g]
		if st == nil {
			st = &groupState{}
			c.groups[g] = st
		}
		st.copies++
		if f.kind == kindWAL {
			st.walSeen = true
		}
	}
}

// lookup finds the flight of a completion. The submitter registers a
// flight right after submitting it (under ioMu, whatever its context), so
// a completion reaped before its registration is followed by it: wait for
// it even when stopping, or the flight would be lost with its writers.
// It returns nil for a completion of a flight settled already (ids are
// registered in increasing order, so an id at or below the highest
// registered one that is not in the table is done with).
func (c *Completer) lookup(id uint64) *flight {
	if f := c.table[id]; f != nil {
		return f
	}
	if id <= c.maxID {
		return nil
	}
	for {
		f := <-c.ch.registers
		c.register(f)
		if f.id == id {
			return f
		}
	}
}

func (c *Completer) handle(ctx context.Context, comp ring.Completion) {
	if comp.Token == wakeToken {
		c.wakes.Add(-1)
		return
	}
	f := c.lookup(flightOf(comp.Token))
	if f == nil {
		c.lg.Warn("completion of a settled flight", zap.Uint64("token", comp.Token), zap.Bool("deadline", comp.Deadline))
		return
	}
	i := int(comp.Token & 0xff)
	if comp.Deadline {
		if f.kind == kindPromote && !f.rerouted {
			// A stalled promotion: the space turns slow, so that its
			// writes stop waiting for the file (see submitPromotion).
			f.rerouted = true
			c.feedback(feedback{kind: fbReroute, f: f})
		}
		if (f.kind == kindHot) && !f.rerouted && len(f.groups) > 0 {
			f.rerouted = true
			c.reroutes++
			for _, g := range f.groups {
				c.groups[g].waiting = true
			}
			c.feedback(feedback{kind: fbReroute, f: f})
		}
		return
	}
	if f.kind == kindIO {
		f.comps[i] = comp
	}
	if comp.Late {
		f.late = true
	}
	if comp.Err != nil && f.err == nil {
		f.err = fmt.Errorf("%s: %w", comp.Code, comp.Err)
	}
	f.left--
	if f.left == 0 {
		c.settle(ctx, f)
	}
}

// settle acts on a flight whose completions have all come.
func (c *Completer) settle(ctx context.Context, f *flight) {
	delete(c.table, f.id)
	fb := feedback{kind: fbSettled, f: f, err: f.err}
	if f.kind != kindIO && f.err == nil {
		// The batch is one DSync write: its time is the sync's latency
		// as a writer sees it (the write into the page cache is a small
		// part).
		fb.syncDur = c.env.ioTime() - f.start
		c.env.Metrics.SyncLatency.Record(fb.syncDur)
	}
	var pub []PublisherMsg
	switch f.kind {
	case kindIO:
		f.reply <- IOResult{Completions: f.comps}
		return
	case kindPromote:
		if f.err == nil {
			pub = append(pub, Appended{Space: f.space, Gen: f.gen, Records: f.recs})
		}
	case kindHot:
		if f.err != nil && errors.Is(f.err, syscall.ECANCELED) && !f.rerouted && c.ringErr == nil {
			// Cancelled, not failed by the disk (a deadline that fired
			// without its notice reaching us first): stage the writes.
			f.rerouted = true
			c.reroutes++
			for _, g := range f.groups {
				c.groups[g].waiting = true
			}
			c.feedback(feedback{kind: fbReroute, f: f})
		}
		fb.done, pub = c.settleGroups(f, func(g *group, st *groupState) (ack, fail bool) {
			if f.err == nil {
				st.hotOK = true
				return true, false
			}
			// A rerouted group waits for its staged copy, unless that
			// failed already.
			return false, !st.waiting || st.stagedFailed
		})
	case kindWAL:
		for _, g := range f.groups {
			if st := c.groups[g]; f.err == nil && !st.hotOK {
				fb.stage = append(fb.stage, g.recs...)
			}
		}
		fb.done, pub = c.settleGroups(f, func(g *group, st *groupState) (ack, fail bool) {
			if f.err == nil {
				return true, false
			}
			// The hot copy may still succeed (a late one, or a
			// cancelled batch performed again).
			if st.copies > 1 {
				st.stagedFailed = true
				return false, false
			}
			return false, true
		})
	}
	// The submitter hears first, the publisher last: a goroutine this one
	// wakes waits in its P's runnext slot, which the next one it wakes
	// takes over, and the slot runs first when this one parks. Writers
	// wait for the publisher (it acknowledges them), the submitter's next
	// batch only for the feedback; with the publisher woken first, the
	// submitter ran first and cost every Put its wake-up (issue 4, stage
	// timings at one writer). Nothing orders the two: Appended messages
	// reach the publisher's inbox before this goroutine reaps any later
	// completion, so before any Sealed that follows this feedback.
	if len(pub) > 0 {
		c.seq++
		switch m := pub[len(pub)-1].(type) {
		case Appended:
			m.Seq = c.seq
			pub[len(pub)-1] = m
		case FailAcks:
			m.Seq = c.seq
			pub[len(pub)-1] = m
		}
	}
	fb.pubSeq = c.seq
	stagetrace.Mark(stagetrace.Settled)
	c.feedback(fb)
	for _, m := range pub {
		c.publish(ctx, m)
	}
}

// settleGroups applies decide to each group of a settled flight and
// returns the groups decided now and the messages for the publisher.
func (c *Completer) settleGroups(f *flight, decide func(*group, *groupState) (ack, fail bool)) (done []*group, pub []PublisherMsg) {
	var failed []*group
	for _, g := range f.groups {
		st := c.groups[g]
		ack, fail := decide(g, st)
		switch {
		case st.decided:
			if ack && f.kind == kindHot {
				// Acknowledged from the WAL already: the records are
				// now also in their generation, which the tail must
				// know to drop them when it is sealed.
				pub = append(pub, Appended{Space: g.space, Gen: f.gen, Records: g.recs})
			}
		case ack:
			st.decided = true
			done = append(done, g)
			gen := f.gen
			if f.kind == kindWAL {
				gen = livetail.StagedGeneration
			}
			pub = append(pub, Appended{Space: g.space, Gen: gen, Records: g.recs, Acks: g.writes, Staged: f.kind == kindWAL})
		case fail:
			st.decided = true
			done = append(done, g)
			failed = append(failed, g)
		}
		st.copies--
		if st.copies == 0 && st.decided && (!st.waiting || st.walSeen) {
			delete(c.groups, g)
		}
	}
	if len(failed) > 0 {
		var ws = failed[0].writes
		if len(failed) > 1 {
			ws = nil
			for _, g := range failed {
				ws = append(ws, g.writes...)
			}
		}
		pub = append(pub, FailAcks{Writes: ws, Err: f.err})
	}
	return done, pub
}

// publish sends m to the publisher, which never blocks on the completer.
// When ctx ends first the message is delivered by the engine's final
// sweep (it fails what is left), so nothing waits forever.
func (c *Completer) publish(ctx context.Context, m PublisherMsg) {
	if c.sink != nil {
		c.sink.pub = append(c.sink.pub, m)
		return
	}
	select {
	case c.ch.Publisher <- m:
	case <-ctx.Done():
		// Stopping: the publisher stops after us, so this send does
		// not starve; keep trying without the context, unless the
		// engine has failed (the publisher may be gone for good).
		select {
		case c.ch.Publisher <- m:
		case <-c.ch.Failed:
			c.stranded = append(c.stranded, m)
		}
	}
}

// feedback reports to the submitter; the channel is sized so that this
// never blocks (invariant 4).
func (c *Completer) feedback(fb feedback) {
	if c.sink != nil {
		c.sink.fb = append(c.sink.fb, fb)
		return
	}
	select {
	case c.ch.feedback <- fb:
	default:
		c.lg.Error("feedback channel full; waiting", zap.Int("cap", cap(c.ch.feedback)))
		c.ch.feedback <- fb
	}
}
