package actors

import (
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/ringpipe/ringpipe/ring"
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
