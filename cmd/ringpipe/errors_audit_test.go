package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
)

// The errors audit of the command: bad usage exits 2 and says which flag
// or argument and why, once, on the last line of stderr; a run that cannot
// start exits 1 and says which directory and why; help exits 0.

// lastLine is the last line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

func TestErrorsAuditUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		last string // stderr's last line
	}{
		{[]string{"bench", "-writers", "x"}, `ringpipe bench: usage: invalid value "x" for flag -writers: parse error`},
		{[]string{"bench", "-duration", "5"}, `ringpipe bench: usage: invalid value "5" for flag -duration: parse error`},
		{[]string{"bench", "-nosuch"}, "ringpipe bench: usage: flag provided but not defined: -nosuch"},
		{[]string{"bench", "-writers", "-3"}, "ringpipe bench: usage: -writers -3: want at least 1"},
		{[]string{"bench", "-value-size", "-1"}, "ringpipe bench: usage: -value-size -1: negative"},
		{[]string{"bench", "-spaces", "0"}, "ringpipe bench: usage: -spaces 0: want at least 1"},
		{[]string{"bench", "-seal-threshold", "-5"}, "ringpipe bench: usage: -seal-threshold -5: negative"},
		{[]string{"bench", "-duration", "0s"}, "ringpipe bench: usage: -duration 0s: want a positive duration"},
		{[]string{"inspect"}, "ringpipe inspect: usage: want one directory, got 0 arguments"},
		{[]string{"verify", "a", "b"}, "ringpipe verify: usage: want one directory, got 2 arguments"},
	} {
		code, out, errOut := runCmd(t, tc.args...)
		assert.Equal(t, exitUsage, code, "%v", tc.args)
		assert.Empty(t, out, "%v", tc.args)
		assert.Equal(t, tc.last, lastLine(errOut), "%v", tc.args)
		// The flag package's own copy of a parse error is not printed
		// before the usage.
		msg := tc.last[strings.Index(tc.last, "usage: ")+len("usage: "):]
		assert.Equal(t, 1, strings.Count(errOut, msg), "%v: the error is printed more than once:\n%s", tc.args, errOut)
	}
	code, _, errOut := runCmd(t, "inspect", "-x", "dir")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "flag provided but not defined: -x")
}

func TestErrorsAuditHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"help"}, {"bench", "-h"}, {"inspect", "-h"}, {"verify", "-help"}} {
		code, out, errOut := runCmd(t, args...)
		assert.Equal(t, exitOK, code, "%v", args)
		assert.Contains(t, out+errOut, "usage: ringpipe", "%v", args)
	}
	_, _, errOut := runCmd(t, "bench", "-h")
	assert.Contains(t, errOut, "-writers int", "bench -h lists the flags")
}

func TestErrorsAuditBenchStart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "afile")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o644))
	code, out, errOut := runCmd(t, shortBench("-backend", "std", "-dir", file)...)
	assert.Equal(t, exitFail, code)
	assert.Empty(t, out)
	assert.True(t, strings.HasPrefix(errOut, "ringpipe bench: start the engine: ringpipe: start in "+file+": Config.Dir is not a directory: "), errOut)
	assert.Contains(t, errOut, "not a directory")

	ctx := context.Background()
	dir := t.TempDir()
	e, err := ringpipe.Start(ctx, ringpipe.Config{Dir: dir, Backend: ringpipe.BackendStd, Preallocate: testPrealloc})
	require.NoError(t, err)
	defer e.Stop(ctx)
	code, _, errOut = runCmd(t, shortBench("-backend", "std", "-dir", dir)...)
	assert.Equal(t, exitFail, code)
	assert.Equal(t, "ringpipe bench: start the engine: ringpipe: directory locked by another engine: "+dir+"\n", errOut)
	for _, cmd := range []string{"inspect", "verify"} {
		code, _, errOut = runCmd(t, cmd, dir)
		assert.Equal(t, exitFail, code)
		assert.Equal(t, "ringpipe "+cmd+": ringpipe: directory locked by another engine: "+dir+" (stop the engine first)\n", errOut)
	}
}
