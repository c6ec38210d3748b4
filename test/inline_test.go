package test

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/internal/testhook"
)

// Inline commits (actors.Inline): a Put on an idle engine is committed on
// its caller's goroutine. These tests check that it is taken when it
// should be, not when it should not, and that its departures from the
// plain case (a missed deadline, the caller's context ending mid-write)
// leave the write to the actors with nothing lost or acknowledged twice.

// sequentialPuts Puts n records into sp one after another and returns
// them.
func sequentialPuts(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID, rng *rand.Rand, n int, tag string) *acks {
	t.Helper()
	ctx := ctxFor(t)
	a := new(acks)
	for i := range n {
		p := randPoint(rng, routeSpec)
		v := fmt.Appendf(nil, "%s-%d", tag, i)
		rev, err := e.Put(ctx, sp, p, v)
		require.NoError(t, err, "put %d", i)
		a.add(write{point: p, rev: rev, value: v})
	}
	return a
}

// checkAcrossRestart checks space sp of e against m, stops e, starts an
// engine on cfg again, checks again and stops it.
func checkAcrossRestart(t *testing.T, e *ringpipe.Engine, cfg ringpipe.Config, sp ringpipe.SpaceID, m *model) {
	t.Helper()
	checkModel(t, engineReader(t, e), sp, m, fullBox(routeSpec))
	stop(t, e)
	e = start(t, cfg)
	checkModel(t, engineReader(t, e), sp, m, fullBox(routeSpec))
	stop(t, e)
}

// TestInlineCommitTaken: one writer's Puts are committed inline; with the
// switch off, none is, and the data is the same either way, after a
// restart too.
func TestInlineCommitTaken(t *testing.T) {
	for _, off := range []bool{false, true} {
		t.Run(fmt.Sprintf("off=%v", off), func(t *testing.T) {
			defer testhook.SetNoInline(off)()
			disk := newSimDisk(t, 31)
			cfg := simConfig(t, disk)
			e := start(t, cfg)
			sp := createSpace(t, e, "grid", routeSpec.Dims, routeSpec.Bits)
			const n = 200
			a := sequentialPuts(t, e, sp, rand.New(rand.NewSource(31)), n, "seq")
			inline := e.Telemetry().InlineCommits
			if off {
				assert.Zero(t, inline)
			} else {
				// A seal's replacement segment, or a batch the gathering
				// rule holds, sends an occasional Put through the queue.
				assert.Greater(t, inline, uint64(n*3/4), "most sequential Puts commit inline")
			}
			st := e.Stats()
			assert.Equal(t, uint64(n), st.DirectWrites+st.StagedWrites, "each Put acknowledged once")
			checkAcrossRestart(t, e, cfg, sp, a.model(t, routeSpec))
		})
	}
}

// TestInlineCommitMixed: concurrent writers, some async, interleaved with
// Syncs and Flushes, commit partly inline and partly through the queue;
// every acknowledged write is there once, in revision order per writer.
func TestInlineCommitMixed(t *testing.T) {
	disk := newSimDisk(t, 32)
	cfg := simConfig(t, disk)
	cfg.SealThreshold = 300
	e := start(t, cfg)
	sp := createSpace(t, e, "grid", routeSpec.Dims, routeSpec.Bits)
	ctx := ctxFor(t)
	all := new(acks)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewSource(int64(w)))
			var last ringpipe.Revision
			for i := range 150 {
				p := randPoint(rng, routeSpec)
				v := fmt.Appendf(nil, "w%d-%d", w, i)
				var rev ringpipe.Revision
				var err error
				switch i % 10 {
				case 3:
					var tk *ringpipe.Ticket
					if tk, err = e.PutAsync(ctx, sp, p, v); err == nil {
						rev, err = tk.Wait(ctx)
					}
				case 7:
					if err = e.Sync(ctx); err == nil {
						rev, err = e.Put(ctx, sp, p, v)
					}
				case 9:
					if w == 0 {
						err = e.Flush(ctx, sp)
					}
					if err == nil {
						rev, err = e.Put(ctx, sp, p, v)
					}
				default:
					// Pause now and then, so that the engine goes idle.
					if rng.Intn(4) == 0 {
						time.Sleep(time.Duration(rng.Intn(200)) * time.Microsecond)
					}
					rev, err = e.Put(ctx, sp, p, v)
				}
				if !assert.NoError(t, err, "writer %d write %d", w, i) {
					return
				}
				assert.Greater(t, rev, last, "writer %d: revisions increase", w)
				last = rev
				all.add(write{point: p, rev: rev, value: v})
			}
		})
	}
	wg.Wait()
	require.False(t, t.Failed())
	t.Logf("inline commits: %d of %d writes", e.Telemetry().InlineCommits, 4*150)
	st := e.Stats()
	assert.Equal(t, uint64(4*150), st.DirectWrites+st.StagedWrites, "each write acknowledged once")
	checkAcrossRestart(t, e, cfg, sp, all.model(t, routeSpec))
}

// TestInlineCommitDeadline: a Put committed inline whose hot write misses
// its deadline is re-routed to the staging WAL by the committing goroutine
// itself and acknowledged from there; the hot write, still in flight when
// Put returns, is handed to the completer. Everything is promoted once the
// stall ends, and survives a power loss after Stop.
func TestInlineCommitDeadline(t *testing.T) {
	disk := newSimDisk(t, 33)
	cfg := simConfig(t, disk)
	cfg.DirectWriteTimeout = 2 * time.Millisecond
	e := start(t, cfg)
	sp := createSpace(t, e, "slow", routeSpec.Dims, routeSpec.Bits)
	rng := rand.New(rand.NewSource(33))
	a := sequentialPuts(t, e, sp, rng, 20, "warm")
	require.Zero(t, e.Stats().StagedWrites)

	stallHot(disk, sp)
	inline0 := e.Telemetry().InlineCommits
	a1 := sequentialPuts(t, e, sp, rng, 1, "stalled")
	assert.Equal(t, inline0+1, e.Telemetry().InlineCommits, "the first stalled Put was committed inline")
	assert.Equal(t, uint64(1), e.Stats().StagedWrites, "and acknowledged from the staging WAL")
	// The space is slow now: its writes take the queue (and the WAL).
	a2 := sequentialPuts(t, e, sp, rng, 10, "slow")
	assert.Equal(t, inline0+1, e.Telemetry().InlineCommits, "a slow space's writes are not committed inline")
	assert.Equal(t, uint64(11), e.Stats().StagedWrites)

	m := merge(t, a, a1, a2)
	checkModel(t, engineReader(t, e), sp, m, fullBox(routeSpec))
	disk.ClearFaults()
	waitFor(t, e, "promotion of every staged write", func(st ringpipe.Stats) bool {
		return st.StagedPending == 0 && st.Promoted >= st.StagedWrites
	})
	stop(t, e)
	disk.PowerLoss(rand.New(rand.NewSource(33)))
	e = start(t, cfg)
	checkModel(t, engineReader(t, e), sp, m, fullBox(routeSpec))
	stop(t, e)
}

// cancelAfter is a context that ends at its calls+1-th Err call: a
// caller's context that ends while its Put is committed inline, at the
// commit's first check, with no timing involved.
type cancelAfter struct {
	context.Context
	calls atomic.Int32
	once  sync.Once
	done  chan struct{}
}

func newCancelAfter(parent context.Context, calls int32) *cancelAfter {
	c := &cancelAfter{Context: parent, done: make(chan struct{})}
	c.calls.Store(calls)
	return c
}

func (c *cancelAfter) Done() <-chan struct{} { return c.done }

func (c *cancelAfter) Err() error {
	if c.calls.Add(-1) < 0 {
		c.once.Do(func() { close(c.done) })
		return context.Canceled
	}
	return nil
}

// TestInlineCommitContextEnds: a Put whose context ends while it is
// committed inline returns the context's error; its write, already in
// flight, is finished by the actors, exactly once, and is there after a
// restart.
func TestInlineCommitContextEnds(t *testing.T) {
	disk := newSimDisk(t, 34)
	cfg := simConfig(t, disk)
	e := start(t, cfg)
	sp := createSpace(t, e, "grid", routeSpec.Dims, routeSpec.Bits)
	rng := rand.New(rand.NewSource(34))
	a := sequentialPuts(t, e, sp, rng, 5, "before")

	// Put checks its context once before it commits; the commit's reap
	// loop checks it next, after the write went in flight. A Put that
	// finds the pipeline busy (an actor still finishing the last write)
	// is queued instead, and one whose write is reaped before the loop's
	// first check succeeds: both are fine, and the attempt is repeated
	// (1 in 20 under -race on a loaded machine).
	var p ringpipe.Point
	v := []byte("cut short")
	cut := false
	for attempt := 0; attempt < 20 && !cut; attempt++ {
		inline0 := e.Telemetry().InlineCommits
		p = randPoint(rng, routeSpec)
		rev, err := e.Put(newCancelAfter(ctxFor(t), 1), sp, p, v)
		if err == nil {
			t.Logf("attempt %d: the Put was not cut short (inline commits %d → %d)", attempt, inline0, e.Telemetry().InlineCommits)
			a.add(write{point: p, rev: rev, value: v})
			continue
		}
		require.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, inline0+1, e.Telemetry().InlineCommits, "the Put was committed inline")
		cut = true
	}
	require.True(t, cut, "no Put of 20 was cut short during its inline commit")
	require.NoError(t, e.Sync(ctxFor(t)), "Sync after the cut-short Put")
	rec, err := e.Get(ctxFor(t), sp, p)
	require.NoError(t, err, "the cut-short Put's write is applied")
	assert.Equal(t, v, rec.Value)
	b := sequentialPuts(t, e, sp, rng, 5, "after")
	assert.Greater(t, b.ws[0].rev, rec.Revision)
	st := e.Stats()
	assert.Equal(t, uint64(len(a.ws)+1+len(b.ws)), st.DirectWrites+st.StagedWrites, "each write acknowledged once")

	a.add(write{point: p, rev: rec.Revision, value: v})
	m := merge(t, a, b)
	stop(t, e)
	e = start(t, cfg)
	checkModel(t, engineReader(t, e), sp, m, fullBox(routeSpec))
	stop(t, e)
}
