//go:build race

package durability

// plRace says whether the race detector is on: it makes a power-loss
// cycle about six times as costly (recovery scans whole log files), so
// the CI form of TestPowerLoss runs fewer seeds (plSeedsRace).
const plRace = true
