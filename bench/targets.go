package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/cockroachdb/pebble"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/internal/baseline"
)

// A store is one target opened on a fresh directory: put makes one record
// durable, close releases everything the store started.
type store interface {
	// put writes value under key i and returns once it is durable. Safe
	// for concurrent use; value may be reused once put returns.
	put(ctx context.Context, i uint64, value []byte) error
	// counters returns the store's own running counts (fdatasyncs, staged
	// writes, ...) for the per-record rates of a cell; nil if it has none.
	counters() map[string]float64
	close(ctx context.Context) error
}

// A gauger is a store that reports its own latency figures at the end of
// a window (ringpipe's Stats: one fdatasync, one Put as the engine sees
// it), in µs, cumulative since the store opened.
type gauger interface {
	gauges() map[string]float64
}

// A target is one system under test.
type target struct {
	name string
	desc string // one line for the README and -h
	open func(ctx context.Context, dir string, cfg config) (store, error)
	// experiment: not a comparison target but a measurement of a design
	// idea; left out of the default -targets.
	experiment bool
}

// errUnavailable marks a target this machine cannot run (io_uring refused
// by the kernel): its cells are reported as skipped, not as a failure.
var errUnavailable = errors.New("target unavailable on this machine")

// allTargets are the systems compared, in table order. The first is the
// reference every ratio is taken against.
var allTargets = []target{
	{
		name: "ringpipe-uring",
		desc: "ringpipe, default Config, io_uring backend",
		open: func(ctx context.Context, dir string, cfg config) (store, error) {
			return openRingpipe(ctx, dir, ringpipe.BackendURing, cfg.ringpipe)
		},
	},
	{
		name: "ringpipe-std",
		desc: "ringpipe, default Config, std backend (pwritev+fdatasync on a goroutine pool)",
		open: func(ctx context.Context, dir string, cfg config) (store, error) {
			return openRingpipe(ctx, dir, ringpipe.BackendStd, cfg.ringpipe)
		},
	},
	{
		name: "pebble-sync",
		desc: "Pebble v1.1 Set with pebble.Sync (WAL group commit); options in pebbleOptions",
		open: openPebble,
	},
	{
		name: "grouplog",
		desc: "internal/baseline.GroupLog: one file, one flusher looping pwrite+fdatasync over what gathered",
		open: func(_ context.Context, dir string, _ config) (store, error) {
			l, err := baseline.OpenGroupLog(filepath.Join(dir, "log"), ringpipe.DefaultPreallocate)
			if err != nil {
				return nil, err
			}
			return &logStore{l: l}, nil
		},
	},
	{
		name: "ringpipe-uring-dwt20",
		desc: "experiment: ringpipe-uring with DirectWriteTimeout 20ms (what the default 2ms deadline's reroutes cost)",
		open: func(ctx context.Context, dir string, cfg config) (store, error) {
			tune := cfg.ringpipe
			tune.DirectWriteTimeout = 20 * time.Millisecond
			return openRingpipe(ctx, dir, ringpipe.BackendURing, tune)
		},
		experiment: true,
	},
	{
		name: "overlap1",
		desc: "experiment: grouplog with the next pwrite overlapping the previous fdatasync (one sync in flight)",
		open: func(_ context.Context, dir string, _ config) (store, error) {
			return openOverlapLog(filepath.Join(dir, "log"), ringpipe.DefaultPreallocate, 1)
		},
		experiment: true,
	},
	{
		name: "overlap2",
		desc: "experiment: overlap1 with two fdatasyncs in flight",
		open: func(_ context.Context, dir string, _ config) (store, error) {
			return openOverlapLog(filepath.Join(dir, "log"), ringpipe.DefaultPreallocate, 2)
		},
		experiment: true,
	},
	{
		name: "syncloop",
		desc: "internal/baseline.SyncLoop: pwrite+fdatasync per record under a mutex",
		open: func(_ context.Context, dir string, _ config) (store, error) {
			l, err := baseline.OpenSyncLoop(filepath.Join(dir, "log"), ringpipe.DefaultPreallocate)
			if err != nil {
				return nil, err
			}
			return &logStore{l: l}, nil
		},
	},
}

// Reference names used by the ratios and the targets.
const (
	refTarget    = "ringpipe-uring"
	pebbleTarget = "pebble-sync"
	loopTarget   = "syncloop"
)

// ringpipeSpec is the space every ringpipe write goes to: 1-D, so point i
// has key i and every write of a cell lands on a distinct point.
var ringpipeSpec = ringpipe.SpaceSpec{Name: "bench", Dims: 1, Bits: 32}

type ringpipeStore struct {
	e     *ringpipe.Engine
	space ringpipe.SpaceID
}

// openRingpipe starts an engine in dir on backend, with tune's tuning
// fields (zero: the default) and everything else default.
func openRingpipe(ctx context.Context, dir string, backend ringpipe.Backend, tune ringpipe.Config) (store, error) {
	c := tune
	c.Dir, c.Backend = dir, backend
	e, err := ringpipe.Start(ctx, c)
	if err != nil {
		if backend == ringpipe.BackendURing && strings.Contains(err.Error(), "io_uring") {
			return nil, fmt.Errorf("%w: %v", errUnavailable, err)
		}
		return nil, fmt.Errorf("start ringpipe (%s): %w", backend, err)
	}
	space, err := e.CreateSpace(ctx, ringpipeSpec)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("create space: %w", err), e.Stop(ctx))
	}
	return &ringpipeStore{e: e, space: space}, nil
}

func (s *ringpipeStore) put(ctx context.Context, i uint64, value []byte) error {
	// NB: keys wrap at 2^32 (Bits 32); a cell writes far fewer records.
	_, err := s.e.Put(ctx, s.space, ringpipe.Point{uint32(i)}, value)
	return err
}

func (s *ringpipeStore) counters() map[string]float64 {
	st := s.e.Stats()
	return map[string]float64{
		"syncs":  float64(st.Syncs),
		"staged": float64(st.StagedWrites),
		"direct": float64(st.DirectWrites),
		"sealed": float64(st.SealedBlocks),
	}
}

func (s *ringpipeStore) gauges() map[string]float64 {
	st := s.e.Stats()
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	return map[string]float64{
		"sync_p50_us":  us(st.SyncLatency.P50),
		"sync_p99_us":  us(st.SyncLatency.P99),
		"write_p50_us": us(st.WriteLatency.P50),
		"write_p99_us": us(st.WriteLatency.P99),
	}
}

func (s *ringpipeStore) close(ctx context.Context) error { return s.e.Stop(ctx) }

// pebbleOptions are Pebble's options for a durable small-write test: its
// defaults (WAL in the same directory, WALMinSyncInterval unset, so a
// commit syncs as soon as the WAL's flush loop gets to it, with group
// commit of whatever queued meanwhile), plus
//   - a 64 MiB memtable (CockroachDB's size; the 4 MiB default would flush
//     and compact every few seconds of this load and mostly measure that),
//   - a 64 MiB block cache (reads play no part here),
//   - FormatNewest, and no logging.
func pebbleOptions(cache *pebble.Cache) *pebble.Options {
	return &pebble.Options{
		Cache:              cache,
		MemTableSize:       64 << 20,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             quietLogger{},
	}
}

// quietLogger drops Pebble's informational messages; a fatal one still
// ends the program, as Pebble expects.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("pebble: "+format, args...))
}

type pebbleStore struct {
	db    *pebble.DB
	cache *pebble.Cache
}

func openPebble(_ context.Context, dir string, _ config) (store, error) {
	cache := pebble.NewCache(64 << 20)
	db, err := pebble.Open(dir, pebbleOptions(cache))
	if err != nil {
		cache.Unref()
		return nil, fmt.Errorf("open pebble: %w", err)
	}
	return &pebbleStore{db: db, cache: cache}, nil
}

func (s *pebbleStore) put(_ context.Context, i uint64, value []byte) error {
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], i)
	return s.db.Set(key[:], value, pebble.Sync)
}

func (s *pebbleStore) counters() map[string]float64 {
	m := s.db.Metrics()
	return map[string]float64{
		"flushes":     float64(m.Flush.Count),
		"compactions": float64(m.Compact.Count),
	}
}

func (s *pebbleStore) close(context.Context) error {
	err := s.db.Close()
	s.cache.Unref()
	return err
}

// logStore adapts a baseline.Log; its records carry no key, so i is
// already in the value.
type logStore struct{ l baseline.Log }

func (s *logStore) put(_ context.Context, _ uint64, value []byte) error { return s.l.Append(value) }
func (s *logStore) counters() map[string]float64                        { return nil }
func (s *logStore) close(context.Context) error                         { return s.l.Close() }

// stopTimeout bounds a store's close after its cell.
const stopTimeout = time.Minute
