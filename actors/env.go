// Package actors holds the engine's actors, one file each: the submitter,
// completer, promoter, sealer and live-tail publisher. Each is a struct
// with Run(ctx) error that starts no goroutine of its own; the supervisor
// runs them. Their state lives in the struct, so a restarted actor
// continues where the failed one stopped.
//
// Who talks to whom, and why nothing deadlocks: an actor may block on a
// send only to an actor that never blocks on it in turn.
//
//   - the engine → write queue → submitter; submitter ↔ completer;
//     completer → publisher; sealer, promoter → submitter; sealer →
//     publisher.
//   - The completer never blocks on the submitter: its feedback channel
//     holds one message per chain that can be in flight (see
//     feedbackCapacity). The publisher blocks on nobody. The submitter
//     blocks only on the completer (registrations) and the ring, both of
//     which drain as long as the completer reaps.
package actors

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/ringpipe/ringpipe/hot"
	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/wal"
)

// Config is what the actors need of the engine's Config, with defaults
// applied.
type Config struct {
	Dir                string
	BatchSize          int
	BatchTimeout       time.Duration
	DirectWriteTimeout time.Duration
	PromoteInterval    time.Duration
	SealThreshold      int
	SealBytes          int64
	Hot                hot.Options
	WAL                wal.Options
}

// LatencyRecorder takes one sample of a latency distribution; safe for
// concurrent use.
type LatencyRecorder interface{ Record(d time.Duration) }

// Metrics are the counters the actors keep for Stats: written by the
// actors, read by anyone.
type Metrics struct {
	DirectWrites  atomic.Uint64
	StagedWrites  atomic.Uint64
	InlineCommits atomic.Uint64 // writes an inline commit took (see Inline)
	Promoted      atomic.Uint64
	SealedBlocks  atomic.Uint64
	Publishes     atomic.Uint64 // Views the publisher published (one per burst)
	StagedPending atomic.Int64
	// RetirePending: a staging WAL retirement failed and waits to be
	// tried again; the promoter ticks for it as for staged records.
	RetirePending atomic.Bool
	Unsealed      atomic.Int64 // records in active and frozen hot generations
	WriteLatency  LatencyRecorder
	SyncLatency   LatencyRecorder
	BatchSize     LatencyRecorder // records per hot or WAL batch, as "durations" of n ns
}

type nopRecorder struct{}

func (nopRecorder) Record(time.Duration) {}

func (m *Metrics) init() {
	if m.WriteLatency == nil {
		m.WriteLatency = nopRecorder{}
	}
	if m.SyncLatency == nil {
		m.SyncLatency = nopRecorder{}
	}
	if m.BatchSize == nil {
		m.BatchSize = nopRecorder{}
	}
}

// Env is what every actor shares; read-only once the actors run.
type Env struct {
	Ring    ring.Ring
	Log     *zap.Logger
	Cfg     Config
	Metrics *Metrics
	Now     func() time.Time
	// IOTime is the clock the ring's operations take time on
	// (ring.IOClock): how long a write and its sync took is measured on
	// it, so that on the simulator a delayed sync is as slow to the
	// routing hysteresis as it is to the Op deadline that staged its
	// writes. nil: the wall clock.
	IOTime func() time.Duration
}

// wallOrigin is the origin of ioTime's default clock.
var wallOrigin = time.Now()

func (e *Env) ioTime() time.Duration {
	if e.IOTime != nil {
		return e.IOTime()
	}
	return time.Since(wallOrigin)
}

func (e *Env) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

// Doer is a ring.Doer whose route changes with the engine's phase: before
// the actors start and after they stop it reaps the ring itself (a
// ring.Sync); while an actor runs, that actor routes it through the
// in-flight table (Route), so that the completer, the ring's only reaper,
// hands the results back.
type Doer struct {
	sync  atomic.Pointer[ring.Sync]
	route atomic.Pointer[doFunc]

	mu      sync.Mutex
	orphans []orphan
}

// orphan is I/O whose route gave up waiting: reply is nil when the ops
// were never handed to the submitter.
type orphan struct {
	ops   []ring.Op
	reply <-chan IOResult
}

func (d *Doer) orphan(ops []ring.Op, reply <-chan IOResult) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.orphans = append(d.orphans, orphan{ops: slices.Clone(ops), reply: reply})
}

// benign reports whether err, the answer of an orphaned op with code c,
// is an answer its caller would have taken as success or as a plain
// "no": a mkdir that found its directory (ring.Mkdir), an open that found
// no file (hot's check for a leftover file).
func benign(c ring.Opcode, err error) bool {
	return (c == ring.OpMkdir && errors.Is(err, syscall.EEXIST)) ||
		(c == ring.OpOpen && errors.Is(err, syscall.ENOENT))
}

// SettleOrphans releases the fds that I/O cut short by a stop left open:
// it closes the fd of every Open whose answer came after its caller left,
// and performs every Close that was never submitted. An op that was
// submitted and never answered is left alone (closing an fd that may have
// been closed already could close another file). REQUIRES: the actors have
// stopped (d reaps its ring itself).
//
// It returns the errors of the answered ops: background work whose actor
// was stopped before it saw them (the work is redone at the next Start,
// which is why nothing else depends on them), and of the closes it
// performs, for the engine to log. A close's error was dropped before
// (durability's TestIOErrorRecoverySweep, ci10: a directory sync cut
// short by Stop, its close performed here failed EIO, nothing logged).
func (d *Doer) SettleOrphans() []error {
	d.mu.Lock()
	orphans := d.orphans
	d.orphans = nil
	d.mu.Unlock()
	var errs []error
	for _, o := range orphans {
		if o.reply != nil {
			select {
			case r := <-o.reply:
				if errors.Is(r.Err, errNotPerformed) {
					break // as if never sent: do its closes below
				}
				if r.Err != nil {
					errs = append(errs, r.Err)
				}
				for i, c := range r.Completions {
					if i < len(o.ops) && o.ops[i].Code == ring.OpOpen && c.Err == nil && c.Res >= 0 {
						if err := ring.Close(d, int32(c.Res)); err != nil {
							errs = append(errs, fmt.Errorf("close %s, opened by I/O cut short: %w", o.ops[i].Path, err))
						}
					}
					if c.Err != nil && !errors.Is(c.Err, syscall.ECANCELED) && i < len(o.ops) && !benign(o.ops[i].Code, c.Err) {
						errs = append(errs, fmt.Errorf("%s %s: %w", o.ops[i].Code, o.ops[i].Path, c.Err))
					}
				}
				continue
			default:
				continue
			}
		}
		for _, op := range o.ops {
			if op.Code == ring.OpClose {
				if err := ring.Close(d, op.FD); err != nil {
					errs = append(errs, fmt.Errorf("close left by I/O cut short: %w", err))
				}
			}
		}
	}
	return errs
}

type doFunc func(ops []ring.Op) ([]ring.Completion, error)

// NewDoer returns a Doer that reaps r itself until Route is called.
func NewDoer(s *ring.Sync) *Doer {
	d := &Doer{}
	d.sync.Store(s)
	return d
}

// Reap makes d reap through s when no actor routes it (the engine uses it
// to close files through a new ring after Stop closed the old one).
func (d *Doer) Reap(s *ring.Sync) { d.sync.Store(s) }

// Do implements ring.Doer.
func (d *Doer) Do(ops ...ring.Op) ([]ring.Completion, error) {
	if f := d.route.Load(); f != nil {
		return (*f)(ops)
	}
	return d.sync.Load().Do(ops...)
}

// setRoute routes Do through f; nil goes back to reaping the ring itself.
func (d *Doer) setRoute(f doFunc) {
	if f == nil {
		d.route.Store(nil)
		return
	}
	d.route.Store(&f)
}

// viaSubmitter returns a route that asks the submitter to submit ops and
// waits for the completer's answer, or ctx's end. What a cut-short wait
// leaves behind is recorded in d (see SettleOrphans): a Close never sent,
// or an Open whose answer nobody read, would otherwise leak an fd.
//
// I/O that the submitter answers as not performed (its own context ended:
// the io unit is being restarted after a failure, while the caller's
// context lasts) is sent again, to the restarted submitter: nothing of it
// was submitted, so it is performed once. Before, the route returned that
// answer as the I/O's error, and a Close answered so was dropped: nobody
// recorded it, so the fd stayed open for good, Stop included (ring.SyncDir
// after its fsync, hot.Create's and WriteBlockDirect's cleanup; fdlife
// audit: TestFdlifeChaosThroughStop left the directory's, a segment's or
// a <id>.blk.tmp fd open in about 1 run of 15 under -race, each time just
// after a "not performed" Close of that fd).
func viaSubmitter(ctx context.Context, sub chan<- SubmitterMsg, d *Doer) doFunc {
	return func(ops []ring.Op) ([]ring.Completion, error) {
		for {
			if err := ctx.Err(); err != nil {
				// Not sent: an earlier op of the caller may still be in
				// flight (orphaned below), and ops that are not linked run
				// in any order: a close sent now could run before that
				// fsync, whose fd the kernel resolves only when a worker
				// takes it up (it then failed EBADF, or hit whatever file
				// took the number). SettleOrphans performs the closes.
				d.orphan(ops, nil)
				return nil, err
			}
			reply := make(chan IOResult, 1)
			select {
			case sub <- SubmitIO{Ops: ops, Reply: reply}:
			case <-ctx.Done():
				d.orphan(ops, nil)
				return nil, ctx.Err()
			}
			select {
			case r := <-reply:
				if errors.Is(r.Err, errNotPerformed) {
					continue // see above: the restarted submitter takes it
				}
				return r.Completions, r.Err
			case <-ctx.Done():
				d.orphan(ops, reply)
				return nil, ctx.Err()
			}
		}
	}
}

// SealHint asks the sealer to replace generation Gen of Space (it is full,
// past its seal threshold, or failed). Hints are idempotent: the sealer
// ignores one whose generation is no longer the active one, so the
// submitter may send a hint again until the generation is replaced.
type SealHint struct {
	Space messages.SpaceID
	Gen   uint64
}

// Channels are the inboxes that join the actors. The engine makes them
// once; they outlive actor restarts.
type Channels struct {
	Writes chan messages.Request // the write queue, Config.QueueCapacity
	// Queued counts the requests sent, or being sent, to Writes that the
	// submitter has not yet taken: a sender adds 1 before its send (and
	// takes it back if it gives up), the submitter subtracts 1 as it
	// takes each. An inline commit sees the pipeline idle only at 0,
	// which len(Writes) cannot tell: a request Run has received but not
	// yet taken is in neither. Without it a Put could overtake a
	// PutAsync the same goroutine made just before (its revision lower).
	Queued    atomic.Int64
	Submitter chan SubmitterMsg
	Publisher chan PublisherMsg
	Sealer    chan SealerMsg
	// SealDue carries seal hints from the submitter to the sealer without
	// blocking the submitter (a full channel is retried later).
	SealDue chan SealHint
	// Failed is closed by the engine when it fails (the restart limit was
	// passed): sends to actors that may be gone stop waiting.
	Failed    chan struct{}
	feedback  chan feedback
	registers chan *flight
	// subKick and compKick wake an idle submitter or completer (room
	// for one; a full one is a wake-up already pending): after an inline
	// commit left them work (see Inline), and, for the completer, after
	// each registration, since an idle completer waits here rather than
	// in the ring.
	subKick  chan struct{}
	compKick chan struct{}
	// promKick wakes an idle promoter (room for one): the submitter
	// kicks it when records are staged or a WAL retirement fails, so
	// that an engine with nothing staged has no ticker running.
	promKick chan struct{}
	// ioMu orders the submitter's submissions against the completer's
	// decision to stop: the submitter submits only while its context
	// lasts, under ioMu, and the completer stops only when, under ioMu,
	// the context has ended and nothing is in flight. So nothing is ever
	// submitted that no completer reaps.
	ioMu sync.Mutex
}

// Inbox sizes. The write queue is the one large queue (Config's); the
// others stay small because their senders wait for replies anyway.
const (
	// controlCapacity bounds the submitter's and sealer's control inboxes:
	// one request per waiting sealer, promoter or API caller is enough to
	// keep them busy; more callers block, which is the back-pressure.
	controlCapacity = 16
	// publisherCapacity lets the completer run ahead of the publisher by
	// this many notices, so that the publisher can batch a burst into one
	// publish; beyond it the completer waits (and the ring fills).
	publisherCapacity = 1024
	// sealDueCapacity holds sealing hints; a full channel drops nothing
	// because the submitter re-sends the hint (see Submitter.sealDue).
	sealDueCapacity = 64
	// sealHintResend is how long the submitter waits for the hinted
	// generation to be replaced before it sends the hint again: a hint
	// taken by a sealer that then failed, or postponed because the disk
	// was full, is not lost.
	sealHintResend = 50 * time.Millisecond
	// maxChainOps is the most ops one flight may have: an op's token is
	// the flight's id shifted left by 8 plus the op's index.
	maxChainOps = 255
)

// NewChannels makes the inboxes for a write queue of queueCap requests and
// a ring of ringCap operations.
func NewChannels(queueCap, ringCap int) *Channels {
	return &Channels{
		Writes:    make(chan messages.Request, queueCap),
		Submitter: make(chan SubmitterMsg, controlCapacity),
		Publisher: make(chan PublisherMsg, publisherCapacity),
		Sealer:    make(chan SealerMsg, controlCapacity),
		SealDue:   make(chan SealHint, sealDueCapacity),
		Failed:    make(chan struct{}),
		// feedbackCapacity: the completer sends at most two feedback
		// messages per chain (a reroute notice and the settlement) and
		// one per group; at most ringCap chains are in flight, and the
		// submitter drains feedback before each submission, so twice
		// the ring's capacity plus slack never fills (see Completer).
		feedback: make(chan feedback, 4*ringCap+64),
		// registrations precede submissions one for one; the completer
		// drains them whenever it meets an unknown token.
		registers: make(chan *flight, ringCap),
		subKick:   make(chan struct{}, 1),
		compKick:  make(chan struct{}, 1),
		promKick:  make(chan struct{}, 1),
	}
}

// kick wakes whoever waits on k, unless a wake-up is pending already.
func kick(k chan struct{}) {
	select {
	case k <- struct{}{}:
	default:
	}
}

// errNotPerformed answers I/O that the submitter never took (DrainSubmitter).
var errNotPerformed = errors.New("actors: the submitter stopped before it took this I/O")

// DrainSubmitter empties the submitter's inbox after the actors stopped,
// answering each SubmitIO left in it as not performed, so that the Doer
// that sent it can settle it (SettleOrphans). REQUIRES: the actors have
// stopped.
func DrainSubmitter(ch *Channels) {
	for {
		select {
		case m := <-ch.Submitter:
			if io, ok := m.(SubmitIO); ok {
				io.Reply <- IOResult{Err: errNotPerformed}
			}
		default:
			return
		}
	}
}
