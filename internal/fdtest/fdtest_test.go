package fdtest

import (
	"os"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestListSeesAnOpenedFile(t *testing.T) {
	before := List(t)
	f, err := os.Open(os.DevNull)
	require.NoError(t, err)
	opened := New(List(t), before)
	require.Len(t, opened, 1, "one more fd while the file is open")
	assert.Contains(t, opened[0], os.DevNull)
	require.NoError(t, f.Close())
	assert.Empty(t, New(List(t), before), "none more once it is closed")
	assert.True(t, slices.IsSorted(before))
}
