package ringpipe

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/ringpipe/ringpipe/actors"
	"github.com/ringpipe/ringpipe/internal/latency"
	"github.com/ringpipe/ringpipe/internal/stagetrace"
	"github.com/ringpipe/ringpipe/internal/testhook"
	"github.com/ringpipe/ringpipe/livetail"
	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/supervisor"
	"github.com/ringpipe/ringpipe/wal"
)

// engine is the running engine behind Engine.
//
// Lifecycle: start runs recovery with a ring.Sync (nothing else reaps the
// ring yet), then hands everything to the actors and starts the
// supervisor. stop closes the intake, waits for writers that got in, syncs
// what was accepted, stops the supervisor (the actors stop in reverse
// order), fails anything still waiting, closes the files with a ring.Sync
// again and closes the ring, which releases the LOCK.
type engine struct {
	cfg   Config
	lg    *zap.Logger
	r     ring.Ring
	sd    *ring.Sync     // reaps the ring while no actor runs
	doers []*actors.Doer // every Doer the files hold
	info  ring.Info

	ch       *actors.Channels
	metrics  *actors.Metrics
	writeLat *latency.Recorder
	syncLat  *latency.Recorder
	cur      atomic.Pointer[livetail.View]
	registry atomic.Pointer[map[SpaceID]SpaceInfo]

	sub    *actors.Submitter
	comp   *actors.Completer
	inline *actors.Inline // commits a Put on its caller's goroutine when the pipeline is idle
	pub    *actors.Publisher
	sealer *actors.Sealer
	prom   *actors.Promoter
	sup    *supervisor.Supervisor
	lockFD int32

	cancel  context.CancelFunc
	supDone chan struct{} // closed when the supervisor has returned
	supErr  error         // set before supDone closes

	// intake: writers enter under mu's read lock while !closed, so that
	// stop, after closing, knows every write that got in is queued.
	mu       sync.RWMutex
	closed   bool
	stopCh   chan struct{} // closed by stop: blocked writers give up
	senders  sync.WaitGroup
	failed   chan struct{} // closed when the restart limit is passed
	failOnce sync.Once

	stopStarted atomic.Bool // set by the first Stop, which runs doStop
	stopDone    chan struct{}
	stopErr     error
	// Owned by the goroutine running doStop (see awaitOrForce).
	graceEnd   time.Time // when the grace that began as ctx ended runs out
	ringForced bool      // Stop has closed the ring under the actors
}

func newRing(cfg Config) (ring.Ring, error) {
	opts := ring.Options{Entries: cfg.RingEntries, Logger: cfg.Logger}
	if cfg.NewRing != nil {
		return cfg.NewRing(opts)
	}
	switch cfg.Backend {
	case BackendURing:
		opts.Kind = ring.URing
	case BackendStd:
		opts.Kind = ring.Std
	default:
		opts.Kind = ring.Auto
	}
	return ring.New(opts)
}

func start(ctx context.Context, cfg Config) (*engine, error) {
	r, err := newRing(cfg)
	if err != nil {
		return nil, startError(cfg.Dir, err)
	}
	e := &engine{cfg: cfg, lg: cfg.Logger, r: r, sd: ring.NewSync(r), info: r.Info(), lockFD: -1,
		writeLat: latency.New(), syncLat: latency.New(),
		supDone: make(chan struct{}), stopCh: make(chan struct{}), failed: make(chan struct{}),
		stopDone: make(chan struct{})}
	e.metrics = &actors.Metrics{WriteLatency: e.writeLat, SyncLatency: e.syncLat, BatchSize: latency.NewSizes()}
	e.lg.Info("ring", zap.String("backend", e.info.Backend), zap.String("kernel", e.info.Kernel),
		zap.String("features", fmt.Sprintf("%#x", e.info.Features)), zap.Uint32("entries", e.info.Entries),
		zap.String("fallback", e.info.Fallback))
	// Recovery is bounded by ctx (watchRecovery).
	recovered := watchRecovery(ctx, r)
	rec, err := e.recover(ctx)
	if recovered() {
		if err != nil {
			err = fmt.Errorf("%w (recovery cut short by its context: %w)", err, ctx.Err())
		} else {
			err = fmt.Errorf("recovery cut short: %w", ctx.Err())
		}
		e.closeAfterForce(rec)
		e.r.Close() //nolint:errcheck // closed already; this closes the block read path too
		return nil, startError(cfg.Dir, err)
	}
	if err != nil {
		e.closeFiles(rec) //nolint:errcheck // the recovery error is the one to report
		r.Close()         //nolint:errcheck // the recovery error is the one to report
		return nil, startError(cfg.Dir, err)
	}
	e.sup = supervisor.New(supervisor.Options{Logger: e.lg.Named("supervisor"), OnEvent: e.onEvent,
		MaxRestarts: int(testhook.RestartLimit.Load())})
	e.sup.Add("publisher", []string{"publisher"}, e.pub)
	e.sup.Add("io", []string{"submitter", "completer"}, e.sub, e.comp)
	e.sup.Add("sealer", []string{"sealer"}, e.sealer)
	e.sup.Add("promoter", []string{"promoter"}, e.prom)
	sctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() {
		e.supErr = e.sup.Run(sctx)
		select {
		case <-e.failed:
			// Failed for good: close the intake, and once the callers that
			// got past it have handed over their requests (each gives up
			// on e.failed rather than wait for an actor), complete every
			// request still waiting.
			e.mu.Lock()
			e.closed = true
			e.mu.Unlock()
			e.senders.Wait()
			e.failPending()
		default:
		}
		close(e.supDone)
	}()
	return e, nil
}

// startGrace is how long recovery's I/O may go without a completion, with
// ops in flight, once Start's ctx has ended, before Start closes the ring
// under it.
const startGrace = 500 * time.Millisecond

// watchRecovery bounds recovery on r by ctx. Recovery itself stops at its
// next step once ctx ends; if its I/O then makes no progress for
// startGrace (ops in flight, none completing: a disk that does not
// answer), r is closed under it, which completes what is in flight, and
// recovery fails. Call recovered once recovery has returned: it reports
// whether r was closed. Before, a disk that stopped answering held Start
// until it answered again, and then Start returned a running engine long
// past its ctx (ctxb audit). Cutting recovery short loses the fds of files
// it had open and not yet recorded (review audit: with a plain grace, a
// slow recovery on a healthy disk was cut and left them): only a disk that
// does not answer pays that.
func watchRecovery(ctx context.Context, r ring.Ring) (recovered func() (cut bool)) {
	done, watched := make(chan struct{}), make(chan struct{})
	var cutShort atomic.Bool
	unwatch := context.AfterFunc(ctx, func() {
		defer close(watched)
		tick := time.NewTicker(startGrace / 5)
		defer tick.Stop()
		last, still := r.Stats().Completed, 0
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			st := r.Stats()
			if st.Completed != last || st.Submitted == st.Completed {
				last, still = st.Completed, 0 // progress, or nothing in flight
				continue
			}
			if still++; still >= 5 {
				cutShort.Store(true)
				r.Close() //nolint:errcheck // cut short: completes everything in flight
				return
			}
		}
	})
	return func() bool {
		close(done)
		if !unwatch() {
			<-watched
		}
		return cutShort.Load()
	}
}

func (e *engine) onEvent(ev supervisor.Event) {
	if ev.Kind == supervisor.EventEscalated {
		e.failOnce.Do(func() {
			close(e.failed)
			close(e.ch.Failed)
		})
		e.lg.Error("engine failed: writes are refused, reads still work", zap.Error(ev.Err))
	}
}

// wrappedError is err under a prefix saying what was being done. Its
// message drops err's own leading "ringpipe: " so that a sentinel wrapped
// inside does not repeat the package ("ringpipe: flush space 1: seal:
// ringpipe: engine stopped"); errors.Is and errors.As see err.
type wrappedError struct {
	prefix string
	err    error
}

func (w *wrappedError) Error() string {
	return w.prefix + ": " + strings.TrimPrefix(w.err.Error(), "ringpipe: ")
}

func (w *wrappedError) Unwrap() error { return w.err }

// startError is Start's error in dir. An ErrLocked error is returned as
// it is: its message names the directory already.
func startError(dir string, err error) error {
	if errors.Is(err, ErrLocked) {
		return err
	}
	return &wrappedError{prefix: "ringpipe: start in " + dir, err: err}
}

// gone returns the error for an engine that cannot take a request.
func (e *engine) gone() error {
	select {
	case <-e.failed:
		return ErrFailed
	default:
		return ErrStopped
	}
}

// refuseInput returns err, a caller's bad input to a write, as it is
// while the engine takes writes. Once Stop has been called or the engine
// has failed, that state comes first: API.md says writes after Stop return
// ErrStopped, and it is what the caller must act on. errors.Is holds for
// both the state and the input error.
func (e *engine) refuseInput(err error) error {
	if !e.stopping() && !closed(e.failed) {
		return err
	}
	return &stateError{state: e.gone(), err: err}
}

// stateError is an error met after the engine stopped taking writes: bad
// input (see refuseInput), or, when cause is set, what Stop's cutting an
// operation short did to it (see cutByStop).
type stateError struct {
	state, err error
	cause      bool
}

func (s *stateError) Error() string {
	msg := strings.TrimPrefix(s.err.Error(), "ringpipe: ")
	if s.cause {
		return s.state.Error() + ": " + msg
	}
	return s.state.Error() + " (and: " + msg + ")"
}

func (s *stateError) Unwrap() []error { return []error{s.state, s.err} }

// enter admits a caller into the intake; leave must follow as soon as
// the caller has handed its request to an actor (never after waiting for
// the reply: stop and escalation wait for the intake to empty before they
// stop the actors, so a caller that waited inside would wait forever).
func (e *engine) enter() error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	select {
	case <-e.failed:
		return ErrFailed
	default:
	}
	if e.closed {
		return ErrStopped
	}
	e.senders.Add(1)
	return nil
}

func (e *engine) leave() { e.senders.Done() }

// stopping says whether Stop has been called.
func (e *engine) stopping() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.closed
}

// cutByStop makes err, an operation's failure, say ErrStopped (ErrFailed
// on a failed engine) when Stop cut the operation short: the actors'
// context ended, or a Stop whose ctx ended closed the ring under the I/O,
// not the caller's ctx, and context.Canceled alone would blame the caller.
// errors.Is holds for err's own causes too.
func (e *engine) cutByStop(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, ErrStopped) || errors.Is(err, ErrFailed) || ctx.Err() != nil || !e.stopping() {
		return err
	}
	if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) &&
		!errors.Is(err, ring.ErrClosed) && !errors.Is(err, syscall.ECANCELED) {
		return err
	}
	return &stateError{state: e.gone(), err: err, cause: true}
}

// queue puts r on the write queue unless ctx, stop or failure comes first.
func (e *engine) queue(ctx context.Context, r messages.Request) error {
	// Room in the queue: take it without the select below, which locks
	// every channel it names, and ctx's (often one for all writers),
	// stopCh and failed are shared by every writer: at 64 writers that
	// select's locking was 4% of the process's CPU. The caller has
	// entered (enter), so the queue is still read; a failure or Stop that
	// comes now finds r queued, as when the select below picks it.
	e.ch.Queued.Add(1) // before the send: see actors.Channels.Queued
	select {
	case e.ch.Writes <- r:
		return nil
	default:
	}
	var err error
	select {
	case e.ch.Writes <- r:
		return nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-e.stopCh:
		err = ErrStopped
	case <-e.failed:
		err = ErrFailed
	}
	e.ch.Queued.Add(-1)
	return err
}

func (e *engine) space(id SpaceID) (SpaceInfo, error) {
	info, ok := (*e.registry.Load())[id]
	if !ok {
		return SpaceInfo{}, fmt.Errorf("%w: %d", ErrUnknownSpace, id)
	}
	return info, nil
}

// enqueue validates a write and queues it; with commit set (Put, Delete:
// the caller waits for the write anyway) it commits the write on the
// caller's goroutine instead when the pipeline is idle (actors.Inline).
func (e *engine) enqueue(ctx context.Context, space SpaceID, p Point, value []byte, tomb, commit bool) (*Ticket, error) {
	if err := e.checkWrite(space, p, value); err != nil {
		return nil, e.refuseInput(err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := e.enter(); err != nil {
		return nil, err
	}
	defer e.leave()
	rec := Record{Space: space, Point: slices.Clone(p), Tombstone: tomb}
	if !tomb {
		// The caller may reuse value's buffer once PutAsync returns.
		rec.Value = append(make([]byte, 0, len(value)), value...)
	}
	w := &messages.Write{Record: rec, Ack: messages.NewAck(), Enqueued: time.Now()}
	stagetrace.Mark(stagetrace.Queued)
	if commit && e.inline.Commit(ctx, w) {
		return &Ticket{ack: w.Ack, e: e}, nil
	}
	if err := e.queue(ctx, w); err != nil {
		return nil, err
	}
	return &Ticket{ack: w.Ack, e: e}, nil
}

// checkWrite checks a write's input: its space exists, p fits it, and the
// value and the record fit their limits.
func (e *engine) checkWrite(space SpaceID, p Point, value []byte) error {
	info, err := e.space(space)
	if err != nil {
		return err
	}
	if err := info.CheckPoint(p); err != nil {
		return err // names the point, the space (ID and name) and the coordinate
	}
	if len(value) > e.cfg.MaxValueSize {
		return fmt.Errorf("%w: %d bytes for space %d %q, Config.MaxValueSize is %d (Preallocate = %d)",
			ErrValueTooLarge, len(value), space, info.Name, e.cfg.MaxValueSize, e.cfg.Preallocate)
	}
	if sz := wal.FrameSize(wal.RecordSize(messages.Record{Space: space, Point: p, Value: value})); int64(sz) > logRoom(e.cfg.Preallocate) {
		// A log file must hold the record whole.
		return fmt.Errorf("%w: a record of %d bytes for space %d %q does not fit a log file of Config.Preallocate = %d bytes",
			ErrValueTooLarge, sz, space, info.Name, e.cfg.Preallocate)
	}
	return nil
}

// waitReply waits for a reply, ctx, or the actors' end. Once the actors
// have ended, every request they held has been answered (failPending), so
// a reply already sent wins over the engine's end.
func waitReply[T any](e *engine, ctx context.Context, c <-chan T) (T, error) {
	var zero T
	select {
	case v := <-c:
		return v, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-e.supDone:
		select {
		case v := <-c:
			return v, nil
		default:
			return zero, e.gone()
		}
	}
}

// ask hands m to an actor's inbox through the intake and waits for its
// reply.
func ask[M, T any](e *engine, ctx context.Context, inbox chan<- M, m M, reply <-chan T) (T, error) {
	var zero T
	if err := e.enter(); err != nil {
		return zero, err
	}
	// A ctx ended before the call means not applied: the select below
	// would pick at random between it and a free inbox (edge audit: a
	// CreateSpace with a cancelled ctx created the space half the time).
	if err := ctx.Err(); err != nil {
		e.leave()
		return zero, err
	}
	err := func() error {
		defer e.leave()
		select {
		case inbox <- m:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-e.failed:
			return ErrFailed
		case <-e.supDone:
			return e.gone()
		}
	}()
	if err != nil {
		return zero, err
	}
	return waitReply(e, ctx, reply)
}

// sync is Sync: a Barrier that waits for every write queued before it, in
// every space.
func (e *engine) sync(ctx context.Context) error {
	if err := e.enter(); err != nil {
		return err
	}
	reply := make(chan error, 1)
	err := e.queue(ctx, &messages.Barrier{Reply: reply})
	e.leave()
	if err != nil {
		return err
	}
	err, werr := waitReply(e, ctx, reply)
	if werr != nil {
		return werr
	}
	return err
}

func (e *engine) flush(ctx context.Context, space SpaceID) (err error) {
	info, err := e.space(space)
	if err != nil {
		return e.refuseInput(err)
	}
	defer func() { err = e.cutByStop(ctx, err) }()
	// Everything accepted is durable (every space's: a Flush keeps
	// program order, which TestInlineAuditProgramOrder checks; a space's
	// own barrier broke it in ci7), then staged records are in their hot
	// segment, then the segment is sealed.
	if err := e.sync(ctx); err != nil {
		return saysWhat(err, "ringpipe: flush space %d %q: sync the writes before it", space, info.Name)
	}
	preply := make(chan error, 1)
	err, werr := ask(e, ctx, e.ch.Submitter, actors.SubmitterMsg(actors.PromoteSpace{Space: space, Reply: preply}), preply)
	if err = errors.Join(werr, err); err != nil {
		return &wrappedError{prefix: fmt.Sprintf("ringpipe: flush space %d %q: promote its staged records", space, info.Name), err: err}
	}
	sreply := make(chan error, 1)
	err, werr = ask(e, ctx, e.ch.Sealer, actors.SealerMsg(actors.Flush{Space: space, Reply: sreply}), sreply)
	if err = errors.Join(werr, err); err != nil {
		return &wrappedError{prefix: fmt.Sprintf("ringpipe: flush space %d %q: seal", space, info.Name), err: err}
	}
	return nil
}

func (e *engine) createSpace(ctx context.Context, spec SpaceSpec) (id SpaceID, err error) {
	if err := errors.Join(spec.Validate(), spec.CheckNewName()); err != nil {
		return 0, e.refuseInput(fmt.Errorf("ringpipe: create space: %w", err))
	}
	if e.stopping() {
		// Stopped, or failed for good (which closes the intake too).
		return 0, fmt.Errorf("%w: create space %q", e.gone(), spec.Name)
	}
	defer func() { err = e.cutByStop(ctx, err) }()
	for _, info := range *e.registry.Load() {
		if info.Name == spec.Name {
			if info.SpaceSpec != spec {
				return 0, messages.SpaceExistsError(spec.Name, info.ID, info.SpaceSpec, spec)
			}
			return info.ID, nil
		}
	}
	reply := make(chan actors.CreateSpaceReply, 1)
	r, err := ask(e, ctx, e.ch.Sealer, actors.SealerMsg(actors.CreateSpace{Spec: spec, Reply: reply}), reply)
	if err != nil {
		return 0, err
	}
	return r.ID, r.Err
}

func (e *engine) spaceList() []SpaceInfo {
	reg := *e.registry.Load()
	out := make([]SpaceInfo, 0, len(reg))
	for _, info := range reg {
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b SpaceInfo) int { return int(a.ID) - int(b.ID) })
	return out
}

func (e *engine) view() *livetail.View { return e.cur.Load() }
