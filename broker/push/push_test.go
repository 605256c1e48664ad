package push

import (
	"testing"

	"github.com/ringer-dev/ringer/protocol"
)

func TestKindOf(t *testing.T) {
	long := (DedupeWindow / 2).Milliseconds()
	for _, tc := range []struct {
		inv  protocol.Invitation
		kind protocol.PushKind
		ok   bool
	}{
		{protocol.Invitation{State: protocol.StateSent}, protocol.PushRing, true},
		{protocol.Invitation{State: protocol.StateReceived}, protocol.PushRing, true}, // the same id as SENT's: stored once
		{protocol.Invitation{State: protocol.StateAccepting}, protocol.PushStop, true},
		{protocol.Invitation{State: protocol.StateAccepted, CallState: protocol.CallActive}, protocol.PushStop, true},
		// A call's end asks again only within the dedupe window of its accept.
		{protocol.Invitation{State: protocol.StateAccepted, CallState: protocol.CallEnded, AnsweredAt: 1, EndedAt: 2}, protocol.PushStop, true},
		{protocol.Invitation{State: protocol.StateAccepted, CallState: protocol.CallEnded, AnsweredAt: 1, EndedAt: 1 + long}, "", false},
		{protocol.Invitation{State: protocol.StateRefused}, protocol.PushStop, true},
		{protocol.Invitation{State: protocol.StateRefused, Reason: protocol.ReasonBusy}, "", false}, // never rang
		{protocol.Invitation{State: protocol.StateCanceled}, protocol.PushStop, true},
		{protocol.Invitation{State: protocol.StateCanceled, Reason: protocol.ReasonMerged}, "", false}, // never rang
		{protocol.Invitation{State: protocol.StateFailed, Reason: protocol.ReasonPeerOffline}, protocol.PushStop, true},
	} {
		kind, ok := KindOf(&tc.inv)
		if ok != tc.ok || (ok && kind != tc.kind) {
			t.Errorf("%s/%s/%s: %q %v, want %q %v", tc.inv.State, tc.inv.Reason, tc.inv.CallState, kind, ok, tc.kind, tc.ok)
		}
	}
}

// A RING goes only to devices without a live session; a STOP to all; no
// request when there is nobody to push.
func TestRequestDevices(t *testing.T) {
	inv := &protocol.Invitation{ID: "i", Callee: "bob", Deadline: 42}
	targets := []protocol.PushTarget{{Device: "phone"}, {Device: "tablet"}}
	if r := Request(protocol.PushRing, inv, targets, []string{"phone"}); r == nil || len(r.Devices) != 1 || r.Devices[0].Device != "tablet" ||
		r.ID != "i.ring" || r.Deadline != 42 || r.CollapseKey != "i" || r.User != "bob" {
		t.Fatalf("ring: %+v", r)
	}
	if r := Request(protocol.PushRing, inv, targets, []string{"phone", "tablet"}); r != nil {
		t.Fatalf("ring with every device connected: %+v", r)
	}
	if r := Request(protocol.PushStop, inv, targets, nil); r == nil || len(r.Devices) != 2 || r.ID != "i.stop" || r.Deadline != 0 {
		t.Fatalf("stop: %+v", r)
	}
}
