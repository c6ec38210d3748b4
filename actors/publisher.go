package actors

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/ringpipe/ringpipe/internal/stagetrace"
	"github.com/ringpipe/ringpipe/internal/testhook"
	"github.com/ringpipe/ringpipe/livetail"
)

// Publisher owns the live tail and the current View. It applies a burst of
// notices at once, publishes one View for the burst, and only then
// completes the acknowledgements the notices carry, so that a write is
// visible to Get by the time its Put returns.
type Publisher struct {
	env  *Env
	ch   *Channels
	lg   *zap.Logger
	view *atomic.Pointer[livetail.View]

	// Owned by the holder of turn: Run, except while it waits for a
	// message, or an inline commit publishing its write (applyNow).
	// Kept across restarts.
	turn  sync.Mutex
	tail  *livetail.Tail
	batch []PublisherMsg
	// applied is the highest settlement number up to which every
	// settlement's messages are applied; fences wait for higher ones (see
	// Fence). ahead holds numbers above applied+1 applied already: Run
	// may hold settlement n, received but not yet applied (it takes the
	// turn after the receive), while an inline commit applies n+1. A
	// highest-applied rule answered n's Fence then, before n's writes
	// were acknowledged: a Sync returned with an earlier PutAsync's
	// ticket not done (inline and extreme-config audits, 1 run in ~100).
	applied uint64
	ahead   map[uint64]struct{}
	fences  []Fence
}

// maxBurst bounds the notices applied per publish, so that the first
// writer of a long burst is not kept waiting for the last.
const maxBurst = 256

// NewPublisher returns the publisher of tail, which recovery filled; it
// stores each View it publishes in view.
func NewPublisher(env *Env, ch *Channels, tail *livetail.Tail, view *atomic.Pointer[livetail.View]) *Publisher {
	env.Metrics.init()
	view.Store(tail.Publish())
	return &Publisher{env: env, ch: ch, lg: env.Log.Named("publisher"), view: view, tail: tail}
}

// Run publishes until ctx ends.
func (p *Publisher) Run(ctx context.Context) error {
	p.turn.Lock()
	defer p.turn.Unlock()
	for {
		// A restart finishes the batch the failed run held.
		if len(p.batch) == 0 {
			p.turn.Unlock()
			select {
			case <-ctx.Done():
				p.turn.Lock()
				return ctx.Err()
			case m := <-p.ch.Publisher:
				p.turn.Lock()
				p.batch = append(p.batch, m)
			}
		}
		p.drain(maxBurst)
		if err := testhook.Chaos("publisher", "burst"); err != nil {
			return err // the batch is kept: the next run applies it
		}
		p.apply()
	}
}

// drain moves messages from the inbox into the batch until it holds max.
func (p *Publisher) drain(max int) {
	for len(p.batch) < max {
		select {
		case m := <-p.ch.Publisher:
			p.batch = append(p.batch, m)
		default:
			return
		}
	}
}

// applyNow applies ms, after whatever the inbox holds, on the caller's
// goroutine: an inline commit publishing (and acknowledging) its write
// without waking the publisher.
func (p *Publisher) applyNow(ms []PublisherMsg) {
	p.turn.Lock()
	defer p.turn.Unlock()
	p.drain(publisherCapacity)
	p.batch = append(p.batch, ms...)
	p.apply()
}

// apply applies p.batch, publishes one View and answers its messages.
func (p *Publisher) apply() {
	var ns []livetail.Notice
	for _, m := range p.batch {
		switch m := m.(type) {
		case Appended:
			ns = append(ns, livetail.Appended{Space: m.Space, Generation: m.Gen, Records: m.Records})
		case Sealed:
			ns = append(ns, livetail.Sealed{Space: m.Space, Generation: m.Gen, Block: m.Block})
		}
	}
	var applyErr error
	if len(ns) > 0 {
		_, applyErr = p.tail.Apply(ns...)
		if applyErr != nil {
			p.lg.Error("apply notices", zap.Error(applyErr))
		}
	}
	var added []error
	for _, m := range p.batch {
		if a, ok := m.(AddSpace); ok {
			added = append(added, p.tail.AddSpace(a.Info, a.Keyer))
		}
	}
	// A burst that changed nothing (Fences, failures) publishes nothing:
	// the tail returns the View it has (telemetry audit: each Sync on a
	// quiet engine counted a publish).
	if v := p.tail.Publish(); v != p.view.Load() {
		p.view.Store(v)
		p.env.Metrics.Publishes.Add(1)
	}
	// CreateSpace hears only now: the View it reads next must hold the
	// space (answered before the publish, a Get right after CreateSpace
	// could say ErrUnknownSpace).
	for _, m := range p.batch {
		if a, ok := m.(AddSpace); ok {
			a.Reply <- added[0]
			added = added[1:]
		}
	}
	now := p.env.now()
	for _, m := range p.batch {
		switch m := m.(type) {
		case Appended:
			for _, w := range m.Acks {
				if !w.Ack.Claim() {
					continue // failed earlier; the record is present all the same
				}
				p.env.Metrics.WriteLatency.Record(now.Sub(w.Enqueued))
				if m.Staged {
					p.env.Metrics.StagedWrites.Add(1)
				} else {
					p.env.Metrics.DirectWrites.Add(1)
				}
				stagetrace.Mark(stagetrace.Acking)
				w.Ack.Finish(w.Record.Revision, m.Staged, nil)
			}
		case Sealed:
			m.Reply <- applyErr
		case FailAcks:
			for _, w := range m.Writes {
				w.Ack.Complete(0, false, fmt.Errorf("write to space %d: %w", w.Record.Space, m.Err))
			}
			p.settled(m.Seq)
		case Fence:
			p.fences = append(p.fences, m)
		}
		if a, ok := m.(Appended); ok {
			p.settled(a.Seq)
		}
	}
	p.answerFences(false)
	clear(p.batch)
	p.batch = p.batch[:0]
}

// Drain answers everything left in the publisher's inbox and batch once
// the actors have stopped: notices are applied and published as Run would
// (a write whose Put returns is visible, Stop or not), failures are passed
// on. REQUIRES: the actors have stopped.
func (p *Publisher) Drain() {
	p.turn.Lock()
	defer p.turn.Unlock()
	p.drain(math.MaxInt)
	if len(p.batch) > 0 {
		p.apply()
	}
	// The actors have stopped: whatever a Fence still waits for was
	// stranded and is failed by the engine's final sweep; the Syncs'
	// writes were decided.
	p.answerFences(true)
}

// settled records that settlement seq's messages are applied (0: a message
// that closes no settlement).
func (p *Publisher) settled(seq uint64) {
	switch {
	case seq <= p.applied:
		return // none, or applied again after a restart
	case seq > p.applied+1:
		if p.ahead == nil {
			p.ahead = make(map[uint64]struct{})
		}
		p.ahead[seq] = struct{}{}
		return
	}
	p.applied = seq
	for {
		if _, ok := p.ahead[p.applied+1]; !ok {
			return
		}
		delete(p.ahead, p.applied+1)
		p.applied++
	}
}

// answerFences answers the Fences whose settlements are applied, or all
// of them.
func (p *Publisher) answerFences(all bool) {
	keep := p.fences[:0]
	for _, f := range p.fences {
		if all || f.Seq <= p.applied {
			select {
			case f.Reply <- nil: // room for one
			default: // answered already (a batch applied again after a restart)
			}
		} else {
			keep = append(keep, f)
		}
	}
	clear(p.fences[len(keep):])
	p.fences = keep
}
