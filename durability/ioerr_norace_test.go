//go:build !race

package durability

// ioerrRace is set under the race detector; see ioerr_race_test.go.
const ioerrRace = false
