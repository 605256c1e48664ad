package client

import "testing"

// States and connection states print Agora's names, not numbers.
func TestStatesPrintTheirNames(t *testing.T) {
	for _, c := range []struct {
		got  interface{ String() string }
		want string
	}{
		{LocalSentToRemote, "SENT_TO_REMOTE"},
		{LocalFailure, "FAILURE"},
		{RemoteReceived, "INVITATION_RECEIVED"},
		{RemoteAcceptSentToLocal, "ACCEPT_SENT_TO_LOCAL"},
		{ConnectionReconnecting, "RECONNECTING"},
		{ConnectionChangeInterrupted, "INTERRUPTED"},
		{LocalInvitationState(42), "UNKNOWN"},
	} {
		if s := c.got.String(); s != c.want {
			t.Errorf("%#v prints %q, want %q", c.got, s, c.want)
		}
	}
}
