//go:build ringpipe_suites && race

package durability

// ioerrRace is set under the race detector. The persistent half of the
// I/O-error sweeps then does not run: a persistent fault escalates the
// engine to ErrFailed, and escalation races (engine.enter's senders.Add
// against the failure path's senders.Wait, TestCallDuringEscalationReturns),
// which fails the whole test binary. Run it without -race.
const ioerrRace = true
