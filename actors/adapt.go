package actors

import (
	"context"

	"errors"
	"io"

	"github.com/ringpipe/ringpipe/livetail"
	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/snapshot"
)

// maxBoxRanges bounds the key ranges a box query is cut into: more ranges
// skip more of the key space, fewer cost less to compute. Scan filters
// points outside the box either way.
const maxBoxRanges = 64

// Keyer returns the space's Hilbert curve as a livetail.Keyer.
func Keyer(spec messages.SpaceSpec) livetail.Keyer { return hilbertKeyer{spec: spec} }

type hilbertKeyer struct{ spec messages.SpaceSpec }

func (h hilbertKeyer) Key(p messages.Point) uint64 {
	return snapshot.Key(p, h.spec.Dims, h.spec.Bits)
}

func (h hilbertKeyer) Ranges(b livetail.Box) []livetail.KeyRange {
	rs := snapshot.Ranges(snapshot.Box(b), h.spec.Dims, h.spec.Bits, maxBoxRanges)
	out := make([]livetail.KeyRange, len(rs))
	for i, r := range rs {
		out[i] = livetail.KeyRange(r)
	}
	return out
}

// Block adapts a sealed block to livetail.Block. Its reads go through the
// block's Cache: they may read a page from disk, and fail.
func Block(b *snapshot.Block) livetail.Block {
	m := b.Meta()
	return snapBlock{b: b, minKey: m.MinKey, maxKey: m.MaxKey, maxRev: m.MaxRev}
}

type snapBlock struct {
	b              *snapshot.Block
	minKey, maxKey uint64
	maxRev         messages.Revision
}

func (s snapBlock) MinKey() uint64                 { return s.minKey }
func (s snapBlock) MaxKey() uint64                 { return s.maxKey }
func (s snapBlock) MaxRevision() messages.Revision { return s.maxRev }
func (s snapBlock) MayContain(key uint64) bool     { return s.b.MayContain(key) }

func (s snapBlock) Get(ctx context.Context, key uint64, p messages.Point) (messages.Record, bool, error) {
	return s.b.GetContext(ctx, key, p)
}

func (s snapBlock) Scan(ctx context.Context, lo, hi uint64, fn func(uint64, messages.Record) bool) error {
	return s.b.RangeContext(ctx, lo, hi, func(e snapshot.Entry) bool { return fn(e.Key, e.Record) })
}

// NewBlockCache builds the engine's block read path (see snapshot.Cache)
// on r, a ring of its own that a ring.Mux reaps so that any goroutine may
// read, with a page cache of cacheBytes. The Cache owns r: closing it
// closes r. After that, a read that misses the cache runs on a fresh ring
// from fallback, closed right after it, so that a View stays readable once
// the engine stopped.
func NewBlockCache(r ring.Ring, fallback func() (ring.Ring, error), cacheBytes int64) *snapshot.Cache {
	mux := ring.NewMux(r)
	return snapshot.NewCache(snapshot.CacheOptions{
		Bytes: cacheBytes,
		Doer:  mux,
		Close: mux.Close,
		Fallback: func() (ring.Doer, func() error, error) {
			r, err := fallback()
			if err != nil {
				return nil, nil, err
			}
			return ring.NewSync(r), r.Close, nil
		},
	})
}

// SetBlockCache gives the sealer the engine's block read path, through
// which it opens each block it seals for the View.
// REQUIRES: Run has not started.
func (s *Sealer) SetBlockCache(c *snapshot.Cache) { s.blocks = c }

// ClosingRing returns r with a Close that also closes c, after r: how the
// engine's Stop, which closes its ring last, closes the block read path
// (whose ring and reaper must not outlive the engine).
func ClosingRing(r ring.Ring, c io.Closer) ring.Ring { return closingRing{Ring: r, c: c} }

type closingRing struct {
	ring.Ring
	c io.Closer
}

func (r closingRing) Close() error { return errors.Join(r.Ring.Close(), r.c.Close()) }
