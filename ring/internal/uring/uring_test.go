package uring

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/internal/fdtest"
)

func TestSetupDropsRefusedFlags(t *testing.T) {
	// Bit 30 is no setup flag any kernel knows: Setup must drop it and
	// succeed with the rest.
	r, err := Setup(8, 0, []uint32{1 << 30, SetupSubmitAll})
	require.NoError(t, err)
	defer r.Close()
	p := r.Params()
	assert.Zero(t, p.Flags&(1<<30))
	assert.Equal(t, uint32(8), p.SQEntries)
	assert.Equal(t, uint32(16), p.CQEntries)
}

func TestSetupRejectsBadSize(t *testing.T) {
	_, err := Setup(0, 0, nil)
	assert.Error(t, err)
}

func TestNopRoundTrip(t *testing.T) {
	r, err := Setup(4, 0, nil)
	require.NoError(t, err)
	defer r.Close()
	for i := uint64(1); i <= 4; i++ {
		sqe := r.GetSQE()
		require.NotNil(t, sqe)
		sqe.Opcode = OpNop
		sqe.UserData = i
	}
	assert.Nil(t, r.GetSQE(), "the SQ holds only 4 entries")
	n, err := r.Submit(4)
	require.NoError(t, err)
	assert.Equal(t, 4, n)
	var cqes [8]CQE
	got := map[uint64]bool{}
	for len(got) < 4 {
		require.NoError(t, r.WaitCQE())
		k := r.PeekCQEs(cqes[:])
		for _, c := range cqes[:k] {
			assert.Zero(t, c.Res)
			got[c.UserData] = true
		}
	}
	assert.Len(t, got, 4)
	assert.Equal(t, uint32(4), r.SQFree())
}

func TestOverflowIsFlushed(t *testing.T) {
	r, err := Setup(4, 4, nil) // CQ of 4
	require.NoError(t, err)
	defer r.Close()
	if r.Params().Features&FeatNoDrop == 0 {
		t.Skip("kernel without IORING_FEAT_NODROP drops overflowed CQEs")
	}
	for round := 0; round < 4; round++ {
		for i := 0; i < 4; i++ {
			sqe := r.GetSQE()
			sqe.Opcode = OpNop
			sqe.UserData = uint64(round*4 + i)
		}
		_, err := r.Submit(0)
		require.NoError(t, err)
	}
	assert.True(t, r.Overflowed(), "16 completions into a CQ of 4")
	var cqes [4]CQE
	got := map[uint64]bool{}
	for len(got) < 16 {
		require.NoError(t, r.WaitCQE())
		k := r.PeekCQEs(cqes[:])
		for _, c := range cqes[:k] {
			got[c.UserData] = true
		}
		if k == 0 && r.Overflowed() {
			require.NoError(t, r.FlushOverflow())
		}
	}
	assert.Len(t, got, 16)
}

func TestProbe(t *testing.T) {
	r, err := Setup(4, 0, nil)
	require.NoError(t, err)
	defer r.Close()
	sup, err := r.Probe()
	require.NoError(t, err)
	for _, op := range []uint8{OpNop, OpRead, OpWrite, OpFsync, OpLinkTimeout} {
		assert.True(t, sup[op], "opcode %d", op)
	}
}

func TestCloseReleasesEverything(t *testing.T) {
	before := len(fdtest.List(t))
	for i := 0; i < 200; i++ {
		r, err := Setup(64, 0, nil)
		require.NoError(t, err)
		fd := r.Fd()
		require.NoError(t, r.Close())
		_, err = unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err == nil {
			// The number may have been reused by another test's open:
			// only a leak across all 200 would show in the count below.
			continue
		}
	}
	assert.LessOrEqual(t, len(fdtest.List(t)), before+1)
	// A second Close is harmless.
	r, err := Setup(4, 0, nil)
	require.NoError(t, err)
	require.NoError(t, r.Close())
	require.NoError(t, r.Close())
}
