//go:build !race

package durability

// leakRace says whether the race detector is on (it slows a Start/Stop
// cycle about threefold).
const leakRace = false
