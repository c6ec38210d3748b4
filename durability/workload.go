package durability

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"sync"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// simDir is the engine's directory on a simulated disk.
const simDir = "/db"

// NewSimDisk returns an empty simulated disk, deterministic from seed, with
// simDir created durably.
func NewSimDisk(seed int64) *sim.Disk {
	disk := sim.NewDisk(seed)
	if err := disk.MkdirAll(simDir); err != nil {
		panic(err) // cannot fail on an empty disk
	}
	return disk
}

// SimConfig is a small-footprint Config on disk: every Start with it is a
// new process on the same disk. Log files are preallocated by 128 KiB:
// recovery reads whole files, so this is most of what a recovery costs
// (above all with -race), but a staging batch larger than it trips
// TestEngineBugOversizedStagingBatch (the Workload keeps its batches
// below: see Workload.MaxValue). Seals come every 32 records so that
// blocks and the manifest are in play early.
func SimConfig(disk *sim.Disk) ringpipe.Config {
	return ringpipe.Config{
		Dir:           simDir,
		Preallocate:   128 << 10,
		SealThreshold: 32,
		SealBytes:     256 << 10,
		NewRing:       func(o ring.Options) (ring.Ring, error) { return disk.NewRing(o), nil },
	}
}

// Specs are the spaces a workload writes to by default: different shapes,
// from a line to 16 dimensions, all small enough to Scan whole.
var Specs = []ringpipe.SpaceSpec{
	{Name: "line", Dims: 1, Bits: 12},
	{Name: "cube", Dims: 3, Bits: 21},
	{Name: "wide", Dims: 16, Bits: 4},
}

// CreateSpaces creates specs on e (or finds them: CreateSpace of an
// existing space returns its ID) and tells o about them.
func CreateSpaces(ctx context.Context, e *ringpipe.Engine, o *Oracle, specs []ringpipe.SpaceSpec) ([]ringpipe.SpaceID, error) {
	ids := make([]ringpipe.SpaceID, len(specs))
	for i, spec := range specs {
		id, err := e.CreateSpace(ctx, spec)
		if err != nil {
			return nil, fmt.Errorf("create space %q: %w", spec.Name, err)
		}
		ids[i] = id
		o.AddSpace(id, spec)
	}
	return ids, nil
}

// Mix weighs the operations a writer picks from.
type Mix struct {
	Put    int // a synchronous Put
	Delete int // a synchronous Delete
	Async  int // a burst of 1..8 PutAsync, then a Wait on each ticket
	Sync   int // Engine.Sync
	Flush  int // Engine.Flush of a random space
}

// DefaultMix is mostly Puts, with deletes, async bursts and the odd Sync
// and Flush.
var DefaultMix = Mix{Put: 56, Delete: 14, Async: 22, Sync: 4, Flush: 4}

func (m Mix) total() int { return m.Put + m.Delete + m.Async + m.Sync + m.Flush }

// Workload drives writers against one engine and tells the Oracle about
// every write. Fields are set before the first Run and not changed after;
// Run may be called from any number of goroutines at once.
type Workload struct {
	Engine *ringpipe.Engine
	Oracle *Oracle
	Spaces []ringpipe.SpaceID // written to; the Oracle must know their specs
	Mix    Mix                // zero: DefaultMix
	// HotCoords is how many distinct values each coordinate takes for most
	// writes, so that points are overwritten often; one write in eight
	// goes to a uniformly random point instead. Zero: 4.
	HotCoords int
	// MaxValue caps value sizes; zero: 64 KiB. See ValueSize. What all
	// writers have in flight at once stays below 128 KiB (one staging
	// batch must fit a WAL segment of Config.Preallocate): only one value
	// above smallValue is in flight at a time (the others are cut to
	// smallValue while it is), and async bursts use values of at most
	// asyncMaxValue.
	MaxValue int
	// Halt, when closed, makes every writer return before its next
	// operation.
	Halt <-chan struct{}
	// KeepGoing makes a writer go on after an operation failed; by default
	// it returns at the first error (after a power cut every later
	// operation fails too).
	KeepGoing bool

	largeOnce sync.Once
	large     chan struct{} // a token: the right to have a large value in flight
}

// WriterStats is what one Run did.
type WriterStats struct {
	Ops    int   // operations started
	Acked  int   // writes acknowledged
	Failed int   // operations that returned an error
	Err    error // the first error
}

// Run is one writer: up to n operations drawn with rng. Every Put and
// Delete goes to the Oracle (Begin before, Ack or Fail after); a PutAsync
// that returns an error was not queued and is NotSubmitted.
func (w *Workload) Run(ctx context.Context, rng *rand.Rand, n int) WriterStats {
	mix := w.Mix
	if mix.total() == 0 {
		mix = DefaultMix
	}
	var st WriterStats
	fail := func(err error) bool {
		st.Failed++
		if st.Err == nil {
			st.Err = err
		}
		return !w.KeepGoing
	}
	specs := w.Oracle.Spaces()
	for st.Ops < n {
		select {
		case <-w.Halt:
			return st
		default:
		}
		st.Ops++
		id := w.Spaces[rng.Intn(len(w.Spaces))]
		spec := specs[id]
		switch r := rng.Intn(mix.total()); {
		case r < mix.Put:
			p := w.point(rng, spec)
			v := Value(rng, w.valueSize(rng))
			release := w.admit(&v)
			wr := w.Oracle.Begin(id, p, v, false)
			rev, err := w.Engine.Put(ctx, id, p, v)
			release()
			if err != nil {
				w.Oracle.Fail(wr, err)
				if fail(err) {
					return st
				}
				continue
			}
			w.Oracle.Ack(wr, rev)
			st.Acked++
		case r < mix.Put+mix.Delete:
			p := w.point(rng, spec)
			wr := w.Oracle.Begin(id, p, nil, true)
			rev, err := w.Engine.Delete(ctx, id, p)
			if err != nil {
				w.Oracle.Fail(wr, err)
				if fail(err) {
					return st
				}
				continue
			}
			w.Oracle.Ack(wr, rev)
			st.Acked++
		case r < mix.Put+mix.Delete+mix.Async:
			if w.async(ctx, rng, id, spec, &st) != nil && !w.KeepGoing {
				return st
			}
		case r < mix.Put+mix.Delete+mix.Async+mix.Sync:
			if err := w.Engine.Sync(ctx); err != nil && fail(err) {
				return st
			}
		default:
			if err := w.Engine.Flush(ctx, id); err != nil && fail(err) {
				return st
			}
		}
	}
	return st
}

// Value size limits that keep staging batches small (see
// Workload.MaxValue).
const (
	smallValue    = 8 << 10 // above it a value is large: one in flight at a time
	asyncMaxValue = 1 << 10 // the values of an async burst
)

// admit lets a large *v go ahead if no other is in flight, or else cuts
// it to smallValue bytes. The returned func ends the admission.
func (w *Workload) admit(v *[]byte) (release func()) {
	if len(*v) <= smallValue {
		return func() {}
	}
	w.largeOnce.Do(func() { w.large = make(chan struct{}, 1) })
	select {
	case w.large <- struct{}{}:
		return func() { <-w.large }
	default:
		*v = (*v)[:smallValue]
		return func() {}
	}
}

// async queues a burst of PutAsync and waits for each ticket. It returns
// the first error.
func (w *Workload) async(ctx context.Context, rng *rand.Rand, id ringpipe.SpaceID, spec ringpipe.SpaceSpec, st *WriterStats) error {
	type queued struct {
		wr *Write
		t  *ringpipe.Ticket
	}
	var qs []queued
	var first error
	for range 1 + rng.Intn(8) {
		p := w.point(rng, spec)
		v := Value(rng, min(w.valueSize(rng), asyncMaxValue))
		wr := w.Oracle.Begin(id, p, v, false)
		t, err := w.Engine.PutAsync(ctx, id, p, v)
		if err != nil {
			w.Oracle.NotSubmitted(wr, err)
			first = err
			break
		}
		qs = append(qs, queued{wr, t})
	}
	for _, q := range qs {
		rev, err := q.t.Wait(ctx)
		if err != nil {
			w.Oracle.Fail(q.wr, err)
			first = cmpOr(first, err)
			continue
		}
		w.Oracle.Ack(q.wr, rev)
		st.Acked++
	}
	if first != nil {
		st.Failed++
		st.Err = cmpOr(st.Err, first)
	}
	return first
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// point draws a point of spec: mostly from a small hot set, sometimes
// anywhere.
func (w *Workload) point(rng *rand.Rand, spec ringpipe.SpaceSpec) ringpipe.Point {
	hot := int64(w.HotCoords)
	if hot <= 0 {
		hot = 4
	}
	limit := int64(1) << spec.Bits
	if rng.Intn(8) != 0 {
		limit = min(limit, hot)
	}
	p := make(ringpipe.Point, spec.Dims)
	for i := range p {
		p[i] = uint32(rng.Int63n(limit))
	}
	return p
}

func (w *Workload) valueSize(rng *rand.Rand) int {
	m := w.MaxValue
	if m <= 0 {
		m = 64 << 10
	}
	return ValueSize(rng, m)
}

// ValueSize draws a value size in [0, limit]: mostly small, sometimes
// large — 4% empty, 8% under 16 B, 56% under 256 B, 24% under 4 KiB, 6%
// under 16 KiB, 2% up to limit.
func ValueSize(rng *rand.Rand, limit int) int {
	var n int
	switch r := rng.Intn(100); {
	case r < 4:
		n = 0
	case r < 12:
		n = 1 + rng.Intn(15)
	case r < 68:
		n = 16 + rng.Intn(240)
	case r < 92:
		n = 256 + rng.Intn(3840)
	case r < 98:
		n = 4096 + rng.Intn(12288)
	default:
		n = 16384 + rng.Intn(max(1, limit-16384+1))
	}
	return min(n, limit)
}

// Value returns a value of n bytes that no other call returns (for n >= 8,
// with overwhelming probability): 8 random bytes, then a filler derived
// from them. A torn or mixed value (zeroed or garbage sectors, the head of
// one write and the tail of another) therefore matches no value written
// whole.
func Value(rng *rand.Rand, n int) []byte {
	var tag [8]byte
	binary.LittleEndian.PutUint64(tag[:], rng.Uint64())
	v := make([]byte, n)
	copy(v, tag[:])
	for i := len(tag); i < n; i++ {
		v[i] = tag[i%8] ^ byte(i*31) ^ byte(i>>8)
	}
	return v
}

// IsPowerCut reports whether err is what an operation in flight at a power
// cut or process crash gets on a simulated disk (the ring died under it),
// or an error the engine reports for it. It is for messages and
// statistics, never for deciding a write's fate: the Oracle treats every
// failed write as "maybe".
func IsPowerCut(err error) bool {
	return errors.Is(err, sim.ErrCrashed) || errors.Is(err, ringpipe.ErrStopped) || errors.Is(err, ringpipe.ErrFailed)
}

// newRand returns a math/rand source seeded with seed.
func newRand(seed int64) *rand.Rand { return rand.New(rand.NewSource(seed)) }
