package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
	"github.com/ringpipe/ringpipe/hot"
	"github.com/ringpipe/ringpipe/messages"
	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/wal"
)

// testPrealloc keeps the fixture's logs small, so that reading them whole
// is quick.
const testPrealloc = 1 << 20

// fixture is an engine directory with something in every kind of file.
type fixture struct {
	dir       string
	block     string // blocks/1/1.blk
	hotSeg    string // the active hot generation of space 1: five batches
	walSeg    string // wal/<1>.log: three batches
	walLast   int64  // where its last batch starts
	manifest  string // MANIFEST-000001
	stagedRev messages.Revision
}

// testDoer is a Doer over a std ring, closed when the test ends.
func testDoer(t *testing.T) ring.Doer {
	t.Helper()
	r, err := ring.New(ring.Options{Kind: ring.Std})
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return ring.NewSync(r)
}

// writeFixture has the engine write two spaces: space 1 ("alpha", 2-D)
// gets 20 records sealed into a block and then 5 more, one Put (one batch)
// at a time, into its next hot generation; space 2 ("beta") gets 3. Then,
// with the engine stopped, three records of space 2 are appended to the
// staging WAL in three batches, as deadline-missed writes would be: they
// are staged entries pending promotion.
func writeFixture(t *testing.T) fixture {
	t.Helper()
	ctx := context.Background()
	f := fixture{dir: t.TempDir()}
	e, err := ringpipe.Start(ctx, ringpipe.Config{Dir: f.dir, Backend: ringpipe.BackendStd,
		Preallocate: testPrealloc, DirectWriteTimeout: time.Minute})
	require.NoError(t, err)
	alpha, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "alpha", Dims: 2, Bits: 16})
	require.NoError(t, err)
	beta, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "beta", Dims: 1, Bits: 32})
	require.NoError(t, err)
	for i := range 20 {
		_, err := e.Put(ctx, alpha, ringpipe.Point{uint32(i), uint32(2 * i)}, []byte(fmt.Sprintf("sealed %d", i)))
		require.NoError(t, err)
	}
	require.NoError(t, e.Flush(ctx, alpha))
	for i := range 5 {
		_, err := e.Put(ctx, alpha, ringpipe.Point{100 + uint32(i), 1}, []byte(fmt.Sprintf("hot %d", i)))
		require.NoError(t, err)
	}
	for i := range 3 {
		_, err := e.Put(ctx, beta, ringpipe.Point{uint32(i)}, []byte("beta"))
		require.NoError(t, err)
	}
	require.NoError(t, e.Stop(ctx))

	d := testDoer(t)
	w, err := wal.Open(d, wal.Options{Dir: filepath.Join(f.dir, "wal"), SegmentSize: testPrealloc}, nil)
	require.NoError(t, err)
	f.stagedRev = 1 << 30
	for i := range 3 {
		_, f.walLast = w.End()
		require.NoError(t, w.Append([]messages.Record{{Space: beta, Point: ringpipe.Point{1000 + uint32(i)},
			Revision: f.stagedRev + messages.Revision(i), Value: []byte("staged")}}))
	}
	seq, _ := w.End()
	require.NoError(t, w.Close())

	f.block = filepath.Join("blocks", "1", "1.blk")
	f.walSeg = filepath.Join("wal", wal.SegmentName(seq))
	f.manifest = "MANIFEST-000001"
	gens, err := hot.List(d, filepath.Join(f.dir, "hot"))
	require.NoError(t, err)
	for _, g := range gens {
		if g.Space == alpha {
			f.hotSeg = filepath.Join("hot", g.FileName()) // the last of alpha's: the active one
		}
	}
	require.NotEmpty(t, f.hotSeg)
	for _, p := range []string{f.block, f.walSeg, f.manifest, f.hotSeg} {
		require.FileExists(t, filepath.Join(f.dir, p))
	}
	return f
}

// flip inverts one bit of the file at off.
func flip(t *testing.T, path string, off int64) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer fh.Close()
	b := make([]byte, 1)
	_, err = fh.ReadAt(b, off)
	require.NoError(t, err)
	b[0] ^= 0x10
	_, err = fh.WriteAt(b, off)
	require.NoError(t, err)
}

// tree returns every file under dir with a hash of its contents and its
// mode and modification time: what "does not modify the directory" means.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		sum := ""
		if !d.IsDir() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum = fmt.Sprintf("%x", sha256.Sum256(data))
		}
		out[p] = fmt.Sprintf("%v %d %v %s", info.Mode(), info.Size(), info.ModTime().UnixNano(), sum)
		return nil
	}))
	return out
}

func TestInspect(t *testing.T) {
	f := writeFixture(t)
	before := tree(t, f.dir)
	code, out, errOut := runCmd(t, "inspect", f.dir)
	require.Equal(t, exitOK, code, "stderr:\n%s\nstdout:\n%s", errOut, out)
	assert.Equal(t, before, tree(t, f.dir), "inspect changed the directory")

	// Spaces: id, name, dims, bits, blocks, block records, sealed gen, staged.
	assert.Regexp(t, `(?m)^\s+1\s+alpha\s+2\s+16\s+1\s+20\s+1\s+0$`, out)
	assert.Regexp(t, `(?m)^\s+2\s+beta\s+1\s+32\s+0\s+0\s+0\s+3$`, out)
	assert.Contains(t, out, "blocks (1)")
	assert.Regexp(t, `(?m)^\s+1\s+1\s+20\s+\[\d+, \d+\]\s+\[1, 20\]\s+1\s+[\d.]+ (B|KiB)\s+`+regexp.QuoteMeta(f.block)+`$`, out)
	assert.Regexp(t, `(?m)^\s+1\s+2\s+5\s+\[\d+, \d+\]\s+[\d.]+ (B|KiB)\s+active\s+`+regexp.QuoteMeta(f.hotSeg)+`$`, out)
	assert.Regexp(t, `(?m)^\s+1\s+3\s+\[1073741824, 1073741826\]\s+[\d.]+ (B|KiB)\s+active\s+`+regexp.QuoteMeta(f.walSeg)+`$`, out)
	assert.Contains(t, out, "staged entries pending promotion: 3")
	assert.Regexp(t, `SpaceCreated id=1 name="alpha" dims=2 bits=16`, out)
	assert.Regexp(t, `BlockAdded space=1 id=1 records=20 `, out)
	assert.Regexp(t, `GenSealed space=1 gen=1 maxrev=20`, out)
	assert.NotContains(t, out, "DAMAGED")
}

func TestVerifyClean(t *testing.T) {
	f := writeFixture(t)
	before := tree(t, f.dir)
	code, out, errOut := runCmd(t, "verify", f.dir)
	require.Equal(t, exitOK, code, "stderr:\n%s\nstdout:\n%s", errOut, out)
	assert.Regexp(t, `verify .*: \d+ files checked, no damage, 0 warnings`, out)
	assert.Equal(t, before, tree(t, f.dir), "verify changed the directory")

	// Recovery agrees that the directory is sound, and finds the staged
	// records.
	ctx := context.Background()
	e, err := ringpipe.Start(ctx, ringpipe.Config{Dir: f.dir, Backend: ringpipe.BackendStd, Preallocate: testPrealloc})
	require.NoError(t, err)
	defer e.Stop(ctx)
	r, err := e.Get(ctx, 2, ringpipe.Point{1001})
	require.NoError(t, err)
	assert.Equal(t, f.stagedRev+1, r.Revision)
}

// TestVerifyDamage flips one bit in a frame or block that later valid data
// follows: verify names the file and the offset and exits 1.
func TestVerifyDamage(t *testing.T) {
	for _, tc := range []struct {
		name string
		file func(fixture) string
		off  int64  // of the flipped bit
		want string // the line verify prints, as a regexp
		lazy bool   // the engine finds it only when it reads the data
	}{
		{"block", func(f fixture) string { return f.block }, 200, `offset \d+: block: .*`, true},
		{"hot segment", func(f fixture) string { return f.hotSeg }, wal.FrameHeader + 3, `offset 0: data checksum mismatch, and a valid frame follows at offset \d+`, false},
		{"manifest", func(f fixture) string { return f.manifest }, wal.FrameHeader + 1, `offset 0: data checksum mismatch, and a valid frame follows at offset \d+`, false},
		{"manifest header", func(f fixture) string { return f.manifest }, 9, `offset 0: header checksum mismatch, and a valid frame follows at offset \d+`, false},
		{"WAL segment", func(f fixture) string { return f.walSeg }, wal.FrameHeader + 5, `offset 0: data checksum mismatch, and a valid frame follows at offset \d+`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := writeFixture(t)
			file := tc.file(f)
			flip(t, filepath.Join(f.dir, file), tc.off)
			before := tree(t, f.dir)
			code, out, errOut := runCmd(t, "verify", f.dir)
			assert.Equal(t, exitFail, code, "stderr:\n%s", errOut)
			assert.Regexp(t, `(?m)^`+regexp.QuoteMeta(file)+`: `+tc.want+`$`, out)
			assert.Regexp(t, `\d+ files checked, 1 damage, 0 warnings`, out)
			assert.Equal(t, before, tree(t, f.dir), "verify changed the directory")

			// inspect lists the damage too, and fails.
			code, out, _ = runCmd(t, "inspect", f.dir)
			assert.Equal(t, exitFail, code)
			assert.Regexp(t, `(?m)^  `+regexp.QuoteMeta(file)+`: `+tc.want+`$`, out)

			// The engine refuses it too, naming the same file: recovery
			// does, or (a block's pages are read on demand) the read
			// of a record in the damaged page does.
			ctx := context.Background()
			e, err := ringpipe.Start(ctx, ringpipe.Config{Dir: f.dir, Backend: ringpipe.BackendStd, Preallocate: testPrealloc})
			if err == nil {
				defer e.Stop(ctx)
				require.True(t, tc.lazy, "the engine started on a directory verify calls damaged")
				for i := range 20 {
					if _, err = e.Get(ctx, 1, ringpipe.Point{uint32(i), uint32(2 * i)}); err != nil {
						break
					}
				}
			}
			assert.ErrorIs(t, err, ringpipe.ErrCorrupt)
			assert.Contains(t, fmt.Sprint(err), filepath.Base(file))
		})
	}
}

// TestVerifyTornTail: damage in the last batch of the last WAL segment is
// a torn tail: a warning that says so, exit 0, and recovery accepts it.
func TestVerifyTornTail(t *testing.T) {
	f := writeFixture(t)
	flip(t, filepath.Join(f.dir, f.walSeg), f.walLast+wal.FrameHeader+2)
	before := tree(t, f.dir)
	code, out, errOut := runCmd(t, "verify", f.dir)
	require.Equal(t, exitOK, code, "stderr:\n%s\nstdout:\n%s", errOut, out)
	assert.Regexp(t, `(?m)^`+regexp.QuoteMeta(f.walSeg)+fmt.Sprintf(`: offset %d: warning: torn tail of the last WAL segment`, f.walLast), out)
	assert.Contains(t, out, "no damage, 1 warning")
	assert.Equal(t, before, tree(t, f.dir), "verify changed the directory")

	code, out, _ = runCmd(t, "inspect", f.dir)
	assert.Equal(t, exitOK, code)
	assert.Contains(t, out, "active, torn tail")
	assert.Contains(t, out, "staged entries pending promotion: 2")

	ctx := context.Background()
	e, err := ringpipe.Start(ctx, ringpipe.Config{Dir: f.dir, Backend: ringpipe.BackendStd, Preallocate: testPrealloc})
	require.NoError(t, err, "recovery drops a torn tail")
	require.NoError(t, e.Stop(ctx))
}

func TestDirErrors(t *testing.T) {
	empty := t.TempDir()
	file := filepath.Join(empty, "file")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o644))
	for _, cmd := range []string{"inspect", "verify"} {
		for _, tc := range []struct {
			dir, want string
		}{
			{filepath.Join(empty, "missing"), "missing: no such directory"},
			{file, "file: not a directory"},
			{empty, "not a ringpipe directory (no CURRENT)"},
		} {
			code, out, errOut := runCmd(t, cmd, tc.dir)
			assert.Equal(t, exitFail, code, "%s %s", cmd, tc.dir)
			assert.Contains(t, errOut, "ringpipe "+cmd+": ")
			assert.Contains(t, errOut, tc.want)
			assert.Empty(t, out)
		}
	}
	entries, err := os.ReadDir(empty)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "inspect and verify created files in a directory that is not theirs")
}

func TestDirLocked(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e, err := ringpipe.Start(ctx, ringpipe.Config{Dir: dir, Backend: ringpipe.BackendStd, Preallocate: testPrealloc})
	require.NoError(t, err)
	for _, cmd := range []string{"inspect", "verify"} {
		code, _, errOut := runCmd(t, cmd, dir)
		assert.Equal(t, exitFail, code)
		assert.Contains(t, errOut, ringpipe.ErrLocked.Error())
	}
	require.NoError(t, e.Stop(ctx))
	code, out, errOut := runCmd(t, "verify", dir)
	assert.Equal(t, exitOK, code, "after Stop: %s%s", out, errOut)
	// The engine starts again: the survey released the lock.
	e, err = ringpipe.Start(ctx, ringpipe.Config{Dir: dir, Backend: ringpipe.BackendStd, Preallocate: testPrealloc})
	require.NoError(t, err)
	require.NoError(t, e.Stop(ctx))
	assert.True(t, strings.HasPrefix(out, "verify "))
}
