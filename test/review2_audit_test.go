package test

// Review of session 16's changes (a5a2fba..d712803): Stop's single grace,
// concurrent Stop callers, Start bounded by its ctx (the ring closed under
// recovery after startGrace, then closeAfterForce), block reads bounded by
// ctx (snapshot.Cache.readAt), ctx errors wrapped with what gave up
// (saysWhat), and the submitter's take and gathering.

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/internal/fdtest"
	"github.com/ringpipe/ringpipe/ring"
)

// r2BigConfig keeps every record of a large load in one live hot
// generation per space, so that recovery has much to replay.
func r2BigConfig(t *testing.T, b ringpipe.Backend) ringpipe.Config {
	return ringpipe.Config{Dir: t.TempDir(), Backend: b, Preallocate: 256 << 20, SealThreshold: 1 << 30, SealBytes: 200 << 20,
		Logger: zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel))}
}

// r2Value is the value r2Fill writes at point i.
func r2Value(i int) []byte { return fmt.Appendf(nil, "%0100d", i) }

// r2Fill writes points from..to-1 (100-byte values) spread over the spaces
// sps, through PutAsync from 8 goroutines, and requires every ticket.
func r2Fill(t *testing.T, e *ringpipe.Engine, sps []ringpipe.SpaceID, from, to int) {
	t.Helper()
	var wg sync.WaitGroup
	const W = 8
	for w := range W {
		wg.Go(func() {
			ctx := ctxFor(t)
			var ts []*ringpipe.Ticket
			wait := func() {
				for _, tk := range ts {
					if _, err := tk.Wait(ctx); err != nil {
						t.Error(err)
					}
				}
				ts = ts[:0]
			}
			for i := from + w; i < to; i += W {
				tk, err := e.PutAsync(ctx, sps[i%len(sps)], ringpipe.Point{uint32(i)}, r2Value(i))
				if err != nil {
					t.Error(err)
					return
				}
				ts = append(ts, tk)
				if len(ts) >= 256 {
					wait()
				}
			}
			wait()
		})
	}
	wg.Wait()
	require.False(t, t.Failed(), "the fill failed")
}

// r2Count counts the live records of sp by Scan.
func r2Count(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID) int {
	t.Helper()
	n := 0
	require.NoError(t, e.Scan(ctxFor(t), sp, ringpipe.Box{Min: ringpipe.Point{0}, Max: ringpipe.Point{1<<32 - 1}},
		func(ringpipe.Record) bool { n++; return true }))
	return n
}

// TestReview2StartCutShortFDs: Start is bounded by its ctx (README: "recovery's
// I/O gets 500 ms after the ctx ends, then the ring is closed under it and
// Start fails with the ctx's error (an fd an op in flight had opened may be
// lost then)"). On the real std backend, with a directory whose recovery
// takes well over 500 ms (12 spaces, hundreds of thousands of records in
// live hot generations), Starts whose ctx deadline is swept across recovery
// are cut short at various stages. Each must leave no fd of the process
// open (beyond what an op in flight opened), keep the LOCK free for the
// next Start, and lose nothing.
//
// Fixed: before, a Start cut short by its ctx on a healthy disk leaked fds of files recovery had fully opened (hot segment, WAL segment, MANIFEST/CURRENT .tmp, hot dir): a plain 500 ms grace closed the ring under a slow recovery, and closeAfterForce only closes what rec holds (std: 9 of 10 runs). Now recovery stops at its next step, and the ring is closed only when its I/O makes no progress.
func TestReview2StartCutShortFDs(t *testing.T) {
	t.Run("std", func(t *testing.T) { r2StartCutShortFDs(t, ringpipe.BackendStd) })
	t.Run("uring", func(t *testing.T) {
		if os.Getenv("RINGPIPE_LONG") == "" {
			t.Skip("RINGPIPE_LONG=1 runs the io_uring variant too")
		}
		r2StartCutShortFDs(t, ringpipe.BackendURing)
	})
}

func r2StartCutShortFDs(t *testing.T, b ringpipe.Backend) {
	cfg := r2BigConfig(t, b)
	e := start(t, cfg)
	var sps []ringpipe.SpaceID
	for i := range 12 {
		sps = append(sps, createSpace(t, e, fmt.Sprintf("big%d", i), 1, 32))
	}
	n, took := 0, time.Duration(0)
	for n < 1_200_000 {
		r2Fill(t, e, sps, n, n+150_000)
		n += 150_000
		stop(t, e)
		t0 := time.Now()
		e = start(t, cfg)
		took = time.Since(t0)
		t.Logf("%d records: a Start takes %v", n, took)
		if took > 900*time.Millisecond {
			break
		}
	}
	stop(t, e)
	if took < 600*time.Millisecond {
		t.Skipf("recovery of %d records takes %v: too fast to be cut short after the 500 ms grace", n, took)
	}

	var leaks []string
	cut := 0
	steps := 6
	span := took - 500*time.Millisecond
	for i := range steps {
		before := fdtest.List(t)
		d := time.Millisecond + span*time.Duration(i)/time.Duration(steps)
		ctx, cancel := context.WithTimeout(context.Background(), d)
		e, err := ringpipe.Start(ctx, cfg)
		cancel()
		require.NotErrorIs(t, err, ringpipe.ErrLocked, "deadline %v: the directory is locked by an earlier cut-short Start", d)
		if err == nil {
			stop(t, e)
			continue
		}
		assert.ErrorIs(t, err, context.DeadlineExceeded, "deadline %v", d)
		if strings.Contains(err.Error(), "cut short") {
			cut++
		}
		if fds := fdlNewFDs(t, before); len(fds) > 0 {
			leaks = append(leaks, fmt.Sprintf("deadline %v: %v left open after %q", d, fds, err))
		}
	}
	t.Logf("%d of %d Starts cut short", cut, steps)
	assert.Empty(t, leaks, "fds of files recovery had opened (not ops in flight) left open by Starts cut short")

	e = start(t, cfg)
	total := 0
	for _, sp := range sps {
		total += r2Count(t, e, sp)
	}
	assert.Equal(t, n, total, "every acknowledged record after the cut-short Starts")
	for _, i := range []int{0, n / 2, n - 1} {
		r, err := e.Get(ctxFor(t), sps[i%len(sps)], ringpipe.Point{uint32(i)})
		if assert.NoError(t, err) {
			assert.Equal(t, r2Value(i), r.Value)
		}
	}
	stop(t, e)
}

// r2Batches returns the BatchSize histogram's count and sum.
func r2Batches(e *ringpipe.Engine) (uint64, float64) {
	h := e.Telemetry().BatchSize
	return h.Count, h.Sum
}

// TestReview2BatchTimeoutStillGathers: README: "BatchTimeout delays only
// writes: a Sync, Stop, Flush, CreateSpace, a settled batch or a missed
// deadline ends its wait." When none of those happens, writes queued one
// by one within BatchTimeout must still go out as one batch (the knob's
// purpose), on the simulator and on std.
func TestReview2BatchTimeoutStillGathers(t *testing.T) {
	for _, b := range []string{"sim", "std"} {
		t.Run(b, func(t *testing.T) {
			var cfg ringpipe.Config
			if b == "sim" {
				cfg = simConfig(t, newSimDisk(t, 7))
			} else {
				cfg = realConfig(t, ringpipe.BackendStd)
			}
			cfg.BatchTimeout = 2 * time.Second
			cfg.BatchSize = 64
			// A missed hot deadline restages the batch to the WAL (a second
			// batch of the same records); ci8 saw a 2 ms miss on a busy
			// runner. This test is about gathering, not routing.
			cfg.DirectWriteTimeout = time.Minute
			e := start(t, cfg)
			sp := createSpace(t, e, "g", 1, 16)
			_, err := e.Put(ctxFor(t), sp, ringpipe.Point{0}, []byte("first"))
			require.NoError(t, err)
			c0, s0 := r2Batches(e)
			var ts []*ringpipe.Ticket
			for i := 1; i <= 20; i++ {
				tk, err := e.PutAsync(ctxFor(t), sp, ringpipe.Point{uint32(i)}, []byte("x"))
				require.NoError(t, err)
				ts = append(ts, tk)
				time.Sleep(time.Millisecond)
			}
			for _, tk := range ts {
				_, err := tk.Wait(ctxFor(t))
				require.NoError(t, err)
			}
			c1, s1 := r2Batches(e)
			t.Logf("batches %d, records %v", c1-c0, s1-s0)
			assert.Equal(t, float64(20), s1-s0, "records in the batches")
			assert.Equal(t, uint64(1), c1-c0, "20 writes queued within BatchTimeout, nothing else happening: one batch")
			stop(t, e)
		})
	}
}

// TestReview2SixtyFourWritersShareSyncs: 64 closed-loop writers with the
// default Config: group commit must put many writes in each batch
// (README: 58-63 per sync on this machine; the knob audit capped
// gathering at 2 ms and turned it off while a barrier waits). A
// regression to a few writes per batch shows in Telemetry.BatchSize.
func TestReview2SixtyFourWritersShareSyncs(t *testing.T) {
	for _, b := range []ringpipe.Backend{ringpipe.BackendStd, ringpipe.BackendURing} {
		t.Run(b.String(), func(t *testing.T) {
			cfg := realConfig(t, b)
			cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel))
			e, err := ringpipe.Start(ctxFor(t), cfg)
			if b == ringpipe.BackendURing && err != nil {
				t.Skipf("io_uring: %v", err)
			}
			require.NoError(t, err)
			defer e.Stop(context.Background()) //nolint:errcheck
			sp := createSpace(t, e, "w", 1, 32)
			var wg sync.WaitGroup
			var mu sync.Mutex
			done := time.Now().Add(1500 * time.Millisecond)
			n := 0
			for w := range 64 {
				wg.Go(func() {
					for i := 0; time.Now().Before(done); i++ {
						if _, err := e.Put(ctxFor(t), sp, ringpipe.Point{uint32(w<<20 | i)}, make([]byte, 100)); err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						n++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			c, s := r2Batches(e)
			st := e.Stats()
			t.Logf("%d Puts, %d batches, %.1f records per batch, %d syncs, staged %d", n, c, s/float64(c), st.Syncs, st.StagedWrites)
			require.Positive(t, c)
			assert.GreaterOrEqual(t, s/float64(c), 16.0, "records per batch at 64 writers")
			require.NoError(t, e.Stop(ctxFor(t)))
		})
	}
}

// TestReview2AbandonedBlockReads: Get and Scan give up a block read when
// their ctx ends (the read finishes on a goroutine of its own). With no
// page cache to speak of (BlockCacheBytes 1: every page read goes to the
// disk) and two blocks where the newer shadows the older, readers with
// ctxs that end at random points of their reads must only ever see the
// newest value (an abandoned read never yields an older block's record,
// a missing record or a wrong page), fail with their ctx's error
// otherwise, and leave nothing behind: reads with a ctx that never ends
// are right afterwards, and Stop leaves no goroutine (goleak).
func TestReview2AbandonedBlockReads(t *testing.T) {
	for _, b := range []string{"sim", "std"} {
		t.Run(b, func(t *testing.T) {
			var cfg ringpipe.Config
			if b == "sim" {
				cfg = simConfig(t, newSimDisk(t, 11))
			} else {
				cfg = realConfig(t, ringpipe.BackendStd)
			}
			cfg.BlockCacheBytes = 1
			cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel))
			e := start(t, cfg)
			sp := createSpace(t, e, "r", 1, 16)
			const n = 1500
			old := func(i int) []byte { return fmt.Appendf(nil, "old %d %060d", i, i) }
			cur := func(i int) []byte { return fmt.Appendf(nil, "new %d %060d", i, i) }
			for round, val := range []func(int) []byte{old, cur} {
				var ts []*ringpipe.Ticket
				for i := range n {
					tk, err := e.PutAsync(ctxFor(t), sp, ringpipe.Point{uint32(i)}, val(i))
					require.NoError(t, err)
					ts = append(ts, tk)
				}
				for _, tk := range ts {
					_, err := tk.Wait(ctxFor(t))
					require.NoError(t, err)
				}
				require.NoError(t, e.Flush(ctxFor(t), sp), "block %d", round)
			}
			stop(t, e)
			e = start(t, cfg) // a fresh engine: nothing cached

			var wg sync.WaitGroup
			var mu sync.Mutex
			var bad []string
			okGets, okScans, gaveUp := 0, 0, 0
			note := func(s string) {
				mu.Lock()
				if len(bad) < 10 {
					bad = append(bad, s)
				}
				mu.Unlock()
			}
			deadline := time.Now().Add(3 * time.Second)
			for w := range 4 {
				wg.Go(func() {
					for k := 0; time.Now().Before(deadline); k++ {
						d := time.Duration((k*37+w*101)%400) * time.Microsecond
						ctx, cancel := context.WithTimeout(context.Background(), d)
						i := (k*131 + w*17) % n
						if k%4 == 3 {
							lo := uint32(i)
							hi := min(lo+40, n-1)
							var got []ringpipe.Record
							err := e.Scan(ctx, sp, ringpipe.Box{Min: ringpipe.Point{lo}, Max: ringpipe.Point{hi}}, func(r ringpipe.Record) bool {
								got = append(got, r)
								return true
							})
							cancel()
							if err != nil {
								if !errors.Is(err, context.DeadlineExceeded) {
									note(fmt.Sprintf("Scan %d..%d: %v", lo, hi, err))
								}
								mu.Lock()
								gaveUp++
								mu.Unlock()
								continue
							}
							if len(got) != int(hi-lo+1) {
								note(fmt.Sprintf("Scan %d..%d: %d records", lo, hi, len(got)))
							}
							for j, r := range got {
								if want := cur(int(lo) + j); string(r.Value) != string(want) {
									note(fmt.Sprintf("Scan %d..%d: record %d = %q", lo, hi, j, r.Value))
									break
								}
							}
							mu.Lock()
							okScans++
							mu.Unlock()
							continue
						}
						r, err := e.Get(ctx, sp, ringpipe.Point{uint32(i)})
						cancel()
						switch {
						case err == nil:
							if string(r.Value) != string(cur(i)) {
								note(fmt.Sprintf("Get %d = %q", i, r.Value))
							}
							mu.Lock()
							okGets++
							mu.Unlock()
						case errors.Is(err, context.DeadlineExceeded):
							mu.Lock()
							gaveUp++
							mu.Unlock()
						default:
							note(fmt.Sprintf("Get %d: %v", i, err))
						}
					}
				})
			}
			wg.Wait()
			t.Logf("%d Gets and %d Scans right, %d gave up", okGets, okScans, gaveUp)
			assert.Empty(t, bad, "reads whose ctx ended mid-read returned wrong data or a wrong error")
			assert.Positive(t, gaveUp, "some reads gave up (precondition)")
			assert.Positive(t, okGets+okScans, "some reads finished (precondition)")
			for i := range n {
				r, err := e.Get(context.Background(), sp, ringpipe.Point{uint32(i)})
				require.NoError(t, err, "Get %d after the abandoned reads", i)
				require.Equal(t, string(cur(i)), string(r.Value), "Get %d after the abandoned reads", i)
			}
			stop(t, e)
		})
	}
}

// TestReview2ConcurrentStops: API.md: Stop "is safe to call more than once
// and from several goroutines; later calls return nil". Eight Stops at
// once, on a healthy disk, while PutAsync writers fill the queue: every
// Stop returns nil (no ctx ends), every accepted write is acknowledged
// (Stop drains what was accepted), and all of them are there after a
// restart; a later Put says ErrStopped.
func TestReview2ConcurrentStops(t *testing.T) {
	for _, b := range []string{"sim", "std"} {
		t.Run(b, func(t *testing.T) {
			for rep := range 3 {
				var cfg ringpipe.Config
				if b == "sim" {
					cfg = simConfig(t, newSimDisk(t, int64(20+rep)))
				} else {
					cfg = realConfig(t, ringpipe.BackendStd)
				}
				cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel))
				e := start(t, cfg)
				sp := createSpace(t, e, "c", 1, 32)
				var mu sync.Mutex
				type acc struct {
					tk *ringpipe.Ticket
					i  int
				}
				var accepted []acc
				var wg sync.WaitGroup
				for w := range 4 {
					wg.Go(func() {
						for i := w; ; i += 4 {
							tk, err := e.PutAsync(context.Background(), sp, ringpipe.Point{uint32(i)}, r2Value(i))
							if err != nil {
								if !errors.Is(err, ringpipe.ErrStopped) {
									t.Errorf("PutAsync: %v", err)
								}
								return
							}
							mu.Lock()
							accepted = append(accepted, acc{tk, i})
							mu.Unlock()
						}
					})
				}
				time.Sleep(20 * time.Millisecond)
				errs := make([]error, 8)
				var sw sync.WaitGroup
				for k := range errs {
					sw.Go(func() { errs[k] = e.Stop(context.Background()) })
				}
				sw.Wait()
				wg.Wait()
				for k, err := range errs {
					assert.NoError(t, err, "Stop %d", k)
				}
				_, err := e.Put(ctxFor(t), sp, ringpipe.Point{1}, []byte("late"))
				assert.ErrorIs(t, err, ringpipe.ErrStopped)
				lost := 0
				for _, a := range accepted {
					select {
					case <-a.tk.Done():
					default:
						t.Fatalf("a ticket is not done after Stop returned")
					}
					if _, err := a.tk.Wait(context.Background()); err != nil {
						lost++
					}
				}
				assert.Zero(t, lost, "accepted writes failed by a Stop with no deadline (of %d)", len(accepted))
				e = start(t, cfg)
				for _, a := range accepted {
					r, err := e.Get(ctxFor(t), sp, ringpipe.Point{uint32(a.i)})
					if !assert.NoError(t, err, "point %d", a.i) {
						break
					}
					assert.Equal(t, r2Value(a.i), r.Value)
				}
				stop(t, e)
			}
		})
	}
}

// r2Ledger records writes to unique points: which were acknowledged
// (with their revision) and which failed or are unknown.
type r2Ledger struct {
	mu    sync.Mutex
	acked map[uint32]ringpipe.Revision
	tried map[uint32]bool
}

func newR2Ledger() *r2Ledger {
	return &r2Ledger{acked: map[uint32]ringpipe.Revision{}, tried: map[uint32]bool{}}
}

func (l *r2Ledger) try(i uint32) { l.mu.Lock(); l.tried[i] = true; l.mu.Unlock() }
func (l *r2Ledger) ack(i uint32, rev ringpipe.Revision) {
	l.mu.Lock()
	l.acked[i] = rev
	l.mu.Unlock()
}
func (l *r2Ledger) nacked() int { l.mu.Lock(); defer l.mu.Unlock(); return len(l.acked) }

// verify: every acknowledged write is there with its revision and value;
// every other write tried is wholly there or absent; nothing else is.
func (l *r2Ledger) verify(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID, what string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := map[uint32]bool{}
	require.NoError(t, e.Scan(ctxFor(t), sp, ringpipe.Box{Min: ringpipe.Point{0}, Max: ringpipe.Point{1<<32 - 1}}, func(r ringpipe.Record) bool {
		i := r.Point[0]
		seen[i] = true
		if !l.tried[i] {
			t.Errorf("%s: point %d was never written", what, i)
		}
		if string(r.Value) != string(r2Value(int(i))) {
			t.Errorf("%s: point %d holds %q", what, i, r.Value)
		}
		if rev, ok := l.acked[i]; ok && rev != r.Revision {
			t.Errorf("%s: point %d at revision %d, acknowledged at %d", what, i, r.Revision, rev)
		}
		return true
	}))
	missing := 0
	for i := range l.acked {
		if !seen[i] {
			missing++
		}
	}
	assert.Zero(t, missing, "%s: acknowledged writes lost (of %d)", what, len(l.acked))
}

// run starts writers (async and sync) on unique points until stop closes;
// wait waits for them and their tickets.
func (l *r2Ledger) run(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID, stop <-chan struct{}) (wait func()) {
	var wg sync.WaitGroup
	var next atomicU32
	for w := range 4 {
		wg.Go(func() {
			var ts []*ringpipe.Ticket
			var ps []uint32
			for {
				select {
				case <-stop:
					for k, tk := range ts {
						if rev, err := tk.Wait(context.Background()); err == nil {
							l.ack(ps[k], rev)
						}
					}
					return
				default:
				}
				i := next.add()
				l.try(i)
				if w%2 == 0 {
					rev, err := e.Put(context.Background(), sp, ringpipe.Point{i}, r2Value(int(i)))
					if err == nil {
						l.ack(i, rev)
					} else if errors.Is(err, ringpipe.ErrStopped) {
						<-stop
					}
					continue
				}
				tk, err := e.PutAsync(context.Background(), sp, ringpipe.Point{i}, r2Value(int(i)))
				if err != nil {
					<-stop
					continue
				}
				ts, ps = append(ts, tk), append(ps, i)
				if len(ts) >= 32 {
					for k, tk := range ts {
						if rev, err := tk.Wait(context.Background()); err == nil {
							l.ack(ps[k], rev)
						}
					}
					ts, ps = ts[:0], ps[:0]
				}
			}
		})
	}
	return wg.Wait
}

type atomicU32 struct {
	mu sync.Mutex
	n  uint32
}

func (a *atomicU32) add() uint32 { a.mu.Lock(); defer a.mu.Unlock(); a.n++; return a.n }

// TestReview2ForcedStopThenPowerLoss: Stop's single 250 ms grace (a5a2fba):
// the simulated disk stops answering under writers and seals, Stop's ctx
// ends, the ring is closed under the actors; then the power goes. README:
// "nothing acknowledged is lost, and the next Start recovers whatever the
// cut-off I/O left": every acknowledged write is there with its revision,
// every failed one wholly or not at all. Only the engine's ring hangs
// (not the block-read ring, whose hang is the known close gap of
// TestCtxbStopForcedWithBlocksOnHungDisk).
func TestReview2ForcedStopThenPowerLoss(t *testing.T) {
	for seed := range int64(3) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			disk := newSimDisk(t, 900+seed)
			gate := newHangGate()
			t.Cleanup(gate.release)
			cfg := simConfig(t, disk)
			cfg.NewRing = func(o ring.Options) (ring.Ring, error) {
				if o.Entries == 64 || o.Entries == 4 { // the block-read ring and its fallback
					return disk.NewRing(o), nil
				}
				return gate.wrap(disk.NewRing(o)), nil
			}
			cfg.SealThreshold = 64 // seals in flight too
			cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel))
			e, err := ringpipe.Start(ctxFor(t), cfg)
			require.NoError(t, err)
			sp := createSpace(t, e, "p", 1, 32)
			l := newR2Ledger()
			halt := make(chan struct{})
			wait := l.run(t, e, sp, halt)
			require.Eventually(t, func() bool { return l.nacked() >= 300 }, opTimeout, time.Millisecond)
			gate.shut()
			time.Sleep(time.Duration(seed) * 5 * time.Millisecond)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
			stopped := make(chan error, 1)
			go func() { stopped <- e.Stop(ctx) }()
			var serr error
			select {
			case serr = <-stopped:
			case <-time.After(opTimeout):
				gate.release()
				close(halt)
				<-stopped
				wait()
				t.Fatalf("Stop did not return %v after its 30 ms ctx ended on a hung disk", opTimeout)
			}
			cancel()
			close(halt)
			t.Logf("Stop: %v", serr)
			if serr != nil {
				assert.ErrorIs(t, serr, context.DeadlineExceeded)
			}
			gate.release()
			wait()
			assert.NoError(t, e.Stop(ctxFor(t)), "a second Stop")
			disk.PowerLoss(rand.New(rand.NewSource(seed)))
			e2 := start(t, simConfig(t, disk))
			l.verify(t, e2, sp, "after the forced Stop and a power loss")
			stop(t, e2)
		})
	}
}

// TestReview2CutShortStartThenPowerLoss: Start bounded by its ctx
// (d712803): recovery's disk stops answering at a stage (hot replay, WAL
// replay, the manifest switch), Start's ctx ends, the ring is closed under
// recovery. No block is open, so nothing waits for the close gap. Then
// the power goes; the next Start must find every acknowledged write, and
// the cut-short Start must have left no goroutine and released the LOCK.
func TestReview2CutShortStartThenPowerLoss(t *testing.T) {
	stages := []struct {
		name string
		trap func(ring.Op, string) bool
	}{
		{"hot replay", ctxbOpenOf("/hot/")},
		{"wal replay", ctxbOpenOf("/wal/")},
		{"manifest switch", ctxbOpenOf("CURRENT.tmp")},
	}
	for si, st := range stages {
		t.Run(st.name, func(t *testing.T) {
			v := newCtxbEnv(t, int64(950+si))
			cfg := v.cfg
			cfg.PromoteInterval = time.Hour // staged records stay staged
			cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel))
			e := start(t, cfg)
			sp := createSpace(t, e, "q", 1, 32)
			l := newR2Ledger()
			for i := uint32(1); i <= 200; i++ {
				l.try(i)
				rev, err := e.Put(ctxFor(t), sp, ringpipe.Point{i}, r2Value(int(i)))
				require.NoError(t, err)
				l.ack(i, rev)
				if i == 150 {
					stallHot(v.disk, sp)
				}
			}
			v.disk.ClearFaults()
			require.Positive(t, e.Stats().StagedPending, "records staged (precondition)")
			stop(t, e)

			before := goleak.IgnoreCurrent()
			sprung := v.arm(st.trap)
			ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
			t0 := time.Now()
			got, err := ringpipe.Start(ctx, cfg)
			cancel()
			took := time.Since(t0)
			select {
			case <-sprung:
			default:
				t.Fatalf("the trap did not spring (Start: %v)", err)
			}
			t.Logf("Start after %v: %v", took, err)
			v.disarm()
			v.release()
			if got != nil {
				t.Errorf("Start returned an engine past its ctx (after %v)", took)
				require.NoError(t, got.Stop(ctxFor(t)))
			} else {
				assert.ErrorIs(t, err, context.DeadlineExceeded)
			}
			goleak.VerifyNone(t, before)
			v.disk.PowerLoss(rand.New(rand.NewSource(int64(si))))
			e = start(t, cfg)
			l.verify(t, e, sp, st.name+": after a cut-short Start and a power loss")
			_, err = e.Put(ctxFor(t), sp, ringpipe.Point{100000}, r2Value(100000))
			require.NoError(t, err)
			stop(t, e)
		})
	}
}

// TestReview2StopCancelledCtxUnderLoad: Stop with a ctx cancelled before
// the call, on a healthy real disk, while PutAsync and Put writers run
// and a block is open (the grace is one 250 ms budget for the whole Stop
// now). Stop returns nil or the ctx's error; every write that fails says
// ErrStopped (README: "Writes still waiting then fail"); nothing
// acknowledged is lost; no fd is left; the LOCK is free for the next Start.
func TestReview2StopCancelledCtxUnderLoad(t *testing.T) {
	for _, b := range []ringpipe.Backend{ringpipe.BackendStd, ringpipe.BackendURing} {
		t.Run(b.String(), func(t *testing.T) {
			cfg := realConfig(t, b)
			cfg.SealThreshold = 200
			cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel))
			for rep := range 4 {
				fds := fdtest.List(t)
				e, err := ringpipe.Start(ctxFor(t), cfg)
				if b == ringpipe.BackendURing && err != nil {
					t.Skipf("io_uring: %v", err)
				}
				require.NoError(t, err)
				sp := createSpace(t, e, "s", 1, 32)
				l := newR2Ledger()
				base := uint32(rep) << 24
				var mu sync.Mutex
				var odd []string
				halt := make(chan struct{})
				var wg sync.WaitGroup
				for w := range 6 {
					wg.Go(func() {
						for i := base + uint32(w); ; i += 6 {
							select {
							case <-halt:
								return
							default:
							}
							l.try(i)
							var rev ringpipe.Revision
							var err error
							if w%3 == 0 {
								rev, err = e.Put(context.Background(), sp, ringpipe.Point{i}, r2Value(int(i)))
							} else {
								var tk *ringpipe.Ticket
								if tk, err = e.PutAsync(context.Background(), sp, ringpipe.Point{i}, r2Value(int(i))); err == nil {
									rev, err = tk.Wait(context.Background())
								}
							}
							if err == nil {
								l.ack(i, rev)
								continue
							}
							if !errors.Is(err, ringpipe.ErrStopped) {
								mu.Lock()
								odd = append(odd, err.Error())
								mu.Unlock()
							}
							return
						}
					})
				}
				require.Eventually(t, func() bool { return l.nacked() >= 400 }, opTimeout, time.Millisecond)
				_, err = e.Get(ctxFor(t), sp, ringpipe.Point{base})
				require.NoError(t, err)
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				serr := e.Stop(ctx)
				close(halt)
				wg.Wait()
				if serr != nil {
					assert.ErrorIs(t, serr, context.Canceled, "Stop's error")
				}
				assert.Empty(t, odd, "writes cut by Stop that do not say ErrStopped")
				assert.NoError(t, e.Stop(ctxFor(t)), "a second Stop")
				assert.Empty(t, fdlNewFDs(t, fds), "fds left by a Stop whose ctx was cancelled (rep %d: %v)", rep, serr)
				e2, err := ringpipe.Start(ctxFor(t), cfg)
				require.NoError(t, err, "Start after the Stop")
				l.mu.Lock()
				missing := 0
				for i, rev := range l.acked {
					r, err := e2.Get(ctxFor(t), sp, ringpipe.Point{i})
					if err != nil || r.Revision != rev {
						missing++
					}
				}
				l.mu.Unlock()
				assert.Zero(t, missing, "acknowledged writes lost (rep %d)", rep)
				require.NoError(t, e2.Stop(ctxFor(t)))
			}
		})
	}
}
