package actors

import (
	"context"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ringpipe/ringpipe/internal/testhook"
)

// Promoter paces promotion: every PromoteInterval, when records wait in
// the staging WAL, it gives the submitter (which owns the WAL and the hot
// segments) a budget of records to append to their hot segments. It
// yields to foreground writes: while the write queue is not empty it skips
// ticks, but never more than maxYield in a row, so promotion cannot
// starve. The submitter retires WAL segments whose records are all
// promoted.
//
// With nothing staged and no retirement to retry, the promoter waits for
// the submitter's kick (promKick) instead of ticking: an idle engine
// wakes no goroutine, and a lone writer's Put is not interrupted by a
// tick every PromoteInterval. Before, a ticker woke the promoter every
// millisecond for the engine's whole life (a thread woken 1,000 times a
// second to find nothing to do).
type Promoter struct {
	env *Env
	ch  *Channels
	lg  *zap.Logger

	// Owned by Run; kept across restarts.
	yielded int
	// ticks counts the intervals Run waited out (for tests: none while
	// idle).
	ticks atomic.Uint64
}

const (
	// maxPromote caps the records one tick promotes, so that a large
	// backlog is worked off in slices between foreground batches; a
	// backlog larger than this stops the yielding.
	maxPromote = 4096
	// maxYield is how many ticks in a row promotion gives way to a busy
	// write queue.
	maxYield = 64
)

// NewPromoter returns the promoter.
func NewPromoter(env *Env, ch *Channels) *Promoter {
	env.Metrics.init()
	return &Promoter{env: env, ch: ch, lg: env.Log.Named("promoter")}
}

// Run paces promotion until ctx ends.
func (p *Promoter) Run(ctx context.Context) error {
	t := time.NewTimer(p.env.Cfg.PromoteInterval)
	defer t.Stop()
	for {
		if p.idle() {
			// The submitter raises the counters before it kicks: a kick
			// sent after the check above is pending in promKick.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-p.ch.promKick:
			}
			continue
		}
		t.Reset(p.env.Cfg.PromoteInterval)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		p.ticks.Add(1)
		if p.idle() {
			continue
		}
		backlog := p.env.Metrics.StagedPending.Load() > maxPromote
		if len(p.ch.Writes) > 0 && p.yielded < maxYield && !backlog {
			p.yielded++
			continue
		}
		p.yielded = 0
		if err := testhook.Chaos("promoter", "tick"); err != nil {
			return err
		}
		// A fresh reply channel each tick, and a bounded wait: a
		// submitter that fails while it serves the tick never answers
		// it, and the supervisor restarts the submitter, not the
		// promoter. Before, the promoter then waited for ever: no tick
		// reached the submitter again, so a space whose seal hint was
		// lost was never hinted again, and a Flush waiting for its
		// staged records hung (files audit, TestFilesCrashCycles, about
		// 1 run in 8).
		reply := make(chan int, 1)
		if err := send(ctx, p.ch.Submitter, SubmitterMsg(PromoteTick{Max: maxPromote, Reply: reply})); err != nil {
			return err
		}
		t.Reset(promoteReplyWait)
		select {
		case <-reply:
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// promoteReplyWait bounds the promoter's wait for the submitter's answer
// to a tick (see Run).
const promoteReplyWait = time.Second

// idle says whether there is nothing to promote and no WAL retirement to
// try again.
func (p *Promoter) idle() bool {
	return p.env.Metrics.StagedPending.Load() <= 0 && !p.env.Metrics.RetirePending.Load()
}
