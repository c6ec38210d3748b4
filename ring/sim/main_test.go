package sim

import (
	"testing"

	"go.uber.org/goleak"
)

// The sim backend starts no goroutines, but the tests do (a blocked Reap, a
// concurrent submitter), and a ring that dies with a blocked caller must
// wake it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
