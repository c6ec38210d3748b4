package livetail

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
)

// TestSlabGrowsWhileOldViewsRead publishes one record at a time across
// several slab chunks while goroutines read Views taken at chunk
// boundaries: each keeps answering with the records it had (run with
// -race: the Tail writes slots and chunk headers the readers never reach).
func TestSlabGrowsWhileOldViewsRead(t *testing.T) {
	tl := newTestTail(t)
	const n = 256 // chunks of 32, 32, 64, 128
	stop := make(chan struct{})
	var wg sync.WaitGroup
	read := func(v *View, upto int) {
		defer wg.Done()
		for {
			for i := 1; i <= upto; i++ {
				r, err := v.Get(sp1, messages.Point{uint32(i - 1)})
				if !assert.NoError(t, err) || !assert.Equal(t, messages.Revision(i), r.Revision) {
					return
				}
			}
			got, err := v.TailLen(sp1)
			if !assert.NoError(t, err) || !assert.Equal(t, upto, got) {
				return
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}
	for i := 1; i <= n; i++ {
		require.NoError(t, tl.Append(sp1, 1, put(messages.Revision(i), "v", uint32(i-1))))
		v := tl.Publish()
		if i == 1 || i == 31 || i == 32 || i == 33 || i == 64 || i == 65 || i == 128 {
			wg.Add(1)
			go read(v, i)
		}
	}
	close(stop)
	wg.Wait()
	// The last View reads every record once the writer is done.
	assert.Equal(t, messages.Revision(n), getRev(t, tl.View(), sp1, n-1))
}

// TestViewTakenBeforeSealReadsAfterIt seals a generation and sweeps the
// staged records a block holds: a View published before still reads them
// from the tail, the new one from the block.
func TestViewTakenBeforeSealReadsAfterIt(t *testing.T) {
	tl := newTestTail(t)
	var gen1 []messages.Record
	for i := range uint32(100) {
		r := put(messages.Revision(i+1), "hot", i)
		gen1 = append(gen1, r)
		require.NoError(t, tl.Append(sp1, 1, r))
	}
	// Staged copies of ten of them and ten others the block does not hold.
	for i := range uint32(10) {
		require.NoError(t, tl.Append(sp1, StagedGeneration, put(messages.Revision(i+1), "hot", i)))
		require.NoError(t, tl.Append(sp1, StagedGeneration, put(messages.Revision(1000+i), "staged", 200+i)))
	}
	before := tl.Publish()
	require.NoError(t, tl.Seal(sp1, 1, newBlock(line{}, gen1)))
	after := tl.Publish()

	n, err := before.TailLen(sp1)
	require.NoError(t, err)
	assert.Equal(t, 120, n)
	n, err = after.TailLen(sp1)
	require.NoError(t, err)
	assert.Equal(t, 10, n, "the staged records the block holds are swept")
	for _, v := range []*View{before, after} {
		for i := range uint32(100) {
			assert.Equal(t, messages.Revision(i+1), getRev(t, v, sp1, i))
		}
		for i := range uint32(10) {
			assert.Equal(t, messages.Revision(1000+i), getRev(t, v, sp1, 200+i))
		}
		assert.Len(t, scanAll(t, v, sp1, box1(0, 255)), 110)
	}
	blocks, err := before.Blocks(sp1)
	require.NoError(t, err)
	assert.Zero(t, blocks)
}

// TestRepeatedAppendsStayBounded appends the same records over and over:
// each replaces its twin, and the generation's slab is compacted so that it
// does not grow with the number of appends, while an old View keeps its
// records.
func TestRepeatedAppendsStayBounded(t *testing.T) {
	tl := newTestTail(t)
	for i := range uint32(10) {
		require.NoError(t, tl.Append(sp1, 1, put(messages.Revision(i+1), "a", i)))
	}
	old := tl.Publish()
	for range 1000 {
		for i := range uint32(10) {
			require.NoError(t, tl.Append(sp1, 1, put(messages.Revision(i+1), "b", i)))
		}
		tl.Publish()
	}
	s, err := tl.space(sp1)
	require.NoError(t, err)
	require.Len(t, s.gens, 1)
	g := s.gens[0]
	assert.Equal(t, 10, g.tree.Len())
	assert.LessOrEqual(t, int(g.used), 10+compactMin+1, "slots in use")
	assert.LessOrEqual(t, len(g.recs), 3, "slab chunks")
	v := tl.View()
	for i := range uint32(10) {
		r, err := v.Get(sp1, messages.Point{i})
		require.NoError(t, err)
		assert.Equal(t, "b", string(r.Value))
		r, err = old.Get(sp1, messages.Point{i})
		require.NoError(t, err)
		assert.Equal(t, "a", string(r.Value))
	}
}

// TestPublishOneAllocations pins the point of the slab and the frozen
// trees: publishing one record into a tail of 10k allocates a handful of
// objects (the nodes on one path, the View and the space's view), not one
// per node level and tree as it did (BenchmarkPublishOne).
func TestPublishOneAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts")
	}
	tl := newTestTail(t)
	rev := messages.Revision(0)
	for i := range uint32(10_000) {
		rev++
		require.NoError(t, tl.Append(sp1, 1, put(rev, "v", (i*7919)%(1<<8))))
	}
	tl.Publish()
	p := messages.Point{7}
	r := messages.Record{Point: p, Value: []byte("v")}
	allocs := testing.AllocsPerRun(1000, func() {
		rev++
		r.Revision = rev
		if err := tl.Append(sp1, 1, r); err != nil {
			t.Fatal(err)
		}
		tl.Publish()
	})
	t.Logf("%.1f allocs per publish", allocs)
	assert.LessOrEqual(t, allocs, 6.0)
}
