package actors

import (
	"time"

	"github.com/ringpipe/ringpipe/hot"
	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/wal"
)

// flightKind says what a chain in flight is for.
type flightKind uint8

const (
	kindHot     flightKind = iota + 1 // writes of groups into a hot segment
	kindWAL                           // writes of groups into the staging WAL
	kindPromote                       // staged records into a hot segment
	kindIO                            // I/O asked for by the sealer or promoter
)

// group is the writes of one space that were merged into one batch: they
// are acknowledged together, from whichever copy (hot or staged) is
// durable first. Its fields are set by the submitter before the group is
// first registered and never changed after.
type group struct {
	space  messages.SpaceID
	writes []*messages.Write
	recs   []messages.Record // parallel to writes
}

// flight is one chain submitted to the ring. The submitter fills it in,
// submits its ops and registers it with the completer; the completer owns
// it until it hands it back in a settlement feedback, after which it is
// the submitter's again (it reads hot, wal and recs; nobody writes).
type flight struct {
	id    uint64 // tokens are id<<8 | op index
	kind  flightKind
	space messages.SpaceID
	gen   uint64

	hot    *hot.Pending      // kindHot, kindPromote
	wal    *wal.Pending      // kindWAL
	groups []*group          // kindHot, kindWAL
	recs   []messages.Record // kindPromote
	reply  chan<- IOResult   // kindIO

	start time.Duration // when submitted, on Env.IOTime
	// retry marks a kindHot flight that performs a cancelled batch again
	// (Submitter.retryHot): no deadline, same groups and Pending.
	retry bool
	// atRisk is how many records a missed deadline would reroute to the
	// staging WAL (the submitter's, read and written by it only).
	atRisk int

	// Owned by the completer while it holds the flight.
	left     int               // final completions still to come
	comps    []ring.Completion // kindIO: results in op order
	err      error             // the first op error
	rerouted bool              // a deadline notice sent the groups to the WAL
	late     bool              // an op's deadline passed (it may have been cancelled)
}

// feedbackKind says what a feedback message reports.
type feedbackKind uint8

const (
	fbReroute feedbackKind = iota + 1 // a hot flight missed its deadline: stage its groups
	fbSettled                         // a hot, promote or WAL flight has all its completions
)

// feedback is the completer's report to the submitter.
type feedback struct {
	kind feedbackKind
	f    *flight
	err  error
	// syncDur is the flight's durable-write time (settled hot and promote
	// flights), the hysteresis signal for routing.
	syncDur time.Duration
	// stage is what a settled WAL flight leaves for promotion: the
	// records of its groups whose hot copy had not succeeded.
	stage []messages.Record
	// done are the groups this event finished (acknowledged or failed),
	// for Sync's barriers.
	done []*group
	// pubSeq is the number of the completer's latest settlement that
	// published, this one's if it did (see Fence).
	pubSeq uint64
}

func tokenOf(id uint64, i int) uint64 { return id<<8 | uint64(i) }
func flightOf(tok uint64) uint64      { return tok >> 8 }
