//go:build race

package durability

// ioerrRace is set under the race detector. The persistent half of the
// I/O-error sweeps then does not run, for time: with it the sweeps take
// about 7.5 minutes under -race on two cores, against 3 for the half with
// faults once. CI runs the persistent half without -race (.ci/run).
const ioerrRace = true
