package test

// The configuration-change and scale audit: what an experienced user of an
// embedded database expects to hold when the Config changes between Starts
// on one directory (after a clean Stop and after a power loss), with many
// spaces under a normal file-descriptor limit, at the edges of a space's
// coordinates and of MaxValueSize, and over a long run of small writes.
//
// A changed Config must either work with nothing lost or be refused at
// Start with an error naming the field: never data loss, never an engine
// that starts and then cannot go on (a Flush or a promotion that never
// ends).

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/hot"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// scSpecs are the spaces a config-change run writes: a plane whose hot
// segment may be stalled (so that its writes sit in the staging WAL at the
// change) and a line that is flushed midway (blocks and a tail).
var scSpecs = []ringpipe.SpaceSpec{
	{Name: "plane", Dims: 2, Bits: 8},
	{Name: "line", Dims: 1, Bits: 16},
}

// scData is what a run wrote and had acknowledged, per space.
type scData struct {
	ids    []ringpipe.SpaceID
	models []*model
}

func scCreate(t *testing.T, e *ringpipe.Engine) *scData {
	t.Helper()
	d := &scData{}
	for _, s := range scSpecs {
		d.ids = append(d.ids, createSpace(t, e, s.Name, s.Dims, s.Bits))
		d.models = append(d.models, newModel(s))
	}
	return d
}

// scValue is a value of size bytes (at least the tag) that starts with a
// unique tag, so that a torn or mixed-up value cannot pass for another.
func scValue(tag string, size int) []byte {
	v := []byte(tag + "|")
	for len(v) < size {
		v = append(v, byte('a'+len(v)%26))
	}
	return v
}

// write makes n writes spread over the spaces: Puts, Deletes and PutAsyncs
// (waited for after a Sync) of 1 to small bytes, every 25th Put with a
// value of big bytes when big > 0, and (flush) a Flush of the line space
// halfway. Everything is acknowledged when it returns.
func (d *scData) write(t *testing.T, e *ringpipe.Engine, rng *rand.Rand, n, small, big int, flush bool, tag string) {
	t.Helper()
	ctx := ctxFor(t)
	type pending struct {
		s  int
		tk *ringpipe.Ticket
		w  write
	}
	var async []pending
	for i := range n {
		s := i % len(d.ids)
		p := randPoint(rng, scSpecs[s])
		if flush && i == n/2 {
			require.NoError(t, e.Flush(ctx, d.ids[1]), "%s: Flush of the line space", tag)
		}
		size := 1 + rng.Intn(small)
		r := rng.Intn(8)
		if big > 0 && i%25 == 0 {
			size, r = big, 7 // a Put
		}
		v := scValue(fmt.Sprintf("%s-%d", tag, i), size)
		switch {
		case r == 0:
			rev, err := e.Delete(ctx, d.ids[s], p)
			require.NoError(t, err, "%s: Delete %d", tag, i)
			d.models[s].add(write{point: p, rev: rev})
		case r <= 2:
			tk, err := e.PutAsync(ctx, d.ids[s], p, v)
			require.NoError(t, err, "%s: PutAsync %d", tag, i)
			async = append(async, pending{s, tk, write{point: p, value: v}})
		default:
			rev, err := e.Put(ctx, d.ids[s], p, v)
			require.NoError(t, err, "%s: Put %d (%d bytes)", tag, i, len(v))
			d.models[s].add(write{point: p, rev: rev, value: v})
		}
	}
	require.NoError(t, e.Sync(ctx), "%s: Sync", tag)
	for _, a := range async {
		rev, err := a.tk.Wait(ctx)
		require.NoError(t, err, "%s: ticket", tag)
		a.w.rev = rev
		d.models[a.s].add(a.w)
	}
}

// check requires that e shows every acknowledged write of every space.
func (d *scData) check(t *testing.T, e *ringpipe.Engine, when string) {
	t.Helper()
	for i, id := range d.ids {
		checkModel(t, engineReader(t, e), id, d.models[i], fullBox(scSpecs[i]))
		require.False(t, t.Failed(), "%s: space %s lost or changed acknowledged writes", when, scSpecs[i].Name)
	}
}

// flushAll flushes every space, each within scFlushBound: a Flush that
// does not return means the engine started on a Config it cannot go on
// with. On the simulated disk (disk not nil) a failure says how many hot
// generations the space went through meanwhile.
func (d *scData) flushAll(t *testing.T, e *ringpipe.Engine, disk *sim.Disk, when string) {
	t.Helper()
	for i, id := range d.ids {
		gen0 := scLastGen(disk, id)
		var err error
		within(t, fmt.Sprintf("%s: Flush of space %s", when, scSpecs[i].Name), func() {
			ctx, cancel := context.WithTimeout(context.Background(), scFlushBound)
			defer cancel()
			err = e.Flush(ctx, id)
		})
		if err != nil {
			require.NoError(t, err, "%s: Flush of space %s; meanwhile its hot generation went from %d to %d; stats %+v",
				when, scSpecs[i].Name, gen0, scLastGen(disk, id), e.Stats())
		}
	}
}

// scFlushBound bounds a Flush of the few records a config-change run
// writes: a healthy one takes milliseconds, even under -race.
const scFlushBound = 5 * time.Second

// scLastGen is the highest hot generation of space on disk (0 if none, or
// without a simulated disk).
func scLastGen(disk *sim.Disk, space ringpipe.SpaceID) uint64 {
	if disk == nil {
		return 0
	}
	var last uint64
	for _, f := range disk.Files() {
		if g, ok := hot.ParseFileName(path.Base(f)); ok && g.Space == space {
			last = max(last, g.Gen)
		}
	}
	return last
}

// fieldNamed matches an error that names a Config field.
var fieldNamed = regexp.MustCompile(`Config\.[A-Z][A-Za-z]+`)

// scStart starts an engine with cfg, or reports why it refused: a refusal
// must name the Config field (or be one of allowed), and must not be
// ErrLocked (the previous engine released the directory).
func scStart(t *testing.T, cfg ringpipe.Config, allowed ...error) (*ringpipe.Engine, error) {
	t.Helper()
	var e *ringpipe.Engine
	var err error
	within(t, "Start", func() { e, err = ringpipe.Start(ctxFor(t), cfg) })
	if err == nil {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			defer cancel()
			_ = e.Stop(ctx)
		})
		return e, nil
	}
	t.Logf("Start refused: %v", err)
	assert.NotErrorIs(t, err, ringpipe.ErrLocked, "the engine before released the directory")
	ok := fieldNamed.MatchString(err.Error())
	for _, a := range allowed {
		ok = ok || errors.Is(err, a)
	}
	assert.True(t, ok, "a Start that refuses a changed Config names the field: %v", err)
	return nil, err
}

// scEnd ends an engine's life: a clean Stop, or (powerLoss) the power cut
// while it runs, then a Stop that may fail but must return. A hold ring
// (nil if none) hands back what it withheld after the cut, or before the
// clean Stop.
func scEnd(t *testing.T, e *ringpipe.Engine, disk *sim.Disk, hr *holdRing, powerLoss bool, seed int64) {
	t.Helper()
	if !powerLoss {
		if hr != nil {
			hr.release()
		}
		if disk != nil {
			disk.ClearFaults()
		}
		stop(t, e)
		return
	}
	rep := disk.PowerLoss(rand.New(rand.NewSource(seed)))
	if hr != nil {
		hr.release()
	}
	t.Logf("power loss: %+v", rep)
	var err error
	within(t, "Stop after a power loss", func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		err = e.Stop(ctx)
	})
	t.Logf("Stop after the power loss: %v", err)
}

// scHoldRing is a holdRing that forgets a held file's fd once the file is
// closed: the number may be given to another file next (the WAL's
// directory, say), whose I/O must not be withheld.
type scHoldRing struct{ *holdRing }

func (h scHoldRing) Submit(ops []ring.Op) error {
	h.mu.Lock()
	for _, op := range ops {
		if op.Code == ring.OpClose {
			delete(h.fds, op.FD)
		}
	}
	h.mu.Unlock()
	return h.holdRing.Submit(ops)
}

// scChange is one Config change between Starts.
type scChange struct {
	name string
	a, b func(*ringpipe.Config)
	// big is the size of every 25th value written under a (0: small
	// values only).
	big int
	// refusable are errors other than a named field that a Start under b
	// may return (Strict after a power loss: a torn tail).
	refusable []error
	// afterB runs once the engine under b has shown every earlier write.
	afterB func(t *testing.T, e *ringpipe.Engine, d *scData)
}

// scChangeRun writes under cfgA, ends the engine (Stop or power loss),
// starts it under cfgB and checks every acknowledged write; then writes
// more under cfgB, flushes, ends it again the same way and checks under
// cfgB once more, and finally under cfgA. A Start under cfgB may instead
// refuse, naming the field; the directory must then still start under
// cfgA with everything in it.
//
// On the simulated disk (disk not nil) the plane space's hot file stops
// answering for the second half of the writes under cfgA: its writes are
// acknowledged from the staging WAL and wait there, unpromoted, when the
// Config changes (after a power loss; a clean Stop may promote them).
func scChangeRun(t *testing.T, c scChange, base ringpipe.Config, disk *sim.Disk, powerLoss bool, seed int64) {
	rng := rand.New(rand.NewSource(seed))
	cfgA, cfgB := base, base
	c.a(&cfgA)
	c.b(&cfgB)

	first := cfgA
	var hr *holdRing
	if disk != nil {
		var mu sync.Mutex
		first.NewRing = func(o ring.Options) (ring.Ring, error) {
			mu.Lock()
			defer mu.Unlock()
			if hr != nil {
				return disk.NewRing(o), nil // the block reads' ring
			}
			hr = newHoldRing(disk.NewRing(o), 1) // the plane space gets ID 1
			return scHoldRing{hr}, nil
		}
	}
	e := start(t, first)
	if hr != nil {
		t.Cleanup(hr.release) // before start's Stop
	}
	d := scCreate(t, e)
	d.write(t, e, rng, 120, 1500, c.big, true, "a1")
	if disk != nil {
		require.Equal(t, ringpipe.SpaceID(1), d.ids[0])
		// Start the stall on a fresh generation with nothing in flight:
		// writers wait behind a hot file that stalls during a promotion
		// (no deadline) or while the generation fills and rotates, which
		// is not what this test is about. The first write of a2 is then
		// the plane's big Put: it misses its deadline, the space is slow,
		// and nothing else goes to its hot file.
		require.NoError(t, e.Flush(ctxFor(t), d.ids[0]), "Flush of the plane before the stall")
		waitFor(t, e, "promotion of what a1 staged", func(st ringpipe.Stats) bool { return st.StagedPending == 0 })
		disk.Inject(sim.Fault{Kind: sim.Delay, Delay: time.Hour, Path: hotPrefix(d.ids[0]),
			Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync, ring.OpWrite, ring.OpWritev}, Persist: true})
		hr.start()
		// No Flush while the plane's hot file stalls: the sealer may be
		// busy with the plane's generation, and a Flush of the line
		// would wait behind it.
		d.write(t, e, rng, 60, 1500, c.big, false, "a2")
		st := e.Stats()
		t.Logf("under a, plane stalled: staged %d, pending %d, hot completions withheld %d",
			st.StagedWrites, st.StagedPending, hr.heldCount())
		require.Positive(t, st.StagedPending, "writes wait in the staging WAL at the change")
	}
	d.check(t, e, "under a")
	scEnd(t, e, disk, hr, powerLoss, seed)

	e, err := scStart(t, cfgB, c.refusable...)
	if err != nil {
		e = start(t, cfgA)
		d.check(t, e, "back under a after b was refused")
		stop(t, e)
		return
	}
	d.check(t, e, "under b")
	t.Logf("under b: %+v", e.Stats())
	if c.afterB != nil {
		c.afterB(t, e, d)
	}
	d.write(t, e, rng, 60, 500, 0, true, "b1")
	d.flushAll(t, e, disk, "under b")
	assert.Zero(t, e.Stats().StagedPending, "under b: every staged write promoted by the Flushes")
	d.check(t, e, "under b, flushed")
	d.write(t, e, rng, 40, 500, 0, false, "b2")
	scEnd(t, e, disk, nil, powerLoss, seed+1)

	e, err = scStart(t, cfgB, c.refusable...)
	if err == nil {
		d.check(t, e, "under b, restarted")
		stop(t, e)
	}
	e = start(t, cfgA)
	d.check(t, e, "back under a")
	d.flushAll(t, e, disk, "back under a")
	stop(t, e)
}

// scSimChanges are the changes run on the simulated disk, each after a
// Stop and after a power loss.
var scSimChanges = []scChange{
	{
		name: "Preallocate/larger",
		a:    func(c *ringpipe.Config) { c.Preallocate = 64 << 10 },
		b:    func(c *ringpipe.Config) { c.Preallocate = 1 << 20 },
		big:  40 << 10,
	},
	{
		// Values written under a that no log file of b holds, some of
		// them still staged: recovery reads them, and promotion must
		// still move them into a hot segment (or Start must refuse).
		//
		// VIOLATION: Start under b accepts Preallocate = 64 KiB (and
		// shrinks the default MaxValueSize to fit it) although the
		// staging WAL holds 200 KiB records that no hot segment of
		// 64 KiB can take. The engine starts, the records read back,
		// but they can never be promoted: the submitter's promotion
		// gets hot.ErrFull, asks for a seal, the sealer rotates to a
		// new, empty generation, and again (about 50 empty generations
		// a second, 1,300 syncs in 5 s), and a Flush of the space never
		// returns. A silent half-open: after a power loss always; after
		// a clean Stop whenever Stop left such a record staged.
		name: "Preallocate/smaller",
		a:    func(c *ringpipe.Config) { c.Preallocate = 1 << 20 },
		b:    func(c *ringpipe.Config) { c.Preallocate = 64 << 10 },
		big:  200 << 10,
	},
	{
		name: "Seal/smaller",
		a:    func(c *ringpipe.Config) {},
		b:    func(c *ringpipe.Config) { c.SealThreshold, c.SealBytes = 8, 16<<10 },
	},
	{
		name: "Seal/larger",
		a:    func(c *ringpipe.Config) { c.SealThreshold, c.SealBytes = 8, 16<<10 },
		b:    func(c *ringpipe.Config) { c.SealThreshold, c.SealBytes = 1<<20, 1<<30 },
	},
	{
		name: "DirectIO/on",
		a:    func(c *ringpipe.Config) {},
		b:    func(c *ringpipe.Config) { c.DirectIO = true },
	},
	{
		name: "DirectIO/off",
		a:    func(c *ringpipe.Config) { c.DirectIO = true },
		b:    func(c *ringpipe.Config) {},
	},
	{
		// After a power loss a torn tail is possible: Strict may refuse
		// with a CorruptionError (and the directory still starts
		// tolerant). After a clean Stop it must start.
		name:      "WALRecovery/Strict",
		a:         func(c *ringpipe.Config) {},
		b:         func(c *ringpipe.Config) { c.WALRecovery = ringpipe.Strict },
		refusable: []error{ringpipe.ErrCorrupt},
	},
	{
		name: "MaxValueSize/lower",
		a:    func(c *ringpipe.Config) { c.MaxValueSize = 64 << 10 },
		b:    func(c *ringpipe.Config) { c.MaxValueSize = 1 << 10 },
		big:  40 << 10,
		afterB: func(t *testing.T, e *ringpipe.Engine, d *scData) {
			_, err := e.Put(ctxFor(t), d.ids[0], ringpipe.Point{1, 1}, make([]byte, 40<<10))
			assert.ErrorIs(t, err, ringpipe.ErrValueTooLarge, "a new value above the lowered MaxValueSize")
		},
	},
	{
		name: "Pipeline/smaller",
		a:    func(c *ringpipe.Config) {},
		b: func(c *ringpipe.Config) {
			c.QueueCapacity, c.BatchSize, c.RingEntries = 2, 1, 8
		},
	},
	{
		name: "Pipeline/larger",
		a: func(c *ringpipe.Config) {
			c.QueueCapacity, c.BatchSize, c.RingEntries = 2, 1, 8
		},
		b: func(c *ringpipe.Config) {
			c.QueueCapacity, c.BatchSize, c.RingEntries = 1<<16, 4096, 4096
		},
	},
}

// scRealChanges are the changes run on a real directory, after a clean
// Stop (a power loss needs the simulated disk).
var scRealChanges = []scChange{
	{
		name: "Backend/uring-to-std",
		a:    func(c *ringpipe.Config) { c.Backend = ringpipe.BackendURing },
		b:    func(c *ringpipe.Config) { c.Backend = ringpipe.BackendStd },
	},
	{
		name: "Backend/std-to-uring",
		a:    func(c *ringpipe.Config) { c.Backend = ringpipe.BackendStd },
		b:    func(c *ringpipe.Config) { c.Backend = ringpipe.BackendURing },
	},
	{
		name: "DirectIO/on",
		a:    func(c *ringpipe.Config) {},
		b:    func(c *ringpipe.Config) { c.DirectIO = true },
		big:  100 << 10,
	},
	{
		name: "DirectIO/off",
		a:    func(c *ringpipe.Config) { c.DirectIO = true },
		b:    func(c *ringpipe.Config) {},
		big:  100 << 10,
	},
	{
		name: "WALRecovery/Strict",
		a:    func(c *ringpipe.Config) {},
		b:    func(c *ringpipe.Config) { c.WALRecovery = ringpipe.Strict },
	},
	{
		// Padded direct batches and recycled spares, read strictly.
		name: "WALRecovery/Strict-DirectIO",
		a:    func(c *ringpipe.Config) { c.DirectIO = true },
		b:    func(c *ringpipe.Config) { c.DirectIO, c.WALRecovery = true, ringpipe.Strict },
	},
	{
		name: "Preallocate/larger",
		a:    func(c *ringpipe.Config) { c.Preallocate = 64 << 10 },
		b:    func(c *ringpipe.Config) { c.Preallocate = 1 << 20 },
		big:  40 << 10,
	},
	{
		name: "Preallocate/smaller",
		a:    func(c *ringpipe.Config) { c.Preallocate = 1 << 20 },
		b:    func(c *ringpipe.Config) { c.Preallocate = 64 << 10 },
		big:  200 << 10,
	},
	{
		name: "MaxValueSize/lower",
		a:    func(c *ringpipe.Config) { c.MaxValueSize = 64 << 10 },
		b:    func(c *ringpipe.Config) { c.MaxValueSize = 1 << 10 },
		big:  40 << 10,
	},
}

// TestScaleConfigChangeReal: every change of scRealChanges on a real
// directory, after a clean Stop. The io_uring cases are skipped where the
// kernel refuses io_uring, the DirectIO cases where the file system
// refuses O_DIRECT.
func TestScaleConfigChangeReal(t *testing.T) {
	seed := lcSeed(t)
	probe := t.TempDir()
	uringOK := true
	if e, err := ringpipe.Start(ctxFor(t), ringpipe.Config{Dir: probe, Backend: ringpipe.BackendURing}); err != nil {
		t.Logf("BackendURing refused here: %v", err)
		uringOK = false
	} else {
		stop(t, e)
	}
	directOK := true
	if fd, err := unix.Open(filepath.Join(probe, "odirect"), unix.O_RDWR|unix.O_CREAT|unix.O_DIRECT, 0o644); err != nil {
		t.Logf("O_DIRECT refused here: %v", err)
		directOK = false
	} else {
		unix.Close(fd) //nolint:errcheck // a probe
	}
	for i, c := range scRealChanges {
		t.Run(c.name, func(t *testing.T) {
			if strings.Contains(c.name, "uring") && !uringOK {
				t.Skip("the kernel refuses io_uring")
			}
			if strings.Contains(c.name, "DirectIO") && !directOK {
				t.Skip("the file system refuses O_DIRECT")
			}
			s := seed + int64(i)
			t.Logf("seed %d", s)
			scChangeRun(t, c, realConfig(t, ringpipe.BackendAuto), nil, false, s)
		})
	}
}

// TestScaleConfigChangeSim: every change of scSimChanges on the simulated
// disk, after a clean Stop and after a power loss (which may also cut a
// seal or a promotion short).
func TestScaleConfigChangeSim(t *testing.T) {
	seed := lcSeed(t)
	for i, c := range scSimChanges {
		for _, powerLoss := range []bool{false, true} {
			name := c.name + "/stop"
			if powerLoss {
				name = c.name + "/powerloss"
			}
			t.Run(name, func(t *testing.T) {
				s := seed + int64(i)*2
				if powerLoss {
					s++
				}
				t.Logf("seed %d", s)
				disk := newSimDisk(t, s)
				scChangeRun(t, c, simConfig(t, disk), disk, powerLoss, s)
			})
		}
	}
}
