package snapshot

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	"github.com/ringpipe/ringpipe/messages"
)

// State is what the manifest says: the space registry, each space's block
// index, the sealed hot generations, the retired WAL segments and the id
// counters.
//
// A State is immutable once returned: applying an edit builds a new State
// that shares every unchanged part with the old one (copy-on-write per
// space), so a reader (the live-tail View) may hold a *State or a
// *BlockIndex for as long as it likes without locks.
type State struct {
	spaces     map[messages.SpaceID]*spaceState
	byName     map[string]messages.SpaceID
	walRetired uint64
	nextSpace  messages.SpaceID
	nextBlock  uint64
	maxRev     messages.Revision
}

// spaceState is one space's part of a State; immutable once published.
type spaceState struct {
	info      messages.SpaceInfo
	index     *BlockIndex
	sealedGen uint64
	sealedRev messages.Revision
}

// NewState returns the state of an empty manifest: no spaces, ids from 1.
func NewState() *State {
	return &State{
		spaces:    map[messages.SpaceID]*spaceState{},
		byName:    map[string]messages.SpaceID{},
		nextSpace: 1,
		nextBlock: 1,
	}
}

// builder applies edits to a private copy of a State, copying each space
// on first touch, so that a batch of n edits costs O(n + size of the
// spaces it touches) rather than a copy per edit.
type builder struct {
	s       *State
	touched map[messages.SpaceID]*spaceBuild
}

// spaceBuild is a space being changed: a private spaceState whose index
// slice is private too and unsorted until finish.
type spaceBuild struct {
	sp  *spaceState
	ids map[uint64]struct{} // ids of sp's blocks
}

func newBuilder(s *State) *builder {
	c := *s
	c.spaces = maps.Clone(s.spaces)
	c.byName = maps.Clone(s.byName)
	return &builder{s: &c, touched: map[messages.SpaceID]*spaceBuild{}}
}

// space returns space id for changing, or an error if it is unknown.
func (b *builder) space(id messages.SpaceID) (*spaceBuild, error) {
	if sb, ok := b.touched[id]; ok {
		return sb, nil
	}
	old, ok := b.s.spaces[id]
	if !ok {
		return nil, fmt.Errorf("unknown space %d", id)
	}
	sp := *old
	sp.index = &BlockIndex{blocks: slices.Clone(old.index.blocks)}
	sb := &spaceBuild{sp: &sp, ids: make(map[uint64]struct{}, len(sp.index.blocks))}
	for _, m := range sp.index.blocks {
		sb.ids[m.ID] = struct{}{}
	}
	b.s.spaces[id] = &sp
	b.touched[id] = sb
	return sb, nil
}

// finish restores the index order of the touched spaces and returns the
// new State.
func (b *builder) finish() *State {
	for _, sb := range b.touched {
		slices.SortFunc(sb.sp.index.blocks, newer)
	}
	return b.s
}

// With returns s changed by edits, applied in order, or the first edit's
// error; s itself never changes.
func (s *State) With(edits ...Edit) (*State, error) {
	b := newBuilder(s)
	for i, e := range edits {
		if err := e.apply(b); err != nil {
			return nil, fmt.Errorf("snapshot: edit %d (%T): %w", i, e, err)
		}
	}
	return b.finish(), nil
}

// Spaces returns every space, by id.
func (s *State) Spaces() []messages.SpaceInfo {
	out := make([]messages.SpaceInfo, 0, len(s.spaces))
	for _, sp := range s.spaces {
		out = append(out, sp.info)
	}
	slices.SortFunc(out, func(a, b messages.SpaceInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Space returns the space with id.
func (s *State) Space(id messages.SpaceID) (messages.SpaceInfo, bool) {
	sp, ok := s.spaces[id]
	if !ok {
		return messages.SpaceInfo{}, false
	}
	return sp.info, true
}

// SpaceByName returns the space called name.
func (s *State) SpaceByName(name string) (messages.SpaceInfo, bool) {
	id, ok := s.byName[name]
	if !ok {
		return messages.SpaceInfo{}, false
	}
	return s.spaces[id].info, true
}

// Index returns the block index of space (empty for a space without
// blocks), or nil for an unknown space.
func (s *State) Index(space messages.SpaceID) *BlockIndex {
	sp, ok := s.spaces[space]
	if !ok {
		return nil
	}
	return sp.index
}

// SealedGen returns the highest sealed hot generation of space (0: none)
// and the highest revision sealed from it; every generation at or below it
// is sealed, and a record of the space at or below the revision is in a
// block.
func (s *State) SealedGen(space messages.SpaceID) (gen uint64, maxRev messages.Revision) {
	if sp, ok := s.spaces[space]; ok {
		return sp.sealedGen, sp.sealedRev
	}
	return 0, 0
}

// WALRetired returns the highest retired staging WAL segment (0: none);
// every segment at or below it is retired.
func (s *State) WALRetired() uint64 { return s.walRetired }

// NextSpaceID returns the id the next new space gets.
func (s *State) NextSpaceID() messages.SpaceID { return s.nextSpace }

// NextBlockID returns an id no block has had.
func (s *State) NextBlockID() uint64 { return s.nextBlock }

// MaxRevision returns the highest revision any block or sealed generation
// holds; the revision counter resumes above it (and above what the logs
// hold).
func (s *State) MaxRevision() messages.Revision { return s.maxRev }

// Edits returns edits that rebuild s from NewState: what a compacted
// manifest holds.
func (s *State) Edits() []Edit {
	var out []Edit
	for _, info := range s.Spaces() {
		sp := s.spaces[info.ID]
		out = append(out, SpaceCreated{ID: info.ID, Spec: info.SpaceSpec})
		// Oldest first, so that replay inserts in the index's order.
		bs := sp.index.blocks
		for i := len(bs) - 1; i >= 0; i-- {
			out = append(out, BlockAdded{Meta: bs[i]})
		}
		if sp.sealedGen != 0 {
			out = append(out, GenSealed{Space: info.ID, Gen: sp.sealedGen, MaxRev: sp.sealedRev})
		}
	}
	if s.walRetired != 0 {
		out = append(out, WALRetired{Seq: s.walRetired})
	}
	return append(out, NextIDs{Space: s.nextSpace, Block: s.nextBlock})
}

// Equal reports whether s and o say the same thing.
func (s *State) Equal(o *State) bool {
	return slices.EqualFunc(s.Edits(), o.Edits(), func(a, b Edit) bool { return a == b })
}

func (e SpaceCreated) apply(b *builder) error {
	s := b.s
	if e.ID == 0 {
		return fmt.Errorf("space id 0")
	}
	if err := e.Spec.Validate(); err != nil {
		return err
	}
	if _, ok := s.spaces[e.ID]; ok {
		return fmt.Errorf("space %d exists", e.ID)
	}
	if id, ok := s.byName[e.Spec.Name]; ok {
		return fmt.Errorf("space %q exists as %d", e.Spec.Name, id)
	}
	s.spaces[e.ID] = &spaceState{info: messages.SpaceInfo{ID: e.ID, SpaceSpec: e.Spec}, index: &BlockIndex{}}
	s.byName[e.Spec.Name] = e.ID
	if e.ID >= s.nextSpace {
		s.nextSpace = e.ID + 1
	}
	return nil
}

func (e BlockAdded) apply(b *builder) error {
	m := e.Meta
	switch {
	case m.Count == 0:
		return fmt.Errorf("block %d of space %d is empty", m.ID, m.Space)
	case m.MinKey > m.MaxKey || m.MinRev > m.MaxRev:
		return fmt.Errorf("block %d of space %d: inverted key or revision range", m.ID, m.Space)
	case m.Size <= 0:
		return fmt.Errorf("block %d of space %d: size %d", m.ID, m.Space, m.Size)
	}
	sb, err := b.space(m.Space)
	if err != nil {
		return err
	}
	if _, ok := sb.ids[m.ID]; ok {
		return fmt.Errorf("block %d of space %d exists", m.ID, m.Space)
	}
	if m.ID == ^uint64(0) {
		return fmt.Errorf("block id %d leaves no next id", m.ID)
	}
	sb.ids[m.ID] = struct{}{}
	sb.sp.index.blocks = append(sb.sp.index.blocks, m)
	b.s.nextBlock = max(b.s.nextBlock, m.ID+1)
	b.s.maxRev = max(b.s.maxRev, m.MaxRev)
	return nil
}

func (e BlockRemoved) apply(b *builder) error {
	sb, err := b.space(e.Space)
	if err != nil {
		return err
	}
	if _, ok := sb.ids[e.ID]; !ok {
		return fmt.Errorf("block %d of space %d does not exist", e.ID, e.Space)
	}
	delete(sb.ids, e.ID)
	bs := sb.sp.index.blocks
	i := slices.IndexFunc(bs, func(m BlockMeta) bool { return m.ID == e.ID })
	sb.sp.index.blocks = slices.Delete(bs, i, i+1)
	return nil
}

func (e GenSealed) apply(b *builder) error {
	sb, err := b.space(e.Space)
	if err != nil {
		return err
	}
	if e.Gen <= sb.sp.sealedGen {
		return fmt.Errorf("space %d: generation %d sealed after %d", e.Space, e.Gen, sb.sp.sealedGen)
	}
	sb.sp.sealedGen = e.Gen
	sb.sp.sealedRev = max(sb.sp.sealedRev, e.MaxRev)
	b.s.maxRev = max(b.s.maxRev, e.MaxRev)
	return nil
}

func (e WALRetired) apply(b *builder) error {
	if e.Seq < b.s.walRetired {
		return fmt.Errorf("WAL segment %d retired after %d", e.Seq, b.s.walRetired)
	}
	b.s.walRetired = e.Seq
	return nil
}

func (e NextIDs) apply(b *builder) error {
	b.s.nextSpace = max(b.s.nextSpace, e.Space)
	b.s.nextBlock = max(b.s.nextBlock, e.Block)
	return nil
}

// BlockIndex is one space's blocks, newest first: by MaxRev descending,
// then by ID descending. Blocks may overlap in key range; a point lookup
// consults every block whose key range (and Bloom filter) admits the key,
// newest first, and may stop at the first record found whose revision is
// above the next candidate's MaxRev. A BlockIndex is immutable.
type BlockIndex struct {
	blocks []BlockMeta
}

// Len returns the number of blocks.
func (x *BlockIndex) Len() int {
	if x == nil {
		return 0
	}
	return len(x.blocks)
}

// Blocks returns every block, newest first. The slice is shared: do not
// modify it.
func (x *BlockIndex) Blocks() []BlockMeta {
	if x == nil {
		return nil
	}
	return x.blocks
}

// Candidates returns the blocks whose key range holds key, newest first.
func (x *BlockIndex) Candidates(key uint64) []BlockMeta {
	var out []BlockMeta
	for _, b := range x.Blocks() {
		if b.MinKey <= key && key <= b.MaxKey {
			out = append(out, b)
		}
	}
	return out
}

// Overlapping returns the blocks whose key range meets one of ranges
// (sorted and disjoint, as Ranges returns them), newest first.
func (x *BlockIndex) Overlapping(ranges []KeyRange) []BlockMeta {
	var out []BlockMeta
	for _, b := range x.Blocks() {
		kr := b.KeyRange()
		// The first range ending at or after the block's start decides.
		i, _ := slices.BinarySearchFunc(ranges, kr.Lo, func(r KeyRange, k uint64) int { return cmp.Compare(r.Hi, k) })
		if i < len(ranges) && ranges[i].Lo <= kr.Hi {
			out = append(out, b)
		}
	}
	return out
}

func newer(a, b BlockMeta) int {
	if c := cmp.Compare(b.MaxRev, a.MaxRev); c != 0 {
		return c
	}
	return cmp.Compare(b.ID, a.ID)
}
