package durability

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ringpipe/ringpipe"
)

// The child side of suite 6 (kill_test.go has the parent and the
// protocol). The parent runs this test binary again with
// -test.run=^TestKillChild$ and the environment below; the child starts an
// engine on the parent's directory, runs killWriters writers and reports
// every write on fd 3 until the parent kills it.

// Environment of a child.
const (
	killChildEnv   = "RINGPIPE_KILL_CHILD"   // "1" in a child
	killDirEnv     = "RINGPIPE_KILL_DIR"     // the engine's directory
	killBackendEnv = "RINGPIPE_KILL_BACKEND" // "uring" or "std"
	killSeedEnv    = "RINGPIPE_KILL_SEED"    // the round's seed: the writers' choices
	// killLieEnv makes a child report one Put in ten acknowledged without
	// making it: the harness's self-check (TestKillCatchesLies).
	killLieEnv = "RINGPIPE_KILL_LIE"
)

// killReportFD is the child's end of the report pipe (cmd.ExtraFiles[0]).
const killReportFD = 3

// killWriters is how many writers a child runs: at least 16 (issue 5), so
// that batches are full and hot files, the staging WAL and seals overlap.
const killWriters = 16

// killChildOps bounds each writer of a child, so that a child whose parent
// never kills it still ends (it reports killDone and stops cleanly).
const killChildOps = 50000

// killSpecs are the spaces the child writes: the workload's shapes.
var killSpecs = Specs

// killConfig is the engine's configuration in the child and in the
// parent's recovery: a small preallocation (a real disk, many rounds; 4 MiB
// holds the largest values several times over, so batches are not cut
// small), and seals every 1,024 records or 1 MiB so that rounds of a few
// hundred to a few thousand writes cross seals, manifest edits and
// hot-file rotations.
func killConfig(dir string, b ringpipe.Backend) ringpipe.Config {
	return ringpipe.Config{
		Dir:           dir,
		Backend:       b,
		Preallocate:   4 << 20,
		SealThreshold: 1024,
		SealBytes:     1 << 20,
	}
}

// TestKillChild is the child process of TestKill; run directly it skips.
func TestKillChild(t *testing.T) {
	if os.Getenv(killChildEnv) != "1" {
		t.Skip("the child of TestKill: runs only when TestKill starts it")
	}
	rep := &killReporter{f: os.NewFile(killReportFD, "report")}
	if err := killChild(rep); err != nil {
		rep.send("%c %s", killFatal, strconv.Quote(err.Error()))
		t.Fatal(err)
	}
	rep.send("%c", killDone)
}

// killReporter writes report lines to the parent. Each line goes out in
// one write(2) under mu, so lines never interleave and a line the parent
// reads was wholly written before the child died: "submitted" reaches the
// pipe before the Put is called, "acked" only after it returned.
type killReporter struct {
	f *os.File

	mu     sync.Mutex
	broken bool   // a write failed: the parent is gone; protected by mu
	buf    []byte // protected by mu
}

// send writes one line; it reports false once the parent is gone.
func (r *killReporter) send(format string, args ...any) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.broken {
		return false
	}
	r.buf = fmt.Appendf(r.buf[:0], format, args...)
	r.buf = append(r.buf, '\n')
	if _, err := r.f.Write(r.buf); err != nil {
		r.broken = true
	}
	return !r.broken
}

func killChild(rep *killReporter) error {
	dir := os.Getenv(killDirEnv)
	backend := ringpipe.BackendURing
	if os.Getenv(killBackendEnv) == "std" {
		backend = ringpipe.BackendStd
	}
	seed, err := strconv.ParseInt(os.Getenv(killSeedEnv), 10, 64)
	if err != nil {
		return fmt.Errorf("%s: %w", killSeedEnv, err)
	}
	// Bounds the child if the parent neither kills it nor goes away.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	rep.send("%c", killStarting)
	began := time.Now()
	e, err := ringpipe.Start(ctx, killConfig(dir, backend))
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	defer e.Stop(ctx) //nolint:errcheck // reached only when the parent did not kill us
	rep.send("%c %d", killUp, time.Since(began).Nanoseconds())
	if got := e.Stats().Backend; got != backend.String() {
		return fmt.Errorf("backend %s, asked for %s", got, backend)
	}
	ids := make([]ringpipe.SpaceID, len(killSpecs))
	for i, spec := range killSpecs {
		if ids[i], err = e.CreateSpace(ctx, spec); err != nil {
			return fmt.Errorf("create space %q: %w", spec.Name, err)
		}
		rep.send("%c %d %d", killSpace, i, ids[i])
	}

	rep.send("%c", killWriting)
	var wg sync.WaitGroup
	errs := make([]error, killWriters)
	for w := range killWriters {
		wg.Go(func() {
			cw := &killChildWriter{e: e, rep: rep, w: w, ids: ids, rng: newRand(seed*7919 + int64(w)),
				lie: os.Getenv(killLieEnv) == "1"}
			errs[w] = cw.run(ctx)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// killChildWriter is one writer of a child.
type killChildWriter struct {
	e   *ringpipe.Engine
	rep *killReporter
	w   int
	ids []ringpipe.SpaceID
	rng *rand.Rand
	seq int
	lie bool // see killLieEnv
}

// The child's operation mix, out of 1000: mostly Puts and Deletes, bursts
// of PutAsync, the odd Sync and Flush. Flushes are rare: every one leaves
// a block behind, and the directory lives through all the rounds.
const (
	killMixPut    = 640
	killMixDelete = 150
	killMixAsync  = 190
	killMixSync   = 15
	killMixFlush  = 5
)

// run runs up to killChildOps operations. It returns early, with nil,
// when the parent is gone (a report could not be written), and with an
// error when a Sync or Flush failed (a failed write is reported to the
// parent instead).
func (cw *killChildWriter) run(ctx context.Context) error {
	for range killChildOps {
		if ctx.Err() != nil {
			return nil
		}
		i := cw.rng.Intn(len(cw.ids))
		id, spec := cw.ids[i], killSpecs[i]
		ok := true
		switch r := cw.rng.Intn(1000); {
		case r < killMixPut:
			ok = cw.put(ctx, id, spec)
		case r < killMixPut+killMixDelete:
			ok = cw.del(ctx, id, spec)
		case r < killMixPut+killMixDelete+killMixAsync:
			ok = cw.async(ctx, id, spec)
		case r < killMixPut+killMixDelete+killMixAsync+killMixSync:
			if err := cw.e.Sync(ctx); err != nil {
				return fmt.Errorf("writer %d: sync: %w", cw.w, err)
			}
		default:
			if err := cw.e.Flush(ctx, id); err != nil {
				return fmt.Errorf("writer %d: flush space %d: %w", cw.w, id, err)
			}
			ok = cw.rep.send("%c", killFlushed)
		}
		if !ok {
			return nil // the parent is gone
		}
	}
	return nil
}

// submit reports a write before it is handed to the engine and returns
// its sequence number and value.
func (cw *killChildWriter) submit(id ringpipe.SpaceID, p ringpipe.Point, del bool) (int, []byte, bool) {
	cw.seq++
	var n int
	var tag uint64
	var v []byte
	if !del {
		n = killValueSize(cw.rng)
		tag = cw.rng.Uint64()
		v = killValue(tag, n)
	}
	return cw.seq, v, cw.rep.send("%c %d %d %d %s %t %d %x", killSubmitted, cw.w, cw.seq, id, killFormatPoint(p), del, n, tag)
}

func (cw *killChildWriter) answer(seq int, rev ringpipe.Revision, err error) bool {
	if err != nil {
		return cw.rep.send("%c %d %d %s", killFailed, cw.w, seq, strconv.Quote(err.Error()))
	}
	return cw.rep.send("%c %d %d %d", killAcked, cw.w, seq, rev)
}

func (cw *killChildWriter) put(ctx context.Context, id ringpipe.SpaceID, spec ringpipe.SpaceSpec) bool {
	p := killPoint(cw.rng, spec)
	seq, v, ok := cw.submit(id, p, false)
	if !ok {
		return false
	}
	if cw.lie && cw.rng.Intn(10) == 0 {
		// A revision no engine gave, unique per write.
		return cw.answer(seq, ringpipe.Revision(1<<40+seq*killWriters+cw.w), nil)
	}
	rev, err := cw.e.Put(ctx, id, p, v)
	return cw.answer(seq, rev, err)
}

func (cw *killChildWriter) del(ctx context.Context, id ringpipe.SpaceID, spec ringpipe.SpaceSpec) bool {
	p := killPoint(cw.rng, spec)
	seq, _, ok := cw.submit(id, p, true)
	if !ok {
		return false
	}
	rev, err := cw.e.Delete(ctx, id, p)
	return cw.answer(seq, rev, err)
}

// async queues a burst of 1..8 PutAsync and waits for each ticket.
func (cw *killChildWriter) async(ctx context.Context, id ringpipe.SpaceID, spec ringpipe.SpaceSpec) bool {
	type queued struct {
		seq int
		t   *ringpipe.Ticket
	}
	var qs []queued
	for range 1 + cw.rng.Intn(8) {
		p := killPoint(cw.rng, spec)
		seq, v, ok := cw.submit(id, p, false)
		if !ok {
			return false
		}
		t, err := cw.e.PutAsync(ctx, id, p, v)
		if err != nil {
			cw.rep.send("%c %d %d", killNotQueued, cw.w, seq)
			break
		}
		qs = append(qs, queued{seq, t})
	}
	for _, q := range qs {
		rev, err := q.t.Wait(ctx)
		if !cw.answer(q.seq, rev, err) {
			return false
		}
	}
	return true
}

// killHotCoords is how many values each coordinate mostly takes: points
// are overwritten often, by several writers at once.
const killHotCoords = 6

// killPoint draws a point of spec: seven times in eight from the small hot
// set, else anywhere in the space.
func killPoint(rng *rand.Rand, spec ringpipe.SpaceSpec) ringpipe.Point {
	limit := int64(1) << spec.Bits
	if rng.Intn(8) != 0 {
		limit = min(limit, killHotCoords)
	}
	p := make(ringpipe.Point, spec.Dims)
	for i := range p {
		p[i] = uint32(rng.Int63n(limit))
	}
	return p
}

// killValueSize is the workload's size mix up to 16 KiB, plus one value in
// 512 between 64 KiB and 1 MiB (the default MaxValueSize): records that
// span many pages and take longer than a hot file's deadline to sync.
// Blocks are never merged yet, so every byte written stays in the
// directory through all its rounds: the sizes are kept modest so that
// recovery stays quick.
func killValueSize(rng *rand.Rand) int {
	if rng.Intn(512) == 0 {
		return 64<<10 + rng.Intn(960<<10+1)
	}
	return ValueSize(rng, 16<<10)
}

// killValue is the workload's Value of n bytes for tag: the parent
// rebuilds a value from the tag and size the child reported.
func killValue(tag uint64, n int) []byte {
	return Value(rand.New(killTagSource(tag)), n)
}

// killTagSource is a rand.Source64 that always returns its value: it makes
// Value's tag the one given.
type killTagSource uint64

func (s killTagSource) Uint64() uint64 { return uint64(s) }
func (s killTagSource) Int63() int64   { return int64(uint64(s) >> 1) }
func (killTagSource) Seed(int64)       {}

// killFormatPoint writes p as comma-separated coordinates; killParsePoint reads it.
func killFormatPoint(p ringpipe.Point) string {
	var b strings.Builder
	for i, c := range p {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(uint64(c), 10))
	}
	return b.String()
}

func killParsePoint(s string) (ringpipe.Point, error) {
	parts := strings.Split(s, ",")
	p := make(ringpipe.Point, len(parts))
	for i, f := range parts {
		c, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("point %q: %w", s, err)
		}
		p[i] = uint32(c)
	}
	return p, nil
}

// killTagOf is the tag of a value as killValue built it (for the tests of the
// protocol).
func killTagOf(v []byte) uint64 {
	var b [8]byte
	copy(b[:], v)
	return binary.LittleEndian.Uint64(b[:])
}
