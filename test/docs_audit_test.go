package test

// Documentation audit: claims of README.md and of the root package's godoc
// that no other test proved. Each test quotes the claim it checks.

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/internal/fdtest"
	"github.com/ringpipe/ringpipe/internal/testhook"
	"github.com/ringpipe/ringpipe/ring"
)

// TestDocsDefaults: the defaults the godoc (Config's field comments, the
// Default* constants) and README ("Config.BlockCacheBytes, default 32
// MiB", "the default MaxValueSize (1 MiB)", "Preallocate is at least 8192
// bytes") state, as a user sees them: the exported constants, the
// Backend names, Telemetry.QueueCapacity ("Config.QueueCapacity"), and
// MaxValueSize at the default Preallocate (a value of exactly 1 MiB is
// taken, one byte more is ErrValueTooLarge).
func TestDocsDefaults(t *testing.T) {
	assert.Equal(t, 4096, ringpipe.DefaultQueueCapacity, "QueueCapacity: default 4096")
	assert.Equal(t, 256, ringpipe.DefaultRingEntries, "RingEntries: default 256")
	assert.Equal(t, 32, ringpipe.DefaultBatchSize, "BatchSize: default 32")
	assert.Equal(t, 2*time.Millisecond, ringpipe.DefaultDirectWriteTimeout, "DirectWriteTimeout: default 2ms")
	assert.Equal(t, time.Millisecond, ringpipe.DefaultPromoteInterval, "PromoteInterval: default 1ms")
	assert.Equal(t, 16384, ringpipe.DefaultSealThreshold, "SealThreshold: default 16384")
	assert.Equal(t, 4<<20, ringpipe.DefaultSealBytes, "SealBytes: default 4 MiB")
	assert.Equal(t, 1<<20, ringpipe.DefaultMaxValueSize, "MaxValueSize: default 1 MiB")
	assert.Equal(t, 64<<20, ringpipe.DefaultPreallocate, "Preallocate: default 64 MiB")
	assert.EqualValues(t, 32<<20, ringpipe.DefaultBlockCacheBytes, "BlockCacheBytes: default 32 MiB")
	assert.Equal(t, ringpipe.BackendAuto, ringpipe.Config{}.Backend, "BackendAuto (default)")
	assert.Equal(t, ringpipe.TolerateTornTail, ringpipe.Config{}.WALRecovery, "TolerateTornTail (default)")
	for b, name := range map[ringpipe.Backend]string{
		ringpipe.BackendAuto: "auto", ringpipe.BackendURing: "uring", ringpipe.BackendStd: "std",
	} {
		assert.Equal(t, name, b.String())
	}

	ctx := ctxFor(t)
	t.Run("default Preallocate", func(t *testing.T) {
		// Only Dir (and a backend and logger): every other field default.
		cfg := ringpipe.Config{Dir: t.TempDir(), Backend: ringpipe.BackendStd, Logger: zaptest.NewLogger(t)}
		e := start(t, cfg)
		assert.Equal(t, ringpipe.DefaultQueueCapacity, e.Telemetry().QueueCapacity)
		assert.Equal(t, "std", e.Stats().Backend, `Stats.Backend: "uring" or "std"`)
		sp := createSpace(t, e, "big", 1, 8)
		v := make([]byte, 1<<20)
		v[0], v[len(v)-1] = 'a', 'z'
		rev, err := e.Put(ctx, sp, ringpipe.Point{1}, v)
		require.NoError(t, err, "a value of the default MaxValueSize (1 MiB)")
		_, err = e.Put(ctx, sp, ringpipe.Point{2}, make([]byte, 1<<20+1))
		assert.ErrorIs(t, err, ringpipe.ErrValueTooLarge, "1 MiB + 1 byte")
		rec, err := e.Get(ctx, sp, ringpipe.Point{1})
		require.NoError(t, err)
		assert.Equal(t, rev, rec.Revision)
		assert.True(t, slices.Equal(v, rec.Value), "the 1 MiB value reads back")
		stop(t, e)
	})
	t.Run("explicit QueueCapacity", func(t *testing.T) {
		cfg := realConfig(t, ringpipe.BackendStd)
		cfg.QueueCapacity, cfg.BatchSize = 64, 8
		e := start(t, cfg)
		assert.Equal(t, 64, e.Telemetry().QueueCapacity, "Telemetry.QueueCapacity is Config.QueueCapacity")
		stop(t, e)
	})
	t.Run("Preallocate 8192", func(t *testing.T) {
		// "Preallocate is at least 8192 bytes": the smallest is taken and
		// the default MaxValueSize shrinks to what such a file holds.
		cfg := realConfig(t, ringpipe.BackendStd)
		cfg.Preallocate = 8192
		e := start(t, cfg)
		sp := createSpace(t, e, "small", 2, 8) // scMaxValue writes a 2-dimensional point
		limit := scMaxValue(t, e, sp)
		assert.Positive(t, limit)
		assert.Less(t, limit, 8192-4096+1, "the default MaxValueSize shrank to what 8192 bytes hold")
		_, err := e.Put(ctx, sp, ringpipe.Point{1, 1}, make([]byte, limit))
		require.NoError(t, err, "a value of the shrunk limit (%d bytes)", limit)
		_, err = e.Put(ctx, sp, ringpipe.Point{1, 1}, make([]byte, limit+1))
		assert.ErrorIs(t, err, ringpipe.ErrValueTooLarge)
		stop(t, e)
	})
	t.Run("Preallocate 1 MiB", func(t *testing.T) {
		// "a 1 MiB Preallocate takes values up to about 1 MiB − 4 KiB".
		cfg := realConfig(t, ringpipe.BackendStd)
		cfg.Preallocate = 1 << 20
		e := start(t, cfg)
		sp := createSpace(t, e, "mib", 2, 8)
		limit := scMaxValue(t, e, sp)
		t.Logf("MaxValueSize with Preallocate 1 MiB: %d (1 MiB - %d)", limit, 1<<20-limit)
		assert.LessOrEqual(t, limit, 1<<20-4096)
		assert.Greater(t, limit, 1<<20-8192, "about 1 MiB - 4 KiB")
		stop(t, e)
	})
}

// TestDocsCQOverflowsZeroOnStd: Telemetry.CQOverflows is "io_uring only;
// always 0 on std"; Telemetry.Actors names the actors "in start order",
// which README gives as "publisher, submitter+completer, sealer,
// promoter".
func TestDocsCQOverflowsZeroOnStd(t *testing.T) {
	e := start(t, realConfig(t, ringpipe.BackendStd))
	sp := createSpace(t, e, "s", 2, 8)
	ctx := ctxFor(t)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 40 {
				_, err := e.Put(ctx, sp, ringpipe.Point{uint32(w), uint32(i)}, []byte("v"))
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()
	tel := e.Telemetry()
	assert.Zero(t, tel.CQOverflows, "CQOverflows on std")
	assert.Equal(t, []string{"publisher", "submitter", "completer", "sealer", "promoter"}, tel.Actors)
	stop(t, e)
}

// TestDocsPutAsyncAlwaysQueues: README "Inline commit": "PutAsync always
// queues"; Telemetry.InlineCommits counts "the Puts and Deletes committed
// on their caller's goroutine". On an idle engine a Put and a Delete are
// committed inline (the precondition: the pipeline is idle), and PutAsyncs
// issued one at a time, each waited for, on the same idle engine, are not.
func TestDocsPutAsyncAlwaysQueues(t *testing.T) {
	disk := newSimDisk(t, 41)
	e := start(t, simConfig(t, disk))
	sp := createSpace(t, e, "s", 1, 8)
	ctx := ctxFor(t)
	require.NoError(t, e.Sync(ctx))

	before := e.Telemetry().InlineCommits
	for i := range 20 {
		_, err := e.Put(ctx, sp, ringpipe.Point{uint32(i)}, []byte("put"))
		require.NoError(t, err)
	}
	_, err := e.Delete(ctx, sp, ringpipe.Point{0})
	require.NoError(t, err)
	require.Greater(t, e.Telemetry().InlineCommits, before, "sequential Puts and Deletes on an idle engine commit inline (precondition)")

	before = e.Telemetry().InlineCommits
	for i := range 20 {
		tk, err := e.PutAsync(ctx, sp, ringpipe.Point{uint32(100 + i)}, []byte("async"))
		require.NoError(t, err)
		_, err = tk.Wait(ctx)
		require.NoError(t, err)
	}
	assert.Equal(t, before, e.Telemetry().InlineCommits, "a PutAsync was counted as an inline commit")
	stop(t, e)
}

// TestDocsRestartLimit: README "How a write travels": the supervisor
// restarts units "one-for-one with backoff; past 5 restarts in 10 s the
// engine fails: writes return ErrFailed, reads work, Stop works". The
// publisher is made to fail at its chaos point exactly 5 times: 5
// restarts, the engine still works; one failure more fails it.
func TestDocsRestartLimit(t *testing.T) {
	disk := newSimDisk(t, 43)
	e := start(t, simConfig(t, disk))
	sp := createSpace(t, e, "s", 1, 8)
	ctx := ctxFor(t)
	rev0, err := e.Put(ctx, sp, ringpipe.Point{1}, []byte("before"))
	require.NoError(t, err)
	require.NoError(t, e.Sync(ctx))

	var budget atomic.Int64 // publisher failures still to inject
	defer testhook.SetInjector(func(actor, point string) error {
		if actor == "publisher" && budget.Add(-1) >= 0 {
			return errors.New("docs audit: injected publisher failure")
		}
		return nil
	})()

	// Five failures: the publisher's burst fails and is retried by each
	// restart; the sixth run applies it.
	budget.Store(5)
	tk, err := e.PutAsync(ctx, sp, ringpipe.Point{2}, []byte("five"))
	require.NoError(t, err)
	_, err = tk.Wait(ctx)
	require.NoError(t, err, "a write whose publish failed 5 times (restarts within the limit)")
	waitFor(t, e, "5 publisher restarts", func(st ringpipe.Stats) bool { return st.ActorRestarts["publisher"] >= 5 })
	assert.Equal(t, uint64(5), e.Stats().ActorRestarts["publisher"])
	assert.False(t, e.Telemetry().Failed, "5 restarts in 10 s: not failed yet")
	_, err = e.Put(ctx, sp, ringpipe.Point{3}, []byte("still fine"))
	require.NoError(t, err, "a Put after 5 restarts")

	// One more failure within the window: the engine fails.
	budget.Store(1)
	tk, err = e.PutAsync(ctx, sp, ringpipe.Point{4}, []byte("sixth"))
	require.NoError(t, err)
	deadline := time.Now().Add(eventualTimeout)
	for !e.Telemetry().Failed {
		require.True(t, time.Now().Before(deadline), "not failed after a 6th restart within 10 s; stats %+v", e.Stats())
		time.Sleep(pollEvery)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, werr := tk.Wait(wctx)
	require.NotErrorIs(t, werr, context.DeadlineExceeded, "the ticket of the write held by the failed publisher hung")
	t.Logf("the write the failed publisher held: %v", werr)
	if werr == nil {
		// Ticket.Done: "closed once the write is durable (and visible)".
		_, err := e.Get(ctx, sp, ringpipe.Point{4})
		assert.NoError(t, err, "a write whose ticket succeeded is visible to Get")
	}

	_, err = e.Put(ctx, sp, ringpipe.Point{5}, []byte("refused"))
	assert.ErrorIs(t, err, ringpipe.ErrFailed, "Put after the restart limit")
	_, err = e.PutAsync(ctx, sp, ringpipe.Point{5}, []byte("refused"))
	assert.ErrorIs(t, err, ringpipe.ErrFailed, "PutAsync after the restart limit")
	_, err = e.Delete(ctx, sp, ringpipe.Point{1})
	assert.ErrorIs(t, err, ringpipe.ErrFailed, "Delete after the restart limit")
	rec, err := e.Get(ctx, sp, ringpipe.Point{1})
	require.NoError(t, err, "reads work")
	assert.Equal(t, rev0, rec.Revision)
	_, err = e.Get(ctx, sp, ringpipe.Point{3})
	assert.NoError(t, err, "reads work")
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	serr := e.Stop(sctx)
	assert.NotErrorIs(t, serr, context.DeadlineExceeded, "Stop of a failed engine hung")
	t.Logf("Stop of the failed engine: %v", serr)
}

// noDirectRing is a real std ring on which every open with O_DIRECT
// fails with EINVAL, as on a file system that refuses O_DIRECT: the flags
// get a bare __O_TMPFILE, which open(2) refuses with EINVAL before it
// looks at the path.
type noDirectRing struct {
	ring.Ring
	refused atomic.Int64
}

func (r *noDirectRing) Submit(ops []ring.Op) error {
	out := ops
	for i := range ops {
		if ops[i].Code == ring.OpOpen && ops[i].Flags&unix.O_DIRECT != 0 {
			if len(out) > 0 && &out[0] == &ops[0] {
				out = slices.Clone(ops)
			}
			out[i].Flags |= unix.O_TMPFILE &^ unix.O_DIRECTORY
			r.refused.Add(1)
		}
	}
	return r.Ring.Submit(out)
}

// TestDocsDirectIORefused: README "A file system without O_DIRECT (tmpfs)
// gets buffered writes, and recovery logs a warning"; Config's godoc "A
// file system that refuses O_DIRECT (tmpfs) gets buffered writes". With
// DirectIO on a ring whose O_DIRECT opens fail with EINVAL, writes,
// Flush and reads work, and a Start that recovers a space logs the
// warning.
func TestDocsDirectIORefused(t *testing.T) {
	var rings []*noDirectRing
	var mu sync.Mutex
	core, logs := observer.New(zapcore.InfoLevel)
	cfg := realConfig(t, ringpipe.BackendStd)
	cfg.DirectIO = true
	cfg.Logger = zap.New(core)
	cfg.NewRing = func(o ring.Options) (ring.Ring, error) {
		o.Kind = ring.Std
		r, err := ring.New(o)
		if err != nil {
			return nil, err
		}
		nd := &noDirectRing{Ring: r}
		mu.Lock()
		rings = append(rings, nd)
		mu.Unlock()
		return nd, nil
	}
	refused := func() int64 {
		mu.Lock()
		defer mu.Unlock()
		var n int64
		for _, r := range rings {
			n += r.refused.Load()
		}
		return n
	}
	const warning = "DirectIO: the file system refused O_DIRECT; logs are written buffered"

	e := start(t, cfg)
	spec := ringpipe.SpaceSpec{Name: "s", Dims: 2, Bits: 8}
	sp := createSpace(t, e, spec.Name, spec.Dims, spec.Bits)
	m := newModel(spec)
	ctx := ctxFor(t)
	put := func(n int, tag string) {
		for i := range n {
			p := ringpipe.Point{uint32(i), uint32(len(tag))}
			v := fmt.Appendf(nil, "%s-%d", tag, i)
			rev, err := e.Put(ctx, sp, p, v)
			require.NoError(t, err)
			m.add(write{point: p, rev: rev, value: v})
		}
	}
	put(50, "first")
	require.NoError(t, e.Flush(ctx, sp), "Flush: a block written where O_DIRECT is refused")
	put(20, "second")
	require.Positive(t, refused(), "the engine opened nothing with O_DIRECT (precondition)")
	checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
	t.Logf("fresh directory: %d warnings", len(auditLogs(logs, warning)))
	stop(t, e)

	e = start(t, cfg)
	checkModel(t, engineReader(t, e), sp, m, fullBox(spec))
	assert.NotEmpty(t, auditLogs(logs, warning), "recovery of a space whose logs are buffered logs the warning")
	put(10, "third")
	stop(t, e)
}

// TestDocsBlockFilesOpenAtMost256: README "Block files are opened on
// demand: at most 256 are open at once, the least recently used idle one
// closed first". 300 blocks of one space (a Flush after each Put), then a
// restart and a Get of each block's record: the process never has more
// than 256 fds on block files.
func TestDocsBlockFilesOpenAtMost256(t *testing.T) {
	const blocks = 300
	cfg := realConfig(t, ringpipe.BackendStd)
	blockDir := filepath.Join(cfg.Dir, "blocks") + "/"
	openBlocks := func() int {
		n := 0
		for _, fd := range fdtest.List(t) {
			if strings.Contains(fd, " -> "+blockDir) {
				n++
			}
		}
		return n
	}
	peak := 0
	note := func(when string) {
		n := openBlocks()
		peak = max(peak, n)
		if n > 256 {
			t.Errorf("%s: %d block files open (at most 256)", when, n)
		}
	}

	e := start(t, cfg)
	sp := createSpace(t, e, "b", 1, 16)
	ctx := ctxFor(t)
	revs := make([]ringpipe.Revision, blocks)
	for i := range blocks {
		rev, err := e.Put(ctx, sp, ringpipe.Point{uint32(i)}, fmt.Appendf(nil, "block %d", i))
		require.NoError(t, err)
		revs[i] = rev
		require.NoError(t, e.Flush(ctx, sp))
		if i%25 == 0 {
			note(fmt.Sprintf("after Flush %d", i))
		}
	}
	require.Equal(t, uint64(blocks), e.Stats().SealedBlocks, "one block per Flush (precondition)")
	files, err := filepath.Glob(filepath.Join(blockDir, "*", "*.blk"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), blocks, "block files on disk (precondition)")
	note("after the Flushes")
	for i := range blocks {
		rec, err := e.Get(ctx, sp, ringpipe.Point{uint32(i)})
		require.NoError(t, err)
		require.Equal(t, revs[i], rec.Revision)
	}
	note("after reading every block")
	stop(t, e)

	e = start(t, cfg)
	note("after recovery")
	for round := range 2 {
		for i := range blocks {
			rec, err := e.Get(ctx, sp, ringpipe.Point{uint32(i)})
			require.NoError(t, err)
			require.Equal(t, revs[i], rec.Revision)
			if i%50 == 0 {
				note(fmt.Sprintf("reading, round %d, block %d", round, i))
			}
		}
		note(fmt.Sprintf("after reading round %d", round))
	}
	t.Logf("peak block files open: %d of %d blocks", peak, blocks)
	assert.Positive(t, peak, "no block file was ever seen open: the count looks at the wrong files")
	stop(t, e)
	assert.Zero(t, openBlocks(), "block files open after Stop")
}
