// Command ringpipe benchmarks a ringpipe engine and inspects and verifies
// its directories.
//
// Usage:
//
//	ringpipe bench [flags]     durable-write benchmark (the README's main job)
//	ringpipe inspect DIR       what a directory holds
//	ringpipe verify DIR        check every checksum and frame
//
// # bench
//
// With no flags, bench runs 64 writers doing durable Puts of 100-byte
// values for 10 s into one space, on the io_uring backend, in a temporary
// directory that it removes afterwards, and prints the throughput, the
// latency of each Put as the writers saw it (p50, p99, p99.9, max), direct
// and staged writes, sealed blocks, syncs per second, and the backend and
// kernel. Ctrl-C stops the load early and still prints the result (a second
// Ctrl-C kills). Flags:
//
//	-writers N          concurrent writers (64)
//	-value-size N       bytes per value (100)
//	-duration D         how long to write (10s)
//	-spaces N           spaces, written round-robin by writer (1)
//	-async              PutAsync, up to 64 in flight per writer, instead of Put
//	-backend uring|std  the engine's I/O backend (uring)
//	-dir DIR            run in DIR and keep it (default: a temporary directory)
//	-seal-threshold N   records per hot segment before sealing (engine default)
//	-direct-io          Config.DirectIO: the logs written with O_DIRECT
//	-json               print the result as one JSON object
//	-plot FILE          write the latency CDF to FILE (.png or .svg)
//
// A progress line goes to stderr while it is a terminal.
//
// # inspect and verify
//
// inspect prints a directory's spaces, blocks, hot generations, staging WAL
// segments, staged entries pending promotion and manifest edits. verify
// reads every file the engine would read at recovery — CURRENT and the
// manifest, every block, every hot generation and WAL segment — and prints
// each damage as "file: offset N: what". A torn last write of a log (which
// recovery drops) is printed as a warning, not as damage.
//
// Neither changes the directory. Both take the directory's lock (flock on
// LOCK, which they open read-only and never create) for as long as they
// read: a directory that a running engine holds is refused with ringpipe's
// ErrLocked message, and no engine can start on it while they read.
// Reading without the lock would not be safe: a running engine appends,
// seals, renames and deletes files under the reader, which would read as
// damage that is not there.
//
// # Exit status
//
// 0 on success (verify: nothing damaged); 1 for a failed run, a damaged
// directory, or a directory that is missing, locked or not a ringpipe
// directory; 2 for bad usage or flags.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // a failed run, damage, a missing or locked directory
	exitUsage = 2 // bad usage or flags
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: ringpipe <command> [arguments]

commands:
  bench [flags]   durable-write benchmark on a fresh directory (see ringpipe bench -h)
  inspect DIR     spaces, blocks, hot generations, WAL segments, staged entries, manifest edits
  verify DIR      check every checksum and frame; exit 1 if anything is damaged

inspect and verify change nothing; they take DIR's lock while they read,
so they refuse a directory a running engine holds (stop it first).
`

// run runs the command line args (without the program name) and returns
// the exit status. It is main without the process: tests call it.
func run(args []string, stdout, stderr io.Writer) int {
	return (&app{stdout: stdout, stderr: stderr, notify: notifyInterrupt}).run(args)
}

// app is one invocation of the command.
type app struct {
	stdout, stderr io.Writer
	// notify starts delivering interrupts (Ctrl-C, SIGTERM) on the
	// returned channel until stop is called; a seam for tests.
	notify func() (c <-chan os.Signal, stop func())
}

func (a *app) run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(a.stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "bench":
		return a.bench(args[1:])
	case "inspect":
		return a.dirCommand("inspect", args[1:], a.inspect)
	case "verify":
		return a.dirCommand("verify", args[1:], a.verify)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(a.stdout, usage)
		return exitOK
	}
	fmt.Fprintf(a.stderr, "ringpipe: unknown command %q\n%s", args[0], usage)
	return exitUsage
}

// errUsage marks an error that is the caller's misuse (exit 2).
var errUsage = errors.New("usage")

// fail prints err for command cmd and returns its exit status.
func (a *app) fail(cmd string, err error) int {
	fmt.Fprintf(a.stderr, "ringpipe %s: %v\n", cmd, err)
	if errors.Is(err, errUsage) {
		return exitUsage
	}
	return exitFail
}
