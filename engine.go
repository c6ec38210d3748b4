package ringpipe

import (
	"context"
	"errors"
	"fmt"

	"github.com/ringpipe/ringpipe/internal/stagetrace"
)

// Engine is a running ringpipe engine on one directory. Every method is
// safe for concurrent use.
type Engine struct {
	eng *engine
}

// Start opens (creating if needed) the engine in cfg.Dir, runs crash
// recovery and starts the actors. It returns once the engine accepts
// writes. Start creates Dir if it is missing, with any missing parent
// directories (each made durable before the next). A relative Dir is resolved against the working directory,
// and its symlinks resolved, once, at Start: the engine's files stay
// there if the process changes directory later.
func Start(ctx context.Context, cfg Config) (*Engine, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.NewRing == nil { // a test ring's files are not the process's
		if cfg.Dir, err = resolveDir(cfg.Dir); err != nil {
			return nil, err
		}
	}
	e, err := start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &Engine{eng: e}, nil
}

// Stop stops accepting writes, drains and acknowledges what was accepted,
// makes it durable, stops every goroutine the engine started and releases
// the directory lock. It is safe to call more than once and from several
// goroutines; later calls return nil. Bounded by ctx: when ctx ends first,
// Stop still stops every goroutine and releases the lock, and returns
// ctx's error.
func (e *Engine) Stop(ctx context.Context) error { return e.eng.stop(ctx) }

// CreateSpace creates a space; it is durable on return. Creating an
// existing name with the same spec returns its ID; with a different spec,
// ErrSpaceExists. A name is 1 to 255 bytes of valid UTF-8, not only white
// space, without control characters.
func (e *Engine) CreateSpace(ctx context.Context, spec SpaceSpec) (SpaceID, error) {
	id, err := e.eng.createSpace(ctx, spec)
	return id, saysWhat(err, "ringpipe: create space %q", spec.Name)
}

// Spaces returns every space, ordered by ID.
func (e *Engine) Spaces() []SpaceInfo { return e.eng.spaceList() }

// Put writes value at p. It returns once the write is durable. A nil or
// empty value is a live record with an empty value, not a tombstone.
func (e *Engine) Put(ctx context.Context, space SpaceID, p Point, value []byte) (Revision, error) {
	stagetrace.Mark(stagetrace.PutStart)
	t, err := e.eng.enqueue(ctx, space, p, value, false, true)
	if err != nil {
		return 0, saysWhat(err, "ringpipe: put to space %d", space)
	}
	rev, err := t.wait(ctx)
	stagetrace.Mark(stagetrace.PutReturn)
	return rev, saysWhat(err, "ringpipe: put to space %d: wait until durable", space)
}

// Delete writes a tombstone at p, durable on return.
func (e *Engine) Delete(ctx context.Context, space SpaceID, p Point) (Revision, error) {
	t, err := e.eng.enqueue(ctx, space, p, nil, true, true)
	if err != nil {
		return 0, saysWhat(err, "ringpipe: delete in space %d", space)
	}
	rev, err := t.wait(ctx)
	return rev, saysWhat(err, "ringpipe: delete in space %d: wait until durable", space)
}

// PutAsync returns once the write is queued; the ticket says when it is
// durable.
func (e *Engine) PutAsync(ctx context.Context, space SpaceID, p Point, value []byte) (*Ticket, error) {
	t, err := e.eng.enqueue(ctx, space, p, value, false, false)
	return t, saysWhat(err, "ringpipe: put to space %d: queue", space)
}

// Sync returns once every write accepted before the call is durable.
func (e *Engine) Sync(ctx context.Context) error {
	return saysWhat(e.eng.sync(ctx), "ringpipe: sync")
}

// Flush seals the space's unsealed records into a block and returns once
// the block is durable and visible to readers.
func (e *Engine) Flush(ctx context.Context, space SpaceID) error { return e.eng.flush(ctx, space) }

// Get returns the newest record at p; ErrNotFound if there is none or it
// is a tombstone. A write is visible to Get once Put has returned.
func (e *Engine) Get(ctx context.Context, space SpaceID, p Point) (Record, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, saysWhat(err, "ringpipe: get in space %d", space)
	}
	return e.View().get(ctx, space, p)
}

// Scan calls fn for the newest live record of every point inside box, in
// key order, until fn returns false. It reads one View (see Engine.View),
// so writes made during the Scan, fn's own included, are not in it. ctx is
// checked before the first call and every 256 records.
func (e *Engine) Scan(ctx context.Context, space SpaceID, box Box, fn func(Record) bool) error {
	if err := ctx.Err(); err != nil {
		return saysWhat(err, "ringpipe: scan space %d", space)
	}
	return saysWhat(e.View().scan(ctx, space, box, fn), "ringpipe: scan space %d", space)
}

// View returns a consistent read snapshot; it never changes.
func (e *Engine) View() *View { return &View{v: e.eng.view()} }

// Stats returns the engine's counters and latency summaries.
func (e *Engine) Stats() Stats { return e.eng.stats() }

// saysWhat prefixes a bare context error (ctx.Err() as it is) with what
// gave up; every other error says that already. errors.Is still finds
// the context's error. Before, a Put, Delete, Sync, CreateSpace or
// Ticket.Wait whose ctx ended said only "context deadline exceeded"
// (ctxb audit).
func saysWhat(err error, format string, args ...any) error {
	if err == context.Canceled || err == context.DeadlineExceeded { //nolint:errorlint // only a bare one
		return fmt.Errorf(format+": %w", append(args, err)...)
	}
	return err
}

var errNotImplemented = errors.New("ringpipe: not implemented")
