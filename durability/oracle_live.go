package durability

import "context"

// CheckLive checks an engine that was not freshly recovered — one still
// running, or failed with writes in flight — without letting what it sees
// settle the oracle: a write whose call failed may be absent from a live
// engine's View yet on disk (its bytes landed, its sync was cut short), so
// only a recovery may decide it. Acknowledged writes are checked as Check
// does; the oracle afterwards is as it was before.
func (o *Oracle) CheckLive(ctx context.Context, r Reader) Report {
	return o.clone().Check(ctx, r)
}

// clone returns a deep copy of o (every Write copied once, shared
// references kept shared).
func (o *Oracle) clone() *Oracle {
	o.mu.Lock()
	defer o.mu.Unlock()
	ws := make(map[*Write]*Write)
	cp := func(w *Write) *Write {
		if w == nil {
			return nil
		}
		if c, ok := ws[w]; ok {
			return c
		}
		c := *w
		ws[w] = &c
		return &c
	}
	cpAll := func(in []*Write) []*Write {
		if in == nil {
			return nil
		}
		out := make([]*Write, len(in))
		for i, w := range in {
			out[i] = cp(w)
		}
		return out
	}
	c := NewOracle()
	c.epoch, c.floor, c.maxAcked, c.pending = o.epoch, o.floor, o.maxAcked, o.pending
	c.problems = append([]string(nil), o.problems...)
	for id, s := range o.spaces {
		cs := &space{spec: s.spec, points: make(map[string]*point, len(s.points))}
		for k, pt := range s.points {
			cs.points[k] = &point{p: pt.p, base: cp(pt.base), writes: cpAll(pt.writes), dead: cpAll(pt.dead)}
		}
		c.spaces[id] = cs
	}
	for rev, w := range o.ackedRev {
		c.ackedRev[rev] = cp(w)
	}
	return c
}
