// Package baseline holds two plain durable logs that the engine's
// benchmarks compare against: GroupLog, a group-committing log with one
// flusher goroutine, and SyncLoop, one pwrite+fdatasync per record under a
// mutex. They are comparison targets written directly on system calls, not
// part of the engine's data path.
//
// Both write the same frames into one preallocated file: an 8-byte header
// (little-endian payload length, then a CRC-32C of the length bytes and
// the payload) followed by the payload. The checksum covers the length, so
// an all-zero header (the preallocated, never written part of the file) is
// never a valid frame and marks the end of the log.
package baseline

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Log is what both baselines offer: Append returns once rec is durable.
type Log interface {
	Append(rec []byte) error
	Close() error
}

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("baseline: log closed")

// headerSize is a frame's header: payload length and CRC-32C, 4 bytes each.
const headerSize = 8

// MaxRecord is the largest record Append takes: far above what a
// benchmark writes, small enough that one frame never overflows the
// length field or a gathered buffer's sane size.
const MaxRecord = 16 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendFrame appends rec's frame to buf.
func appendFrame(buf, rec []byte) []byte {
	var hdr [headerSize]byte
	binary.LittleEndian.PutUint32(hdr[0:4], uint32(len(rec)))
	crc := crc32.Update(crc32.Checksum(hdr[0:4], castagnoli), castagnoli, rec)
	binary.LittleEndian.PutUint32(hdr[4:8], crc)
	return append(append(buf, hdr[:]...), rec...)
}

// checkRecord refuses a record no frame can hold.
func checkRecord(rec []byte) error {
	if len(rec) > MaxRecord {
		return fmt.Errorf("baseline: record of %d bytes exceeds MaxRecord (%d)", len(rec), MaxRecord)
	}
	return nil
}

// Records reads the records of the log at path, in file order, up to the
// first all-zero header or the end of the file. A frame that is cut short
// or fails its checksum is an error naming its offset.
func Records(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("baseline: read log: %w", err)
	}
	var recs [][]byte
	for off := 0; off+headerSize <= len(data); {
		hdr := data[off : off+headerSize]
		if binary.LittleEndian.Uint64(hdr) == 0 {
			break
		}
		n := int(binary.LittleEndian.Uint32(hdr[0:4]))
		if n > MaxRecord || off+headerSize+n > len(data) {
			return recs, fmt.Errorf("baseline: %s offset %d: frame of %d bytes runs past the end", path, off, n)
		}
		rec := data[off+headerSize : off+headerSize+n]
		if crc32.Update(crc32.Checksum(hdr[0:4], castagnoli), castagnoli, rec) != binary.LittleEndian.Uint32(hdr[4:8]) {
			return recs, fmt.Errorf("baseline: %s offset %d: checksum mismatch", path, off)
		}
		recs = append(recs, rec)
		off += headerSize + n
	}
	return recs, nil
}

// create creates (truncating) the log file at path, preallocates
// preallocate bytes and makes the file, its size and its directory entry
// durable, so that an append inside the preallocation needs only an
// fdatasync of the data. Appends past it still work; their fdatasync then
// also writes the new size.
func create(path string, preallocate int64) (int, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return -1, fmt.Errorf("baseline: create %s: %w", path, err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("baseline: %s %s: %w", what, path, err)
	}
	if preallocate > 0 {
		if err := unix.Fallocate(fd, 0, 0, preallocate); err != nil {
			return fail("preallocate", err)
		}
	}
	if err := unix.Fsync(fd); err != nil {
		return fail("sync", err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fail("sync directory of", err)
	}
	return fd, nil
}

// syncDir makes dir's entries durable.
func syncDir(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fsync(fd)
}

// pwriteAll writes all of buf at off, continuing after short writes.
func pwriteAll(fd int, buf []byte, off int64) error {
	for len(buf) > 0 {
		n, err := unix.Pwrite(fd, buf, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("baseline: pwrite %d bytes at %d: %w", len(buf), off, err)
		}
		if n == 0 {
			return fmt.Errorf("baseline: pwrite %d bytes at %d: no progress", len(buf), off)
		}
		buf, off = buf[n:], off+int64(n)
	}
	return nil
}

// writeDurable writes buf at off and fdatasyncs the file. An error leaves
// the data's fate unknown: the caller must not retry on the same file.
func writeDurable(fd int, buf []byte, off int64) error {
	if err := pwriteAll(fd, buf, off); err != nil {
		return err
	}
	if err := unix.Fdatasync(fd); err != nil {
		return fmt.Errorf("baseline: fdatasync: %w", err)
	}
	return nil
}
