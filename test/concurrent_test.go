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

// TestConfigVariants runs one mixed workload — concurrent writers on
// several spaces, a Flush, a restart — under Configs that push the engine
// off its defaults.
func TestConfigVariants(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(c *ringpipe.Config)
		val  int // value size
	}{
		{"std", func(c *ringpipe.Config) { c.Backend = ringpipe.BackendStd }, 100},
		{"directio", func(c *ringpipe.Config) { c.DirectIO = true }, 100},
		{"batchtimeout", func(c *ringpipe.Config) { c.BatchTimeout = time.Millisecond }, 100},
		{"tinyqueue", func(c *ringpipe.Config) { c.QueueCapacity, c.BatchSize = 2, 1 }, 100},
		{"tinyring", func(c *ringpipe.Config) { c.RingEntries = 8 }, 100},
		{"sealoften", func(c *ringpipe.Config) { c.SealThreshold, c.SealBytes = 16, 8<<10 }, 1000},
		{"bigvalues", func(c *ringpipe.Config) { c.MaxValueSize = 256 << 10 }, 256 << 10},
		{"strict", func(c *ringpipe.Config) { c.WALRecovery = ringpipe.Strict }, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := realConfig(t, ringpipe.BackendAuto)
			tc.mod(&cfg)
			variantRun(t, cfg, tc.val)
		})
	}
}

func variantRun(t *testing.T, cfg ringpipe.Config, valSize int) {
	e := start(t, cfg)
	ctx := ctxFor(t)
	spec := ringpipe.SpaceSpec{Dims: 3, Bits: 6}
	var spaces []ringpipe.SpaceID
	for i := range 4 {
		spec.Name = fmt.Sprintf("v%d", i)
		spaces = append(spaces, createSpace(t, e, spec.Name, spec.Dims, spec.Bits))
	}
	models := make([]acks, len(spaces))
	perWriter := 24
	if valSize > 64<<10 {
		perWriter = 3
	}
	var wg sync.WaitGroup
	for w := range 12 {
		wg.Go(func() {
			rng := rand.New(rand.NewSource(int64(w)))
			for i := range perWriter {
				s := rng.Intn(len(spaces))
				p := randPoint(rng, spec)
				if i == perWriter/2 && w == 0 {
					assert.NoError(t, e.Flush(ctx, spaces[s]))
				}
				if rng.Intn(6) == 0 {
					rev, err := e.Delete(ctx, spaces[s], p)
					if !assert.NoError(t, err) {
						return
					}
					models[s].add(write{point: p, rev: rev})
					continue
				}
				v := make([]byte, 1+rng.Intn(valSize))
				copy(v, fmt.Sprintf("w%d-%d|", w, i))
				rev, err := e.Put(ctx, spaces[s], p, v)
				if !assert.NoError(t, err) {
					return
				}
				models[s].add(write{point: p, rev: rev, value: v})
			}
		})
	}
	wg.Wait()
	require.False(t, t.Failed(), "writers failed")
	for i, sp := range spaces {
		checkModel(t, engineReader(t, e), sp, models[i].model(t, spec), fullBox(spec))
	}
	stop(t, e)
	// Restart, write into the logs as they were left, and restart with
	// DirectIO flipped: a log written one way appends and reads the other
	// (buffered into direct realigns to a sector; direct reads buffered).
	for round := range 2 {
		e = start(t, cfg)
		for i, sp := range spaces {
			checkModel(t, engineReader(t, e), sp, models[i].model(t, spec), fullBox(spec))
		}
		if round == 1 {
			break
		}
		rng := rand.New(rand.NewSource(99))
		for i := range 40 {
			s := i % len(spaces)
			p := randPoint(rng, spec)
			v := []byte(fmt.Sprintf("after restart %d", i))
			rev, err := e.Put(ctx, spaces[s], p, v)
			require.NoError(t, err)
			models[s].add(write{point: p, rev: rev, value: v})
		}
		stop(t, e)
		cfg.DirectIO = !cfg.DirectIO
	}
	stop(t, e)
}
