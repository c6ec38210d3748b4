package durability

import (
	"flag"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: every
// engine a suite starts must be stopped, also after a power cut.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// seedFlag replays one seed of a seeded suite: go test -run PowerLoss
// ./durability -seed 1234. Every seeded suite prints the seed of a failure.
var seedFlag = flag.Int64("seed", 0, "run only this seed of the seeded suites (0: their default seeds)")

// Soak mode: RINGPIPE_SOAK=1 runs the long form of every suite;
// RINGPIPE_SOAK_DURATION (a Go duration, e.g. 30m) bounds it in time.
const (
	soakEnv         = "RINGPIPE_SOAK"
	soakDurationEnv = "RINGPIPE_SOAK_DURATION"
)

// soak reports whether the long forms run (RINGPIPE_SOAK is set and not
// "0", or RINGPIPE_SOAK_DURATION is set).
func soak() bool {
	v := os.Getenv(soakEnv)
	return (v != "" && v != "0") || os.Getenv(soakDurationEnv) != ""
}

// soakDeadline returns when a soak must stop: now plus
// RINGPIPE_SOAK_DURATION, or the zero time when it is unset (the soak's
// own count bounds it). A malformed duration fails the test.
func soakDeadline(t testing.TB) time.Time {
	v := os.Getenv(soakDurationEnv)
	if v == "" {
		return time.Time{}
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: not a positive duration", soakDurationEnv, v)
	}
	return time.Now().Add(d)
}

// seedRange is the seeds a seeded suite runs: only -seed when given, else
// n seeds from first.
func seedRange(first, n int64) []int64 {
	if *seedFlag != 0 {
		return []int64{*seedFlag}
	}
	out := make([]int64, n)
	for i := range out {
		out[i] = first + int64(i)
	}
	return out
}
