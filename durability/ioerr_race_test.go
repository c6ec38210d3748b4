//go:build race

package durability

// ioerrRace is set under the race detector. The persistent half of the
// I/O-error sweeps then does not run, for time: with it the sweeps take
// about 7.5 minutes under -race on two cores, against 3 for the half with
// faults once (measured before session 7's watchdog change, which took
// TestIOErrorSweep under -race from 121 s to 45-49 s; not remeasured). CI
// runs the persistent half without -race (.ci/run).
const ioerrRace = true
