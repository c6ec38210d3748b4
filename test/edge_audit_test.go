package test

// The input-edges audit: every boundary of SpaceSpec, points of every
// wrong shape, values at and around their limits (nil, empty, every byte,
// MaxValueSize, values larger than SealBytes), revisions across restarts
// and power loss, CreateSpace raced and cancelled, and deletes of points
// never written. It extends TestContractSpaceSpecLimits, TestBadWrites,
// TestContractEmptyValueIsLive, TestCreateSpace and the errors audit into
// what they do not cover.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// edgeNoPanic runs fn and turns a panic into a test failure (and an error)
// so that one bad input does not end the whole table.
func edgeNoPanic(t *testing.T, what string, fn func() error) (err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("%s panicked: %v", what, r)
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return fn()
}

// edgeRestart stops e (cleanly) and starts a new engine with cfg (on
// the same simulated disk or directory).
func edgeRestart(t *testing.T, e *ringpipe.Engine, cfg ringpipe.Config) *ringpipe.Engine {
	t.Helper()
	stop(t, e)
	return start(t, cfg)
}

// edgePowerLoss cuts the power under e and starts a new engine on the
// disk: only what was durable survives.
func edgePowerLoss(t *testing.T, disk *sim.Disk, e *ringpipe.Engine, cfg ringpipe.Config, seed int64) *ringpipe.Engine {
	t.Helper()
	t.Logf("power loss, seed %d", seed)
	disk.PowerLoss(rand.New(rand.NewSource(seed)))
	sctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	_ = e.Stop(sctx) // the process is dead: only release what it held
	return start(t, cfg)
}

// edgeSpecPoints are distinct points of spec on its corners: all zeros,
// all 2^Bits-1, and alternating.
func edgeSpecPoints(spec ringpipe.SpaceSpec) []ringpipe.Point {
	top := uint32(uint64(1)<<spec.Bits - 1)
	lo, hi, alt := make(ringpipe.Point, spec.Dims), make(ringpipe.Point, spec.Dims), make(ringpipe.Point, spec.Dims)
	for i := range hi {
		hi[i] = top
		if i%2 == 0 {
			alt[i] = top
		}
	}
	out := []ringpipe.Point{lo, hi}
	if !slices.Equal(alt, hi) {
		out = append(out, alt)
	}
	return out
}

// TestEdgeSpaceSpecGrid: every spec of Dims 0..17 and 64 by Bits 0..33 is
// accepted exactly when 1 <= Dims <= 16, 1 <= Bits <= 32 and Dims*Bits <=
// 64; a refused one is named by the field and value at fault and is not
// listed. On every accepted spec the corner points (coordinates 0 and
// 2^Bits-1) are written and read back by Get, by a Scan of the whole
// space and by a Scan of a box of each corner alone, from the tail, from a block (every other space is flushed) and
// after a restart; a coordinate of 2^Bits, on any dimension, is
// ErrInvalidPoint naming the coordinate, its value and the limit.
func TestEdgeSpaceSpecGrid(t *testing.T) {
	const seed = 301
	t.Logf("sim seed %d", seed)
	disk := newSimDisk(t, seed)
	cfg := simConfig(t, disk)
	e := start(t, cfg)
	ctx := ctxFor(t)

	type made struct {
		id     ringpipe.SpaceID
		spec   ringpipe.SpaceSpec
		points []ringpipe.Point
		revs   []ringpipe.Revision
	}
	var spaces []*made
	dimsList := []int{64}
	for d := 0; d <= 17; d++ {
		dimsList = append(dimsList, d)
	}
	for _, dims := range dimsList {
		for bits := 0; bits <= 33; bits++ {
			spec := ringpipe.SpaceSpec{Name: fmt.Sprintf("d%db%d", dims, bits), Dims: dims, Bits: bits}
			id, err := e.CreateSpace(ctx, spec)
			valid := dims >= 1 && dims <= 16 && bits >= 1 && bits <= 32 && dims*bits <= 64
			if !valid {
				if !assert.Error(t, err, "%+v accepted", spec) {
					continue
				}
				msg := err.Error()
				switch {
				case dims < 1 || dims > 16:
					assert.Contains(t, msg, fmt.Sprintf("Dims %d not in 1..16", dims), "%+v", spec)
				case bits < 1 || bits > 32:
					assert.Contains(t, msg, fmt.Sprintf("Bits %d not in 1..32", bits), "%+v", spec)
				default:
					assert.Contains(t, msg, fmt.Sprintf("Dims*Bits = %d*%d = %d exceeds 64", dims, bits, dims*bits), "%+v", spec)
				}
				assert.NotErrorIs(t, err, ringpipe.ErrSpaceExists, "%+v", spec)
				continue
			}
			require.NoError(t, err, "%+v", spec)
			m := &made{id: id, spec: spec, points: edgeSpecPoints(spec)}
			spaces = append(spaces, m)
			// One past the limit on each dimension in turn.
			if bits < 32 {
				lim := uint32(1) << bits
				for i := range dims {
					p := make(ringpipe.Point, dims)
					p[i] = lim
					_, err := e.PutAsync(ctx, id, p, []byte("x"))
					if assert.ErrorIs(t, err, ringpipe.ErrInvalidPoint, "%s: %v", spec.Name, p) {
						assert.Contains(t, err.Error(), fmt.Sprintf("coordinate %d is %d, the space's %d bits allow at most %d", i, lim, bits, lim-1))
					}
				}
			}
		}
	}
	// Valid specs: sum over Dims of min(32, 64/Dims).
	want := 0
	for d := 1; d <= 16; d++ {
		want += min(32, 64/d)
	}
	require.Len(t, spaces, want, "accepted specs")
	listed := e.Spaces()
	require.Len(t, listed, want, "Spaces lists exactly the accepted specs")
	for _, m := range spaces {
		assert.Contains(t, listed, ringpipe.SpaceInfo{ID: m.id, SpaceSpec: m.spec})
	}

	var tickets []*ringpipe.Ticket
	for _, m := range spaces {
		for j, p := range m.points {
			tk, err := e.PutAsync(ctx, m.id, p, fmt.Appendf(nil, "%s/%d", m.spec.Name, j))
			require.NoError(t, err, "%s %v", m.spec.Name, p)
			tickets = append(tickets, tk)
		}
	}
	k := 0
	for _, m := range spaces {
		for range m.points {
			rev, err := tickets[k].Wait(ctx)
			require.NoError(t, err)
			m.revs = append(m.revs, rev)
			k++
		}
	}
	check := func(t *testing.T, e *ringpipe.Engine) {
		for _, m := range spaces {
			for j, p := range m.points {
				rec, err := e.Get(ctx, m.id, p)
				if assert.NoError(t, err, "%s: Get %v", m.spec.Name, p) {
					assert.Equal(t, ringpipe.Record{Space: m.id, Point: p, Revision: m.revs[j],
						Value: fmt.Appendf(nil, "%s/%d", m.spec.Name, j)}, rec, "%s: Get %v", m.spec.Name, p)
				}
			}
			var got []ringpipe.Point
			err := e.Scan(ctx, m.id, fullBox(m.spec), func(r ringpipe.Record) bool {
				got = append(got, r.Point)
				return true
			})
			if assert.NoError(t, err, "%s: Scan", m.spec.Name) {
				assert.ElementsMatch(t, m.points, got, "%s: Scan of the whole space", m.spec.Name)
			}
			// A box of one point at each corner (at 2^32-1, Max+1
			// overflows a uint32).
			for _, p := range m.points {
				got = got[:0]
				err := e.Scan(ctx, m.id, ringpipe.Box{Min: p, Max: p}, func(r ringpipe.Record) bool {
					got = append(got, r.Point)
					return true
				})
				if assert.NoError(t, err, "%s: Scan of %v", m.spec.Name, p) {
					assert.Equal(t, []ringpipe.Point{p}, got, "%s: Scan of the box of %v alone", m.spec.Name, p)
				}
			}
		}
	}
	t.Run("tail", func(t *testing.T) { check(t, e) })
	for i, m := range spaces {
		if i%2 == 0 {
			require.NoError(t, e.Flush(ctx, m.id), "Flush %s", m.spec.Name)
		}
	}
	t.Run("half in blocks", func(t *testing.T) { check(t, e) })
	e = edgeRestart(t, e, cfg)
	t.Run("restart", func(t *testing.T) {
		check(t, e)
		assert.Equal(t, listed, e.Spaces(), "IDs and specs after a restart")
	})
	stop(t, e)
}

// TestEdgeBadPointShapes: nil, empty, too few, too many and far too many
// coordinates, and a coordinate of 2^Bits, are ErrInvalidPoint on Put,
// Delete, PutAsync, Get, View.Get, Scan and View.Scan (as either corner of
// a box) in spaces of 1, 2 and 16 dimensions; nothing panics, and no
// write is applied: no record, View.Revision and the write counters do
// not move, and the next good write's revision is the one after the last
// good write's.
func TestEdgeBadPointShapes(t *testing.T) {
	const seed = 302
	t.Logf("sim seed %d", seed)
	e := start(t, simConfig(t, newSimDisk(t, seed)))
	ctx := ctxFor(t)
	specs := []ringpipe.SpaceSpec{
		{Name: "line", Dims: 1, Bits: 8},
		{Name: "wide", Dims: 2, Bits: 32},
		{Name: "hyper", Dims: 16, Bits: 4},
	}
	ids := make([]ringpipe.SpaceID, len(specs))
	for i, s := range specs {
		ids[i] = createSpace(t, e, s.Name, s.Dims, s.Bits)
	}
	last, err := e.Put(ctx, ids[0], ringpipe.Point{0}, []byte("good"))
	require.NoError(t, err)
	viewRev := e.View().Revision()
	st := e.Stats()
	writes := st.DirectWrites + st.StagedWrites

	for i, spec := range specs {
		sp := ids[i]
		good := make(ringpipe.Point, spec.Dims)
		bad := map[string]ringpipe.Point{
			"nil":      nil,
			"empty":    {},
			"Dims+1":   make(ringpipe.Point, spec.Dims+1),
			"1000":     make(ringpipe.Point, 1000),
			"17 zeros": make(ringpipe.Point, 17),
		}
		if spec.Dims > 1 {
			bad["Dims-1"] = make(ringpipe.Point, spec.Dims-1)
		}
		if spec.Bits < 32 {
			p := make(ringpipe.Point, spec.Dims)
			p[spec.Dims-1] = 1 << spec.Bits
			bad["2^Bits"] = p
		}
		for name, p := range bad {
			what := fmt.Sprintf("%s: %s point", spec.Name, name)
			v := e.View()
			ops := map[string]func() error{
				"Put":       func() error { _, err := e.Put(ctx, sp, p, []byte("v")); return err },
				"Put nil":   func() error { _, err := e.Put(ctx, sp, p, nil); return err },
				"Delete":    func() error { _, err := e.Delete(ctx, sp, p); return err },
				"PutAsync":  func() error { _, err := e.PutAsync(ctx, sp, p, []byte("v")); return err },
				"Get":       func() error { _, err := e.Get(ctx, sp, p); return err },
				"View.Get":  func() error { _, err := v.Get(sp, p); return err },
				"Scan":      func() error { return e.Scan(ctx, sp, ringpipe.Box{Min: p, Max: p}, noCall(t)) },
				"Scan Min":  func() error { return e.Scan(ctx, sp, ringpipe.Box{Min: p, Max: good}, noCall(t)) },
				"Scan Max":  func() error { return e.Scan(ctx, sp, ringpipe.Box{Min: good, Max: p}, noCall(t)) },
				"View.Scan": func() error { return v.Scan(sp, ringpipe.Box{Min: good, Max: p}, noCall(t)) },
			}
			for op, fn := range ops {
				err := edgeNoPanic(t, what+" "+op, fn)
				assert.ErrorIs(t, err, ringpipe.ErrInvalidPoint, "%s: %s", what, op)
			}
		}
		n := 0
		require.NoError(t, e.Scan(ctx, sp, fullBox(spec), func(ringpipe.Record) bool { n++; return true }))
		want := 0
		if i == 0 {
			want = 1
		}
		assert.Equal(t, want, n, "%s: records after refused writes", spec.Name)
	}
	assert.Equal(t, viewRev, e.View().Revision(), "refused writes moved View.Revision")
	st = e.Stats()
	assert.Equal(t, writes, st.DirectWrites+st.StagedWrites, "refused writes were acknowledged")
	next, err := e.Put(ctx, ids[2], make(ringpipe.Point, 16), []byte("good"))
	require.NoError(t, err)
	assert.Equal(t, last+1, next, "a refused write took a revision")
	stop(t, e)
}

// edgeEmptyAndBytes writes, in space sp (1 dim, 9 bits): nil and empty
// values by Put and PutAsync at points 0..3, a value of every byte 0..255
// at point 4, and at points 256+b a one-byte value b for every b. It
// returns what each point must read back.
func edgeEmptyAndBytes(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID) map[uint32][]byte {
	t.Helper()
	ctx := ctxFor(t)
	want := map[uint32][]byte{}
	_, err := e.Put(ctx, sp, ringpipe.Point{0}, nil)
	require.NoError(t, err)
	_, err = e.Put(ctx, sp, ringpipe.Point{1}, []byte{})
	require.NoError(t, err)
	var tickets []*ringpipe.Ticket
	tk, err := e.PutAsync(ctx, sp, ringpipe.Point{2}, nil)
	require.NoError(t, err)
	tickets = append(tickets, tk)
	tk, err = e.PutAsync(ctx, sp, ringpipe.Point{3}, make([]byte, 0, 64))
	require.NoError(t, err)
	tickets = append(tickets, tk)
	for p := range uint32(4) {
		want[p] = []byte{}
	}
	all := make([]byte, 256)
	for b := range all {
		all[b] = byte(b)
	}
	_, err = e.Put(ctx, sp, ringpipe.Point{4}, all)
	require.NoError(t, err)
	want[4] = slices.Clone(all)
	for b := range 256 {
		tk, err := e.PutAsync(ctx, sp, ringpipe.Point{uint32(256 + b)}, []byte{byte(b)})
		require.NoError(t, err)
		tickets = append(tickets, tk)
		want[uint32(256+b)] = []byte{byte(b)}
	}
	for _, tk := range tickets {
		_, err := tk.Wait(ctx)
		require.NoError(t, err)
	}
	return want
}

// edgeCheckValues checks that Get, View.Get and Scan return want's values,
// an empty value as a non-nil empty slice (nil is a tombstone's Value),
// never a tombstone.
func edgeCheckValues(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID, want map[uint32][]byte) {
	t.Helper()
	ctx := ctxFor(t)
	v := e.View()
	for p, val := range want {
		for name, get := range map[string]func() (ringpipe.Record, error){
			"Get":      func() (ringpipe.Record, error) { return e.Get(ctx, sp, ringpipe.Point{p}) },
			"View.Get": func() (ringpipe.Record, error) { return v.Get(sp, ringpipe.Point{p}) },
		} {
			rec, err := get()
			if !assert.NoError(t, err, "%s %d", name, p) {
				continue
			}
			assert.False(t, rec.Tombstone, "%s %d: Tombstone", name, p)
			assert.Equal(t, val, rec.Value, "%s %d: Value", name, p)
			if len(val) == 0 {
				assert.NotNil(t, rec.Value, "%s %d: an empty value read back as nil (a tombstone's Value)", name, p)
			}
		}
	}
	got := map[uint32][]byte{}
	require.NoError(t, e.Scan(ctx, sp, ringpipe.Box{Min: ringpipe.Point{0}, Max: ringpipe.Point{511}}, func(r ringpipe.Record) bool {
		assert.False(t, r.Tombstone, "Scan %v: Tombstone", r.Point)
		if len(r.Value) == 0 {
			assert.NotNil(t, r.Value, "Scan %v: an empty value read back as nil", r.Point)
		}
		got[r.Point[0]] = r.Value
		return true
	}))
	assert.Equal(t, want, got, "Scan")
}

// TestEdgeValuesEmptyAndEveryByte: a nil and an empty value, by Put and by
// PutAsync, are the same thing: a live record (Tombstone false) whose
// Value is a non-nil empty slice, through Get, View.Get and Scan, from the
// tail, from a block and after a restart; and a value holding every byte
// value, and one-byte values of every byte, read back unchanged. On the
// simulated disk (with a power loss after the acknowledgements too) and
// on real directories with both backends.
func TestEdgeValuesEmptyAndEveryByte(t *testing.T) {
	run := func(t *testing.T, cfg ringpipe.Config, disk *sim.Disk) {
		e := start(t, cfg)
		sp := createSpace(t, e, "bytes", 1, 9)
		want := edgeEmptyAndBytes(t, e, sp)
		t.Run("tail", func(t *testing.T) { edgeCheckValues(t, e, sp, want) })
		require.NoError(t, e.Flush(ctxFor(t), sp))
		t.Run("block", func(t *testing.T) { edgeCheckValues(t, e, sp, want) })
		// And again into a fresh tail, over the block, then a restart
		// replays the tail from the hot log.
		_, err := e.Put(ctxFor(t), sp, ringpipe.Point{5}, nil)
		require.NoError(t, err)
		want[5] = []byte{}
		_, err = e.Put(ctxFor(t), sp, ringpipe.Point{4}, []byte{})
		require.NoError(t, err)
		want[4] = []byte{}
		if disk != nil {
			e = edgePowerLoss(t, disk, e, cfg, 303)
			t.Run("power loss", func(t *testing.T) { edgeCheckValues(t, e, sp, want) })
		}
		e = edgeRestart(t, e, cfg)
		t.Run("restart", func(t *testing.T) { edgeCheckValues(t, e, sp, want) })
		require.NoError(t, e.Flush(ctxFor(t), sp))
		t.Run("restart, block", func(t *testing.T) { edgeCheckValues(t, e, sp, want) })
		stop(t, e)
	}
	t.Run("sim", func(t *testing.T) {
		t.Logf("sim seed %d", 303)
		disk := newSimDisk(t, 303)
		run(t, simConfig(t, disk), disk)
	})
	t.Run("std", func(t *testing.T) { run(t, realConfig(t, ringpipe.BackendStd), nil) })
	t.Run("uring", func(t *testing.T) { run(t, realConfig(t, ringpipe.BackendURing), nil) })
}

// edgeMaxValueRe finds the limit in ErrValueTooLarge's message.
var edgeMaxValueRe = regexp.MustCompile(`Config\.MaxValueSize is (\d+)`)

// edgeValue is n bytes of a pattern that names seed, so that a value read
// from the wrong record or the wrong offset is seen.
func edgeValue(n int, seed byte) []byte {
	v := make([]byte, n)
	for i := range v {
		v[i] = byte(i*7) ^ seed
	}
	return v
}

// edgeBigValues runs the large-value scenario on cfg: a value of exactly
// the engine's MaxValueSize (read from ErrValueTooLarge's message, checked
// against wantMax when it is not 0) in a 16-dimension space (the largest
// record) is accepted and one byte more is ErrValueTooLarge; then values
// of that size and small ones between them, into one space and
// another, all read back from the tail, after a Flush and after a
// restart. rounds says how many values of MaxValueSize go to each space
// before the Flush. Every call is bounded (a stall fails with a goroutine dump).
func edgeBigValues(t *testing.T, cfg ringpipe.Config, restart func(*ringpipe.Engine) *ringpipe.Engine, wantMax, rounds int) {
	e := start(t, cfg)
	ctx := ctxFor(t)
	wide := createSpace(t, e, "wide", 16, 4)
	line := createSpace(t, e, "line", 1, 8)
	_, err := e.Put(ctx, wide, make(ringpipe.Point, 16), make([]byte, 64<<20+1))
	require.ErrorIs(t, err, ringpipe.ErrValueTooLarge)
	m := edgeMaxValueRe.FindStringSubmatch(err.Error())
	require.NotNil(t, m, "no limit in %q", err)
	maxSize, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	t.Logf("MaxValueSize %d (Preallocate %d, SealBytes %d)", maxSize, cfg.Preallocate, cfg.SealBytes)
	if wantMax != 0 {
		require.Equal(t, wantMax, maxSize, "MaxValueSize")
	}

	_, err = e.Put(ctx, wide, make(ringpipe.Point, 16), make([]byte, maxSize+1))
	assert.ErrorIs(t, err, ringpipe.ErrValueTooLarge, "MaxValueSize+1 bytes")
	_, err = e.PutAsync(ctx, line, ringpipe.Point{9}, make([]byte, maxSize+1))
	assert.ErrorIs(t, err, ringpipe.ErrValueTooLarge, "MaxValueSize+1 bytes, PutAsync in a 1-D space")

	type put struct {
		sp  ringpipe.SpaceID
		p   ringpipe.Point
		val []byte
		rev ringpipe.Revision
	}
	wp := func(i int) ringpipe.Point {
		p := make(ringpipe.Point, 16)
		p[i%16] = uint32(i % 16)
		p[15] = 15
		return p
	}
	var puts []*put
	for i := range rounds {
		puts = append(puts, &put{sp: wide, p: wp(i), val: edgeValue(maxSize, byte(i))})
		puts = append(puts, &put{sp: line, p: ringpipe.Point{uint32(i)}, val: edgeValue(100, byte(i))})
		puts = append(puts, &put{sp: line, p: ringpipe.Point{uint32(100 + i)}, val: edgeValue(maxSize, byte(100+i))})
	}
	within(t, "Puts of values of MaxValueSize", func() {
		for i, w := range puts {
			rev, err := e.Put(ctx, w.sp, w.p, w.val)
			if !assert.NoError(t, err, "Put %d (%d bytes)", i, len(w.val)) {
				return
			}
			w.rev = rev
		}
	})
	check := func(t *testing.T, e *ringpipe.Engine) {
		within(t, "reads of values of MaxValueSize", func() {
			for i, w := range puts {
				rec, err := e.Get(ctx, w.sp, w.p)
				if assert.NoError(t, err, "Get %d", i) {
					assert.Equal(t, w.rev, rec.Revision, "Get %d: revision", i)
					assert.True(t, bytes.Equal(w.val, rec.Value), "Get %d: value of %d bytes read back as %d bytes", i, len(w.val), len(rec.Value))
				}
			}
		})
	}
	t.Run("tail", func(t *testing.T) { check(t, e) })
	within(t, "Flush", func() {
		assert.NoError(t, e.Flush(ctx, wide))
		assert.NoError(t, e.Flush(ctx, line))
	})
	t.Run("block", func(t *testing.T) { check(t, e) })
	// Once more into the tail, then a restart replays it.
	within(t, "Put after Flush", func() {
		rev, err := e.Put(ctx, line, ringpipe.Point{200}, edgeValue(maxSize, 200))
		if assert.NoError(t, err) {
			puts = append(puts, &put{sp: line, p: ringpipe.Point{200}, val: edgeValue(maxSize, 200), rev: rev})
		}
	})
	e2 := restart(e) // Stop and Start, each bounded by opTimeout
	t.Run("restart", func(t *testing.T) { check(t, e2) })
	stop(t, e2)
}

// TestEdgeMaxValueSize: values at MaxValueSize where it is larger than
// SealBytes and close to the log files' Preallocate.
func TestEdgeMaxValueSize(t *testing.T) {
	// Default MaxValueSize shrinks to what a 1 MiB log file holds
	// (README: "about 1 MiB − 4 KiB"); SealBytes default (4 MiB) is above
	// a log file's size, so a hot segment holding one such record cannot
	// take the next.
	t.Run("sim, default MaxValueSize, 1 MiB files", func(t *testing.T) {
		const seed = 304
		t.Logf("sim seed %d", seed)
		disk := newSimDisk(t, seed)
		cfg := simConfig(t, disk)
		edgeBigValues(t, cfg, func(e *ringpipe.Engine) *ringpipe.Engine { return edgeRestart(t, e, cfg) }, 0, 3)
	})
	// An explicit 8 MiB MaxValueSize with 64 KiB SealBytes, a 10 MiB
	// Preallocate and a SealThreshold of 2.
	big := func(cfg ringpipe.Config) ringpipe.Config {
		cfg.MaxValueSize = 8 << 20
		cfg.Preallocate = 10 << 20
		cfg.SealBytes = 64 << 10
		cfg.SealThreshold = 2
		return cfg
	}
	t.Run("sim, 8 MiB values, 64 KiB SealBytes", func(t *testing.T) {
		const seed = 305
		t.Logf("sim seed %d", seed)
		disk := newSimDisk(t, seed)
		cfg := big(simConfig(t, disk))
		edgeBigValues(t, cfg, func(e *ringpipe.Engine) *ringpipe.Engine { return edgeRestart(t, e, cfg) }, 8<<20, 1)
	})
	for _, b := range []ringpipe.Backend{ringpipe.BackendStd, ringpipe.BackendURing} {
		t.Run(fmt.Sprintf("%v, 8 MiB values, 64 KiB SealBytes", b), func(t *testing.T) {
			cfg := big(realConfig(t, b))
			edgeBigValues(t, cfg, func(e *ringpipe.Engine) *ringpipe.Engine {
				stop(t, e)
				return start(t, cfg)
			}, 8<<20, 1)
		})
	}
	// A MaxValueSize a log file cannot hold is refused at Start, naming
	// the field (the value, the Preallocate and the most it takes).
	t.Run("8 MiB values, 1 MiB files", func(t *testing.T) {
		cfg := realConfig(t, ringpipe.BackendStd)
		cfg.MaxValueSize = 8 << 20
		e, err := ringpipe.Start(ctxFor(t), cfg)
		if e != nil {
			_ = e.Stop(ctxFor(t))
		}
		checkMsg(t, err, nil, "Config.MaxValueSize = 8388608", fmt.Sprintf("Preallocate = %d", testPrealloc))
	})
}

// edgeRevs collects every revision handed to a caller and checks that
// none is handed out twice and that each is above all handed out before
// by the same goroutine (the test's writes are sequential).
type edgeRevs struct {
	seen map[ringpipe.Revision]string
	last ringpipe.Revision
}

func (r *edgeRevs) add(t *testing.T, rev ringpipe.Revision, what string) {
	t.Helper()
	if prev, ok := r.seen[rev]; ok {
		t.Errorf("revision %d returned for %s, and before for %s", rev, what, prev)
	}
	assert.Greater(t, rev, r.last, "%s: revision not above the last one returned", what)
	r.seen[rev] = what
	r.last = max(r.last, rev)
}

// TestEdgeRevisionsNeverReused: revisions returned by Put, Delete and
// PutAsync's tickets increase strictly, in one goroutine, across Stop and
// Start, across a Flush after which every record is deleted (a block
// whose newest records are all tombstones, or no block at all), across
// deletes of points never written, and across power losses that lose
// writes never acknowledged: no revision a caller was given is given
// again. Several power-loss seeds, with direct and with mostly staged
// writes.
func TestEdgeRevisionsNeverReused(t *testing.T) {
	for _, tc := range []struct {
		seed   int64
		staged bool
	}{{306, false}, {307, false}, {308, true}, {309, true}} {
		name := fmt.Sprint(tc.seed)
		if tc.staged {
			name += " staged"
		}
		seed := tc.seed
		t.Run(name, func(t *testing.T) {
			t.Logf("sim seed %d", seed)
			rng := rand.New(rand.NewSource(seed))
			disk := newSimDisk(t, seed)
			cfg := simConfig(t, disk)
			if tc.staged {
				// Most writes go through the staging WAL: a 1 ns
				// deadline, and log files that hold few records.
				cfg.DirectWriteTimeout = time.Nanosecond
				cfg.Preallocate = 16 << 10
			}
			e := start(t, cfg)
			ctx := ctxFor(t)
			sp := createSpace(t, e, "s", 1, 10)
			other := createSpace(t, e, "o", 2, 5)
			revs := &edgeRevs{seen: map[ringpipe.Revision]string{}}
			// A View taken after a write returned reflects it
			// (Revision at least the write's), after a restart too.
			viewAfter := func(e *ringpipe.Engine) {
				t.Helper()
				assert.GreaterOrEqual(t, e.View().Revision(), revs.last, "View.Revision after a restart, below the last revision returned")
			}
			step := 0
			writeSome := func(n int) {
				t.Helper()
				for range n {
					step++
					what := fmt.Sprintf("write %d", step)
					var rev ringpipe.Revision
					var err error
					p := ringpipe.Point{uint32(rng.Intn(64))}
					switch rng.Intn(4) {
					case 0:
						rev, err = e.Put(ctx, sp, p, []byte("p"))
					case 1:
						rev, err = e.Delete(ctx, sp, p)
					case 2:
						rev, err = e.Delete(ctx, sp, ringpipe.Point{uint32(512 + rng.Intn(512))}) // never written
					case 3:
						var tk *ringpipe.Ticket
						tk, err = e.PutAsync(ctx, other, ringpipe.Point{uint32(rng.Intn(32)), 1}, []byte("a"))
						require.NoError(t, err)
						rev, err = tk.Wait(ctx)
					}
					require.NoError(t, err, what)
					revs.add(t, rev, what)
				}
			}
			writeSome(50)
			e = edgeRestart(t, e, cfg)
			viewAfter(e)
			writeSome(20)

			// Every record of sp deleted, then sealed: its newest
			// records are all tombstones.
			for x := range uint32(64) {
				rev, err := e.Delete(ctx, sp, ringpipe.Point{x})
				require.NoError(t, err)
				revs.add(t, rev, fmt.Sprintf("delete-all %d", x))
			}
			require.NoError(t, e.Flush(ctx, sp))
			require.NoError(t, e.Flush(ctx, other))
			e = edgeRestart(t, e, cfg)
			viewAfter(e)
			writeSome(5)

			// Only deletes of points never written, flushed, then
			// restarted: the highest revisions are tombstones a block
			// may leave out.
			fresh := createSpace(t, e, fmt.Sprintf("fresh-%d", seed), 1, 4)
			for x := range uint32(16) {
				rev, err := e.Delete(ctx, fresh, ringpipe.Point{x})
				require.NoError(t, err)
				revs.add(t, rev, fmt.Sprintf("delete-never-written %d", x))
			}
			require.NoError(t, e.Flush(ctx, fresh))
			e = edgeRestart(t, e, cfg)
			viewAfter(e)
			writeSome(5)
			for x := range uint32(16) {
				rev, err := e.Delete(ctx, fresh, ringpipe.Point{x})
				require.NoError(t, err)
				revs.add(t, rev, fmt.Sprintf("delete-never-written again %d", x))
			}
			require.NoError(t, e.Flush(ctx, fresh))
			e = edgePowerLoss(t, disk, e, cfg, seed*10)
			viewAfter(e)
			writeSome(5)

			// Acknowledged writes, then writes in flight (never waited
			// for) when the power goes.
			for round := range 3 {
				writeSome(10)
				var tickets []*ringpipe.Ticket
				for i := range 40 {
					tk, err := e.PutAsync(ctx, other, ringpipe.Point{uint32(i % 32), 2}, []byte("inflight"))
					require.NoError(t, err)
					tickets = append(tickets, tk)
				}
				old := e
				disk.PowerLoss(rand.New(rand.NewSource(seed*100 + int64(round))))
				// A ticket that says done with a revision was handed
				// to the caller: it must have been durable.
				acked := map[uint32]ringpipe.Revision{} // by point, the newest
				for i, tk := range tickets {
					select {
					case <-tk.Done():
						wctx, cancel := context.WithTimeout(ctx, time.Second)
						rev, err := tk.Wait(wctx)
						cancel()
						if err == nil {
							revs.add(t, rev, fmt.Sprintf("round %d in-flight %d (acknowledged)", round, i))
							acked[uint32(i%32)] = max(acked[uint32(i%32)], rev)
						}
					default:
					}
				}
				sctx, cancel := context.WithTimeout(context.Background(), opTimeout)
				_ = old.Stop(sctx)
				cancel()
				e = start(t, cfg)
				viewAfter(e)
				for x, rev := range acked {
					rec, err := e.Get(ctx, other, ringpipe.Point{x, 2})
					if assert.NoError(t, err, "round %d: acknowledged in-flight write at %d (rev %d)", round, x, rev) {
						assert.GreaterOrEqual(t, rec.Revision, rev, "round %d: point %d", round, x)
					}
				}
				t.Logf("round %d: %d of %d in-flight writes acknowledged before the power loss", round, len(acked), len(tickets))
				t.Logf("round %d: last revision handed out %d", round, revs.last)
			}
			writeSome(20)
			stop(t, e)
		})
	}
}

// TestEdgeCreateSpaceRaces: 16 goroutines creating one new name with one
// spec all get one ID; with two specs, one spec wins, its callers get its
// ID and the others ErrSpaceExists; 16 distinct names at once get 16
// distinct IDs. All while writes run into another space. Spaces() lists
// each once, sorted by ID, and is unchanged, IDs and specs, by a restart;
// after it the same spec gets the same ID and another spec ErrSpaceExists.
func TestEdgeCreateSpaceRaces(t *testing.T) {
	for _, backend := range []string{"sim", "std"} {
		t.Run(backend, func(t *testing.T) {
			var cfg ringpipe.Config
			if backend == "sim" {
				const seed = 310
				t.Logf("sim seed %d", seed)
				cfg = simConfig(t, newSimDisk(t, seed))
			} else {
				cfg = realConfig(t, ringpipe.BackendStd)
			}
			e := start(t, cfg)
			ctx := ctxFor(t)
			busy := createSpace(t, e, "busy", 1, 16)
			stopWriters := make(chan struct{})
			var writers sync.WaitGroup
			for w := range 2 {
				writers.Go(func() {
					for i := 0; ; i++ {
						select {
						case <-stopWriters:
							return
						default:
						}
						_, err := e.Put(ctx, busy, ringpipe.Point{uint32(w<<15 | i&0x7fff)}, []byte("w"))
						if !assert.NoError(t, err) {
							return
						}
					}
				})
			}
			race := func(specs func(i int) ringpipe.SpaceSpec) ([]ringpipe.SpaceID, []error) {
				ids, errs := make([]ringpipe.SpaceID, 16), make([]error, 16)
				gate := make(chan struct{})
				var wg sync.WaitGroup
				for i := range 16 {
					wg.Go(func() {
						<-gate
						ids[i], errs[i] = e.CreateSpace(ctx, specs(i))
					})
				}
				close(gate)
				within(t, "16 CreateSpace calls", wg.Wait)
				return ids, errs
			}
			specOf := map[ringpipe.SpaceID]ringpipe.SpaceSpec{}
			for round := range 8 {
				same := ringpipe.SpaceSpec{Name: fmt.Sprintf("same-%d", round), Dims: 2, Bits: 8}
				ids, errs := race(func(int) ringpipe.SpaceSpec { return same })
				for i := range ids {
					require.NoError(t, errs[i], "round %d, caller %d", round, i)
					assert.Equal(t, ids[0], ids[i], "round %d, caller %d", round, i)
				}
				specOf[ids[0]] = same

				a := ringpipe.SpaceSpec{Name: fmt.Sprintf("two-%d", round), Dims: 2, Bits: 8}
				b := ringpipe.SpaceSpec{Name: a.Name, Dims: 3, Bits: 8}
				ids, errs = race(func(i int) ringpipe.SpaceSpec {
					if i%2 == 0 {
						return a
					}
					return b
				})
				var winner ringpipe.SpaceSpec
				for _, info := range e.Spaces() {
					if info.Name == a.Name {
						require.Zero(t, winner.Name, "%q listed twice", a.Name)
						winner = info.SpaceSpec
						specOf[info.ID] = winner
					}
				}
				require.NotZero(t, winner.Name, "%q not listed", a.Name)
				var wid ringpipe.SpaceID
				for i := range ids {
					mine := a
					if i%2 == 1 {
						mine = b
					}
					if mine == winner {
						if assert.NoError(t, errs[i], "round %d, caller %d (the winning spec)", round, i) {
							if wid == 0 {
								wid = ids[i]
							}
							assert.Equal(t, wid, ids[i], "round %d, caller %d", round, i)
						}
					} else {
						assert.ErrorIs(t, errs[i], ringpipe.ErrSpaceExists, "round %d, caller %d (the losing spec)", round, i)
						if errs[i] != nil {
							assert.True(t, strings.HasPrefix(errs[i].Error(), "ringpipe: "), "%q", errs[i])
						}
					}
				}

				ids, errs = race(func(i int) ringpipe.SpaceSpec {
					return ringpipe.SpaceSpec{Name: fmt.Sprintf("distinct-%d-%d", round, i), Dims: 1 + i%4, Bits: 8}
				})
				seen := map[ringpipe.SpaceID]bool{}
				for i := range ids {
					require.NoError(t, errs[i])
					assert.False(t, seen[ids[i]], "ID %d given twice", ids[i])
					seen[ids[i]] = true
					specOf[ids[i]] = ringpipe.SpaceSpec{Name: fmt.Sprintf("distinct-%d-%d", round, i), Dims: 1 + i%4, Bits: 8}
				}
			}
			close(stopWriters)
			writers.Wait()
			specOf[busy] = ringpipe.SpaceSpec{Name: "busy", Dims: 1, Bits: 16}

			listed := e.Spaces()
			require.Len(t, listed, len(specOf))
			for i, info := range listed {
				assert.Equal(t, specOf[info.ID], info.SpaceSpec, "space %d", info.ID)
				if i > 0 {
					assert.Less(t, listed[i-1].ID, info.ID, "Spaces ordered by ID")
				}
			}
			stop(t, e)
			e = start(t, cfg)
			assert.Equal(t, listed, e.Spaces(), "Spaces after a restart")
			for id, spec := range specOf {
				got, err := e.CreateSpace(ctx, spec)
				assert.NoError(t, err, "%+v after a restart", spec)
				assert.Equal(t, id, got, "%+v after a restart", spec)
				other := spec
				other.Bits = spec.Bits - 1
				_, err = e.CreateSpace(ctx, other)
				assert.ErrorIs(t, err, ringpipe.ErrSpaceExists, "%+v after a restart", other)
			}
			stop(t, e)
		})
	}
}

// TestEdgeSpaceNames: a name of 255 bytes is accepted and one of 256
// refused, in ASCII and in multi-byte UTF-8 (the limit is in bytes);
// names in any script, and names differing only by case, by Unicode
// normalization or by surrounding spaces, are distinct spaces, and stay
// distinct and keep their IDs after a restart on a real directory.
// Spaces() returns a copy: changing it changes nothing.
func TestEdgeSpaceNames(t *testing.T) {
	cfg := realConfig(t, ringpipe.BackendStd)
	e := start(t, cfg)
	ctx := ctxFor(t)
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{strings.Repeat("a", 255), true},
		{strings.Repeat("b", 256), false},
		{strings.Repeat("€", 85), true},         // 255 bytes
		{strings.Repeat("€", 86), false},        // 258 bytes
		{strings.Repeat("c", 254) + "é", false}, // 256 bytes, 255 characters
		{strings.Repeat("😀", 63) + "abc", true}, // 255 bytes
		{strings.Repeat("d", 100000), false},
	} {
		_, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: tc.name, Dims: 1, Bits: 8})
		if tc.ok {
			assert.NoError(t, err, "a name of %d bytes", len(tc.name))
		} else if assert.Error(t, err, "a name of %d bytes", len(tc.name)) {
			checkMsg(t, err, nil, fmt.Sprintf("Name of %d bytes, longer than 255", len(tc.name)))
			assert.Less(t, len(err.Error()), 200, "the message quotes a long name whole")
		}
	}
	names := []string{
		"Temp", "temp", "TEMP",
		"caf\u00e9", "cafe\u0301", // NFC and NFD
		"x", " x", "x ",
		"温度", "температура", "θερμοκρασία", "🌡️",
	}
	ids := map[string]ringpipe.SpaceID{}
	for _, n := range names {
		id, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: n, Dims: 1, Bits: 8})
		require.NoError(t, err, "%q", n)
		for other, oid := range ids {
			assert.NotEqual(t, oid, id, "%q and %q share an ID", n, other)
		}
		ids[n] = id
		rev, err := e.Put(ctx, id, ringpipe.Point{1}, []byte(n))
		require.NoError(t, err)
		assert.NotZero(t, rev)
	}

	list := e.Spaces()
	orig := slices.Clone(list)
	for i := range list {
		list[i].Name = "changed"
		list[i].ID = 9999
		list[i].Dims = 1
	}
	_ = append(list[:0], ringpipe.SpaceInfo{ID: 1234})
	assert.Equal(t, orig, e.Spaces(), "changing Spaces' result changed the engine's")
	for i := 1; i < len(orig); i++ {
		assert.Less(t, orig[i-1].ID, orig[i].ID, "Spaces ordered by ID")
	}
	_, err := e.Put(ctx, orig[0].ID, ringpipe.Point{2}, []byte("still works"))
	assert.NoError(t, err)

	stop(t, e)
	e = start(t, cfg)
	assert.Equal(t, orig, e.Spaces(), "Spaces after a restart")
	for n, id := range ids {
		got, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: n, Dims: 1, Bits: 8})
		assert.NoError(t, err, "%q", n)
		assert.Equal(t, id, got, "%q: ID after a restart", n)
		rec, err := e.Get(ctx, id, ringpipe.Point{1})
		if assert.NoError(t, err, "%q", n) {
			assert.Equal(t, []byte(n), rec.Value, "%q: its own record", n)
		}
	}
	stop(t, e)
}

// TestEdgeCreateSpaceCancelled: CreateSpace with a ctx cancelled before
// the call, or while it runs, either creates the space wholly or not at
// all. Once a later CreateSpace has returned (the sealer handles them in
// turn), the running engine's Spaces(), a write to the space, a clean
// restart and a power loss all agree: a space that is listed takes
// writes and survives both; a space that is not listed is not there after
// either.
func TestEdgeCreateSpaceCancelled(t *testing.T) {
	const seed = 311
	t.Logf("sim seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	disk := newSimDisk(t, seed)
	cfg := simConfig(t, disk)
	e := start(t, cfg)
	ctx := ctxFor(t)

	type attempt struct {
		name   string
		err    error
		listed bool
		rev    ringpipe.Revision
		id     ringpipe.SpaceID
		pre    bool // ctx cancelled before the call
	}
	var attempts []*attempt
	for i := range 40 {
		a := &attempt{name: fmt.Sprintf("c%d", i)}
		cctx, cancel := context.WithCancel(ctx)
		if i%2 == 0 {
			a.pre = true
			cancel() // before the call
		} else {
			d := time.Duration(rng.Intn(300)) * time.Microsecond
			go func() {
				time.Sleep(d) // a cancellation at some point of the call, not a wait for a state
				cancel()
			}()
		}
		within(t, "a cancelled CreateSpace", func() {
			_, a.err = e.CreateSpace(cctx, ringpipe.SpaceSpec{Name: a.name, Dims: 1, Bits: 8})
		})
		cancel()
		if a.err != nil {
			assert.ErrorIs(t, a.err, context.Canceled, "%s", a.name)
		}
		attempts = append(attempts, a)
	}
	// The sealer takes CreateSpace calls in turn: once this one is done,
	// every earlier one is settled.
	createSpace(t, e, "settle", 1, 1)
	listed := map[string]ringpipe.SpaceID{}
	for _, info := range e.Spaces() {
		listed[info.Name] = info.ID
	}
	created, refusedButMade, preCreated := 0, 0, 0
	for _, a := range attempts {
		a.id, a.listed = listed[a.name]
		if a.err == nil {
			assert.True(t, a.listed, "%s: CreateSpace returned nil but the space is not listed", a.name)
		}
		if a.listed {
			created++
			if a.err != nil {
				refusedButMade++
			}
			if a.pre {
				preCreated++
			}
			rev, err := e.Put(ctx, a.id, ringpipe.Point{7}, []byte(a.name))
			require.NoError(t, err, "%s: a Put to a listed space", a.name)
			a.rev = rev
		}
	}
	t.Logf("%d of %d cancelled CreateSpace calls created their space (%d of them returned an error; %d of the %d cancelled before the call)",
		created, len(attempts), refusedButMade, preCreated, len(attempts)/2)
	check := func(t *testing.T, e *ringpipe.Engine) {
		now := map[string]ringpipe.SpaceID{}
		for _, info := range e.Spaces() {
			now[info.Name] = info.ID
		}
		for _, a := range attempts {
			id, ok := now[a.name]
			if !a.listed {
				assert.False(t, ok, "%s: not listed before, listed now", a.name)
				continue
			}
			if !assert.True(t, ok, "%s: listed (and written) before, gone now", a.name) {
				continue
			}
			assert.Equal(t, a.id, id, "%s: ID", a.name)
			rec, err := e.Get(ctx, id, ringpipe.Point{7})
			if assert.NoError(t, err, "%s: the acknowledged Put", a.name) {
				assert.Equal(t, a.rev, rec.Revision, "%s", a.name)
			}
		}
	}
	e = edgeRestart(t, e, cfg)
	t.Run("restart", func(t *testing.T) { check(t, e) })
	e = edgePowerLoss(t, disk, e, cfg, seed)
	t.Run("power loss", func(t *testing.T) { check(t, e) })
	stop(t, e)
}

// TestEdgeDeleteNeverWrittenAcrossFlush: a Delete of a point never written
// returns a revision and leaves Get at ErrNotFound and Scan empty; then
// Delete, Put, Delete, Put at one point with a Flush between each step,
// so that tombstones and values sit in different blocks in both orders,
// reads show only the newest write, from blocks, from the tail over
// blocks, after a restart and after a power loss.
func TestEdgeDeleteNeverWrittenAcrossFlush(t *testing.T) {
	const seed = 312
	t.Logf("sim seed %d", seed)
	disk := newSimDisk(t, seed)
	cfg := simConfig(t, disk)
	e := start(t, cfg)
	ctx := ctxFor(t)
	spec := ringpipe.SpaceSpec{Name: "s", Dims: 2, Bits: 6}
	sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
	m := newModel(spec)
	revs := &edgeRevs{seen: map[ringpipe.Revision]string{}}

	never := ringpipe.Point{63, 63}
	rev, err := e.Delete(ctx, sp, never)
	require.NoError(t, err)
	assert.NotZero(t, rev)
	revs.add(t, rev, "delete never written")
	m.add(write{point: never, rev: rev})
	checkModel(t, engineReader(t, e), sp, m, fullBox(spec))

	p := ringpipe.Point{5, 9}
	neighbour := ringpipe.Point{5, 10}
	rev, err = e.Put(ctx, sp, neighbour, []byte("neighbour"))
	require.NoError(t, err)
	revs.add(t, rev, "neighbour")
	m.add(write{point: neighbour, rev: rev, value: []byte("neighbour")})

	steps := []struct {
		what string
		val  []byte // nil: Delete
	}{
		{"delete (never written)", nil},
		{"put v1", []byte("v1")},
		{"delete", nil},
		{"put empty", []byte{}},
		{"delete again", nil},
		{"delete twice", nil},
		{"put v2", []byte("v2")},
	}
	for i, s := range steps {
		if s.val == nil {
			rev, err = e.Delete(ctx, sp, p)
		} else {
			rev, err = e.Put(ctx, sp, p, s.val)
		}
		require.NoError(t, err, s.what)
		revs.add(t, rev, s.what)
		m.add(write{point: p, rev: rev, value: s.val})
		t.Run(fmt.Sprintf("%d %s: tail", i, s.what), func(t *testing.T) { checkModel(t, engineReader(t, e), sp, m, fullBox(spec)) })
		require.NoError(t, e.Flush(ctx, sp))
		t.Run(fmt.Sprintf("%d %s: block", i, s.what), func(t *testing.T) { checkModel(t, engineReader(t, e), sp, m, fullBox(spec)) })
		if i%3 == 2 {
			e = edgeRestart(t, e, cfg)
			t.Run(fmt.Sprintf("%d %s: restart", i, s.what), func(t *testing.T) { checkModel(t, engineReader(t, e), sp, m, fullBox(spec)) })
		}
	}
	// The last step left a value in a block; a Delete in the tail over it.
	rev, err = e.Delete(ctx, sp, p)
	require.NoError(t, err)
	revs.add(t, rev, "final delete")
	m.add(write{point: p, rev: rev})
	e = edgePowerLoss(t, disk, e, cfg, seed)
	t.Run("power loss", func(t *testing.T) { checkModel(t, engineReader(t, e), sp, m, fullBox(spec)) })
	rev, err = e.Delete(ctx, sp, ringpipe.Point{0, 0})
	require.NoError(t, err)
	revs.add(t, rev, "delete after power loss")
	_, err = e.Get(ctx, sp, ringpipe.Point{0, 0})
	assert.ErrorIs(t, err, ringpipe.ErrNotFound)
	if !errors.Is(err, ringpipe.ErrNotFound) {
		t.Logf("Get after a delete of a never-written point: %v", err)
	}
	stop(t, e)
}

// TestEdgeValueLimitAtStart: the explicit MaxValueSize boundaries at
// Start. The most a log file of Preallocate bytes holds (what the default
// shrinks to) is accepted when set explicitly and one byte more is
// refused naming MaxValueSize; 64 MiB, the documented ceiling, is accepted
// with files large enough and 64 MiB + 1 is refused.
func TestEdgeValueLimitAtStart(t *testing.T) {
	limitOf := func(t *testing.T, e *ringpipe.Engine) int {
		t.Helper()
		sp := createSpace(t, e, "s", 1, 8)
		_, err := e.PutAsync(ctxFor(t), sp, ringpipe.Point{1}, make([]byte, 64<<20+1))
		require.ErrorIs(t, err, ringpipe.ErrValueTooLarge)
		m := edgeMaxValueRe.FindStringSubmatch(err.Error())
		require.NotNil(t, m, "no limit in %q", err)
		n, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		return n
	}
	const seed = 313
	t.Logf("sim seed %d", seed)
	disk := newSimDisk(t, seed)
	cfg := simConfig(t, disk)
	e := start(t, cfg)
	fit := limitOf(t, e)
	stop(t, e)

	cfg.MaxValueSize = fit
	e = start(t, cfg)
	assert.Equal(t, fit, limitOf(t, e), "an explicit MaxValueSize of what a file holds")
	stop(t, e)

	cfg.MaxValueSize = fit + 1
	e, err := ringpipe.Start(ctxFor(t), cfg)
	if e != nil {
		_ = e.Stop(ctxFor(t))
	}
	checkMsg(t, err, nil, fmt.Sprintf("Config.MaxValueSize = %d", fit+1), fmt.Sprintf("(at most %d)", fit))

	big := simConfig(t, newSimDisk(t, seed+1))
	big.Preallocate = 72 << 20
	big.MaxValueSize = valueSizeLimit
	e = start(t, big)
	assert.Equal(t, valueSizeLimit, limitOf(t, e), "MaxValueSize at its limit")
	// A value of the limit, in a space of 1 and of 16 dimensions, is
	// written and read back. Fixed: the limit was 64 MiB, and a Put of a
	// 64 MiB value panicked the submitter (the record's frame exceeded
	// wal.MaxFrame; extreme-config audit).
	for _, dims := range []int{1, 16} {
		sp := createSpace(t, e, fmt.Sprintf("limit%d", dims), dims, 4)
		v := make([]byte, valueSizeLimit)
		v[0], v[len(v)-1] = byte(dims), 0xff
		_, err := e.Put(ctxFor(t), sp, make(ringpipe.Point, dims), v)
		require.NoError(t, err, "a value at the limit in %d dimensions", dims)
		rec, err := e.Get(ctxFor(t), sp, make(ringpipe.Point, dims))
		require.NoError(t, err)
		assert.True(t, bytes.Equal(v, rec.Value), "the value at the limit reads back")
	}
	stop(t, e)
	for _, over := range []int{valueSizeLimit + 1, 64 << 20} {
		big.MaxValueSize = over
		e, err = ringpipe.Start(ctxFor(t), big)
		if e != nil {
			_ = e.Stop(ctxFor(t))
		}
		checkMsg(t, err, nil, fmt.Sprintf("Config.MaxValueSize = %d: above the limit", over))
	}
}

// TestEdgeSmallestLogFiles: with Preallocate at its minimum (8192 bytes) a
// log file holds one record of the largest value: every largest write
// needs a hot segment (or a staging WAL segment) of its own. Sequential
// Puts and concurrent PutAsyncs of that size into a 16-dimension space,
// with the default DirectWriteTimeout and with one of a nanosecond (both
// stage most of them), are all acknowledged without a stall, read back,
// and survive a Flush and a restart (on the simulated disk, a power loss).
func TestEdgeSmallestLogFiles(t *testing.T) {
	for _, tc := range []struct {
		name    string
		backend string
		dwt     time.Duration
	}{
		{"sim, default deadline", "sim", 0},
		{"sim, 1ns deadline", "sim", time.Nanosecond},
		{"std, default deadline", "std", 0},
		{"uring, 1ns deadline", "uring", time.Nanosecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg ringpipe.Config
			var disk *sim.Disk
			switch tc.backend {
			case "sim":
				const seed = 314
				t.Logf("sim seed %d", seed)
				disk = newSimDisk(t, seed)
				cfg = simConfig(t, disk)
			case "std":
				cfg = realConfig(t, ringpipe.BackendStd)
			case "uring":
				cfg = realConfig(t, ringpipe.BackendURing)
			}
			cfg.Preallocate = 8192
			cfg.DirectWriteTimeout = tc.dwt
			e := start(t, cfg)
			ctx := ctxFor(t)
			sp := createSpace(t, e, "wide", 16, 4)
			_, err := e.Put(ctx, sp, make(ringpipe.Point, 16), make([]byte, 64<<20))
			require.ErrorIs(t, err, ringpipe.ErrValueTooLarge)
			m := edgeMaxValueRe.FindStringSubmatch(err.Error())
			require.NotNil(t, m, "no limit in %q", err)
			maxSize, err := strconv.Atoi(m[1])
			require.NoError(t, err)
			t.Logf("MaxValueSize %d with Preallocate 8192", maxSize)
			require.Positive(t, maxSize)

			pt := func(i int) ringpipe.Point {
				p := make(ringpipe.Point, 16)
				p[0], p[1], p[15] = uint32(i%16), uint32(i/16%16), 15
				return p
			}
			revs := map[int]ringpipe.Revision{}
			within(t, "Puts of the largest value into 8 KiB files", func() {
				for i := range 20 {
					rev, err := e.Put(ctx, sp, pt(i), edgeValue(maxSize, byte(i)))
					if !assert.NoError(t, err, "Put %d", i) {
						return
					}
					revs[i] = rev
				}
			})
			within(t, "PutAsyncs of the largest value into 8 KiB files", func() {
				var tickets []*ringpipe.Ticket
				for i := 20; i < 60; i++ {
					tk, err := e.PutAsync(ctx, sp, pt(i), edgeValue(maxSize, byte(i)))
					if !assert.NoError(t, err, "PutAsync %d", i) {
						return
					}
					tickets = append(tickets, tk)
				}
				for j, tk := range tickets {
					rev, err := tk.Wait(ctx)
					if !assert.NoError(t, err, "ticket %d", 20+j) {
						return
					}
					revs[20+j] = rev
				}
			})
			require.Len(t, revs, 60)
			st := e.Stats()
			t.Logf("%d direct, %d staged, %d promoted, %d sealed blocks", st.DirectWrites, st.StagedWrites, st.Promoted, st.SealedBlocks)
			if tc.dwt > 0 {
				assert.Positive(t, st.StagedWrites, "a DirectWriteTimeout of 1 ns staged no write")
			}
			check := func(t *testing.T, e *ringpipe.Engine) {
				for i, rev := range revs {
					rec, err := e.Get(ctx, sp, pt(i))
					if assert.NoError(t, err, "Get %d", i) {
						assert.Equal(t, rev, rec.Revision, "Get %d", i)
						assert.True(t, bytes.Equal(edgeValue(maxSize, byte(i)), rec.Value), "Get %d: value", i)
					}
				}
			}
			t.Run("tail", func(t *testing.T) { check(t, e) })
			within(t, "Flush", func() { assert.NoError(t, e.Flush(ctx, sp)) })
			t.Run("block", func(t *testing.T) { check(t, e) })
			within(t, "Put after Flush", func() {
				rev, err := e.Put(ctx, sp, pt(60), edgeValue(maxSize, 60))
				if assert.NoError(t, err) {
					revs[60] = rev
				}
			})
			if disk != nil {
				e = edgePowerLoss(t, disk, e, cfg, 314)
			} else {
				e = edgeRestart(t, e, cfg)
			}
			t.Run("restart", func(t *testing.T) { check(t, e) })
			stop(t, e)
		})
	}
}

// TestEdgeCreateSpaceRaceMessage: ErrSpaceExists says the same thing
// whichever way the name was found taken. Sixteen goroutines create one
// new name, half with one spec and half with another; each loser's error
// names, as a CreateSpace after the race does (TestErrorsAuditSpaceSpec:
// "a name taken by another spec says both specs and the space's ID"), the
// space's ID, its spec and the spec asked for.
//
// Fixed: before, a loser of the race got the sealer's shorter message
// (`"n" is 2 dims × 8 bits`, no ID, no spec asked for), 8 losers of 8 in
// every run; the engine and the sealer now build the message with one
// function, messages.SpaceExistsError.
func TestEdgeCreateSpaceRaceMessage(t *testing.T) {
	const seed = 315
	t.Logf("sim seed %d", seed)
	e := start(t, simConfig(t, newSimDisk(t, seed)))
	ctx := ctxFor(t)
	a := ringpipe.SpaceSpec{Name: "n", Dims: 2, Bits: 8}
	b := ringpipe.SpaceSpec{Name: "n", Dims: 3, Bits: 8}
	errs := make([]error, 16)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			spec := a
			if i%2 == 1 {
				spec = b
			}
			<-gate
			_, errs[i] = e.CreateSpace(ctx, spec)
		})
	}
	close(gate)
	within(t, "16 CreateSpace calls", wg.Wait)
	list := e.Spaces()
	require.Len(t, list, 1)
	won := list[0]
	lost := a
	if won.SpaceSpec == a {
		lost = b
	}
	want := fmt.Sprintf("%q is space %d of %d dims × %d bits, asked for %d dims × %d bits",
		won.Name, won.ID, won.Dims, won.Bits, lost.Dims, lost.Bits)
	_, after := e.CreateSpace(ctx, lost)
	checkMsg(t, after, ringpipe.ErrSpaceExists, want)
	bad := 0
	for i, err := range errs {
		if err == nil {
			continue
		}
		require.ErrorIs(t, err, ringpipe.ErrSpaceExists, "caller %d", i)
		if !strings.Contains(err.Error(), want) {
			bad++
			if bad == 1 {
				t.Errorf("caller %d lost the race with %q; after the race the same call says %q", i, err, after)
			}
		}
	}
	assert.Zero(t, bad, "losers of the race whose message lacks the space's ID and the spec asked for")
	stop(t, e)
}

// TestEdgeCreateSpacePreCancelled: CreateSpace with a ctx already
// cancelled when it is called returns ctx's error (the errors audit checks
// that) and creates nothing, as Put, Delete and PutAsync apply nothing
// then (API.md: "A context cancelled before the write is queued means not
// applied"; CreateSpace is a durable write to the manifest).
//
// Fixed: before, 9 to 13 of 20 such calls returned context.Canceled and
// created the space all the same (ask's select picked at random between
// the free sealer inbox and the ended ctx); ask now returns an ended
// ctx's error before it sends anything, for CreateSpace and Flush alike.
func TestEdgeCreateSpacePreCancelled(t *testing.T) {
	const seed = 316
	t.Logf("sim seed %d", seed)
	e := start(t, simConfig(t, newSimDisk(t, seed)))
	ctx := ctxFor(t)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	const n = 20
	for i := range n {
		_, err := e.CreateSpace(cctx, ringpipe.SpaceSpec{Name: fmt.Sprintf("pre-%d", i), Dims: 1, Bits: 8})
		assert.ErrorIs(t, err, context.Canceled, "pre-%d", i)
	}
	createSpace(t, e, "settle", 1, 1) // every earlier CreateSpace is settled
	var made []string
	for _, info := range e.Spaces() {
		if strings.HasPrefix(info.Name, "pre-") {
			made = append(made, info.Name)
		}
	}
	assert.Empty(t, made, "%d of %d CreateSpace calls with a cancelled ctx returned context.Canceled and created their space", len(made), n)
	stop(t, e)
}
