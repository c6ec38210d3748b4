package test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// hangGate makes the rings of a sim disk stop completing anything, in real
// time, as a disk that no longer answers: while it is shut, Reap blocks
// and TryReap finds nothing (the sim performs an Op only when it is
// reaped, so nothing submitted meanwhile reaches the disk). Closing a
// ring wakes its Reap, as on a real ring.
type hangGate struct {
	mu   sync.Mutex
	open chan struct{} // closed while the gate is open
}

func newHangGate() *hangGate {
	g := &hangGate{open: make(chan struct{})}
	close(g.open)
	return g
}

// gatedConfig returns the Config of an engine on a new sim disk whose
// ring passes through a hang gate (open), with the disk and the gate.
func gatedConfig(t testing.TB, seed int64) (ringpipe.Config, *sim.Disk, *hangGate) {
	disk := newSimDisk(t, seed)
	gate := newHangGate()
	cfg := simConfig(t, disk)
	cfg.NewRing = func(o ring.Options) (ring.Ring, error) { return gate.wrap(disk.NewRing(o)), nil }
	return cfg, disk, gate
}

func (g *hangGate) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = make(chan struct{})
}

func (g *hangGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

func (g *hangGate) current() chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
}

type gatedRing struct {
	ring.Ring
	g         *hangGate
	closeOnce sync.Once
	closed    chan struct{}
}

func (g *hangGate) wrap(r ring.Ring) ring.Ring {
	return &gatedRing{Ring: r, g: g, closed: make(chan struct{})}
}

func (r *gatedRing) Reap(out []ring.Completion) (int, error) {
	select {
	case <-r.g.current():
	case <-r.closed:
	}
	return r.Ring.Reap(out)
}

func (r *gatedRing) TryReap(out []ring.Completion) (int, error) {
	select {
	case <-r.g.current():
	case <-r.closed:
	default:
		return 0, nil
	}
	return r.Ring.TryReap(out)
}

func (r *gatedRing) Close() error {
	r.closeOnce.Do(func() { close(r.closed) })
	return r.Ring.Close()
}

// maxStopOverrun is how long past its ctx's deadline a Stop may return on
// a disk that does not answer: the engine's grace for the I/O in flight
// (250 ms, one budget for the whole Stop) and the closing of the files,
// with room for a loaded CI machine. Before, the grace was 2 s per wait,
// and a Stop returned 2-4 s after its ctx ended ("Bounded by ctx").
const maxStopOverrun = time.Second

// checkStopOverrun asserts that a Stop that has just returned did so
// within maxStopOverrun of ctx's deadline.
func checkStopOverrun(t *testing.T, ctx context.Context) {
	t.Helper()
	dl, ok := ctx.Deadline()
	require.True(t, ok)
	over := time.Since(dl)
	t.Logf("Stop returned %v after its ctx's deadline", over.Round(time.Millisecond))
	assert.Less(t, over, maxStopOverrun, "Stop is bounded by its ctx: it returned %v past the deadline", over)
}

// TestStopBoundedOnHungDisk: a lone writer's Put commits inline (it reaps
// its own write) when the disk stops answering; Stop with a short context
// still returns, with the context's error, instead of waiting for the
// Put, and so does the Put. What the Put acknowledged, if anything, is
// there after a restart on the healed disk.
func TestStopBoundedOnHungDisk(t *testing.T) {
	cfg, _, gate := gatedConfig(t, 41)
	e := start(t, cfg)
	sp := createSpace(t, e, "s", 1, 8)
	// A lone writer's Put commits inline once the pipeline is idle; the
	// first after CreateSpace may find an actor still busy and be queued
	// (CI, 1 run in many): Put until one commits inline.
	for i := 0; i < 20 && e.Telemetry().InlineCommits == 0; i++ {
		_, err := e.Put(ctxFor(t), sp, ringpipe.Point{1}, []byte("before"))
		require.NoError(t, err)
	}
	before := e.Telemetry().InlineCommits
	require.Positive(t, before, "a lone writer's Put commits inline")

	gate.shut()
	type result struct {
		rev ringpipe.Revision
		err error
	}
	put := make(chan result, 1)
	go func() {
		// No deadline of its own: only Stop can end it.
		rev, err := e.Put(context.Background(), sp, ringpipe.Point{2}, []byte("hung"))
		put <- result{rev, err}
	}()
	require.Eventually(t, func() bool { return e.Telemetry().InlineCommits > before },
		10*time.Second, time.Millisecond, "the second Put commits inline too")

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- e.Stop(ctx) }()
	select {
	case err := <-stopped:
		assert.ErrorIs(t, err, context.DeadlineExceeded, "Stop reports that its context ended")
		checkStopOverrun(t, ctx)
	case <-time.After(time.Minute):
		gate.release() // let the test end without leaking
		t.Fatalf("Stop did not return a minute after its context ended (it waits for the inline Put)")
	}
	var r result
	select {
	case r = <-put:
	case <-time.After(time.Minute):
		t.Fatalf("the Put did not return after Stop")
	}
	gate.release()

	e = start(t, cfg)
	rec, err := e.Get(ctxFor(t), sp, ringpipe.Point{2})
	if r.err == nil {
		require.NoError(t, err, "the Put was acknowledged (revision %d)", r.rev)
		assert.Equal(t, r.rev, rec.Revision)
	} else {
		t.Logf("the hung Put returned %v", r.err)
	}
	_, err = e.Get(ctxFor(t), sp, ringpipe.Point{1})
	require.NoError(t, err, "the Put before the hang")
	stop(t, e)
}
