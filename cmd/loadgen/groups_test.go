package main

import (
	"context"
	"errors"
	"testing"

	"github.com/ringer-dev/ringer/protocol"
)

// The glare check tells two invitations that rang at the same moment (a
// violation) from two that rang one after the other (a send a fault
// delayed past the other's end).
func TestRangTogether(t *testing.T) {
	ended := func(created, ended int64) protocol.Invitation {
		return protocol.Invitation{State: protocol.StateFailed, Reason: protocol.ReasonPeerNoResponse, CreatedAt: created, EndedAt: ended}
	}
	live := func(created int64) protocol.Invitation {
		return protocol.Invitation{State: protocol.StateSent, CreatedAt: created}
	}
	for _, tc := range []struct {
		name string
		x, y protocol.Invitation
		want bool
	}{
		{"both ringing", live(100), live(105), true},
		{"one ended after the other began", ended(100, 200), live(150), true},
		{"the second began after the first ended", ended(100, 200), live(250), false},
		{"both ended, overlapping", ended(100, 200), ended(190, 300), true},
		{"both ended, one after the other", ended(100, 200), ended(200, 300), false},
	} {
		if got := rangTogether(tc.x, tc.y); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
		if got := rangTogether(tc.y, tc.x); got != tc.want {
			t.Errorf("%s (swapped): %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A scenario's end switches on the code of its cancel: a cancel that
// succeeded has none (it was counted as a failure to end, "CLIENT").
func TestErrCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{protocol.Errorf(protocol.CodeAlreadyEnd, "over"), string(protocol.CodeAlreadyEnd)},
		{context.DeadlineExceeded, "TIMEOUT"},
		{errors.New("something else"), "CLIENT"},
	} {
		if got := errCode(tc.err); got != tc.want {
			t.Errorf("errCode(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
