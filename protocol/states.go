package protocol

// State is the broker-side state of an invitation. On the wire it is the
// string itself.
type State string

// Invitation states (docs/protocol.md, "States").
const (
	StateSent      State = "SENT"      // created, no callee device acknowledged yet
	StateReceived  State = "RECEIVED"  // a callee device acknowledged receipt
	StateAccepting State = "ACCEPTING" // callee accepted; waiting for the caller's ack
	StateAccepted  State = "ACCEPTED"  // terminal: the caller acknowledged; a call exists
	StateRefused   State = "REFUSED"   // terminal: refused by the callee, or busy
	StateCanceled  State = "CANCELED"  // terminal: canceled by the caller
	StateFailed    State = "FAILED"    // terminal: see Reason
)

// States lists every invitation state.
var States = []State{StateSent, StateReceived, StateAccepting, StateAccepted, StateRefused, StateCanceled, StateFailed}

// Terminal reports whether no further invitation transition is possible
// (a call that follows ACCEPTED has its own CallState).
func (s State) Terminal() bool {
	switch s {
	case StateAccepted, StateRefused, StateCanceled, StateFailed:
		return true
	}
	return false
}

// Valid reports whether s is one of States.
func (s State) Valid() bool {
	for _, k := range States {
		if k == s {
			return true
		}
	}
	return false
}

// CallState is the state of the call an accepted invitation became.
type CallState string

// Call states. Empty until the invitation is ACCEPTED.
const (
	CallNone   CallState = ""
	CallActive CallState = "ACTIVE"
	CallEnded  CallState = "ENDED"
)

// Reason qualifies a terminal state: why it failed, why it was refused, why a
// call ended.
type Reason string

// Reasons (docs/protocol.md, "Reasons").
const (
	ReasonNone              Reason = ""
	ReasonBusy              Reason = "BUSY"               // REFUSED: the callee's line was busy
	ReasonPeerOffline       Reason = "PEER_OFFLINE"       // FAILED: callee offline for the offline window, or the caller's presence was lost; call: a party's presence was lost
	ReasonPeerNoResponse    Reason = "PEER_NO_RESPONSE"   // FAILED: callee online but no device acknowledged
	ReasonInvitationExpire  Reason = "INVITATION_EXPIRE"  // FAILED: received, nobody acted in time
	ReasonAcceptFailure     Reason = "ACCEPT_FAILURE"     // FAILED: the caller never acknowledged the accept
	ReasonHangup            Reason = "HANGUP"             // call ended by a party
	ReasonMaxDuration       Reason = "MAX_DURATION"       // call ended by the broker's maximum call duration
	ReasonAnsweredElsewhere Reason = "ANSWERED_ELSEWHERE" // group leg CANCELED: another callee accepted first (FIRST)
	ReasonCallEnded         Reason = "CALL_ENDED"         // group leg CANCELED: the call ended before this callee answered (JOIN)
	ReasonLeft              Reason = "LEFT"               // group leg (or JOIN caller): left the call, which went on without it
	ReasonMerged            Reason = "MERGED"             // CANCELED: the callee was calling the caller at that moment (glare); the caller accepted that invitation instead (mergedInto)
)

// EventType names an event published on a user's events subject.
type EventType string

// Events (docs/protocol.md, "Events").
const (
	EventInvited        EventType = "Invited"        // to callee: a new invitation (Agora RemoteInvitationReceived)
	EventReceivedByPeer EventType = "ReceivedByPeer" // to caller: a callee device acknowledged
	EventAccepting      EventType = "Accepting"      // to callee: a device accepted; waiting for the caller
	EventAccepted       EventType = "Accepted"       // to caller: the callee accepted (with response); to callee: the caller confirmed, the call exists
	EventRefused        EventType = "Refused"        // to both
	EventCanceled       EventType = "Canceled"       // to both
	EventFailure        EventType = "Failure"        // to both, with reason
	EventCallEnded      EventType = "CallEnded"      // to both, with reason
	EventGroupUpdated   EventType = "GroupUpdated"   // group: to the caller and the callees in the call, when a leg changed and no other event says so
)

// Role says which side of an invitation a user is on.
type Role string

// Roles.
const (
	RoleCaller Role = "caller"
	RoleCallee Role = "callee"
)
