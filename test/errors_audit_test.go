package test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// The errors audit: every bad input and failure state a user of the API
// meets, each checked for its sentinel (errors.Is) and for a message that
// says what was wrong and where, with the package named once.

// checkMsg asserts that err wraps want (when want is not nil), names every
// string of has, and says "ringpipe: " once, at the start.
func checkMsg(t *testing.T, err error, want error, has ...string) {
	t.Helper()
	if !assert.Error(t, err) {
		return
	}
	if want != nil {
		assert.ErrorIs(t, err, want)
	}
	msg := err.Error()
	assert.True(t, strings.HasPrefix(msg, "ringpipe: "), "message does not start with the package: %q", msg)
	assert.Equal(t, 1, strings.Count(msg, "ringpipe: "), "the package is named more than once: %q", msg)
	assert.NotContains(t, msg, "livetail", "internal package in a user's message: %q", msg)
	for _, s := range has {
		assert.Contains(t, msg, s, "message %q", msg)
	}
}

// TestErrorsAuditConfig: a refused Config names the field and its value,
// and says why.
func TestErrorsAuditConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		cfg  ringpipe.Config
		want string
	}{
		{ringpipe.Config{}, `Config.Dir = "": required`},
		{ringpipe.Config{Dir: dir, Backend: 9}, "Config.Backend = 9: not BackendAuto, BackendURing or BackendStd"},
		{ringpipe.Config{Dir: dir, WALRecovery: 5}, "Config.WALRecovery = 5: not TolerateTornTail or Strict"},
		{ringpipe.Config{Dir: dir, QueueCapacity: -1}, "Config.QueueCapacity = -1: negative"},
		{ringpipe.Config{Dir: dir, BatchTimeout: -time.Second}, "Config.BatchTimeout = -1s: negative"},
		{ringpipe.Config{Dir: dir, SealBytes: -1}, "Config.SealBytes = -1: negative"},
		{ringpipe.Config{Dir: dir, RingEntries: 3}, "Config.RingEntries = 3: not a power of two from 8 to 32768"},
		{ringpipe.Config{Dir: dir, BatchSize: 100, QueueCapacity: 10}, "Config.BatchSize = 100: larger than QueueCapacity (10)"},
		{ringpipe.Config{Dir: dir, MaxValueSize: 1 << 30}, "Config.MaxValueSize = 1073741824: above the limit of"},
		{ringpipe.Config{Dir: dir, Preallocate: 1000}, "Config.Preallocate = 1000: not a multiple of 4096"},
		{ringpipe.Config{Dir: dir, Preallocate: 4096}, "Config.Preallocate = 4096: too small to hold a record: at least 8192"},
		{ringpipe.Config{Dir: dir, Preallocate: 8192, MaxValueSize: 8192}, "Config.MaxValueSize = 8192: a record with a value this large does not fit a log file of Preallocate = 8192 bytes"},
	} {
		e, err := ringpipe.Start(ctxFor(t), tc.cfg)
		if e != nil {
			_ = e.Stop(ctxFor(t))
		}
		checkMsg(t, err, nil, "ringpipe: invalid "+tc.want)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "a refused Config touched the directory")
}

// TestErrorsAuditStartDir: a directory that cannot be one, and a locked
// one, are refused with the path and the reason; ErrLocked's message
// names the directory once.
func TestErrorsAuditStartDir(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "afile")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o644))
	for _, dir := range []string{file, filepath.Join(file, "sub")} {
		cfg := realConfig(t, ringpipe.BackendStd)
		cfg.Dir = dir
		_, err := ringpipe.Start(ctxFor(t), cfg)
		checkMsg(t, err, nil, "ringpipe: start in "+dir+": ", "not a directory")
		if dir == file {
			assert.Contains(t, err.Error(), "start in "+file+": Config.Dir is not a directory")
		}
	}

	cfg := realConfig(t, ringpipe.BackendStd)
	e := start(t, cfg)
	e2, err := ringpipe.Start(ctxFor(t), cfg)
	if e2 != nil {
		_ = e2.Stop(ctxFor(t))
	}
	checkMsg(t, err, ringpipe.ErrLocked)
	assert.Equal(t, "ringpipe: directory locked by another engine: "+cfg.Dir, err.Error())
	stop(t, e)
}

// TestErrorsAuditCorruptAtStart: damage found at Start is a
// *CorruptionError whose Path is relative to Config.Dir, and the message
// says the directory, the file, the offset and the reason.
func TestErrorsAuditCorruptAtStart(t *testing.T) {
	disk, cfg, _, target := crashedHotSegment(t)
	require.NoError(t, disk.FlipBit(target, 28*8+3)) // the first frame's payload

	_, err := ringpipe.Start(ctxFor(t), cfg)
	rel := strings.TrimPrefix(target, simDir+"/")
	checkMsg(t, err, ringpipe.ErrCorrupt, "ringpipe: start in "+simDir+": corrupt "+rel+" at offset 0: ", "checksum")
	var ce *ringpipe.CorruptionError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, rel, ce.Path)
	assert.Equal(t, int64(0), ce.Offset)
	assert.NotEmpty(t, ce.Reason)
}

// TestErrorsAuditSpaceSpec: a bad SpaceSpec says which limit and the value;
// a name taken by another spec says both specs and the space's ID.
func TestErrorsAuditSpaceSpec(t *testing.T) {
	e := start(t, realConfig(t, ringpipe.BackendStd))
	ctx := ctxFor(t)
	sp := createSpace(t, e, "sensors", 2, 8)
	for _, tc := range []struct {
		spec ringpipe.SpaceSpec
		want string
	}{
		{ringpipe.SpaceSpec{Dims: 1, Bits: 1}, "ringpipe: create space: space with an empty Name"},
		{ringpipe.SpaceSpec{Name: "x", Dims: 0, Bits: 8}, `space "x": Dims 0 not in 1..16`},
		{ringpipe.SpaceSpec{Name: "x", Dims: 17, Bits: 1}, `space "x": Dims 17 not in 1..16`},
		{ringpipe.SpaceSpec{Name: "x", Dims: 1, Bits: 33}, `space "x": Bits 33 not in 1..32`},
		{ringpipe.SpaceSpec{Name: "x", Dims: 3, Bits: 32}, `space "x": Dims*Bits = 3*32 = 96 exceeds 64`},
		{ringpipe.SpaceSpec{Name: strings.Repeat("n", 300), Dims: 1, Bits: 1}, "Name of 300 bytes, longer than 255"},
		{ringpipe.SpaceSpec{Name: " \t", Dims: 1, Bits: 1}, `space " \t": Name is only white space`},
		{ringpipe.SpaceSpec{Name: "a\x00b", Dims: 1, Bits: 1}, `space "a\x00b": Name has a control character (U+0000 at byte 1)`},
		{ringpipe.SpaceSpec{Name: "tab\there", Dims: 1, Bits: 1}, `(U+0009 at byte 3)`},
		{ringpipe.SpaceSpec{Name: "bad\xffutf8", Dims: 1, Bits: 1}, `Name is not valid UTF-8`},
	} {
		_, err := e.CreateSpace(ctx, tc.spec)
		checkMsg(t, err, nil, tc.want)
		assert.Less(t, len(err.Error()), 200, "the message quotes a long name whole")
	}
	_, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "sensors", Dims: 3, Bits: 8})
	checkMsg(t, err, ringpipe.ErrSpaceExists,
		fmt.Sprintf(`"sensors" is space %d of 2 dims × 8 bits, asked for 3 dims × 8 bits`, sp))
	assert.Len(t, e.Spaces(), 1, "a refused spec created a space")
	// Names with spaces inside, or in any script, are fine.
	for _, name := range []string{"air quality", "Luftgüte", "空气"} {
		_, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: name, Dims: 1, Bits: 8})
		assert.NoError(t, err, name)
	}
}

// TestErrorsAuditPointsAndValues: a bad point names the point, the space
// (ID and name) and the coordinate or the count, for every method that
// takes one; a box names its corner; a value too large names the space
// and the limit; an unknown space names its ID.
func TestErrorsAuditPointsAndValues(t *testing.T) {
	e := start(t, realConfig(t, ringpipe.BackendStd))
	ctx := ctxFor(t)
	sp := createSpace(t, e, "sensors", 2, 8)
	where := fmt.Sprintf(`of space %d "sensors": `, sp)
	few := "ringpipe: invalid point: [1] " + where + "1 coordinates, the space has 2 dimensions"
	big := "ringpipe: invalid point: [1 256] " + where + "coordinate 1 is 256, the space's 8 bits allow at most 255"
	noFn := func(ringpipe.Record) bool { return true }
	ops := map[string]func(p ringpipe.Point) error{
		"Put":      func(p ringpipe.Point) error { _, err := e.Put(ctx, sp, p, []byte("v")); return err },
		"Delete":   func(p ringpipe.Point) error { _, err := e.Delete(ctx, sp, p); return err },
		"PutAsync": func(p ringpipe.Point) error { _, err := e.PutAsync(ctx, sp, p, []byte("v")); return err },
		"Get":      func(p ringpipe.Point) error { _, err := e.Get(ctx, sp, p); return err },
		"View.Get": func(p ringpipe.Point) error { _, err := e.View().Get(sp, p); return err },
	}
	for name, op := range ops {
		t.Run(name, func(t *testing.T) {
			err := op(ringpipe.Point{1})
			checkMsg(t, err, ringpipe.ErrInvalidPoint)
			assert.Equal(t, few, err.Error())
			err = op(ringpipe.Point{1, 256})
			checkMsg(t, err, ringpipe.ErrInvalidPoint)
			assert.Equal(t, big, err.Error())
		})
	}
	// A slice far longer than any space is summarised, not printed.
	_, err := e.Put(ctx, sp, make(ringpipe.Point, 1000), nil)
	checkMsg(t, err, ringpipe.ErrInvalidPoint, "(1000 coordinates) "+where+"1000 coordinates")

	for _, tc := range []struct {
		box  ringpipe.Box
		want string
	}{
		{ringpipe.Box{Min: ringpipe.Point{0}, Max: ringpipe.Point{1, 1}}, "box Min [0] " + where + "1 coordinates"},
		{ringpipe.Box{Min: ringpipe.Point{0, 0}, Max: ringpipe.Point{1, 300}}, "box Max [1 300] " + where + "coordinate 1 is 300"},
		{ringpipe.Box{}, "box Min [] " + where + "0 coordinates"},
	} {
		checkMsg(t, e.Scan(ctx, sp, tc.box, noFn), ringpipe.ErrInvalidPoint, "ringpipe: invalid point: "+tc.want)
		checkMsg(t, e.View().Scan(sp, tc.box, noFn), ringpipe.ErrInvalidPoint, "ringpipe: invalid point: "+tc.want)
	}
	err = e.Scan(ctx, sp, ringpipe.Box{Min: ringpipe.Point{0, 0}, Max: ringpipe.Point{1, 1}}, nil)
	checkMsg(t, err, nil, "nil fn")

	_, err = e.Put(ctx, sp, ringpipe.Point{1, 2}, make([]byte, 2<<20))
	checkMsg(t, err, ringpipe.ErrValueTooLarge,
		fmt.Sprintf(`ringpipe: value too large: 2097152 bytes for space %d "sensors", Config.MaxValueSize is `, sp))
	_, err = e.PutAsync(ctx, sp, ringpipe.Point{1, 2}, make([]byte, 2<<20))
	checkMsg(t, err, ringpipe.ErrValueTooLarge, "2097152 bytes")

	const unknown = ringpipe.SpaceID(99)
	for name, err := range map[string]error{
		"Put":       func() error { _, err := e.Put(ctx, unknown, ringpipe.Point{1}, nil); return err }(),
		"Delete":    func() error { _, err := e.Delete(ctx, unknown, ringpipe.Point{1}); return err }(),
		"PutAsync":  func() error { _, err := e.PutAsync(ctx, unknown, ringpipe.Point{1}, nil); return err }(),
		"Get":       func() error { _, err := e.Get(ctx, unknown, ringpipe.Point{1}); return err }(),
		"View.Get":  func() error { _, err := e.View().Get(unknown, ringpipe.Point{1}); return err }(),
		"Scan":      e.Scan(ctx, unknown, ringpipe.Box{}, noFn),
		"View.Scan": e.View().Scan(unknown, ringpipe.Box{}, noFn),
		"Flush":     e.Flush(ctx, unknown),
	} {
		checkMsg(t, err, ringpipe.ErrUnknownSpace, "99")
		assert.Equal(t, "ringpipe: unknown space: 99", err.Error(), name)
	}
	_, err = e.Get(ctx, sp, ringpipe.Point{1, 2})
	checkMsg(t, err, ringpipe.ErrNotFound)
	stop(t, e)
}

// TestErrorsAuditCancelledAndStopped: a cancelled context is ctx's error,
// as Go callers expect; after Stop every write says ErrStopped, and
// CreateSpace names the space.
func TestErrorsAuditCancelledAndStopped(t *testing.T) {
	e := start(t, realConfig(t, ringpipe.BackendStd))
	ctx := ctxFor(t)
	sp := createSpace(t, e, "s", 1, 8)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	p := ringpipe.Point{1}
	calls := writeCalls(e, cctx, sp, p)
	calls["CreateSpace"] = func() error {
		_, err := e.CreateSpace(cctx, ringpipe.SpaceSpec{Name: "n", Dims: 1, Bits: 1})
		return err
	}()
	calls["Get"] = func() error { _, err := e.Get(cctx, sp, p); return err }()
	calls["Scan"] = e.Scan(cctx, sp, ringpipe.Box{Min: p, Max: p}, func(ringpipe.Record) bool { return true })
	for name, err := range calls {
		assert.ErrorIs(t, err, context.Canceled, name)
	}
	_, err := e.Get(ctx, sp, p)
	assert.ErrorIs(t, err, ringpipe.ErrNotFound, "a cancelled Put was applied")

	stop(t, e)
	for name, err := range writeCalls(e, ctx, sp, p) {
		checkMsg(t, err, ringpipe.ErrStopped)
		assert.Equal(t, "ringpipe: engine stopped", err.Error(), name)
	}
	_, err = e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "new", Dims: 1, Bits: 1})
	checkMsg(t, err, ringpipe.ErrStopped, `create space "new"`)
	assertStateFirst(t, e, ringpipe.ErrStopped)
	assert.NoError(t, e.Stop(ctx), "a second Stop")
}

// assertStateFirst: bad input to a write on an engine that no longer takes
// writes says the engine's state (API.md: writes after Stop return
// ErrStopped), and still says what was wrong with the input.
func assertStateFirst(t *testing.T, e *ringpipe.Engine, state error) {
	t.Helper()
	ctx := ctxFor(t)
	const unknown = ringpipe.SpaceID(999)
	sp := e.Spaces()[0].ID
	for name, err := range writeCalls(e, ctx, unknown, ringpipe.Point{1}) {
		if name == "Sync" {
			continue // no input
		}
		checkMsg(t, err, state, "999")
		assert.ErrorIs(t, err, ringpipe.ErrUnknownSpace, name)
	}
	for name, err := range writeCalls(e, ctx, sp, ringpipe.Point{1, 2, 3}) {
		if name == "Sync" || name == "Flush" {
			continue // no point
		}
		checkMsg(t, err, state, "3 coordinates")
		assert.ErrorIs(t, err, ringpipe.ErrInvalidPoint, name)
	}
	_, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "bad", Dims: 0, Bits: 1})
	checkMsg(t, err, state, "Dims")
}

// TestErrorsAuditFailed: once an actor is past its restart limit every
// write says ErrFailed (not ErrStopped, not an I/O error) and reads work.
func TestErrorsAuditFailed(t *testing.T) {
	disk := newSimDisk(t, 5)
	cfg := simConfig(t, disk)
	e := start(t, cfg)
	ctx := ctxFor(t)
	sp := createSpace(t, e, "s", 1, 16)
	rev, err := e.Put(ctx, sp, ringpipe.Point{1}, []byte("kept"))
	require.NoError(t, err)

	disk.Inject(sim.Fault{Kind: sim.EIO, Path: simDir + "/", Persist: true})
	deadline := time.Now().Add(eventualTimeout)
	var last error
	for i := 0; !errors.Is(last, ringpipe.ErrFailed); i++ {
		require.True(t, time.Now().Before(deadline), "no ErrFailed; last error %v", last)
		_, last = e.Put(ctx, sp, ringpipe.Point{uint32(100 + i)}, []byte("doomed"))
	}
	for name, err := range writeCalls(e, ctx, sp, ringpipe.Point{7}) {
		checkMsg(t, err, ringpipe.ErrFailed, "restart limit")
		assert.NotErrorIs(t, err, ringpipe.ErrStopped, name)
	}
	// CreateSpace too says ErrFailed (the failure closes the intake; it
	// said ErrStopped before).
	_, err = e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "n", Dims: 1, Bits: 1})
	checkMsg(t, err, nil, `create space "n"`)
	assert.ErrorIs(t, err, ringpipe.ErrFailed, "CreateSpace")
	assertStateFirst(t, e, ringpipe.ErrFailed)
	rec, err := e.Get(ctx, sp, ringpipe.Point{1})
	require.NoError(t, err, "reads work on a failed engine")
	assert.Equal(t, rev, rec.Revision)
	err = e.Stop(ctx)
	t.Logf("Stop of a failed engine: %v", err)
	if err != nil {
		assert.NotContains(t, err.Error(), "ringpipe: ringpipe: ")
		assert.NotContains(t, err.Error(), "submitter: submitter: ")
	}
	disk.ClearFaults()
}

// writeCalls makes each write method's call at p in space sp with ctx
// (an empty value) and returns its error by method name.
func writeCalls(e *ringpipe.Engine, ctx context.Context, sp ringpipe.SpaceID, p ringpipe.Point) map[string]error {
	return map[string]error{
		"Put":      func() error { _, err := e.Put(ctx, sp, p, nil); return err }(),
		"Delete":   func() error { _, err := e.Delete(ctx, sp, p); return err }(),
		"PutAsync": func() error { _, err := e.PutAsync(ctx, sp, p, nil); return err }(),
		"Sync":     e.Sync(ctx),
		"Flush":    e.Flush(ctx, sp),
	}
}
