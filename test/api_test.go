package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// TestBasic is the smallest round trip on every backend: Start, create a
// space, Put, Get, Stop.
func TestBasic(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(t *testing.T) ringpipe.Config
	}{
		{"auto", func(t *testing.T) ringpipe.Config { return realConfig(t, ringpipe.BackendAuto) }},
		{"std", func(t *testing.T) ringpipe.Config { return realConfig(t, ringpipe.BackendStd) }},
		{"sim", func(t *testing.T) ringpipe.Config { return simConfig(t, newSimDisk(t, 1)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxFor(t)
			e := start(t, tc.cfg(t))
			sp := createSpace(t, e, "basic", 2, 8)
			rev, err := e.Put(ctx, sp, ringpipe.Point{3, 4}, []byte("hello"))
			require.NoError(t, err)
			assert.NotZero(t, rev)
			rec, err := e.Get(ctx, sp, ringpipe.Point{3, 4})
			require.NoError(t, err)
			assert.Equal(t, []byte("hello"), rec.Value)
			assert.Equal(t, rev, rec.Revision)
			stop(t, e)
		})
	}
}

func TestStartBadConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		field string
		mod   func(c *ringpipe.Config)
	}{
		{"Dir", func(c *ringpipe.Config) { c.Dir = "" }},
		{"Backend", func(c *ringpipe.Config) { c.Backend = 42 }},
		{"QueueCapacity", func(c *ringpipe.Config) { c.QueueCapacity = -1 }},
		{"RingEntries", func(c *ringpipe.Config) { c.RingEntries = 100 }},
		{"BatchSize", func(c *ringpipe.Config) { c.BatchSize = -3 }},
		{"BatchSize", func(c *ringpipe.Config) { c.QueueCapacity = 8; c.BatchSize = 9 }},
		{"BatchTimeout", func(c *ringpipe.Config) { c.BatchTimeout = -1 }},
		{"DirectWriteTimeout", func(c *ringpipe.Config) { c.DirectWriteTimeout = -1 }},
		{"PromoteInterval", func(c *ringpipe.Config) { c.PromoteInterval = -1 }},
		{"SealThreshold", func(c *ringpipe.Config) { c.SealThreshold = -1 }},
		{"SealBytes", func(c *ringpipe.Config) { c.SealBytes = -1 }},
		{"MaxValueSize", func(c *ringpipe.Config) { c.MaxValueSize = -1 }},
		{"MaxValueSize", func(c *ringpipe.Config) { c.MaxValueSize = 1 << 40 }},
		{"Preallocate", func(c *ringpipe.Config) { c.Preallocate = 1000 }},
		{"WALRecovery", func(c *ringpipe.Config) { c.WALRecovery = 9 }},
	} {
		t.Run(tc.field, func(t *testing.T) {
			cfg := ringpipe.Config{Dir: dir, Logger: zaptest.NewLogger(t), Preallocate: testPrealloc}
			tc.mod(&cfg)
			e, err := ringpipe.Start(ctxFor(t), cfg)
			require.Error(t, err)
			assert.Nil(t, e)
			assert.Contains(t, err.Error(), "Config."+tc.field)
		})
	}
	// A refused Start holds nothing: the directory can be opened.
	e := start(t, ringpipe.Config{Dir: dir, Logger: zaptest.NewLogger(t), Preallocate: testPrealloc})
	stop(t, e)
}

// Start creates a directory that does not exist yet.
func TestStartCreatesDir(t *testing.T) {
	cfg := realConfig(t, ringpipe.BackendAuto)
	cfg.Dir = filepath.Join(cfg.Dir, "new")
	e := start(t, cfg)
	sp := createSpace(t, e, "s", 1, 16)
	_, err := e.Put(ctxFor(t), sp, ringpipe.Point{1}, []byte("v"))
	require.NoError(t, err)
	stop(t, e)
	assert.DirExists(t, cfg.Dir)
}

func TestLocked(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(t *testing.T) ringpipe.Config
	}{
		{"real", func(t *testing.T) ringpipe.Config { return realConfig(t, ringpipe.BackendAuto) }},
		{"sim", func(t *testing.T) ringpipe.Config { return simConfig(t, newSimDisk(t, 2)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg(t)
			e := start(t, cfg)
			sp := createSpace(t, e, "s", 1, 8)
			rev, err := e.Put(ctxFor(t), sp, ringpipe.Point{7}, []byte("first"))
			require.NoError(t, err)

			e2, err := ringpipe.Start(ctxFor(t), cfg)
			require.ErrorIs(t, err, ringpipe.ErrLocked)
			assert.Nil(t, e2)
			// The refused Start did not disturb the running engine.
			rec, err := e.Get(ctxFor(t), sp, ringpipe.Point{7})
			require.NoError(t, err)
			assert.Equal(t, rev, rec.Revision)
			_, err = e.Put(ctxFor(t), sp, ringpipe.Point{8}, []byte("second"))
			require.NoError(t, err)
			stop(t, e)

			e2 = start(t, cfg)
			rec, err = e2.Get(ctxFor(t), sp, ringpipe.Point{8})
			require.NoError(t, err)
			assert.Equal(t, []byte("second"), rec.Value)
			stop(t, e2)
		})
	}
}

func TestCreateSpace(t *testing.T) {
	ctx := ctxFor(t)
	e := start(t, realConfig(t, ringpipe.BackendAuto))
	assert.Empty(t, e.Spaces())

	a := ringpipe.SpaceSpec{Name: "a", Dims: 2, Bits: 16}
	b := ringpipe.SpaceSpec{Name: "b", Dims: 16, Bits: 4}
	c := ringpipe.SpaceSpec{Name: "c", Dims: 1, Bits: 32}
	ida, err := e.CreateSpace(ctx, a)
	require.NoError(t, err)
	idb, err := e.CreateSpace(ctx, b)
	require.NoError(t, err)
	idc, err := e.CreateSpace(ctx, c)
	require.NoError(t, err)
	assert.NotEqual(t, ida, idb)
	assert.NotEqual(t, idb, idc)
	assert.NotEqual(t, ida, idc)

	// Idempotent for the same spec.
	again, err := e.CreateSpace(ctx, a)
	require.NoError(t, err)
	assert.Equal(t, ida, again)

	// A different spec under a taken name.
	for _, spec := range []ringpipe.SpaceSpec{{Name: "a", Dims: 2, Bits: 8}, {Name: "a", Dims: 3, Bits: 16}} {
		_, err = e.CreateSpace(ctx, spec)
		assert.ErrorIs(t, err, ringpipe.ErrSpaceExists, "%+v", spec)
	}

	// Bad specs.
	for _, spec := range []ringpipe.SpaceSpec{
		{Name: "", Dims: 1, Bits: 8},
		{Name: "d0", Dims: 0, Bits: 8},
		{Name: "d17", Dims: 17, Bits: 1},
		{Name: "b0", Dims: 1, Bits: 0},
		{Name: "b33", Dims: 1, Bits: 33},
		{Name: "big", Dims: 3, Bits: 22},
	} {
		_, err = e.CreateSpace(ctx, spec)
		assert.Error(t, err, "%+v", spec)
		assert.NotErrorIs(t, err, ringpipe.ErrSpaceExists, "%+v", spec)
	}

	// Concurrent creations of one new name agree on its ID.
	d := ringpipe.SpaceSpec{Name: "d", Dims: 4, Bits: 8}
	ids := make([]ringpipe.SpaceID, 16)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			var err error
			ids[i], err = e.CreateSpace(ctx, d)
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	for _, id := range ids {
		assert.Equal(t, ids[0], id)
	}

	want := []ringpipe.SpaceInfo{{ID: ida, SpaceSpec: a}, {ID: idb, SpaceSpec: b}, {ID: idc, SpaceSpec: c}, {ID: ids[0], SpaceSpec: d}}
	assert.ElementsMatch(t, want, e.Spaces())
	got := e.Spaces()
	for i := 1; i < len(got); i++ {
		assert.Less(t, got[i-1].ID, got[i].ID, "Spaces ordered by ID")
	}
	stop(t, e)
}

func TestPutGetDelete(t *testing.T) {
	ctx := ctxFor(t)
	e := start(t, realConfig(t, ringpipe.BackendAuto))
	sp := createSpace(t, e, "s", 3, 10)
	p := ringpipe.Point{1, 2, 3}

	_, err := e.Get(ctx, sp, p)
	require.ErrorIs(t, err, ringpipe.ErrNotFound, "empty space")

	val := []byte("value one")
	r1, err := e.Put(ctx, sp, p, val)
	require.NoError(t, err)
	val[0] = 'X' // the engine must have copied it
	rec, err := e.Get(ctx, sp, p)
	require.NoError(t, err)
	assert.Equal(t, ringpipe.Record{Space: sp, Point: p, Revision: r1, Value: []byte("value one")}, rec)
	rec.Value[0] = 'Y' // nor may the reader's copy alias the engine's
	rec.Point[0] = 9
	rec, err = e.Get(ctx, sp, p)
	require.NoError(t, err)
	assert.Equal(t, []byte("value one"), rec.Value)
	assert.Equal(t, p, rec.Point)

	r2, err := e.Put(ctx, sp, p, []byte("value two"))
	require.NoError(t, err)
	assert.Greater(t, r2, r1)
	rec, err = e.Get(ctx, sp, p)
	require.NoError(t, err)
	assert.Equal(t, []byte("value two"), rec.Value)
	assert.Equal(t, r2, rec.Revision)

	r3, err := e.Delete(ctx, sp, p)
	require.NoError(t, err)
	assert.Greater(t, r3, r2)
	_, err = e.Get(ctx, sp, p)
	assert.ErrorIs(t, err, ringpipe.ErrNotFound)
	n := 0
	require.NoError(t, e.Scan(ctx, sp, fullBox(ringpipe.SpaceSpec{Dims: 3, Bits: 10}), func(ringpipe.Record) bool { n++; return true }))
	assert.Zero(t, n, "Scan shows no deleted point")

	r4, err := e.Put(ctx, sp, p, []byte("back"))
	require.NoError(t, err)
	assert.Greater(t, r4, r3)
	rec, err = e.Get(ctx, sp, p)
	require.NoError(t, err)
	assert.Equal(t, []byte("back"), rec.Value)

	// Deleting a point that never existed is a tombstone like any other.
	r5, err := e.Delete(ctx, sp, ringpipe.Point{5, 5, 5})
	require.NoError(t, err)
	assert.Greater(t, r5, r4)
	_, err = e.Get(ctx, sp, ringpipe.Point{5, 5, 5})
	assert.ErrorIs(t, err, ringpipe.ErrNotFound)

	// An empty value is a live record, not a tombstone.
	_, err = e.Put(ctx, sp, ringpipe.Point{0, 0, 0}, nil)
	require.NoError(t, err)
	rec, err = e.Get(ctx, sp, ringpipe.Point{0, 0, 0})
	require.NoError(t, err)
	assert.False(t, rec.Tombstone)
	assert.Empty(t, rec.Value)

	// Spaces are separate: the same point elsewhere is untouched.
	other := createSpace(t, e, "other", 3, 10)
	_, err = e.Get(ctx, other, p)
	assert.ErrorIs(t, err, ringpipe.ErrNotFound)
	stop(t, e)
}

func TestBadWrites(t *testing.T) {
	ctx := ctxFor(t)
	cfg := realConfig(t, ringpipe.BackendAuto)
	cfg.MaxValueSize = 1024
	e := start(t, cfg)
	sp := createSpace(t, e, "s", 2, 4)
	wide := createSpace(t, e, "wide", 2, 32)
	const unknown = ringpipe.SpaceID(999)
	box := ringpipe.Box{Min: ringpipe.Point{0, 0}, Max: ringpipe.Point{15, 15}}

	t.Run("unknown space", func(t *testing.T) {
		_, err := e.Put(ctx, unknown, ringpipe.Point{1, 1}, []byte("v"))
		assert.ErrorIs(t, err, ringpipe.ErrUnknownSpace, "Put")
		_, err = e.Delete(ctx, unknown, ringpipe.Point{1, 1})
		assert.ErrorIs(t, err, ringpipe.ErrUnknownSpace, "Delete")
		_, err = e.PutAsync(ctx, unknown, ringpipe.Point{1, 1}, []byte("v"))
		assert.ErrorIs(t, err, ringpipe.ErrUnknownSpace, "PutAsync")
		_, err = e.Get(ctx, unknown, ringpipe.Point{1, 1})
		assert.ErrorIs(t, err, ringpipe.ErrUnknownSpace, "Get")
		_, err = e.View().Get(unknown, ringpipe.Point{1, 1})
		assert.ErrorIs(t, err, ringpipe.ErrUnknownSpace, "View.Get")
		err = e.Scan(ctx, unknown, box, func(ringpipe.Record) bool { return true })
		assert.ErrorIs(t, err, ringpipe.ErrUnknownSpace, "Scan")
		err = e.Flush(ctx, unknown)
		assert.ErrorIs(t, err, ringpipe.ErrUnknownSpace, "Flush")
	})

	t.Run("invalid point", func(t *testing.T) {
		for _, p := range []ringpipe.Point{{1}, {1, 2, 3}, nil, {16, 0}, {0, 16}, {0, 1 << 31}} {
			_, err := e.Put(ctx, sp, p, []byte("v"))
			assert.ErrorIs(t, err, ringpipe.ErrInvalidPoint, "Put %v", p)
			_, err = e.Delete(ctx, sp, p)
			assert.ErrorIs(t, err, ringpipe.ErrInvalidPoint, "Delete %v", p)
			_, err = e.PutAsync(ctx, sp, p, []byte("v"))
			assert.ErrorIs(t, err, ringpipe.ErrInvalidPoint, "PutAsync %v", p)
			_, err = e.Get(ctx, sp, p)
			assert.ErrorIs(t, err, ringpipe.ErrInvalidPoint, "Get %v", p)
		}
		// The largest coordinates are valid, including at Bits = 32.
		_, err := e.Put(ctx, sp, ringpipe.Point{15, 15}, []byte("corner"))
		assert.NoError(t, err)
		_, err = e.Put(ctx, wide, ringpipe.Point{1<<32 - 1, 1<<32 - 1}, []byte("corner"))
		assert.NoError(t, err)
		rec, err := e.Get(ctx, wide, ringpipe.Point{1<<32 - 1, 1<<32 - 1})
		require.NoError(t, err)
		assert.Equal(t, []byte("corner"), rec.Value)
		_, err = e.Get(ctx, sp, ringpipe.Point{14, 15})
		assert.ErrorIs(t, err, ringpipe.ErrNotFound)
	})

	t.Run("value too large", func(t *testing.T) {
		_, err := e.Put(ctx, sp, ringpipe.Point{2, 2}, make([]byte, 1025))
		assert.ErrorIs(t, err, ringpipe.ErrValueTooLarge, "Put")
		_, err = e.PutAsync(ctx, sp, ringpipe.Point{2, 2}, make([]byte, 1025))
		assert.ErrorIs(t, err, ringpipe.ErrValueTooLarge, "PutAsync")
		_, err = e.Get(ctx, sp, ringpipe.Point{2, 2})
		assert.ErrorIs(t, err, ringpipe.ErrNotFound, "a refused write is not applied")

		max := bytes.Repeat([]byte{0xa5}, 1024)
		_, err = e.Put(ctx, sp, ringpipe.Point{2, 2}, max)
		require.NoError(t, err, "a value of exactly MaxValueSize")
		rec, err := e.Get(ctx, sp, ringpipe.Point{2, 2})
		require.NoError(t, err)
		assert.Equal(t, max, rec.Value)
	})
	stop(t, e)
}

func TestPutAsync(t *testing.T) {
	ctx := ctxFor(t)
	e := start(t, realConfig(t, ringpipe.BackendAuto))
	sp := createSpace(t, e, "s", 1, 16)

	const n = 200
	tickets := make([]*ringpipe.Ticket, n)
	for i := range tickets {
		tk, err := e.PutAsync(ctx, sp, ringpipe.Point{uint32(i)}, fmt.Appendf(nil, "v%d", i))
		require.NoError(t, err)
		tickets[i] = tk
	}
	revs := make(map[ringpipe.Revision]bool)
	for i, tk := range tickets {
		select {
		case <-tk.Done():
		case <-ctx.Done():
			require.FailNow(t, "ticket not done", "ticket %d", i)
		}
		rev, err := tk.Wait(ctx)
		require.NoError(t, err)
		assert.NotZero(t, rev)
		assert.False(t, revs[rev], "revision %d given twice", rev)
		revs[rev] = true
		rec, err := e.Get(ctx, sp, ringpipe.Point{uint32(i)})
		require.NoError(t, err, "a done ticket's write is visible")
		assert.Equal(t, rev, rec.Revision)
		assert.Equal(t, fmt.Appendf(nil, "v%d", i), rec.Value)
	}
	// Revisions follow the order of queueing from one goroutine.
	for i := 1; i < n; i++ {
		r0, _ := tickets[i-1].Wait(ctx)
		r1, _ := tickets[i].Wait(ctx)
		assert.Less(t, r0, r1, "ticket %d", i)
	}
	// Wait on a ticket that is not done yet returns ctx's error when ctx
	// ends first; a later Wait still gets the result.
	tk, err := e.PutAsync(ctx, sp, ringpipe.Point{9999}, []byte("late"))
	require.NoError(t, err)
	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := tk.Wait(done); err != nil {
		assert.ErrorIs(t, err, context.Canceled)
	}
	_, err = tk.Wait(ctx)
	assert.NoError(t, err)
	stop(t, e)
}

func TestSync(t *testing.T) {
	ctx := ctxFor(t)
	e := start(t, realConfig(t, ringpipe.BackendAuto))
	require.NoError(t, e.Sync(ctx), "Sync with nothing written")
	sp := createSpace(t, e, "s", 1, 16)
	var tickets []*ringpipe.Ticket
	for i := range 100 {
		tk, err := e.PutAsync(ctx, sp, ringpipe.Point{uint32(i)}, []byte("x"))
		require.NoError(t, err)
		tickets = append(tickets, tk)
	}
	require.NoError(t, e.Sync(ctx))
	for i, tk := range tickets {
		_, err := tk.Wait(ctx)
		require.NoError(t, err, "ticket %d", i)
	}
	assert.GreaterOrEqual(t, e.Stats().DirectWrites+e.Stats().StagedWrites, uint64(len(tickets)))
	stop(t, e)
}

func TestFlush(t *testing.T) {
	ctx := ctxFor(t)
	e := start(t, realConfig(t, ringpipe.BackendAuto))
	spec := ringpipe.SpaceSpec{Name: "s", Dims: 2, Bits: 6}
	sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
	require.NoError(t, e.Flush(ctx, sp), "Flush of an empty space")

	m := newModel(spec)
	rng := rand.New(rand.NewSource(1))
	put := func(k int) {
		for range k {
			p := randPoint(rng, spec)
			if rng.Intn(5) == 0 {
				rev, err := e.Delete(ctx, sp, p)
				require.NoError(t, err)
				m.add(write{point: p, rev: rev})
				continue
			}
			v := fmt.Appendf(nil, "%v@%d", p, m.count)
			rev, err := e.Put(ctx, sp, p, v)
			require.NoError(t, err)
			m.add(write{point: p, rev: rev, value: v})
		}
	}

	before := e.Stats().SealedBlocks
	put(300)
	require.NoError(t, e.Flush(ctx, sp))
	after1 := e.Stats().SealedBlocks
	assert.Greater(t, after1, before, "Flush sealed a block")
	checkModel(t, engineReader(t, e), sp, m, fullBox(spec))

	// Overwrites and deletes after the flush win over the block; a second
	// block's tombstones hide the first block's records.
	put(300)
	checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
	require.NoError(t, e.Flush(ctx, sp))
	assert.Greater(t, e.Stats().SealedBlocks, after1, "second Flush sealed another block")
	checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
	put(100) // some in the tail, some in two blocks
	checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
	stop(t, e)
}

func TestScan(t *testing.T) {
	ctx := ctxFor(t)
	e := start(t, realConfig(t, ringpipe.BackendAuto))
	rng := rand.New(rand.NewSource(2))
	for _, spec := range []ringpipe.SpaceSpec{
		{Name: "line", Dims: 1, Bits: 10},
		{Name: "plane", Dims: 2, Bits: 5},
		{Name: "cube", Dims: 3, Bits: 4},
	} {
		t.Run(spec.Name, func(t *testing.T) {
			sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
			m := newModel(spec)
			for i := range 400 {
				if i == 250 {
					require.NoError(t, e.Flush(ctx, sp)) // part blocks, part tail
				}
				p := randPoint(rng, spec)
				if rng.Intn(6) == 0 {
					rev, err := e.Delete(ctx, sp, p)
					require.NoError(t, err)
					m.add(write{point: p, rev: rev})
					continue
				}
				v := fmt.Appendf(nil, "%d", i)
				rev, err := e.Put(ctx, sp, p, v)
				require.NoError(t, err)
				m.add(write{point: p, rev: rev, value: v})
			}
			r := engineReader(t, e)
			checkModel(t, r, sp, m, fullBox(spec))
			for range 20 {
				a, b := randPoint(rng, spec), randPoint(rng, spec)
				box := ringpipe.Box{Min: make(ringpipe.Point, spec.Dims), Max: make(ringpipe.Point, spec.Dims)}
				for i := range a {
					box.Min[i], box.Max[i] = min(a[i], b[i]), max(a[i], b[i])
				}
				checkModel(t, r, sp, m, box)
			}
			// A single-point box.
			p := randPoint(rng, spec)
			checkModel(t, r, sp, m, ringpipe.Box{Min: p, Max: p})

			// fn returning false stops the scan.
			want := m.live(fullBox(spec))
			require.Greater(t, len(want), 10)
			calls := 0
			require.NoError(t, e.Scan(ctx, sp, fullBox(spec), func(rec ringpipe.Record) bool {
				calls++
				return calls < 10
			}))
			assert.Equal(t, 10, calls)
		})
	}

	// Boxes of the wrong shape are errors; an empty box is not.
	plane := e.Spaces()[1]
	require.Equal(t, "plane", plane.Name)
	noCall := func(ringpipe.Record) bool { t.Error("fn called"); return true }
	err := e.Scan(ctx, plane.ID, ringpipe.Box{Min: ringpipe.Point{0}, Max: ringpipe.Point{31}}, noCall)
	assert.ErrorIs(t, err, ringpipe.ErrInvalidPoint, "a box of the wrong dimensions")
	err = e.Scan(ctx, plane.ID, ringpipe.Box{Min: ringpipe.Point{0, 0}, Max: ringpipe.Point{32, 31}}, noCall)
	assert.ErrorIs(t, err, ringpipe.ErrInvalidPoint, "a box beyond 2^Bits")
	err = e.Scan(ctx, plane.ID, ringpipe.Box{Min: ringpipe.Point{9, 9}, Max: ringpipe.Point{3, 3}}, noCall)
	assert.NoError(t, err, "a box with Min above Max is empty")

	// A cancelled context ends a Scan with its error.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	line := e.Spaces()[0]
	err = e.Scan(cctx, line.ID, fullBox(line.SpaceSpec), func(ringpipe.Record) bool { return true })
	assert.ErrorIs(t, err, context.Canceled)
	stop(t, e)
}

func TestViewStable(t *testing.T) {
	ctx := ctxFor(t)
	e := start(t, realConfig(t, ringpipe.BackendAuto))
	spec := ringpipe.SpaceSpec{Name: "s", Dims: 2, Bits: 4}
	sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
	m := newModel(spec)
	var last ringpipe.Revision
	for i := range 50 {
		p := ringpipe.Point{uint32(i % 16), uint32(i / 16)}
		v := fmt.Appendf(nil, "old%d", i)
		rev, err := e.Put(ctx, sp, p, v)
		require.NoError(t, err)
		m.add(write{point: p, rev: rev, value: v})
		last = rev
	}
	v := e.View()
	assert.GreaterOrEqual(t, v.Revision(), last, "a View reflects every returned Put")
	vrev := v.Revision()
	frozen := &model{spec: spec, last: maps.Clone(m.last), count: m.count}

	// Overwrite, delete, add, flush, create a space: none of it shows in v.
	for i := range 50 {
		p := ringpipe.Point{uint32(i % 16), uint32(i / 16)}
		var err error
		if i%3 == 0 {
			_, err = e.Delete(ctx, sp, p)
		} else {
			_, err = e.Put(ctx, sp, p, []byte("new"))
		}
		require.NoError(t, err)
	}
	_, err := e.Put(ctx, sp, ringpipe.Point{15, 15}, []byte("added"))
	require.NoError(t, err)
	require.NoError(t, e.Flush(ctx, sp))
	other := createSpace(t, e, "later", 1, 8)

	assert.Equal(t, vrev, v.Revision())
	checkModel(t, viewReader(v), sp, frozen, fullBox(spec))
	_, err = v.Get(other, ringpipe.Point{1})
	assert.ErrorIs(t, err, ringpipe.ErrUnknownSpace, "a space created after the View")
	assert.Greater(t, e.View().Revision(), vrev)

	// A View outlives the engine.
	stop(t, e)
	assert.Equal(t, vrev, v.Revision())
	checkModel(t, viewReader(v), sp, frozen, fullBox(spec))
}

func TestStopIdempotentConcurrent(t *testing.T) {
	ctx := ctxFor(t)
	e := start(t, realConfig(t, ringpipe.BackendAuto))
	sp := createSpace(t, e, "s", 1, 8)
	rev, err := e.Put(ctx, sp, ringpipe.Point{1}, []byte("kept"))
	require.NoError(t, err)
	v := e.View()

	const stoppers = 8
	errs := make(chan error, stoppers)
	var wg sync.WaitGroup
	for range stoppers {
		wg.Go(func() { errs <- e.Stop(ctx) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}
	assert.NoError(t, e.Stop(ctx), "Stop after Stop")

	_, err = e.Put(ctx, sp, ringpipe.Point{2}, []byte("v"))
	assert.ErrorIs(t, err, ringpipe.ErrStopped, "Put")
	_, err = e.Delete(ctx, sp, ringpipe.Point{1})
	assert.ErrorIs(t, err, ringpipe.ErrStopped, "Delete")
	_, err = e.PutAsync(ctx, sp, ringpipe.Point{2}, []byte("v"))
	assert.ErrorIs(t, err, ringpipe.ErrStopped, "PutAsync")
	_, err = e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "after", Dims: 1, Bits: 8})
	assert.ErrorIs(t, err, ringpipe.ErrStopped, "CreateSpace")
	assert.ErrorIs(t, e.Flush(ctx, sp), ringpipe.ErrStopped, "Flush")
	if err := e.Sync(ctx); err != nil {
		assert.ErrorIs(t, err, ringpipe.ErrStopped, "Sync")
	}
	rec, err := v.Get(sp, ringpipe.Point{1})
	require.NoError(t, err, "a View taken before Stop")
	assert.Equal(t, rev, rec.Revision)
}

func TestCancelledContext(t *testing.T) {
	ctx := ctxFor(t)
	e := start(t, realConfig(t, ringpipe.BackendAuto))
	sp := createSpace(t, e, "s", 1, 8)
	_, err := e.Put(ctx, sp, ringpipe.Point{1}, []byte("old"))
	require.NoError(t, err)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = e.Put(cctx, sp, ringpipe.Point{1}, []byte("new"))
	assert.ErrorIs(t, err, context.Canceled, "Put")
	_, err = e.Put(cctx, sp, ringpipe.Point{2}, []byte("new"))
	assert.ErrorIs(t, err, context.Canceled, "Put")
	_, err = e.Delete(cctx, sp, ringpipe.Point{1})
	assert.ErrorIs(t, err, context.Canceled, "Delete")
	tk, err := e.PutAsync(cctx, sp, ringpipe.Point{3}, []byte("new"))
	assert.ErrorIs(t, err, context.Canceled, "PutAsync")
	assert.Nil(t, tk)
	_, err = e.CreateSpace(cctx, ringpipe.SpaceSpec{Name: "cancelled", Dims: 1, Bits: 8})
	assert.Error(t, err, "CreateSpace")
	_, err = e.Get(cctx, sp, ringpipe.Point{1})
	assert.ErrorIs(t, err, context.Canceled, "Get")

	// Nothing of it was applied, even once everything queued is durable.
	require.NoError(t, e.Sync(ctx))
	rec, err := e.Get(ctx, sp, ringpipe.Point{1})
	require.NoError(t, err)
	assert.Equal(t, []byte("old"), rec.Value)
	for _, p := range []ringpipe.Point{{2}, {3}} {
		_, err = e.Get(ctx, sp, p)
		assert.ErrorIs(t, err, ringpipe.ErrNotFound, "%v", p)
	}
	for _, s := range e.Spaces() {
		assert.NotEqual(t, "cancelled", s.Name)
	}
	stop(t, e)
}

func TestStats(t *testing.T) {
	for _, b := range []ringpipe.Backend{ringpipe.BackendAuto, ringpipe.BackendStd} {
		t.Run(b.String(), func(t *testing.T) {
			ctx := ctxFor(t)
			e := start(t, realConfig(t, b))
			st := e.Stats()
			assert.Contains(t, []string{"uring", "std"}, st.Backend)
			if b == ringpipe.BackendStd {
				assert.Equal(t, "std", st.Backend)
			}
			assert.NotEmpty(t, st.KernelVersion)
			assert.Zero(t, st.WriteLatency.Count, "no writes yet")

			sp := createSpace(t, e, "s", 1, 16)
			const n = 40
			for i := range n {
				_, err := e.Put(ctx, sp, ringpipe.Point{uint32(i)}, []byte("v"))
				require.NoError(t, err)
			}
			// The counters may trail the acknowledgements by a moment
			// (TestStatsCountOnReturn is stricter).
			waitFor(t, e, "every write counted", func(st ringpipe.Stats) bool {
				return st.WriteLatency.Count >= n && st.DirectWrites+st.StagedWrites >= n
			})
			st = e.Stats()
			assert.GreaterOrEqual(t, st.WriteLatency.Count, uint64(n))
			assert.Positive(t, st.WriteLatency.Max)
			assert.LessOrEqual(t, st.WriteLatency.P50, st.WriteLatency.P99)
			assert.LessOrEqual(t, st.WriteLatency.P99, st.WriteLatency.P999)
			assert.LessOrEqual(t, st.WriteLatency.P999, st.WriteLatency.Max)
			assert.Positive(t, st.DirectWrites)
			assert.GreaterOrEqual(t, st.DirectWrites+st.StagedWrites, uint64(n))
			// Not quiet here: a record may be promoted before the publisher
			// counts its staged acknowledgement, so Promoted is bounded by
			// all writes (test/stats_audit_test.go checks the exact
			// invariant on a quiet engine).
			assert.LessOrEqual(t, st.Promoted, st.DirectWrites+st.StagedWrites)
			assert.GreaterOrEqual(t, st.StagedPending, 0)
			assert.Positive(t, st.Syncs)
			assert.Positive(t, st.SyncLatency.Count)
			assert.LessOrEqual(t, st.SyncLatency.P50, st.SyncLatency.Max)
			assert.GreaterOrEqual(t, st.QueueDepth, 0)
			for name, c := range st.ActorRestarts {
				assert.Zero(t, c, "restarts of %s in a healthy run", name)
			}
			stop(t, e)
			if t.Failed() {
				t.Logf("stats: %+v", st)
			}
		})
	}
}

// TestStopCancelledContext: a Stop whose context has already ended still
// stops every goroutine (goleak checks) and releases the directory, and
// what Put acknowledged is kept.
func TestStopCancelledContext(t *testing.T) {
	cfg := realConfig(t, ringpipe.BackendAuto)
	e := start(t, cfg)
	sp := createSpace(t, e, "s", 1, 8)
	rev, err := e.Put(ctxFor(t), sp, ringpipe.Point{4}, []byte("kept"))
	require.NoError(t, err)

	done, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.Stop(done); err != nil {
		assert.ErrorIs(t, err, context.Canceled)
	}
	_, err = e.Put(ctxFor(t), sp, ringpipe.Point{5}, []byte("v"))
	assert.ErrorIs(t, err, ringpipe.ErrStopped)

	e = start(t, cfg)
	rec, err := e.Get(ctxFor(t), sp, ringpipe.Point{4})
	require.NoError(t, err)
	assert.Equal(t, rev, rec.Revision)
	stop(t, e)
}

// TestFailed: when every data file fails with EIO, actors fail until the
// restart limit is exceeded; writes are then refused with ErrFailed, reads
// still work, Stop returns, and a new Start on the healed disk has every
// acknowledged write and nothing half-applied.
func TestFailed(t *testing.T) {
	disk := newSimDisk(t, 5)
	cfg := simConfig(t, disk)
	e, err := ringpipe.Start(ctxFor(t), cfg)
	require.NoError(t, err)
	stopped := false
	defer func() {
		if !stopped {
			_ = e.Stop(ctxFor(t))
		}
	}()
	ctx := ctxFor(t)
	spec := ringpipe.SpaceSpec{Name: "s", Dims: 1, Bits: 16}
	sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
	m := newModel(spec)
	for i := range 20 {
		p := ringpipe.Point{uint32(i)}
		v := fmt.Appendf(nil, "good%d", i)
		rev, err := e.Put(ctx, sp, p, v)
		require.NoError(t, err)
		m.add(write{point: p, rev: rev, value: v})
	}

	disk.Inject(sim.Fault{Kind: sim.EIO, Path: simDir + "/", Persist: true})
	type failedPut struct {
		p ringpipe.Point
		v []byte
	}
	var failed []failedPut
	deadline := time.Now().Add(eventualTimeout)
	var lastErr error
	for i := 0; !errors.Is(lastErr, ringpipe.ErrFailed); i++ {
		require.True(t, time.Now().Before(deadline), "no ErrFailed after %d writes; last error %v; stats %+v", i, lastErr, e.Stats())
		p := ringpipe.Point{uint32(1000 + i)}
		v := fmt.Appendf(nil, "doomed%d", i)
		rev, err := e.Put(ctx, sp, p, v)
		require.NotErrorIs(t, err, context.DeadlineExceeded, "a Put hung on a failing disk")
		if err == nil {
			m.add(write{point: p, rev: rev, value: v}) // routed around the failure somehow
			continue
		}
		failed = append(failed, failedPut{p, v})
		lastErr = err
	}
	restarts := uint64(0)
	for _, n := range e.Stats().ActorRestarts {
		restarts += n
	}
	assert.Positive(t, restarts, "ActorRestarts after failures")

	// Writes are refused; reads work.
	_, err = e.Put(ctx, sp, ringpipe.Point{7}, []byte("refused"))
	assert.ErrorIs(t, err, ringpipe.ErrFailed, "Put")
	_, err = e.Delete(ctx, sp, ringpipe.Point{7})
	assert.ErrorIs(t, err, ringpipe.ErrFailed, "Delete")
	_, err = e.PutAsync(ctx, sp, ringpipe.Point{7}, []byte("refused"))
	assert.ErrorIs(t, err, ringpipe.ErrFailed, "PutAsync")
	checkModel(t, engineReader(t, e), sp, m, fullBox(spec))

	err = e.Stop(ctx)
	stopped = true
	t.Logf("Stop of a failed engine: %v", err)
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "Stop of a failed engine hung")

	disk.ClearFaults()
	e = start(t, cfg)
	for _, f := range failed {
		rec, err := e.Get(ctx, sp, f.p)
		if err == nil {
			assert.Equal(t, f.v, rec.Value, "a failed write is present whole or not at all")
			m.add(write{point: f.p, rev: rec.Revision, value: f.v})
		} else {
			assert.ErrorIs(t, err, ringpipe.ErrNotFound)
		}
	}
	checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
	stop(t, e)
}

// TestCorrupt: a flipped bit in the middle of a hot segment, with valid
// writes after it, is corruption, not a torn tail: Start refuses it with a
// *CorruptionError that names the file.
func TestCorrupt(t *testing.T) {
	disk, cfg, sp, target := crashedHotSegment(t)
	data, err := disk.ReadFile(target)
	require.NoError(t, err)
	require.Greater(t, len(data), 64)
	// Byte 28 is the first payload byte of the first frame (after its
	// 28-byte header): its data CRC no longer matches, and the later
	// batches are valid.
	require.NoError(t, disk.FlipBit(target, 28*8+3))

	_, err = ringpipe.Start(ctxFor(t), cfg)
	require.Error(t, err)
	assert.ErrorIs(t, err, ringpipe.ErrCorrupt)
	var ce *ringpipe.CorruptionError
	if assert.ErrorAs(t, err, &ce) {
		assert.Equal(t, strings.TrimPrefix(target, simDir+"/"), ce.Path, "Path is relative to Config.Dir")
		assert.Less(t, ce.Offset, int64(4096))
		assert.NotEmpty(t, ce.Reason)
	}

	// A refused Start released the directory: repairing the bit lets it in.
	require.NoError(t, disk.FlipBit(target, 28*8+3))
	e := start(t, cfg)
	rec, err := e.Get(ctxFor(t), sp, ringpipe.Point{49})
	require.NoError(t, err)
	assert.Equal(t, []byte("value 49"), rec.Value)
	stop(t, e)
}

// crashedHotSegment writes 50 records ("value i" at point i) into a 1-D
// space of an engine on a simulated disk and crashes the process, so that
// the hot segment is still there (Stop would seal and retire it; the
// acknowledged writes are durable anyway). It returns the disk, the
// engine's Config, the space and the hot segment's path on the disk.
func crashedHotSegment(t *testing.T) (*sim.Disk, ringpipe.Config, ringpipe.SpaceID, string) {
	t.Helper()
	disk := newSimDisk(t, 6)
	cfg := simConfig(t, disk)
	e := start(t, cfg)
	sp := createSpace(t, e, "s", 1, 16)
	for i := range 50 {
		_, err := e.Put(ctxFor(t), sp, ringpipe.Point{uint32(i)}, fmt.Appendf(nil, "value %d", i))
		require.NoError(t, err)
	}
	disk.Crash()
	sctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	t.Logf("Stop after a crash: %v", e.Stop(sctx))
	var target string
	for _, f := range disk.Files() {
		if strings.HasPrefix(f, hotPrefix(sp)) && strings.HasSuffix(f, ".seg") {
			target = f
		}
	}
	require.NotEmpty(t, target, "no hot segment of space %d among %v", sp, disk.Files())
	return disk, cfg, sp, target
}

// TestStatsCountOnReturn: once Put has returned, its write is acknowledged,
// so Stats counts it (DirectWrites or StagedWrites, and WriteLatency).
func TestStatsCountOnReturn(t *testing.T) {
	ctx := ctxFor(t)
	e := start(t, realConfig(t, ringpipe.BackendStd))
	sp := createSpace(t, e, "s", 1, 16)
	for i := range 100 {
		_, err := e.Put(ctx, sp, ringpipe.Point{uint32(i)}, []byte("v"))
		require.NoError(t, err)
		st := e.Stats()
		require.Equal(t, uint64(i+1), st.DirectWrites+st.StagedWrites, "acknowledged writes counted after Put %d returned", i)
		require.Equal(t, uint64(i+1), st.WriteLatency.Count, "write latencies recorded after Put %d returned", i)
	}
	stop(t, e)
}

// TestCreateSpaceVisibleAtOnce: a space is in every View taken after
// CreateSpace returns (the publisher answered CreateSpace before it
// published the View holding the space: a Get right after could say
// ErrUnknownSpace).
func TestCreateSpaceVisibleAtOnce(t *testing.T) {
	ctx := ctxFor(t)
	e := start(t, simConfig(t, newSimDisk(t, 7)))
	for i := range 300 {
		sp, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: fmt.Sprintf("s%d", i), Dims: 1, Bits: 8})
		require.NoError(t, err)
		_, err = e.Get(ctx, sp, ringpipe.Point{1})
		require.ErrorIs(t, err, ringpipe.ErrNotFound, "space %d right after CreateSpace", i)
		require.NoError(t, e.Scan(ctx, sp, ringpipe.Box{Min: ringpipe.Point{0}, Max: ringpipe.Point{255}}, func(ringpipe.Record) bool { return true }))
	}
	stop(t, e)
}
