package test

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/snapshot"
)

// acks collects acknowledged writes from many goroutines.
type acks struct {
	mu sync.Mutex
	ws []write
}

func (a *acks) add(w write) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ws = append(a.ws, w)
}

// model builds the model of every acknowledged write and requires that no
// revision was given twice.
func (a *acks) model(t testing.TB, spec ringpipe.SpaceSpec) *model {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	m := newModel(spec)
	seen := make(map[ringpipe.Revision]ringpipe.Point, len(a.ws))
	for _, w := range a.ws {
		p, dup := seen[w.rev]
		require.False(t, dup, "revision %d acknowledged for %v and %v", w.rev, p, w.point)
		seen[w.rev] = w.point
		m.add(w)
	}
	return m
}

// concurrentWrites runs writers goroutines of perWriter writes each into
// space sp. Even writers write points of their own (x = writer id, y =
// sequence), odd writers share a small set of points and delete some of
// them, so that the newest revision decides. After each acknowledged Put a
// writer of its own points reads it back at once (visible once Put
// returned). It returns what was acknowledged.
func concurrentWrites(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID, writers, perWriter int) *acks {
	t.Helper()
	ctx := ctxFor(t)
	var got acks
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewSource(int64(w)))
			for i := range perWriter {
				if w%2 == 0 {
					p := ringpipe.Point{uint32(w), uint32(i)}
					v := fmt.Appendf(nil, "w%d-%d", w, i)
					rev, err := e.Put(ctx, sp, p, v)
					if !assert.NoError(t, err, "writer %d put %d", w, i) {
						return
					}
					got.add(write{point: p, rev: rev, value: v})
					rec, err := e.Get(ctx, sp, p)
					if assert.NoError(t, err, "read back %v", p) {
						assert.Equal(t, rev, rec.Revision, "read back %v", p)
					}
					continue
				}
				p := ringpipe.Point{uint32(1000 + rng.Intn(8)), uint32(rng.Intn(4))}
				if rng.Intn(8) == 0 {
					rev, err := e.Delete(ctx, sp, p)
					if !assert.NoError(t, err, "writer %d delete %d", w, i) {
						return
					}
					got.add(write{point: p, rev: rev})
					continue
				}
				v := fmt.Appendf(nil, "w%d-%d", w, i)
				rev, err := e.Put(ctx, sp, p, v)
				if !assert.NoError(t, err, "writer %d put %d", w, i) {
					return
				}
				got.add(write{point: p, rev: rev, value: v})
			}
		})
	}
	wg.Wait()
	require.False(t, t.Failed(), "writers failed")
	return &got
}

var concSpec = ringpipe.SpaceSpec{Name: "conc", Dims: 2, Bits: 11}

func TestConcurrentWriters(t *testing.T) {
	cfg := realConfig(t, ringpipe.BackendAuto)
	e := start(t, cfg)
	sp := createSpace(t, e, concSpec.Name, concSpec.Dims, concSpec.Bits)
	got := concurrentWrites(t, e, sp, 64, 30)
	m := got.model(t, concSpec)
	checkModel(t, engineReader(t, e), sp, m, fullBox(concSpec))
	st := e.Stats()
	assert.GreaterOrEqual(t, st.DirectWrites+st.StagedWrites, uint64(m.count))
	stop(t, e)

	// And the same after a restart.
	e = start(t, cfg)
	checkModel(t, engineReader(t, e), sp, m, fullBox(concSpec))
	stop(t, e)
}

func TestConcurrentAsync(t *testing.T) {
	ctx := ctxFor(t)
	e := start(t, realConfig(t, ringpipe.BackendAuto))
	sp := createSpace(t, e, concSpec.Name, concSpec.Dims, concSpec.Bits)
	var got acks
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			var tickets []*ringpipe.Ticket
			var ws []write
			for i := range 50 {
				p := ringpipe.Point{uint32(w), uint32(i % 20)} // each writer overwrites its own points
				v := fmt.Appendf(nil, "w%d-%d", w, i)
				tk, err := e.PutAsync(ctx, sp, p, v)
				if !assert.NoError(t, err) {
					return
				}
				tickets = append(tickets, tk)
				ws = append(ws, write{point: p, value: v})
			}
			var prev ringpipe.Revision
			for i, tk := range tickets {
				rev, err := tk.Wait(ctx)
				if !assert.NoError(t, err) {
					return
				}
				assert.Greater(t, rev, prev, "one goroutine's writes get increasing revisions")
				prev = rev
				ws[i].rev = rev
				got.add(ws[i])
			}
		})
	}
	wg.Wait()
	require.False(t, t.Failed())
	checkModel(t, engineReader(t, e), sp, got.model(t, concSpec), fullBox(concSpec))
	stop(t, e)
}

func TestConcurrentFlush(t *testing.T) {
	ctx := ctxFor(t)
	e := start(t, realConfig(t, ringpipe.BackendAuto))
	sp := createSpace(t, e, concSpec.Name, concSpec.Dims, concSpec.Bits)

	var flushes atomic.Int64
	stopFlush := make(chan struct{})
	flushDone := make(chan struct{})
	go func() {
		defer close(flushDone)
		for {
			select {
			case <-stopFlush:
				return
			default:
			}
			if !assert.NoError(t, e.Flush(ctx, sp)) {
				return
			}
			flushes.Add(1)
		}
	}()
	got := concurrentWrites(t, e, sp, 16, 40)
	close(stopFlush)
	<-flushDone
	require.NoError(t, e.Flush(ctx, sp))
	assert.Positive(t, flushes.Load())
	assert.Positive(t, e.Stats().SealedBlocks)
	checkModel(t, engineReader(t, e), sp, got.model(t, concSpec), fullBox(concSpec))
	stop(t, e)
}

// Readers never block on or miss what writers acknowledged while seals
// happen under them.
func TestSealUnderLoad(t *testing.T) {
	cfg := realConfig(t, ringpipe.BackendAuto)
	cfg.SealThreshold = 64
	e := start(t, cfg)
	sp := createSpace(t, e, concSpec.Name, concSpec.Dims, concSpec.Bits)

	// A reader scanning all along: each Scan is in strictly increasing key
	// order and sees no point twice.
	ctx, cancel := context.WithCancel(ctxFor(t))
	readerDone := make(chan struct{})
	var scans atomic.Int64
	go func() {
		defer close(readerDone)
		for ctx.Err() == nil {
			first, prev := true, uint64(0)
			err := e.Scan(ctx, sp, fullBox(concSpec), func(r ringpipe.Record) bool {
				k := snapshot.Key(r.Point, concSpec.Dims, concSpec.Bits)
				ok := assert.True(t, first || k > prev, "Scan: key of %v not above the previous one", r.Point)
				first, prev = false, k
				return ok
			})
			if err != nil {
				assert.ErrorIs(t, err, context.Canceled)
				return
			}
			scans.Add(1)
		}
	}()
	got := concurrentWrites(t, e, sp, 16, 60)
	waitFor(t, e, "a seal", func(st ringpipe.Stats) bool { return st.SealedBlocks > 0 })
	cancel()
	<-readerDone
	assert.Positive(t, scans.Load())
	checkModel(t, engineReader(t, e), sp, got.model(t, concSpec), fullBox(concSpec))
	stop(t, e)
}
