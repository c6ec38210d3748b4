package actors_test

import (
	"context"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// A hot batch whose deadline passes while its write or fdatasync still
// waits for a kernel worker is cancelled by io_uring (sim.Queued models
// it). Nothing failed on the disk, so the submitter performs the batch
// again without a deadline and the file stays in use: the writers are
// acknowledged (from the staging WAL, where the deadline sent them, or
// from the retried batch), no generation is sealed or failed for it, and
// everything acknowledged survives a power loss.

const simDir = "/db"

// opTimeout bounds every engine call of these tests.
const opTimeout = time.Minute

func simEngine(t *testing.T, disk *sim.Disk) *ringpipe.Engine {
	t.Helper()
	return simEngineLog(t, disk, zaptest.NewLogger(t))
}

// simEngineLog is simEngine logging to lg.
func simEngineLog(t *testing.T, disk *sim.Disk, lg *zap.Logger) *ringpipe.Engine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	e, err := ringpipe.Start(ctx, ringpipe.Config{
		Dir:                simDir,
		Logger:             lg,
		Preallocate:        1 << 20,
		DirectWriteTimeout: 2 * time.Millisecond,
		NewRing:            func(o ring.Options) (ring.Ring, error) { return disk.NewRing(o), nil },
	})
	require.NoError(t, err, "Start")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		_ = e.Stop(ctx)
	})
	return e
}

// hotGenerations lists the space's hot generation files on disk.
func hotGenerations(disk *sim.Disk, space ringpipe.SpaceID) []string {
	var out []string
	for _, f := range disk.Files() {
		if strings.HasPrefix(f, fmt.Sprintf("%s/hot/%010d-", simDir, space)) && strings.HasSuffix(f, ".seg") {
			out = append(out, f)
		}
	}
	return out
}

func TestCancelledHotBatchRetried(t *testing.T) {
	for _, op := range []ring.Opcode{ring.OpWrite, ring.OpFdatasync} {
		t.Run(op.String(), func(t *testing.T) {
			disk := sim.NewDisk(7)
			require.NoError(t, disk.MkdirAll(simDir))
			core, logs := observer.New(zapcore.InfoLevel)
			e := simEngineLog(t, disk, zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core)))
			ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			defer cancel()
			sp, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "s", Dims: 1, Bits: 32})
			require.NoError(t, err)

			acked := map[uint32]string{}
			put := func(i uint32) {
				v := fmt.Sprintf("value %d", i)
				_, err := e.Put(ctx, sp, ringpipe.Point{i}, []byte(v))
				require.NoError(t, err, "put %d", i)
				acked[i] = v
			}
			for i := range uint32(5) {
				put(i)
			}
			gens := hotGenerations(disk, sp)
			require.Len(t, gens, 1)

			// A batch misses its deadline in the queue.
			disk.Inject(sim.Fault{Kind: sim.Queued, Delay: 50 * time.Millisecond,
				Ops: []ring.Opcode{op}, Path: simDir + "/hot/"})
			put(100)
			hits := disk.Hits()
			require.Len(t, hits, 1)
			require.Equal(t, sim.Queued, hits[0].Kind)
			for i := range uint32(20) {
				put(200 + i)
			}

			st := e.Stats()
			assert.Zero(t, st.SealedBlocks, "a cancelled batch cost a seal")
			assert.Equal(t, gens, hotGenerations(disk, sp), "a cancelled batch retired its generation")
			assert.Positive(t, st.StagedWrites, "the deadline rerouted writers to the staging WAL")
			assert.Equal(t, uint64(len(acked)), st.StagedWrites+st.DirectWrites)
			// Routing changes are logged in pairs: to the staging WAL
			// first, then back (the cancelled batch's path marked the
			// space slow without a word before).
			slow := false
			changes := 0
			for _, en := range logs.All() {
				switch en.Message {
				case "space routed to the staging WAL":
					assert.False(t, slow, "routed to the WAL twice without coming back")
					slow = true
					changes++
				case "space routed to its hot segment again":
					assert.True(t, slow, "routed back to the hot segment without having left it")
					slow = false
				}
			}
			assert.Positive(t, changes, "the reroute is logged")

			// Acknowledged means durable: cut the power, recover, read.
			disk.PowerLoss(rand.New(rand.NewSource(1)))
			sctx, scancel := context.WithTimeout(context.Background(), opTimeout)
			defer scancel()
			_ = e.Stop(sctx) // the process died with the power
			e2 := simEngine(t, disk)
			for i, v := range acked {
				r, err := e2.Get(ctx, sp, ringpipe.Point{i})
				if assert.NoError(t, err, "point %d", i) {
					assert.Equal(t, v, string(r.Value), "point %d", i)
				}
			}
		})
	}
}
