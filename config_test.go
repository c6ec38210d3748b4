package ringpipe

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/wal"
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

// TestConfigValueFitsLog: a log file must hold any one record with its
// header. Too small a Preallocate, or an explicit MaxValueSize it cannot
// hold, is refused naming the field; the default MaxValueSize shrinks to
// what the file holds, and a value of exactly that size is accepted by
// enqueue's own check.
func TestConfigValueFitsLog(t *testing.T) {
	for _, tc := range []struct {
		cfg   Config
		field string
	}{
		{Config{Dir: "/x", Preallocate: 4096}, "Preallocate"},
		{Config{Dir: "/x", Preallocate: 1 << 20, MaxValueSize: 1 << 20}, "MaxValueSize"},
		{Config{Dir: "/x", RingEntries: 4}, "RingEntries"},
		{Config{Dir: "/x", RingEntries: 1}, "RingEntries"},
	} {
		_, err := tc.cfg.withDefaults()
		if assert.Error(t, err, "%+v", tc.cfg) {
			assert.Contains(t, err.Error(), "Config."+tc.field)
		}
	}
	c, err := Config{Dir: "/x", Preallocate: 8192}.withDefaults()
	require.NoError(t, err)
	assert.Positive(t, c.MaxValueSize)
	c, err = Config{Dir: "/x", Preallocate: 1 << 20}.withDefaults()
	require.NoError(t, err)
	fit := c.MaxValueSize
	assert.Less(t, fit, DefaultMaxValueSize, "the default shrinks to what a 1 MiB file holds")
	rec := func(v int) int {
		return wal.FrameSize(wal.RecordSize(messages.Record{Point: make(messages.Point, 16), Value: make([]byte, v)}))
	}
	assert.LessOrEqual(t, int64(rec(fit)), c.Preallocate-4096, "a value of MaxValueSize fits")
	assert.Greater(t, int64(rec(fit+1)), c.Preallocate-4096, "one byte more does not")
	c, err = Config{Dir: "/x"}.withDefaults()
	require.NoError(t, err)
	assert.Equal(t, DefaultMaxValueSize, c.MaxValueSize, "the default Preallocate holds the default MaxValueSize")
}

// TestConfigBatchSizeFollowsSmallQueue: with only QueueCapacity set below
// the default BatchSize, the default shrinks to the queue (it was refused,
// naming BatchSize, a field the caller never set); an explicit BatchSize
// above the queue is still refused.
func TestConfigBatchSizeFollowsSmallQueue(t *testing.T) {
	c, err := Config{Dir: "/x", QueueCapacity: 16}.withDefaults()
	require.NoError(t, err)
	assert.Equal(t, 16, c.BatchSize)
	c, err = Config{Dir: "/x", QueueCapacity: 64}.withDefaults()
	require.NoError(t, err)
	assert.Equal(t, DefaultBatchSize, c.BatchSize)
	_, err = Config{Dir: "/x", QueueCapacity: 16, BatchSize: 17}.withDefaults()
	assert.ErrorContains(t, err, "Config.BatchSize")
}
