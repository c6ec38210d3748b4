//go:build ringpipe_suites && !race

package durability

// ioerrRace is set under the race detector; see ioerr_race_test.go.
const ioerrRace = false
