package ringpipe

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ringpipe/ringpipe/livetail"
	"github.com/ringpipe/ringpipe/messages"
)

// View is a consistent read snapshot of every space: it never changes, and
// it stays readable after the engine stops.
type View struct {
	v *livetail.View
}

// Revision returns the highest revision the View reflects: every record it
// shows has a revision at or below it, and every write acknowledged before
// the View was taken is in it. It is not a watermark: a write still in
// flight when the View was taken (to another space, or one staged while
// its hot file was slow) may have a lower revision and be missing from
// this View; it shows in later ones once acknowledged.
func (v *View) Revision() Revision { return v.v.Revision() }

// Get returns the newest record at p in the View; ErrNotFound if there is
// none or it is a tombstone.
func (v *View) Get(space SpaceID, p Point) (Record, error) {
	return v.get(context.Background(), space, p)
}

// get is Get whose block reads give up when ctx ends.
func (v *View) get(ctx context.Context, space SpaceID, p Point) (Record, error) {
	r, err := v.v.GetContext(ctx, space, p)
	if err != nil {
		return Record{}, publicErr(space, err)
	}
	return copyRecord(r), nil
}

// Scan calls fn for the newest live record of every point inside box, in
// key order, until fn returns false.
func (v *View) Scan(space SpaceID, box Box, fn func(Record) bool) error {
	return v.scan(context.Background(), space, box, fn)
}

// scanCheckEvery is how many records Scan passes between looks at ctx: a
// context check per record would cost more than the record.
const scanCheckEvery = 256

func (v *View) scan(ctx context.Context, space SpaceID, box Box, fn func(Record) bool) error {
	if fn == nil {
		return errors.New("ringpipe: Scan with a nil fn")
	}
	n := 0
	var cerr error
	err := v.v.ScanContext(ctx, space, livetail.Box{Min: box.Min, Max: box.Max}, func(r messages.Record) bool {
		n++
		if n%scanCheckEvery == 0 {
			if cerr = ctx.Err(); cerr != nil {
				return false
			}
		}
		return fn(copyRecord(r))
	})
	if err != nil {
		return publicErr(space, err)
	}
	return cerr
}

// copyRecord gives the caller a record it may keep and change: the View's
// records are shared by every reader.
func copyRecord(r messages.Record) Record {
	r.Point = slices.Clone(r.Point)
	if r.Value != nil {
		r.Value = slices.Clone(r.Value)
	}
	return r
}

// publicErr maps livetail's errors to the API's.
func publicErr(space SpaceID, err error) error {
	switch {
	case errors.Is(err, livetail.ErrNotFound):
		return ErrNotFound
	case errors.Is(err, livetail.ErrUnknownSpace):
		return fmt.Errorf("%w: %d", ErrUnknownSpace, space)
	}
	return err
}
