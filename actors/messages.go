package actors

import (
	"github.com/ringpipe/ringpipe/hot"
	"github.com/ringpipe/ringpipe/livetail"
	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
)

// The messages between actors that carry the format packages' types live
// here rather than in package messages: hot, wal, snapshot and livetail
// import messages for the record types, so messages cannot name theirs.
// They follow the same rules (STYLE.md 6-7): plain structs, never changed
// after sending, a closed set per inbox, replies with room for one.

// SubmitterMsg is a request in the submitter's control inbox.
type SubmitterMsg interface{ submitterMsg() }

// SubmitIO asks the submitter to submit Ops (one chain or independent
// ops) for the sealer or promoter; the completer sends every final
// Completion to Reply, in op order, once all have come.
type SubmitIO struct {
	Ops   []ring.Op
	Reply chan<- IOResult // room for one
}

// IOResult answers a SubmitIO.
type IOResult struct {
	Completions []ring.Completion
	Err         error // the submission failed; nothing was performed
}

// InstallSegment hands the submitter a new active generation for Space
// (created by the sealer). The submitter freezes the previous one once no
// batch is in flight on it and sends it to Reply (nil when the space had
// none).
type InstallSegment struct {
	Space messages.SpaceInfo
	Seg   *hot.Segment
	Reply chan<- *hot.Segment // room for one
}

// SegmentStatus asks how many records the space's active generation holds
// and how many of its staged records wait for promotion.
type SegmentStatus struct {
	Space messages.SpaceID
	Reply chan<- SegmentStatusReply // room for one
}

// SegmentStatusReply answers SegmentStatus.
type SegmentStatusReply struct {
	Records int
	Staged  int
}

// PromoteTick is the promoter's pacing: promote up to Max staged records
// now. Reply says how many were submitted (0: nothing to do).
type PromoteTick struct {
	Max   int
	Reply chan<- int // room for one
}

// PromoteSpace asks for every staged record of Space to be promoted;
// Reply gets nil once they are durable in its hot segment.
type PromoteSpace struct {
	Space messages.SpaceID
	Reply chan<- error // room for one
}

// ReplaceFailed tells the submitter that the sealer could not replace the
// active generation of Space because the disk is full (Err): the space's
// flushers, which wait for room to promote into and then for a seal, get
// Err. The sealer tries again at the next hint.
type ReplaceFailed struct {
	Space messages.SpaceID
	Err   error
}

func (ReplaceFailed) submitterMsg()  {}
func (SubmitIO) submitterMsg()       {}
func (InstallSegment) submitterMsg() {}
func (SegmentStatus) submitterMsg()  {}
func (PromoteTick) submitterMsg()    {}
func (PromoteSpace) submitterMsg()   {}

// PublisherMsg is a message in the live-tail publisher's inbox.
type PublisherMsg interface{ publisherMsg() }

// Appended says that Records of Space are durable in generation Gen (or
// livetail.StagedGeneration). Acks, parallel to Records where set, are
// completed once the View that shows the records is published.
type Appended struct {
	Space   messages.SpaceID
	Gen     uint64
	Records []messages.Record
	Acks    []*messages.Write
	Staged  bool // the acks are from the staging WAL
	// Seq, on the last message of a settlement, is that settlement's
	// number (see Fence); 0 on the others.
	Seq uint64
}

// Sealed says that Block holds all of Space's generation Gen and is
// durable and named by the manifest. Reply gets nil once a View shows it.
type Sealed struct {
	Space messages.SpaceID
	Gen   uint64
	Block livetail.Block
	Reply chan<- error // room for one
}

// AddSpace registers a new space with the View.
type AddSpace struct {
	Info  messages.SpaceInfo
	Keyer livetail.Keyer
	Reply chan<- error // room for one
}

// FailAcks completes Writes with Err (an I/O error) in order with the
// acknowledgements published before it.
type FailAcks struct {
	Writes []*messages.Write
	Err    error
	Seq    uint64 // as Appended's
}

// Fence answers Reply (nil) once the publisher has applied the messages of
// every settlement up to number Seq: the acknowledgements of the writes a
// Sync waited for, so that their tickets are done and the writes visible
// when Sync returns. The submitter sends it when a Sync's writes are all
// decided; the completer numbers its settlements and tells the submitter
// each one's number in its feedback before it sends the messages, so the
// Fence may arrive first and then waits.
type Fence struct {
	Seq   uint64
	Reply chan<- error // room for one
}

func (Appended) publisherMsg() {}
func (Sealed) publisherMsg()   {}
func (AddSpace) publisherMsg() {}
func (FailAcks) publisherMsg() {}
func (Fence) publisherMsg()    {}

// SealerMsg is a request in the sealer's inbox.
type SealerMsg interface{ sealerMsg() }

// CreateSpace creates a space (durably) or finds it.
type CreateSpace struct {
	Spec  messages.SpaceSpec
	Reply chan<- CreateSpaceReply // room for one
}

// CreateSpaceReply answers CreateSpace.
type CreateSpaceReply struct {
	ID  messages.SpaceID
	Err error
}

// Flush seals Space's active generation; Reply gets nil once the block
// is durable and visible.
type Flush struct {
	Space messages.SpaceID
	Reply chan<- error // room for one
}

func (CreateSpace) sealerMsg() {}
func (Flush) sealerMsg()       {}
