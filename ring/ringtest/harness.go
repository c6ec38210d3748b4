// Package ringtest is the conformance suite that every ring backend must
// pass: the same tests run against uring, std and sim.
package ringtest

import (
	"testing"
	"time"

	"github.com/ringpipe/ringpipe/ring"
)

// Harness adapts one backend to the suite.
type Harness struct {
	Name string
	// New returns a fresh ring built with opts (Kind is ignored by sim) and
	// a directory in which the suite may create files. The harness closes
	// the ring and removes the directory in t.Cleanup.
	New func(t *testing.T, opts ring.Options) (ring.Ring, string)
	// Real is set for backends on the OS: pipes, RLIMIT_FSIZE and O_DIRECT
	// alignment rules then work as on Linux, and the suite uses them.
	Real bool
	// InjectShortWrite makes the next write on r transfer fewer bytes than
	// asked (but more than zero). Nil on Real backends: the suite provokes
	// short writes with a pipe or RLIMIT_FSIZE instead.
	InjectShortWrite func(t *testing.T, r ring.Ring)
	// InjectDelay makes the next op of code c on r take at least d (on a
	// virtual clock for sim). Nil on Real backends: the suite blocks a read
	// on an empty pipe instead.
	InjectDelay func(t *testing.T, r ring.Ring, c ring.Opcode, d time.Duration)
}
