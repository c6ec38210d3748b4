package ringpipe

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"os"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// The engine's lifecycle and its supervisor path (DESIGN.md, "Errors from
// the disk"; STYLE.md, point 11).

// TestHotIOErrorRestartsIOUnit: an I/O error on a hot segment's write or
// fdatasync fails that batch's writers with an error (they do not hang),
// the submitter and completer restart together, later writes succeed, and
// nothing acknowledged is lost through Stop+Start and a power loss. A
// failed write is wholly present or wholly absent each time.
func TestHotIOErrorRestartsIOUnit(t *testing.T) {
	cases := []struct {
		name string
		kind sim.FaultKind
		ops  []ring.Opcode
	}{
		{"fsync-fail", sim.FsyncFail, []ring.Opcode{ring.OpFdatasync}},
		{"fdatasync-eio", sim.EIO, []ring.Opcode{ring.OpFdatasync}},
		{"write-eio", sim.EIO, []ring.Opcode{ring.OpWrite, ring.OpWritev}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seed := int64(40 + i)
			disk := newTestDisk(t, seed)
			cfg := simCfg(t, disk)
			e := mustStart(t, cfg)
			space := mustSpace(t, e, "grid")
			good := putRange(t, e, space, "before", 0, 20)
			require.Empty(t, e.Stats().ActorRestarts)

			// One hit: the next batch to this space's hot file fails.
			disk.Inject(sim.Fault{Kind: tc.kind, Path: hotPrefix(space), Ops: tc.ops})
			ok, failed := putTolerant(t, e, space, 4, 25, 1000)
			good = append(good, ok...)
			require.NotEmpty(t, disk.Hits(), "the fault fired")
			assert.NotEmpty(t, failed, "the failed batch's writers got an error")
			t.Logf("%d writes acknowledged, %d failed", len(ok), len(failed))

			waitStats(t, e, "the io unit restarted", func(s Stats) bool {
				return s.ActorRestarts["submitter"] >= 1 && s.ActorRestarts["completer"] >= 1
			})
			st := e.Stats()
			assert.Equal(t, st.ActorRestarts["submitter"], st.ActorRestarts["completer"],
				"the submitter and the completer restart together")
			for _, name := range []string{"publisher", "sealer", "promoter"} {
				assert.Zero(t, st.ActorRestarts[name], "%s restarted", name)
			}

			// Later writes succeed, staged or on a new generation.
			good = append(good, putRange(t, e, space, "after", 2000, 2030)...)
			require.NoError(t, e.Sync(ctxFor(t)))
			checkAcked(t, e.View(), space, good, failed)
			mustStop(t, e)

			e = mustStart(t, cfg)
			checkAcked(t, e.View(), space, good, failed)
			good = append(good, putRange(t, e, space, "restarted", 3000, 3010)...)
			mustStop(t, e)

			disk.PowerLoss(rand.New(rand.NewSource(seed)))
			e = mustStart(t, cfg)
			checkAcked(t, e.View(), space, good, failed)
			mustStop(t, e)
		})
	}
}

// putTolerant runs writers that each put per writes to space, writer w's
// i-th at pointOf(base+w*per+i), and sorts them into acknowledged and
// failed ones. A failed write must fail with an error of its own, not by
// running into the test's deadline.
func putTolerant(t testing.TB, e *Engine, space SpaceID, writers, per, base int) (ok, failed []acked) {
	t.Helper()
	ctx := ctxFor(t)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range per {
				n := base + w*per + i
				v := valueOf("during", n)
				rev, err := e.Put(ctx, space, pointOf(n), v)
				a := acked{space: space, p: pointOf(n), rev: rev, val: v}
				mu.Lock()
				if err != nil {
					assert.NotErrorIs(t, err, context.DeadlineExceeded, "a failed write hung")
					assert.NotErrorIs(t, err, ErrFailed, "one I/O error failed the engine")
					a.rev = 0
					failed = append(failed, a)
				} else {
					ok = append(ok, a)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return ok, failed
}

// TestStartStopNoLeaks: starting and stopping an engine on a real
// directory 100 times leaves no goroutine, file descriptor or io_uring
// mapping behind, and each Stop releases the directory lock. The std
// backend, with its worker pool, gets fewer cycles.
func TestStartStopNoLeaks(t *testing.T) {
	for _, tc := range []struct {
		backend Backend
		cycles  int
	}{{BackendAuto, 100}, {BackendStd, 30}} {
		t.Run(tc.backend.String(), func(t *testing.T) {
			startStopCycles(t, Config{Dir: t.TempDir(), Backend: tc.backend, Logger: testLogger(t),
				Preallocate: testPrealloc}, tc.cycles)
		})
	}
}

func startStopCycles(t *testing.T, cfg Config, cycles int) {
	ctx := ctxFor(t)
	want := map[int][]byte{}
	cycle := func(i int) {
		t.Helper()
		e, err := Start(ctx, cfg)
		require.NoError(t, err, "Start %d", i)
		if i == 0 {
			t.Logf("backend %s", e.Stats().Backend)
		}
		space, err := e.CreateSpace(ctx, testSpec)
		require.NoError(t, err)
		v := valueOf("cycle", i)
		_, err = e.Put(ctx, space, pointOf(i), v)
		require.NoError(t, err)
		want[i] = v
		if i%25 == 0 {
			require.NoError(t, e.Flush(ctx, space))
		}
		r, err := e.Get(ctx, space, pointOf(i/2))
		require.NoError(t, err, "Get of a write from an earlier cycle")
		assert.Equal(t, want[i/2], r.Value)
		require.NoError(t, e.Stop(ctx), "Stop %d", i)
		require.NoError(t, e.Stop(ctx), "a second Stop")
		_, err = e.Put(ctx, space, pointOf(i), v)
		require.ErrorIs(t, err, ErrStopped)
	}
	// Warm up whatever the runtime and the backend set up once per
	// process (the netpoller, the kernel probe).
	cycle(0)
	cycle(1)
	info := func() (fds []string, uringMaps int) {
		ents, err := os.ReadDir("/proc/self/fd")
		require.NoError(t, err)
		for _, e := range ents {
			target, err := os.Readlink("/proc/self/fd/" + e.Name())
			if err == nil {
				fds = append(fds, e.Name()+" -> "+target)
			}
		}
		maps, err := os.ReadFile("/proc/self/maps")
		require.NoError(t, err)
		return fds, bytes.Count(maps, []byte("io_uring"))
	}
	fds0, maps0 := info()
	leak := goleak.IgnoreCurrent()
	for i := 2; i < 2+cycles; i++ {
		cycle(i)
	}
	fds1, maps1 := info()
	assert.Equal(t, fds0, fds1, "open file descriptors before and after %d Start/Stop cycles", cycles)
	assert.Equal(t, maps0, maps1, "io_uring mappings before and after")
	goleak.VerifyNone(t, leak)
}

// TestStopUnblocksWriters: writers blocked on a full queue or waiting for
// their ack when Stop comes get an answer (a revision or ErrStopped), none
// hangs, and what was acknowledged survives.
func TestStopUnblocksWriters(t *testing.T) {
	disk := newTestDisk(t, 50)
	cfg := simCfg(t, disk)
	cfg.QueueCapacity = 8
	cfg.BatchSize = 4
	e := mustStart(t, cfg)
	space := mustSpace(t, e, "grid")

	ctx := ctxFor(t)
	var mu sync.Mutex
	var good []acked
	var wg sync.WaitGroup
	progress := make(chan struct{}) // closed once 100 writes are acknowledged
	for w := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				n := w*1000 + i
				v := valueOf("stop", n)
				rev, err := e.Put(ctx, space, pointOf(n), v)
				if err != nil {
					assert.ErrorIs(t, err, ErrStopped, "writer %d", w)
					return
				}
				mu.Lock()
				good = append(good, acked{space: space, p: pointOf(n), rev: rev, val: v})
				if len(good) == 100 {
					close(progress)
				}
				mu.Unlock()
			}
		})
	}
	select {
	case <-progress:
	case <-ctx.Done():
		t.Fatal("writers made no progress")
	}
	require.NoError(t, e.Stop(ctx))
	wg.Wait()
	require.Less(t, len(good), 8000, "Stop came before the writers finished")
	t.Logf("%d writes acknowledged before Stop", len(good))
	checkAcked(t, e.View(), space, good, nil)

	e = mustStart(t, cfg)
	checkAcked(t, e.View(), space, good, nil)
	mustStop(t, e)
}

// TestStartFailureReleasesEverything: a Start that fails halfway (here:
// the manifest cannot be read) releases the lock and the ring, so a later
// Start succeeds once the fault is gone.
func TestStartFailureReleasesEverything(t *testing.T) {
	disk := newTestDisk(t, 51)
	cfg := simCfg(t, disk)
	e := mustStart(t, cfg)
	space := mustSpace(t, e, "grid")
	want := putRange(t, e, space, "a", 0, 10)
	mustStop(t, e)

	disk.Inject(sim.Fault{Kind: sim.EIO, Path: testDir + "/MANIFEST", Ops: []ring.Opcode{ring.OpRead, ring.OpReadv}, Persist: true})
	_, err := Start(ctxFor(t), cfg)
	require.Error(t, err)
	assert.False(t, errors.Is(err, ErrLocked))
	assert.NotEmpty(t, disk.Hits(), "the fault fired")
	disk.ClearFaults()

	e = mustStart(t, cfg)
	checkAcked(t, e.View(), space, want, nil)
	mustStop(t, e)
}

// TestWritesWithBackgroundContext: writes whose ctx never ends (Ticket.Wait
// then receives without a select) through a queue small enough that the
// writers also block in it (queue's select, not its fast path).
func TestWritesWithBackgroundContext(t *testing.T) {
	cfg := simCfg(t, newTestDisk(t, 51))
	cfg.QueueCapacity = 4
	cfg.BatchSize = 2
	e := mustStart(t, cfg)
	space := mustSpace(t, e, "grid")
	bg := context.Background()
	var mu sync.Mutex
	var good []acked
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 100 {
				n := w*1000 + i
				v := valueOf("bg", n)
				var rev Revision
				var err error
				if i%2 == 0 {
					rev, err = e.Put(bg, space, pointOf(n), v)
				} else {
					var tk *Ticket
					tk, err = e.PutAsync(bg, space, pointOf(n), v)
					if err == nil {
						rev, err = tk.Wait(bg)
					}
				}
				if !assert.NoError(t, err, "writer %d write %d", w, i) {
					return
				}
				mu.Lock()
				good = append(good, acked{space: space, p: pointOf(n), rev: rev, val: v})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Len(t, good, 800)
	checkAcked(t, e.View(), space, good, nil)
	mustStop(t, e)
	_, err := e.Put(bg, space, pointOf(1), []byte("late"))
	assert.ErrorIs(t, err, ErrStopped)
}
