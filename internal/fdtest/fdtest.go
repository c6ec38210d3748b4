// Package fdtest lists the test process's open file descriptors, for the
// leak checks of several packages' tests.
package fdtest

import (
	"os"
	"slices"
	"testing"
)

// List returns this process's open file descriptors as "fd -> target",
// sorted. It fails t when /proc/self/fd cannot be read.
func List(t testing.TB) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("list open fds: %v", err)
	}
	var out []string
	for _, e := range ents {
		// The fd ReadDir itself had open is gone by now: Readlink fails.
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			out = append(out, e.Name()+" -> "+target)
		}
	}
	slices.Sort(out)
	return out
}

// New returns the entries of now that are not in before.
func New(now, before []string) []string {
	var out []string
	for _, s := range now {
		if !slices.Contains(before, s) {
			out = append(out, s)
		}
	}
	return out
}
