package protocol

import (
	"errors"
	"fmt"
)

// Direction says who called whom, from the reading user's side.
type Direction string

// Directions of a history entry.
const (
	Outgoing Direction = "OUTGOING" // the user called
	Incoming Direction = "INCOMING" // the user was called
)

// History limits that are part of the contract.
const (
	// MaxHistoryPage bounds CallRecords in one history reply.
	MaxHistoryPage = 100
	// DefaultHistoryPage is the page size when a request names none.
	DefaultHistoryPage = 20
	// MaxCursorLen bounds Request.Cursor.
	MaxCursorLen = 20
)

// CallRecord is one finished invitation (and the call it became, if any) in
// a user's history, as the user saw it. Times are Unix milliseconds of the
// broker's clock.
type CallRecord struct {
	ID        string    `msgpack:"id"`
	Direction Direction `msgpack:"direction"`
	Peer      string    `msgpack:"peer"` // the other party
	State     State     `msgpack:"state"`
	Reason    Reason    `msgpack:"reason,omitempty"`
	// Missed: an incoming invitation that never became a call (refused,
	// busy, canceled, timed out, failed).
	Missed     bool   `msgpack:"missed,omitempty"`
	ChannelID  string `msgpack:"channelId,omitempty"`
	EndedBy    string `msgpack:"endedBy,omitempty"` // who hung up an accepted call
	CreatedAt  int64  `msgpack:"createdAt"`
	AnsweredAt int64  `msgpack:"answeredAt,omitempty"` // accept or refuse
	EndedAt    int64  `msgpack:"endedAt"`
	// Mode and Peers, for a group invitation: its mode and every callee
	// (Peer is then the caller for a callee, and for the caller the FIRST
	// winner, or "").
	Mode  Mode     `msgpack:"mode,omitempty"`
	Peers []string `msgpack:"peers,omitempty"`
	// DurationMs is how long an accepted call lasted: from the accept to
	// its end. Zero for an invitation that never became a call.
	DurationMs int64 `msgpack:"durationMs,omitempty"`
	// Cursor, passed back in a history request, pages to what is older
	// than this entry.
	Cursor string `msgpack:"cursor"`
}

// Finished reports whether inv neither rings nor holds a call any more: the
// moment it enters its parties' histories.
func (inv *Invitation) Finished() bool { return !inv.Live() }

// NeverRang reports whether inv ended at its send without ringing the
// callee: refused as busy (or blocked), or merged into the callee's own
// invitation (glare). The callee is told nothing of it, and no push
// request is made for it.
func (inv *Invitation) NeverRang() bool {
	return inv.Reason == ReasonBusy || inv.Reason == ReasonMerged
}

// CallRecordOf is inv as user (a party) sees it in the history.
func CallRecordOf(full *Invitation, user string) CallRecord {
	view := full.For(user)
	inv := &view
	r := CallRecord{
		ID: inv.ID, Direction: Outgoing, Peer: inv.Callee, State: inv.State, Reason: inv.Reason,
		ChannelID: inv.ChannelID, EndedBy: inv.EndedBy,
		CreatedAt: inv.CreatedAt, AnsweredAt: inv.AnsweredAt, EndedAt: inv.EndedAt,
	}
	if user == inv.Callee {
		r.Direction, r.Peer = Incoming, inv.Caller
		r.Missed = inv.State != StateAccepted
	}
	if inv.Group() {
		r.Mode, r.Peers = inv.Mode, inv.Callees()
	}
	if inv.State == StateAccepted && inv.AnsweredAt > 0 && inv.EndedAt >= inv.AnsweredAt {
		r.DurationMs = inv.EndedAt - inv.AnsweredAt
	}
	return r
}

// ExportVersion is the version of Transition's schema.
const ExportVersion = 1

// Transition is one committed revision of an invitation as the export
// stream holds it (docs/protocol.md, "Export"): one message per revision
// on ringer.v1.export.<id>, oldest first, each exactly once.
type Transition struct {
	V  int    `msgpack:"v" json:"v"` // ExportVersion
	ID string `msgpack:"id" json:"id"`
	// Revision is the bucket revision this transition committed; Previous
	// the invitation's revision before it (0 for its first), so that a
	// reader can check it has every one.
	Revision  uint64    `msgpack:"revision" json:"revision"`
	Previous  uint64    `msgpack:"previous" json:"previous"`
	State     State     `msgpack:"state" json:"state"`
	CallState CallState `msgpack:"callState,omitempty" json:"callState,omitempty"`
	Reason    Reason    `msgpack:"reason,omitempty" json:"reason,omitempty"`
	At        int64     `msgpack:"at" json:"at"` // Unix ms of the commit (the committing broker's clock)
	// The parties, as of the invitation's newest revision when exported.
	Caller       string `msgpack:"caller" json:"caller"`
	CallerDevice string `msgpack:"callerDevice,omitempty" json:"callerDevice,omitempty"`
	Callee       string `msgpack:"callee" json:"callee"`
	CalleeDevice string `msgpack:"calleeDevice,omitempty" json:"calleeDevice,omitempty"`
	ChannelID    string `msgpack:"channelId,omitempty" json:"channelId,omitempty"`
}

// ErrBrokenChain: an invitation's transitions, as read from the export, do
// not follow one another (one is missing, repeated or out of order).
var ErrBrokenChain = errors.New("protocol: exported transitions do not chain")

// CheckChain checks one invitation's transitions, oldest first: the first
// names no previous revision, and each names the one before it. It is the
// check a reader of the export makes to know it has them all.
func CheckChain(ts []Transition) error {
	var prev uint64
	for i, t := range ts {
		if t.Previous != prev || t.Revision <= prev {
			return fmt.Errorf("%w: transition %d of %d (revision %d) names %d, after %d", ErrBrokenChain, i+1, len(ts), t.Revision, t.Previous, prev)
		}
		prev = t.Revision
	}
	return nil
}
