package durability

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring"
)

// Engine bugs the leak gate found, kept as regression tests.

// TestLeakMuxCloseHang: closing a ring.Mux over io_uring can hang for
// ever, and with it Engine.Stop (the block cache's Mux is closed by Stop).
// Found by the leak gate under -race (Stop blocked for minutes in
// snapshot.(*Cache).Close → ring.(*Mux).Close → uringRing.Close, waiting
// for reapMu). uringRing.reap ignores how many CQEs drain consumed: when
// Close sets closed and posts its wake-up NOP between the reaper's
// "closed?" check and its drain, drain eats the NOP (an internal CQE, no
// Completion), and the reaper goes on to WaitCQE with nothing in flight,
// holding reapMu, while Close waits for reapMu. Reaping again when drain
// consumed anything (as Close's own loop does) fixes it: with that change
// this test passed 3×20,000 iterations under -race; without it, it hangs
// within about 2,500.
func TestLeakMuxCloseHang(t *testing.T) {
	leakSkipWithout(t, ringpipe.BackendURing)
	for i := range 10000 {
		r, err := ring.New(ring.Options{Kind: ring.URing, Entries: 4})
		require.NoError(t, err)
		m := ring.NewMux(r)
		if i%2 == 0 {
			_, err := m.Do(ring.Op{Code: ring.OpNop})
			require.NoError(t, err)
		}
		closed := make(chan struct{})
		go func() {
			m.Close() //nolint:errcheck // the hang is the failure
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(leakStopLimit):
			t.Fatalf("Mux.Close hung at iteration %d", i)
		}
	}
}

// leakStopLimit is how long a Stop (or a ring's Close) may take before a
// test gives up on it: milliseconds when healthy, so a minute means a hang.
const leakStopLimit = time.Minute

// leakStop stops e, and crashes the test binary with every goroutine's
// stack when Stop hangs past leakStopLimit (it ignores its context when it
// does): a clear failure now rather than the test timeout's, minutes
// later. what names the moment for the message.
func leakStop(ctx context.Context, e *ringpipe.Engine, what string) error {
	watchdog := time.AfterFunc(leakStopLimit, func() {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		panic(fmt.Sprintf("engine bug: Stop hung for %v (%s); see TestLeakMuxCloseHang\n%s", leakStopLimit, what, buf))
	})
	defer watchdog.Stop()
	return e.Stop(ctx)
}
