package protocol

// Group invitations: one caller, several callees, each with a Leg of its
// own (docs/protocol.md, "Group invitations").

// Mode is how a group invitation becomes a call; "" is a 1:1 invitation.
type Mode string

// Group modes.
const (
	ModeOne   Mode = ""      // 1:1: one callee (Invitation.Callee)
	ModeFirst Mode = "FIRST" // first accept wins: a 1:1 call with whoever accepts first; the others stop ringing (ANSWERED_ELSEWHERE)
	ModeJoin  Mode = "JOIN"  // everyone who accepts joins one call, which lives while at least two parties are in it
)

// Valid reports whether m is a known mode.
func (m Mode) Valid() bool { return m == ModeOne || m == ModeFirst || m == ModeJoin }

// DefaultMaxCallees is the default bound on a group's callees (a broker
// may be configured lower or higher, up to MaxCallees).
const (
	DefaultMaxCallees = 16
	MaxCallees        = 32
	// MaxLegResponseLen bounds a group callee's response (a 1:1 callee's
	// is MaxResponseLen): every leg travels in every view of a group.
	MaxLegResponseLen = 256
)

// Leg is one callee of a group invitation: its own state, with the same
// states and reasons as a 1:1 invitation, plus:
//
//   - CANCELED, ANSWERED_ELSEWHERE: another callee accepted first (FIRST);
//   - CANCELED, CALL_ENDED: the call ended before this callee answered (JOIN);
//   - ACCEPTED with EndedAt set: the callee was in the call and is no more,
//     Reason LEFT (it hung up), PEER_OFFLINE (its presence was lost),
//     HANGUP (the others left: the call ended around it) or MAX_DURATION.
type Leg struct {
	User       string `msgpack:"user" json:"user"`
	Device     string `msgpack:"device,omitempty" json:"device,omitempty"` // the device that acted last
	State      State  `msgpack:"state" json:"state"`
	Reason     Reason `msgpack:"reason,omitempty" json:"reason,omitempty"`
	Response   string `msgpack:"response,omitempty" json:"response,omitempty"`
	InvitedBy  string `msgpack:"invitedBy,omitempty" json:"invitedBy,omitempty"` // who added the callee to a live JOIN invitation ("": the caller, at send)
	CreatedAt  int64  `msgpack:"createdAt" json:"createdAt"`
	ReceivedAt int64  `msgpack:"receivedAt,omitempty" json:"receivedAt,omitempty"`
	AnsweredAt int64  `msgpack:"answeredAt,omitempty" json:"answeredAt,omitempty"` // accept (join) or refuse
	EndedAt    int64  `msgpack:"endedAt,omitempty" json:"endedAt,omitempty"`       // stopped ringing without joining, or left the call
	Deadline   int64  `msgpack:"deadline,omitempty" json:"deadline,omitempty"`
}

// Ringing reports whether the leg still rings.
func (l *Leg) Ringing() bool { return l.State == StateSent || l.State == StateReceived }

// Joined reports whether the leg's callee is in the call now (JOIN), or won
// it (FIRST).
func (l *Leg) Joined() bool { return l.State == StateAccepted && l.EndedAt == 0 }

// Live reports whether the leg holds its callee's line: it rings, or its
// callee is in the call.
func (l *Leg) Live() bool { return l.Ringing() || l.Joined() }

// Group reports whether inv is a group invitation.
func (inv *Invitation) Group() bool { return inv.Mode != ModeOne }

// Leg returns user's leg of a group invitation, or nil.
func (inv *Invitation) Leg(user string) *Leg {
	for i := range inv.Legs {
		if inv.Legs[i].User == user {
			return &inv.Legs[i]
		}
	}
	return nil
}

// Callees lists a group invitation's callees, in the order they were
// invited (a 1:1 invitation's one callee).
func (inv *Invitation) Callees() []string {
	if !inv.Group() {
		return []string{inv.Callee}
	}
	out := make([]string, len(inv.Legs))
	for i := range inv.Legs {
		out[i] = inv.Legs[i].User
	}
	return out
}

// InCall counts the parties in a JOIN invitation's call now: the caller
// unless it left, and every joined callee.
func (inv *Invitation) InCall() int {
	n := 0
	if inv.CallerLeftAt == 0 {
		n++
	}
	for i := range inv.Legs {
		if inv.Legs[i].Joined() {
			n++
		}
	}
	return n
}

// For returns the view of inv that user, one of its parties, is given.
// The caller (and anyone of a 1:1 invitation) sees inv as it is. A callee
// of a group sees its own leg as a 1:1 invitation from the caller to it
// (Callee is the user; State, Reason, device and times are its leg's),
// with Mode and Legs for apps that show the others; so an app written for
// 1:1 invitations handles a group's callee side unchanged. The winner of
// a FIRST invitation sees the invitation itself, which is its call.
func (inv Invitation) For(user string) Invitation {
	if !inv.Group() || user == inv.Caller || user == inv.Callee {
		return inv
	}
	l := inv.Leg(user)
	if l == nil {
		return inv
	}
	v := inv
	v.Callee, v.CalleeDevice, v.Response = l.User, l.Device, l.Response
	v.State, v.Reason, v.CallState, v.EndedBy = l.State, l.Reason, CallNone, ""
	v.ReceivedAt, v.AnsweredAt, v.EndedAt, v.Deadline = l.ReceivedAt, l.AnsweredAt, l.EndedAt, l.Deadline
	if l.State == StateAccepted { // JOIN: in the call, or out of it
		v.CallState, v.Deadline = CallActive, inv.Deadline
		if l.EndedAt != 0 {
			v.CallState, v.Deadline = CallEnded, 0
			if l.Reason == ReasonLeft {
				v.EndedBy = user
			} else {
				v.EndedBy = inv.EndedBy
			}
		}
	}
	return v
}
