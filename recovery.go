package ringpipe

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/actors"
	"github.com/ringpipe/ringpipe/hot"
	"github.com/ringpipe/ringpipe/internal/latency"
	"github.com/ringpipe/ringpipe/livetail"
	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/snapshot"
	"github.com/ringpipe/ringpipe/wal"
)

// recovered is what recovery opened, for closing if it fails halfway.
type recovered struct {
	man  *snapshot.Manifest
	wal  *wal.WAL
	segs []*hot.Segment
}

// recover runs crash recovery (DESIGN.md, "Crash recovery") and builds the
// actors from what it found: lock the directory, load and verify the
// manifest and every block it names (removing orphaned block files),
// replay every unsealed hot generation (retiring those the manifest says
// are sealed), replay the staging WAL (records not in any hot generation
// are staged again), and resume revisions above the highest found.
// Recovery changes files only in ways a second recovery repeats
// identically, so a crash during it is harmless.
func (e *engine) recover(ctx context.Context) (_ *recovered, err error) {
	cfg := e.cfg
	rec := &recovered{}
	segDoer := actors.NewDoer(e.sd) // the manifest's and the segments' (the sealer's)
	walDoer := actors.NewDoer(e.sd) // the WAL's (the submitter's)
	e.doers = []*actors.Doer{segDoer, walDoer}

	if err := ring.MkdirAllDurable(e.sd, cfg.Dir); err != nil {
		return rec, fmt.Errorf("create the directory: %w", err)
	}
	lockPath := filepath.Join(cfg.Dir, "LOCK")
	fd, err := ring.Open(e.sd, lockPath, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	if errors.Is(err, syscall.ENOTDIR) {
		return rec, fmt.Errorf("Config.Dir is not a directory: %w", err)
	}
	if err != nil {
		return rec, fmt.Errorf("open the lock file: %w", err)
	}
	e.lockFD = fd
	if _, err := ring.Do1(e.sd, ring.Op{Code: ring.OpLock, FD: fd}); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return rec, fmt.Errorf("%w: %s", ErrLocked, cfg.Dir)
		}
		return rec, fmt.Errorf("lock %s: %w", lockPath, err)
	}
	if err := ctx.Err(); err != nil {
		return rec, err
	}
	if cfg.DirectIO && cfg.NewRing == nil { // a test ring's files are not the process's
		if err := checkDirectIO(cfg.Dir); err != nil {
			return rec, err
		}
	}

	// Blocks are read on demand through a read path of their own
	// (actors.NewBlockCache). Stop closes it when it closes the engine's
	// ring; a failed recovery closes it here.
	cache, err := e.newBlockCache()
	if err != nil {
		return rec, err
	}
	defer func() {
		if err != nil {
			cache.Close() //nolint:errcheck // the recovery error is the one to report
		}
	}()
	ioClock := ring.IOClock(e.r) // the wrapper below hides a ring.Clock
	e.r = actors.ClosingRing(e.r, cache)

	// The manifest: spaces and blocks. Read changes nothing; nothing acts
	// on what it read (a sealed generation retired) before Rewrite has
	// made it durable, below.
	man, err := snapshot.Read(segDoer, cfg.Dir, cfg.WALRecovery)
	if errors.Is(err, snapshot.ErrNoManifest) {
		man, err = snapshot.Create(segDoer, cfg.Dir)
	}
	if err != nil {
		return rec, fmt.Errorf("manifest: %w", err)
	}
	rec.man = man
	if t := man.Tail(); t.Torn {
		e.lg.Warn("manifest: torn last edit dropped", zap.String("file", t.Name), zap.Int64("offset", t.End))
	}
	st := man.State()
	tail := livetail.NewTail()
	reg := make(map[SpaceID]SpaceInfo)
	maxRev := st.MaxRevision()
	blocks, orphans := 0, 0
	opened := make(map[SpaceID][]*snapshot.Block)
	for _, info := range st.Spaces() {
		if err := ctx.Err(); err != nil {
			return rec, err
		}
		reg[info.ID] = info
		if err := tail.AddSpace(info, actors.Keyer(info.SpaceSpec)); err != nil {
			return rec, err
		}
		for _, meta := range st.Index(info.ID).Blocks() {
			b, err := cache.OpenBlockFor(cfg.Dir, meta)
			if err != nil {
				return rec, fmt.Errorf("space %d: %w", info.ID, err)
			}
			if err := tail.AddBlock(info.ID, actors.Block(b)); err != nil {
				return rec, err
			}
			opened[info.ID] = append(opened[info.ID], b)
			maxRev = max(maxRev, meta.MaxRev)
			blocks++
		}
	}
	e.registry.Store(&reg)

	// Hot generations.
	hotOpts := hot.Options{Dir: filepath.Join(cfg.Dir, "hot"), SegmentSize: cfg.Preallocate, Mode: cfg.WALRecovery,
		Direct: cfg.DirectIO}
	gens, err := hot.List(segDoer, hotOpts.Dir)
	if err != nil {
		return rec, fmt.Errorf("hot: %w", err)
	}
	if len(gens) > 0 {
		// A generation's name may not be durable yet: a Stop or crash
		// can cut hot.Create (a spare's rename, a new file) before its
		// directory sync. Writes acknowledged from an adopted generation
		// would go with its name at a power loss.
		if err := ring.SyncDir(e.sd, hotOpts.Dir); err != nil {
			return rec, fmt.Errorf("hot: sync the directory: %w", err)
		}
	}
	type spaceGens struct {
		active *hot.Segment
		frozen []*hot.Segment
	}
	bySpace := make(map[SpaceID]*spaceGens)
	hotRecords := 0
	var torn []wal.TornTail // torn last batches dropped (never acknowledged)
	var sealedGens []string // removed once the manifest is rewritten
	for i, g := range gens {
		if err := ctx.Err(); err != nil {
			return rec, err // what is open is in rec
		}
		info, ok := reg[g.Space]
		if !ok {
			// A generation is created only once its space's creation is
			// durable in the manifest.
			return rec, man.LostEdit(fmt.Sprintf("creating space %d (hot/%s exists)", g.Space, g.FileName()))
		}
		if sealed, _ := st.SealedGen(g.Space); g.Gen <= sealed {
			// Sealed into a block before a crash cut its retirement short.
			sealedGens = append(sealedGens, g.FileName())
			continue
		}
		last := i == len(gens)-1 || gens[i+1].Space != g.Space
		var recs []messages.Record
		seg, err := hot.Open(segDoer, hotOpts, g, !last, func(_ int64, r messages.Record) error {
			recs = append(recs, r)
			return nil
		})
		if err != nil {
			return rec, err
		}
		rec.segs = append(rec.segs, seg)
		if tt, ok := seg.Torn(); ok {
			torn = append(torn, tt)
		}
		if err := tail.Append(info.ID, g.Gen, recs...); err != nil {
			return rec, fmt.Errorf("hot %s: %w", g.FileName(), err)
		}
		_, hi := seg.RevRange()
		maxRev = max(maxRev, hi)
		hotRecords += len(recs)
		sg := bySpace[g.Space]
		if sg == nil {
			sg = &spaceGens{}
			bySpace[g.Space] = sg
		}
		if last {
			sg.active = seg
		} else {
			sg.frozen = append(sg.frozen, seg)
		}
	}

	// Blocks the manifest does not name: removed once their records are
	// shown to be in a live hot generation or a named block (a seal cut
	// before its edit); otherwise their generation, if still live, or the
	// manifest (a durable edit lost) was damaged.
	for id := range reg {
		sg := bySpace[id]
		if sg == nil {
			sg = &spaceGens{}
		}
		live := sg.frozen
		if sg.active != nil {
			live = append(slices.Clone(live), sg.active)
		}
		check := snapshot.OrphanCheck{
			Held: func(r messages.Record) (bool, error) {
				for _, seg := range live {
					if seg.Has(r.Revision) {
						return true, nil
					}
				}
				return sealedAlready(opened[id], reg[id].SpaceSpec, r)
			},
			Live: func(gen uint64) (string, int64, bool) {
				for _, seg := range live {
					if g := seg.Gen(); g.Gen == gen {
						return filepath.Join("hot", g.FileName()), seg.Size(), true
					}
				}
				return "", 0, false
			},
		}
		or, err := man.RemoveOrphans(id, check)
		if err != nil {
			return rec, fmt.Errorf("space %d: %w", id, err)
		}
		orphans += or.Removed
		for _, p := range or.Unreadable {
			e.lg.Warn("unreadable block file the manifest does not name removed", zap.String("file", p))
		}
	}
	if err := man.Rewrite(); err != nil {
		return rec, fmt.Errorf("manifest: %w", err)
	}
	for _, name := range sealedGens {
		if err := ring.Unlink(e.sd, filepath.Join(hotOpts.Dir, name)); err != nil {
			return rec, fmt.Errorf("hot: remove sealed %s: %w", name, err)
		}
	}
	if len(sealedGens) > 0 {
		if err := ring.SyncDir(e.sd, hotOpts.Dir); err != nil {
			return rec, fmt.Errorf("hot: %w", err)
		}
	}

	// The staging WAL: what no live hot generation holds is staged again.
	staged := make(map[SpaceID][]messages.Record)
	walOpts := wal.Options{Dir: filepath.Join(cfg.Dir, "wal"), SegmentSize: cfg.Preallocate, Mode: cfg.WALRecovery,
		Direct: cfg.DirectIO}
	walRecords := 0
	w, err := wal.Open(walDoer, walOpts, func(_ uint64, _ int64, r messages.Record) error {
		walRecords++
		maxRev = max(maxRev, r.Revision)
		sg := bySpace[r.Space]
		if _, ok := reg[r.Space]; !ok {
			return nil
		}
		if sg != nil {
			if sg.active != nil && sg.active.Has(r.Revision) {
				return nil
			}
			for _, f := range sg.frozen {
				if f.Has(r.Revision) {
					return nil
				}
			}
		}
		if sealed, err := sealedAlready(opened[r.Space], reg[r.Space].SpaceSpec, r); sealed || err != nil {
			return err
		}
		staged[r.Space] = append(staged[r.Space], r)
		return nil
	})
	if err != nil {
		return rec, fmt.Errorf("staging WAL: %w", err)
	}
	rec.wal = w
	torn = append(torn, w.Torn()...)
	// A staged record must fit an empty hot file of this Config, or it
	// could never be promoted (nor a Flush of its space end): refuse a
	// Preallocate lowered below one, as Put refuses such a record.
	for _, rs := range staged {
		for _, r := range rs {
			if sz := wal.FrameSize(wal.RecordSize(r)); int64(sz) > logRoom(cfg.Preallocate) {
				return rec, fmt.Errorf("Config.Preallocate = %d bytes is too small for a record of %d bytes "+
					"(space %d, revision %d) in the staging WAL, which must still be moved into a hot segment: "+
					"start with Preallocate >= %d, Flush every space, then lower it",
					cfg.Preallocate, sz, r.Space, r.Revision, minPreallocateFor(sz))
			}
		}
	}
	stagedN := 0
	for id, rs := range staged {
		if err := tail.Append(id, livetail.StagedGeneration, rs...); err != nil {
			return rec, fmt.Errorf("staging WAL: %w", err)
		}
		stagedN += len(rs)
	}

	// The actors, handed what recovery found.
	acfg := actors.Config{Dir: cfg.Dir, BatchSize: cfg.BatchSize, BatchTimeout: cfg.BatchTimeout,
		DirectWriteTimeout: cfg.DirectWriteTimeout, PromoteInterval: cfg.PromoteInterval,
		SealThreshold: cfg.SealThreshold, SealBytes: cfg.SealBytes, Hot: hotOpts, WAL: walOpts}
	env := &actors.Env{Ring: e.r, Log: e.lg, Cfg: acfg, Metrics: e.metrics, IOTime: ioClock}
	e.ch = actors.NewChannels(cfg.QueueCapacity, e.r.Capacity())
	e.sub = actors.NewSubmitter(env, e.ch, walDoer, w, maxRev+1)
	e.sealer = actors.NewSealer(env, e.ch, segDoer, man, &e.registry)
	e.sealer.SetBlockCache(cache)
	for id, info := range reg {
		sg := bySpace[id]
		if sg == nil {
			// No live generation: the sealer creates the one after the
			// last sealed.
			sealed, _ := st.SealedGen(id)
			e.sub.AddSpace(info, nil, staged[id])
			e.sealer.AddSpace(info, sealed, false, nil)
			continue
		}
		e.sub.AddSpace(info, sg.active, staged[id])
		e.sealer.AddSpace(info, sg.active.Gen().Gen, true, sg.frozen)
		for _, f := range sg.frozen {
			e.metrics.Unsealed.Add(int64(f.Records()))
		}
	}
	e.pub = actors.NewPublisher(env, e.ch, tail, &e.cur)
	e.comp = actors.NewCompleter(env, e.ch)
	e.inline = actors.NewInline(e.sub, e.comp, e.pub)
	e.prom = actors.NewPromoter(env, e.ch)

	e.lg.Info("recovered", zap.String("dir", cfg.Dir), zap.Int("spaces", len(reg)), zap.Int("blocks", blocks),
		zap.Int("orphan_blocks_removed", orphans), zap.Int("hot_generations", len(rec.segs)),
		zap.Int("hot_records", hotRecords), zap.Int("sealed_generations_retired", len(sealedGens)),
		zap.Int("wal_records", walRecords), zap.Int("staged", stagedN),
		zap.Int("torn_tails_dropped", len(torn)),
		zap.Uint64("next_revision", uint64(maxRev+1)), zap.Bool("direct_io", cfg.DirectIO))
	for _, tt := range torn {
		// A crash cut the last write of this file short: it was never
		// acknowledged, and TolerateTornTail dropped it.
		e.lg.Warn("torn tail dropped", zap.String("file", tt.Path), zap.Int64("offset", tt.Off),
			zap.Int64("bytes", tt.Bytes))
	}
	if cfg.DirectIO {
		for _, sg := range bySpace {
			if sg.active != nil && !sg.active.Direct() {
				e.lg.Warn("DirectIO: the file system refused O_DIRECT; logs are written buffered",
					zap.String("dir", hotOpts.Dir))
				break
			}
		}
	}
	return rec, nil
}

// sealedAlready reports whether a block holds r's point at r's revision or
// a newer one: r was promoted and sealed (or is shadowed) before the WAL
// segment holding it could be retired, and staging it again would write it
// into yet another block. A block that cannot be read fails recovery.
func sealedAlready(blocks []*snapshot.Block, spec SpaceSpec, r messages.Record) (bool, error) {
	key := snapshot.Key(r.Point, spec.Dims, spec.Bits)
	for _, b := range blocks {
		if ok, err := b.Supersedes(key, r); ok || err != nil {
			return ok, err
		}
	}
	return false, nil
}

// blockReadEntries is the submission queue of the block-read ring: page
// reads by concurrent Gets and Scans, one op each, so 64 readers may miss
// the cache at once (a uring ring's capacity is twice its entries).
const blockReadEntries = 64

// newBlockCache makes the engine's block read path on a ring of its own,
// made as the engine's is (Config.NewRing's simulated disk serves it too);
// after Stop, reads that miss the cache use a short-lived ring of the same
// kind (std on a real disk: plain preads).
func (e *engine) newBlockCache() (*snapshot.Cache, error) {
	rc := e.cfg
	rc.RingEntries = blockReadEntries
	rc.Logger = e.lg.Named("blocks")
	r, err := newRing(rc)
	if err != nil {
		return nil, fmt.Errorf("block reads: %w", err)
	}
	if reflect.ValueOf(r).Kind() == reflect.Pointer && r == e.r {
		return nil, errors.New("block reads: Config.NewRing returned the engine's ring again; it must make a new ring on every call")
	}
	fallback := func() (ring.Ring, error) {
		if e.cfg.NewRing != nil {
			return e.cfg.NewRing(ring.Options{Entries: 4})
		}
		return ring.New(ring.Options{Kind: ring.Std, Workers: 1, Entries: 4})
	}
	return actors.NewBlockCache(r, fallback, e.cfg.BlockCacheBytes), nil
}

func summary(r *latency.Recorder) LatencySummary {
	s := r.Summary()
	return LatencySummary{Count: s.Count, P50: s.P50, P99: s.P99, P999: s.P999, Max: s.Max}
}
