package actors

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/ringpipe/ringpipe/messages"
)

// TestAuditPromoterYieldsAndCaps: issue 4, "promoter ... yields to
// foreground writes and caps its work per tick". With staged work and a
// non-empty write queue it skips ticks (at most maxYield in a row); with
// an empty queue it asks at once; every tick asks for at most maxPromote;
// with nothing staged it asks for nothing; a backlog above the cap stops
// the yielding.
func TestAuditPromoterYieldsAndCaps(t *testing.T) {
	// Not the default 1 ms: the bounds below are multiples of the tick,
	// and a backlog's tick must come within maxYield ticks on a loaded CI
	// runner (-race, 2 cores) too; at 2 ms that was 128 ms.
	const tick = 10 * time.Millisecond
	env := &Env{Log: zap.NewNop(), Cfg: Config{PromoteInterval: tick}, Metrics: &Metrics{}}
	ch := NewChannels(8, 8)
	p := NewPromoter(env, ch)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		assert.ErrorIs(t, <-done, context.Canceled)
	}()
	next := func(within time.Duration) (PromoteTick, bool) {
		select {
		case m := <-ch.Submitter:
			pt, ok := m.(PromoteTick)
			require.True(t, ok, "promoter sent %T", m)
			return pt, true
		case <-time.After(within):
			return PromoteTick{}, false
		}
	}

	// Nothing staged: no tick, and no timer running.
	_, got := next(30 * tick)
	assert.False(t, got, "a tick with nothing staged")
	assert.Zero(t, p.ticks.Load(), "the promoter woke up with nothing staged")

	// Staged work and a busy write queue: the promoter yields for maxYield
	// ticks (>= maxYield intervals), then asks for at most maxPromote.
	ch.Writes <- &messages.Barrier{Reply: make(chan error, 1)}
	t0 := time.Now()
	env.Metrics.StagedPending.Store(10)
	kick(ch.promKick) // as the submitter does when it stages
	pt, got := next(10 * time.Second)
	require.True(t, got, "the promoter never ticked while the queue stayed busy (starved)")
	assert.GreaterOrEqual(t, time.Since(t0), time.Duration(maxYield-2)*tick, // a tick may be pending already
		"promoted without yielding to a busy write queue")
	assert.Equal(t, maxPromote, pt.Max, "the cap per tick")
	pt.Reply <- 10

	// An empty queue: the next tick asks at once.
	<-ch.Writes
	pt, got = next(5 * time.Second)
	require.True(t, got)
	pt.Reply <- 10

	// A backlog above the cap: no yielding even with a busy queue.
	ch.Writes <- &messages.Barrier{Reply: make(chan error, 1)}
	env.Metrics.StagedPending.Store(maxPromote + 1)
	t0 = time.Now()
	pt, got = next(10 * time.Second)
	require.True(t, got)
	assert.Less(t, time.Since(t0), time.Duration(maxYield)*tick, "a backlog above the cap still yielded")
	assert.Equal(t, maxPromote, pt.Max)
	pt.Reply <- maxPromote
	env.Metrics.StagedPending.Store(0)
	<-ch.Writes

	// Idle again: the promoter stops waking once nothing is staged.
	quiet := false
	for end := time.Now().Add(5 * time.Second); !quiet && time.Now().Before(end); {
		before := p.ticks.Load()
		time.Sleep(20 * tick)
		quiet = p.ticks.Load() == before
	}
	assert.True(t, quiet, "the promoter kept ticking with nothing staged")

	// A failed WAL retirement wakes it too (the submitter kicks).
	env.Metrics.RetirePending.Store(true)
	kick(ch.promKick)
	pt, got = next(5 * time.Second)
	require.True(t, got, "no tick for a retirement waiting to be tried again")
	pt.Reply <- 0
	env.Metrics.RetirePending.Store(false)
}

// TestAuditRoutingHysteresis: DESIGN.md routing per space with hysteresis:
// a slow space goes back to its hot file only after fastSyncsToRecover
// consecutive fast syncs (under half the deadline); a slow sync in between
// starts the count again; a fast space is not affected.
func TestAuditRoutingHysteresis(t *testing.T) {
	const dwt = 2 * time.Millisecond
	s := &Submitter{env: &Env{Cfg: Config{DirectWriteTimeout: dwt}}, lg: zap.NewNop()}
	sp := &spaceState{info: messages.SpaceInfo{ID: 1}, slow: true}
	fast, slow := dwt/4, dwt
	for range fastSyncsToRecover - 1 {
		s.observeSync(sp, fast)
	}
	assert.True(t, sp.slow, "back to direct writes before %d fast syncs", fastSyncsToRecover)
	s.observeSync(sp, slow)
	assert.True(t, sp.slow)
	assert.Zero(t, sp.fast, "a slow sync restarts the count")
	for range fastSyncsToRecover - 1 {
		s.observeSync(sp, fast)
	}
	assert.True(t, sp.slow, "the count did not restart")
	s.observeSync(sp, fast)
	assert.False(t, sp.slow, "%d consecutive fast syncs route the space back", fastSyncsToRecover)

	ok := &spaceState{info: messages.SpaceInfo{ID: 2}}
	s.observeSync(ok, slow)
	assert.False(t, ok.slow, "observeSync alone never marks a space slow (a missed deadline does)")
	assert.GreaterOrEqual(t, fastSyncsToRecover, 2, "hysteresis needs more than one fast sync")
}

// TestAuditPromoterTickUnanswered: a submitter that fails while serving a
// tick never answers it (the supervisor restarts the submitter, not the
// promoter). The promoter must tick again: before, it waited for that
// answer for ever, and a Flush waiting for staged records hung (files
// audit, TestFilesCrashCycles).
func TestAuditPromoterTickUnanswered(t *testing.T) {
	env := &Env{Log: zap.NewNop(), Cfg: Config{PromoteInterval: time.Millisecond}, Metrics: &Metrics{}}
	ch := NewChannels(8, 8)
	p := NewPromoter(env, ch)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		assert.ErrorIs(t, <-done, context.Canceled)
	}()
	env.Metrics.StagedPending.Store(1)
	kick(ch.promKick)
	next := func() PromoteTick {
		select {
		case m := <-ch.Submitter:
			pt, ok := m.(PromoteTick)
			require.True(t, ok, "promoter sent %T", m)
			return pt
		case <-time.After(promoteReplyWait + 5*time.Second):
			require.FailNow(t, "no tick")
			return PromoteTick{}
		}
	}
	first := next() // taken by a submitter that fails: never answered
	second := next()
	assert.NotEqual(t, first.Reply, second.Reply, "a fresh reply channel: a late answer to the first cannot block the submitter")
	second.Reply <- 1
	first.Reply <- 0 // the late answer goes nowhere, and blocks nobody
	env.Metrics.StagedPending.Store(0)
}
