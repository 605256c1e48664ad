package lifecycle

import (
	"time"

	"github.com/ringer-dev/ringer/protocol"
)

// Notice is one event to publish to one user.
type Notice struct {
	User  string
	Event protocol.Event
}

// Events projects a committed record onto the events its parties must see
// (docs/protocol.md, "Events"). It depends only on the record, so replaying a
// change (at-least-once delivery) yields the same events with the same
// revision, which clients deduplicate.
func Events(r Record) []Notice {
	if r.Quiet {
		return nil
	}
	inv := r.Invitation
	to := func(role protocol.Role, t protocol.EventType) Notice {
		user := inv.Caller
		if role == protocol.RoleCallee {
			user = inv.Callee
		}
		return Notice{User: user, Event: protocol.Event{Type: t, Role: role, Invitation: inv}}
	}
	caller := func(t protocol.EventType) Notice { return to(protocol.RoleCaller, t) }
	callee := func(t protocol.EventType) Notice { return to(protocol.RoleCallee, t) }

	switch inv.State {
	case protocol.StateSent:
		return []Notice{callee(protocol.EventInvited)}
	case protocol.StateReceived:
		return []Notice{caller(protocol.EventReceivedByPeer)}
	case protocol.StateAccepting:
		return []Notice{caller(protocol.EventAccepted), callee(protocol.EventAccepting)}
	case protocol.StateAccepted:
		if inv.CallState == protocol.CallEnded {
			return []Notice{caller(protocol.EventCallEnded), callee(protocol.EventCallEnded)}
		}
		// The caller learns ACCEPTED from its ackaccept reply, but a reply can
		// be lost: the event makes the call's start at-least-once for both.
		return []Notice{caller(protocol.EventAccepted), callee(protocol.EventAccepted)}
	case protocol.StateRefused, protocol.StateCanceled:
		t := protocol.EventRefused
		if inv.State == protocol.StateCanceled {
			t = protocol.EventCanceled
		}
		if inv.NeverRang() { // a busy callee is not disturbed; a merged one has the call it placed
			return []Notice{caller(t)}
		}
		return []Notice{caller(t), callee(t)}
	case protocol.StateFailed:
		return []Notice{caller(protocol.EventFailure), callee(protocol.EventFailure)}
	}
	return nil
}

// HoldsLines reports whether the record holds its parties' lines: a line
// claim keeps its user busy exactly while this is true, so an invitation's
// end frees both lines with no write to them.
func HoldsLines(r Record) bool {
	return r.Live() && r.Reason != protocol.ReasonBusy
}

// Busies reports whether r makes user, one of its parties, busy to other
// callers at now. A record that holds lines does, with one exception: an
// invitation that no device of its callee has received yet (SENT) keeps the
// callee busy only for unreceived after it was sent (0: for as long as it
// rings). A callee with no device online, or whose app is asleep, is then
// not made unreachable by one caller's long offline window; the invitation
// still waits for it (store-and-forward) and keeps its claim on the line.
func Busies(r Record, user string, now time.Time, unreceived time.Duration) bool {
	if !HoldsLines(r) || r.RoleOf(user) == "" {
		return false
	}
	if r.State == protocol.StateSent && user == r.Callee && unreceived > 0 {
		return now.Sub(time.UnixMilli(r.CreatedAt)) < unreceived
	}
	return true
}

// Finished returns the record a finished invitation is stored as: without
// its content, which only a live invitation needs and which its callee has
// already been shown, nor the accept's response once the call is over. A
// refusal keeps its response: the caller learns it from this revision. An
// ended invitation then costs its retention a few hundred bytes (plus a
// refusal's response), whatever its sender put in it.
func Finished(r Record) Record {
	if r.Live() {
		return r
	}
	r.Content = ""
	if r.State != protocol.StateRefused {
		r.Response = ""
	}
	return r
}
