package broker_test

import (
	"errors"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
)

// Line claims are written before their invitation and never released
// explicitly (docs/architecture.md, "Busy lines"). These tests put claims on
// a line by hand — as a sender that died between its two steps would leave
// them — and check what they hold.

// putClaims writes user's line with the given claims, as a fresh record.
func putClaims(t *testing.T, st *store.Store, user string, claims ...store.Claim) {
	t.Helper()
	if _, err := st.Commit(ringertest.Ctx(t), store.PutLine(user, store.Line{Claims: claims}, 0)); err != nil {
		t.Fatal(err)
	}
}

// rings reports whether a send rang its callee: SENT, or already RECEIVED
// when the callee's automatic receipt ack lands before the caller looks.
func rings(inv protocol.Invitation) bool {
	return inv.State == protocol.StateSent || inv.State == protocol.StateReceived
}

// A claim whose invitation was never written (its sender died) keeps the
// callee busy for the claim grace, then frees the line by itself.
func TestAbandonedClaimHoldsForGraceOnly(t *testing.T) {
	cfg := ringertest.TestConfig()
	env := ringertest.Start(t, cfg)
	st := env.Brokers[0].Store()
	alice := env.Login("alice", "phone")
	env.Login("bob", "phone")

	// The claim's time as stored (whole milliseconds): the grace counts from it.
	claimed := time.UnixMilli(time.Now().UnixMilli())
	putClaims(t, st, "bob", store.Claim{ID: "ghost", At: claimed.UnixMilli()})
	inv := alice.Invite(t, "bob").Invitation()
	if time.Since(claimed) < cfg.ClaimGrace && (inv.State != protocol.StateRefused || inv.Reason != protocol.ReasonBusy) {
		t.Fatalf("within the grace, a fresh claim must hold: %+v", inv)
	}
	ringertest.WaitFree(t, st, "bob")
	if time.Since(claimed) < cfg.ClaimGrace {
		t.Fatalf("bob free %s after the claim, grace %s", time.Since(claimed), cfg.ClaimGrace)
	}
	if inv := alice.Invite(t, "bob").Invitation(); !rings(inv) {
		t.Fatalf("after the grace: %+v", inv)
	}
}

// Claims that hold nothing do not make a user busy: an abandoned claim past
// the grace, and a claim of an id that belongs to other users' invitation
// (a send whose id turned out to be taken).
func TestStaleClaimsDoNotHold(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	st := env.Brokers[0].Store()
	alice := env.Login("alice", "phone")
	env.Login("bob", "phone")
	carol := env.Login("carol", "phone")
	env.Login("dave", "phone")

	theirs := carol.Invite(t, "dave").Invitation() // live, between carol and dave
	if !rings(theirs) {
		t.Fatalf("carol→dave: %+v", theirs)
	}
	old := time.Now().Add(-time.Hour).UnixMilli()
	putClaims(t, st, "bob", store.Claim{ID: "abandoned", At: old}, store.Claim{ID: theirs.ID, At: old})
	if busy, _, err := st.Busy(ringertest.Ctx(t), "bob", ringertest.TestConfig().LineRules()); err != nil || busy {
		t.Fatalf("bob busy=%v err=%v", busy, err)
	}
	inv := alice.Invite(t, "bob").Invitation()
	if !rings(inv) {
		t.Fatalf("alice→bob: %+v", inv)
	}
	// The send dropped the stale claims from bob's line and added its own.
	l, _, err := st.GetLineFresh(ringertest.Ctx(t), "bob")
	if err != nil || len(l.Claims) != 1 || l.Claims[0].ID != inv.ID {
		t.Fatalf("bob's line after the send: %+v %v", l, err)
	}
}

// With both lines in the record cache, a send claims them beside the
// caller's session read instead of after it. When the caller turns out not
// to be logged in, the send takes its claims back: the callee is not left
// busy for the claim grace by a send that was refused.
func TestRefusedSendTakesBackItsClaims(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.PresenceTTL = 30 * time.Second
	cfg.ClaimGrace = time.Minute // a claim left behind would hold for the whole test
	env := ringertest.Start(t, cfg)
	st := env.Brokers[0].Store()
	alice := env.Login("alice", "phone", client.WithoutHeartbeat())
	bob := env.Login("bob", "phone")
	carol := env.Login("carol", "phone")
	ctx := ringertest.Ctx(t)

	// A call, so that the broker has both lines cached.
	li := alice.Invite(t, "bob")
	bob.Rec.WaitRemote(t, li.ID)
	if err := li.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	bob.Rec.Wait(t, "RemoteCanceled "+li.ID)
	if _, _, ok := st.CachedLine("bob"); !ok {
		t.Fatal("bob's line is not cached: the test would not take the claim-beside-the-read path")
	}

	// alice's session ends; her device sends anyway.
	if err := st.DeleteSession(ctx, "alice", "phone"); err != nil {
		t.Fatal(err)
	}
	refused := alice.CreateLocalInvitation("bob")
	if err := refused.Send(ctx); !errors.Is(err, client.ErrNotLoggedIn) {
		t.Fatalf("send without a session: %v, want NOT_LOGGEDIN", err)
	}
	for _, user := range []string{"alice", "bob"} {
		line, _, err := st.GetLineFresh(ctx, user)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
		for _, c := range line.Claims {
			if c.ID == refused.ID {
				t.Errorf("%s's line keeps the refused send's claim %+v", user, c)
			}
		}
	}
	// bob is free at once.
	lc := carol.Invite(t, "bob")
	if inv, _ := carol.Invitation(lc.ID); inv.State != protocol.StateSent && inv.State != protocol.StateReceived {
		t.Fatalf("carol → bob: %s %s, want it ringing", inv.State, inv.Reason)
	}
	bob.Rec.WaitRemote(t, lc.ID)
}
