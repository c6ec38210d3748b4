package ring

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"
)

func TestAutoFallsBackToStd(t *testing.T) {
	saved := uringNew
	defer func() { uringNew = saved }()
	uringNew = func(Options) (Ring, error) {
		return nil, &PathError{Op: "io_uring_setup", Err: unix.EPERM} // as under a seccomp profile
	}
	core, logs := observer.New(zap.InfoLevel)
	r, err := New(Options{Kind: Auto, Logger: zap.New(core)})
	require.NoError(t, err)
	defer r.Close()
	info := r.Info()
	assert.Equal(t, "std", info.Backend)
	assert.Contains(t, info.Fallback, "operation not permitted")
	assert.NotEmpty(t, info.Kernel)
	require.Equal(t, 1, logs.Len(), "the fallback is logged once")
	assert.Contains(t, logs.All()[0].Message, "io_uring unavailable")

	_, err = New(Options{Kind: URing})
	assert.ErrorIs(t, err, unix.EPERM, "URing does not fall back")
}

func TestAutoPrefersURing(t *testing.T) {
	r, err := New(Options{Kind: Auto})
	require.NoError(t, err)
	defer r.Close()
	if r.Info().Backend != "uring" {
		t.Skipf("io_uring unavailable here: %s", r.Info().Fallback)
	}
	assert.Empty(t, r.Info().Fallback)
	assert.NotZero(t, r.Info().Features)
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{{Entries: 3}, {Entries: 65536}, {Capacity: -1}, {Kind: Kind(9)}} {
		_, err := New(o)
		assert.Error(t, err, "%+v", o)
	}
}
