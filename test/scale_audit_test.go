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
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/hot"
	"github.com/ringpipe/ringpipe/internal/fdtest"
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

// scHoldConfig returns cfg with its engine ring on disk wrapped in a hold
// ring for space 1 (the first space created), and a function that returns
// that hold ring once the engine has started. Later rings (block reads)
// are plain.
func scHoldConfig(cfg ringpipe.Config, disk *sim.Disk) (ringpipe.Config, func() *holdRing) {
	var mu sync.Mutex
	var hr *holdRing
	cfg.NewRing = func(o ring.Options) (ring.Ring, error) {
		mu.Lock()
		defer mu.Unlock()
		if hr != nil {
			return disk.NewRing(o), nil
		}
		hr = newHoldRing(disk.NewRing(o), 1)
		return scHoldRing{hr}, nil
	}
	return cfg, func() *holdRing {
		mu.Lock()
		defer mu.Unlock()
		return hr
	}
}

// scStall makes space's hot file stop answering: on the virtual clock its
// writes and syncs take an hour (so their deadlines pass), and in real
// time hr withholds their completions until released.
func scStall(disk *sim.Disk, hr *holdRing, space ringpipe.SpaceID) {
	disk.Inject(sim.Fault{Kind: sim.Delay, Delay: time.Hour, Path: hotPrefix(space),
		Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync, ring.OpWrite, ring.OpWritev}, Persist: true})
	hr.start()
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

	first, held := cfgA, func() *holdRing { return nil }
	if disk != nil {
		first, held = scHoldConfig(cfgA, disk)
	}
	e := start(t, first)
	hr := held()
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
		scStall(disk, hr, d.ids[0])
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
		// It failed before the fix: Start under b accepted it, the
		// records could never be promoted (each try rotated to a new
		// empty generation, about 50 a second) and a Flush never
		// returned. Now recovery refuses Preallocate, naming the record
		// and the size it needs.
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

// scFDCount is how many file descriptors this process has open.
func scFDCount(t *testing.T) int { return len(fdtest.List(t)) }

// scManySpaces creates n spaces on e, writes one record into each and
// flushes every third, and returns the model of each. It reports the open
// fds after the spaces were created and after the flushes.
func scManySpaces(t *testing.T, e *ringpipe.Engine, n int) (ids []ringpipe.SpaceID, models []*model, fdsCreated, fdsFlushed int) {
	t.Helper()
	ctx := ctxFor(t)
	spec := ringpipe.SpaceSpec{Dims: 2, Bits: 8}
	for i := range n {
		spec.Name = fmt.Sprintf("s%03d", i)
		id := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
		m := newModel(spec)
		p := ringpipe.Point{uint32(i % 256), uint32(i / 256)}
		v := fmt.Appendf(nil, "space %d", i)
		rev, err := e.Put(ctx, id, p, v)
		require.NoError(t, err, "Put into space %d of %d", i, n)
		m.add(write{point: p, rev: rev, value: v})
		ids, models = append(ids, id), append(models, m)
	}
	fdsCreated = scFDCount(t)
	for i := 0; i < n; i += 3 {
		require.NoError(t, e.Flush(ctx, ids[i]), "Flush of space %d of %d", i, n)
	}
	fdsFlushed = scFDCount(t)
	require.Len(t, e.Spaces(), n)
	return ids, models, fdsCreated, fdsFlushed
}

// TestScaleManySpaces: 300 spaces, each with a write, every third
// flushed. The engine works, its open fds are reported per space, all of
// them are closed by Stop, and recovery finds everything. It must also
// work under a normal RLIMIT_NOFILE of 1024 (soft), which the test sets
// when the process has more, with DirectIO (two fds per hot segment) and
// through a restart.
func TestScaleManySpaces(t *testing.T) {
	const spaces = 300
	var lim syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim))
	t.Logf("RLIMIT_NOFILE: soft %d, hard %d", lim.Cur, lim.Max)

	run := func(t *testing.T, cfg ringpipe.Config, restart bool) {
		fds0 := scFDCount(t)
		e := start(t, cfg)
		fds1 := scFDCount(t)
		ids, models, fdsCreated, fdsFlushed := scManySpaces(t, e, spaces)
		st := e.Stats()
		t.Logf("open fds: %d before Start, %d after, %d with %d spaces (%.2f per space), %d after %d Flushes (%d blocks sealed)",
			fds0, fds1, fdsCreated, spaces, float64(fdsCreated-fds1)/spaces, fdsFlushed, (spaces+2)/3, st.SealedBlocks)
		for i, id := range ids {
			checkModel(t, engineReader(t, e), id, models[i], fullBox(models[i].spec))
		}
		stop(t, e)
		assert.Equal(t, fds0, scFDCount(t), "open fds after Stop are those before Start")
		if !restart {
			return
		}

		e = start(t, cfg)
		fdsRec := scFDCount(t)
		require.Len(t, e.Spaces(), spaces, "every space after a restart")
		for i, id := range ids {
			checkModel(t, engineReader(t, e), id, models[i], fullBox(models[i].spec))
		}
		fdsRead := scFDCount(t)
		ctx := ctxFor(t)
		for i, id := range ids {
			p := ringpipe.Point{255, 255}
			v := fmt.Appendf(nil, "after restart %d", i)
			rev, err := e.Put(ctx, id, p, v)
			require.NoError(t, err, "Put into space %d after the restart", i)
			models[i].add(write{point: p, rev: rev, value: v})
		}
		t.Logf("after a restart: %d open fds once recovered, %d after reading every space, %d after writing every space",
			fdsRec, fdsRead, scFDCount(t))
		stop(t, e)
		assert.Equal(t, fds0, scFDCount(t), "open fds after the second Stop are those before Start")
		var blocks int64
		require.NoError(t, filepath.WalkDir(cfg.Dir, func(p string, de os.DirEntry, err error) error {
			if err == nil && de.Type().IsRegular() {
				var st unix.Stat_t
				if unix.Stat(p, &st) == nil {
					blocks += st.Blocks * 512
				}
			}
			return err
		}))
		t.Logf("disk space of the directory with Preallocate = %d: %.1f MiB (%.2f MiB per space)",
			cfg.Preallocate, float64(blocks)/(1<<20), float64(blocks)/(1<<20)/spaces)
	}

	t.Run("default-limit", func(t *testing.T) {
		run(t, realConfig(t, ringpipe.BackendAuto), false)
	})
	t.Run("rlimit-1024-directio", func(t *testing.T) {
		const soft = 1024
		if lim.Cur > soft {
			low := lim
			low.Cur = soft
			require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low))
			t.Cleanup(func() { require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)) })
			t.Logf("RLIMIT_NOFILE lowered to %d for this subtest", soft)
		}
		cfg := realConfig(t, ringpipe.BackendAuto)
		cfg.DirectIO = true
		run(t, cfg, true)
	})
}

// TestScaleFDLimitReached: past the fd limit, CreateSpace fails with a
// clear error (EMFILE, "too many open files") and the engine goes on: the
// spaces before it take writes, and once fds are free again the same
// CreateSpace, retried, gives a space that works. Everything acknowledged
// survives a restart.
//
// It failed before the fix: the retried CreateSpace returned the ID, but
// Put said ErrUnknownSpace and Spaces() did not list it until a restart
// (the retry finished the first generation but skipped the registry
// update). Sealer.finishCreate now does every step of a retry.
func TestScaleFDLimitReached(t *testing.T) {
	var lim syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim))
	cfg := realConfig(t, ringpipe.BackendAuto)
	e := start(t, cfg)
	ctx := ctxFor(t)
	const room = 40 // fds left for the engine: fewer than the spaces below need
	low := lim
	low.Cur = uint64(scFDCount(t) + room)
	require.Less(t, low.Cur, lim.Cur, "the limit is lowered")
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low))
	restored := false
	restore := func() {
		if !restored {
			restored = true
			require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim))
		}
	}
	t.Cleanup(restore)

	spec := ringpipe.SpaceSpec{Dims: 2, Bits: 8}
	var ids []ringpipe.SpaceID
	var models []*model
	var failed ringpipe.SpaceSpec
	var createErr error
	for i := range 2 * room {
		spec.Name = fmt.Sprintf("s%03d", i)
		var id ringpipe.SpaceID
		within(t, "CreateSpace at the fd limit", func() { id, createErr = e.CreateSpace(ctx, spec) })
		if createErr != nil {
			failed = spec
			break
		}
		m := newModel(spec)
		p := ringpipe.Point{uint32(i), 1}
		v := fmt.Appendf(nil, "space %d", i)
		var rev ringpipe.Revision
		var err error
		within(t, "Put at the fd limit", func() { rev, err = e.Put(ctx, id, p, v) })
		require.NoError(t, err, "Put into space %d (the fds it needs are open)", id)
		m.add(write{point: p, rev: rev, value: v})
		ids, models = append(ids, id), append(models, m)
	}
	require.Error(t, createErr, "%d spaces fit %d fds", len(ids), room)
	t.Logf("CreateSpace %q, after %d spaces in %d fds: %v", failed.Name, len(ids), room, createErr)
	assert.ErrorIs(t, createErr, syscall.EMFILE, "the error says the process is out of fds")
	assert.Contains(t, createErr.Error(), failed.Name, "the error names the space")

	// Back under the limit: the engine has not failed, and the retry
	// gives a space that takes writes.
	restore()
	p := ringpipe.Point{7, 7}
	rev, err := e.Put(ctx, ids[0], p, []byte("after the limit"))
	require.NoError(t, err, "a space created before the limit still takes writes")
	models[0].add(write{point: p, rev: rev, value: []byte("after the limit")})
	id, err := e.CreateSpace(ctx, failed)
	require.NoError(t, err, "CreateSpace %q retried once fds are free", failed.Name)
	assert.Contains(t, e.Spaces(), ringpipe.SpaceInfo{ID: id, SpaceSpec: failed}, "the retried space is listed")
	rev, err = e.Put(ctx, id, p, []byte("retried"))
	assert.NoError(t, err, "Put into the space CreateSpace returned (ID %d)", id)
	m := newModel(failed)
	if err == nil {
		m.add(write{point: p, rev: rev, value: []byte("retried")})
	}
	ids, models = append(ids, id), append(models, m)
	for i, id := range ids {
		checkModel(t, engineReader(t, e), id, models[i], fullBox(models[i].spec))
	}
	stop(t, e)

	e = start(t, cfg)
	assert.Len(t, e.Spaces(), len(ids), "every space after a restart")
	for i, id := range ids {
		checkModel(t, engineReader(t, e), id, models[i], fullBox(models[i].spec))
	}
	stop(t, e)
}

// TestScaleExtremeCoordinates: spaces at the edges of SpaceSpec (two
// dimensions of 32 bits, sixteen of one bit, one of 32 bits), with points
// at 0 and 2^Bits-1 on every axis. Get, Scan of the whole space, of
// single points, of thin boxes along an axis and of empty boxes return
// exactly the model, from the tail, from blocks and after a restart. A
// spec beyond the limits (Dims = 1 with Bits = 64: Dims*Bits <= 64 holds,
// Bits <= 32 does not) is refused and not created.
func TestScaleExtremeCoordinates(t *testing.T) {
	seed := lcSeed(t)
	rng := rand.New(rand.NewSource(seed))
	disk := newSimDisk(t, seed)
	cfg := simConfig(t, disk)
	e := start(t, cfg)
	ctx := ctxFor(t)

	for _, bad := range []ringpipe.SpaceSpec{
		{Name: "d1b64", Dims: 1, Bits: 64},
		{Name: "d2b33", Dims: 2, Bits: 33},
		{Name: "d17b1", Dims: 17, Bits: 1},
		{Name: "d0b8", Dims: 0, Bits: 8},
		{Name: "d3b0", Dims: 3, Bits: 0},
	} {
		_, err := e.CreateSpace(ctx, bad)
		if assert.Error(t, err, "%+v", bad) {
			assert.Regexp(t, `Dims|Bits`, err.Error(), "the refusal names the bad field: %v", err)
		}
		for _, s := range e.Spaces() {
			assert.NotEqual(t, bad.Name, s.Name, "a refused spec is not listed")
		}
	}

	specs := []ringpipe.SpaceSpec{
		{Name: "d2b32", Dims: 2, Bits: 32},
		{Name: "d16b1", Dims: 16, Bits: 1},
		{Name: "d1b32", Dims: 1, Bits: 32},
		{Name: "d4b16", Dims: 4, Bits: 16},
	}
	ids := make([]ringpipe.SpaceID, len(specs))
	models := make([]*model, len(specs))
	boxes := make([][]ringpipe.Box, len(specs)) // non-empty boxes to check besides the whole space
	for i, spec := range specs {
		ids[i] = createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
		models[i] = newModel(spec)
		top := uint32(uint64(1)<<spec.Bits - 1)
		var pts []ringpipe.Point
		// The corners where every coordinate is 0 or top: all of them for
		// up to 4 dimensions, the two extremes and 62 random ones beyond.
		if spec.Dims <= 4 {
			for mask := range 1 << spec.Dims {
				p := make(ringpipe.Point, spec.Dims)
				for d := range p {
					if mask&(1<<d) != 0 {
						p[d] = top
					}
				}
				pts = append(pts, p)
			}
		} else {
			lo, hi := make(ringpipe.Point, spec.Dims), make(ringpipe.Point, spec.Dims)
			for d := range hi {
				hi[d] = top
			}
			pts = append(pts, lo, hi)
			for range 62 {
				p := make(ringpipe.Point, spec.Dims)
				for d := range p {
					p[d] = uint32(rng.Intn(2)) * top
				}
				pts = append(pts, p)
			}
		}
		for range 40 {
			pts = append(pts, randPoint(rng, spec))
		}
		for j, p := range pts {
			v := fmt.Appendf(nil, "%s-%d", spec.Name, j)
			rev, err := e.Put(ctx, ids[i], p, v)
			require.NoError(t, err, "%s: Put %v", spec.Name, p)
			models[i].add(write{point: p, rev: rev, value: v})
		}
		// Single points (the extremes and a random one), and thin boxes:
		// the whole of the first axis at the other axes' top, and the
		// whole of the last axis at the others' 0.
		hi := slices.Clone(pts[len(pts)-41]) // a corner
		for d := range hi {
			hi[d] = top
		}
		lo := make(ringpipe.Point, spec.Dims)
		boxes[i] = append(boxes[i],
			ringpipe.Box{Min: lo, Max: lo}, ringpipe.Box{Min: hi, Max: hi},
			ringpipe.Box{Min: pts[len(pts)-1], Max: pts[len(pts)-1]})
		row := ringpipe.Box{Min: slices.Clone(hi), Max: slices.Clone(hi)}
		row.Min[0] = 0
		col := ringpipe.Box{Min: slices.Clone(lo), Max: slices.Clone(lo)}
		col.Max[spec.Dims-1] = top
		boxes[i] = append(boxes[i], row, col)
	}

	check := func(t *testing.T, when string) {
		for i, spec := range specs {
			r := engineReader(t, e)
			checkModel(t, r, ids[i], models[i], fullBox(spec))
			checkModel(t, viewReader(e.View()), ids[i], models[i], fullBox(spec))
			for _, b := range boxes[i] {
				want := models[i].live(b)
				var got []ringpipe.Record
				require.NoError(t, e.Scan(ctx, ids[i], b, func(rec ringpipe.Record) bool {
					got = append(got, rec)
					return true
				}), "%s: %s: Scan %v", when, spec.Name, b)
				require.Len(t, got, len(want), "%s: %s: Scan %v", when, spec.Name, b)
				for k := range want {
					assert.Equal(t, want[k].point, got[k].Point, "%s: %s: Scan %v record %d", when, spec.Name, b, k)
					assert.Equal(t, want[k].value, got[k].Value, "%s: %s: Scan %v record %d", when, spec.Name, b, k)
				}
				if b.Min[0] == b.Max[0] && slices.Equal(b.Min, b.Max) {
					assert.LessOrEqual(t, len(got), 1, "a single-point box")
				}
			}
			// Empty boxes: Min > Max on one axis (no call, no error),
			// also when the box is otherwise the whole space.
			full := fullBox(spec)
			for d := range spec.Dims {
				b := ringpipe.Box{Min: slices.Clone(full.Min), Max: slices.Clone(full.Max)}
				b.Min[d], b.Max[d] = full.Max[d], 0
				if spec.Bits == 1 || d == 0 {
					assert.NoError(t, e.Scan(ctx, ids[i], b, noCall(t)), "%s: %s: empty box %v", when, spec.Name, b)
				}
			}
			if spec.Bits < 32 {
				b := fullBox(spec)
				b.Max[0]++
				assert.ErrorIs(t, e.Scan(ctx, ids[i], b, noCall(t)), ringpipe.ErrInvalidPoint, "%s: a box beyond 2^Bits", spec.Name)
				p := make(ringpipe.Point, spec.Dims)
				p[spec.Dims-1] = uint32(1) << spec.Bits
				_, err := e.Put(ctx, ids[i], p, []byte("x"))
				assert.ErrorIs(t, err, ringpipe.ErrInvalidPoint, "%s: Put at 2^Bits", spec.Name)
			}
		}
	}
	t.Run("tail", func(t *testing.T) { check(t, "tail") })
	for _, id := range ids {
		require.NoError(t, e.Flush(ctx, id))
	}
	t.Run("blocks", func(t *testing.T) { check(t, "blocks") })
	// Half of each space overwritten or deleted: blocks and tail mixed.
	for i, spec := range specs {
		n := 0
		for _, w := range models[i].last {
			if n++; n%2 == 0 {
				continue
			}
			if n%3 == 0 {
				rev, err := e.Delete(ctx, ids[i], w.point)
				require.NoError(t, err)
				models[i].add(write{point: w.point, rev: rev})
				continue
			}
			v := fmt.Appendf(nil, "%s-again-%d", spec.Name, n)
			rev, err := e.Put(ctx, ids[i], w.point, v)
			require.NoError(t, err)
			models[i].add(write{point: w.point, rev: rev, value: v})
		}
	}
	t.Run("mixed", func(t *testing.T) { check(t, "mixed") })
	stop(t, e)
	disk.PowerLoss(rand.New(rand.NewSource(seed)))
	e = start(t, cfg)
	t.Run("restart", func(t *testing.T) { check(t, "after Stop and a power loss") })
	stop(t, e)
}

// scMaxValue is the MaxValueSize e enforces, read from the error of a Put
// of a value above any limit (a Config may leave it to its default, which
// shrinks to what a log file holds).
func scMaxValue(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID) int {
	t.Helper()
	_, err := e.Put(ctxFor(t), sp, ringpipe.Point{0, 0}, make([]byte, 65<<20))
	require.ErrorIs(t, err, ringpipe.ErrValueTooLarge)
	m := regexp.MustCompile(`Config\.MaxValueSize is ([0-9]+)`).FindStringSubmatch(err.Error())
	require.NotNil(t, m, "the error names the limit: %v", err)
	n, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	return n
}

// scValues writes, into sp, values of exactly limit bytes between small
// ones (so that some fill a generation and it rotates), a nil and an
// empty value (both live and empty), and checks that limit+1 bytes are
// refused by Put and PutAsync without touching the point. It returns the
// model; a nil value is kept in it as empty.
func scValues(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID, spec ringpipe.SpaceSpec, limit int, tag string) *model {
	t.Helper()
	ctx := ctxFor(t)
	m := newModel(spec)
	put := func(p ringpipe.Point, v []byte) {
		t.Helper()
		rev, err := e.Put(ctx, sp, p, v)
		require.NoError(t, err, "%s: Put of %d bytes at %v (MaxValueSize %d)", tag, len(v), p, limit)
		if v == nil {
			v = []byte{}
		}
		m.add(write{point: p, rev: rev, value: v})
	}
	for i := range 4 {
		put(ringpipe.Point{uint32(i), 0}, scValue(fmt.Sprintf("%s-small-%d", tag, i), 100))
		put(ringpipe.Point{uint32(i), 1}, scValue(fmt.Sprintf("%s-max-%d", tag, i), limit))
	}
	tk, err := e.PutAsync(ctx, sp, ringpipe.Point{9, 1}, scValue(tag+"-async-max", limit))
	require.NoError(t, err, "%s: PutAsync of MaxValueSize bytes", tag)
	rev, err := tk.Wait(ctx)
	require.NoError(t, err, "%s: PutAsync of MaxValueSize bytes", tag)
	m.add(write{point: ringpipe.Point{9, 1}, rev: rev, value: scValue(tag+"-async-max", limit)})
	put(ringpipe.Point{5, 5}, nil)
	put(ringpipe.Point{5, 6}, []byte{})

	_, err = e.Put(ctx, sp, ringpipe.Point{0, 1}, make([]byte, limit+1))
	assert.ErrorIs(t, err, ringpipe.ErrValueTooLarge, "%s: Put of MaxValueSize+1 bytes", tag)
	_, err = e.PutAsync(ctx, sp, ringpipe.Point{0, 1}, make([]byte, limit+1))
	assert.ErrorIs(t, err, ringpipe.ErrValueTooLarge, "%s: PutAsync of MaxValueSize+1 bytes", tag)
	return m
}

// scCheckEmpty checks that the nil and the empty value scValues wrote
// read back live, empty and not nil (nil is a tombstone's Value).
func scCheckEmpty(t *testing.T, e *ringpipe.Engine, sp ringpipe.SpaceID, when string) {
	t.Helper()
	for _, p := range []ringpipe.Point{{5, 5}, {5, 6}} {
		rec, err := e.Get(ctxFor(t), sp, p)
		if assert.NoError(t, err, "%s: Get %v", when, p) {
			assert.False(t, rec.Tombstone, "%s: %v is live", when, p)
			assert.NotNil(t, rec.Value, "%s: %v: an empty value reads as empty, not nil", when, p)
			assert.Empty(t, rec.Value, "%s: %v", when, p)
		}
	}
}

// TestScaleValueLimits: values of exactly MaxValueSize are taken by Put
// and PutAsync, one byte more is ErrValueTooLarge and changes nothing, a
// nil and an empty value are both live and empty; from the tail, from
// blocks and after a restart. With an explicit MaxValueSize and with the
// default one shrunk to what a small Preallocate holds, buffered and with
// DirectIO (padded batches, a follow frame in a generation that a big
// record fills). On the simulated disk the values at the limit are also
// staged (their hot file stalls) and a power loss comes before they are
// promoted.
func TestScaleValueLimits(t *testing.T) {
	spec := ringpipe.SpaceSpec{Name: "values", Dims: 2, Bits: 8}
	for _, tc := range []struct {
		name string
		mod  func(*ringpipe.Config)
	}{
		{"explicit", func(c *ringpipe.Config) { c.MaxValueSize, c.Preallocate = 256<<10, 1<<20 }},
		{"explicit-directio", func(c *ringpipe.Config) { c.MaxValueSize, c.Preallocate, c.DirectIO = 256<<10, 1<<20, true }},
		{"default-shrunk", func(c *ringpipe.Config) { c.Preallocate = 64 << 10 }},
		{"default-shrunk-directio", func(c *ringpipe.Config) { c.Preallocate, c.DirectIO = 64<<10, true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := realConfig(t, ringpipe.BackendAuto)
			tc.mod(&cfg)
			e := start(t, cfg)
			sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
			limit := scMaxValue(t, e, sp)
			if cfg.MaxValueSize != 0 {
				assert.Equal(t, cfg.MaxValueSize, limit, "an explicit MaxValueSize is the limit")
			}
			t.Logf("MaxValueSize %d with Preallocate %d", limit, cfg.Preallocate)
			m := scValues(t, e, sp, spec, limit, tc.name)
			checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
			scCheckEmpty(t, e, sp, "tail")
			require.NoError(t, e.Flush(ctxFor(t), sp))
			checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
			scCheckEmpty(t, e, sp, "block")
			stop(t, e)
			e = start(t, cfg)
			checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
			scCheckEmpty(t, e, sp, "restart")
			stop(t, e)
		})
	}
	t.Run("staged-powerloss", func(t *testing.T) {
		seed := lcSeed(t)
		disk := newSimDisk(t, seed)
		base := simConfig(t, disk)
		base.Preallocate = 64 << 10
		cfg, held := scHoldConfig(base, disk)
		e := start(t, cfg)
		hr := held()
		t.Cleanup(hr.release)
		sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
		require.Equal(t, ringpipe.SpaceID(1), sp)
		limit := scMaxValue(t, e, sp)
		scStall(disk, hr, sp)
		m := scValues(t, e, sp, spec, limit, "staged")
		st := e.Stats()
		t.Logf("MaxValueSize %d; staged %d, pending %d", limit, st.StagedWrites, st.StagedPending)
		require.Positive(t, st.StagedPending, "values wait in the staging WAL")
		checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
		scCheckEmpty(t, e, sp, "staged")
		scEnd(t, e, disk, hr, true, seed)

		e = start(t, base)
		checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
		scCheckEmpty(t, e, sp, "after the power loss")
		var err error
		within(t, "Flush of the promoted values", func() { err = e.Flush(ctxFor(t), sp) })
		require.NoError(t, err)
		assert.Zero(t, e.Stats().StagedPending, "every staged value promoted")
		checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
		scCheckEmpty(t, e, sp, "flushed")
		stop(t, e)
	})
}

// scDirFiles counts the files in an engine directory by kind.
type scDirFiles struct {
	blocks, segs, spares, wals, manifests, other int
}

func (f scDirFiles) nonBlock() int { return f.segs + f.spares + f.wals + f.manifests + f.other }

func scCountFiles(t *testing.T, dir string) scDirFiles {
	t.Helper()
	var f scDirFiles
	require.NoError(t, filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil // retired while we walked
			}
			return err
		}
		if de.IsDir() {
			return nil
		}
		n := de.Name()
		switch {
		case blockName.MatchString(n):
			f.blocks++
		case strings.HasSuffix(n, ".seg"):
			f.segs++
		case strings.HasSuffix(n, ".spare"):
			f.spares++
		case walName.MatchString(n):
			f.wals++
		case manifestName.MatchString(n):
			f.manifests++
		case n == "LOCK" || n == "CURRENT":
		default:
			t.Logf("other file: %s", p)
			f.other++
		}
		return nil
	}))
	return f
}

// scHeapInuse is HeapInuse after a full collection.
func scHeapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// scLongValue is the value of the i-th write of TestScaleLongRun.
func scLongValue(i int) []byte { return fmt.Appendf(nil, "value %09d of the long run", i) }

// scLongPoint is the point of the i-th write of TestScaleLongRun: every
// write has a point of its own.
func scLongPoint(i int) ringpipe.Point { return ringpipe.Point{uint32(i % 65536), uint32(i / 65536)} }

// TestScaleLongRun: the shape of a long run in short form: 200,000 small
// writes (2,000,000 with RINGPIPE_SOAK=1) into one space with the default
// Config, from 8 writers with 256 PutAsyncs in flight each. Between tenths
// of the run the Go heap after a collection and the files in the
// directory are measured: the heap stays bounded (the tail is sealed into
// blocks that keep only their index in memory), and apart from one block
// per SealThreshold records the directory holds a bounded number of files
// (hot generations and WAL segments are retired). Every write is there at
// the end and after a restart.
func TestScaleLongRun(t *testing.T) {
	n := 200_000
	if os.Getenv("RINGPIPE_SOAK") == "1" {
		n = 2_000_000
	}
	cfg := ringpipe.Config{Dir: t.TempDir(), Logger: zaptest.NewLogger(t, zaptest.Level(zapcore.InfoLevel))}
	e := start(t, cfg)
	spec := ringpipe.SpaceSpec{Name: "long", Dims: 2, Bits: 16}
	sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
	// 200k writes took 20 s (ctxFor's bound) under -race beside other
	// tests: a bound for the volume, not for one operation.
	bound := 5 * time.Minute
	if n > 200_000 {
		bound = time.Hour
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()

	const writers, window, rounds = 8, 256, 10
	heap0 := scHeapInuse()
	files0 := scCountFiles(t, cfg.Dir)
	t.Logf("start: heap %.1f MiB, files %+v, fds %d", float64(heap0)/(1<<20), files0, scFDCount(t))
	heaps := make([]uint64, 0, rounds)
	maxNonBlock := 0
	t0 := time.Now()
	for r := range rounds {
		lo, hi := r*n/rounds, (r+1)*n/rounds
		windowedPuts(t, ctx, e, writers, window, lo, hi, func(i int) (ringpipe.SpaceID, ringpipe.Point, []byte) {
			return sp, scLongPoint(i), scLongValue(i)
		})
		heap := scHeapInuse()
		heaps = append(heaps, heap)
		f := scCountFiles(t, cfg.Dir)
		maxNonBlock = max(maxNonBlock, f.nonBlock())
		st := e.Stats()
		t.Logf("%7d writes (%v): heap %.1f MiB, files %+v, fds %d, sealed %d, staged %d, pending %d",
			hi, time.Since(t0).Round(time.Millisecond), float64(heap)/(1<<20), f, scFDCount(t),
			st.SealedBlocks, st.StagedWrites, st.StagedPending)
	}

	// Files: one block per SealThreshold records (give or take the last
	// generation and Flush-free rotations), and a bounded rest.
	st := e.Stats()
	f := scCountFiles(t, cfg.Dir)
	// A seal starts once a generation has reached SealThreshold, while
	// promotions may still add to it: blocks hold somewhat more.
	wantBlocks := n / ringpipe.DefaultSealThreshold
	t.Logf("%d blocks sealed for %d writes: %.0f records per block (SealThreshold %d)",
		st.SealedBlocks, n, float64(n)/float64(max(st.SealedBlocks, 1)), ringpipe.DefaultSealThreshold)
	assert.GreaterOrEqual(t, int(st.SealedBlocks), wantBlocks/2, "the tail is sealed into blocks as it grows")
	assert.LessOrEqual(t, int(st.SealedBlocks), wantBlocks+2, "no more blocks than SealThreshold asks for")
	assert.LessOrEqual(t, maxNonBlock, 12, "hot generations, spares, WAL segments and manifests stay few: retired as they are sealed")
	assert.LessOrEqual(t, f.segs, 3, "hot generations of the one space: the active one and those being sealed")
	assert.LessOrEqual(t, f.wals, 3, "staging WAL segments are retired once promoted")

	// Heap: bounded, not growing with the writes. The second half of the
	// run may add the index and Bloom filter of its blocks (about 28 KiB
	// each, README "Memory"), not the records.
	half := heaps[rounds/2-1]
	last := heaps[rounds-1]
	assert.Less(t, last, uint64(128<<20), "heap after %d writes", n)
	assert.Less(t, int64(last)-int64(half), int64(16<<20)+int64(n/2/ringpipe.DefaultSealThreshold+1)*(64<<10),
		"heap growth over the second half of the run (%.1f → %.1f MiB)", float64(half)/(1<<20), float64(last)/(1<<20))

	check := func(when string) {
		t.Helper()
		t0 := time.Now()
		count := 0
		require.NoError(t, e.Scan(ctxFor(t), sp, fullBox(spec), func(r ringpipe.Record) bool {
			i := int(r.Point[0]) + int(r.Point[1])*65536
			if !assert.Equal(t, scLongValue(i), r.Value, "%s: value at %v", when, r.Point) {
				return false
			}
			count++
			return true
		}), when)
		assert.Equal(t, n, count, "%s: every write, once", when)
		t.Logf("%s: Scan of %d records in %v", when, count, time.Since(t0).Round(time.Millisecond))
	}
	for i := 0; i < n; i += 997 {
		rec, err := e.Get(ctxFor(t), sp, scLongPoint(i))
		if assert.NoError(t, err, "Get of write %d", i) {
			assert.Equal(t, scLongValue(i), rec.Value, "write %d", i)
		}
	}
	stop(t, e)
	// A seal that Stop cut short may leave its generation's file for the
	// next Start to retire (README, "Durability"): the layout is checked
	// after the restart, which seals nothing.
	t.Logf("after Stop: files %+v", scCountFiles(t, cfg.Dir))
	t0 = time.Now()
	e = start(t, cfg)
	t.Logf("restart: recovery took %v", time.Since(t0).Round(time.Millisecond))
	check("after a restart")
	stop(t, e)
	rep := checkLayout(t, cfg.Dir, hot.DefaultSegmentSize, []ringpipe.SpaceInfo{{ID: sp, SpaceSpec: spec}})
	t.Logf("after the restart's Stop: files %+v; layout: %d hot generations, %d spares, %d WAL segments",
		scCountFiles(t, cfg.Dir), len(rep.segs[sp]), rep.spares, len(rep.walSegs))
}
