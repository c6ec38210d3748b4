package durability

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
)

// Engine bugs suite 6 found, kept as regression tests.

// TestKillStagedBatchTooLarge: a batch staged to the WAL was written as
// one WAL batch, and a WAL batch larger than a WAL segment (Preallocate)
// was refused, so valid Puts failed after they were queued. Found by
// TestKill with Preallocate 1 MiB and values up to 1 MiB: "submitter:
// stage 19 records: wal: batch of 1063832 bytes exceeds the segment size
// 1048576"; fixed in 01f3672 (batches are cut to fit a log file, and a
// record no log file can hold is refused up front with ErrValueTooLarge).
// A write is either refused before it is queued or it succeeds: it never
// fails for its size once accepted.
func TestKillStagedBatchTooLarge(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values []int
	}{
		// One value of the default MaxValueSize: no 1 MiB log file holds
		// it with its header, so it is refused up front.
		{"one-max-value", []int{1 << 20}},
		// One value that fits a log file alone.
		{"one-fitting-value", []int{1<<20 - 8<<10}},
		// Four values that each fit, batched together (BatchTimeout
		// lets the submitter gather them): no log file holds them all.
		{"batch", []int{600 << 10, 600 << 10, 600 << 10, 600 << 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			e, err := ringpipe.Start(ctx, ringpipe.Config{
				Dir:          t.TempDir(),
				Backend:      ringpipe.BackendStd,
				Preallocate:  1 << 20,
				BatchSize:    len(tc.values),
				BatchTimeout: 100 * time.Millisecond,
			})
			require.NoError(t, err)
			defer func() { assert.NoError(t, e.Stop(ctx)) }()
			space, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "big", Dims: 1, Bits: 8})
			require.NoError(t, err)
			var tickets []*ringpipe.Ticket
			var sizes []int
			for i, n := range tc.values {
				tk, err := e.PutAsync(ctx, space, ringpipe.Point{uint32(i)}, make([]byte, n))
				if err != nil {
					require.ErrorIs(t, err, ringpipe.ErrValueTooLarge, "PutAsync %d of %d bytes", i, n)
					require.Greater(t, n, 1<<20-4<<10, "refused a value that fits a log file")
					continue
				}
				tickets = append(tickets, tk)
				sizes = append(sizes, n)
			}
			for i, tk := range tickets {
				_, err := tk.Wait(ctx)
				assert.NoError(t, err, "accepted Put of %d bytes", sizes[i])
			}
			if tc.name != "one-max-value" {
				assert.Len(t, tickets, len(tc.values), "values that fit a log file are accepted")
			}
		})
	}
}
