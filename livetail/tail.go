package livetail

import (
	"context"

	"errors"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/ringpipe/ringpipe/messages"
)

// StagedGeneration is the generation of a record acknowledged from the
// staging WAL before the promoter put it into a hot generation. Such records
// are dropped by the first seal whose block holds them or a newer revision
// of their point; if the promoter later appends the record again under its
// real generation, readers count it once.
const StagedGeneration uint64 = math.MaxUint64

// Tail is the publisher's side of the View: it applies appended records and
// sealed blocks and publishes a new View per batch (Publish).
//
// A Tail is not safe for concurrent use: one goroutine (the live-tail
// publisher) owns it. The Views it returns are immutable and may be read by
// any goroutine.
type Tail struct {
	spaces []*spaceState // in the order added
	// index maps a space's ID to its position in spaces. Views share it, so
	// it is replaced, never modified, when a space is added.
	index map[messages.SpaceID]int
	rev   messages.Revision // highest revision appended or sealed
	view  *View             // last published
	dirty bool              // something changed since view was published
}

// spaceState is one space's mutable side, owned by the Tail.
type spaceState struct {
	info  messages.SpaceInfo
	keyer Keyer
	// gens are the generations of the tail by gen ascending, none empty.
	// Each remembers what the last View got and whether it changed since.
	gens []*generation
	// blocks is sorted by MaxRevision descending and shared with Views: it
	// is replaced, never modified in place.
	blocks []Block
	// sealed maps each generation sealed so far to its block, so that a
	// late Append to it is checked against the block instead of living in
	// the tail forever. One entry per block, like blocks.
	sealed map[uint64]Block
	view   *spaceView // last published; nil if changed since
}

// NewTail returns an empty Tail. Its first View has no spaces.
func NewTail() *Tail {
	return &Tail{index: emptyView.index, view: emptyView}
}

// AddSpace registers a space with the Keyer that maps its points to keys.
// Adding a known ID again with the same spec is a no-op; with another spec
// it is an error.
func (t *Tail) AddSpace(info messages.SpaceInfo, k Keyer) error {
	if err := info.Validate(); err != nil {
		return fmt.Errorf("livetail: add space %d: %w", info.ID, err)
	}
	if k == nil {
		return fmt.Errorf("livetail: add space %d: nil Keyer", info.ID)
	}
	if i, ok := t.index[info.ID]; ok {
		if s := t.spaces[i]; s.info != info {
			return fmt.Errorf("livetail: add space %d: already known as %q (Dims %d, Bits %d)",
				info.ID, s.info.Name, s.info.Dims, s.info.Bits)
		}
		return nil
	}
	index := maps.Clone(t.index)
	index[info.ID] = len(t.spaces)
	t.index = index
	t.spaces = append(t.spaces, &spaceState{info: info, keyer: k, sealed: map[uint64]Block{}})
	t.dirty = true
	return nil
}

func (t *Tail) space(id messages.SpaceID) (*spaceState, error) {
	i, ok := t.index[id]
	if !ok {
		return nil, fmt.Errorf("%w %d", ErrUnknownSpace, id)
	}
	return t.spaces[i], nil
}

// Append adds records of one space that are durable in hot generation gen
// (or StagedGeneration). A record whose Space is 0 is taken to be of space;
// another Space, or a point that does not fit the space, is an error and
// nothing is added. Appending a (space, revision) the tail already holds is
// harmless. Append takes ownership of each record's Point and Value.
//
// Cost: O(len(recs) * log n) for a tail of n records.
func (t *Tail) Append(space messages.SpaceID, gen uint64, recs ...messages.Record) error {
	s, err := t.space(space)
	if err != nil {
		return err
	}
	for i := range recs {
		r := &recs[i]
		if r.Space != 0 && r.Space != space {
			return fmt.Errorf("livetail: append to space %d: record %d is of space %d", space, i, r.Space)
		}
		if r.Revision == 0 {
			return fmt.Errorf("livetail: append to space %d: record %d has revision 0", space, i)
		}
		if err := s.info.CheckPoint(r.Point); err != nil {
			return fmt.Errorf("livetail: append to space %d: record %d: %w", space, i, err)
		}
	}
	if len(recs) == 0 {
		return nil
	}
	for _, r := range recs {
		r.Space = space
		if r.Revision > t.rev {
			t.rev = r.Revision
		}
		key := s.keyer.Key(r.Point)
		g := gen
		if b, ok := s.sealed[gen]; ok {
			// A late append to a generation already sealed: its block
			// answers for it unless the record is newer than what the block
			// holds at the point. A failed block read keeps the record in
			// the tail: readers count a revision held twice once.
			if old, ok, err := b.Get(context.Background(), key, r.Point); err == nil && ok && old.Revision >= r.Revision {
				continue
			}
			g = StagedGeneration
		}
		s.generation(g).put(key, r)
	}
	s.view = nil
	t.dirty = true
	return nil
}

// findGen returns the index of generation gen in s.gens and whether it is
// there.
func (s *spaceState) findGen(gen uint64) (int, bool) {
	return slices.BinarySearchFunc(s.gens, gen, func(g *generation, gen uint64) int {
		switch {
		case g.gen < gen:
			return -1
		case g.gen > gen:
			return 1
		}
		return 0
	})
}

// generation returns generation gen, creating it if needed.
func (s *spaceState) generation(gen uint64) *generation {
	i, ok := s.findGen(gen)
	if !ok {
		s.gens = slices.Insert(s.gens, i, &generation{gen: gen})
	}
	return s.gens[i]
}

// Seal makes block b of the space visible and drops from the tail every
// record of hot generation gen, which b must hold in full, and every staged
// record that b holds or shadows (b has a newer revision at its point).
// Sealing a generation the tail does not hold only adds the block (as
// recovery does for blocks named by the manifest).
//
// Cost: O(1) for the generation, O(s * log s) block lookups for s staged
// records and, if some are dropped, O(s log s) to copy the rest into a new
// tree and slab; O(blocks) to insert b into the index.
func (t *Tail) Seal(space messages.SpaceID, gen uint64, b Block) error {
	s, err := t.space(space)
	if err != nil {
		return err
	}
	if b == nil {
		return fmt.Errorf("livetail: seal space %d generation %d: nil block", space, gen)
	}
	if gen == StagedGeneration {
		return fmt.Errorf("livetail: seal space %d: StagedGeneration is not a hot generation", space)
	}
	if _, ok := s.sealed[gen]; ok {
		// Sealed already: a sealer that failed after its notice went
		// out sends it again.
		return nil
	}
	s.addBlock(b)
	if i, ok := s.findGen(gen); ok {
		// Views published before keep the generation's tree and slab;
		// the Tail lets go of them.
		s.gens = slices.Delete(s.gens, i, i+1)
	}
	s.sealed[gen] = b
	if i, ok := s.findGen(StagedGeneration); ok {
		g := s.gens[i]
		var drop []entry
		g.tree.ascend(pos{}, func(e entry) bool {
			if e.key >= b.MinKey() && e.key <= b.MaxKey() && b.MayContain(e.key) {
				// A failed block read keeps the record, as a late Append
				// does.
				if old, ok, err := b.Get(context.Background(), e.key, g.recs.at(e.slot).Point); err == nil && ok && old.Revision >= e.rev {
					drop = append(drop, e)
				}
			}
			return true
		})
		switch {
		case len(drop) == g.tree.Len():
			s.gens = slices.Delete(s.gens, i, i+1)
		case len(drop) > 0:
			// A new slab of the records that remain, so that the
			// dropped ones are freed with the Views that still hold
			// them.
			g.rebuild(drop)
		}
	}
	if r := b.MaxRevision(); r > t.rev {
		t.rev = r
	}
	s.view = nil
	t.dirty = true
	return nil
}

// AddBlock makes block b of the space visible without dropping anything
// from the tail (recovery loading the manifest's block index).
func (t *Tail) AddBlock(space messages.SpaceID, b Block) error {
	s, err := t.space(space)
	if err != nil {
		return err
	}
	if b == nil {
		return fmt.Errorf("livetail: add block to space %d: nil block", space)
	}
	s.addBlock(b)
	if r := b.MaxRevision(); r > t.rev {
		t.rev = r
	}
	s.view = nil
	t.dirty = true
	return nil
}

// addBlock inserts b into a new copy of the index, keeping it sorted by
// MaxRevision descending (ties: newest added first).
func (s *spaceState) addBlock(b Block) {
	i, _ := slices.BinarySearchFunc(s.blocks, b.MaxRevision(), func(x Block, r messages.Revision) int {
		// Ascending in "position": higher revisions first; b goes before
		// blocks with an equal MaxRevision.
		if x.MaxRevision() > r {
			return -1
		}
		return 1
	})
	blocks := make([]Block, 0, len(s.blocks)+1)
	blocks = append(blocks, s.blocks[:i]...)
	blocks = append(blocks, b)
	s.blocks = append(blocks, s.blocks[i:]...)
}

// Revision returns the highest revision appended or sealed so far.
func (t *Tail) Revision() messages.Revision { return t.rev }

// View returns the last published View.
func (t *Tail) View() *View { return t.view }

// Publish returns a View of everything applied so far, in one step for the
// whole batch of Appends and Seals since the last Publish; with nothing new
// it returns the last View again. Its cost is O(spaces + generations of the
// changed spaces): each changed generation's tree is frozen and shared with
// the View, never copied (the Tail copies nodes on its next change, see
// cowTree), and an unchanged space's spaceView is reused.
func (t *Tail) Publish() *View {
	if !t.dirty {
		return t.view
	}
	v := &View{rev: t.rev, index: t.index}
	if len(t.spaces) <= len(v.inline) {
		v.spaces = v.inline[:len(t.spaces)]
	} else {
		v.spaces = make([]*spaceView, len(t.spaces))
	}
	for i, s := range t.spaces {
		if s.view == nil {
			s.view = s.publish()
		}
		v.spaces[i] = s.view
	}
	t.view = v
	t.dirty = false
	return t.view
}

// publish builds the space's next spaceView.
func (s *spaceState) publish() *spaceView {
	v := &spaceView{info: s.info, keyer: s.keyer, blocks: s.blocks}
	if len(s.gens) <= len(v.inline) {
		v.gens = v.inline[:len(s.gens)]
	} else {
		v.gens = make([]genTree, len(s.gens))
	}
	for i, g := range s.gens {
		v.gens[i] = g.freeze()
	}
	return v
}

// Notice is one change for Apply: an Appended or a Sealed. The set is
// closed (an unexported marker method).
type Notice interface{ notice() }

// Appended says that Records of Space are durable in hot generation
// Generation (or StagedGeneration); see Append.
type Appended struct {
	Space      messages.SpaceID
	Generation uint64
	Records    []messages.Record
}

// Sealed says that Block holds every record of Space's hot generation
// Generation and is durable and named by the manifest; see Seal.
type Sealed struct {
	Space      messages.SpaceID
	Generation uint64
	Block      Block
}

func (Appended) notice() {}
func (Sealed) notice()   {}

// Apply applies a batch of notices in order and publishes one View for all
// of them, which is how the publisher turns a burst of notices into one
// publish. A notice that fails (unknown space, bad record) is skipped whole
// and its error returned, joined with the others; the rest are applied and
// published all the same.
func (t *Tail) Apply(ns ...Notice) (*View, error) {
	var errs []error
	for _, n := range ns {
		var err error
		switch n := n.(type) {
		case Appended:
			err = t.Append(n.Space, n.Generation, n.Records...)
		case Sealed:
			err = t.Seal(n.Space, n.Generation, n.Block)
		default:
			err = fmt.Errorf("livetail: apply: unknown notice %T", n)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return t.Publish(), errors.Join(errs...)
}
