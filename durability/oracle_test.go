package durability

import (
	"context"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/snapshot"
)

// fakeReader is a recovered engine made up by a test: the newest record
// per point, and extra records that only Scan returns.
type fakeReader struct {
	spec  ringpipe.SpaceSpec
	recs  map[string]ringpipe.Record
	extra []ringpipe.Record
}

func newFake(spec ringpipe.SpaceSpec) *fakeReader {
	return &fakeReader{spec: spec, recs: make(map[string]ringpipe.Record)}
}

func (f *fakeReader) put(p ringpipe.Point, v []byte, rev ringpipe.Revision) {
	f.recs[pointKey(p)] = ringpipe.Record{Space: 1, Point: p, Value: v, Revision: rev}
}

func (f *fakeReader) del(p ringpipe.Point) { delete(f.recs, pointKey(p)) }

func (f *fakeReader) Get(_ context.Context, _ ringpipe.SpaceID, p ringpipe.Point) (ringpipe.Record, error) {
	r, ok := f.recs[pointKey(p)]
	if !ok {
		return ringpipe.Record{}, ringpipe.ErrNotFound
	}
	return r, nil
}

func (f *fakeReader) Scan(_ context.Context, _ ringpipe.SpaceID, _ ringpipe.Box, fn func(ringpipe.Record) bool) error {
	var all []ringpipe.Record
	for _, r := range f.recs {
		all = append(all, r)
	}
	all = append(all, f.extra...)
	key := func(r ringpipe.Record) uint64 { return snapshot.Key(r.Point, f.spec.Dims, f.spec.Bits) }
	slices.SortStableFunc(all, func(a, b ringpipe.Record) int {
		switch ka, kb := key(a), key(b); {
		case ka < kb:
			return -1
		case ka > kb:
			return 1
		}
		return 0
	})
	for _, r := range all {
		if !fn(r) {
			break
		}
	}
	return nil
}

var oracleSpec = ringpipe.SpaceSpec{Name: "t", Dims: 2, Bits: 4}

// oracleCase builds an oracle and a fake engine, lets the case write and
// shape the recovered state, and returns the Check's report.
func oracleCase(t *testing.T, do func(o *Oracle, f *fakeReader)) Report {
	t.Helper()
	o := NewOracle()
	o.AddSpace(1, oracleSpec)
	f := newFake(oracleSpec)
	do(o, f)
	return o.Check(context.Background(), f)
}

var (
	pA = ringpipe.Point{1, 2}
	pB = ringpipe.Point{3, 3}
)

// TestOracleAccepts: the outcomes the rules allow pass without a
// violation, and are classified.
func TestOracleAccepts(t *testing.T) {
	rep := oracleCase(t, func(o *Oracle, f *fakeReader) {
		w1 := o.Begin(1, pA, []byte("one"), false)
		o.Ack(w1, 5)
		w2 := o.Begin(1, pA, []byte("two"), false) // maybe, present
		o.Fail(w2, ringpipe.ErrStopped)
		w3 := o.Begin(1, pB, []byte("three"), false) // maybe, absent
		_ = w3
		w4 := o.Begin(1, pB, nil, false) // empty value, acked
		o.Ack(w4, 6)
		f.put(pA, []byte("two"), 9)
		f.put(pB, []byte{}, 6)
	})
	require.NoError(t, rep.Err())
	assert.Equal(t, 2, rep.Acked)
	assert.Equal(t, 1, rep.MaybePresent)
	assert.Equal(t, 1, rep.MaybeAbsent)
	assert.Equal(t, ringpipe.Revision(9), rep.MaxRev)
}

// TestOracleCatches: each broken promise is counted where it belongs.
func TestOracleCatches(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(o *Oracle, f *fakeReader)
		want func(Figures) int
	}{
		{"acked missing", func(o *Oracle, f *fakeReader) {
			o.Ack(o.Begin(1, pA, []byte("x"), false), 3)
		}, func(g Figures) int { return g.AckedLost }},
		{"older acked in place of newer", func(o *Oracle, f *fakeReader) {
			o.Ack(o.Begin(1, pA, []byte("old"), false), 3)
			o.Ack(o.Begin(1, pA, []byte("new"), false), 4)
			f.put(pA, []byte("old"), 3)
		}, func(g Figures) int { return g.AckedLost }},
		{"maybe below acked", func(o *Oracle, f *fakeReader) {
			o.Begin(1, pA, []byte("maybe"), false)
			o.Ack(o.Begin(1, pA, []byte("acked"), false), 7)
			f.put(pA, []byte("maybe"), 6)
		}, func(g Figures) int { return g.AckedLost }},
		{"acked delete undone", func(o *Oracle, f *fakeReader) {
			o.Ack(o.Begin(1, pA, []byte("v"), false), 3)
			o.Ack(o.Begin(1, pA, nil, true), 4)
			f.put(pA, []byte("v"), 3)
		}, func(g Figures) int { return g.AckedLost }},
		{"acked under a delete that never was", func(o *Oracle, f *fakeReader) {
			o.Ack(o.Begin(1, pA, []byte("v"), false), 3)
			o.NotSubmitted(o.Begin(1, pA, []byte("w"), false), ringpipe.ErrStopped)
		}, func(g Figures) int { return g.AckedLost }},
		{"torn value", func(o *Oracle, f *fakeReader) {
			o.Begin(1, pA, []byte("whole value"), false)
			f.put(pA, []byte("whole\x00\x00\x00\x00\x00\x00"), 3)
		}, func(g Figures) int { return g.HalfApplied }},
		{"applied twice", func(o *Oracle, f *fakeReader) {
			o.Ack(o.Begin(1, pA, []byte("v"), false), 3)
			f.put(pA, []byte("v"), 8)
		}, func(g Figures) int { return g.Duplicated }},
		{"revision given twice", func(o *Oracle, f *fakeReader) {
			o.Ack(o.Begin(1, pA, []byte("v"), false), 3)
			o.Ack(o.Begin(1, pB, []byte("w"), false), 3)
			f.put(pA, []byte("v"), 3)
			f.put(pB, []byte("w"), 3)
		}, func(g Figures) int { return g.Duplicated }},
		{"point twice in a scan", func(o *Oracle, f *fakeReader) {
			o.Ack(o.Begin(1, pA, []byte("v"), false), 3)
			f.put(pA, []byte("v"), 3)
			f.extra = append(f.extra, ringpipe.Record{Space: 1, Point: pA, Value: []byte("v"), Revision: 3})
		}, func(g Figures) int { return g.Duplicated }},
		{"never submitted present", func(o *Oracle, f *fakeReader) {
			o.NotSubmitted(o.Begin(1, pA, []byte("v"), false), ringpipe.ErrStopped)
			f.put(pA, []byte("v"), 3)
		}, func(g Figures) int { return g.Phantom }},
		{"point nobody wrote", func(o *Oracle, f *fakeReader) {
			f.extra = append(f.extra, ringpipe.Record{Space: 1, Point: pB, Value: []byte("?"), Revision: 3})
		}, func(g Figures) int { return g.Phantom }},
		{"scan misses a record", func(o *Oracle, f *fakeReader) {
			o.Ack(o.Begin(1, pA, []byte("v"), false), 3)
			o.Ack(o.Begin(1, pB, []byte("w"), false), 4)
			f.put(pA, []byte("v"), 3)
			f.put(pB, []byte("w"), 4)
			f.extra = nil
			f.recs[pointKey(pB)] = ringpipe.Record{Space: 1, Point: pB, Value: []byte("w"), Revision: 4}
			f.extra = append(f.extra, ringpipe.Record{Space: 1, Point: pB, Value: []byte("other"), Revision: 4})
		}, func(g Figures) int { return g.Duplicated + g.ScanMismatches }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := oracleCase(t, tc.do)
			assert.Positive(t, tc.want(rep.Figures), "%v", rep.Figures)
			assert.Error(t, rep.Err())
			assert.NotEmpty(t, rep.Problems)
		})
	}
}

// TestOracleAcrossRecoveries: what a Check saw is the next one's
// baseline — a maybe write found present must stay, one found absent must
// not come back, and revisions after a recovery must be above it.
func TestOracleAcrossRecoveries(t *testing.T) {
	ctx := context.Background()
	o := NewOracle()
	o.AddSpace(1, oracleSpec)
	f := newFake(oracleSpec)
	o.Begin(1, pA, []byte("kept"), false)
	o.Begin(1, pB, []byte("gone"), false)
	f.put(pA, []byte("kept"), 10)
	require.NoError(t, o.Check(ctx, f).Err())

	// The same state again: fine.
	require.NoError(t, o.Check(ctx, f).Err())

	// pA's maybe write, present before, now missing: lost.
	f.del(pA)
	rep := o.Check(ctx, f)
	assert.Equal(t, 1, rep.AckedLost, "%v", rep.Err())

	// pB's write, found absent, comes back: a phantom.
	o = NewOracle()
	o.AddSpace(1, oracleSpec)
	f = newFake(oracleSpec)
	o.Begin(1, pB, []byte("gone"), false)
	require.NoError(t, o.Check(ctx, f).Err())
	f.put(pB, []byte("gone"), 4)
	rep = o.Check(ctx, f)
	assert.Equal(t, 1, rep.Phantom, "%v", rep.Err())

	// A revision acknowledged after a recovery must be above what it saw.
	o = NewOracle()
	o.AddSpace(1, oracleSpec)
	f = newFake(oracleSpec)
	o.Ack(o.Begin(1, pA, []byte("a"), false), 20)
	f.put(pA, []byte("a"), 20)
	require.NoError(t, o.Check(ctx, f).Err())
	o.Ack(o.Begin(1, pB, []byte("b"), false), 15)
	f.put(pB, []byte("b"), 15)
	rep = o.Check(ctx, f)
	assert.Equal(t, 1, rep.RevisionErrors, "%v", rep.Err())
}

// TestValue: values are unique, of the asked size, and a torn copy does
// not match the original.
func TestValue(t *testing.T) {
	rng := newRand(1)
	seen := make(map[string]bool)
	for range 1000 {
		n := ValueSize(rng, 64<<10)
		require.GreaterOrEqual(t, n, 0)
		require.LessOrEqual(t, n, 64<<10)
		v := Value(rng, max(n, 8))
		require.Len(t, v, max(n, 8))
		require.False(t, seen[string(v)], "a value repeated")
		seen[string(v)] = true
	}
	v := Value(rng, 2048)
	torn := slices.Clone(v)
	clear(torn[512:1024])
	assert.NotEqual(t, v, torn)
}
