package lifecycle

import (
	"slices"
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
	if r.Group() {
		return groupEvents(r)
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

// HoldsLines reports whether the record may hold its parties' lines (see
// HoldsLine for one party's).
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
	if !HoldsLine(r, user) {
		return false
	}
	if r.State == protocol.StateSent && user == r.Callee && unreceived > 0 {
		return now.Sub(time.UnixMilli(r.CreatedAt)) < unreceived
	}
	if l := r.Leg(user); l != nil && l.State == protocol.StateSent && user != r.Callee && unreceived > 0 {
		return now.Sub(time.UnixMilli(l.CreatedAt)) < unreceived
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

// groupEvents: the caller hears of every revision of a group invitation;
// a callee of those that changed its leg (Touched), of the FIRST
// winner's call, and of every change while it is in a JOIN call. Each is
// given its own view (protocol.Invitation.For), and an event type as a
// 1:1 invitation in that view would (GroupUpdated where none applies).
func groupEvents(r Record) []Notice {
	out := []Notice{{User: r.Caller, Event: protocol.Event{Type: callerGroupEvent(r), Role: protocol.RoleCaller, Invitation: r.Invitation}}}
	for i := range r.Legs {
		l := &r.Legs[i]
		touched := slices.Contains(r.Touched, l.User)
		if !touched && l.User != r.Callee && !(r.Mode == protocol.ModeJoin && l.Joined()) {
			continue
		}
		v := r.Invitation.For(l.User)
		t := protocol.EventGroupUpdated
		switch {
		case !touched && l.User != r.Callee:
		case v.State == protocol.StateSent:
			t = protocol.EventInvited
		case v.State == protocol.StateAccepting:
			t = protocol.EventAccepting
		case v.State == protocol.StateAccepted && v.CallState == protocol.CallEnded:
			t = protocol.EventCallEnded
		case v.State == protocol.StateAccepted:
			t = protocol.EventAccepted
		case v.State == protocol.StateRefused:
			t = protocol.EventRefused
		case v.State == protocol.StateCanceled:
			t = protocol.EventCanceled
		case v.State == protocol.StateFailed:
			t = protocol.EventFailure
		}
		out = append(out, Notice{User: l.User, Event: protocol.Event{Type: t, Role: protocol.RoleCallee, Invitation: v}})
	}
	return out
}

func callerGroupEvent(r Record) protocol.EventType {
	switch r.State {
	case protocol.StateAccepting:
		return protocol.EventAccepted
	case protocol.StateAccepted:
		if r.CallState == protocol.CallEnded {
			return protocol.EventCallEnded
		}
		if r.Mode == protocol.ModeFirst {
			return protocol.EventAccepted
		}
	case protocol.StateRefused:
		return protocol.EventRefused
	case protocol.StateCanceled:
		return protocol.EventCanceled
	case protocol.StateFailed:
		return protocol.EventFailure
	}
	return protocol.EventGroupUpdated
}
