// Package lifecycle is the invitation state machine: pure functions from a
// record, an action and the time to the next record or a typed error. It does
// no I/O; the broker persists what it returns with a compare-and-set.
package lifecycle

import (
	"slices"
	"time"

	"github.com/ringer-dev/ringer/protocol"
)

// Record is what the broker stores under inv.<id>: the wire view plus the
// bookkeeping the broker needs to resolve the invitation by itself.
type Record struct {
	protocol.Invitation `msgpack:",inline"`
	// Timeouts in force for this invitation (defaults merged with overrides).
	Timeouts Timeouts `msgpack:"timeouts"`
	// TimerAt is when the durable timer last armed for this invitation fires
	// (Unix ms); 0 if none was armed.
	TimerAt int64 `msgpack:"timerAt,omitempty"`
	// Rearm asks the projector to (re)arm the durable timer at TimerAt for this
	// revision. It is set only when the new deadline is earlier than any timer
	// already armed, so most transitions cost no timer write.
	Rearm bool `msgpack:"rearm,omitempty"`
	// Quiet marks a revision that only re-arms the timer: nothing happened
	// that the parties need to hear about, so it produces no events.
	Quiet bool `msgpack:"quiet,omitempty"`
	// Push: the callee had push targets when the invitation was sent, so
	// the projector looks for them (package push); copied from the line.
	Push bool `msgpack:"push,omitempty"`
	// Blocked: refused because the callee blocked the caller. On the wire
	// it is a busy refusal (the caller is not told); the callee's history
	// does not list it.
	Blocked bool `msgpack:"blocked,omitempty"`
	// Chain: a step per revision of this invitation, its own last (see
	// Step); kept by store.PutInvitation.
	Chain []Step `msgpack:"chain,omitempty"`
	// Touched: the group callees whose leg this revision changed (they are
	// told; the others are not disturbed again).
	Touched []string `msgpack:"touched,omitempty"`
	// CallDeadline: when a JOIN call reaches its maximum duration (Unix
	// ms; 0: none). Deadline is the earliest of it and the ringing legs'.
	CallDeadline int64 `msgpack:"callDeadline,omitempty"`
	// PushTo: the group callees whose lines had push targets at the send
	// (Push for each leg).
	PushTo []string `msgpack:"pushTo,omitempty"`
}

// Timeouts are the durations that bound each waiting state.
type Timeouts struct {
	Offline     time.Duration `msgpack:"offline"`               // SENT → PEER_OFFLINE / PEER_NO_RESPONSE
	Expire      time.Duration `msgpack:"expire"`                // RECEIVED → INVITATION_EXPIRE
	Accept      time.Duration `msgpack:"accept"`                // ACCEPTING → ACCEPT_FAILURE
	MaxDuration time.Duration `msgpack:"maxDuration,omitempty"` // ACCEPTED call → MAX_DURATION; 0 = unlimited
}

// Kind is what happened to an invitation.
type Kind int

// Actions. Zero is invalid.
const (
	Ack          Kind = iota + 1 // a callee device acknowledged receipt
	Accept                       // a callee device accepted
	Refuse                       // a callee device refused
	Cancel                       // the caller canceled
	AckAccept                    // the caller acknowledged the accept
	Hangup                       // a party hung up the call
	Timeout                      // the durable timer fired
	PresenceLost                 // a party's last session vanished
)

var kindNames = map[Kind]string{Ack: "ack", Accept: "accept", Refuse: "refuse", Cancel: "cancel",
	AckAccept: "ackaccept", Hangup: "hangup", Timeout: "timeout", PresenceLost: "presence-lost"}

func (k Kind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return "invalid"
}

// Kinds lists every action, for exhaustive tests.
var Kinds = []Kind{Ack, Accept, Refuse, Cancel, AckAccept, Hangup, Timeout, PresenceLost}

// Action is one attempt to change an invitation.
type Action struct {
	Kind     Kind
	User     string // acting user (or the user whose presence was lost)
	Device   string // acting device
	Response string // Accept, Refuse
	// CalleeOnline tells a Timeout in SENT whether the callee had a live
	// session (PEER_NO_RESPONSE) or not (PEER_OFFLINE).
	CalleeOnline bool
	// Online lists, for a Timeout of a group invitation, the callees with
	// SENT legs that had a live session.
	Online []string
}

// New builds the record of a freshly sent invitation.
func New(id, caller, callerDevice, callee, content, channelID string, t Timeouts, now time.Time) Record {
	ms := now.UnixMilli()
	r := Record{
		Invitation: protocol.Invitation{
			ID: id, Caller: caller, CallerDevice: callerDevice, Callee: callee,
			Content: content, ChannelID: channelID,
			State: protocol.StateSent, CreatedAt: ms,
			Deadline: now.Add(t.Offline).UnixMilli(),
		},
		Timeouts: t,
	}
	r.TimerAt, r.Rearm = r.Deadline, true
	return r
}

// NewBusy builds the record of an invitation refused at once because the
// callee's line was busy. It never rang and holds no line. It keeps no
// content: nobody will read it (the callee is not told, and the caller has
// its own).
func NewBusy(id, caller, callerDevice, callee, channelID string, now time.Time) Record {
	ms := now.UnixMilli()
	return Record{Invitation: protocol.Invitation{
		ID: id, Caller: caller, CallerDevice: callerDevice, Callee: callee,
		ChannelID: channelID,
		State:     protocol.StateRefused, Reason: protocol.ReasonBusy, Response: "busy",
		CreatedAt: ms, AnsweredAt: ms, EndedAt: ms,
	}}
}

// NewMerged builds the record of an invitation that did not ring because
// its callee was calling the caller at that moment (glare): the send
// accepted the callee's invitation, into, instead. Like a busy refusal it
// never rang and holds no line; it tells the caller where the call went.
func NewMerged(id, caller, callerDevice, callee, channelID, into string, now time.Time) Record {
	ms := now.UnixMilli()
	return Record{Invitation: protocol.Invitation{
		ID: id, Caller: caller, CallerDevice: callerDevice, Callee: callee,
		ChannelID: channelID, MergedInto: into,
		State: protocol.StateCanceled, Reason: protocol.ReasonMerged,
		CreatedAt: ms, EndedAt: ms,
	}}
}

// Apply computes the effect of a on r at time now. It returns the next record
// and changed=true when something must be written; changed=false with a nil
// error means the action already took effect (an idempotent retry) and r is
// the result. Errors are *protocol.Error.
func Apply(r Record, a Action, now time.Time) (next Record, changed bool, err error) {
	if r.Group() {
		if r.Callee == "" { // a FIRST invitation that is no 1:1 call yet, or a JOIN one
			return applyGroup(r, a, now)
		}
		if l := r.Leg(a.User); l != nil && a.User != r.Callee {
			return applyLoser(r, a, l)
		}
	}
	role := r.RoleOf(a.User)
	if a.Kind != Timeout && role == "" {
		return r, false, protocol.Errorf(protocol.CodeForbidden, "%s is not a party to invitation %s", a.User, r.ID)
	}
	next = r
	next.Rearm, next.Quiet, next.Touched = false, false, nil
	ms := now.UnixMilli()

	switch a.Kind {
	case Ack:
		if role != protocol.RoleCallee {
			return r, false, forbidden(a, "only the callee acknowledges receipt")
		}
		switch r.State {
		case protocol.StateSent:
			next.State, next.ReceivedAt, next.CalleeDevice = protocol.StateReceived, ms, a.Device
			next.Deadline = now.Add(r.Timeouts.Expire).UnixMilli()
		case protocol.StateReceived, protocol.StateAccepting, protocol.StateAccepted:
			return r, false, nil // late or repeated ack: harmless
		default:
			return r, false, alreadyEnd(r)
		}

	case Accept:
		if role != protocol.RoleCallee {
			return r, false, forbidden(a, "only the callee accepts")
		}
		switch r.State {
		case protocol.StateSent, protocol.StateReceived:
			next.State, next.Response, next.CalleeDevice = protocol.StateAccepting, a.Response, a.Device
			next.AnsweredAt = ms
			if next.ReceivedAt == 0 {
				next.ReceivedAt = ms // accepting implies having received (SPEC §2 rule 5)
			}
			next.Deadline = now.Add(r.Timeouts.Accept).UnixMilli()
		case protocol.StateAccepting, protocol.StateAccepted:
			if r.CalleeDevice == a.Device && r.Response == a.Response {
				return r, false, nil
			}
			return r, false, alreadyAccept(r)
		default:
			return r, false, alreadyEnd(r)
		}

	case Refuse:
		if role != protocol.RoleCallee {
			return r, false, forbidden(a, "only the callee refuses")
		}
		switch r.State {
		case protocol.StateSent, protocol.StateReceived:
			next.State, next.Response, next.CalleeDevice = protocol.StateRefused, a.Response, a.Device
			next.AnsweredAt, next.EndedAt, next.Deadline = ms, ms, 0
		case protocol.StateRefused:
			if r.Reason == protocol.ReasonNone && r.CalleeDevice == a.Device {
				return r, false, nil
			}
			return r, false, alreadyEnd(r)
		case protocol.StateAccepting, protocol.StateAccepted:
			return r, false, alreadyAccept(r)
		default:
			return r, false, alreadyEnd(r)
		}

	case Cancel:
		if role != protocol.RoleCaller {
			return r, false, forbidden(a, "only the caller cancels")
		}
		switch r.State {
		case protocol.StateSent, protocol.StateReceived:
			next.State, next.EndedAt, next.Deadline = protocol.StateCanceled, ms, 0
		case protocol.StateCanceled:
			return r, false, nil
		case protocol.StateAccepting, protocol.StateAccepted:
			return r, false, alreadyAccept(r)
		default:
			return r, false, alreadyEnd(r)
		}

	case AckAccept:
		if role != protocol.RoleCaller {
			return r, false, forbidden(a, "only the caller acknowledges an accept")
		}
		switch r.State {
		case protocol.StateAccepting:
			next.State, next.CallState, next.EndedAt = protocol.StateAccepted, protocol.CallActive, 0
			next.Deadline = 0
			if r.Timeouts.MaxDuration > 0 {
				next.Deadline = now.Add(r.Timeouts.MaxDuration).UnixMilli()
			}
		case protocol.StateAccepted:
			return r, false, nil
		case protocol.StateSent, protocol.StateReceived:
			return r, false, protocol.Errorf(protocol.CodeInvalidArgument, "invitation %s is not accepted yet", r.ID)
		default:
			return r, false, alreadyEnd(r)
		}

	case Hangup:
		switch {
		case r.State == protocol.StateAccepted && r.CallState == protocol.CallActive:
			next.CallState, next.Reason, next.EndedBy = protocol.CallEnded, protocol.ReasonHangup, a.User
			next.EndedAt, next.Deadline = ms, 0
		case r.State == protocol.StateAccepting:
			// Hung up before the caller's ack arrived: the call starts and ends
			// at once, and a late ackaccept finds it over (an idempotent no-op).
			next.State, next.CallState, next.Reason, next.EndedBy = protocol.StateAccepted, protocol.CallEnded, protocol.ReasonHangup, a.User
			next.EndedAt, next.Deadline = ms, 0
		case r.State == protocol.StateAccepted && r.CallState == protocol.CallEnded:
			return r, false, nil // the call is over: hanging up again is a no-op
		case r.State.Terminal():
			return r, false, alreadyEnd(r)
		default:
			return r, false, protocol.Errorf(protocol.CodeInvalidArgument,
				"invitation %s is %s, not a call: cancel or refuse it", r.ID, r.State)
		}

	case Timeout:
		if r.Deadline == 0 || !r.Live() {
			return r, false, nil // resolved meanwhile: a stale timer
		}
		if ms < r.Deadline {
			return r, false, ErrNotDue
		}
		switch r.State {
		case protocol.StateSent:
			reason := protocol.ReasonPeerOffline
			if a.CalleeOnline {
				reason = protocol.ReasonPeerNoResponse
			}
			fail(&next, reason, ms)
		case protocol.StateReceived:
			fail(&next, protocol.ReasonInvitationExpire, ms)
		case protocol.StateAccepting:
			fail(&next, protocol.ReasonAcceptFailure, ms)
		case protocol.StateAccepted:
			next.CallState, next.Reason, next.EndedAt, next.Deadline = protocol.CallEnded, protocol.ReasonMaxDuration, ms, 0
		}

	case PresenceLost:
		switch {
		case !r.Live():
			return r, false, nil
		case r.State == protocol.StateAccepted:
			next.CallState, next.Reason, next.EndedBy = protocol.CallEnded, protocol.ReasonPeerOffline, a.User
			next.EndedAt, next.Deadline = ms, 0
		case role == protocol.RoleCaller || r.State == protocol.StateAccepting:
			fail(&next, protocol.ReasonPeerOffline, ms)
		default:
			// The callee went offline while SENT/RECEIVED: the invitation keeps
			// waiting for the offline window (store-and-forward).
			return r, false, nil
		}

	default:
		return r, false, protocol.Errorf(protocol.CodeInternal, "unknown action %d", a.Kind)
	}

	if r.Group() && !next.Live() {
		// A FIRST invitation's call (or its accept) ended: so did the
		// winner's leg, the same way — ACCEPTED with the call's end, or
		// FAILED if the call never started (ACCEPT_FAILURE, PEER_OFFLINE).
		next.Legs = slices.Clone(r.Legs)
		if l := next.Leg(r.Callee); l != nil {
			l.State, l.EndedAt, l.Reason, l.Deadline = next.State, next.EndedAt, next.Reason, 0
		}
	}
	armTimer(&next, r)
	return next, true, nil
}

// NeedsTimer reports whether r may still need a durable timer: not once it
// ended (nothing revives a finished record), nor once a 1:1 call started
// with no maximum duration (no later revision of it has a deadline). Any
// committed revision can say so, even one older than the record's latest:
// a timer asked for before it need not be stored (store.TimerBatcher), and
// one that fires is dropped without a read.
func (r Record) NeedsTimer() bool {
	return r.Live() && (r.Deadline != 0 || r.Group())
}

// ErrNotDue is returned by a Timeout that fired before the record's deadline
// (the deadline moved later); the broker re-arms the timer.
var ErrNotDue = protocol.Errorf(protocol.CodeInternal, "timer not due yet")

// Rearmed returns r with its timer re-armed at its current deadline, for a
// timer that fired before the deadline moved past it.
func Rearmed(r Record) Record {
	r.TimerAt, r.Rearm, r.Quiet = r.Deadline, true, true
	return r
}

// armTimer decides whether the new deadline needs a timer write: only when it
// is earlier than the timer already armed. A later deadline is caught by the
// armed timer, whose handler re-arms (see Rearmed).
func armTimer(next *Record, prev Record) {
	if next.Deadline == 0 {
		return
	}
	if prev.TimerAt == 0 || next.Deadline < prev.TimerAt {
		next.TimerAt, next.Rearm = next.Deadline, true
	}
}

func fail(r *Record, reason protocol.Reason, ms int64) {
	r.State, r.Reason, r.EndedAt, r.Deadline = protocol.StateFailed, reason, ms, 0
}

func forbidden(a Action, why string) error {
	return protocol.Errorf(protocol.CodeForbidden, "%s may not %s: %s", a.User, a.Kind, why)
}

func alreadyEnd(r Record) error {
	e := protocol.Errorf(protocol.CodeAlreadyEnd, "invitation %s already ended", r.ID)
	e.State = r.State
	return e
}

func alreadyAccept(r Record) error {
	e := protocol.Errorf(protocol.CodeAlreadyAccept, "invitation %s was already accepted", r.ID)
	e.State = r.State
	return e
}
