package hot

import (
	"bytes"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
)

// BenchmarkAppendSync measures what a hot segment's append costs: a 4 KiB
// write at the end of the log followed by fdatasync, into
//   - fresh: a new file preallocated with fallocate (unwritten extents,
//     which each fdatasync must convert: a journal commit), and
//   - recycled: a file of the same size whose blocks were written before
//     (an overwrite: fdatasync writes data only).
//
// It is what decided that retired hot files are recycled (see the package
// comment).
func BenchmarkAppendSync(b *testing.B) {
	const size = 16 << 20
	for _, mode := range []string{"fresh", "recycled"} {
		b.Run(mode, func(b *testing.B) {
			d := stdDoer(b)
			path := filepath.Join(b.TempDir(), "seg")
			fd, err := ring.Open(d, path, unix.O_RDWR|unix.O_CREAT, 0o644)
			if err != nil {
				b.Fatal(err)
			}
			defer ring.Close(d, fd)
			if err := ring.Fallocate(d, fd, 0, size, false); err != nil {
				b.Fatal(err)
			}
			if mode == "recycled" {
				buf := make([]byte, 1<<20)
				for off := int64(0); off < size; off += int64(len(buf)) {
					if err := ring.WriteAt(d, fd, buf, off); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := ring.Fsync(d, fd); err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 4096)
			off := int64(0)
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				if err := ring.WriteSync(d, fd, buf, off); err != nil {
					b.Fatal(err)
				}
				off = (off + int64(len(buf))) % size
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/append")
		})
	}
}

// BenchmarkSegmentAppend is BenchmarkAppendSync through the Segment API:
// one 4 KiB record per Append (a batch, its end marker, fdatasync) into a
// generation that Create made fresh or recycled from a spare whose blocks
// were all written before.
func BenchmarkSegmentAppend(b *testing.B) {
	const size = 64 << 20
	for _, mode := range []string{"fresh", "recycled"} {
		b.Run(mode, func(b *testing.B) {
			d := stdDoer(b)
			opts := Options{Dir: filepath.Join(b.TempDir(), "hot"), SegmentSize: size}
			s, err := Create(d, opts, Gen{Space: 1, Gen: 1})
			if err != nil {
				b.Fatal(err)
			}
			if mode == "recycled" {
				// Write every block of generation 1, retire it to a
				// spare, and let the next rotation reuse it.
				junk := bytes.Repeat([]byte{0xab}, 1<<20)
				for off := int64(0); off < size; off += int64(len(junk)) {
					if err := ring.WriteAt(d, s.fd, junk, off); err != nil {
						b.Fatal(err)
					}
				}
				if err := ring.Fsync(d, s.fd); err != nil {
					b.Fatal(err)
				}
				s2, err := s.Rotate()
				if err != nil {
					b.Fatal(err)
				}
				if err := s.Retire(); err != nil {
					b.Fatal(err)
				}
				if s, err = s2.Rotate(); err != nil {
					b.Fatal(err)
				}
				s2.Close()
				if !s.Recycled() {
					b.Fatal("not recycled")
				}
			}
			defer s.Close()
			rec := messages.Record{Space: 1, Point: messages.Point{1}, Value: make([]byte, 4096)}
			b.SetBytes(int64(len(rec.Value)))
			for b.Loop() {
				rec.Revision++
				if err := s.Append([]messages.Record{rec}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/append")
		})
	}
}
