package test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// auditLogs finds the entries with message msg.
func auditLogs(logs *observer.ObservedLogs, msg string) []observer.LoggedEntry {
	return logs.FilterMessage(msg).All()
}

// TestAuditLogging: issue 4's zap logging: backend, kernel version and
// io_uring features at start; a recovery summary; seals; routing changes;
// actor restarts; and nothing per write (not even at Debug).
func TestAuditLogging(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	disk := newSimDisk(t, 9)
	cfg := simConfig(t, disk)
	cfg.Logger = zap.New(core)
	e := start(t, cfg)

	ringLog := auditLogs(logs, "ring")
	require.Len(t, ringLog, 1, "one start-up log of the ring")
	f := ringLog[0].ContextMap()
	for _, k := range []string{"backend", "kernel", "features"} {
		assert.Contains(t, f, k, "start-up log field %s", k)
	}
	require.Len(t, auditLogs(logs, "recovered"), 1, "a recovery summary")

	ctx := ctxFor(t)
	sp := createSpace(t, e, "logs", 2, 10)
	require.NoError(t, e.Sync(ctx))
	before := logs.Len()

	// Writes of every kind, from one and from many goroutines.
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 40 {
				p := ringpipe.Point{uint32(w), uint32(i)}
				_, err := e.Put(ctx, sp, p, []byte("v"))
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()
	for i := range 50 {
		_, err := e.Delete(ctx, sp, ringpipe.Point{0, uint32(i)})
		require.NoError(t, err)
		_, err = e.PutAsync(ctx, sp, ringpipe.Point{9, uint32(i)}, []byte("a"))
		require.NoError(t, err)
	}
	require.NoError(t, e.Sync(ctx))
	_, err := e.Get(ctx, sp, ringpipe.Point{1, 1})
	require.NoError(t, err)
	perWrite := logs.All()[before:]
	for _, en := range perWrite {
		t.Errorf("log entry on the write path (%d writes): %s %q %v", 8*40+100, en.Level, en.Message, en.ContextMap())
	}

	// A seal is logged, with what it sealed.
	require.NoError(t, e.Flush(ctx, sp))
	sealed := auditLogs(logs, "sealed")
	require.Len(t, sealed, 1, "one seal, one log")
	assert.EqualValues(t, 8*40+100, sealed[0].ContextMap()["records"])

	// A routing change is logged: the space's hot file stalls.
	disk.Inject(sim.Fault{Kind: sim.Delay, Delay: stallDelay, Path: hotPrefix(sp),
		Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync, ring.OpWrite, ring.OpWritev}, Persist: true})
	for i := range 20 {
		_, err := e.Put(ctx, sp, ringpipe.Point{20, uint32(i)}, []byte("stalled"))
		require.NoError(t, err)
	}
	require.Positive(t, e.Stats().StagedWrites)
	assert.NotEmpty(t, auditLogs(logs, "space routed to the staging WAL"), "routing to the WAL is logged")
	disk.ClearFaults()

	// An actor restart is logged: one failed fdatasync of the hot file.
	hits := len(disk.Hits())
	disk.Inject(sim.Fault{Kind: sim.FsyncFail, Path: simDir + "/hot/", Ops: []ring.Opcode{ring.OpFdatasync, ring.OpFsync}})
	for i := 0; len(disk.Hits()) == hits && i < 2000; i++ {
		_, _ = e.Put(ctx, sp, ringpipe.Point{30, uint32(i % 1024)}, []byte("f"))
	}
	require.Greater(t, len(disk.Hits()), hits, "the fsync failure fired")
	waitFor(t, e, "an actor restart logged", func(ringpipe.Stats) bool {
		return len(auditLogs(logs, "actor restarted")) > 0
	})
	stop(t, e)

	// The recovery summary of a reopen counts what it found.
	e = start(t, cfg)
	rec := auditLogs(logs, "recovered")
	require.Len(t, rec, 2)
	assert.EqualValues(t, 1, rec[1].ContextMap()["spaces"])
	assert.GreaterOrEqual(t, rec[1].ContextMap()["blocks"], int64(1), "the Flush's block (and the failed generation's)")
	stop(t, e)
}
