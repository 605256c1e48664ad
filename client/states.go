package client

import "github.com/ringer-dev/ringer/protocol"

// LocalInvitationState is Agora's caller-side state, with Agora's values.
type LocalInvitationState int

// Caller states (Agora LOCAL_INVITATION_STATE_*).
const (
	LocalIdle             LocalInvitationState = 0
	LocalSentToRemote     LocalInvitationState = 1
	LocalReceivedByRemote LocalInvitationState = 2
	LocalAcceptedByRemote LocalInvitationState = 3
	LocalRefusedByRemote  LocalInvitationState = 4
	LocalCanceled         LocalInvitationState = 5
	LocalFailure          LocalInvitationState = 6
)

func (s LocalInvitationState) String() string {
	switch s {
	case LocalIdle:
		return "IDLE"
	case LocalSentToRemote:
		return "SENT_TO_REMOTE"
	case LocalReceivedByRemote:
		return "RECEIVED_BY_REMOTE"
	case LocalAcceptedByRemote:
		return "ACCEPTED_BY_REMOTE"
	case LocalRefusedByRemote:
		return "REFUSED_BY_REMOTE"
	case LocalCanceled:
		return "CANCELED"
	case LocalFailure:
		return "FAILURE"
	}
	return "UNKNOWN"
}

// RemoteInvitationState is Agora's callee-side state, with Agora's values.
type RemoteInvitationState int

// Callee states (Agora REMOTE_INVITATION_STATE_*).
const (
	RemoteIdle              RemoteInvitationState = 0
	RemoteReceived          RemoteInvitationState = 1
	RemoteAcceptSentToLocal RemoteInvitationState = 2
	RemoteRefused           RemoteInvitationState = 3
	RemoteAccepted          RemoteInvitationState = 4
	RemoteCanceled          RemoteInvitationState = 5
	RemoteFailure           RemoteInvitationState = 6
)

func (s RemoteInvitationState) String() string {
	switch s {
	case RemoteIdle:
		return "IDLE"
	case RemoteReceived:
		return "INVITATION_RECEIVED"
	case RemoteAcceptSentToLocal:
		return "ACCEPT_SENT_TO_LOCAL"
	case RemoteRefused:
		return "REFUSED"
	case RemoteAccepted:
		return "ACCEPTED"
	case RemoteCanceled:
		return "CANCELED"
	case RemoteFailure:
		return "FAILURE"
	}
	return "UNKNOWN"
}

// LocalState maps a broker state to the caller's Agora state.
func LocalState(s protocol.State) LocalInvitationState {
	switch s {
	case protocol.StateSent:
		return LocalSentToRemote
	case protocol.StateReceived:
		return LocalReceivedByRemote
	case protocol.StateAccepting, protocol.StateAccepted:
		return LocalAcceptedByRemote
	case protocol.StateRefused:
		return LocalRefusedByRemote
	case protocol.StateCanceled:
		return LocalCanceled
	case protocol.StateFailed:
		return LocalFailure
	}
	return LocalIdle
}

// RemoteState maps a broker state to the callee's Agora state.
func RemoteState(s protocol.State) RemoteInvitationState {
	switch s {
	case protocol.StateSent, protocol.StateReceived:
		return RemoteReceived
	case protocol.StateAccepting:
		return RemoteAcceptSentToLocal
	case protocol.StateAccepted:
		return RemoteAccepted
	case protocol.StateRefused:
		return RemoteRefused
	case protocol.StateCanceled:
		return RemoteCanceled
	case protocol.StateFailed:
		return RemoteFailure
	}
	return RemoteIdle
}

// Agora error codes of failures (LOCAL_INVITATION_ERR_* / REMOTE_INVITATION_ERR_*).
const (
	LocalErrPeerOffline      = 1
	LocalErrPeerNoResponse   = 2
	LocalErrInvitationExpire = 3
	LocalErrNotLoggedIn      = 4

	RemoteErrPeerOffline      = 1
	RemoteErrAcceptFailure    = 2
	RemoteErrInvitationExpire = 3
)

// AgoraCode returns the numeric Agora failure code of a reason, for the
// caller (local=true) or the callee; 0 if Agora has none (e.g. BUSY, which
// Agora expresses as a refusal with response "busy").
func AgoraCode(r protocol.Reason, local bool) int {
	switch r {
	case protocol.ReasonPeerOffline:
		return 1
	case protocol.ReasonPeerNoResponse:
		if local {
			return LocalErrPeerNoResponse
		}
	case protocol.ReasonInvitationExpire:
		return 3
	case protocol.ReasonAcceptFailure:
		if !local {
			return RemoteErrAcceptFailure
		}
	}
	return 0
}
