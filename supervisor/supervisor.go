// Package supervisor runs ringpipe's actors: it starts them in order,
// restarts one that fails (returns an error or panics), restarts the
// members of a unit together, stops them in reverse order, and escalates
// when failures come faster than the restart limit allows.
//
// It is the only place in ringpipe that writes `go` for an actor
// (STYLE.md, point 3).
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Service is an actor: Run does its work until ctx is cancelled, then
// returns ctx.Err(). It starts no goroutines of its own and keeps whatever
// must survive a restart in its struct, not on Run's stack.
type Service interface {
	Run(ctx context.Context) error
}

// Func adapts a function to Service.
type Func func(ctx context.Context) error

// Run implements Service.
func (f Func) Run(ctx context.Context) error { return f(ctx) }

// ErrEscalated is returned by Run when failures exceeded the restart limit.
var ErrEscalated = errors.New("supervisor: restart limit exceeded")

// Clock is the time the supervisor sees; tests inject a fake one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// EventKind says what happened.
type EventKind int

// The events.
const (
	EventStarted   EventKind = iota // a unit started (first time or after a restart)
	EventFailed                     // a service returned an error or panicked
	EventRestart                    // a unit is about to be restarted after Backoff
	EventEscalated                  // the restart limit was exceeded; everything stops
	EventStopped                    // a unit stopped at shutdown
)

func (k EventKind) String() string {
	return [...]string{"started", "failed", "restart", "escalated", "stopped"}[k]
}

// Event is reported to Options.OnEvent, for logs and metrics.
type Event struct {
	Kind    EventKind
	Unit    string
	Service string // the failed service's name (EventFailed)
	Err     error
	Stack   []byte        // set when the failure was a panic
	Backoff time.Duration // EventRestart
}

// Options configure a Supervisor. Zero values mean the defaults.
type Options struct {
	Logger *zap.Logger
	Clock  Clock
	// MaxRestarts restarts within Window are allowed; one more escalates.
	// Defaults: 5 in 10 s.
	MaxRestarts int
	Window      time.Duration
	// BackoffBase doubles with each restart inside Window, up to
	// BackoffMax, and is jittered by up to half either way. Defaults 1 ms
	// and 100 ms: actors hold writers waiting, so restarts must be quick.
	BackoffBase, BackoffMax time.Duration
	// Seed seeds the jitter; 0 uses the time.
	Seed    int64
	OnEvent func(Event)
}

// member is one named service of a unit.
type member struct {
	name string
	svc  Service
}

// unit is a group of services started, restarted and stopped together.
type unit struct {
	name     string
	members  []member
	restarts []time.Time // restart times inside the window
}

// Supervisor runs units. Add every unit before Run.
type Supervisor struct {
	opts  Options
	lg    *zap.Logger
	rng   *rand.Rand
	units []*unit

	mu       sync.Mutex // protects restarts
	restarts map[string]uint64
}

// New returns a Supervisor.
func New(opts Options) *Supervisor {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Clock == nil {
		opts.Clock = realClock{}
	}
	if opts.MaxRestarts == 0 {
		opts.MaxRestarts = 5
	}
	if opts.Window == 0 {
		opts.Window = 10 * time.Second
	}
	if opts.BackoffBase == 0 {
		opts.BackoffBase = time.Millisecond
	}
	if opts.BackoffMax == 0 {
		opts.BackoffMax = 100 * time.Millisecond
	}
	seed := opts.Seed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	return &Supervisor{opts: opts, lg: opts.Logger.Named("supervisor"), rng: rand.New(rand.NewSource(seed)),
		restarts: make(map[string]uint64)}
}

// Add appends a unit: services restarted together when any of them fails
// (the submitter and completer share the ring, so they form one). names
// and services pair up in order.
func (s *Supervisor) Add(unitName string, names []string, services ...Service) {
	if len(names) != len(services) {
		panic("supervisor: Add: names and services differ in length")
	}
	u := &unit{name: unitName}
	for i := range services {
		u.members = append(u.members, member{name: names[i], svc: services[i]})
	}
	s.units = append(s.units, u)
}

// Restarts returns the restart count of every service that was restarted.
func (s *Supervisor) Restarts() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(s.restarts))
	for k, v := range s.restarts {
		out[k] = v
	}
	return out
}

func (s *Supervisor) emit(e Event) {
	if s.opts.OnEvent != nil {
		s.opts.OnEvent(e)
	}
}

// exit is how a unit's run ended.
type exit struct {
	unit    int
	service string
	err     error
	stack   []byte
}

// running is one live incarnation of a unit.
type running struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Run starts the units in order and supervises them until ctx is cancelled,
// then stops them in reverse order and returns nil, or the failures of
// services that ended with an error of their own while being stopped. If failures exceed the
// restart limit it stops everything the same way and returns ErrEscalated
// wrapped with the last failure.
func (s *Supervisor) Run(ctx context.Context) error {
	// exits has room for one exit per member of every unit: each running
	// member sends exactly one exit per incarnation and the loop below
	// waits for a unit's members before starting it again.
	size := 0
	for _, u := range s.units {
		size += len(u.members)
	}
	exits := make(chan exit, size)
	// Units run under a context of their own, not ctx: cancelling ctx
	// must stop them one at a time in reverse order, not all at once.
	base := context.WithoutCancel(ctx)
	live := make([]*running, len(s.units))
	for i := range s.units {
		live[i] = s.start(base, i, exits)
	}
	// stopAll stops every live unit in reverse order and returns the
	// failures of the services that ended with an error other than their
	// context's while being stopped (or failed meanwhile, unhandled): a
	// stop is clean only if every actor finished its work.
	stopAll := func() error {
		// Failures that came before the stop (the loop had no turn to
		// restart them) are the run's, reported as such, not the stop's.
		s.drainExits(exits, "actor failed")
		var errs []error
		for i := len(live) - 1; i >= 0; i-- {
			if live[i] != nil {
				live[i].cancel()
				live[i].wg.Wait()
				s.emit(Event{Kind: EventStopped, Unit: s.units[i].name})
				errs = append(errs, s.drainExits(exits, "actor failed while stopping")...)
			}
		}
		return errors.Join(errs...)
	}
	for {
		select {
		case <-ctx.Done():
			return stopAll()
		case ex := <-exits:
			u := s.units[ex.unit]
			if ex.err == nil || errors.Is(ex.err, context.Canceled) {
				// Only stopAll and a sibling's failure cancel a unit, and
				// both wait for its exits themselves: this one quit early.
				ex.err = fmt.Errorf("returned without being stopped (%v)", ex.err)
			}
			s.lg.Warn("actor failed", zap.String("unit", u.name), zap.String("actor", ex.service),
				zap.Error(ex.err), zap.ByteString("stack", ex.stack))
			s.emit(Event{Kind: EventFailed, Unit: u.name, Service: ex.service, Err: ex.err, Stack: ex.stack})
			// Stop the rest of the unit, then drain the exits they send.
			r := live[ex.unit]
			r.cancel()
			r.wg.Wait()
			s.drainUnit(exits, ex.unit, len(u.members)-1)
			live[ex.unit] = nil

			now := s.opts.Clock.Now()
			keep := u.restarts[:0]
			for _, t := range u.restarts {
				if now.Sub(t) < s.opts.Window {
					keep = append(keep, t)
				}
			}
			u.restarts = append(keep, now)
			if len(u.restarts) > s.opts.MaxRestarts {
				err := fmt.Errorf("%w: unit %s: %d failures within %v, last: %v", ErrEscalated, u.name,
					len(u.restarts), s.opts.Window, serviceError(ex.service, ex.err))
				s.lg.Error("restart limit exceeded", zap.String("unit", u.name), zap.Error(err))
				s.emit(Event{Kind: EventEscalated, Unit: u.name, Service: ex.service, Err: err})
				return errors.Join(err, stopAll())
			}
			backoff := s.backoff(len(u.restarts))
			s.emit(Event{Kind: EventRestart, Unit: u.name, Service: ex.service, Backoff: backoff})
			select {
			case <-s.opts.Clock.After(backoff):
			case <-ctx.Done():
				// Stopped before the restart: the failure was reported
				// (EventFailed) and whatever the actor held was failed;
				// recovery at the next Start reads what is on disk.
				return stopAll()
			}
			s.mu.Lock()
			for _, m := range u.members {
				s.restarts[m.name]++
			}
			total := s.restarts[ex.service]
			s.mu.Unlock()
			s.lg.Info("actor restarted", zap.String("unit", u.name), zap.String("actor", ex.service),
				zap.Uint64("restarts", total), zap.Int("restarts_in_window", len(u.restarts)),
				zap.Duration("window", s.opts.Window), zap.Duration("backoff", backoff))
			live[ex.unit] = s.start(base, ex.unit, exits)
		}
	}
}

// drainExits receives the exits waiting in exits, reports each that is a
// failure (an error other than its context's) under msg, and returns them.
func (s *Supervisor) drainExits(exits chan exit, msg string) []error {
	var errs []error
	for {
		select {
		case ex := <-exits:
			if ex.err == nil || errors.Is(ex.err, context.Canceled) {
				continue
			}
			u := s.units[ex.unit].name
			s.lg.Warn(msg, zap.String("unit", u), zap.String("actor", ex.service),
				zap.Error(ex.err), zap.ByteString("stack", ex.stack))
			s.emit(Event{Kind: EventFailed, Unit: u, Service: ex.service, Err: ex.err, Stack: ex.stack})
			errs = append(errs, fmt.Errorf("supervisor: %s: %w", msg, serviceError(ex.service, ex.err)))
		default:
			return errs
		}
	}
}

// drainUnit receives the n exits the rest of a stopped unit sends, passing
// other units' exits back (they are handled on the next loop turn).
func (s *Supervisor) drainUnit(exits chan exit, unit, n int) {
	var others []exit
	for n > 0 {
		ex := <-exits
		if ex.unit == unit {
			n--
			continue
		}
		others = append(others, ex)
	}
	for _, ex := range others {
		exits <- ex // room: these came out of the channel just now
	}
}

// backoff returns the wait before the nth restart inside the window.
func (s *Supervisor) backoff(n int) time.Duration {
	d := s.opts.BackoffBase
	for i := 1; i < n && d < s.opts.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, s.opts.BackoffMax)
	// Jitter by up to half either way, so that restarts do not beat in
	// step with whatever made the actor fail.
	return d/2 + time.Duration(s.rng.Int63n(int64(d)+1))
}

// start launches one incarnation of unit i.
func (s *Supervisor) start(parent context.Context, i int, exits chan<- exit) *running {
	u := s.units[i]
	ctx, cancel := context.WithCancel(parent)
	r := &running{cancel: cancel}
	r.wg.Add(len(u.members))
	for _, m := range u.members {
		go func() {
			defer r.wg.Done()
			ex := exit{unit: i, service: m.name}
			func() {
				defer func() {
					if p := recover(); p != nil {
						ex.err = fmt.Errorf("panic: %v", p)
						ex.stack = debug.Stack()
					}
				}()
				ex.err = m.svc.Run(ctx)
			}()
			exits <- ex
		}()
	}
	s.emit(Event{Kind: EventStarted, Unit: u.name})
	return r
}

// serviceError names the actor in its error, unless the error names it
// already (an actor's own errors start with its name: "submitter: ...").
func serviceError(service string, err error) error {
	if strings.HasPrefix(err.Error(), service+": ") {
		return err
	}
	return fmt.Errorf("%s: %w", service, err)
}
