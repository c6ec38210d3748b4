package main

import (
	"bytes"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: the
// bench's writers and engine, and the survey's ring, must all be gone when
// run returns.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// runCmd runs the command line in-process and returns its exit status,
// stdout and stderr.
func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"no command", nil, "usage: ringpipe"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown flag", []string{"bench", "-nosuch"}, "flag provided but not defined: -nosuch"},
		{"zero writers", []string{"bench", "-writers", "0"}, "-writers 0"},
		{"bad backend", []string{"bench", "-backend", "aio"}, `-backend "aio": want uring or std`},
		{"bad duration", []string{"bench", "-duration", "soon"}, "invalid value"},
		{"negative duration", []string{"bench", "-duration", "-1s"}, "want a positive duration"},
		{"plot format", []string{"bench", "-plot", "cdf.pdf"}, "want a .png or .svg file"},
		{"bench argument", []string{"bench", "extra"}, `unexpected argument "extra"`},
		{"inspect without dir", []string{"inspect"}, "usage: ringpipe inspect DIR"},
		{"verify two dirs", []string{"verify", "a", "b"}, "want one directory, got 2 arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, tc.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, exitUsage, errOut)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("stderr does not say %q:\n%s", tc.want, errOut)
			}
			if out != "" {
				t.Errorf("stdout not empty on a usage error:\n%s", out)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	code, out, _ := runCmd(t, "help")
	if code != exitOK || !strings.Contains(out, "bench") || !strings.Contains(out, "verify DIR") {
		t.Errorf("help: exit %d, stdout:\n%s", code, out)
	}
	code, _, errOut := runCmd(t, "bench", "-h")
	if code != exitOK || !strings.Contains(errOut, "-seal-threshold") {
		t.Errorf("bench -h: exit %d, stderr:\n%s", code, errOut)
	}
}
