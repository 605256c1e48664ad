package lifecycle

import (
	"slices"

	"github.com/ringer-dev/ringer/protocol"
)

// Step is one committed revision of an invitation, as a record remembers
// it: the bucket keeps only a key's newest revision, and a consumer of the
// bucket skips a revision superseded before it got to it, so a record
// carries the steps of all its revisions for the export (package journal),
// which must see every one.
type Step struct {
	// Rev is the revision (bucket sequence); 0 in the record's own, last
	// step, whose revision is only known once written (Steps fills it in).
	Rev       uint64             `msgpack:"r,omitempty"`
	State     protocol.State     `msgpack:"s"`
	CallState protocol.CallState `msgpack:"c,omitempty"`
	Reason    protocol.Reason    `msgpack:"w,omitempty"`
	At        int64              `msgpack:"t"` // Unix ms of the write
	// Quiet: a revision that only re-armed the timer (not a transition).
	Quiet bool `msgpack:"q,omitempty"`
}

// Chained returns r's chain for writing r over revision prev (0: a new
// record) at now (Unix ms): the last step, the record r was derived from,
// gets its revision prev, and r's own step is added. The result shares no
// memory with r.Chain (a record may be written more than once).
func (r Record) Chained(prev uint64, now int64) []Step {
	steps := slices.Clone(r.Chain)
	if n := len(steps); n > 0 && steps[n-1].Rev == 0 {
		steps[n-1].Rev = prev
	}
	return append(steps, Step{State: r.State, CallState: r.CallState, Reason: r.Reason, At: now, Quiet: r.Quiet})
}

// Steps returns every revision of r up to its own (r.Revision), oldest
// first, with their revisions. A record written before records kept a
// chain has one step: its own.
func (r Record) Steps() []Step {
	steps := slices.Clone(r.Chain)
	if n := len(steps); n > 0 && steps[n-1].Rev == 0 {
		steps[n-1].Rev = r.Revision
		return steps
	}
	at := r.EndedAt
	if at == 0 {
		at = r.CreatedAt
	}
	return []Step{{Rev: r.Revision, State: r.State, CallState: r.CallState, Reason: r.Reason, At: at, Quiet: r.Quiet}}
}
