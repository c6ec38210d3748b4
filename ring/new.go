package ring

import (
	"fmt"

	"go.uber.org/zap"
)

// Kind chooses a backend.
type Kind int

// The backends New can build. The simulated one lives in package ring/sim.
const (
	Auto  Kind = iota // io_uring, falling back to Std with a logged reason
	URing             // io_uring or an error
	Std               // plain system calls on a goroutine pool
)

func (k Kind) String() string {
	switch k {
	case Auto:
		return "auto"
	case URing:
		return "uring"
	case Std:
		return "std"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Options configure New. Zero values mean the defaults.
type Options struct {
	Kind Kind
	// Entries is the io_uring submission queue size (a power of two); the
	// completion queue is twice as large. Default 256.
	Entries uint32
	// Capacity is how many Ops may be in flight, with Deadlines or
	// without; default half the CQ size (Entries) for uring, so that the CQ
	// cannot overflow even when each Op's Deadline notice takes a CQE of
	// its own, and 4*Entries for std.
	Capacity int
	// Workers is the std backend's pool size. It bounds how many blocking
	// system calls (fsyncs of different files, say) run at once; default 8.
	Workers int
	Logger  *zap.Logger
}

// DefaultEntries is the default submission queue size: enough for a batch
// of writes and syncs to every hot segment of a busy engine.
const DefaultEntries = 256

// New builds a Ring of the kind opts ask for.
func New(opts Options) (Ring, error) {
	lg := opts.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	if opts.Entries == 0 {
		opts.Entries = DefaultEntries
	}
	if opts.Entries&(opts.Entries-1) != 0 || opts.Entries > 32768 {
		return nil, fmt.Errorf("ring: Entries %d is not a power of two up to 32768", opts.Entries)
	}
	if opts.Capacity < 0 || opts.Workers < 0 {
		return nil, fmt.Errorf("ring: negative Capacity or Workers")
	}
	switch opts.Kind {
	case URing:
		return uringNew(opts)
	case Std:
		return newStdFrom(opts, ""), nil
	case Auto:
		r, err := uringNew(opts)
		if err == nil {
			// Debug: the engine logs the ring it runs on once, at Info,
			// for its own ring and not for its block reads' (logs audit:
			// the backend was logged three times at a Start).
			lg.Debug("ring backend", zap.String("backend", "uring"), zap.String("kernel", r.Info().Kernel),
				zap.String("features", fmt.Sprintf("%#x", r.Info().Features)))
			return r, nil
		}
		s := newStdFrom(opts, err.Error())
		lg.Warn("io_uring unavailable, using std backend", zap.Error(err), zap.String("kernel", s.info.Kernel))
		return s, nil
	}
	return nil, fmt.Errorf("ring: unknown backend kind %d", int(opts.Kind))
}

// uringNew builds the io_uring backend; tests replace it to exercise the
// fallback (io_uring_setup refused with ENOSYS or EPERM, as under a seccomp
// profile).
var uringNew = newURing

func newStdFrom(opts Options, fallback string) *stdRing {
	w := opts.Workers
	if w == 0 {
		w = 8
	}
	c := opts.Capacity
	if c == 0 {
		c = 4 * int(opts.Entries)
	}
	r := newStd(w, c)
	r.info.Fallback = fallback
	return r
}
