package ringpipe

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: Stop
// must stop every goroutine the engine started, also after a failed Start,
// a crash or a power loss.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
