package supervisor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock advances only when told; After fires at once and records the
// wait it was asked for.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	waited []time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waited = append(c.waited, d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// recorder logs what services did, in order.
type recorder struct {
	mu  sync.Mutex
	log []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.log = append(r.log, s)
	r.mu.Unlock()
}

func (r *recorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.log...)
}

// blocker runs until cancelled, recording start and stop.
func blocker(rec *recorder, name string, started chan<- string) Service {
	return Func(func(ctx context.Context) error {
		rec.add("start " + name)
		if started != nil {
			started <- name
		}
		<-ctx.Done()
		rec.add("stop " + name)
		return ctx.Err()
	})
}

func wait[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("timed out")
	}
	var zero T
	return zero
}

func TestStartInOrderStopInReverse(t *testing.T) {
	rec := &recorder{}
	started := make(chan string, 3)
	s := New(Options{Logger: zaptest.NewLogger(t), Clock: &fakeClock{}})
	s.Add("a", []string{"a"}, blocker(rec, "a", started))
	s.Add("b", []string{"b"}, blocker(rec, "b", started))
	s.Add("c", []string{"c"}, blocker(rec, "c", started))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	for i := 0; i < 3; i++ {
		wait(t, started)
	}
	cancel()
	require.NoError(t, wait(t, done))
	log := rec.get()
	assert.Equal(t, []string{"stop c", "stop b", "stop a"}, log[3:])
}

func TestFailedUnitRestartsTogether(t *testing.T) {
	rec := &recorder{}
	started := make(chan string, 16)
	failOnce := make(chan struct{}, 1)
	failOnce <- struct{}{}
	flaky := Func(func(ctx context.Context) error {
		rec.add("start flaky")
		started <- "flaky"
		select {
		case <-failOnce:
			return errors.New("disk on fire")
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	var events []Event
	var emu sync.Mutex
	s := New(Options{Clock: &fakeClock{}, OnEvent: func(e Event) {
		emu.Lock()
		events = append(events, e)
		emu.Unlock()
	}})
	s.Add("other", []string{"other"}, blocker(rec, "other", started))
	s.Add("io", []string{"submitter", "completer"}, flaky, blocker(rec, "completer", started))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	// other, flaky, completer; then flaky and completer again.
	for i := 0; i < 5; i++ {
		wait(t, started)
	}
	cancel()
	require.NoError(t, wait(t, done))
	assert.Equal(t, map[string]uint64{"submitter": 1, "completer": 1}, s.Restarts())
	log := rec.get()
	assert.Equal(t, 2, count(log, "start completer"), "the sibling restarts with the failed actor: %v", log)
	assert.Equal(t, 1, count(log, "start other"), "other units are left alone: %v", log)
	emu.Lock()
	defer emu.Unlock()
	var failed *Event
	for i := range events {
		if events[i].Kind == EventFailed {
			failed = &events[i]
		}
	}
	require.NotNil(t, failed)
	assert.Equal(t, "submitter", failed.Service)
	assert.EqualError(t, failed.Err, "disk on fire")
}

func count(log []string, s string) int {
	n := 0
	for _, l := range log {
		if l == s {
			n++
		}
	}
	return n
}

func TestPanicIsRecoveredWithStack(t *testing.T) {
	var once sync.Once
	restarted := make(chan struct{})
	svc := Func(func(ctx context.Context) error {
		first := false
		once.Do(func() { first = true })
		if first {
			var m map[string]int
			m["boom"] = 1 // a nil-map write panics
		}
		close(restarted)
		<-ctx.Done()
		return ctx.Err()
	})
	var stack []byte
	var emu sync.Mutex
	s := New(Options{Clock: &fakeClock{}, OnEvent: func(e Event) {
		if e.Kind == EventFailed {
			emu.Lock()
			stack = e.Stack
			emu.Unlock()
		}
	}})
	s.Add("p", []string{"p"}, svc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	wait(t, restarted)
	cancel()
	require.NoError(t, wait(t, done))
	emu.Lock()
	assert.Contains(t, string(stack), "supervisor_test.go")
	emu.Unlock()
}

func TestEscalatesPastTheLimit(t *testing.T) {
	rec := &recorder{}
	clk := &fakeClock{}
	runs := 0
	s := New(Options{Clock: clk, MaxRestarts: 3, Window: time.Second})
	s.Add("steady", []string{"steady"}, blocker(rec, "steady", nil))
	s.Add("bad", []string{"bad"}, Func(func(ctx context.Context) error {
		runs++
		return errors.New("always")
	}))
	err := s.Run(context.Background())
	require.ErrorIs(t, err, ErrEscalated)
	assert.Contains(t, err.Error(), "always")
	assert.Equal(t, 4, runs, "three restarts allowed, the fourth failure escalates")
	assert.Equal(t, "stop steady", rec.get()[len(rec.get())-1], "everything is stopped")
	// The waits grew and stayed jittered within [d/2, 3d/2].
	require.Len(t, clk.waited, 3)
	for i, w := range clk.waited {
		base := time.Millisecond << i
		assert.GreaterOrEqual(t, w, base/2)
		assert.LessOrEqual(t, w, base+base/2)
	}
}

// TestEscalationNamesTheActorOnce: an actor's errors start with its name;
// the escalation error names it once, and names an actor whose error does
// not.
func TestEscalationNamesTheActorOnce(t *testing.T) {
	for _, tc := range []struct{ msg, want string }{
		{"bad: disk on fire", "last: bad: disk on fire"},
		{"disk on fire", "last: bad: disk on fire"},
	} {
		s := New(Options{Clock: &fakeClock{}, MaxRestarts: 1, Window: time.Second})
		s.Add("bad", []string{"bad"}, Func(func(ctx context.Context) error { return errors.New(tc.msg) }))
		err := s.Run(context.Background())
		require.ErrorIs(t, err, ErrEscalated)
		assert.Contains(t, err.Error(), tc.want)
		assert.NotContains(t, err.Error(), "bad: bad:")
	}
}

func TestFailuresOutsideTheWindowDecay(t *testing.T) {
	clk := &fakeClock{}
	runs := 0
	s := New(Options{Clock: clk, MaxRestarts: 2, Window: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	s.Add("slowfail", []string{"slowfail"}, Func(func(ctx context.Context) error {
		runs++
		if runs == 20 {
			cancel()
			<-ctx.Done()
			return ctx.Err()
		}
		clk.advance(2 * time.Second) // each failure is alone in its window
		return errors.New("occasional")
	}))
	require.NoError(t, s.Run(ctx))
	assert.Equal(t, 20, runs)
	assert.Equal(t, uint64(19), s.Restarts()["slowfail"])
}

func TestReturningWithoutStopIsAFailure(t *testing.T) {
	clk := &fakeClock{}
	s := New(Options{Clock: clk, MaxRestarts: 1})
	s.Add("quitter", []string{"quitter"}, Func(func(ctx context.Context) error { return nil }))
	err := s.Run(context.Background())
	require.ErrorIs(t, err, ErrEscalated)
	assert.Contains(t, err.Error(), "returned without being stopped")
}

// TestFailureWhileStoppingIsReturned: a service that ends with an error
// of its own while being stopped (its last work failed) makes Run return
// that error: a stop is clean only when every actor finished cleanly.
func TestFailureWhileStoppingIsReturned(t *testing.T) {
	boom := errors.New("final flush failed")
	started := make(chan string, 2)
	s := New(Options{Logger: zaptest.NewLogger(t), Clock: &fakeClock{}})
	s.Add("a", []string{"a"}, blocker(&recorder{}, "a", started))
	s.Add("b", []string{"b"}, Func(func(ctx context.Context) error {
		started <- "b"
		<-ctx.Done()
		return boom
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	wait(t, started)
	wait(t, started)
	cancel()
	err := wait(t, done)
	assert.ErrorIs(t, err, boom)
	assert.Contains(t, err.Error(), "actor failed while stopping: b")
}

// TestCleanStopReturnsNil: services that return their context's error
// (wrapped or not) stop cleanly.
func TestCleanStopReturnsNil(t *testing.T) {
	started := make(chan string, 1)
	s := New(Options{Logger: zaptest.NewLogger(t), Clock: &fakeClock{}})
	s.Add("a", []string{"a"}, Func(func(ctx context.Context) error {
		started <- "a"
		<-ctx.Done()
		return fmt.Errorf("a: %w", ctx.Err())
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	wait(t, started)
	cancel()
	assert.NoError(t, wait(t, done))
}
