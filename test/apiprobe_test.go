package test

// API probes: API.md's names, signatures and semantic lines that the other
// suites leave unchecked, written as an acceptance test would probe them,
// through package ringpipe only.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// The signatures of API.md, checked by the compiler: a renamed method, a
// changed parameter or result type, or a missing name fails the build of
// this package, as it would fail an acceptance test's.
var (
	_ func(context.Context, ringpipe.Config) (*ringpipe.Engine, error)                                             = ringpipe.Start
	_ func(*ringpipe.Engine, context.Context) error                                                                = (*ringpipe.Engine).Stop
	_ func(*ringpipe.Engine, context.Context, ringpipe.SpaceSpec) (ringpipe.SpaceID, error)                        = (*ringpipe.Engine).CreateSpace
	_ func(*ringpipe.Engine) []ringpipe.SpaceInfo                                                                  = (*ringpipe.Engine).Spaces
	_ func(*ringpipe.Engine, context.Context, ringpipe.SpaceID, ringpipe.Point, []byte) (ringpipe.Revision, error) = (*ringpipe.Engine).Put
	_ func(*ringpipe.Engine, context.Context, ringpipe.SpaceID, ringpipe.Point) (ringpipe.Revision, error)         = (*ringpipe.Engine).Delete
	_ func(*ringpipe.Engine, context.Context, ringpipe.SpaceID, ringpipe.Point, []byte) (*ringpipe.Ticket, error)  = (*ringpipe.Engine).PutAsync
	_ func(*ringpipe.Ticket) <-chan struct{}                                                                       = (*ringpipe.Ticket).Done
	_ func(*ringpipe.Ticket, context.Context) (ringpipe.Revision, error)                                           = (*ringpipe.Ticket).Wait
	_ func(*ringpipe.Engine, context.Context) error                                                                = (*ringpipe.Engine).Sync
	_ func(*ringpipe.Engine, context.Context, ringpipe.SpaceID) error                                              = (*ringpipe.Engine).Flush
	_ func(*ringpipe.Engine, context.Context, ringpipe.SpaceID, ringpipe.Point) (ringpipe.Record, error)           = (*ringpipe.Engine).Get
	_ func(*ringpipe.Engine, context.Context, ringpipe.SpaceID, ringpipe.Box, func(ringpipe.Record) bool) error    = (*ringpipe.Engine).Scan
	_ func(*ringpipe.Engine) *ringpipe.View                                                                        = (*ringpipe.Engine).View
	_ func(*ringpipe.View) ringpipe.Revision                                                                       = (*ringpipe.View).Revision
	_ func(*ringpipe.View, ringpipe.SpaceID, ringpipe.Point) (ringpipe.Record, error)                              = (*ringpipe.View).Get
	_ func(*ringpipe.View, ringpipe.SpaceID, ringpipe.Box, func(ringpipe.Record) bool) error                       = (*ringpipe.View).Scan
	_ func(*ringpipe.Engine) ringpipe.Stats                                                                        = (*ringpipe.Engine).Stats
	_ func(*ringpipe.CorruptionError) string                                                                       = (*ringpipe.CorruptionError).Error
	_ func(*ringpipe.CorruptionError) error                                                                        = (*ringpipe.CorruptionError).Unwrap
	_ error                                                                                                        = (*ringpipe.CorruptionError)(nil)

	// Every error of the list is an error value.
	_ = []error{
		ringpipe.ErrStopped, ringpipe.ErrFailed, ringpipe.ErrLocked, ringpipe.ErrNotFound,
		ringpipe.ErrUnknownSpace, ringpipe.ErrSpaceExists, ringpipe.ErrInvalidPoint,
		ringpipe.ErrValueTooLarge, ringpipe.ErrCorrupt,
	}

	// The types, field by field: a keyed literal of each with a value of the
	// field's documented type.
	_ = ringpipe.Config{
		Dir:                "",
		Backend:            ringpipe.BackendAuto,
		Logger:             (*zap.Logger)(nil),
		QueueCapacity:      int(0),
		RingEntries:        uint32(0),
		BatchSize:          int(0),
		BatchTimeout:       time.Duration(0),
		DirectWriteTimeout: time.Duration(0),
		PromoteInterval:    time.Duration(0),
		SealThreshold:      int(0),
		SealBytes:          int64(0),
		MaxValueSize:       int(0),
		Preallocate:        int64(0),
		DirectIO:           false,
		WALRecovery:        ringpipe.TolerateTornTail,
	}
	_ = ringpipe.SpaceInfo{ID: ringpipe.SpaceID(uint32(0)), SpaceSpec: ringpipe.SpaceSpec{Name: "", Dims: int(0), Bits: int(0)}}
	_ = ringpipe.Record{
		Space:     ringpipe.SpaceID(0),
		Point:     ringpipe.Point([]uint32{}),
		Revision:  ringpipe.Revision(uint64(0)),
		Value:     []byte(nil),
		Tombstone: false,
	}
	_ = ringpipe.Box{Min: ringpipe.Point{}, Max: ringpipe.Point{}}
	_ = ringpipe.Stats{
		Backend:        "",
		KernelVersion:  "",
		QueueDepth:     int(0),
		DirectWrites:   uint64(0),
		StagedWrites:   uint64(0),
		Promoted:       uint64(0),
		StagedPending:  int(0),
		SealedBlocks:   uint64(0),
		Syncs:          uint64(0),
		ShortIORetries: uint64(0),
		ActorRestarts:  map[string]uint64(nil),
		WriteLatency:   ringpipe.LatencySummary{},
		SyncLatency:    ringpipe.LatencySummary{},
	}
	_ = ringpipe.LatencySummary{Count: uint64(0), P50: time.Duration(0), P99: time.Duration(0), P999: time.Duration(0), Max: time.Duration(0)}
	_ = ringpipe.CorruptionError{Path: "", Offset: int64(0), Reason: ""}
)

// TestAPIProbeTypesAndConstants: the kinds API.md gives (SpaceID uint32,
// Point []uint32, Revision uint64, Backend and RecoveryMode int) convert
// both ways, and the constants are the iota values it lists, the defaults
// being the zero values ("Zero values mean default").
func TestAPIProbeTypesAndConstants(t *testing.T) {
	assert.Equal(t, uint32(1<<32-1), uint32(ringpipe.SpaceID(1<<32-1)))
	assert.Equal(t, uint64(1<<64-1), uint64(ringpipe.Revision(1<<64-1)))
	assert.Equal(t, []uint32{1, 2}, []uint32(ringpipe.Point([]uint32{1, 2})))
	assert.Equal(t, 0, int(ringpipe.BackendAuto))
	assert.Equal(t, 1, int(ringpipe.BackendURing))
	assert.Equal(t, 2, int(ringpipe.BackendStd))
	assert.Equal(t, 0, int(ringpipe.TolerateTornTail))
	assert.Equal(t, 1, int(ringpipe.Strict))
	var b ringpipe.Backend = 2
	assert.Equal(t, ringpipe.BackendStd, b)
	var m ringpipe.RecoveryMode = 1
	assert.Equal(t, ringpipe.Strict, m)
	assert.Equal(t, ringpipe.SpaceSpec{Name: "n", Dims: 2, Bits: 3}, ringpipe.SpaceInfo{ID: 4, SpaceSpec: ringpipe.SpaceSpec{Name: "n", Dims: 2, Bits: 3}}.SpaceSpec)
}

// probeSentinels is API.md's error list, by name.
var probeSentinels = map[string]error{
	"ErrStopped":       ringpipe.ErrStopped,
	"ErrFailed":        ringpipe.ErrFailed,
	"ErrLocked":        ringpipe.ErrLocked,
	"ErrNotFound":      ringpipe.ErrNotFound,
	"ErrUnknownSpace":  ringpipe.ErrUnknownSpace,
	"ErrSpaceExists":   ringpipe.ErrSpaceExists,
	"ErrInvalidPoint":  ringpipe.ErrInvalidPoint,
	"ErrValueTooLarge": ringpipe.ErrValueTooLarge,
	"ErrCorrupt":       ringpipe.ErrCorrupt,
}

// isOnly asserts that err is the sentinel named want (errors.Is) and none
// of the others: a caller that switches on errors.Is takes the right
// branch whatever order it tests them in.
func isOnly(t *testing.T, err error, want string, what string) {
	t.Helper()
	require.Error(t, err, what)
	for name, s := range probeSentinels {
		assert.Equal(t, name == want, errors.Is(err, s), "%s: errors.Is(%q, %s)", what, err, name)
	}
}

// TestAPIProbeSentinelsDistinct: the nine errors of API.md are distinct
// values, none errors.Is another, each says something; a *CorruptionError
// is ErrCorrupt only, whoever built it.
func TestAPIProbeSentinelsDistinct(t *testing.T) {
	for name, s := range probeSentinels {
		require.NotNil(t, s, name)
		assert.NotEmpty(t, s.Error(), name)
		isOnly(t, s, name, name)
		isOnly(t, fmt.Errorf("wrapped: %w", s), name, name+" wrapped")
	}
	ce := &ringpipe.CorruptionError{Path: "x", Offset: 1, Reason: "r"}
	isOnly(t, ce, "ErrCorrupt", "a *CorruptionError")
	isOnly(t, fmt.Errorf("a: %w", ce), "ErrCorrupt", "a wrapped *CorruptionError")
	assert.Same(t, ringpipe.ErrCorrupt, ce.Unwrap())
}

// TestAPIProbeEngineErrorsAreOne: each error the engine returns for a
// documented case is its sentinel and no other one: Get of nothing is
// ErrNotFound (not ErrUnknownSpace), an unknown space is ErrUnknownSpace
// (not ErrNotFound), a bad point ErrInvalidPoint, a large value
// ErrValueTooLarge, a taken name ErrSpaceExists, a second Start ErrLocked,
// a write after Stop ErrStopped (not ErrFailed).
func TestAPIProbeEngineErrorsAreOne(t *testing.T) {
	cfg := simConfig(t, newSimDisk(t, 9101))
	cfg.MaxValueSize = 64
	e := start(t, cfg)
	ctx := ctxFor(t)
	sp := createSpace(t, e, "s", 2, 4)
	const unknown = ringpipe.SpaceID(777)
	box := ringpipe.Box{Min: ringpipe.Point{0, 0}, Max: ringpipe.Point{15, 15}}
	always := func(ringpipe.Record) bool { return true }

	_, err := e.Get(ctx, sp, ringpipe.Point{1, 1})
	isOnly(t, err, "ErrNotFound", "Get of a point never written")
	_, err = e.View().Get(sp, ringpipe.Point{1, 1})
	isOnly(t, err, "ErrNotFound", "View.Get of a point never written")
	_, err = e.Delete(ctx, sp, ringpipe.Point{2, 2})
	require.NoError(t, err)
	_, err = e.Get(ctx, sp, ringpipe.Point{2, 2})
	isOnly(t, err, "ErrNotFound", "Get of a tombstone")

	_, err = e.Get(ctx, unknown, ringpipe.Point{1, 1})
	isOnly(t, err, "ErrUnknownSpace", "Get")
	_, err = e.View().Get(unknown, ringpipe.Point{1, 1})
	isOnly(t, err, "ErrUnknownSpace", "View.Get")
	isOnly(t, e.Scan(ctx, unknown, box, always), "ErrUnknownSpace", "Scan")
	isOnly(t, e.View().Scan(unknown, box, always), "ErrUnknownSpace", "View.Scan")
	_, err = e.Put(ctx, unknown, ringpipe.Point{1, 1}, nil)
	isOnly(t, err, "ErrUnknownSpace", "Put")
	_, err = e.Delete(ctx, unknown, ringpipe.Point{1, 1})
	isOnly(t, err, "ErrUnknownSpace", "Delete")
	_, err = e.PutAsync(ctx, unknown, ringpipe.Point{1, 1}, nil)
	isOnly(t, err, "ErrUnknownSpace", "PutAsync")
	isOnly(t, e.Flush(ctx, unknown), "ErrUnknownSpace", "Flush")

	bad := ringpipe.Point{16, 0}
	_, err = e.Put(ctx, sp, bad, nil)
	isOnly(t, err, "ErrInvalidPoint", "Put")
	_, err = e.Delete(ctx, sp, bad)
	isOnly(t, err, "ErrInvalidPoint", "Delete")
	_, err = e.PutAsync(ctx, sp, bad, nil)
	isOnly(t, err, "ErrInvalidPoint", "PutAsync")
	_, err = e.Get(ctx, sp, bad)
	isOnly(t, err, "ErrInvalidPoint", "Get")
	isOnly(t, e.Scan(ctx, sp, ringpipe.Box{Min: ringpipe.Point{0, 0}, Max: bad}, always), "ErrInvalidPoint", "Scan")

	_, err = e.Put(ctx, sp, ringpipe.Point{1, 1}, make([]byte, 65))
	isOnly(t, err, "ErrValueTooLarge", "Put")
	_, err = e.PutAsync(ctx, sp, ringpipe.Point{1, 1}, make([]byte, 65))
	isOnly(t, err, "ErrValueTooLarge", "PutAsync")

	_, err = e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "s", Dims: 2, Bits: 5})
	isOnly(t, err, "ErrSpaceExists", "CreateSpace with another spec")

	e2, err := ringpipe.Start(ctx, cfg)
	if e2 != nil {
		_ = e2.Stop(ctx)
	}
	isOnly(t, err, "ErrLocked", "a second Start")

	stop(t, e)
	_, err = e.Put(ctx, sp, ringpipe.Point{1, 1}, nil)
	isOnly(t, err, "ErrStopped", "Put after Stop")
	_, err = e.Delete(ctx, sp, ringpipe.Point{1, 1})
	isOnly(t, err, "ErrStopped", "Delete after Stop")
	_, err = e.PutAsync(ctx, sp, ringpipe.Point{1, 1}, nil)
	isOnly(t, err, "ErrStopped", "PutAsync after Stop")
	isOnly(t, e.Sync(ctx), "ErrStopped", "Sync after Stop")
	isOnly(t, e.Flush(ctx, sp), "ErrStopped", "Flush after Stop")
	_, err = e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "t", Dims: 1, Bits: 1})
	isOnly(t, err, "ErrStopped", "CreateSpace after Stop")
}

// TestAPIProbeCopiesOut: what the engine hands out is the caller's to
// change. Changing the slice Spaces returned, the map in Stats, or the
// Point passed to Get after the call does not change what the engine
// says next.
func TestAPIProbeCopiesOut(t *testing.T) {
	e := start(t, simConfig(t, newSimDisk(t, 9102)))
	ctx := ctxFor(t)
	a := createSpace(t, e, "a", 1, 8)
	createSpace(t, e, "b", 2, 8)
	want := slices.Clone(e.Spaces())
	require.Len(t, want, 2)
	got := e.Spaces()
	got[0].Name, got[0].ID, got[1].Dims = "changed", 999, 7
	assert.Equal(t, want, e.Spaces(), "Spaces after its result was changed")

	st := e.Stats()
	if st.ActorRestarts == nil {
		st.ActorRestarts = map[string]uint64{}
	}
	st.ActorRestarts["probe"] = 5
	assert.NotContains(t, e.Stats().ActorRestarts, "probe", "Stats after its map was changed")

	rev, err := e.Put(ctx, a, ringpipe.Point{9}, []byte("v"))
	require.NoError(t, err)
	p := ringpipe.Point{9}
	rec, err := e.Get(ctx, a, p)
	require.NoError(t, err)
	p[0] = 10
	assert.Equal(t, ringpipe.Record{Space: a, Point: ringpipe.Point{9}, Revision: rev, Value: []byte("v")}, rec,
		"the Record Get returned after the caller's Point changed")
	stop(t, e)
}

// TestAPIProbeStopInCallback: "Every method is safe for concurrent use",
// from inside a Scan's callback too. A Stop called there returns nil (the
// engine is idle), the Scan goes on to its end over its snapshot (every
// record, once), and a write afterwards is ErrStopped.
func TestAPIProbeStopInCallback(t *testing.T) {
	for _, via := range []string{"Engine.Scan", "View.Scan"} {
		t.Run(via, func(t *testing.T) {
			e := start(t, simConfig(t, newSimDisk(t, 9103)))
			ctx := ctxFor(t)
			sp := createSpace(t, e, "s", 1, 8)
			const n = 50
			for i := range n {
				_, err := e.Put(ctx, sp, ringpipe.Point{uint32(i)}, []byte("v"))
				require.NoError(t, err)
			}
			require.NoError(t, e.Flush(ctx, sp)) // half in a block, half in the tail
			for i := n; i < 2*n; i++ {
				_, err := e.Put(ctx, sp, ringpipe.Point{uint32(i)}, []byte("v"))
				require.NoError(t, err)
			}
			box := ringpipe.Box{Min: ringpipe.Point{0}, Max: ringpipe.Point{255}}
			var got []uint32
			var stopErr error
			stopped := false
			fn := func(r ringpipe.Record) bool {
				got = append(got, r.Point[0])
				if len(got) == n/2 {
					stopErr, stopped = e.Stop(ctx), true
				}
				return true
			}
			done := make(chan error, 1)
			go func() {
				if via == "Engine.Scan" {
					done <- e.Scan(ctx, sp, box, fn)
				} else {
					done <- e.View().Scan(sp, box, fn)
				}
			}()
			select {
			case err := <-done:
				require.NoError(t, err, via)
			case <-time.After(opTimeout):
				require.FailNow(t, "a Scan whose callback called Stop did not return")
			}
			require.True(t, stopped)
			assert.NoError(t, stopErr, "Stop from a Scan's callback")
			want := make([]uint32, 2*n)
			for i := range want {
				want[i] = uint32(i)
			}
			assert.Equal(t, want, got, "the Scan went on over its snapshot")
			_, err := e.Put(ctx, sp, ringpipe.Point{1}, nil)
			assert.ErrorIs(t, err, ringpipe.ErrStopped)
		})
	}
}

// TestAPIProbeFailedHoldsLock: an engine that failed (ErrFailed) still
// holds its directory until Stop: "A second Start on a directory in use
// returns ErrLocked". Its Views read on after Stop; then the directory is
// free and the next engine has every acknowledged write.
func TestAPIProbeFailedHoldsLock(t *testing.T) {
	disk := newSimDisk(t, 9104)
	cfg := simConfig(t, disk)
	e := start(t, cfg)
	ctx := ctxFor(t)
	sp := createSpace(t, e, "s", 1, 16)
	rev, err := e.Put(ctx, sp, ringpipe.Point{1}, []byte("kept"))
	require.NoError(t, err)

	// The data files fail, not the LOCK file: the second Start must
	// meet the lock, not the fault.
	for _, dir := range []string{"/hot/", "/wal/", "/blocks/"} {
		disk.Inject(sim.Fault{Kind: sim.EIO, Path: simDir + dir, Persist: true})
	}
	deadline := time.Now().Add(eventualTimeout)
	var last error
	for i := 0; !errors.Is(last, ringpipe.ErrFailed); i++ {
		require.True(t, time.Now().Before(deadline), "no ErrFailed; last error %v", last)
		_, last = e.Put(ctx, sp, ringpipe.Point{uint32(100 + i)}, []byte("doomed"))
	}
	v := e.View()
	e2, err := ringpipe.Start(ctx, cfg)
	if e2 != nil {
		_ = e2.Stop(ctx)
	}
	assert.ErrorIs(t, err, ringpipe.ErrLocked, "Start beside a failed engine")

	err = e.Stop(ctx)
	t.Logf("Stop of a failed engine: %v", err)
	assert.NoError(t, e.Stop(ctx), "a later Stop returns nil")
	rec, err := v.Get(sp, ringpipe.Point{1})
	require.NoError(t, err, "a View of the failed engine after Stop")
	assert.Equal(t, rev, rec.Revision)

	disk.ClearFaults()
	e3 := start(t, cfg)
	rec, err = e3.Get(ctx, sp, ringpipe.Point{1})
	require.NoError(t, err)
	assert.Equal(t, ringpipe.Record{Space: sp, Point: ringpipe.Point{1}, Revision: rev, Value: []byte("kept")}, rec)
	stop(t, e3)
}

// TestAPIProbeViewOutlivesNextEngine: "reads on a View taken earlier still
// work" after Stop, also once the next engine on the same directory has
// overwritten and deleted every point, sealed many blocks (its hot
// generations retire and their files are reused) and stopped in turn.
// The old View still shows exactly what it showed, from its blocks (no
// page cached: BlockCacheBytes 1) and its tail.
func TestAPIProbeViewOutlivesNextEngine(t *testing.T) {
	for _, b := range []ringpipe.Backend{ringpipe.BackendStd, ringpipe.BackendAuto} {
		t.Run(b.String(), func(t *testing.T) {
			cfg := realConfig(t, b)
			cfg.BlockCacheBytes = 1
			cfg.SealThreshold = 32
			e := start(t, cfg)
			ctx := ctxFor(t)
			spec := ringpipe.SpaceSpec{Name: "v", Dims: 2, Bits: 4}
			sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
			m := newModel(spec)
			for i := range 256 {
				p := ringpipe.Point{uint32(i % 16), uint32(i / 16)}
				if i%5 == 0 {
					rev, err := e.Delete(ctx, sp, p)
					require.NoError(t, err)
					m.add(write{point: p, rev: rev})
					continue
				}
				v := fmt.Appendf(nil, "first-%d", i)
				rev, err := e.Put(ctx, sp, p, v)
				require.NoError(t, err)
				m.add(write{point: p, rev: rev, value: v})
			}
			// Most records are in blocks (SealThreshold 32), the rest in
			// the tail.
			v := e.View()
			vrev := v.Revision()
			stop(t, e)

			e2 := start(t, cfg)
			for i := range 256 {
				p := ringpipe.Point{uint32(i % 16), uint32(i / 16)}
				if i%3 == 0 {
					_, err := e2.Delete(ctx, sp, p)
					require.NoError(t, err)
					continue
				}
				_, err := e2.Put(ctx, sp, p, fmt.Appendf(nil, "second-%d", i))
				require.NoError(t, err)
			}
			require.NoError(t, e2.Flush(ctx, sp))
			stop(t, e2)

			assert.Equal(t, vrev, v.Revision())
			checkModel(t, viewReader(v), sp, m, fullBox(spec))
		})
	}
}

// TestAPIProbeTicketsResolveOnFailure: "the ticket says when it is
// durable" must also say when it never will be. Tickets of PutAsyncs made
// while the data files fail all resolve once the engine has failed
// (ErrFailed): Done is closed and Wait returns a revision or an error,
// never both, never neither. After a restart on the healed disk, a write
// whose ticket said nil is there with that revision, and one that said an
// error is wholly there or wholly absent.
func TestAPIProbeTicketsResolveOnFailure(t *testing.T) {
	disk := newSimDisk(t, 9106)
	cfg := simConfig(t, disk)
	e := start(t, cfg)
	ctx := ctxFor(t)
	sp := createSpace(t, e, "s", 1, 16)
	for _, dir := range []string{"/hot/", "/wal/", "/blocks/"} {
		disk.Inject(sim.Fault{Kind: sim.EIO, Path: simDir + dir, Persist: true})
	}
	type async struct {
		p  ringpipe.Point
		tk *ringpipe.Ticket
	}
	var tickets []async
	deadline := time.Now().Add(eventualTimeout)
	var last error
	for i := 0; !errors.Is(last, ringpipe.ErrFailed); i++ {
		require.True(t, time.Now().Before(deadline), "no ErrFailed; last error %v", last)
		for range 8 {
			p := ringpipe.Point{uint32(len(tickets))}
			tk, err := e.PutAsync(ctx, sp, p, fmt.Appendf(nil, "async-%d", len(tickets)))
			if err != nil {
				break // the engine refuses writes now
			}
			tickets = append(tickets, async{p, tk})
		}
		_, last = e.Put(ctx, sp, ringpipe.Point{uint32(1<<15 + i)}, []byte("doomed"))
	}
	require.NotEmpty(t, tickets)
	revs := map[int]ringpipe.Revision{}
	for i, a := range tickets {
		select {
		case <-a.tk.Done():
		case <-ctx.Done():
			require.FailNow(t, "a ticket never resolved after the engine failed", "ticket %d", i)
		}
		rev, err := a.tk.Wait(ctx)
		if err != nil {
			assert.Zero(t, rev, "ticket %d: a revision with the error %v", i, err)
			continue
		}
		assert.NotZero(t, rev, "ticket %d: neither a revision nor an error", i)
		revs[i] = rev
	}
	t.Logf("%d tickets, %d acknowledged", len(tickets), len(revs))
	_ = e.Stop(ctx)

	disk.ClearFaults()
	e2 := start(t, cfg)
	for i, a := range tickets {
		rec, err := e2.Get(ctx, sp, a.p)
		if rev, ok := revs[i]; ok {
			require.NoError(t, err, "ticket %d said durable", i)
			assert.Equal(t, rev, rec.Revision)
		}
		if err == nil {
			assert.Equal(t, fmt.Appendf(nil, "async-%d", i), rec.Value, "ticket %d: whole or absent", i)
		} else {
			assert.ErrorIs(t, err, ringpipe.ErrNotFound)
		}
	}
	stop(t, e2)
}
