package actors

import (
	"context"
	"fmt"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// TestSettleOrphansMkdirExists: an orphaned mkdir of a directory that
// exists (a seal cut short by Stop: ring.Mkdir treats EEXIST as success)
// and an orphaned open of a missing file (hot's check for a leftover) are
// not reported as failed background I/O; another op's error is. Before,
// Stop logged "background I/O cut short by Stop failed ... mkdir
// .../blocks: file exists" (a DirectIO audit run saw it) and "... open
// .../hot/...seg: no such file or directory" (the signal audit).
func TestSettleOrphansMkdirExists(t *testing.T) {
	d := &Doer{}
	reply := make(chan IOResult, 1)
	reply <- IOResult{Completions: []ring.Completion{
		{Code: ring.OpMkdir, Err: syscall.EEXIST},
		{Code: ring.OpOpen, Err: syscall.ENOENT},
		{Code: ring.OpUnlink, Err: syscall.EIO},
	}}
	d.orphan([]ring.Op{{Code: ring.OpMkdir, Path: "/db/blocks"}, {Code: ring.OpOpen, Path: "/db/hot/1-2.seg"},
		{Code: ring.OpUnlink, Path: "/db/x"}}, reply)
	errs := d.SettleOrphans()
	if assert.Len(t, errs, 1, "only the unlink's error: %v", errs) {
		assert.ErrorIs(t, errs[0], syscall.EIO)
	}
}

// TestViaSubmitterResendsNotPerformed: I/O that a submitter whose context
// ended answers as not performed (the io unit restarting) is sent again,
// and the restarted submitter's answer is the route's. Before, the route
// returned the "not performed" error, and a Close answered so was dropped
// with its fd open (TestFdlifeChaosThroughStop, about 1 run in 15).
func TestViaSubmitterResendsNotPerformed(t *testing.T) {
	sub := make(chan SubmitterMsg, 1)
	d := &Doer{}
	route := viaSubmitter(context.Background(), sub, d)
	go func() {
		m := (<-sub).(SubmitIO)
		m.Reply <- IOResult{Err: fmt.Errorf("submitter: stopping: %w: %w", context.Canceled, errNotPerformed)}
		m = (<-sub).(SubmitIO)
		m.Reply <- IOResult{Completions: []ring.Completion{{Code: ring.OpClose}}}
	}()
	cs, err := route([]ring.Op{{Code: ring.OpClose, FD: 7}})
	assert.NoError(t, err)
	assert.Len(t, cs, 1)
	assert.Empty(t, d.orphans, "performed: nothing for Stop to settle")
}

// TestSettleOrphansCloseFails: the closes SettleOrphans performs (a Close
// never sent, an fd an answered Open left) report their errors for the
// engine to log. Before, both were dropped: durability's
// TestIOErrorRecoverySweep (ci10) failed a directory sync's close cut
// short by Stop with EIO, and nothing reached a caller or the log.
func TestSettleOrphansCloseFails(t *testing.T) {
	disk := sim.NewDisk(1)
	d := NewDoer(ring.NewSync(disk.NewRing(ring.Options{})))
	a, err := ring.Open(d, "/a", unix.O_RDWR|unix.O_CREAT, 0o644)
	assert.NoError(t, err)
	b, err := ring.Open(d, "/b", unix.O_RDWR|unix.O_CREAT, 0o644)
	assert.NoError(t, err)
	disk.Inject(sim.Fault{Kind: sim.EIO, Ops: []ring.Opcode{ring.OpClose}, Persist: true})

	d.orphan([]ring.Op{{Code: ring.OpFsync, FD: a}, {Code: ring.OpClose, FD: a}}, nil) // never sent
	reply := make(chan IOResult, 1)
	reply <- IOResult{Completions: []ring.Completion{{Code: ring.OpOpen, Res: int64(b)}}}
	d.orphan([]ring.Op{{Code: ring.OpOpen, Path: "/b"}}, reply) // answered after its caller left
	errs := d.SettleOrphans()
	assert.Len(t, disk.Hits(), 2, "both closes were performed")
	if assert.Len(t, errs, 2, "%v", errs) {
		assert.ErrorIs(t, errs[0], syscall.EIO)
		assert.ErrorIs(t, errs[1], syscall.EIO)
		assert.Contains(t, fmt.Sprint(errs), "/b")
	}
}
