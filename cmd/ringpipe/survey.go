package main

import (
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/hot"
	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/snapshot"
	"github.com/ringpipe/ringpipe/wal"
)

// A survey is everything inspect and verify read from a directory, read
// the way recovery (recovery.go) reads it, but without changing anything:
// the manifest through CURRENT, every block the manifest names, every hot
// generation, every staging WAL segment. All I/O goes through a ring (the
// std backend: it works on every kernel, and the survey is not a benchmark).
type survey struct {
	dir string
	d   ring.Doer

	man    snapshot.ManifestReport
	manErr error    // damage in CURRENT or the manifest; man.State is what came before it
	stale  []string // top-level files recovery removes: old manifests, temporary files

	blocks  []blockCheck
	orphans []string // block files (relative paths) the manifest does not name: recovery removes them
	foreign []string // files in block directories of names the engine does not write: recovery leaves them
	// orphanErr is the damage recovery finds in a block the manifest does
	// not name but whose records are nowhere else (snapshot.CheckOrphans):
	// a lost manifest edit, or a damaged hot generation. Recovery refuses.
	orphanErr []error
	strays    []string // block directories of no known space: recovery ignores them

	gens   []genCheck
	spares []hot.Gen // retired hot files kept for reuse: stale content by design, not read

	wal    []wal.SegmentReport
	walErr error // listing the WAL failed

	// staged counts, per space, the WAL records that no live hot
	// generation and no block holds: what recovery stages again and the
	// promoter will copy into hot segments.
	staged map[messages.SpaceID]int
}

// blockCheck is a block the manifest names and what opening it found.
type blockCheck struct {
	meta snapshot.BlockMeta
	gen  uint64 // the hot generation sealed into it (0: unknown, or none)
	file string // relative to the directory
	err  error  // nil: the file is that block, every checksum verified
	// unnamed: not in the manifest, which is damaged; meta is the file's
	// own and only its own checksums were verified.
	unnamed bool
}

// genCheck is a hot generation and how recovery treats it.
type genCheck struct {
	hot.GenReport
	unknown bool // of no space the manifest knows: recovery leaves it alone (not scanned)
	sealed  bool // the manifest says it is sealed into blocks: recovery deletes it
	active  bool // its space's newest generation: appends go there
}

// dirCommand runs inspect or verify: one argument, a directory, opened and
// locked, surveyed, handed to fn.
func (a *app) dirCommand(name string, args []string, fn func(*survey) int) int {
	fs := flag.NewFlagSet("ringpipe "+name, flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: ringpipe %s DIR\n\nReads DIR and changes nothing. It takes DIR's lock while it reads, so it\n"+
			"refuses a directory a running engine holds (stop the engine first).\n", name)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return a.fail(name, fmt.Errorf("%w: want one directory, got %d arguments", errUsage, fs.NArg()))
	}
	s, done, err := openSurvey(fs.Arg(0))
	if err != nil {
		return a.fail(name, err)
	}
	defer done()
	return fn(s)
}

// openSurvey opens and locks dir and surveys it; done releases the lock
// and the ring.
func openSurvey(dir string) (*survey, func(), error) {
	r, err := ring.New(ring.Options{Kind: ring.Std})
	if err != nil {
		return nil, nil, err
	}
	d := ring.NewSync(r)
	lockFD := int32(-1)
	release := func() {
		if lockFD >= 0 {
			ring.Close(d, lockFD) //nolint:errcheck // read-only; closing releases the flock
		}
		r.Close() //nolint:errcheck // nothing in flight
	}
	s, err := surveyLocked(d, dir, &lockFD)
	if err != nil {
		release()
		return nil, nil, err
	}
	return s, release, nil
}

// surveyLocked locks dir (setting *lockFD to the LOCK file's fd, which
// the caller closes) and surveys it.
func surveyLocked(d ring.Doer, dir string, lockFD *int32) (*survey, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: an empty directory name", errUsage)
	}
	if _, err := ring.ReadDir(d, dir); err != nil {
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil, fmt.Errorf("%s: no such directory", dir)
		case errors.Is(err, unix.ENOTDIR):
			return nil, fmt.Errorf("%s: not a directory", dir)
		}
		return nil, err
	}
	// The lock: LOCK opened read-only (flock needs no write access) and
	// never created. Without a LOCK no engine has run here, so there is
	// nothing to exclude (an engine starting now would create it).
	fd, err := ring.Open(d, filepath.Join(dir, "LOCK"), unix.O_RDONLY, 0)
	switch {
	case err == nil:
		*lockFD = fd
		if _, err := ring.Do1(d, ring.Op{Code: ring.OpLock, FD: fd}); err != nil {
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, fmt.Errorf("%w: %s (stop the engine first)", ringpipe.ErrLocked, dir)
			}
			return nil, fmt.Errorf("lock %s: %w", dir, err)
		}
	case !errors.Is(err, unix.ENOENT):
		return nil, fmt.Errorf("open %s: %w", filepath.Join(dir, "LOCK"), err)
	}
	s := &survey{dir: dir, d: d, staged: map[messages.SpaceID]int{}}
	if err := s.read(); err != nil {
		return nil, err
	}
	return s, nil
}

// read fills s. It returns an error only when dir is not a ringpipe
// directory or cannot be listed; damage is recorded in s.
func (s *survey) read() error {
	s.man, s.manErr = snapshot.ScanManifest(s.d, s.dir)
	if errors.Is(s.manErr, snapshot.ErrNoManifest) {
		return fmt.Errorf("%s: not a ringpipe directory (no CURRENT)", s.dir)
	}
	st := s.man.State
	// A damaged manifest's state is what came before the damage: spaces
	// and blocks it does not know may be real.
	trusted := s.manErr == nil
	names, err := ring.ReadDir(s.d, s.dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		if (strings.HasPrefix(n, "MANIFEST-") && n != s.man.Name) || strings.HasSuffix(n, ".tmp") {
			s.stale = append(s.stale, n)
		}
	}

	// Hot generations, keeping the revisions of the live ones (for the
	// staged count below).
	hotDir := filepath.Join(s.dir, "hot")
	gens, err := hot.List(s.d, hotDir)
	if err != nil {
		return err
	}
	live := map[messages.SpaceID]map[messages.Revision]bool{}
	for i, g := range gens {
		c := genCheck{GenReport: hot.GenReport{Gen: g, Name: filepath.Join("hot", g.FileName())}}
		c.active = i == len(gens)-1 || gens[i+1].Space != g.Space
		if _, ok := st.Space(g.Space); !ok {
			if trusted {
				c.unknown = true
			} else {
				// The damaged manifest may well know the space:
				// check the frames all the same.
				c.GenReport = hot.Inspect(s.d, hot.Options{Dir: hotDir}, g, nil)
			}
			s.gens = append(s.gens, c)
			continue
		}
		sealedGen, _ := st.SealedGen(g.Space)
		c.sealed = g.Gen <= sealedGen
		var note func(int64, messages.Record) error
		if !c.sealed {
			revs := live[g.Space]
			if revs == nil {
				revs = map[messages.Revision]bool{}
				live[g.Space] = revs
			}
			note = func(_ int64, r messages.Record) error { revs[r.Revision] = true; return nil }
		}
		c.GenReport = hot.Inspect(s.d, hot.Options{Dir: hotDir}, g, note)
		s.gens = append(s.gens, c)
	}
	if s.spares, err = hot.ListSpares(s.d, hotDir); err != nil {
		return err
	}

	// The staging WAL: candidates for the staged count are the records of
	// a known space that no live hot generation holds.
	type cand struct {
		rec messages.Record
		key uint64
	}
	cands := map[messages.SpaceID][]*cand{}
	s.wal, s.walErr = wal.Inspect(s.d, filepath.Join(s.dir, "wal"), "wal", func(_ uint64, _ int64, r messages.Record) error {
		info, ok := st.Space(r.Space)
		if !ok || live[r.Space][r.Revision] {
			return nil
		}
		cands[r.Space] = append(cands[r.Space], &cand{rec: r, key: snapshot.Key(r.Point, info.Dims, info.Bits)})
		return nil
	})

	var unnamed []string // block files the manifest does not name
	// Blocks, one at a time (each is read whole into memory): verified
	// against the manifest, and asked for the staged candidates (a record
	// a block holds at its revision or a newer one is sealed already).
	for _, info := range st.Spaces() {
		bdir := snapshot.BlockDir(s.dir, info.ID)
		files, err := ring.ReadDir(s.d, bdir)
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
		named := map[string]bool{}
		for _, meta := range st.Index(info.ID).Blocks() {
			named[filepath.Base(snapshot.BlockPath(s.dir, info.ID, meta.ID))] = true
		}
		// A block file the manifest does not name is judged as recovery
		// judges it (snapshot.CheckOrphans), which asks whether its
		// records are in a named block: those are kept open for it, only
		// for a space that has such a file.
		keep := false
		for _, f := range files {
			keep = keep || !named[f]
		}
		var kept []*snapshot.Block
		for _, meta := range st.Index(info.ID).Blocks() {
			path := snapshot.BlockPath(s.dir, info.ID, meta.ID)
			c := blockCheck{meta: meta, file: s.rel(path)}
			b, err := snapshot.OpenBlockFor(s.d, s.dir, meta)
			c.err = err
			if err == nil {
				c.gen = b.Gen()
				if keep {
					kept = append(kept, b)
				}
			}
			s.blocks = append(s.blocks, c)
			if err != nil {
				continue
			}
			left := cands[info.ID][:0]
			for _, k := range cands[info.ID] {
				// b is verified whole and in memory: Get cannot fail.
				if ok, err := b.Supersedes(k.key, k.rec); err == nil && ok {
					continue
				}
				left = append(left, k)
			}
			cands[info.ID] = left
		}
		if !keep {
			continue
		}
		if trusted {
			s.checkOrphans(info, live[info.ID], kept)
			continue
		}
		for _, f := range files {
			if !named[f] {
				unnamed = append(unnamed, filepath.Join(bdir, f))
			}
		}
	}
	dirs, err := ring.ReadDir(s.d, filepath.Join(s.dir, "blocks"))
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	for _, n := range dirs {
		id, perr := strconv.ParseUint(n, 10, 32)
		if _, ok := st.Space(messages.SpaceID(id)); perr == nil && ok {
			continue
		}
		if trusted {
			s.strays = append(s.strays, filepath.Join("blocks", n))
			continue
		}
		files, err := ring.ReadDir(s.d, filepath.Join(s.dir, "blocks", n))
		if err != nil {
			return err
		}
		for _, f := range files {
			unnamed = append(unnamed, filepath.Join(s.dir, "blocks", n, f))
		}
	}
	for _, path := range unnamed {
		// The manifest is damaged: checked against its own checksum only.
		c := blockCheck{file: s.rel(path), unnamed: true}
		b, err := snapshot.OpenBlock(s.d, path)
		if c.err = err; err == nil {
			c.meta, c.gen = b.Meta(), b.Gen()
		}
		s.blocks = append(s.blocks, c)
	}
	for id, cs := range cands {
		if len(cs) > 0 {
			s.staged[id] = len(cs)
		}
	}
	return nil
}

// checkOrphans sorts the files of info's block directory that the
// manifest does not name as recovery does: removable (a seal cut short,
// an unreadable block, a temporary file), foreign (left alone), or damage
// recovery refuses. live holds the revisions of the space's live hot
// generations, named its blocks the manifest names.
func (s *survey) checkOrphans(info messages.SpaceInfo, live map[messages.Revision]bool, named []*snapshot.Block) {
	check := snapshot.OrphanCheck{
		Held: func(r messages.Record) (bool, error) {
			if live[r.Revision] {
				return true, nil
			}
			key := snapshot.Key(r.Point, info.Dims, info.Bits)
			for _, b := range named {
				if ok, err := b.Supersedes(key, r); ok || err != nil {
					return ok, err
				}
			}
			return false, nil
		},
		Live: func(gen uint64) (string, int64, bool) {
			for _, g := range s.gens {
				if g.Gen.Space == info.ID && g.Gen.Gen == gen && !g.sealed && !g.unknown {
					return g.Name, g.Bytes, true
				}
			}
			return "", 0, false
		},
	}
	rep, remove, err := snapshot.CheckOrphans(s.d, s.dir, s.man, info.ID, check)
	if err != nil {
		s.orphanErr = append(s.orphanErr, err)
		return
	}
	for _, n := range remove {
		s.orphans = append(s.orphans, s.rel(filepath.Join(snapshot.BlockDir(s.dir, info.ID), n)))
	}
	s.foreign = append(s.foreign, rep.Foreign...)
}

// rel returns path relative to the directory, as reports name files.
func (s *survey) rel(path string) string {
	if r, err := filepath.Rel(s.dir, path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return path
}

// finding is one line of verify's report.
type finding struct {
	file    string
	offset  int64 // -1: not about one place in the file
	what    string
	warning bool // not damage: recovery handles it
}

func (f finding) String() string {
	prefix := ""
	if f.warning {
		prefix = "warning: "
	}
	if f.offset < 0 {
		return fmt.Sprintf("%s: %s%s", f.file, prefix, f.what)
	}
	return fmt.Sprintf("%s: offset %d: %s%s", f.file, f.offset, prefix, f.what)
}

// damage turns an error about file into a finding: a CorruptionError gives
// its own file and offset.
func (s *survey) damage(file string, err error, warning bool) finding {
	var ce *ringpipe.CorruptionError
	if errors.As(err, &ce) {
		return finding{file: s.rel(ce.Path), offset: ce.Offset, what: ce.Reason, warning: warning}
	}
	if errors.Is(err, unix.ENOENT) {
		return finding{file: file, offset: -1, what: "missing", warning: warning}
	}
	return finding{file: file, offset: -1, what: err.Error(), warning: warning}
}

// findings lists every damage and warning, in the order recovery meets
// them, and how many files were read.
func (s *survey) findings() (fs []finding, files int) {
	files = 1 // CURRENT
	if s.man.Name != "" {
		files++
	}
	if s.manErr != nil {
		fs = append(fs, s.damage(s.man.Name, s.manErr, false))
	} else if s.man.Result.Torn {
		fs = append(fs, finding{file: s.man.Name, offset: s.man.Result.End, warning: true,
			what: "torn tail: the last edit was cut short (recovery drops it and rewrites the manifest)"})
	}
	for _, n := range s.stale {
		fs = append(fs, finding{file: n, offset: -1, warning: true, what: "left by an interrupted manifest switch (recovery removes it)"})
	}
	for _, b := range s.blocks {
		files++
		if b.err != nil {
			f := s.damage(b.file, b.err, false)
			if f.what == "missing" {
				f.what = "missing: the manifest names this block"
			}
			fs = append(fs, f)
		}
	}
	for _, o := range s.orphans {
		fs = append(fs, finding{file: o, offset: -1, warning: true, what: "block the manifest does not name (recovery removes it)"})
	}
	for _, err := range s.orphanErr {
		fs = append(fs, s.damage(s.man.Name, err, false))
	}
	for _, f := range s.foreign {
		fs = append(fs, finding{file: f, offset: -1, warning: true, what: "not a file the engine writes (recovery leaves it alone)"})
	}
	for _, d := range s.strays {
		fs = append(fs, finding{file: d, offset: -1, warning: true, what: "blocks of a space the manifest does not know (recovery ignores them)"})
	}
	for _, g := range s.gens {
		if g.unknown {
			fs = append(fs, finding{file: g.Name, offset: -1, warning: true,
				what: fmt.Sprintf("hot generation of space %d, which the manifest does not know (recovery leaves it alone)", g.Gen.Space)})
			continue
		}
		files++
		which := "older hot generation"
		if g.active {
			which = "active hot generation"
		}
		switch {
		case g.sealed && (g.Err != nil || g.Result.Torn):
			f := finding{file: g.Name, offset: g.Result.End, warning: true,
				what: "damaged sealed hot generation (its records are in blocks; recovery deletes it)"}
			if g.Err != nil {
				f = s.damage(g.Name, g.Err, true)
				f.what += " (in a sealed hot generation: its records are in blocks; recovery deletes it)"
			}
			fs = append(fs, f)
		case g.Err != nil:
			fs = append(fs, s.damage(g.Name, g.Err, false))
		case g.Result.Torn:
			fs = append(fs, finding{file: g.Name, offset: g.Result.End, warning: true,
				what: fmt.Sprintf("torn tail of the %s: a last write cut short, never acknowledged (recovery truncates it)", which)})
		}
	}
	if s.walErr != nil {
		fs = append(fs, s.damage("wal", s.walErr, false))
	}
	for _, w := range s.wal {
		files++
		switch {
		case w.Err != nil:
			fs = append(fs, s.damage(w.Name, w.Err, false))
		case w.Result.Torn:
			which := "last WAL segment"
			if !w.Active {
				which = "WAL segment (only empty segments follow)"
			}
			fs = append(fs, finding{file: w.Name, offset: w.Result.End, warning: true,
				what: fmt.Sprintf("torn tail of the %s: a last write cut short, never acknowledged (recovery truncates it)", which)})
		}
	}
	return fs, files
}
