package wal

import (
	"errors"
	"fmt"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
)

// SegmentReport is what a read-only scan of one staging WAL segment found
// (for `ringpipe inspect` and `ringpipe verify`).
type SegmentReport struct {
	SegmentInfo        // Seq, Records and the revision range of the valid batches
	Name        string // the segment's path relative to the engine directory
	Size        int64  // the file's size (its preallocation)
	// Limit is how many bytes of the segment recovery reads: -1 for all,
	// less where a later segment's cut (TypeCut) ends it (after a roll,
	// exactly where its batches must end; after a failed batch, before
	// it); 0 means recovery ignores the segment.
	Limit int64
	// Result is where the scan ended; Result.Torn marks a torn last batch
	// that Open would zero (the batch starting at Result.End).
	Result ScanResult
	// Err is the damage that makes Open refuse the WAL: a
	// *messages.CorruptionError naming the segment and the offset of the
	// first bad frame, or an I/O error reading the file. The scan of a
	// segment stops at its first damage, so Records counts the batches
	// before it.
	Err error
}

// Inspect scans every segment of the WAL in dir as Open does (cuts, the
// torn-tail rule, TolerateTornTail), but changes no file and does not
// create dir (a missing one holds no segment): a torn last batch is
// reported in Result.Torn, not zeroed. name is dir as reports name it
// (default "wal"). fn, when not nil, is called with every record of the
// valid batches; an error from fn stops Inspect and is returned. Damage in
// one segment does not stop the scan of the others.
func Inspect(d ring.Doer, dir, name string, fn func(seq uint64, off int64, r messages.Record) error) ([]SegmentReport, error) {
	if name == "" {
		name = "wal"
	}
	names, err := ring.ReadDir(d, dir)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("wal: list segments: %w", err)
	}
	var seqs []uint64
	for _, n := range names {
		if seq, ok := parseSegmentName(n); ok {
			seqs = append(seqs, seq)
		}
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	// A WAL value without a file open: what the scan helpers need.
	w := &WAL{d: d, opts: Options{Dir: dir, Name: name, Mode: TolerateTornTail}, fd: -1}
	limits, err := w.cutLimits(seqs)
	if err != nil {
		return nil, err
	}
	reps := make([]SegmentReport, len(seqs))
	for i, seq := range seqs {
		rep := &reps[i]
		rep.Seq, rep.Name, rep.Limit = seq, w.rel(seq), limits[i].n
		if rep.Size, rep.Err = ring.Stat(d, w.path(seq)); rep.Err != nil {
			rep.Err = fmt.Errorf("wal: stat segment %d: %w", seq, rep.Err)
			continue
		}
		var ferr error
		rep.SegmentInfo, rep.Result, rep.Err = w.replayUpTo(seq, limits[i], func(seq uint64, off int64, r messages.Record) error {
			if fn == nil {
				return nil
			}
			ferr = fn(seq, off, r)
			return ferr
		})
		if ferr != nil {
			return reps, ferr
		}
	}
	if n := len(reps); n > 0 {
		reps[n-1].Active = true // the segment Open appends to
	}
	// Open's rule: a torn segment followed by one with a valid frame was
	// complete once, so it is damaged.
	for i := range reps {
		if reps[i].Err != nil || !reps[i].Result.Torn {
			continue
		}
		for _, later := range reps[i+1:] {
			if later.Result.Frames > 0 {
				reps[i].Err = &messages.CorruptionError{Path: reps[i].Name, Offset: reps[i].Result.End,
					Reason: "torn batch in a segment followed by a non-empty one"}
				break
			}
		}
	}
	return reps, nil
}
