package snapshot

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
)

// manhattan returns the L1 distance of a and b.
func manhattan(a, b messages.Point) uint64 {
	var d uint64
	for i := range a {
		if a[i] > b[i] {
			d += uint64(a[i] - b[i])
		} else {
			d += uint64(b[i] - a[i])
		}
	}
	return d
}

// TestHilbertExhaustive walks every key of small spaces: PointOf and Key
// are inverse, every point is hit once, and consecutive keys are
// neighbouring points (the defining property of the Hilbert curve).
func TestHilbertExhaustive(t *testing.T) {
	shapes := [][2]int{
		{1, 1}, {1, 5}, {1, 12},
		{2, 1}, {2, 2}, {2, 3}, {2, 4}, {2, 6},
		{3, 1}, {3, 2}, {3, 3}, {3, 4},
		{4, 1}, {4, 2}, {4, 3},
		{5, 2}, {6, 2}, {8, 1}, {8, 2}, {16, 1},
	}
	for _, s := range shapes {
		dims, bits := s[0], s[1]
		t.Run(fmt.Sprintf("dims%d_bits%d", dims, bits), func(t *testing.T) {
			n := uint64(1) << uint(dims*bits)
			seen := make(map[string]bool, n)
			var prev messages.Point
			spec := messages.SpaceSpec{Name: "x", Dims: dims, Bits: bits}
			for k := uint64(0); k < n; k++ {
				// Plain ifs: require in a loop of 65536 costs seconds under -race.
				p := PointOf(k, dims, bits)
				if err := spec.CheckPoint(p); err != nil {
					t.Fatalf("key %d: %v", k, err)
				}
				if got := Key(p, dims, bits); got != k {
					t.Fatalf("Key(PointOf(%d)) = %d", k, got)
				}
				id := fmt.Sprint(p)
				if seen[id] {
					t.Fatalf("point %v hit twice", p)
				}
				seen[id] = true
				if prev != nil && manhattan(prev, p) != 1 {
					t.Fatalf("keys %d and %d: %v -> %v are not neighbours", k-1, k, prev, p)
				}
				prev = p
			}
			assert.Len(t, seen, int(n))
			assert.Equal(t, make(messages.Point, dims), PointOf(0, dims, bits), "curve starts at the origin")
		})
	}
}

// TestHilbertDims1IsIdentity checks the one-dimensional special case.
func TestHilbertDims1IsIdentity(t *testing.T) {
	for _, c := range []uint32{0, 1, 2, 77, 1 << 20, 1<<32 - 1} {
		assert.Equal(t, uint64(c), Key(messages.Point{c}, 1, 32))
		assert.Equal(t, messages.Point{c}, PointOf(uint64(c), 1, 32))
	}
}

// TestHilbertLargeProperty checks the bijection and the adjacency of
// consecutive keys at random places of large spaces.
func TestHilbertLargeProperty(t *testing.T) {
	shapes := [][2]int{{1, 32}, {2, 32}, {16, 4}, {4, 16}, {3, 21}, {8, 8}, {5, 12}, {2, 7}}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, s := range shapes {
		dims, bits := s[0], s[1]
		t.Run(fmt.Sprintf("dims%d_bits%d", dims, bits), func(t *testing.T) {
			km := keyMask(dims, bits)
			for range 5000 {
				// point -> key -> point
				p := make(messages.Point, dims)
				for i := range p {
					p[i] = uint32(rng.Uint64() & coordMask(bits))
				}
				k := Key(p, dims, bits)
				require.LessOrEqual(t, k, km)
				require.Equal(t, p, PointOf(k, dims, bits))
				// key -> point -> key, and the neighbour along the curve
				k = rng.Uint64() & km
				q := PointOf(k, dims, bits)
				require.Equal(t, k, Key(q, dims, bits))
				if k < km {
					require.Equal(t, uint64(1), manhattan(q, PointOf(k+1, dims, bits)), "key %d", k)
				}
			}
			// The ends of the key space.
			assert.Equal(t, km, Key(PointOf(km, dims, bits), dims, bits))
			if dims > 1 {
				assert.Equal(t, uint64(1), manhattan(PointOf(km-1, dims, bits), PointOf(km, dims, bits)))
			}
		})
	}
}

// TestHilbertBadShape checks that bad shapes neither panic nor succeed.
func TestHilbertBadShape(t *testing.T) {
	assert.Nil(t, PointOf(1, 0, 4))
	assert.Nil(t, PointOf(1, 17, 1))
	assert.Nil(t, PointOf(1, 3, 22))
	assert.Equal(t, uint64(0), Key(messages.Point{1, 2}, 2, 33))
	// A short point counts missing coordinates as 0.
	assert.Equal(t, Key(messages.Point{3, 0}, 2, 4), Key(messages.Point{3}, 2, 4))
}

// boxPoints calls fn for every point of box.
func boxPoints(box Box, fn func(messages.Point)) {
	p := append(messages.Point(nil), box.Min...)
	for {
		fn(append(messages.Point(nil), p...))
		i := 0
		for ; i < len(p); i++ {
			if p[i] < box.Max[i] {
				p[i]++
				break
			}
			p[i] = box.Min[i]
		}
		if i == len(p) {
			return
		}
	}
}

func randomBox(rng *rand.Rand, dims, bits int) Box {
	b := Box{Min: make(messages.Point, dims), Max: make(messages.Point, dims)}
	for i := range dims {
		x, y := uint32(rng.Uint64()&coordMask(bits)), uint32(rng.Uint64()&coordMask(bits))
		b.Min[i], b.Max[i] = min(x, y), max(x, y)
	}
	return b
}

func checkRanges(t *testing.T, rs []KeyRange, max int) {
	t.Helper()
	require.LessOrEqual(t, len(rs), max)
	for i := range rs {
		require.LessOrEqual(t, rs[i].Lo, rs[i].Hi)
		if i > 0 {
			require.Less(t, rs[i-1].Hi, rs[i].Lo, "sorted and disjoint")
		}
	}
}

func inRanges(rs []KeyRange, k uint64) bool {
	for _, r := range rs {
		if r.Contains(k) {
			return true
		}
	}
	return false
}

// TestRangesRandomBoxes checks, for random boxes of small spaces, that the
// ranges cover every in-box key, that with a generous max they hold
// nothing else, and that a tight max still covers everything.
func TestRangesRandomBoxes(t *testing.T) {
	shapes := [][2]int{{1, 8}, {2, 5}, {3, 3}, {4, 2}, {2, 6}, {5, 2}}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, s := range shapes {
		dims, bits := s[0], s[1]
		t.Run(fmt.Sprintf("dims%d_bits%d", dims, bits), func(t *testing.T) {
			for range 200 {
				box := randomBox(rng, dims, bits)
				want := map[uint64]bool{}
				boxPoints(box, func(p messages.Point) { want[Key(p, dims, bits)] = true })

				exact := Ranges(box, dims, bits, 1<<20)
				checkRanges(t, exact, 1<<20)
				var n uint64
				for _, r := range exact {
					for k := r.Lo; ; k++ {
						if !want[k] {
							t.Fatalf("box %v: key %d (%v) outside", box, k, PointOf(k, dims, bits))
						}
						n++
						if k == r.Hi {
							break
						}
					}
				}
				require.Equal(t, uint64(len(want)), n, "exact ranges hold every in-box key once")

				for _, max := range []int{1, 2, 3, 7} {
					rs := Ranges(box, dims, bits, max)
					checkRanges(t, rs, max)
					require.NotEmpty(t, rs)
					for k := range want {
						if !inRanges(rs, k) {
							t.Fatalf("box %v max %d: key %d missing", box, max, k)
						}
					}
				}
			}
		})
	}
}

// TestRangesLargeSpaces checks coverage by sampling in spaces too large to
// enumerate, and that the work stays bounded for a 16-dimensional box.
func TestRangesLargeSpaces(t *testing.T) {
	shapes := [][2]int{{2, 32}, {16, 4}, {4, 16}, {3, 21}, {1, 32}}
	rng := rand.New(rand.NewPCG(5, 6))
	for _, s := range shapes {
		dims, bits := s[0], s[1]
		t.Run(fmt.Sprintf("dims%d_bits%d", dims, bits), func(t *testing.T) {
			for range 30 {
				box := randomBox(rng, dims, bits)
				rs := Ranges(box, dims, bits, 64)
				checkRanges(t, rs, 64)
				for range 300 {
					p := make(messages.Point, dims)
					for i := range p {
						p[i] = box.Min[i] + uint32(rng.Uint64()%(uint64(box.Max[i]-box.Min[i])+1))
					}
					require.True(t, inRanges(rs, Key(p, dims, bits)), "box %v point %v", box, p)
				}
				// Corners are the likeliest to be missed.
				require.True(t, inRanges(rs, Key(box.Min, dims, bits)))
				require.True(t, inRanges(rs, Key(box.Max, dims, bits)))
			}
		})
	}
}

// TestRangesSmallBoxIsTight checks that a small box in a huge space gives
// ranges that hold few keys (refinement reaches the points).
func TestRangesSmallBoxIsTight(t *testing.T) {
	box := Box{Min: messages.Point{1000, 2000}, Max: messages.Point{1009, 2009}}
	rs := Ranges(box, 2, 32, 1000)
	var n uint64
	for _, r := range rs {
		n += r.Hi - r.Lo + 1
	}
	assert.Equal(t, uint64(100), n)
	rs = Ranges(box, 2, 32, 4)
	require.Len(t, rs, 4)
	n = 0
	for _, r := range rs {
		n += r.Hi - r.Lo + 1
	}
	assert.Less(t, n, uint64(100000), "4 ranges for a 10x10 box stay near it")
}

// TestRangesEdgeCases covers empty, clamped and whole-space boxes.
func TestRangesEdgeCases(t *testing.T) {
	assert.Nil(t, Ranges(Box{Min: messages.Point{5, 1}, Max: messages.Point{4, 9}}, 2, 4, 8), "empty box")
	assert.Nil(t, Ranges(Box{Min: messages.Point{16, 0}, Max: messages.Point{20, 9}}, 2, 4, 8), "box beyond the space")
	assert.Nil(t, Ranges(Box{Min: messages.Point{1}, Max: messages.Point{2, 2}}, 2, 4, 8), "wrong shape")
	assert.Equal(t, []KeyRange{{0, 255}}, Ranges(Box{Min: messages.Point{0, 0}, Max: messages.Point{15, 99}}, 2, 4, 8), "clamped whole space")
	assert.Equal(t, []KeyRange{{0, ^uint64(0)}}, Ranges(Box{Min: messages.Point{0, 0}, Max: messages.Point{^uint32(0), ^uint32(0)}}, 2, 32, 8))
	assert.Equal(t, []KeyRange{{7, 9}}, Ranges(Box{Min: messages.Point{7}, Max: messages.Point{9}}, 1, 32, 0))
	p := messages.Point{3, 9, 1}
	k := Key(p, 3, 4)
	assert.Equal(t, []KeyRange{{k, k}}, Ranges(Box{Min: p, Max: p}, 3, 4, 1), "one point")
}

func BenchmarkKey(b *testing.B) {
	for _, s := range [][2]int{{1, 32}, {2, 32}, {3, 21}, {4, 16}, {16, 4}} {
		dims, bits := s[0], s[1]
		b.Run(fmt.Sprintf("dims%d_bits%d", dims, bits), func(b *testing.B) {
			p := make(messages.Point, dims)
			for i := range p {
				p[i] = uint32(uint64(i*7919+13) & coordMask(bits))
			}
			var sink uint64
			for i := 0; b.Loop(); i++ {
				p[0] = uint32(uint64(i) & coordMask(bits))
				sink += Key(p, dims, bits)
			}
			_ = sink
		})
	}
}

func BenchmarkPointOf(b *testing.B) {
	for _, s := range [][2]int{{2, 32}, {4, 16}, {16, 4}} {
		dims, bits := s[0], s[1]
		b.Run(fmt.Sprintf("dims%d_bits%d", dims, bits), func(b *testing.B) {
			p := make(messages.Point, dims)
			for i := 0; b.Loop(); i++ {
				pointInto(p, uint64(i)*0x9e3779b97f4a7c15, dims, bits)
			}
		})
	}
}

func BenchmarkRanges(b *testing.B) {
	cases := []struct {
		name       string
		dims, bits int
		box        Box
		max        int
	}{
		{"dims2_bits32_1kx1k_max64", 2, 32, Box{messages.Point{100000, 200000}, messages.Point{100999, 200999}}, 64},
		{"dims2_bits32_1kx1k_max1024", 2, 32, Box{messages.Point{100000, 200000}, messages.Point{100999, 200999}}, 1024},
		{"dims3_bits21_max64", 3, 21, Box{messages.Point{1000, 2000, 3000}, messages.Point{1500, 2600, 3100}}, 64},
		{"dims16_bits4_max64", 16, 4, Box{
			messages.Point{1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0},
			messages.Point{9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15, 8}}, 64},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if len(Ranges(c.box, c.dims, c.bits, c.max)) == 0 {
					b.Fatal("no ranges")
				}
			}
		})
	}
}
