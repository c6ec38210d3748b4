// Package stagetrace stamps the stages of a write's path through the
// engine, to find where a one-writer Put's time goes (issue 4). Built
// with -tags stagetrace, Mark records the time of each stage; without the
// tag Mark is an empty function that the compiler removes, so the engine
// carries no cost for it.
//
// The stamps are global, one per stage: they describe the last write
// only, which is what a benchmark with one writer needs (see
// BenchmarkStages in the root package, built with the tag).
package stagetrace

// Stage is a point on a write's path.
type Stage int

// The stages in path order.
const (
	PutStart   Stage = iota // Engine.Put entered
	Queued                  // the write is about to be sent to the write queue
	Taken                   // the submitter took a request from the queue, or an inline commit took the write
	Submitting              // the submitter is about to submit a flight to the ring
	Submitted               // the ring accepted the flight
	Reaped                  // the completer's Reap returned completions
	Settled                 // the completer settled a flight and is about to tell the submitter
	Acking                  // the publisher published the View and is about to complete an Ack
	PutReturn               // Engine.Put is about to return
	NumStages
)

var names = [NumStages]string{"put", "queued", "taken", "submitting", "submitted", "reaped", "settled", "acking", "return"}

func (s Stage) String() string {
	if s < 0 || s >= NumStages {
		return "?"
	}
	return names[s]
}
