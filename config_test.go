package ringpipe

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConfigDefaults(t *testing.T) {
	c, err := Config{Dir: "/x"}.withDefaults()
	require.NoError(t, err)
	assert.Equal(t, DefaultQueueCapacity, c.QueueCapacity)
	assert.Equal(t, uint32(DefaultRingEntries), c.RingEntries)
	assert.Equal(t, DefaultBatchSize, c.BatchSize)
	assert.Equal(t, time.Duration(0), c.BatchTimeout)
	assert.Equal(t, 2*time.Millisecond, c.DirectWriteTimeout)
	assert.Equal(t, time.Millisecond, c.PromoteInterval)
	assert.Equal(t, 16384, c.SealThreshold)
	assert.Equal(t, int64(4<<20), c.SealBytes)
	assert.Equal(t, 1<<20, c.MaxValueSize)
	assert.Equal(t, int64(64<<20), c.Preallocate)
	assert.Equal(t, TolerateTornTail, c.WALRecovery)
	assert.NotNil(t, c.Logger)
}

func TestConfigNamesTheBadField(t *testing.T) {
	for field, c := range map[string]Config{
		"Dir":                {},
		"Backend":            {Dir: "/x", Backend: 7},
		"WALRecovery":        {Dir: "/x", WALRecovery: 5},
		"QueueCapacity":      {Dir: "/x", QueueCapacity: -1},
		"BatchSize":          {Dir: "/x", BatchSize: 100, QueueCapacity: 10},
		"SealThreshold":      {Dir: "/x", SealThreshold: -3},
		"MaxValueSize":       {Dir: "/x", MaxValueSize: 1 << 30},
		"BatchTimeout":       {Dir: "/x", BatchTimeout: -time.Second},
		"DirectWriteTimeout": {Dir: "/x", DirectWriteTimeout: -1},
		"PromoteInterval":    {Dir: "/x", PromoteInterval: -1},
		"SealBytes":          {Dir: "/x", SealBytes: -1},
		"Preallocate":        {Dir: "/x", Preallocate: 1000},
		"RingEntries":        {Dir: "/x", RingEntries: 100},
	} {
		_, err := c.withDefaults()
		if assert.Error(t, err, field) {
			assert.Contains(t, err.Error(), "Config."+field, field)
		}
	}
}
