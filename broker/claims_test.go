package broker_test

import (
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker/store"
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

	claimed := time.Now()
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
	if busy, _, err := st.Busy(ringertest.Ctx(t), "bob", ringertest.TestConfig().ClaimGrace); err != nil || busy {
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
