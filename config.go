package ringpipe

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/snapshot"
	"github.com/ringpipe/ringpipe/wal"
)

// Config configures an Engine. Zero values mean "default"; invalid values
// make Start return an error that names the field.
//
// DirectIO writes the logs (hot segments and the staging WAL) through
// O_DIRECT fds, each batch padded to whole 512-byte sectors so that no
// write touches a sector holding an acknowledged batch (package hot,
// "Direct I/O"). It saves io_uring a kernel worker per write on file
// systems that do O_DIRECT overwrites asynchronously (ext4, XFS), and
// costs up to a sector of padding per batch. Sealed blocks are written
// with O_DIRECT too, all but their last partial sector, which goes through
// the page cache so that the file has the block's exact size; the fsync
// that ends a block covers both. A file system that refuses O_DIRECT
// (tmpfs) gets buffered writes.
type Config struct {
	Dir                string        // required; created if missing, with its parents; resolved to an absolute path at Start
	Backend            Backend       // BackendAuto (default), BackendURing, BackendStd
	Logger             *zap.Logger   // nil: no logging
	QueueCapacity      int           // write queue; default 4096
	RingEntries        uint32        // submission queue depth; default 256 (a power of two, 8 to 32768)
	BatchSize          int           // most writes taken from the queue per round (held writes of a busy file all join its next write); default 32 (or QueueCapacity if less); at most QueueCapacity
	BatchTimeout       time.Duration // longest wait to fill a batch; 0 (default): submit what is queued
	DirectWriteTimeout time.Duration // hot-segment deadline before staging; default 2ms
	PromoteInterval    time.Duration // promoter tick; default 1ms
	SealThreshold      int           // records per hot segment before sealing; default 16384
	SealBytes          int64         // or bytes per hot segment before sealing; default 4 MiB
	MaxValueSize       int           // default 1 MiB, or what one log file of Preallocate bytes holds if less; at most 64 MiB - 84 bytes
	Preallocate        int64         // bytes preallocated per log file; default 64 MiB (a multiple of 4096, 8192 to 1 GiB)
	DirectIO           bool          // O_DIRECT for logs and blocks
	WALRecovery        RecoveryMode  // TolerateTornTail (default) or Strict
	BlockCacheBytes    int64         // decoded pages of sealed blocks kept in memory; default 32 MiB

	// NewRing, when set, makes the engine's ring instead of Backend: the
	// seam through which tests run the engine on ring/sim's simulated disk
	// (Dir is then a path on that disk). The engine closes the ring at
	// Stop.
	NewRing func(ring.Options) (ring.Ring, error)
}

// Backend chooses the I/O backend.
type Backend int

// The backends.
const (
	BackendAuto  Backend = iota // io_uring, or std with a logged reason when the kernel refuses it
	BackendURing                // io_uring or an error
	BackendStd                  // plain system calls on a goroutine pool
)

func (b Backend) String() string {
	switch b {
	case BackendAuto:
		return "auto"
	case BackendURing:
		return "uring"
	case BackendStd:
		return "std"
	}
	return fmt.Sprintf("Backend(%d)", int(b))
}

// RecoveryMode says how recovery treats a damaged last write of a log.
type RecoveryMode = wal.RecoveryMode

// The recovery modes.
const (
	// TolerateTornTail drops a torn last write (it was never acknowledged).
	TolerateTornTail = wal.TolerateTornTail
	// Strict refuses to start on any damaged frame.
	Strict = wal.Strict
)

// Defaults, each with why.
const (
	// DefaultQueueCapacity bounds the writes waiting for the submitter:
	// enough for 64 writers to each have dozens of async writes queued.
	DefaultQueueCapacity = 4096
	// DefaultRingEntries is room for a batch's writes and syncs to every
	// hot segment plus the promoter's and sealer's I/O.
	DefaultRingEntries = 256
	// DefaultBatchSize merges this many writes into one group commit.
	DefaultBatchSize = 32
	// DefaultDirectWriteTimeout is a few fdatasyncs on a healthy disk
	// (100–200 µs each on the virtio disks measured in RING-NOTES.md).
	DefaultDirectWriteTimeout = 2 * time.Millisecond
	// DefaultPromoteInterval is the promoter's tick.
	DefaultPromoteInterval = time.Millisecond
	// DefaultSealThreshold keeps a hot segment's tail small enough to sort
	// quickly and to replay fast after a crash.
	DefaultSealThreshold = 16384
	// DefaultSealBytes seals before a hot segment outgrows its preallocation.
	DefaultSealBytes = 4 << 20
	// DefaultMaxValueSize is the largest value accepted.
	DefaultMaxValueSize = 1 << 20
	// DefaultPreallocate is each log file's preallocation: appends into
	// allocated space do not change the file size, so fdatasync need not
	// write metadata.
	DefaultPreallocate = 64 << 20
	// DefaultBlockCacheBytes keeps the hot pages of sealed blocks: point
	// reads of a working set this size cost no I/O, and the heap stays
	// bounded whatever the data size (snapshot.Cache).
	DefaultBlockCacheBytes = snapshot.DefaultCacheBytes
)

// Limits on Config values.
const (
	maxRingEntries = 32768
	// minRingEntries leaves room for the engine's longest linked chain
	// (a write, its sync and a close) with slack; 1 or 2 entries cannot
	// hold one.
	minRingEntries = 8
	// minPreallocate is the smallest log file that holds a record (of
	// 16 coordinates and a 1-byte value) with its header.
	minPreallocate = 8192
	// maxPreallocate bounds each log file: recovery reads a live log file
	// whole to tell a torn tail from damage further on, so a Start over
	// files of 1 TiB ran out of memory (extreme-config audit), and each
	// space holds up to three such files on the disk.
	maxPreallocate = 1 << 30
)

// maxValueSizeLimit is the largest value a record frame holds: a frame's
// payload limit (wal.MaxFrame) less the record's own header with the most
// coordinates (16). It was 64 MiB, and a Put of a 64 MiB value panicked
// the submitter (extreme-config audit).
var maxValueSizeLimit = wal.MaxFrame - wal.RecordSize(messages.Record{Point: make(messages.Point, 16)})

// withDefaults returns c with zero values replaced by defaults, or an error
// naming the first invalid field.
func (c Config) withDefaults() (Config, error) {
	bad := func(field string, v any, why string) (Config, error) {
		return c, fmt.Errorf("ringpipe: invalid Config.%s = %v: %s", field, v, why)
	}
	if c.Dir == "" {
		return bad("Dir", `""`, "required")
	}
	if c.Backend < BackendAuto || c.Backend > BackendStd {
		return bad("Backend", int(c.Backend), "not BackendAuto, BackendURing or BackendStd")
	}
	if c.WALRecovery != TolerateTornTail && c.WALRecovery != Strict {
		return bad("WALRecovery", int(c.WALRecovery), "not TolerateTornTail or Strict")
	}
	maxValueSet, batchSet := c.MaxValueSize != 0, c.BatchSize != 0
	for _, err := range []error{
		defaulted("QueueCapacity", &c.QueueCapacity, DefaultQueueCapacity),
		defaulted("BatchSize", &c.BatchSize, DefaultBatchSize),
		defaulted("SealThreshold", &c.SealThreshold, DefaultSealThreshold),
		defaulted("MaxValueSize", &c.MaxValueSize, DefaultMaxValueSize),
		defaulted("BatchTimeout", &c.BatchTimeout, 0),
		defaulted("DirectWriteTimeout", &c.DirectWriteTimeout, DefaultDirectWriteTimeout),
		defaulted("PromoteInterval", &c.PromoteInterval, DefaultPromoteInterval),
		defaulted("SealBytes", &c.SealBytes, DefaultSealBytes),
		defaulted("Preallocate", &c.Preallocate, DefaultPreallocate),
		defaulted("BlockCacheBytes", &c.BlockCacheBytes, DefaultBlockCacheBytes),
	} {
		if err != nil {
			return c, err
		}
	}
	if c.RingEntries == 0 {
		c.RingEntries = DefaultRingEntries
	}
	if c.RingEntries&(c.RingEntries-1) != 0 || c.RingEntries < minRingEntries || c.RingEntries > maxRingEntries {
		return bad("RingEntries", c.RingEntries, fmt.Sprintf("not a power of two from %d to %d", minRingEntries, maxRingEntries))
	}
	if c.BatchSize > c.QueueCapacity && !batchSet {
		// The default shrinks to a small queue, as MaxValueSize's does
		// to a small log file: refusing a field the caller never set
		// would not help.
		c.BatchSize = c.QueueCapacity
	}
	if c.BatchSize > c.QueueCapacity {
		return bad("BatchSize", c.BatchSize, fmt.Sprintf("larger than QueueCapacity (%d)", c.QueueCapacity))
	}
	if c.MaxValueSize > maxValueSizeLimit {
		return bad("MaxValueSize", c.MaxValueSize, fmt.Sprintf("above the limit of %d bytes", maxValueSizeLimit))
	}
	if c.Preallocate%4096 != 0 {
		return bad("Preallocate", c.Preallocate, "not a multiple of 4096")
	}
	if c.Preallocate > maxPreallocate {
		return bad("Preallocate", c.Preallocate, fmt.Sprintf("above the limit of %d bytes (1 GiB): recovery reads a live log file whole", maxPreallocate))
	}
	// A log file must hold any one record whole, with room for its
	// header (enqueue refuses a record that does not fit). An explicit
	// MaxValueSize must fit; the default shrinks to what fits.
	fit := int64(maxValueFitting(c.Preallocate))
	switch {
	case fit < 1:
		return bad("Preallocate", c.Preallocate, fmt.Sprintf("too small to hold a record: at least %d", minPreallocate))
	case int64(c.MaxValueSize) > fit && maxValueSet:
		return bad("MaxValueSize", c.MaxValueSize,
			fmt.Sprintf("a record with a value this large does not fit a log file of Preallocate = %d bytes (at most %d)", c.Preallocate, fit))
	case int64(c.MaxValueSize) > fit:
		c.MaxValueSize = int(fit)
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c, nil
}

// defaulted replaces a zero *p with def; a negative one is an error that
// names the field.
func defaulted[T int | int64 | time.Duration](field string, p *T, def T) error {
	if *p < 0 {
		return fmt.Errorf("ringpipe: invalid Config.%s = %v: negative", field, *p)
	}
	if *p == 0 {
		*p = def
	}
	return nil
}

// logRoom is how many bytes of record frames a log file of prealloc
// bytes holds whole (the rest is room for its header).
func logRoom(prealloc int64) int64 { return prealloc - 4096 }

// minPreallocateFor is the smallest Preallocate whose log files hold a
// record frame of sz bytes (see logRoom), rounded up to 4 KiB.
func minPreallocateFor(sz int) int64 {
	n := int64(sz) - logRoom(0) // sz and the header's room
	return max(minPreallocate, (n+4095)&^4095)
}

// maxValueFitting is the largest value whose record, with the most
// coordinates a point has (16), fits a log file of prealloc bytes with
// room for its header: what enqueue accepts at most. It is below 1 when no
// record fits.
func maxValueFitting(prealloc int64) int {
	room := int(logRoom(prealloc))
	base := wal.RecordSize(messages.Record{Point: make(messages.Point, 16)})
	v := room - wal.FrameSize(base)
	for wal.FrameSize(base+v+1) <= room {
		v++
	}
	return v
}

// resolveDir returns dir as an absolute path with its symlinks resolved,
// so that the engine's files stay where Start found them when the process
// changes its working directory later, and so that ".." after a symlink
// means what the kernel makes of it (filepath.Clean would drop both).
// Missing components at the end are kept (Start creates them) after the
// deepest existing ancestor, resolved; they are cleaned lexically, which
// is what the kernel makes of them once Start has created them as plain
// directories.
func resolveDir(dir string) (string, error) {
	if !filepath.IsAbs(dir) {
		wd, err := os.Getwd()
		if err != nil {
			return "", fmt.Errorf("ringpipe: Config.Dir %q: the working directory: %w", dir, err)
		}
		dir = wd + string(filepath.Separator) + dir
	}
	var missing []string // the components after head, innermost last
	head := dir
	for {
		if real, err := filepath.EvalSymlinks(head); err == nil {
			return filepath.Join(append([]string{real}, missing...)...), nil
		}
		trimmed := strings.TrimRight(head, string(filepath.Separator))
		i := strings.LastIndexByte(trimmed, filepath.Separator)
		if i < 0 || trimmed == "" {
			return filepath.Clean(dir), nil // nothing resolves: Start says why
		}
		missing = append([]string{trimmed[i+1:]}, missing...)
		head = trimmed[:i+1]
	}
}

// checkDirectIO refuses Config.DirectIO on a file system whose direct I/O
// needs a coarser alignment than the wal.Sector (512-byte) units that the
// logs and blocks are padded to: a disk with 4 KiB logical sectors (4Kn:
// many NVMe and cloud volumes). Before, Start succeeded there and the first
// writes failed with a bare "write: invalid argument" until the engine
// failed for good (env audit). The kernel says what it needs through
// statx(STATX_DIOALIGN) (Linux 6.1); a kernel or file system that does not
// say is taken at its word when the files are opened (wal.OpenDirect
// falls back to buffered writes where O_DIRECT is refused).
func checkDirectIO(dir string) error {
	var stx unix.Statx_t
	// A regular file of dir's file system: directories report no
	// alignment.
	if err := unix.Statx(unix.AT_FDCWD, filepath.Join(dir, "LOCK"), 0, unix.STATX_DIOALIGN, &stx); err != nil {
		return nil // no answer: see above
	}
	if stx.Mask&unix.STATX_DIOALIGN == 0 || stx.Dio_offset_align == 0 {
		return nil
	}
	if int(stx.Dio_offset_align) > wal.Sector || int(stx.Dio_mem_align) > wal.Sector {
		return fmt.Errorf("ringpipe: Config.DirectIO: the file system of %s needs direct I/O aligned to %d bytes in the file and %d in memory; ringpipe writes %d-byte sectors: start without DirectIO",
			dir, stx.Dio_offset_align, stx.Dio_mem_align, wal.Sector)
	}
	return nil
}
