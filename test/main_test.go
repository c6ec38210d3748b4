// Package test holds ringpipe's integration scenarios: suites that drive
// the public API of the root package end to end, on real directories and on
// ring/sim's simulated disk, and check what API.md promises.
package test

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/hot"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
	"github.com/ringpipe/ringpipe/snapshot"
)

// TestMain fails the package when a test leaves a goroutine behind: Stop
// must stop every goroutine the engine started.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Bounds on waits. They are generous because CI runs everything with -race
// on two cores; a healthy run takes a small fraction of each.
const (
	// opTimeout bounds one API call (a Put, a Flush, a Stop).
	opTimeout = 20 * time.Second
	// eventualTimeout bounds a wait for a Stats-based eventual condition.
	eventualTimeout = 20 * time.Second
	// pollEvery is the period at which such a condition is polled.
	pollEvery = 2 * time.Millisecond
)

// testPrealloc keeps each log file's preallocation small: the suite starts
// many engines, and the default 64 MiB per file would fill t.TempDir
// needlessly.
const testPrealloc = 1 << 20

// seeds is how many seeds a seeded crash test runs: def, or
// $RINGPIPE_SEEDS for a soak (RINGPIPE_SEEDS=500 go test -run PowerLoss ./test/).
func seeds(def int64) int64 {
	if n, err := strconv.ParseInt(os.Getenv("RINGPIPE_SEEDS"), 10, 64); err == nil && n > 0 {
		return n
	}
	return def
}

// ctxFor returns a context that ends after opTimeout or with the test.
func ctxFor(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

// realConfig is a Config on a fresh real directory with backend b.
func realConfig(t testing.TB, b ringpipe.Backend) ringpipe.Config {
	t.Helper()
	return ringpipe.Config{
		Dir:         t.TempDir(),
		Backend:     b,
		Logger:      zaptest.NewLogger(t),
		Preallocate: testPrealloc,
	}
}

// simDir is the engine's directory on a simulated disk.
const simDir = "/db"

// newSimDisk returns an empty simulated disk, deterministic from seed, with
// simDir created durably.
func newSimDisk(t testing.TB, seed int64) *sim.Disk {
	t.Helper()
	disk := sim.NewDisk(seed)
	require.NoError(t, disk.MkdirAll(simDir))
	return disk
}

// simConfig is a Config whose rings are disk's: every Start with it is a
// new process on the same disk.
func simConfig(t testing.TB, disk *sim.Disk) ringpipe.Config {
	t.Helper()
	return ringpipe.Config{
		Dir:         simDir,
		Logger:      zaptest.NewLogger(t),
		Preallocate: testPrealloc,
		NewRing:     func(o ring.Options) (ring.Ring, error) { return disk.NewRing(o), nil },
	}
}

// start starts an engine with cfg and stops it when the test ends (a
// second Stop by the test itself is harmless).
func start(t testing.TB, cfg ringpipe.Config) *ringpipe.Engine {
	t.Helper()
	e, err := ringpipe.Start(ctxFor(t), cfg)
	require.NoError(t, err, "Start")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		_ = e.Stop(ctx)
	})
	return e
}

// stop stops e and requires that it went cleanly.
func stop(t testing.TB, e *ringpipe.Engine) {
	t.Helper()
	require.NoError(t, e.Stop(ctxFor(t)), "Stop")
}

// createSpace creates a space and requires that it worked.
func createSpace(t testing.TB, e *ringpipe.Engine, name string, dims, bits int) ringpipe.SpaceID {
	t.Helper()
	id, err := e.CreateSpace(ctxFor(t), ringpipe.SpaceSpec{Name: name, Dims: dims, Bits: bits})
	require.NoError(t, err, "CreateSpace %s", name)
	return id
}

// waitFor polls cond until it holds or eventualTimeout passes; then it
// fails the test with what and the last Stats.
func waitFor(t testing.TB, e *ringpipe.Engine, what string, cond func(ringpipe.Stats) bool) {
	t.Helper()
	waitForWithin(t, e, eventualTimeout, what, cond)
}

// waitForWithin is waitFor with its own bound, for waits that grow with a
// test's volume (the machine's other load multiplies them).
func waitForWithin(t testing.TB, e *ringpipe.Engine, d time.Duration, what string, cond func(ringpipe.Stats) bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		st := e.Stats()
		if cond(st) {
			return
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			require.FailNowf(t, "timed out", "waiting for %s; last stats %+v", what, e.Stats())
		}
	}
}

// pkey is a map key for a point.
type pkey string

func keyOf(p ringpipe.Point) pkey { return pkey(fmt.Sprint([]uint32(p))) }

// write is one acknowledged write as the test saw it.
// envSeed is a seeded test's seed: the environment variable name when set
// (a replay), else from the clock (below 10^9, short to type); it logs how
// to replay it.
func envSeed(t *testing.T, name string) int64 {
	t.Helper()
	seed := time.Now().UnixNano() % 1_000_000_000
	if s := os.Getenv(name); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		require.NoError(t, err, name)
		seed = v
	}
	t.Logf("seed %d (replay with %s=%d)", seed, name, seed)
	return seed
}

// valueSizeLimit is the largest MaxValueSize Start accepts: a record
// frame's payload limit (64 MiB) less the record's header with 16
// coordinates (84 bytes).
const valueSizeLimit = 64<<20 - 84

type write struct {
	point ringpipe.Point
	rev   ringpipe.Revision
	value []byte // nil for a delete
}

// model is the newest acknowledged write per point of one space: what Get
// and Scan must return.
type model struct {
	spec  ringpipe.SpaceSpec
	last  map[pkey]write
	count int
}

func newModel(spec ringpipe.SpaceSpec) *model {
	return &model{spec: spec, last: make(map[pkey]write)}
}

// add records an acknowledged write; the highest revision per point wins.
func (m *model) add(w write) {
	m.count++
	k := keyOf(w.point)
	if old, ok := m.last[k]; ok && old.rev > w.rev {
		return
	}
	m.last[k] = w
}

// live returns the model's live records inside box, in key order.
func (m *model) live(box ringpipe.Box) []write {
	var out []write
	for _, w := range m.last {
		if w.value != nil && inBox(w.point, box) {
			out = append(out, w)
		}
	}
	slices.SortFunc(out, func(a, b write) int {
		ka := snapshot.Key(a.point, m.spec.Dims, m.spec.Bits)
		kb := snapshot.Key(b.point, m.spec.Dims, m.spec.Bits)
		switch {
		case ka < kb:
			return -1
		case ka > kb:
			return 1
		}
		return 0
	})
	return out
}

func inBox(p ringpipe.Point, b ringpipe.Box) bool {
	for i, c := range p {
		if c < b.Min[i] || c > b.Max[i] {
			return false
		}
	}
	return true
}

// fullBox is the box of every point of spec.
func fullBox(spec ringpipe.SpaceSpec) ringpipe.Box {
	b := ringpipe.Box{Min: make(ringpipe.Point, spec.Dims), Max: make(ringpipe.Point, spec.Dims)}
	for i := range b.Max {
		b.Max[i] = uint32(uint64(1)<<spec.Bits - 1)
	}
	return b
}

// randPoint is a uniformly random point of spec.
func randPoint(rng *rand.Rand, spec ringpipe.SpaceSpec) ringpipe.Point {
	p := make(ringpipe.Point, spec.Dims)
	for i := range p {
		p[i] = uint32(rng.Int63n(int64(1) << spec.Bits))
	}
	return p
}

// hotPrefix is the path prefix on a simulated disk of every hot segment
// file of space (hot/<space>-<gen>.seg).
func hotPrefix(space ringpipe.SpaceID) string {
	name := hot.Gen{Space: space, Gen: 1}.FileName()
	return simDir + "/hot/" + name[:len(name)-len("00000000000000000001.seg")]
}

// reader is what checkModel reads through: an Engine or a View.
type reader struct {
	get  func(ringpipe.SpaceID, ringpipe.Point) (ringpipe.Record, error)
	scan func(ringpipe.SpaceID, ringpipe.Box, func(ringpipe.Record) bool) error
}

func engineReader(t testing.TB, e *ringpipe.Engine) reader {
	ctx := ctxFor(t)
	return reader{
		get: func(s ringpipe.SpaceID, p ringpipe.Point) (ringpipe.Record, error) { return e.Get(ctx, s, p) },
		scan: func(s ringpipe.SpaceID, b ringpipe.Box, fn func(ringpipe.Record) bool) error {
			return e.Scan(ctx, s, b, fn)
		},
	}
}

func viewReader(v *ringpipe.View) reader { return reader{get: v.Get, scan: v.Scan} }

// checkModel checks that r shows exactly m for space: Get of every point
// the model knows returns its newest write (ErrNotFound for a delete), and
// a Scan of box returns the model's live records in key order.
func checkModel(t testing.TB, r reader, space ringpipe.SpaceID, m *model, box ringpipe.Box) {
	t.Helper()
	bad := 0
	for _, w := range m.last {
		rec, err := r.get(space, w.point)
		if w.value == nil {
			if !assert.ErrorIs(t, err, ringpipe.ErrNotFound, "Get %v after delete at rev %d", w.point, w.rev) {
				bad++
			}
		} else if assert.NoError(t, err, "Get %v (rev %d)", w.point, w.rev) {
			ok := assert.Equal(t, w.rev, rec.Revision, "revision at %v", w.point) &&
				assert.Equal(t, w.value, rec.Value, "value at %v", w.point) &&
				assert.False(t, rec.Tombstone, "tombstone flag at %v", w.point) &&
				assert.Equal(t, space, rec.Space, "space of %v", w.point) &&
				assert.Equal(t, w.point, rec.Point, "point")
			if !ok {
				bad++
			}
		} else {
			bad++
		}
		if bad >= 5 {
			t.Fatalf("checkModel: giving up after %d bad points", bad)
		}
	}
	want := m.live(box)
	var got []ringpipe.Record
	require.NoError(t, r.scan(space, box, func(rec ringpipe.Record) bool {
		got = append(got, rec)
		return true
	}), "Scan")
	require.Len(t, got, len(want), "Scan of %v: record count", box)
	for i := range want {
		require.Equal(t, want[i].point, got[i].Point, "Scan record %d: point (key order)", i)
		require.Equal(t, want[i].rev, got[i].Revision, "Scan record %d at %v: revision", i, want[i].point)
		require.Equal(t, want[i].value, got[i].Value, "Scan record %d at %v: value", i, want[i].point)
	}
}

// windowedPuts writes the indices [lo, hi) round-robin from writers
// goroutines, each with up to window PutAsyncs in flight before it waits
// for their tickets; put gives an index's space, point and value. It
// fails t (after every writer has stopped) when a write fails.
func windowedPuts(t *testing.T, ctx context.Context, e *ringpipe.Engine, writers, window, lo, hi int,
	put func(i int) (ringpipe.SpaceID, ringpipe.Point, []byte)) {
	t.Helper()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			tks := make([]*ringpipe.Ticket, 0, window)
			for i := lo + w; i < hi; i += writers {
				sp, p, v := put(i)
				tk, err := e.PutAsync(ctx, sp, p, v)
				if !assert.NoError(t, err, "PutAsync %d", i) {
					return
				}
				tks = append(tks, tk)
				if len(tks) == window || i+writers >= hi {
					for _, tk := range tks {
						if _, err := tk.Wait(ctx); !assert.NoError(t, err, "write %d's ticket", i) {
							return
						}
					}
					tks = tks[:0]
				}
			}
		})
	}
	wg.Wait()
	require.False(t, t.Failed(), "writers failed")
}
