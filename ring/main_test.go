package ring_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test of package ring leaves a goroutine behind:
// the std backend's workers and deadline timers, the uring backend's owner
// goroutine and the suite's reapers must all be gone when the tests end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
