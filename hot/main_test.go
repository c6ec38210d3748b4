package hot

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ringpipe/ringpipe/ring"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// stdDoer returns a Doer over a std ring, closed when the test ends.
func stdDoer(t testing.TB) ring.Doer {
	t.Helper()
	r, err := ring.New(ring.Options{Kind: ring.Std})
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return ring.NewSync(r)
}
