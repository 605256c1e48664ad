package broker_test

import (
	"testing"
	"time"

	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
)

// The caller's only device vanishes (no logout, no heartbeat) while ringing:
// the callee gets Failure(PEER_OFFLINE) and both lines are freed.
func TestCallerLostWhileRinging(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)
	li := alice.CreateLocalInvitation("bob")
	li.Timeouts = &protocol.Timeouts{OfflineMs: 60000, ExpireMs: 60000} // only presence loss can end it
	if err := li.Send(ctx); err != nil {
		t.Fatal(err)
	}
	bob.Rec.WaitRemote(t, li.ID)
	lost := time.Now()
	alice.Close() // the app died: no logout
	bob.Rec.Wait(t, "RemoteFailure "+li.ID+" PEER_OFFLINE")
	ttl := ringertest.TestConfig().PresenceTTL
	if took := time.Since(lost); took > ttl+2*time.Second {
		t.Errorf("presence loss detected after %s, TTL %s", took, ttl)
	} else {
		t.Logf("presence loss resolved %s after the caller vanished (TTL %s)", took.Round(time.Millisecond), ttl)
	}
	waitFree(t, env, "alice", "bob")
}

// A party of a call vanishes: the call ends for the other and both lines free.
func TestPartyLostDuringCall(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)
	li := alice.Invite(t, "bob")
	if err := bob.Rec.WaitRemote(t, li.ID).Accept(ctx, ""); err != nil {
		t.Fatal(err)
	}
	bob.Rec.Wait(t, "RemoteAccepted "+li.ID)
	bob.Close()
	alice.Rec.Wait(t, "CallEnded "+li.ID+" PEER_OFFLINE")
	inv, _ := alice.Invitation(li.ID)
	if inv.EndedBy != "bob" {
		t.Errorf("endedBy %q, want bob", inv.EndedBy)
	}
	waitFree(t, env, "alice", "bob")
}

// An invitation to an offline callee waits; the callee's login within the
// offline window delivers it at once (store-and-forward).
func TestStoreAndForward(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	ctx := ringertest.Ctx(t)
	li := alice.CreateLocalInvitation("bob")
	li.Content = "while you were away"
	li.Timeouts = &protocol.Timeouts{OfflineMs: 30000}
	if err := li.Send(ctx); err != nil {
		t.Fatal(err)
	}
	bob := env.NewClient("bob", "phone")
	if err := bob.Login(ctx); err != nil {
		t.Fatal(err)
	}
	// Delivered by the login reply itself, before Login returned.
	if bob.Rec.Count("RemoteReceived "+li.ID+" while you were away") != 1 {
		t.Fatalf("not delivered at login: %q", bob.Rec.Lines())
	}
	alice.Rec.Wait(t, "ReceivedByPeer "+li.ID)
}

// Logging out of one device while another stays does not touch invitations;
// logging out of the last one resolves them at once.
func TestLogoutLastDevice(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alicePhone := env.Login("alice", "phone")
	aliceLaptop := env.Login("alice", "laptop")
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)
	li := alicePhone.CreateLocalInvitation("bob")
	li.Timeouts = &protocol.Timeouts{OfflineMs: 60000, ExpireMs: 60000}
	if err := li.Send(ctx); err != nil {
		t.Fatal(err)
	}
	bob.Rec.WaitRemote(t, li.ID)
	// Bob's client acknowledges receipt in the background: wait until the
	// caller has seen it, so that the sync below can expect RECEIVED.
	alicePhone.Rec.Wait(t, "ReceivedByPeer "+li.ID)
	if err := aliceLaptop.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	// Still ringing (alice is online on her phone), in contrast with the last logout below.
	if invs, err := bob.Sync(ctx); err != nil || len(invs) != 1 || invs[0].State != protocol.StateReceived {
		t.Fatalf("after one device logged out: %+v %v", invs, err)
	}
	if err := alicePhone.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	bob.Rec.Wait(t, "RemoteFailure "+li.ID+" PEER_OFFLINE")
	waitFree(t, env, "alice", "bob")
}

// A device that missed events (it was not subscribed) recovers them by sync.
func TestSyncRecoversMissedEvents(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)
	li := alice.Invite(t, "bob")
	bob.Rec.WaitRemote(t, li.ID)
	tablet := env.NewClient("bob", "tablet") // never subscribed: missed everything
	invs, err := tablet.Sync(ctx)
	if err != nil || len(invs) != 1 || invs[0].ID != li.ID {
		t.Fatalf("sync: %+v %v", invs, err)
	}
	tablet.Rec.Wait(t, "RemoteReceived "+li.ID)
	// Applying the same views again fires nothing twice.
	if _, err := tablet.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := tablet.Rec.Count("RemoteReceived " + li.ID); n != 1 {
		t.Fatalf("duplicate callbacks after a second sync: %d", n)
	}
}
