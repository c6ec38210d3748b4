package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/ringpipe/ringpipe/snapshot"
)

// inspect is `ringpipe inspect DIR`: what the directory holds, section by
// section. Damage found on the way is listed at the end (verify says more)
// and makes the exit status 1.
func (a *app) inspect(s *survey) int {
	w := a.stdout
	st := s.man.State
	fmt.Fprintf(w, "directory %s\n", s.dir)
	fmt.Fprintf(w, "manifest  %s: %d bytes, %d edits in %d frames, next space id %d, next block id %d\n",
		s.man.Name, s.man.Result.End, len(s.man.Edits), s.man.Result.Frames, st.NextSpaceID(), st.NextBlockID())

	spaces := st.Spaces()
	fmt.Fprintf(w, "\nspaces (%d)\n", len(spaces))
	if len(spaces) > 0 {
		tw := table(w, "id", "name", "dims", "bits", "blocks", "block records", "sealed gen", "staged pending")
		for _, sp := range spaces {
			var recs uint64
			for _, m := range st.Index(sp.ID).Blocks() {
				recs += m.Count
			}
			gen, _ := st.SealedGen(sp.ID)
			fmt.Fprintf(tw, "  %d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", sp.ID, sp.Name, sp.Dims, sp.Bits,
				st.Index(sp.ID).Len(), recs, gen, s.staged[sp.ID])
		}
		tw.Flush()
	}

	fmt.Fprintf(w, "\nblocks (%d)\n", len(s.blocks))
	if len(s.blocks) > 0 {
		tw := table(w, "space", "id", "records", "keys", "revisions", "sealed gen", "size", "file")
		for _, b := range s.blocks {
			m := b.meta
			state := ""
			if b.unnamed {
				state = "  (not in the damaged manifest)"
			}
			if b.err != nil {
				state += "  DAMAGED"
			}
			gen := "-"
			if b.gen != 0 {
				gen = strconv.FormatUint(b.gen, 10)
			}
			fmt.Fprintf(tw, "  %d\t%d\t%d\t[%d, %d]\t[%d, %d]\t%s\t%s\t%s%s\n", m.Space, m.ID, m.Count,
				m.MinKey, m.MaxKey, m.MinRev, m.MaxRev, gen, bytesize(m.Size), b.file, state)
		}
		tw.Flush()
	}
	for _, o := range s.orphans {
		fmt.Fprintf(w, "  orphaned: %s (not in the manifest; recovery removes it)\n", o)
	}
	for _, f := range s.foreign {
		fmt.Fprintf(w, "  foreign: %s (not a file the engine writes; recovery leaves it alone)\n", f)
	}

	fmt.Fprintf(w, "\nhot generations (%d)\n", len(s.gens))
	if len(s.gens) > 0 {
		tw := table(w, "space", "gen", "records", "revisions", "bytes", "state", "file")
		for _, g := range s.gens {
			state := "older, unsealed"
			switch {
			case g.unknown:
				state = "unknown space"
			case g.sealed:
				state = "sealed (recovery retires it)"
			case g.active:
				state = "active"
			}
			fmt.Fprintf(tw, "  %d\t%d\t%d\t%s\t%s\t%s\t%s\n", g.Gen.Space, g.Gen.Gen, g.Records,
				revRange(g.Records, g.MinRev, g.MaxRev), bytesize(g.Bytes), withDamage(state, g.Err, g.Result.Torn), g.Name)
		}
		tw.Flush()
	}
	if len(s.spares) > 0 {
		fmt.Fprintf(w, "  %d spare files kept for reuse\n", len(s.spares))
	}

	fmt.Fprintf(w, "\nWAL segments (%d), retired through segment %d\n", len(s.wal), st.WALRetired())
	if len(s.wal) > 0 {
		tw := table(w, "seq", "records", "revisions", "bytes", "state", "file")
		for _, g := range s.wal {
			state := "complete"
			switch {
			case g.Limit == 0:
				state = "cut (recovery ignores it)"
			case g.Active:
				state = "active"
			}
			fmt.Fprintf(tw, "  %d\t%d\t%s\t%s\t%s\t%s\n", g.Seq, g.Records, revRange(g.Records, g.MinRev, g.MaxRev),
				bytesize(g.Result.End), withDamage(state, g.Err, g.Result.Torn), g.Name)
		}
		tw.Flush()
	}
	total := 0
	for _, n := range s.staged {
		total += n
	}
	fmt.Fprintf(w, "\nstaged entries pending promotion: %d\n", total)

	fmt.Fprintf(w, "\nmanifest edits (%d)\n", len(s.man.Edits))
	for _, e := range s.man.Edits {
		fmt.Fprintf(w, "  @%-8d %s\n", e.Off, describeEdit(e.Edit))
	}

	fs, _ := s.findings()
	damaged := 0
	for _, f := range fs {
		if !f.warning {
			damaged++
		}
	}
	if damaged > 0 {
		fmt.Fprintf(w, "\ndamage (%d; run ringpipe verify for every check)\n", damaged)
		for _, f := range fs {
			if !f.warning {
				fmt.Fprintf(w, "  %s\n", f)
			}
		}
		return exitFail
	}
	return exitOK
}

// table returns a tabwriter on w with a header line written.
func table(w io.Writer, cols ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  %s\n", strings.Join(cols, "\t"))
	return tw
}

// describeEdit prints a manifest edit on one line.
func describeEdit(e snapshot.Edit) string {
	switch e := e.(type) {
	case snapshot.SpaceCreated:
		return fmt.Sprintf("SpaceCreated id=%d name=%q dims=%d bits=%d", e.ID, e.Spec.Name, e.Spec.Dims, e.Spec.Bits)
	case snapshot.BlockAdded:
		m := e.Meta
		return fmt.Sprintf("BlockAdded space=%d id=%d records=%d keys=[%d,%d] revs=[%d,%d] size=%d checksum=%x",
			m.Space, m.ID, m.Count, m.MinKey, m.MaxKey, m.MinRev, m.MaxRev, m.Size, m.Checksum[:8])
	case snapshot.BlockRemoved:
		return fmt.Sprintf("BlockRemoved space=%d id=%d", e.Space, e.ID)
	case snapshot.GenSealed:
		return fmt.Sprintf("GenSealed space=%d gen=%d maxrev=%d", e.Space, e.Gen, e.MaxRev)
	case snapshot.WALRetired:
		return fmt.Sprintf("WALRetired seq=%d", e.Seq)
	case snapshot.NextIDs:
		return fmt.Sprintf("NextIDs space=%d block=%d", e.Space, e.Block)
	}
	return fmt.Sprintf("%T %+v", e, e)
}

// bytesize prints a size in B, KiB or MiB.
func bytesize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// withDamage adds what a scan of a log file found wrong to its state.
func withDamage(state string, err error, torn bool) string {
	switch {
	case err != nil:
		return state + ", DAMAGED"
	case torn:
		return state + ", torn tail"
	}
	return state
}

// revRange formats a log file's revision range; "-" when it holds none.
func revRange[R ~uint64](records int, lo, hi R) string {
	if records == 0 {
		return "-"
	}
	return fmt.Sprintf("[%d, %d]", lo, hi)
}
