package ring_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// muxBackends are the rings a Mux is tested on: each real backend the
// kernel allows, and sim.
func muxBackends(t *testing.T) map[string]func(t *testing.T) (ring.Ring, string) {
	out := map[string]func(t *testing.T) (ring.Ring, string){
		"std": func(t *testing.T) (ring.Ring, string) {
			r, err := ring.New(ring.Options{Kind: ring.Std, Entries: 16})
			require.NoError(t, err)
			return r, t.TempDir()
		},
		"sim": func(t *testing.T) (ring.Ring, string) {
			disk := sim.NewDisk(1)
			d := ring.NewSync(disk.NewRing(ring.Options{}))
			require.NoError(t, ring.MkdirDurable(d, "/m"))
			return disk.NewRing(ring.Options{Entries: 16}), "/m"
		},
	}
	if r, err := ring.New(ring.Options{Kind: ring.URing, Entries: 16}); err == nil {
		r.Close()
		out["uring"] = func(t *testing.T) (ring.Ring, string) {
			r, err := ring.New(ring.Options{Kind: ring.URing, Entries: 16})
			require.NoError(t, err)
			return r, t.TempDir()
		}
	} else {
		t.Logf("uring backend unavailable: %v", err)
	}
	return out
}

// TestMuxConcurrent: many goroutines write and read back their own regions
// of one file through one Mux at once, with batches of linked ops; each
// gets its own results, in the order of its ops, with its own tokens.
func TestMuxConcurrent(t *testing.T) {
	for name, mk := range muxBackends(t) {
		t.Run(name, func(t *testing.T) {
			r, dir := mk(t)
			m := ring.NewMux(r)
			defer func() { require.NoError(t, m.Close()) }()
			fd, err := ring.Open(m, filepath.Join(dir, "f"), unix.O_RDWR|unix.O_CREAT, 0o644)
			require.NoError(t, err)

			const workers, rounds, size = 16, 40, 512
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewSource(int64(w)))
					for i := range rounds {
						want := bytes.Repeat([]byte{byte(w), byte(i)}, size/2)
						off := int64((w*rounds + i) * size)
						got := make([]byte, size)
						// A write linked to a read of what it wrote: one
						// batch, two results in order.
						cs, err := m.Do(
							ring.Op{Code: ring.OpWrite, FD: fd, Buf: want, Offset: off, Token: 7, Link: true},
							ring.Op{Code: ring.OpRead, FD: fd, Buf: got, Offset: off, Token: 9},
						)
						if err != nil {
							errs <- err
							return
						}
						if cs[0].Code != ring.OpWrite || cs[0].Token != 7 || cs[0].Err != nil || cs[0].Res != size ||
							cs[1].Code != ring.OpRead || cs[1].Token != 9 || cs[1].Err != nil || !bytes.Equal(got, want) {
							errs <- fmt.Errorf("worker %d round %d: %+v", w, i, cs)
							return
						}
						if rng.Intn(4) == 0 {
							if _, err := ring.Do1(m, ring.Op{Code: ring.OpNop}); err != nil {
								errs <- err
								return
							}
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			require.NoError(t, ring.Close(m, fd))
			st := m.Ring().Stats()
			assert.GreaterOrEqual(t, st.Completed, uint64(workers*rounds*2))
		})
	}
}

// TestMuxClose: Close completes the Do calls in flight (with their results
// or an error, never a hang), later calls fail with ErrClosed, and Close is
// idempotent. The reaper is gone afterwards (goleak, TestMain).
func TestMuxClose(t *testing.T) {
	for name, mk := range muxBackends(t) {
		t.Run(name, func(t *testing.T) {
			r, _ := mk(t)
			m := ring.NewMux(r)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					for {
						if _, err := m.Do(ring.Op{Code: ring.OpNop}); err != nil {
							assert.ErrorIs(t, err, ring.ErrClosed)
							return
						}
					}
				}()
			}
			close(start)
			// Let the callers get going: one Do of our own completes
			// among theirs.
			_, err := m.Do(ring.Op{Code: ring.OpNop})
			require.NoError(t, err)
			require.NoError(t, m.Close())
			wg.Wait()
			_, err = m.Do(ring.Op{Code: ring.OpNop})
			assert.ErrorIs(t, err, ring.ErrClosed)
			require.NoError(t, m.Close(), "a second Close")
		})
	}
}

// TestMuxRingDies: when the ring dies under the Mux (a simulated power
// loss), waiting and later calls fail with the ring's error.
func TestMuxRingDies(t *testing.T) {
	disk := sim.NewDisk(3)
	m := ring.NewMux(disk.NewRing(ring.Options{}))
	defer m.Close()
	_, err := m.Do(ring.Op{Code: ring.OpMkdir, Path: "/x", Mode: 0o755})
	require.NoError(t, err)
	disk.PowerLoss(rand.New(rand.NewSource(3)))
	_, err = m.Do(ring.Op{Code: ring.OpNop})
	require.Error(t, err)
	assert.True(t, errors.Is(err, sim.ErrCrashed) || errors.Is(err, ring.ErrClosed), "%v", err)
}

// TestMuxRefuses: an empty batch does nothing, one beyond the ring's
// capacity is refused, a malformed one is the ring's error.
func TestMuxRefuses(t *testing.T) {
	disk := sim.NewDisk(4)
	m := ring.NewMux(disk.NewRing(ring.Options{Entries: 1, Capacity: 2}))
	defer m.Close()
	cs, err := m.Do()
	assert.NoError(t, err)
	assert.Empty(t, cs)
	_, err = m.Do(ring.Op{Code: ring.OpNop}, ring.Op{Code: ring.OpNop}, ring.Op{Code: ring.OpNop})
	assert.ErrorContains(t, err, "exceeds capacity")
	_, err = m.Do(ring.Op{Code: ring.OpRead})
	var oe *ring.OpError
	assert.ErrorAs(t, err, &oe, "a read without a buffer")
	_, err = m.Do(ring.Op{Code: ring.OpNop})
	assert.NoError(t, err, "the Mux still works")
}

func BenchmarkMuxRead(b *testing.B) {
	for name, kind := range map[string]ring.Kind{"std": ring.Std, "uring": ring.URing} {
		b.Run(name, func(b *testing.B) {
			r, err := ring.New(ring.Options{Kind: kind, Entries: 64})
			if err != nil {
				b.Skip(err)
			}
			m := ring.NewMux(r)
			defer m.Close()
			path := filepath.Join(b.TempDir(), "f")
			fd, err := ring.Open(m, path, unix.O_RDWR|unix.O_CREAT, 0o644)
			require.NoError(b, err)
			require.NoError(b, ring.WriteAt(m, fd, make([]byte, 1<<20), 0))
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 4096)
				rng := rand.New(rand.NewSource(1))
				for pb.Next() {
					if _, err := ring.ReadAt(m, fd, buf, int64(rng.Intn(256))*4096); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
