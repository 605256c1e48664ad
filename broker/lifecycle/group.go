package lifecycle

import (
	"slices"
	"time"

	"github.com/ringer-dev/ringer/protocol"
)

// A group invitation is one record: the caller, a leg per callee
// (protocol.Leg), and the invitation's own state, which the legs decide
// (settle). One record means one compare-and-set per transition, so two
// callees accepting at once, or an accept racing a cancel, a timeout or a
// presence loss, have exactly one winner, and every party reads the same
// legs. A FIRST invitation whose winner accepted is a 1:1 invitation from
// then on (Callee set): Apply hands it to the 1:1 machine.

// NewGroup builds the record of a freshly sent group invitation: a leg per
// callee, ringing, except those in busy (a line taken, or the caller
// blocked), refused as busy at once. If every callee is busy the
// invitation ends at once, REFUSED(BUSY), like a 1:1 invitation to a busy
// callee; it holds no line.
func NewGroup(id, caller, callerDevice string, mode protocol.Mode, callees []string, busy func(string) bool,
	content, channelID string, t Timeouts, now time.Time) Record {
	ms := now.UnixMilli()
	r := Record{
		Invitation: protocol.Invitation{
			ID: id, Caller: caller, CallerDevice: callerDevice, Mode: mode,
			Content: content, ChannelID: channelID,
			State: protocol.StateSent, CreatedAt: ms,
		},
		Timeouts: t,
	}
	for _, u := range callees {
		r.Legs = append(r.Legs, newLeg(u, "", busy(u), t, now))
		if !busy(u) {
			r.Touched = append(r.Touched, u)
		}
	}
	settle(&r, ms)
	if !r.Live() {
		r.Reason, r.Content = protocol.ReasonBusy, "" // nobody rang
	}
	armTimer(&r, Record{})
	return r
}

func newLeg(user, by string, busy bool, t Timeouts, now time.Time) protocol.Leg {
	ms := now.UnixMilli()
	l := protocol.Leg{User: user, InvitedBy: by, State: protocol.StateSent, CreatedAt: ms, Deadline: now.Add(t.Offline).UnixMilli()}
	if busy {
		l.State, l.Reason, l.Response, l.AnsweredAt, l.EndedAt, l.Deadline = protocol.StateRefused, protocol.ReasonBusy, "busy", ms, ms, 0
	}
	return l
}

// AddLegs invites more callees into a live JOIN invitation, on behalf of
// by: the caller (unless it left) or a callee in the call. A callee whose
// leg ended (refused, timed out, left) is invited afresh; one whose leg
// is live may not be, unless by invited it (a retried invite: nothing to
// do, changed is false); the caller never. busy says which lines are taken.
func AddLegs(r Record, by string, users []string, busy func(string) bool, maxCallees int, now time.Time) (_ Record, changed bool, _ error) {
	if r.Mode != protocol.ModeJoin {
		return r, false, protocol.Errorf(protocol.CodeInvalidArgument, "invitation %s is not a JOIN group invitation: only those take more callees", r.ID)
	}
	if !r.Live() {
		return r, false, alreadyEnd(r)
	}
	switch l := r.Leg(by); {
	case by == r.Caller && r.CallerLeftAt == 0, l != nil && l.Joined():
	case r.RoleOf(by) == "":
		return r, false, protocol.Errorf(protocol.CodeForbidden, "%s is not a party to invitation %s", by, r.ID)
	default:
		return r, false, protocol.Errorf(protocol.CodeForbidden, "%s may not invite into %s: only who is in the call does", by, r.ID)
	}
	next := r.clone()
	for _, u := range users {
		if u == r.Caller {
			return r, false, protocol.Errorf(protocol.CodeInvalidArgument, "%s is the caller of %s", u, r.ID)
		}
		nl := newLeg(u, by, busy(u), r.Timeouts, now)
		if l := next.Leg(u); l != nil {
			switch {
			case l.Live() && (l.InvitedBy == by || l.InvitedBy == "" && by == r.Caller):
				continue // invited by by already: a retry
			case l.Live():
				return r, false, protocol.Errorf(protocol.CodeInvalidArgument, "%s is already invited to %s", u, r.ID)
			}
			*l = nl
		} else {
			next.Legs = append(next.Legs, nl)
		}
		changed = true
		if !busy(u) {
			next.touch(u)
		}
	}
	if len(next.Legs) > maxCallees {
		return r, false, protocol.Errorf(protocol.CodeInvalidArgument, "%d callees, at most %d", len(next.Legs), maxCallees)
	}
	if !changed {
		return r, false, nil
	}
	settle(&next, now.UnixMilli())
	armTimer(&next, r)
	return next, true, nil
}

// clone copies r for writing: its legs are its own.
func (r Record) clone() Record {
	r.Legs = slices.Clone(r.Legs)
	r.Touched, r.Rearm, r.Quiet = nil, false, false
	return r
}

// touch records that user's leg changed in this revision: its callee is
// told (Events).
func (r *Record) touch(user string) {
	if !slices.Contains(r.Touched, user) {
		r.Touched = append(r.Touched, user)
	}
}

// active reports whether a JOIN invitation's call is on.
func (r *Record) active() bool {
	return r.State == protocol.StateAccepted && r.CallState == protocol.CallActive
}

// applyGroup is Apply for a group invitation that is not (yet) a 1:1 call.
func applyGroup(r Record, a Action, now time.Time) (Record, bool, error) {
	role := r.RoleOf(a.User)
	if a.Kind != Timeout && role == "" {
		return r, false, protocol.Errorf(protocol.CodeForbidden, "%s is not a party to invitation %s", a.User, r.ID)
	}
	calleeOnly := func(what string) error {
		if role != protocol.RoleCallee {
			return forbidden(a, "only a callee "+what)
		}
		return nil
	}
	if len(a.Response) > protocol.MaxLegResponseLen {
		return r, false, protocol.Errorf(protocol.CodeInvalidArgument, "response: %d bytes, at most %d in a group invitation", len(a.Response), protocol.MaxLegResponseLen)
	}
	next := r.clone()
	leg := next.Leg(a.User)
	ms := now.UnixMilli()
	join := r.Mode == protocol.ModeJoin

	switch a.Kind {
	case Ack:
		if err := calleeOnly("acknowledges receipt"); err != nil {
			return r, false, err
		}
		switch {
		case leg.State == protocol.StateSent && r.Live():
			leg.State, leg.ReceivedAt, leg.Device = protocol.StateReceived, ms, a.Device
			leg.Deadline = now.Add(r.Timeouts.Expire).UnixMilli()
			next.touch(a.User)
		case leg.Live() && r.Live():
			return r, false, nil // late or repeated ack
		default:
			return r, false, legEnded(r, leg)
		}

	case Accept:
		if err := calleeOnly("accepts"); err != nil {
			return r, false, err
		}
		switch {
		case !r.Live():
			return r, false, alreadyEnd(r)
		case leg.Joined() && leg.Device == a.Device && leg.Response == a.Response:
			return r, false, nil
		case leg.Joined():
			return r, false, alreadyAccept(r)
		case !join && !leg.Ringing():
			return r, false, legEnded(r, leg)
		}
		// FIRST: this callee wins; JOIN: joins (also late, or again after
		// leaving, while the invitation lives).
		leg.State, leg.Reason, leg.Device, leg.Response = protocol.StateAccepted, protocol.ReasonNone, a.Device, a.Response
		leg.AnsweredAt, leg.EndedAt, leg.Deadline = ms, 0, 0
		if leg.ReceivedAt == 0 {
			leg.ReceivedAt = ms
		}
		next.touch(a.User)
		if next.ReceivedAt == 0 {
			next.ReceivedAt = ms
		}
		if !join {
			for i := range next.Legs {
				if l := &next.Legs[i]; l.Ringing() {
					l.State, l.Reason, l.EndedAt, l.Deadline = protocol.StateCanceled, protocol.ReasonAnsweredElsewhere, ms, 0
					next.touch(l.User)
				}
			}
			// From here on a 1:1 invitation to the winner.
			next.Callee, next.CalleeDevice, next.Response = a.User, a.Device, a.Response
			next.State, next.AnsweredAt = protocol.StateAccepting, ms
			next.Deadline = now.Add(r.Timeouts.Accept).UnixMilli()
			armTimer(&next, r)
			return next, true, nil
		}
		if !next.active() {
			next.State, next.CallState, next.AnsweredAt = protocol.StateAccepted, protocol.CallActive, ms
			if r.Timeouts.MaxDuration > 0 {
				next.CallDeadline = now.Add(r.Timeouts.MaxDuration).UnixMilli()
			}
		}

	case Refuse:
		if err := calleeOnly("refuses"); err != nil {
			return r, false, err
		}
		switch {
		case !r.Live():
			return r, false, alreadyEnd(r)
		case leg.Ringing():
			leg.State, leg.Response, leg.Device = protocol.StateRefused, a.Response, a.Device
			leg.AnsweredAt, leg.EndedAt, leg.Deadline = ms, ms, 0
			next.touch(a.User)
		case leg.State == protocol.StateRefused && leg.Reason == protocol.ReasonNone && leg.Device == a.Device:
			return r, false, nil
		case leg.Joined():
			return r, false, alreadyAccept(r)
		default:
			return r, false, legEnded(r, leg)
		}

	case Cancel:
		if role != protocol.RoleCaller {
			return r, false, forbidden(a, "only the caller cancels")
		}
		switch {
		case r.State == protocol.StateCanceled:
			return r, false, nil
		case !r.Live():
			return r, false, alreadyEnd(r)
		case r.active():
			return r, false, protocol.Errorf(protocol.CodeAlreadyAccept, "invitation %s is a call already: hang up to leave it", r.ID)
		}
		for i := range next.Legs {
			if l := &next.Legs[i]; l.Ringing() {
				l.State, l.EndedAt, l.Deadline = protocol.StateCanceled, ms, 0
				next.touch(l.User)
			}
		}
		next.State, next.EndedAt, next.Deadline = protocol.StateCanceled, ms, 0
		return next, true, nil

	case AckAccept:
		if role != protocol.RoleCaller {
			return r, false, forbidden(a, "only the caller acknowledges an accept")
		}
		switch {
		case r.State == protocol.StateAccepted:
			return r, false, nil // a JOIN call needs no ack: harmless
		case r.Live():
			return r, false, protocol.Errorf(protocol.CodeInvalidArgument, "invitation %s is not accepted yet", r.ID)
		default:
			return r, false, alreadyEnd(r)
		}

	case Hangup:
		if !r.active() {
			if r.Live() {
				return r, false, protocol.Errorf(protocol.CodeInvalidArgument,
					"invitation %s is %s, not a call: cancel or refuse it", r.ID, r.State)
			}
			return r, false, alreadyEnd(r)
		}
		if role == protocol.RoleCaller {
			if r.CallerLeftAt != 0 {
				return r, false, notInCall(r, a.User)
			}
			next.CallerLeftAt = ms
		} else {
			switch {
			case leg.Joined():
				leg.EndedAt, leg.Reason = ms, protocol.ReasonLeft
				next.touch(a.User)
			case leg.Ringing():
				return r, false, protocol.Errorf(protocol.CodeInvalidArgument,
					"%s has not joined the call of invitation %s: refuse it", a.User, r.ID)
			default:
				return r, false, notInCall(r, a.User)
			}
		}
		if next.InCall() < 2 {
			endCall(&next, protocol.ReasonHangup, a.User, ms)
		}

	case Timeout:
		if r.Deadline == 0 || !r.Live() {
			return r, false, nil
		}
		if ms < r.Deadline {
			return r, false, ErrNotDue
		}
		for i := range next.Legs {
			l := &next.Legs[i]
			if !l.Ringing() || l.Deadline == 0 || l.Deadline > ms {
				continue
			}
			reason := protocol.ReasonInvitationExpire
			if l.State == protocol.StateSent {
				reason = protocol.ReasonPeerOffline
				if slices.Contains(a.Online, l.User) {
					reason = protocol.ReasonPeerNoResponse
				}
			}
			l.State, l.Reason, l.EndedAt, l.Deadline = protocol.StateFailed, reason, ms, 0
			next.touch(l.User)
		}
		if r.active() && r.CallDeadline != 0 && r.CallDeadline <= ms {
			endCall(&next, protocol.ReasonMaxDuration, "", ms)
		}

	case PresenceLost:
		switch {
		case !r.Live():
			return r, false, nil
		case role == protocol.RoleCaller && !r.active():
			for i := range next.Legs {
				if l := &next.Legs[i]; l.Ringing() {
					l.State, l.Reason, l.EndedAt, l.Deadline = protocol.StateFailed, protocol.ReasonPeerOffline, ms, 0
					next.touch(l.User)
				}
			}
			fail(&next, protocol.ReasonPeerOffline, ms)
			return next, true, nil
		case role == protocol.RoleCaller && r.CallerLeftAt == 0:
			next.CallerLeftAt = ms
		case role == protocol.RoleCallee && leg.Joined():
			leg.EndedAt, leg.Reason = ms, protocol.ReasonPeerOffline
			next.touch(a.User)
		default:
			// Out of the call already, or a callee that is merely offline
			// while its leg rings: it keeps ringing for the offline window.
			return r, false, nil
		}
		if next.InCall() < 2 {
			endCall(&next, protocol.ReasonPeerOffline, a.User, ms)
		}

	default:
		return r, false, protocol.Errorf(protocol.CodeInternal, "unknown action %d", a.Kind)
	}

	settle(&next, ms)
	armTimer(&next, r)
	return next, true, nil
}

// endCall ends a JOIN call: the callees still in it are out with the
// call's reason, those still ringing stop (CALL_ENDED).
func endCall(r *Record, reason protocol.Reason, by string, ms int64) {
	r.CallState, r.Reason, r.EndedBy, r.EndedAt, r.Deadline, r.CallDeadline = protocol.CallEnded, reason, by, ms, 0, 0
	for i := range r.Legs {
		switch l := &r.Legs[i]; {
		case l.Joined():
			l.EndedAt, l.Reason = ms, reason
			r.touch(l.User)
		case l.Ringing():
			l.State, l.Reason, l.EndedAt, l.Deadline = protocol.StateCanceled, protocol.ReasonCallEnded, ms, 0
			r.touch(l.User)
		}
	}
}

// settle derives a group invitation's own state from its legs: while no
// call is on, it rings (SENT, or RECEIVED once a device of any callee
// acknowledged) until its last leg stops ringing, and then ends REFUSED if
// every callee refused, FAILED otherwise (with the reason of the callee
// that got furthest: INVITATION_EXPIRE, PEER_NO_RESPONSE, PEER_OFFLINE).
// Its deadline is the earliest of its ringing legs' and its call's.
func settle(r *Record, ms int64) {
	if r.State.Terminal() && !r.active() {
		return // ended (or a FIRST call, which the 1:1 machine runs)
	}
	var deadline int64
	earlier := func(d int64) {
		if d != 0 && (deadline == 0 || d < deadline) {
			deadline = d
		}
	}
	ringing, refused, received := false, 0, false
	best := protocol.ReasonNone
	rank := map[protocol.Reason]int{protocol.ReasonPeerOffline: 1, protocol.ReasonPeerNoResponse: 2, protocol.ReasonInvitationExpire: 3}
	for i := range r.Legs {
		l := &r.Legs[i]
		received = received || l.ReceivedAt != 0
		switch {
		case l.Ringing():
			ringing = true
			earlier(l.Deadline)
		case l.State == protocol.StateRefused:
			refused++
		case l.State == protocol.StateFailed && rank[l.Reason] > rank[best]:
			best = l.Reason
		}
	}
	if r.active() {
		earlier(r.CallDeadline)
		r.Deadline = deadline
		return
	}
	if r.State == protocol.StateAccepted { // a JOIN call that ended
		r.Deadline = 0
		return
	}
	switch {
	case ringing:
		r.State, r.Deadline = protocol.StateSent, deadline
		if received {
			r.State = protocol.StateReceived
		}
	case refused == len(r.Legs):
		r.State, r.EndedAt, r.Deadline = protocol.StateRefused, ms, 0
	default:
		if best == protocol.ReasonNone {
			best = protocol.ReasonPeerOffline
		}
		fail(r, best, ms)
	}
}

// legEnded is the error for acting on a leg that no longer rings.
func legEnded(r Record, l *protocol.Leg) error {
	if l.Reason == protocol.ReasonAnsweredElsewhere {
		e := protocol.Errorf(protocol.CodeAlreadyAccept, "invitation %s was answered by another callee", r.ID)
		e.State = l.State
		return e
	}
	e := protocol.Errorf(protocol.CodeAlreadyEnd, "invitation %s already ended for %s (%s %s)", r.ID, l.User, l.State, l.Reason)
	e.State = l.State
	return e
}

// notInCall is the error for leaving a call one is not in (twice, say).
func notInCall(r Record, user string) error {
	e := protocol.Errorf(protocol.CodeAlreadyEnd, "%s is not in the call of invitation %s (left already)", user, r.ID)
	e.State = r.State
	return e
}

// applyLoser is Apply for a FIRST invitation's callee that did not win:
// its leg ended when the winner accepted (a presence loss changes nothing).
func applyLoser(r Record, a Action, l *protocol.Leg) (Record, bool, error) {
	if a.Kind == PresenceLost {
		return r, false, nil
	}
	return r, false, legEnded(r, l)
}

// HoldsLine reports whether r holds user's line (user a party): a line
// claim keeps its user busy exactly while this is true, so an
// invitation's end — or a callee's leg's, or a party leaving a JOIN call —
// frees the line with no write to it.
func HoldsLine(r Record, user string) bool {
	if !HoldsLines(r) {
		return false
	}
	switch {
	case user == r.Caller:
		return r.CallerLeftAt == 0
	case !r.Group() || user == r.Callee:
		return r.RoleOf(user) != ""
	case r.Callee != "": // a FIRST invitation's losers
		return false
	}
	l := r.Leg(user)
	return l != nil && l.Live()
}
