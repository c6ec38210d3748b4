package hot

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/wal"
)

// GenReport is what a read-only scan of one hot generation found (for
// `ringpipe inspect` and `ringpipe verify`).
type GenReport struct {
	Gen    Gen
	Name   string // the file's path relative to the engine directory
	Size   int64  // the file's size (its preallocation)
	Bytes  int64  // bytes of valid batches: where the next append goes
	Result wal.ScanResult
	// Records, MinRev and MaxRev describe the valid batches.
	Records        int
	MinRev, MaxRev messages.Revision
	// Err is the damage that makes Open refuse the generation: a
	// *messages.CorruptionError naming the file and the offset of the
	// first bad frame, or an I/O error reading it. A torn last batch is not
	// damage (Open zeroes it): it shows in Result.Torn.
	Err error
}

// Inspect scans generation g in opts.Dir as Open would (TolerateTornTail,
// whatever opts.Mode says; as an older generation when a later one's
// follow frame names it) but changes nothing: a torn tail is reported, not
// zeroed. fn, when not nil, is called with each record of the valid
// batches; an error from fn ends the scan and is returned in Err.
func Inspect(d ring.Doer, opts Options, g Gen, fn func(off int64, r messages.Record) error) GenReport {
	opts.Mode = wal.TolerateTornTail
	rep := GenReport{Gen: g}
	if err := opts.fill(); err != nil {
		rep.Err = err
		return rep
	}
	s := newSegment(d, opts, g)
	rep.Name = s.rel()
	if rep.Size, rep.Err = ring.Stat(d, s.path()); rep.Err != nil {
		rep.Err = fmt.Errorf("hot: stat %s: %w", s.rel(), rep.Err)
		return rep
	}
	// An older generation that a later one's follow frame names must
	// hold whole batches up to that end, as Open checks.
	end, by, err := s.followedEnd()
	if err != nil {
		rep.Err = err
		return rep
	}
	data, err := ring.ReadLog(d, s.path(), 0)
	if err != nil {
		rep.Err = fmt.Errorf("hot: read %s: %w", s.rel(), err)
		return rep
	}
	if end >= 0 {
		if rep.Err = s.checkDurable(data, end, by); rep.Err != nil {
			return rep
		}
	}
	rep.Result, rep.Err = s.scanData(data, func(off int64, r messages.Record) error {
		s.note(r.Revision)
		if fn != nil {
			return fn(off, r)
		}
		return nil
	})
	rep.Bytes = rep.Result.End
	rep.Records = s.records
	rep.MinRev, rep.MaxRev = s.minRev, s.maxRev
	return rep
}

// ListSpares returns the generations whose retired files wait in dir as
// spares (see Recycling in the package comment), oldest first. A missing
// directory holds none.
func ListSpares(d ring.Doer, dir string) ([]Gen, error) {
	out, err := spares(d, dir)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("hot: list spares in %s: %w", dir, err)
	}
	return out, nil
}
