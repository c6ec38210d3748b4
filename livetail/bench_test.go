package livetail

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
)

const benchSpace messages.SpaceID = 1

// benchTail returns a Tail whose space 1 (1-D, Bits 32) holds n records at
// keys 0..n-1, inserted in random order into generation 1, and the next
// free revision.
func benchTail(b *testing.B, n int) (*Tail, messages.Revision) {
	b.Helper()
	tl := NewTail()
	require.NoError(b, tl.AddSpace(messages.SpaceInfo{ID: benchSpace, SpaceSpec: messages.SpaceSpec{Name: "b", Dims: 1, Bits: 32}}, line{}))
	rng := rand.New(rand.NewPCG(1, 2))
	rev := messages.Revision(0)
	for _, k := range rng.Perm(n) {
		rev++
		require.NoError(b, tl.Append(benchSpace, 1, put(rev, "value-0123456789", uint32(k))))
	}
	tl.Publish()
	return tl, rev + 1
}

// BenchmarkPublishOne appends one record to a tail of n and publishes a
// View. Its cost must not grow materially with n: a publish copies one
// root-to-leaf path of the tree, never the tail.
func BenchmarkPublishOne(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("tail=%dk", n/1000), func(b *testing.B) {
			tl, rev := benchTail(b, n)
			rng := rand.New(rand.NewPCG(3, 4))
			var v *View
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := tl.Append(benchSpace, 1, put(rev, "value-0123456789", uint32(rng.IntN(n)))); err != nil {
					b.Fatal(err)
				}
				rev++
				v = tl.Publish()
			}
			b.StopTimer()
			if v.Revision() != rev-1 {
				b.Fatalf("view at revision %d, want %d", v.Revision(), rev-1)
			}
		})
	}
}

// BenchmarkGet looks up random points: in a tail of 100k records, and in
// eight blocks of 12.5k records each behind a small tail.
func BenchmarkGet(b *testing.B) {
	b.Run("tail=100k", func(b *testing.B) {
		tl, _ := benchTail(b, 100_000)
		v := tl.Publish()
		rng := rand.New(rand.NewPCG(5, 6))
		p := messages.Point{0}
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			p[0] = uint32(rng.IntN(100_000))
			if _, err := v.Get(benchSpace, p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("blocks=8", func(b *testing.B) {
		v := benchBlocks(b, 8, 12_500, 1_000)
		rng := rand.New(rand.NewPCG(5, 6))
		p := messages.Point{0}
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			p[0] = uint32(rng.IntN(100_000))
			if _, err := v.Get(benchSpace, p); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchBlocks returns a View of space 1 with nb blocks of per records each
// (block i holds keys i, i+nb, i+2*nb, ..., so that every block overlaps
// every other in key range) and a tail of tail records over the same keys.
func benchBlocks(b *testing.B, nb, per, tail int) *View {
	b.Helper()
	tl := NewTail()
	require.NoError(b, tl.AddSpace(messages.SpaceInfo{ID: benchSpace, SpaceSpec: messages.SpaceSpec{Name: "b", Dims: 1, Bits: 32}}, line{}))
	rev := messages.Revision(0)
	for i := range nb {
		recs := make([]messages.Record, per)
		for j := range recs {
			rev++
			recs[j] = put(rev, "value-0123456789", uint32(i+j*nb))
		}
		require.NoError(b, tl.Seal(benchSpace, uint64(i+1), newBlock(line{}, recs)))
	}
	rng := rand.New(rand.NewPCG(7, 8))
	for range tail {
		rev++
		require.NoError(b, tl.Append(benchSpace, uint64(nb+1), put(rev, "value-0123456789", uint32(rng.IntN(nb*per)))))
	}
	return tl.Publish()
}

// BenchmarkScan reads boxes of 1000 consecutive keys: from a tail of 100k
// records (no merge), and from eight overlapping blocks plus a tail (a
// 9-way merge). It reports ns per record yielded.
func BenchmarkScan(b *testing.B) {
	run := func(b *testing.B, v *View, keys int) {
		rng := rand.New(rand.NewPCG(9, 10))
		n := 0
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			lo := uint32(rng.IntN(keys - 1000))
			if err := v.Scan(benchSpace, box1(lo, lo+999), func(messages.Record) bool { n++; return true }); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if n < b.N*900 {
			b.Fatalf("%d records in %d scans", n, b.N)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/record")
	}
	b.Run("tail=100k", func(b *testing.B) {
		tl, _ := benchTail(b, 100_000)
		run(b, tl.Publish(), 100_000)
	})
	b.Run("blocks=8+tail", func(b *testing.B) {
		run(b, benchBlocks(b, 8, 12_500, 10_000), 100_000)
	})
}
