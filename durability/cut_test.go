package durability

import (
	"context"
	"math/rand"
	"sync"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// cutter cuts a simulated disk's power at an exact operation index: armed
// with k, it injects EIO into every operation from index k on (none of them
// is performed: the machine is dying) and cuts the power as soon as one of
// them has started, from inside the Submit or Reap that started it. Ops
// started before k and completed by then have happened; the rest are lost
// or torn, as the power loss decides.
//
// Every engine of a suite makes its rings through ring (Config.NewRing), so
// the cutter sees every Submit and Reap on the disk.
type cutter struct {
	disk *sim.Disk
	rng  *rand.Rand // tear patterns; used only under mu

	mu     sync.Mutex
	armed  bool
	at     uint64        // the armed operation index
	fired  chan struct{} // closed at the cut
	report sim.LossReport
	cuts   int // power losses so far
}

func newCutter(disk *sim.Disk, seed int64) *cutter {
	return &cutter{disk: disk, rng: newRand(seed ^ 0x5eed), fired: make(chan struct{})}
}

// newRing is the Config.NewRing of every engine on the disk.
func (c *cutter) newRing(o ring.Options) (ring.Ring, error) {
	return &cutRing{Ring: c.disk.NewRing(o), c: c}, nil
}

// config returns cfg with its rings made by c.
func (c *cutter) config(cfg ringpipe.Config) ringpipe.Config {
	cfg.NewRing = c.newRing
	return cfg
}

// arm makes the power fail when operation k starts (k > disk.OpCount()).
// It returns the channel closed at the cut.
func (c *cutter) arm(k uint64) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed, c.at = true, k
	c.fired = make(chan struct{})
	c.disk.Inject(sim.Fault{Kind: sim.EIO, At: k, Persist: true})
	return c.fired
}

// disarm removes the armed cut, if it has not fired. It reports whether
// it had.
func (c *cutter) disarm() (fired bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.armed {
		return c.isFired()
	}
	c.armed = false
	c.disk.ClearFaults()
	return false
}

func (c *cutter) isFired() bool {
	select {
	case <-c.fired:
		return true
	default:
		return false
	}
}

// now cuts the power at once (armed or not) and reports the cut.
func (c *cutter) now() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut()
}

// cut cuts the power. REQUIRES: c.mu held.
func (c *cutter) cut() {
	c.report = c.disk.PowerLoss(c.rng) // also clears the faults
	c.cuts++
	if c.armed {
		c.armed = false
		close(c.fired)
	}
}

// check cuts the power once operation c.at has started. (Operations from
// c.at on fail without being performed, so cutting a little later, after
// more of them started, is the same cut.)
func (c *cutter) check() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.armed && c.disk.OpCount() >= c.at {
		c.cut()
	}
}

// cutRing is a simulated ring whose every call gives the cutter a look.
type cutRing struct {
	ring.Ring
	c *cutter
}

func (r *cutRing) Submit(ops []ring.Op) error {
	err := r.Ring.Submit(ops)
	r.c.check()
	return err
}

func (r *cutRing) Reap(out []ring.Completion) (int, error) {
	n, err := r.Ring.Reap(out)
	r.c.check()
	return n, err
}

func (r *cutRing) TryReap(out []ring.Completion) (int, error) {
	n, err := r.Ring.TryReap(out)
	r.c.check()
	return n, err
}

// opTimeout bounds one engine call in the suites: generous, since CI runs
// with -race on two cores; a healthy call takes a small fraction of it.

// kill stops an engine whose power was cut: the process is dead, so Stop
// gets an already cancelled context (it does not wait for a drain that the
// dead ring cannot do) and its error is of no interest. Stop still stops
// every goroutine, and fails every call still waiting.
func kill(e *ringpipe.Engine) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = e.Stop(ctx)
}
