package ringpipe

import (
	"context"

	"github.com/ringpipe/ringpipe/livetail"
)

// engine is the running engine (being built).
type engine struct{}

func start(ctx context.Context, cfg Config) (*engine, error) { return nil, errNotImplemented }
func (e *engine) stop(ctx context.Context) error             { return errNotImplemented }
func (e *engine) createSpace(ctx context.Context, spec SpaceSpec) (SpaceID, error) {
	return 0, errNotImplemented
}
func (e *engine) spaceList() []SpaceInfo { return nil }
func (e *engine) enqueue(ctx context.Context, space SpaceID, p Point, value []byte, tomb bool) (*Ticket, error) {
	return nil, errNotImplemented
}
func (e *engine) sync(ctx context.Context) error                 { return errNotImplemented }
func (e *engine) flush(ctx context.Context, space SpaceID) error { return errNotImplemented }
func (e *engine) view() *livetail.View                           { return livetail.NewTail().View() }
func (e *engine) stats() Stats                                   { return Stats{} }
