package test

// The file accounting audit: what an engine directory holds after long
// histories, many crashes, steady overwrites and Stop, judged by a checker
// written from DESIGN.md §4 and the packages' documented file names:
//
//	LOCK                      flock'd for the engine's lifetime
//	CURRENT, MANIFEST-<n>     the pointer and the one live manifest
//	wal/<20 digits>.log       staging WAL segments (the active one, and
//	                          older ones only while they hold records not
//	                          yet promoted)
//	hot/<10>-<20>.seg         hot generations: after a settle exactly one,
//	                          the active one, per space
//	hot/<10>-<20>.spare       retired files kept for reuse, at most
//	                          hot.DefaultMaxSpares, of the current size
//	blocks/<space>/<id>.blk   sealed blocks: exactly the ones the manifest
//	                          names, each of the size it records
//
// and, between a crash and the next Start only, temporary files of a write
// cut short (blocks/<space>/<id>.blk.tmp, MANIFEST-<n>.tmp, CURRENT.tmp).
// Everything else is unaccounted. A user's foreign files are never the
// engine's to remove (README says nothing of removing any).

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/hot"
	"github.com/ringpipe/ringpipe/internal/testhook"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
	"github.com/ringpipe/ringpipe/snapshot"
)

// fsKind is what the layout says a file is.
type fsKind string

const (
	fsLock     fsKind = "LOCK"
	fsCurrent  fsKind = "CURRENT"
	fsManifest fsKind = "manifest"
	fsSeg      fsKind = "hot seg"
	fsSpare    fsKind = "hot spare"
	fsWAL      fsKind = "wal seg"
	fsBlock    fsKind = "block"
	fsTmp      fsKind = "tmp"
	fsDir      fsKind = "dir"
	fsUnknown  fsKind = "UNACCOUNTED"
)

var fsAllKinds = []fsKind{fsLock, fsCurrent, fsManifest, fsSeg, fsSpare, fsWAL, fsBlock, fsTmp, fsDir, fsUnknown}

var (
	fsManifestRe = regexp.MustCompile(`^MANIFEST-([0-9]{6,})$`)
	fsHotRe      = regexp.MustCompile(`^([0-9]{10})-([0-9]{20})\.(seg|spare)$`)
	fsWALRe      = regexp.MustCompile(`^([0-9]{20})\.log$`)
	fsBlockRe    = regexp.MustCompile(`^(0|[1-9][0-9]*)\.blk$`)
	fsSpaceRe    = regexp.MustCompile(`^[1-9][0-9]*$`)
)

// fsEntry is one entry of an engine directory.
type fsEntry struct {
	rel   string // slash-separated, relative to the engine directory
	kind  fsKind
	size  int64
	alloc int64 // st_blocks*512 on a real disk, the size on sim
	space uint64
	num   uint64 // generation, block id, WAL sequence or manifest number
}

// fsClassify names what DESIGN.md §4 (and hot's spares, and the temporary
// files of crash-safe writes) says the regular file at rel is.
func fsClassify(rel string) fsEntry {
	e := fsEntry{rel: rel, kind: fsUnknown}
	parts := strings.Split(rel, "/")
	switch len(parts) {
	case 1:
		n := parts[0]
		switch {
		case n == "LOCK":
			e.kind = fsLock
		case n == "CURRENT":
			e.kind = fsCurrent
		case n == "CURRENT.tmp":
			e.kind = fsTmp
		case fsManifestRe.MatchString(strings.TrimSuffix(n, ".tmp")):
			m := fsManifestRe.FindStringSubmatch(strings.TrimSuffix(n, ".tmp"))
			e.num, _ = strconv.ParseUint(m[1], 10, 64)
			e.kind = fsManifest
			if strings.HasSuffix(n, ".tmp") {
				e.kind = fsTmp
			}
		}
	case 2:
		d, n := parts[0], parts[1]
		switch {
		case d == "wal" && fsWALRe.MatchString(n):
			e.kind = fsWAL
			e.num, _ = strconv.ParseUint(fsWALRe.FindStringSubmatch(n)[1], 10, 64)
		case d == "hot" && fsHotRe.MatchString(n):
			m := fsHotRe.FindStringSubmatch(n)
			e.space, _ = strconv.ParseUint(m[1], 10, 32)
			e.num, _ = strconv.ParseUint(m[2], 10, 64)
			e.kind = fsSeg
			if m[3] == "spare" {
				e.kind = fsSpare
			}
		}
	case 3:
		if parts[0] != "blocks" || !fsSpaceRe.MatchString(parts[1]) {
			break
		}
		e.space, _ = strconv.ParseUint(parts[1], 10, 32)
		n := parts[2]
		if m := fsBlockRe.FindStringSubmatch(strings.TrimSuffix(n, ".tmp")); m != nil {
			e.num, _ = strconv.ParseUint(m[1], 10, 64)
			e.kind = fsBlock
			if strings.HasSuffix(n, ".tmp") {
				e.kind = fsTmp
			}
		}
	}
	return e
}

// fsDirOK says whether a directory at rel is one the layout has.
func fsDirOK(rel string) bool {
	parts := strings.Split(rel, "/")
	switch len(parts) {
	case 1:
		return rel == "hot" || rel == "wal" || rel == "blocks"
	case 2:
		return parts[0] == "blocks" && fsSpaceRe.MatchString(parts[1])
	}
	return false
}

// fsCensus is one listing.
type fsCensus struct {
	all   []fsEntry
	count map[fsKind]int
	size  map[fsKind]int64
	alloc map[fsKind]int64
}

func newFSCensus(es []fsEntry, skip map[string]bool) fsCensus {
	c := fsCensus{count: map[fsKind]int{}, size: map[fsKind]int64{}, alloc: map[fsKind]int64{}}
	for _, e := range es {
		if skip[e.rel] {
			continue
		}
		c.all = append(c.all, e)
		c.count[e.kind]++
		c.size[e.kind] += e.size
		c.alloc[e.kind] += e.alloc
	}
	sort.Slice(c.all, func(i, j int) bool { return c.all[i].rel < c.all[j].rel })
	return c
}

func (c fsCensus) of(k fsKind) []fsEntry {
	var out []fsEntry
	for _, e := range c.all {
		if e.kind == k {
			out = append(out, e)
		}
	}
	return out
}

func (c fsCensus) names(k fsKind) []string {
	var out []string
	for _, e := range c.of(k) {
		out = append(out, e.rel)
	}
	return out
}

// logBytes is what hot/ and wal/ hold (allocated).
func (c fsCensus) logBytes() int64 { return c.alloc[fsSeg] + c.alloc[fsSpare] + c.alloc[fsWAL] }

// nonBlockFiles counts every file but blocks.
func (c fsCensus) nonBlockFiles() int {
	n := 0
	for _, e := range c.all {
		if e.kind != fsBlock && e.kind != fsDir {
			n++
		}
	}
	return n
}

func (c fsCensus) String() string {
	var b strings.Builder
	for _, k := range fsAllKinds {
		if c.count[k] > 0 {
			fmt.Fprintf(&b, "%s %d (%d B, %d B alloc); ", k, c.count[k], c.size[k], c.alloc[k])
		}
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// fsListReal lists every entry under dir.
func fsListReal(t testing.TB, dir string, skip map[string]bool) fsCensus {
	t.Helper()
	var es []fsEntry
	require.NoError(t, filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		require.NoError(t, err)
		rel = filepath.ToSlash(rel)
		if de.IsDir() {
			e := fsEntry{rel: rel, kind: fsDir}
			if !fsDirOK(rel) {
				e.kind = fsUnknown
			}
			es = append(es, e)
			return nil
		}
		fi, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		require.NoError(t, err)
		e := fsClassify(rel)
		if !fi.Mode().IsRegular() {
			e.kind = fsUnknown
		}
		e.size = fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			e.alloc = st.Blocks * 512
		}
		es = append(es, e)
		return nil
	}))
	return newFSCensus(es, skip)
}

// fsListSim lists the regular files of the engine directory on disk.
func fsListSim(t testing.TB, disk *sim.Disk, skip map[string]bool) fsCensus {
	t.Helper()
	var es []fsEntry
	for _, p := range disk.Files() {
		rel, ok := strings.CutPrefix(p, simDir+"/")
		if !ok {
			continue
		}
		data, err := disk.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		require.NoError(t, err)
		e := fsClassify(rel)
		e.size, e.alloc = int64(len(data)), int64(len(data))
		es = append(es, e)
	}
	return newFSCensus(es, skip)
}

// fsLoad reads the manifest of dir through r, changing nothing.
func fsLoad(t testing.TB, r ring.Ring, dir string) *snapshot.State {
	t.Helper()
	defer r.Close() //nolint:errcheck // nothing in flight
	st, err := snapshot.Load(ring.NewSync(r), dir)
	require.NoError(t, err, "load the manifest of %s", dir)
	return st
}

// fsCheck judges a census of a settled directory (no engine running, or
// one idle after fsSettle) against the layout and the manifest st: every
// entry accounted for; no temporary file; one LOCK, one CURRENT, one
// manifest (the one CURRENT names, whose name current holds); exactly one
// hot generation per space (its active one), of a known space, not sealed;
// at most hot.DefaultMaxSpares spares; at most maxWAL WAL segments; every
// log file exactly prealloc bytes; the block files exactly the blocks the
// manifest names, each of its recorded size. It returns whether it held.
func fsCheck(t testing.TB, what string, c fsCensus, st *snapshot.State, current string, prealloc int64, maxWAL int) bool {
	t.Helper()
	ok := true
	fail := func(format string, args ...any) {
		t.Helper()
		ok = false
		assert.Fail(t, fmt.Sprintf("%s: "+format, append([]any{what}, args...)...))
	}
	for _, e := range c.of(fsUnknown) {
		fail("unaccounted entry %s (%d bytes)", e.rel, e.size)
	}
	for _, e := range c.of(fsTmp) {
		fail("temporary file %s (%d bytes) left in a settled directory", e.rel, e.size)
	}
	if c.count[fsLock] != 1 || c.count[fsCurrent] != 1 {
		fail("LOCK %d, CURRENT %d: want one each", c.count[fsLock], c.count[fsCurrent])
	}
	if ms := c.names(fsManifest); len(ms) != 1 || ms[0] != strings.TrimSpace(current) {
		fail("manifests %v; CURRENT names %q", ms, strings.TrimSpace(current))
	}
	spaces := make(map[uint64]bool)
	for _, s := range st.Spaces() {
		spaces[uint64(s.ID)] = true
	}
	perSpace := make(map[uint64][]uint64)
	for _, e := range c.of(fsSeg) {
		if !spaces[e.space] {
			fail("%s: a generation of space %d, which the manifest does not know", e.rel, e.space)
			continue
		}
		perSpace[e.space] = append(perSpace[e.space], e.num)
		if sealed, _ := st.SealedGen(ringpipe.SpaceID(e.space)); e.num <= sealed {
			fail("%s: generation %d is sealed (up to %d) in the manifest, yet its file is live", e.rel, e.num, sealed)
		}
	}
	for sp := range spaces {
		if gens := perSpace[sp]; len(gens) != 1 {
			fail("space %d has %d hot generations %v: want exactly its active one after a settle", sp, len(gens), gens)
		}
	}
	if n := c.count[fsSpare]; n > hot.DefaultMaxSpares {
		fail("%d spare hot files %v: at most %d", n, c.names(fsSpare), hot.DefaultMaxSpares)
	}
	if n := c.count[fsWAL]; n > maxWAL {
		fail("%d WAL segments %v: at most %d", n, c.names(fsWAL), maxWAL)
	}
	for _, e := range c.all {
		switch e.kind {
		case fsSeg, fsSpare, fsWAL:
			if e.size != prealloc {
				fail("%s: %d bytes, Preallocate is %d", e.rel, e.size, prealloc)
			}
		}
	}
	named := make(map[string]int64)
	for _, s := range st.Spaces() {
		for _, m := range st.Index(s.ID).Blocks() {
			named[fmt.Sprintf("blocks/%d/%d.blk", s.ID, m.ID)] = m.Size
		}
	}
	for _, e := range c.of(fsBlock) {
		size, ok := named[e.rel]
		switch {
		case !ok:
			fail("%s: a block file the manifest does not name (%d bytes)", e.rel, e.size)
		case size != e.size:
			fail("%s: %d bytes, the manifest says %d", e.rel, e.size, size)
		}
		delete(named, e.rel)
	}
	for rel := range named {
		fail("%s: named by the manifest, missing", rel)
	}
	return ok
}

// fsSettle brings a running engine to rest: every write durable, nothing
// staged, every space flushed, and the staging WAL retired down to its
// active segment (polled: retirement follows the promotion that allows
// it). walCount lists the WAL's segments.
func fsSettle(t testing.TB, e *ringpipe.Engine, walCount func() int) {
	t.Helper()
	require.NoError(t, e.Sync(ctxFor(t)))
	waitFor(t, e, "every staged write promoted", func(st ringpipe.Stats) bool { return st.StagedPending == 0 })
	for _, s := range e.Spaces() {
		require.NoError(t, e.Flush(ctxFor(t), s.ID), "Flush %s", s.Name)
	}
	deadline := time.Now().Add(eventualTimeout)
	for walCount() > 1 && time.Now().Before(deadline) {
		time.Sleep(pollEvery)
	}
}

// fsSim bundles a simulated disk's listing and checks.
type fsSim struct {
	disk *sim.Disk
	cfg  ringpipe.Config
}

func (s fsSim) census(t testing.TB, skip map[string]bool) fsCensus { return fsListSim(t, s.disk, skip) }
func (s fsSim) walCount() int                                      { return len(filesUnderDisk(s.disk, simDir+"/wal/")) }

// check lists the directory and judges it (see fsCheck).
func (s fsSim) check(t testing.TB, what string, skip map[string]bool, maxWAL int) (fsCensus, bool) {
	t.Helper()
	c := s.census(t, skip)
	cur, err := s.disk.ReadFile(simDir + "/CURRENT")
	require.NoError(t, err)
	st := fsLoad(t, simRing(s.disk), simDir)
	return c, fsCheck(t, what, c, st, string(cur), s.cfg.Preallocate, maxWAL)
}

// fsCheckReal lists a real directory and judges it (see fsCheck).
func fsCheckReal(t testing.TB, what string, cfg ringpipe.Config, skip map[string]bool, maxWAL int) (fsCensus, bool) {
	t.Helper()
	c := fsListReal(t, cfg.Dir, skip)
	cur, err := os.ReadFile(filepath.Join(cfg.Dir, "CURRENT"))
	require.NoError(t, err)
	r, err := ring.New(ring.Options{Kind: ring.Std, Workers: 1, Entries: 8})
	require.NoError(t, err)
	st := fsLoad(t, r, cfg.Dir)
	return c, fsCheck(t, what, c, st, string(cur), cfg.Preallocate, maxWAL)
}

func fsWALCountReal(dir string) func() int {
	return func() int {
		es, _ := os.ReadDir(filepath.Join(dir, "wal"))
		n := 0
		for _, e := range es {
			if fsWALRe.MatchString(e.Name()) {
				n++
			}
		}
		return n
	}
}

var fsSpec = ringpipe.SpaceSpec{Name: "fs", Dims: 2, Bits: 12}

func fsPoint(i int) ringpipe.Point { return ringpipe.Point{uint32(i % 4096), uint32(i / 4096 % 4096)} }

func fsValue(rng *rand.Rand, tag string, max int) []byte {
	v := []byte(tag)
	if max > 0 {
		v = append(v, make([]byte, rng.Intn(max))...)
	}
	return v
}

// ---------------------------------------------------------------------
// 4. Foreign files

// fsForeignFile is a user's file dropped into the engine's directory.
type fsForeignFile struct {
	rel  string
	data []byte
	dir  bool // a directory of the user's, with a file inside
}

// fsForeignRun puts the user's file f into a directory whose engine has
// sealed a block of space 1, then Starts, writes, flushes and Stops three
// times, checking after each that Start worked and f is still there,
// unchanged. It stops at the first failure.
func fsForeignRun(t *testing.T, f fsForeignFile) {
	cfg := realConfig(t, ringpipe.BackendAuto)
	cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))
	e := start(t, cfg)
	sp := createSpace(t, e, "a", fsSpec.Dims, fsSpec.Bits)
	require.Equal(t, ringpipe.SpaceID(1), sp)
	for i := range 50 {
		_, err := e.Put(ctxFor(t), sp, fsPoint(i), []byte("v"))
		require.NoError(t, err)
	}
	require.NoError(t, e.Flush(ctxFor(t), sp))
	stop(t, e)

	p := filepath.Join(cfg.Dir, f.rel)
	file := p
	if f.dir {
		require.NoError(t, os.MkdirAll(p, 0o755))
		file = filepath.Join(p, "inside")
	}
	require.NoError(t, os.MkdirAll(filepath.Dir(file), 0o755))
	require.NoError(t, os.WriteFile(file, f.data, 0o644))
	check := func(when string) {
		t.Helper()
		got, err := os.ReadFile(file)
		require.NoError(t, err, "%s: the user's %s was removed", when, f.rel)
		require.Equal(t, f.data, got, "%s: the user's %s changed", when, f.rel)
	}
	for life := range 3 {
		when := fmt.Sprintf("Start %d", life+1)
		e, err := ringpipe.Start(ctxFor(t), cfg)
		require.NoError(t, err, "%s with the user's %s in the directory", when, f.rel)
		for i := range 50 {
			_, err := e.Put(ctxFor(t), sp, fsPoint(i+50*life), []byte("w"))
			require.NoError(t, err)
		}
		require.NoError(t, e.Flush(ctxFor(t), sp))
		rec, err := e.Get(ctxFor(t), sp, fsPoint(3))
		if assert.NoError(t, err) {
			assert.NotEmpty(t, rec.Value)
		}
		stop(t, e)
		check(when)
	}
	c, _ := fsCheckReal(t, "after three lives", cfg, map[string]bool{f.rel: true, f.rel + "/inside": true}, 1)
	t.Logf("%s", c)
}

// TestFilesForeign: a user's files, with names the engine never writes (a
// stray .tmp among them), in each directory of the layout on a real
// directory: Start succeeds, and the files stay as they were after writes,
// seals, Stops and two more Starts. README says nothing of removing any
// file of the user's; orphans.go: "files of other names are left alone".
func TestFilesForeign(t *testing.T) {
	for _, f := range []fsForeignFile{
		{rel: "notes.txt", data: []byte("mine")},
		{rel: "backup.tmp", data: []byte("mine")},
		{rel: "MANIFEST-backup.tmp", data: []byte("mine")},
		{rel: "CURRENT.bak", data: []byte("mine")},
		{rel: "hot/scratch.tmp", data: []byte("mine")},
		{rel: "hot/old.spare", data: []byte("mine")},
		{rel: "wal/scratch.tmp", data: []byte("mine")},
		{rel: "wal/1.log", data: []byte("mine")},
		{rel: "blocks/notes.txt", data: []byte("mine")},
		{rel: "blocks/1/README", data: []byte("mine")},
		{rel: "blocks/1/1.blk.bak", data: []byte("mine")},
		{rel: "blocks/1/01.blk", data: []byte("mine")},
		{rel: "blocks/77/1.blk", data: []byte("mine")},
		{rel: "mydir", data: []byte("mine"), dir: true},
		{rel: "hot/mydir", data: []byte("mine"), dir: true},
	} {
		t.Run(strings.ReplaceAll(f.rel, "/", "_"), func(t *testing.T) { fsForeignRun(t, f) })
	}
}

// TestFilesForeignTmpInBlockDir: a user's blocks/<space>/<name>.tmp
// survives Start. Fixed: before, Start removed any .tmp in a block
// directory, not only the engine's <id>.blk.tmp (4 of 4 runs).
func TestFilesForeignTmpInBlockDir(t *testing.T) {
	fsForeignRun(t, fsForeignFile{rel: "blocks/1/notes.tmp", data: []byte("my notes")})
}

// TestFilesForeignTmpDirInBlockDir: a user's directory named <name>.tmp
// in blocks/<space>/ does not break Start. Fixed: before, every Start
// failed ("remove orphaned block cache.tmp: ... is a directory"; 4 of 4
// runs).
func TestFilesForeignTmpDirInBlockDir(t *testing.T) {
	fsForeignRun(t, fsForeignFile{rel: "blocks/1/cache.tmp", data: []byte("mine"), dir: true})
}

// ---------------------------------------------------------------------
// 5. Disk usage of a stopped engine

// TestFilesIdleAfterStop: on a real directory, an engine with S spaces
// that has sealed many generations and staged writes (a DirectWriteTimeout
// of 20 µs sends many through the WAL) is settled and stopped. What the
// stopped, idle directory holds beyond its blocks is at most one hot file
// per space, hot's spares and the active WAL segment, each of Preallocate
// bytes allocated at most (fallocate): (S + DefaultMaxSpares + 1) ×
// Preallocate, plus the manifest, CURRENT and LOCK. Reported with the
// figures measured.
func TestFilesIdleAfterStop(t *testing.T) {
	for _, spaces := range []int{1, 4} {
		t.Run(fmt.Sprintf("spaces%d", spaces), func(t *testing.T) {
			cfg := realConfig(t, ringpipe.BackendAuto)
			cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))
			cfg.Preallocate = 256 << 10
			cfg.SealThreshold = 300
			cfg.DirectWriteTimeout = 20 * time.Microsecond
			e := start(t, cfg)
			var ids []ringpipe.SpaceID
			for s := range spaces {
				ids = append(ids, createSpace(t, e, fmt.Sprintf("s%d", s), fsSpec.Dims, fsSpec.Bits))
			}
			rng := rand.New(rand.NewSource(1))
			windowedPuts(t, ctxFor(t), e, 8, 64, 0, 6000, func(i int) (ringpipe.SpaceID, ringpipe.Point, []byte) {
				return ids[i%len(ids)], fsPoint(i % 1000), fsValue(rng, "v", 0)
			})
			st := e.Stats()
			t.Logf("stats: direct %d, staged %d, sealed %d", st.DirectWrites, st.StagedWrites, st.SealedBlocks)
			fsSettle(t, e, fsWALCountReal(cfg.Dir))
			stop(t, e)
			c, _ := fsCheckReal(t, "stopped", cfg, nil, 1)
			t.Logf("stopped and idle: %s", c)
			limit := int64(spaces+hot.DefaultMaxSpares+1) * cfg.Preallocate
			assert.LessOrEqual(t, c.logBytes(), limit,
				"hot/ and wal/ of a stopped engine hold %d bytes allocated: more than %d = (%d spaces + %d spares + 1 WAL) × Preallocate",
				c.logBytes(), limit, spaces, hot.DefaultMaxSpares)
			assert.LessOrEqual(t, c.alloc[fsManifest]+c.alloc[fsCurrent]+c.alloc[fsLock], int64(64<<10), "manifest, CURRENT and LOCK")
			// A second Start and Stop with nothing written changes no
			// count.
			e = start(t, cfg)
			stop(t, e)
			c2, _ := fsCheckReal(t, "after an idle Start and Stop", cfg, nil, 1)
			for _, k := range []fsKind{fsSeg, fsSpare, fsWAL, fsBlock, fsManifest} {
				assert.Equal(t, c.count[k], c2.count[k], "%s files after an idle Start and Stop", k)
			}
			assert.LessOrEqual(t, c2.logBytes(), c.logBytes(), "an idle Start and Stop allocated log space")
		})
	}
}

// ---------------------------------------------------------------------
// 1. Long random histories

// fsEnv is where a history runs: a simulated disk (stalls possible) or a
// real directory.
type fsEnv struct {
	cfg      ringpipe.Config
	disk     *sim.Disk // nil on a real directory
	census   func(t testing.TB, skip map[string]bool) fsCensus
	check    func(t testing.TB, what string, skip map[string]bool, maxWAL int) (fsCensus, bool)
	walCount func() int
}

func fsSimEnv(t testing.TB, seed int64) *fsEnv {
	disk := newSimDisk(t, seed)
	s := fsSim{disk: disk, cfg: simConfig(t, disk)}
	env := &fsEnv{cfg: s.cfg, disk: disk, walCount: s.walCount, census: s.census}
	env.check = func(t testing.TB, what string, skip map[string]bool, maxWAL int) (fsCensus, bool) {
		s.cfg = env.cfg
		return s.check(t, what, skip, maxWAL)
	}
	return env
}

func fsRealEnv(t testing.TB) *fsEnv {
	env := &fsEnv{cfg: realConfig(t, ringpipe.BackendAuto)}
	env.walCount = fsWALCountReal(env.cfg.Dir)
	env.census = func(t testing.TB, skip map[string]bool) fsCensus { return fsListReal(t, env.cfg.Dir, skip) }
	env.check = func(t testing.TB, what string, skip map[string]bool, maxWAL int) (fsCensus, bool) {
		return fsCheckReal(t, what, env.cfg, skip, maxWAL)
	}
	return env
}

// fsModels is the acknowledged state of every space, by name.
type fsModels struct {
	mu     sync.Mutex
	byName map[string]*model
	ids    map[string]ringpipe.SpaceID
	names  []string
}

func newFSModels() *fsModels {
	return &fsModels{byName: map[string]*model{}, ids: map[string]ringpipe.SpaceID{}}
}

func (m *fsModels) add(name string, w write) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.byName[name].add(w)
}

// checkAll checks every space against its model.
func (m *fsModels) checkAll(t *testing.T, e *ringpipe.Engine) {
	t.Helper()
	for _, n := range m.names {
		checkModel(t, engineReader(t, e), m.ids[n], m.byName[n], fullBox(fsSpec))
	}
}

// fsHistory runs ops random operations on env: Puts that overwrite 300
// points a space (values 0-2 KiB), Deletes, Flushes, Syncs, CreateSpace
// of new names (up to 4 spaces) and of existing ones, bursts of
// concurrent PutAsyncs (automatic seals at a small SealThreshold), hot
// files stalled and released (sim: writes go through the staging WAL),
// Stops after a settle and Stops in the middle of things, manifest
// compactions made frequent. After each settled Stop the directory is
// checked strictly (fsCheck with one WAL segment), after every other Stop
// for unaccounted files and spares; the data against the model after
// every Start.
func fsHistory(t *testing.T, env *fsEnv, seed int64, ops int) {
	defer testhook.SetManifestCompactMin(2 << 10)()
	rng := rand.New(rand.NewSource(seed))
	env.cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel))
	env.cfg.Preallocate = 64 << 10
	env.cfg.SealThreshold = 20 + rng.Intn(80)
	models := newFSModels()
	e := start(t, env.cfg)
	stalled := false
	unstall := func() {
		if env.disk != nil && stalled {
			env.disk.ClearFaults()
			stalled = false
		}
	}
	createSpace := func() {
		var name string
		if len(models.names) < 4 && (len(models.names) == 0 || rng.Intn(2) == 0) {
			name = fmt.Sprintf("space%d", len(models.names))
		} else {
			name = models.names[rng.Intn(len(models.names))]
		}
		id, err := e.CreateSpace(ctxFor(t), ringpipe.SpaceSpec{Name: name, Dims: fsSpec.Dims, Bits: fsSpec.Bits})
		require.NoError(t, err, "CreateSpace %s", name)
		if old, ok := models.ids[name]; ok {
			require.Equal(t, old, id, "CreateSpace of an existing name")
			return
		}
		models.ids[name] = id
		models.names = append(models.names, name)
		models.byName[name] = newModel(fsSpec)
	}
	createSpace()
	pick := func() (string, ringpipe.SpaceID) {
		n := models.names[rng.Intn(len(models.names))]
		return n, models.ids[n]
	}
	settles, cycles := 0, 0
	var maxLog int64
	maxFiles := 0
	for op := 0; op < ops; op++ {
		ctx := ctxFor(t)
		switch r := rng.Intn(1000); {
		case r < 550:
			n, sp := pick()
			p := fsPoint(rng.Intn(300))
			v := fsValue(rng, fmt.Sprintf("%d/%d", seed, op), 2000)
			rev, err := e.Put(ctx, sp, p, v)
			require.NoError(t, err, "Put")
			models.add(n, write{point: p, rev: rev, value: v})
		case r < 650:
			n, sp := pick()
			p := fsPoint(rng.Intn(300))
			rev, err := e.Delete(ctx, sp, p)
			require.NoError(t, err, "Delete")
			models.add(n, write{point: p, rev: rev})
		case r < 700:
			_, sp := pick()
			require.NoError(t, e.Flush(ctx, sp), "Flush")
		case r < 730:
			createSpace()
		case r < 760:
			require.NoError(t, e.Sync(ctx))
		case r < 800:
			if env.disk != nil {
				if stalled {
					unstall()
				} else {
					_, sp := pick()
					stallHot(env.disk, sp)
					stalled = true
				}
			}
		case r < 840:
			// A burst of concurrent PutAsyncs.
			var wg sync.WaitGroup
			for w := range 4 {
				wrng := rand.New(rand.NewSource(seed*1000 + int64(op)*4 + int64(w)))
				wg.Go(func() {
					type pend struct {
						name string
						p    ringpipe.Point
						v    []byte
						tk   *ringpipe.Ticket
					}
					var ps []pend
					for i := range 100 {
						n := models.names[wrng.Intn(len(models.names))]
						p := fsPoint(wrng.Intn(300))
						v := fsValue(wrng, fmt.Sprintf("b%d/%d/%d", op, w, i), 500)
						tk, err := e.PutAsync(ctx, models.ids[n], p, v)
						if !assert.NoError(t, err, "PutAsync") {
							return
						}
						ps = append(ps, pend{n, p, v, tk})
					}
					for _, x := range ps {
						rev, err := x.tk.Wait(ctx)
						if !assert.NoError(t, err, "ticket") {
							return
						}
						models.add(x.name, write{point: x.p, rev: rev, value: x.v})
					}
				})
			}
			wg.Wait()
			require.False(t, t.Failed())
		case r < 870:
			// Stop in the middle of things, Start again.
			stop(t, e)
			c := env.census(t, nil)
			for _, f := range c.of(fsUnknown) {
				assert.Fail(t, "unaccounted file after a Stop", "op %d: %s", op, f.rel)
			}
			assert.LessOrEqual(t, c.count[fsSpare], hot.DefaultMaxSpares, "op %d: spares after a Stop: %v", op, c.names(fsSpare))
			cycles++
			e = start(t, env.cfg)
			models.checkAll(t, e)
		case r < 900:
			// Settle, Stop, check strictly, Start again.
			unstall()
			fsSettle(t, e, env.walCount)
			stop(t, e)
			settles++
			c, ok := env.check(t, fmt.Sprintf("op %d, settled and stopped", op), nil, 1)
			maxLog = max(maxLog, c.logBytes())
			maxFiles = max(maxFiles, c.nonBlockFiles())
			if !ok {
				t.Logf("op %d: %s", op, c)
				for _, f := range c.all {
					t.Logf("  %s %s %d", f.kind, f.rel, f.size)
				}
				t.FailNow()
			}
			e = start(t, env.cfg)
			models.checkAll(t, e)
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	unstall()
	fsSettle(t, e, env.walCount)
	models.checkAll(t, e)
	stop(t, e)
	c, ok := env.check(t, "at the end, settled and stopped", nil, 1)
	maxLog = max(maxLog, c.logBytes())
	maxFiles = max(maxFiles, c.nonBlockFiles())
	t.Logf("seed %d, SealThreshold %d: %d ops, %d spaces, %d Stops mid-way, %d settled; end: %s; most log bytes %d, most non-block files %d",
		seed, env.cfg.SealThreshold, ops, len(models.names), cycles, settles+1, c, maxLog, maxFiles)
	if !ok {
		for _, f := range c.all {
			t.Logf("  %s %s %d", f.kind, f.rel, f.size)
		}
	}
	// hot/ and wal/ at rest: one generation a space, the spares, the WAL.
	assert.LessOrEqual(t, maxLog, int64(len(models.names)+hot.DefaultMaxSpares+1)*env.cfg.Preallocate,
		"log bytes at rest beyond (spaces + spares + 1 WAL) × Preallocate")
}

// TestFilesHistorySim: fsHistory on simulated disks, 2 seeds.
func TestFilesHistorySim(t *testing.T) {
	base := envSeed(t, "RINGPIPE_FILES_SEED")
	ops := 1500
	if os.Getenv("RINGPIPE_LONG") != "" {
		ops = 10000
	}
	for k := range int64(2) {
		seed := base + k
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) { fsHistory(t, fsSimEnv(t, seed), seed, ops) })
	}
}

// TestFilesHistoryReal: fsHistory on a real directory; a DirectWriteTimeout
// of 30 µs sends many writes through the staging WAL.
func TestFilesHistoryReal(t *testing.T) {
	seed := envSeed(t, "RINGPIPE_FILES_SEED")
	env := fsRealEnv(t)
	env.cfg.DirectWriteTimeout = 30 * time.Microsecond
	ops := 800
	if os.Getenv("RINGPIPE_LONG") != "" {
		ops = 5000
	}
	fsHistory(t, env, seed, ops)
}

// ---------------------------------------------------------------------
// 2. Crash cycles

// fsVal is one write's outcome at a point: a value, or none (a delete, or
// never written).
type fsVal struct {
	del bool
	v   string
}

// fsPointState is what a point may read: acked, or one of maybe (writes
// after it whose call failed or was cut short by the crash).
type fsPointState struct {
	acked fsVal
	maybe []fsVal
}

// fsCrashModel is one writer's points (each point has one writer, so its
// writes are ordered).
type fsCrashModel map[string]*fsPointState

func fsPKey(space int, p ringpipe.Point) string {
	parts := make([]string, len(p))
	for i, c := range p {
		parts[i] = strconv.FormatUint(uint64(c), 10)
	}
	return fmt.Sprintf("%d:%s", space, strings.Join(parts, ","))
}

func (m fsCrashModel) at(k string) *fsPointState {
	ps := m[k]
	if ps == nil {
		ps = &fsPointState{acked: fsVal{del: true}}
		m[k] = ps
	}
	return ps
}

// fsCrashRun is the state of a crash-cycle run.
type fsCrashRun struct {
	t      *testing.T
	seed   int64
	rng    *rand.Rand
	disk   *sim.Disk
	cfg    ringpipe.Config
	spaces []ringpipe.SpaceID // by index: "c0", "c1", "c2"
	models [2]fsCrashModel
	lost   int // reads outside a point's allowed set
}

// life runs one engine life: Start (true when it worked), a workload of
// two writers on disjoint points until the crash at a random op index
// (power loss or process crash), Stop. When startFault is set, Start
// itself is cut at a random op (and may fail: then nothing else runs).
func (r *fsCrashRun) life(cycle int, startFault bool) bool {
	t := r.t
	kind := "power loss"
	if r.rng.Intn(3) == 0 {
		kind = "process crash"
	}
	cut := func() {
		if kind == "power loss" {
			r.disk.PowerLoss(r.rng)
		} else {
			r.disk.Crash()
		}
	}
	if startFault {
		r.disk.Inject(sim.Fault{Kind: sim.EIO, At: r.disk.OpCount() + 1 + uint64(r.rng.Intn(200)), Persist: true})
	}
	e, err := ringpipe.Start(ctxFor(t), r.cfg)
	if startFault && err != nil {
		cut()
		return false
	}
	if startFault {
		// Start finished before the op the fault waits for: it is a
		// fault of Start's, not of this life's workload or the next
		// Start (a ci run met it there once Start took one op more).
		r.disk.ClearFaults()
	}
	require.NoError(t, err, "cycle %d: Start after a crash", cycle)
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		_ = e.Stop(sctx) // after a crash it reports the crash
	}()
	if !startFault {
		r.verify(e, cycle)
		// The crash left nothing recovery does not account for.
		c := fsListSim(t, r.disk, nil)
		for _, f := range c.of(fsUnknown) {
			assert.Fail(t, "unaccounted file after recovery", "cycle %d: %s (%d bytes)", cycle, f.rel, f.size)
		}
	}
	// Up to three spaces, one more each of the first cycles (a crash may
	// cut a CreateSpace; the next cycle creates the name again).
	for k := range min(3, cycle+1) {
		id, err := e.CreateSpace(ctxFor(t), ringpipe.SpaceSpec{Name: fmt.Sprintf("c%d", k), Dims: fsSpec.Dims, Bits: fsSpec.Bits})
		if err != nil {
			require.True(t, startFault, "cycle %d: CreateSpace c%d: %v", cycle, k, err)
			return true
		}
		if k < len(r.spaces) {
			require.Equal(t, r.spaces[k], id, "cycle %d: CreateSpace c%d of an existing name", cycle, k)
		} else {
			r.spaces = append(r.spaces, id)
		}
	}
	if !startFault && r.rng.Intn(2) == 0 {
		stallHot(r.disk, r.spaces[r.rng.Intn(len(r.spaces))]) // writes go through the staging WAL
	}
	target := r.disk.OpCount() + 30 + uint64(r.rng.Intn(2500))
	quit := make(chan struct{})
	var wg sync.WaitGroup
	spaces := r.spaces
	for w := range 2 {
		m := r.models[w]
		wrng := rand.New(rand.NewSource(r.seed*1000 + int64(cycle)*2 + int64(w)))
		wg.Go(func() {
			ctx := ctxFor(t)
			for i := 0; ; i++ {
				select {
				case <-quit:
					return
				default:
				}
				si := wrng.Intn(len(spaces))
				sp := spaces[si]
				p := fsPoint(2*wrng.Intn(150) + w)
				ps := m.at(fsPKey(si, p))
				var err error
				switch x := wrng.Intn(100); {
				case x < 3:
					err = e.Flush(ctx, sp)
				case x < 5:
					err = e.Sync(ctx)
				case x < 20:
					ps.maybe = append(ps.maybe, fsVal{del: true})
					if _, err = e.Delete(ctx, sp, p); err == nil {
						ps.acked, ps.maybe = fsVal{del: true}, nil
					}
				default:
					v := fmt.Sprintf("%d/%d/%d/%d", r.seed, cycle, w, i)
					ps.maybe = append(ps.maybe, fsVal{v: v})
					val := append([]byte(v), make([]byte, wrng.Intn(1500))...)
					if _, err = e.Put(ctx, sp, p, val); err == nil {
						ps.acked, ps.maybe = fsVal{v: v}, nil
					}
				}
				if err != nil {
					return
				}
			}
		})
	}
	deadline := time.Now().Add(hangTimeout)
	for r.disk.OpCount() < target && time.Now().Before(deadline) {
		time.Sleep(pollEvery)
	}
	cut()
	close(quit)
	lcWait(t, fmt.Sprintf("cycle %d: writers after the %s", cycle, kind), lcDone(&wg))
	return true
}

// verify reads every point the models know and checks it against what
// may be there; what it reads is durable (recovery made it so) and
// becomes the point's acknowledged state.
func (r *fsCrashRun) verify(e *ringpipe.Engine, cycle int) {
	t := r.t
	for w, m := range r.models {
		for k, ps := range m {
			var si int
			var p []uint32
			_, err := fmt.Sscanf(k, "%d:", &si)
			require.NoError(t, err)
			p = parsePointKey(t, k)
			rec, err := e.Get(ctxFor(t), r.spaces[si], p)
			var got fsVal
			switch {
			case errors.Is(err, ringpipe.ErrNotFound):
				got = fsVal{del: true}
			case err != nil:
				require.NoError(t, err, "cycle %d: Get %s", cycle, k)
			default:
				v := string(rec.Value)
				if i := strings.IndexByte(v, 0); i >= 0 {
					v = v[:i]
				}
				got = fsVal{v: v}
			}
			ok := got == ps.acked
			for _, mv := range ps.maybe {
				ok = ok || got == mv
			}
			if !ok {
				r.lost++
				assert.Fail(t, "a point reads what was never its state", "cycle %d, writer %d, point %s: read %+v; acknowledged %+v, maybe %+v",
					cycle, w, k, got, ps.acked, ps.maybe)
			}
			ps.acked, ps.maybe = got, nil
		}
	}
}

// parsePointKey parses the point of a fsPKey.
func parsePointKey(t *testing.T, k string) ringpipe.Point {
	t.Helper()
	_, rest, _ := strings.Cut(k, ":")
	var p ringpipe.Point
	for _, f := range strings.Split(rest, ",") {
		n, err := strconv.ParseUint(f, 10, 32)
		require.NoError(t, err)
		p = append(p, uint32(n))
	}
	return p
}

// fsCrashCycles runs cycles crash cycles on one simulated disk: each life
// is cut by a power loss or a process crash at a random op index (a fifth
// of the time during Start's recovery), with seals at a small
// SealThreshold, frequent manifest compactions, staged writes (a stalled
// hot file) spanning WAL segments, CreateSpace. Every tenth cycle the
// directory is settled, stopped and checked strictly; the log bytes and
// the files other than blocks must stay within fixed bounds over all the
// cycles, while the live data (300 points a space) stays the same size.
func fsCrashCycles(t *testing.T, seed int64, cycles int) {
	defer testhook.SetManifestCompactMin(1 << 10)()
	r := &fsCrashRun{t: t, seed: seed, rng: rand.New(rand.NewSource(seed)), disk: newSimDisk(t, seed)}
	r.models = [2]fsCrashModel{{}, {}}
	r.cfg = simConfig(t, r.disk)
	r.cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel+1))
	r.cfg.Preallocate = 64 << 10
	r.cfg.SealThreshold = 20 + r.rng.Intn(40)
	env := fsSim{disk: r.disk, cfg: r.cfg}
	startFails := 0
	type sample struct {
		cycle          int
		files          int
		logBytes       int64
		blocks         int
		blockBytes     int64
		manifestBytes  int64
		spares, walSeg int
	}
	var samples []sample
	for cycle := range cycles {
		startFault := cycle > 0 && r.rng.Intn(5) == 0
		if !r.life(cycle, startFault) {
			startFails++
		}
		if t.Failed() {
			t.Logf("failed at cycle %d; files: %v", cycle, fsListSim(t, r.disk, nil).names(fsUnknown))
			t.FailNow()
		}
		if cycle%10 != 9 && cycle != cycles-1 {
			continue
		}
		e := start(t, r.cfg)
		r.verify(e, cycle)
		fsSettle(t, e, env.walCount)
		stop(t, e)
		c, ok := env.check(t, fmt.Sprintf("cycle %d, settled and stopped", cycle), nil, 1)
		samples = append(samples, sample{cycle + 1, c.nonBlockFiles(), c.logBytes(), c.count[fsBlock], c.size[fsBlock],
			c.size[fsManifest], c.count[fsSpare], c.count[fsWAL]})
		if !ok {
			for _, f := range c.all {
				t.Logf("  %s %s %d", f.kind, f.rel, f.size)
			}
			t.FailNow()
		}
	}
	for _, s := range samples {
		t.Logf("after %3d cycles: %d non-block files (%d spares, %d WAL), %d log bytes, manifest %d B, %d blocks (%d B)",
			s.cycle, s.files, s.spares, s.walSeg, s.logBytes, s.manifestBytes, s.blocks, s.blockBytes)
	}
	t.Logf("seed %d, SealThreshold %d: %d cycles, %d cut during Start", seed, r.cfg.SealThreshold, cycles, startFails)
	spaces := len(r.spaces)
	for _, s := range samples {
		assert.LessOrEqual(t, s.files, 3+spaces+hot.DefaultMaxSpares+1, "after %d cycles: files other than blocks", s.cycle)
		assert.LessOrEqual(t, s.logBytes, int64(spaces+hot.DefaultMaxSpares+1)*r.cfg.Preallocate, "after %d cycles: log bytes", s.cycle)
		assert.LessOrEqual(t, s.manifestBytes, int64(64<<10), "after %d cycles: the manifest", s.cycle)
	}
	assert.Zero(t, r.lost, "points that read what was never their state")
}

// TestFilesCrashCycles: fsCrashCycles, 2 seeds of 60 cycles
// (RINGPIPE_LONG: 4 of 200).
func TestFilesCrashCycles(t *testing.T) {
	base := envSeed(t, "RINGPIPE_FILES_SEED")
	seeds, cycles := int64(2), 60
	if os.Getenv("RINGPIPE_LONG") != "" {
		seeds, cycles = 4, 200
	}
	for k := range seeds {
		seed := base + k
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) { fsCrashCycles(t, seed, cycles) })
	}
}

// ---------------------------------------------------------------------
// 3. Steady state

// fsSteady overwrites the same 1,000 points of each space round after
// round (8 writers, PutAsync windows of 64) and lists the directory, live,
// after every round. hot/ and wal/ must stay within a small multiple of
// Preallocate × spaces (per space its active generation and one being
// sealed, one more for a rotation in progress, hot's spares, three WAL
// segments) and must not grow from the first half of the rounds to the
// second; blocks grow (no block compaction exists, by design): their
// rate is reported. between, when set, runs before each round (sim:
// stalls); with stagedLive the live bound leaves the WAL out.
func fsSteady(t *testing.T, env *fsEnv, spaces, rounds int, between func(e *ringpipe.Engine, round int, ids []ringpipe.SpaceID),
	stagedLive bool) {
	e := start(t, env.cfg)
	var ids []ringpipe.SpaceID
	for s := range spaces {
		ids = append(ids, createSpace(t, e, fmt.Sprintf("s%d", s), fsSpec.Dims, fsSpec.Bits))
	}
	limit := int64(2*spaces+1+hot.DefaultMaxSpares+3) * env.cfg.Preallocate
	var firstHalf, secondHalf int64
	var first, last fsCensus
	writes := 0
	for round := range rounds {
		if between != nil {
			between(e, round, ids)
		}
		windowedPuts(t, ctxFor(t), e, 8, 64, 0, 1000*spaces, func(i int) (ringpipe.SpaceID, ringpipe.Point, []byte) {
			return ids[i%spaces], fsPoint(i / spaces), fmt.Appendf(nil, "r%d-%d-%090d", round, i, 0)
		})
		writes += 1000 * spaces
		c := env.census(t, nil)
		for _, f := range c.of(fsUnknown) {
			assert.Fail(t, "unaccounted file", "round %d: %s", round, f.rel)
		}
		assert.LessOrEqual(t, c.count[fsSpare], hot.DefaultMaxSpares, "round %d: spares %v", round, c.names(fsSpare))
		bounded := c.logBytes()
		if stagedLive {
			// The staged backlog is live data (bounded by records,
			// actors.maxStaged, not by Preallocate): only hot/ here;
			// the WAL is checked once promotion caught up.
			bounded -= c.alloc[fsWAL]
		}
		assert.LessOrEqual(t, bounded, limit, "round %d: hot/ (and wal/ unless staged) hold %d bytes (%s)", round, bounded, c)
		if round < rounds/2 {
			firstHalf = max(firstHalf, bounded)
		} else {
			secondHalf = max(secondHalf, bounded)
		}
		if round == 0 {
			first = c
		}
		last = c
		if round%10 == 0 || round == rounds-1 || os.Getenv("FS_DEBUG") != "" {
			st := e.Stats()
			t.Logf("round %3d: %s; staged %d, sealed %d", round, c, st.StagedWrites, st.SealedBlocks)
		}
	}
	assert.LessOrEqual(t, secondHalf, firstHalf+env.cfg.Preallocate, "hot/ and wal/ grow under a steady overwrite load")
	blocks := last.count[fsBlock] - first.count[fsBlock]
	bytes := last.size[fsBlock] - first.size[fsBlock]
	t.Logf("steady state, %d spaces × 1,000 points, %d writes: blocks grow by %.2f files and %.0f bytes per 1,000 writes (%.0f bytes a write); live data %d points",
		spaces, writes, float64(blocks)*1000/float64(writes-1000*spaces), float64(bytes)*1000/float64(writes-1000*spaces),
		float64(bytes)/float64(writes-1000*spaces), 1000*spaces)
	fsSettle(t, e, env.walCount)
	stop(t, e)
	c, _ := env.check(t, "after the steady load, settled and stopped", nil, 1)
	t.Logf("settled and stopped: %s", c)
}

// TestFilesSteadyReal: fsSteady on a real directory (io_uring where
// available), 2 spaces, SealThreshold 500, Preallocate 1 MiB.
func TestFilesSteadyReal(t *testing.T) {
	env := fsRealEnv(t)
	env.cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))
	env.cfg.SealThreshold = 500
	rounds := 30
	if os.Getenv("RINGPIPE_LONG") != "" {
		rounds = 300
	}
	fsSteady(t, env, 2, rounds, nil, false)
}

// TestFilesSteadyStagedSim: fsSteady on a simulated disk whose hot files
// are stalled for three rounds out of six, so that a third of the writes
// go through the staging WAL (Preallocate 64 KiB: each stalled round
// spans several WAL segments). At the end of every stalled phase, once
// the promoter alone (no Flush) has promoted everything, the WAL is back
// to its active segment.
func TestFilesSteadyStagedSim(t *testing.T) {
	env := fsSimEnv(t, 311)
	env.cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))
	env.cfg.Preallocate = 64 << 10
	env.cfg.SealThreshold = 500
	rounds := 24
	if os.Getenv("RINGPIPE_LONG") != "" {
		rounds = 120
	}
	maxWAL := 0
	fsSteady(t, env, 2, rounds, func(e *ringpipe.Engine, round int, ids []ringpipe.SpaceID) {
		switch round % 6 {
		case 0:
			stallHot(env.disk, ids[round/6%len(ids)])
		case 3:
			maxWAL = max(maxWAL, env.walCount())
			env.disk.ClearFaults()
			waitFor(t, e, "the promoter promotes every staged write", func(st ringpipe.Stats) bool { return st.StagedPending == 0 })
			deadline := time.Now().Add(eventualTimeout)
			for env.walCount() > 1 && time.Now().Before(deadline) {
				time.Sleep(pollEvery)
			}
			assert.LessOrEqual(t, env.walCount(), 1, "round %d: WAL segments once the promoter promoted everything: %v",
				round, filesUnderDisk(env.disk, simDir+"/wal/"))
		}
	}, true)
	t.Logf("most WAL segments at the end of a stalled phase: %d", maxWAL)
	assert.Greater(t, maxWAL, 1, "the stalled phases spanned WAL segments (the test's premise)")
}

// ---------------------------------------------------------------------
// 2b. kill -9 of a child process on a real directory

// fsKillEnv names the directory a child engine runs in (TestFilesKillChild).
const fsKillEnv = "RINGPIPE_FILES_KILL_DIR"

// TestFilesKillChild is the child of TestFilesKill9: it runs only when
// fsKillEnv names a directory. It starts an engine there (io_uring where
// available, SealThreshold 40, a DirectWriteTimeout of 50 µs so that
// writes also go through the staging WAL, manifest compactions frequent),
// prints "ready", and writes until it is killed: two writers on disjoint
// points of spaces a and b, each Put and Delete announced ("try w key
// value") before it is made and reported ("ack w key value") once it
// returned nil, and now and then a Flush.
func TestFilesKillChild(t *testing.T) {
	dir := os.Getenv(fsKillEnv)
	if dir == "" {
		t.Skip("the child of TestFilesKill9")
	}
	defer testhook.SetManifestCompactMin(2 << 10)()
	cfg := ringpipe.Config{Dir: dir, Preallocate: 64 << 10, SealThreshold: 40, DirectWriteTimeout: 50 * time.Microsecond}
	e, err := ringpipe.Start(context.Background(), cfg)
	if err != nil {
		fmt.Printf("start failed: %v\n", err)
		os.Exit(3)
	}
	ctx := context.Background()
	var ids []ringpipe.SpaceID
	for _, n := range []string{"a", "b"} {
		id, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: n, Dims: fsSpec.Dims, Bits: fsSpec.Bits})
		if err != nil {
			fmt.Printf("create space failed: %v\n", err)
			os.Exit(3)
		}
		ids = append(ids, id)
	}
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	say("ready")
	seed := time.Now().UnixNano()
	var wg sync.WaitGroup
	for w := range 2 {
		rng := rand.New(rand.NewSource(seed + int64(w)))
		wg.Go(func() {
			for i := 0; ; i++ {
				si := rng.Intn(2)
				p := fsPoint(2*rng.Intn(200) + w)
				key := fsPKey(si, p)
				switch x := rng.Intn(100); {
				case x < 2:
					if err := e.Flush(ctx, ids[si]); err != nil {
						say("error flush %v", err)
						os.Exit(4)
					}
				case x < 15:
					say("try %d %s -", w, key)
					if _, err := e.Delete(ctx, ids[si], p); err != nil {
						say("error delete %v", err)
						os.Exit(4)
					}
					say("ack %d %s -", w, key)
				default:
					v := fmt.Sprintf("k%d-%d-%d", seed, w, i)
					say("try %d %s %s", w, key, v)
					if _, err := e.Put(ctx, ids[si], p, append([]byte(v), make([]byte, rng.Intn(1000))...)); err != nil {
						say("error put %v", err)
						os.Exit(4)
					}
					say("ack %d %s %s", w, key, v)
				}
			}
		})
	}
	wg.Wait()
}

// TestFilesKill9: 20 times (RINGPIPE_LONG: 100), a child process writing
// under load on a real directory (TestFilesKillChild) is killed with
// SIGKILL at a random moment; then this process starts the engine: every
// point reads its last acknowledged state or a later attempt, and after a
// settle and a Stop the directory holds only what the layout accounts for
// (fsCheck), with files and log bytes other than blocks within fixed
// bounds over all the kills.
func TestFilesKill9(t *testing.T) {
	if os.Getenv(fsKillEnv) != "" {
		t.Skip("in the child")
	}
	kills := 20
	if os.Getenv("RINGPIPE_LONG") != "" {
		kills = 100
	}
	seed := envSeed(t, "RINGPIPE_FILES_SEED")
	rng := rand.New(rand.NewSource(seed))
	cfg := realConfig(t, ringpipe.BackendAuto)
	cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel))
	cfg.Preallocate = 64 << 10
	models := [2]fsCrashModel{{}, {}}
	var maxLog int64
	maxFiles := 0
	var blocksAt []int
	for kill := range kills {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFilesKillChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), fsKillEnv+"="+cfg.Dir)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		lines := make(chan string, 1024)
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			defer close(lines)
			buf := make([]byte, 0, 64<<10)
			chunk := make([]byte, 32<<10)
			for {
				n, err := out.Read(chunk)
				buf = append(buf, chunk[:n]...)
				for {
					i := strings.IndexByte(string(buf), '\n')
					if i < 0 {
						break
					}
					lines <- string(buf[:i])
					buf = buf[i+1:]
				}
				if err != nil {
					return
				}
			}
		}()
		// Wait for "ready", then let it write for a random while.
		var ready bool
		var bad []string
		timeout := time.After(hangTimeout)
	wait:
		for !ready {
			select {
			case l, ok := <-lines:
				if !ok {
					break wait
				}
				if l == "ready" {
					ready = true
				} else {
					bad = append(bad, l)
				}
			case <-timeout:
				break wait
			}
		}
		if !ready {
			_ = cmd.Process.Kill()
			<-readDone
			_ = cmd.Wait()
			require.Fail(t, "the child never got ready", "kill %d: %v", kill, bad)
		}
		killAt := time.After(time.Duration(100+rng.Intn(500)) * time.Millisecond)
		applied := 0
		apply := func(l string) {
			f := strings.Fields(l)
			if len(f) != 4 || (f[0] != "try" && f[0] != "ack") {
				bad = append(bad, l)
				return
			}
			w, _ := strconv.Atoi(f[1])
			ps := models[w].at(f[2])
			v := fsVal{v: f[3]}
			if f[3] == "-" {
				v = fsVal{del: true}
			}
			if f[0] == "try" {
				ps.maybe = append(ps.maybe, v)
			} else {
				ps.acked, ps.maybe = v, nil
				applied++
			}
		}
	run:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break run
				}
				apply(l)
			case <-killAt:
				require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
				break run
			}
		}
		for l := range lines {
			apply(l)
		}
		<-readDone
		werr := cmd.Wait()
		require.Empty(t, bad, "kill %d: the child said something else (exit %v)", kill, werr)

		// This process recovers and checks.
		e := start(t, cfg)
		ids := map[string]ringpipe.SpaceID{}
		for _, s := range e.Spaces() {
			ids[s.Name] = s.ID
		}
		require.Len(t, ids, 2, "kill %d: spaces", kill)
		lost := 0
		for w, m := range models {
			for k, ps := range m {
				var si int
				_, err := fmt.Sscanf(k, "%d:", &si)
				require.NoError(t, err)
				rec, err := e.Get(ctxFor(t), ids[[]string{"a", "b"}[si]], parsePointKey(t, k))
				var got fsVal
				switch {
				case errors.Is(err, ringpipe.ErrNotFound):
					got = fsVal{del: true}
				case err != nil:
					require.NoError(t, err)
				default:
					v := string(rec.Value)
					if i := strings.IndexByte(v, 0); i >= 0 {
						v = v[:i]
					}
					got = fsVal{v: v}
				}
				ok := got == ps.acked
				for _, mv := range ps.maybe {
					ok = ok || got == mv
				}
				if !ok && lost < 5 {
					assert.Fail(t, "a point reads what was never its state", "kill %d, writer %d, point %s: read %+v; acknowledged %+v, maybe %+v",
						kill, w, k, got, ps.acked, ps.maybe)
				}
				if !ok {
					lost++
				}
				ps.acked, ps.maybe = got, nil
			}
		}
		fsSettle(t, e, fsWALCountReal(cfg.Dir))
		stop(t, e)
		c, ok := fsCheckReal(t, fmt.Sprintf("kill %d, recovered, settled and stopped", kill), cfg, nil, 1)
		maxLog = max(maxLog, c.logBytes())
		maxFiles = max(maxFiles, c.nonBlockFiles())
		blocksAt = append(blocksAt, c.count[fsBlock])
		if !ok || lost > 0 {
			t.Logf("kill %d: %s", kill, c)
			t.FailNow()
		}
		if kill == 0 || kill == kills-1 {
			t.Logf("kill %d (%d writes acknowledged this life): %s", kill, applied, c)
		}
	}
	t.Logf("%d kills: at most %d files other than blocks and %d log bytes; blocks %v", kills, maxFiles, maxLog, blocksAt)
	assert.LessOrEqual(t, maxFiles, 3+2+hot.DefaultMaxSpares+1, "files other than blocks")
	assert.LessOrEqual(t, maxLog, int64(2+hot.DefaultMaxSpares+1)*cfg.Preallocate, "log bytes at rest")
}

// ---------------------------------------------------------------------
// 5b. Preallocate lowered

// TestFilesPreallocateLowered: an engine that staged writes with
// Preallocate 1 MiB (its WAL segment and hot files of that size) is
// started again with Preallocate 64 KiB, as README's "start with the old
// size, Flush every space, then lower it" says, and runs writes, Flushes
// and a settle; nothing is staged in the new life (the disk is fast).
// Stopped and idle, its log files should be of the Preallocate it runs
// with: what it holds in hot/ and wal/ is bounded by (spaces + spares +
// 1 WAL) × the new Preallocate.
// Fixed: before, the stopped directory kept wal/…1.log at the old 1 MiB
// for good (16x the new size): the active WAL segment was never rolled or
// shrunk (deterministic).
func TestFilesPreallocateLowered(t *testing.T) {
	env := fsSimEnv(t, 321)
	env.cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))
	env.cfg.Preallocate = 1 << 20
	e := start(t, env.cfg)
	sp := createSpace(t, e, "a", fsSpec.Dims, fsSpec.Bits)
	stallHot(env.disk, sp)
	for i := range 100 {
		_, err := e.Put(ctxFor(t), sp, fsPoint(i), []byte("staged"))
		require.NoError(t, err)
	}
	require.Positive(t, e.Stats().StagedWrites, "writes were staged")
	env.disk.ClearFaults()
	fsSettle(t, e, env.walCount)
	stop(t, e)
	c0 := env.census(t, nil)
	t.Logf("Preallocate 1 MiB, settled: %s", c0)
	require.Equal(t, 1, c0.count[fsWAL], "one WAL segment")

	env.cfg.Preallocate = 64 << 10
	e = start(t, env.cfg)
	for round := range 5 {
		for i := range 100 {
			_, err := e.Put(ctxFor(t), sp, fsPoint(i), fmt.Appendf(nil, "r%d", round))
			require.NoError(t, err)
		}
		require.NoError(t, e.Flush(ctxFor(t), sp))
	}
	assert.Zero(t, e.Stats().StagedWrites, "nothing staged in the new life")
	fsSettle(t, e, env.walCount)
	stop(t, e)
	c, _ := env.check(t, "Preallocate lowered to 64 KiB, 5 Flushes, settled and stopped", nil, 1)
	t.Logf("Preallocate 64 KiB, settled: %s", c)
	for _, f := range c.of(fsWAL) {
		t.Logf("%s: %d bytes", f.rel, f.size)
	}
	assert.LessOrEqual(t, c.logBytes(), int64(1+hot.DefaultMaxSpares+1)*env.cfg.Preallocate,
		"hot/ and wal/ of a stopped engine after Preallocate was lowered")
}

// ---------------------------------------------------------------------
// 2c. Disk full

// fsDiskFull runs two writers (Puts into two spaces, one of them stalled
// so that writes go through the staging WAL too, and Flushes) on a
// simulated disk that answers ENOSPC to writes and fallocates with
// probability prob for period; then space returns. It returns the engine,
// still running, the models and whether a Put after space returned
// failed (and with what).
func fsDiskFull(t *testing.T, env *fsEnv, seed int64, prob float64, period time.Duration) (*ringpipe.Engine, []ringpipe.SpaceID, [2]fsCrashModel, error) {
	env.cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel+1))
	env.cfg.Preallocate = 64 << 10
	env.cfg.SealThreshold = 30
	e := start(t, env.cfg)
	ids := []ringpipe.SpaceID{createSpace(t, e, "a", fsSpec.Dims, fsSpec.Bits), createSpace(t, e, "b", fsSpec.Dims, fsSpec.Bits)}
	stallHot(env.disk, ids[0])
	env.disk.Inject(sim.Fault{Kind: sim.ENOSPC, Prob: prob, Persist: true,
		Ops: []ring.Opcode{ring.OpWrite, ring.OpWritev, ring.OpFallocate}})
	models := [2]fsCrashModel{{}, {}}
	var nENOSPC atomic.Int64
	var other sync.Map
	quit := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		m := models[w]
		wrng := rand.New(rand.NewSource(seed*10 + int64(w)))
		wg.Go(func() {
			ctx := ctxFor(t)
			for i := 0; ; i++ {
				select {
				case <-quit:
					return
				default:
				}
				si := wrng.Intn(2)
				p := fsPoint(2*wrng.Intn(100) + w)
				ps := m.at(fsPKey(si, p))
				var err error
				if wrng.Intn(20) == 0 {
					err = e.Flush(ctx, ids[si])
				} else {
					v := fmt.Sprintf("%d-%d-%d", seed, w, i)
					ps.maybe = append(ps.maybe, fsVal{v: v})
					if _, err = e.Put(ctx, ids[si], p, append([]byte(v), make([]byte, wrng.Intn(800))...)); err == nil {
						ps.acked, ps.maybe = fsVal{v: v}, nil
					}
				}
				switch {
				case err == nil:
				case errors.Is(err, syscall.ENOSPC):
					nENOSPC.Add(1)
				case errors.Is(err, ringpipe.ErrFailed):
					return
				default:
					other.Store(err.Error(), true)
				}
			}
		})
	}
	time.Sleep(period)
	env.disk.ClearFaults() // the stall too
	time.Sleep(50 * time.Millisecond)
	close(quit)
	lcWait(t, "writers", lcDone(&wg))
	other.Range(func(k, _ any) bool { t.Logf("a call failed otherwise: %v", k); return true })
	st := e.Stats()
	t.Logf("calls that failed with ENOSPC: %d; actor restarts %v, sealed %d, staged %d", nENOSPC.Load(), st.ActorRestarts, st.SealedBlocks, st.StagedWrites)
	_, err := e.Put(ctxFor(t), ids[1], fsPoint(3000), []byte("after"))
	return e, ids, models, err
}

// TestFilesDiskFull: writers run while the simulated disk answers ENOSPC
// to a fifth of the writes and fallocates (WAL segment creation, hot
// generation creation, block and manifest writes) for 300 ms; then space
// returns. If the engine goes on (see TestFilesDiskFullClears), the same
// engine settles without a restart and its directory holds no partial
// block, no stray file; in any case, after a Stop the directory holds
// only what the layout accounts for (temporary files of writes cut short
// aside), and the next Start cleans those, loses no acknowledged write,
// and settles to the layout.
func TestFilesDiskFull(t *testing.T) {
	for _, seed := range []int64{331, 332, 333} {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			env := fsSimEnv(t, seed)
			e, ids, models, perr := fsDiskFull(t, env, seed, 0.2, 300*time.Millisecond)
			if perr == nil {
				fsSettle(t, e, env.walCount)
				c := env.census(t, nil)
				t.Logf("settled, running on: %s", c)
				for _, f := range c.of(fsTmp) {
					assert.Fail(t, "temporary file left while the engine runs on", "%s (%d bytes)", f.rel, f.size)
				}
				stop(t, e)
				c, _ = env.check(t, "settled after disk full and stopped", nil, 1)
			} else {
				t.Logf("a Put after space returned: %v", perr)
				if err := e.Stop(ctxFor(t)); err != nil {
					t.Logf("Stop of the failed engine: %v", err)
				}
				c := env.census(t, nil)
				t.Logf("stopped: %s", c)
				for _, f := range c.of(fsUnknown) {
					assert.Fail(t, "unaccounted file", "%s", f.rel)
				}
				assert.LessOrEqual(t, c.count[fsSpare], hot.DefaultMaxSpares)
			}
			e = start(t, env.cfg)
			rm := &fsCrashRun{t: t, spaces: ids, models: models}
			rm.verify(e, 0)
			fsSettle(t, e, env.walCount)
			stop(t, e)
			c, _ := env.check(t, "restarted, settled and stopped", nil, 1)
			t.Logf("restarted: %s", c)
		})
	}
}

// TestFilesDiskFullClears: a disk that answers ENOSPC to a fifth of
// writes for 400 ms during seals does not fail the engine; writes resume
// when space returns (DESIGN.md §5). Fixed: before, each manifest append
// or rewrite that met ENOSPC failed the sealer, and 6 in 10 s escalated to
// ErrFailed for good (8 of 9 subtests over 3 runs). Its sibling
// TestFilesDiskFull then reached its running-on checks, which found the
// failed attempts' MANIFEST-N.tmp files, old manifests and unnamed blocks
// left for the engine's life (now removed: ring.WriteFileAtomic,
// Manifest.switchTo, Sealer.removeUnnamed).
func TestFilesDiskFullClears(t *testing.T) {
	for _, tc := range []struct {
		seed int64
		prob float64
	}{{341, 0.2}, {342, 0.3}, {343, 0.2}} {
		t.Run(fmt.Sprintf("seed%d-p%v", tc.seed, tc.prob), func(t *testing.T) {
			env := fsSimEnv(t, tc.seed)
			e, _, _, err := fsDiskFull(t, env, tc.seed, tc.prob, 400*time.Millisecond)
			assert.NoError(t, err, "DESIGN.md §5: disk full is reported to writers and clears when space returns; a Put after it")
			if err := e.Stop(ctxFor(t)); err != nil {
				t.Logf("Stop: %v", err)
			}
		})
	}
}
