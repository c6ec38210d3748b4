package snapshot

import (
	"fmt"
	"math/rand"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/internal/testhook"
	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
	"github.com/ringpipe/ringpipe/wal"
)

// opLog is a Doer that records every op it passes on, with the path it
// works on (its own, or its fd's), in order.
type opLog struct {
	d   ring.Doer
	mu  sync.Mutex
	fds map[int32]string
	ops []loggedOp
}

type loggedOp struct {
	code ring.Opcode
	path string
	err  error
}

func newOpLog(d ring.Doer) *opLog { return &opLog{d: d, fds: make(map[int32]string)} }

func (l *opLog) Do(ops ...ring.Op) ([]ring.Completion, error) {
	cs, err := l.d.Do(ops...)
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, op := range ops {
		p := op.Path
		if p == "" {
			p = l.fds[op.FD]
		}
		var cerr error
		if i < len(cs) {
			cerr = cs[i].Err
			if op.Code == ring.OpOpen && cerr == nil {
				l.fds[int32(cs[i].Res)] = path.Clean(op.Path)
			}
		}
		l.ops = append(l.ops, loggedOp{op.Code, path.Clean(p), cerr})
	}
	return cs, err
}

// after returns the ops logged from index i on.
func (l *opLog) after(i int) []loggedOp {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]loggedOp(nil), l.ops[i:]...)
}

func (l *opLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ops)
}

// simDoer returns a Doer on a fresh simulated disk holding crashDir.
func simDoer(t *testing.T, seed int64) (*sim.Disk, ring.Doer) {
	t.Helper()
	disk := sim.NewDisk(seed)
	d := ring.NewSync(disk.NewRing(ring.Options{}))
	require.NoError(t, ring.Mkdir(d, crashDir, 0o755))
	require.NoError(t, ring.SyncDir(d, "/"))
	return disk, d
}

// TestManifestRecover: an append whose write or sync fails leaves the
// Manifest failed, its state as before the edit; Recover writes that state
// into a new manifest without touching the failed file again (no write or
// sync of it: DESIGN.md's fsync rule), and the edit applied again is
// durable across a power loss.
func TestManifestRecover(t *testing.T) {
	faults := map[string]sim.Fault{
		"EIO from fdatasync":      {Kind: sim.EIO, Ops: []ring.Opcode{ring.OpFdatasync}},
		"fdatasync fails":         {Kind: sim.FsyncFail, Ops: []ring.Opcode{ring.OpFdatasync}},
		"EIO from write":          {Kind: sim.EIO, Ops: []ring.Opcode{ring.OpWrite}},
		"ENOSPC from write":       {Kind: sim.ENOSPC, Ops: []ring.Opcode{ring.OpWrite}},
		"write makes no progress": {Kind: sim.NoProgress, Ops: []ring.Opcode{ring.OpWrite}},
	}
	for name, f := range faults {
		t.Run(name, func(t *testing.T) {
			for seed := int64(1); seed <= 5; seed++ {
				disk, sd := simDoer(t, seed)
				d := newOpLog(sd)
				m := crashBase(t, d)
				before := m.State()
				f.Path = crashDir + "/MANIFEST-"
				disk.Inject(f)
				edit := []Edit{BlockAdded{Meta: meta(1, 2, 0, 100, 11, 20)}, GenSealed{Space: 1, Gen: 2, MaxRev: 20}}
				_, err := m.Apply(edit...)
				require.Error(t, err)
				require.Len(t, disk.Hits(), 1)
				require.Error(t, m.Err())
				assert.Same(t, before, m.State(), "the state is as before the failed edit")
				_, err = m.Apply(WALRetired{Seq: 1})
				assert.ErrorIs(t, err, m.Err(), "a failed manifest takes no edit")
				assert.ErrorIs(t, m.Compact(), m.Err())

				mark := d.len()
				require.NoError(t, m.Recover())
				require.NoError(t, m.Err())
				require.NoError(t, m.Recover(), "a second Recover does nothing")
				assert.Same(t, before, m.State())
				st, err := m.Apply(edit...)
				require.NoError(t, err)
				failed := crashDir + "/" + ManifestName(1)
				for _, op := range d.after(mark) {
					if op.path == failed {
						assert.Contains(t, []ring.Opcode{ring.OpClose, ring.OpUnlink}, op.code,
							"%s on the failed manifest", op.code)
					}
				}
				names, err := ring.ReadDir(d, crashDir)
				require.NoError(t, err)
				assert.Equal(t, []string{"CURRENT", ManifestName(2)}, names)
				require.NoError(t, m.Close())

				disk.PowerLoss(rand.New(rand.NewSource(seed)))
				got, err := Load(ring.NewSync(disk.NewRing(ring.Options{})), crashDir)
				require.NoError(t, err)
				require.True(t, st.Equal(got), "seed %d: the edit applied after Recover is durable", seed)
			}
		})
	}
}

// TestManifestRecoverFailsAgain: a Recover that fails leaves the Manifest
// failed; each attempt writes a file of a new name, and the one that
// succeeds leaves only itself.
func TestManifestRecoverFailsAgain(t *testing.T) {
	disk, d := simDoer(t, 1)
	m := crashBase(t, d)
	before := m.State()
	disk.Inject(sim.Fault{Kind: sim.EIO, Persist: true, Path: crashDir + "/MANIFEST-"})
	_, err := m.Apply(WALRetired{Seq: 3})
	require.Error(t, err)
	require.Error(t, m.Recover())
	require.Error(t, m.Err(), "still failed")
	require.Error(t, m.Recover())
	var hit []string
	for _, h := range disk.Hits() {
		hit = append(hit, h.Path)
	}
	assert.Contains(t, hit, crashDir+"/"+ManifestName(2)+".tmp")
	assert.Contains(t, hit, crashDir+"/"+ManifestName(3)+".tmp", "a new name per attempt")
	disk.ClearFaults()
	require.NoError(t, m.Recover())
	require.NoError(t, m.Close())
	names, err := ring.ReadDir(d, crashDir)
	require.NoError(t, err)
	assert.Equal(t, []string{"CURRENT", ManifestName(4)}, names)
	disk.PowerLoss(rand.New(rand.NewSource(1)))
	got, err := Load(ring.NewSync(disk.NewRing(ring.Options{})), crashDir)
	require.NoError(t, err)
	assert.True(t, before.Equal(got))
}

// TestOpenTrustsOnlyWhatItSyncs: a process's manifest append fails its
// fdatasync and the process dies before it recovers; the next Open reads
// the edit back (the page cache still has it) and hands it out as the
// state, so that state must be durable before Open returns: recovery is
// about to act on it (retire the generation the edit seals). Across a
// power loss after Open, the state Open returned survives.
func TestOpenTrustsOnlyWhatItSyncs(t *testing.T) {
	for _, kind := range []sim.FaultKind{sim.EIO, sim.FsyncFail} {
		for seed := int64(1); seed <= 10; seed++ {
			t.Run(fmt.Sprintf("%v/%d", kind, seed), func(t *testing.T) {
				disk, d := simDoer(t, seed)
				m := crashBase(t, d)
				disk.Inject(sim.Fault{Kind: kind, Ops: []ring.Opcode{ring.OpFdatasync}, Path: crashDir + "/MANIFEST-"})
				_, err := m.Apply(SpaceCreated{ID: 2, Spec: spec("maybe")})
				require.Error(t, err)
				disk.Crash() // the process dies; the page cache stays

				m2, err := Open(ring.NewSync(disk.NewRing(ring.Options{})), crashDir, wal.TolerateTornTail)
				require.NoError(t, err)
				opened := m2.State()
				_, seen := opened.SpaceByName("maybe")
				require.NoError(t, m2.Close())
				disk.PowerLoss(rand.New(rand.NewSource(seed)))
				got, err := Load(ring.NewSync(disk.NewRing(ring.Options{})), crashDir)
				require.NoError(t, err)
				_, kept := got.SpaceByName("maybe")
				require.True(t, opened.Equal(got), "Open returned the edit (%v) and a power loss then found it %v", seen, kept)
			})
		}
	}
}

// TestOpenStrict: in Strict mode a torn last frame is a CorruptionError
// naming the manifest and the frame's offset, and no file changes; in
// TolerateTornTail mode it is dropped and reported by Tail.
func TestOpenStrict(t *testing.T) {
	d := newDoer(t)
	dir := t.TempDir()
	m, err := Create(d, dir)
	require.NoError(t, err)
	applyAll(t, m, someEdits()[:4])
	require.NoError(t, m.Close())
	m1, err := Open(d, dir, wal.Strict)
	require.NoError(t, err, "an intact manifest opens in Strict mode")
	require.NoError(t, m1.Close())
	// That Open rewrote the manifest: the frames after the snapshot are
	// gone, so write the last edit again and cut it short.
	name := ManifestName(2)
	p := filepath.Join(dir, name)
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	require.Equal(t, int64(len(b)), m2size(t, d, dir), "Open's rewrite is the whole file")
	var batch wal.Batch
	batch.Begin(nil, 2)
	batch.Add(frameEdits, EncodeEdits(nil, someEdits()[4]))
	frame := batch.Finish()
	require.NoError(t, os.WriteFile(p, append(b, frame[:len(frame)-5]...), 0o644))
	last := int64(len(b))

	_, err = Open(d, dir, wal.Strict)
	var ce *messages.CorruptionError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, name, ce.Path)
	before := listDir(t, dir)
	assert.Equal(t, []string{"CURRENT", name}, before, "Strict changes nothing")

	m2, err := Open(d, dir, wal.TolerateTornTail)
	require.NoError(t, err)
	defer m2.Close()
	assert.Equal(t, last, ce.Offset, "Strict names the torn frame")
	assert.Equal(t, Tail{Name: name, End: last, Torn: true}, m2.Tail(), "TolerateTornTail drops it")
	assert.Zero(t, m2.State().WALRetired(), "the torn edit (WAL segment 3 retired) is gone")
	gen, _ := m2.State().SealedGen(1)
	assert.Equal(t, uint64(2), gen, "the edits before it are there")
}

// TestCrashSealCompacting crashes a seal whose edit makes the manifest due
// for compaction (testhook.SetManifestCompactMin makes that cheap): block
// write, edit, compaction, as the sealer does them. The manifest recovers
// to the state before the seal or after it, never a mix, and never loses
// an acknowledged seal.
func TestCrashSealCompacting(t *testing.T) {
	undo := testhook.SetManifestCompactMin(1)
	defer undo()
	crashEvery(t, func(t *testing.T, d ring.Doer) sealState {
		m := crashBase(t, d)
		for i := uint64(1); i <= 3; i++ {
			_, err := m.Apply(WALRetired{Seq: i})
			require.NoError(t, err)
		}
		var recs []messages.Record
		for i := range 50 {
			recs = append(recs, messages.Record{Space: 1, Point: messages.Point{uint32(i), 1}, Revision: messages.Revision(11 + i), Value: []byte("v")})
		}
		es, err := Entries(testSpec, recs)
		require.NoError(t, err)
		return sealState{m: m, old: m.State(), entries: es}
	}, func(d ring.Doer, s sealState) error {
		meta, err := WriteBlock(d, crashDir, 1, s.old.NextBlockID(), s.entries)
		if err != nil {
			return err
		}
		if _, err := s.m.Apply(BlockAdded{Meta: meta}, GenSealed{Space: 1, Gen: 2, MaxRev: meta.MaxRev}); err != nil {
			return err
		}
		if !s.m.NeedsCompaction() {
			return fmt.Errorf("the seal did not make the manifest due for compaction (size %d)", s.m.Size())
		}
		return s.m.Compact()
	}, func(t *testing.T, d ring.Doer, s sealState, acked bool) {
		st := recoverState(t, d)
		gen, _ := st.SealedGen(1)
		switch gen {
		case 1:
			require.False(t, acked, "an acknowledged seal survives")
			require.True(t, st.Equal(s.old), "the old state, unmixed")
		case 2:
			b, err := OpenBlockFor(d, crashDir, st.Index(1).Blocks()[0])
			require.NoError(t, err, "a named block is intact")
			require.Equal(t, len(s.entries), b.Len())
		default:
			t.Fatalf("generation %d sealed", gen)
		}
		names, err := ring.ReadDir(d, crashDir)
		require.NoError(t, err)
		names = slices.DeleteFunc(names, func(n string) bool { return n == "blocks" })
		require.Len(t, names, 2, "CURRENT and one manifest: %v", names)
	})
}

// TestCrashRecover crashes the recovery of a failed manifest (Recover)
// and the edit applied again after it: the state is the old one or has the
// edit, and an acknowledged edit survives.
func TestCrashRecover(t *testing.T) {
	seen := map[bool]int{}
	defer func() {
		require.True(t, t.Failed() || (seen[false] > 0 && seen[true] > 0), "both outcomes seen: %v", seen)
	}()
	edit := []Edit{SpaceCreated{ID: 2, Spec: spec("again")}, WALRetired{Seq: 8}}
	crashEvery(t, func(t *testing.T, d ring.Doer) sealState {
		// The sweep counts the disk's injected faults, so the failed sync
		// is made up by a Doer (the edit's bytes stay unsynced, as after
		// sim.EIO).
		fd := &failSync{d: d}
		m := crashBase(t, fd)
		fd.armed = true
		_, err := m.Apply(edit...)
		require.ErrorIs(t, err, unix.EIO)
		require.False(t, fd.armed)
		return sealState{m: m, old: m.State()}
	}, func(d ring.Doer, s sealState) error {
		if err := s.m.Recover(); err != nil {
			return err
		}
		_, err := s.m.Apply(edit...)
		return err
	}, func(t *testing.T, d ring.Doer, s sealState, acked bool) {
		st := recoverState(t, d)
		_, ok := st.SpaceByName("again")
		seen[ok]++
		if ok {
			require.Equal(t, uint64(8), st.WALRetired(), "both edits of the batch")
			return
		}
		// Without the edit: the crash came before the edit applied again
		// was durable (a cut before CURRENT switched leaves the failed
		// file live, and its edit, whose sync failed, may be there or not:
		// the other branch).
		require.False(t, acked, "an acknowledged edit survives")
		require.True(t, st.Equal(s.old), "the old state, unmixed")
	})
}

// m2size returns the size of dir's live manifest as a read-only scan sees it.
func m2size(t *testing.T, d ring.Doer, dir string) int64 {
	t.Helper()
	rep, err := ScanManifest(d, dir)
	require.NoError(t, err)
	return rep.Size
}

// failSync is a Doer that, while armed, fails the next fdatasync with EIO
// without performing it (the ops before it in the batch run), then
// disarms.
type failSync struct {
	d     ring.Doer
	armed bool
}

func (f *failSync) Do(ops ...ring.Op) ([]ring.Completion, error) {
	i := slices.IndexFunc(ops, func(op ring.Op) bool { return op.Code == ring.OpFdatasync })
	if !f.armed || i < 0 {
		return f.d.Do(ops...)
	}
	f.armed = false
	before := slices.Clone(ops[:i])
	if i > 0 {
		before[i-1].Link = false
	}
	cs, err := f.d.Do(before...)
	if err != nil {
		return cs, err
	}
	cs = append(cs, ring.Completion{Token: ops[i].Token, Code: ring.OpFdatasync, Err: unix.EIO})
	for _, op := range ops[i+1:] {
		cs = append(cs, ring.Completion{Token: op.Token, Code: op.Code, Err: unix.ECANCELED})
	}
	return cs, nil
}

// TestReadThenRewrite: Read changes no file and its Manifest takes no edit;
// Rewrite makes it writable in a new file, and a second Rewrite does
// nothing.
func TestReadThenRewrite(t *testing.T) {
	d := newDoer(t)
	dir := t.TempDir()
	m, err := Create(d, dir)
	require.NoError(t, err)
	st := applyAll(t, m, someEdits())
	require.NoError(t, m.Close())
	require.NoError(t, os.WriteFile(filepath.Join(dir, "CURRENT.tmp"), []byte("junk"), 0o644))
	before := listDir(t, dir)

	m, err = Read(d, dir, wal.Strict)
	require.NoError(t, err)
	assert.True(t, st.Equal(m.State()))
	assert.Equal(t, Tail{Name: ManifestName(1), End: m2size(t, d, dir)}, m.Tail())
	_, err = m.Apply(WALRetired{Seq: 9})
	assert.ErrorIs(t, err, errPending)
	assert.ErrorIs(t, m.Compact(), errPending)
	assert.Equal(t, before, listDir(t, dir), "Read changes nothing")

	require.NoError(t, m.Rewrite())
	assert.Equal(t, []string{"CURRENT", ManifestName(2)}, listDir(t, dir), "rewritten, leftovers removed")
	require.NoError(t, m.Rewrite())
	assert.Equal(t, []string{"CURRENT", ManifestName(2)}, listDir(t, dir), "a second Rewrite does nothing")
	_, err = m.Apply(WALRetired{Seq: 9})
	require.NoError(t, err)
	require.NoError(t, m.Close())
	got, err := Load(d, dir)
	require.NoError(t, err)
	assert.Equal(t, uint64(9), got.WALRetired())
}
