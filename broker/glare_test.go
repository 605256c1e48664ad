package broker_test

import (
	"sync"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
)

// Alice calls bob while bob's call to her still rings: alice's send accepts
// bob's invitation instead of ringing him; one call, both lines held by it.
func TestGlareMergesIntoOneCall(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)

	theirs := bob.Invite(t, "alice")
	alice.Rec.WaitRemote(t, theirs.ID)
	mine := alice.Invite(t, "bob")
	inv := mine.Invitation()
	if inv.State != protocol.StateCanceled || inv.Reason != protocol.ReasonMerged || inv.MergedInto != theirs.ID {
		t.Fatalf("alice's send during bob's ring: %+v, want CANCELED/MERGED into %s", inv, theirs.ID)
	}
	alice.Rec.Wait(t, "Merged "+mine.ID+" into "+theirs.ID)
	bob.Rec.Wait(t, "Accepted "+theirs.ID)
	alice.Rec.Wait(t, "RemoteAccepted "+theirs.ID)
	if n := alice.Rec.Count("Canceled " + mine.ID); n != 0 {
		t.Fatal("a merged invitation also fired Canceled")
	}
	for _, l := range bob.Rec.Lines() {
		if l == "RemoteReceived "+mine.ID {
			t.Fatal("bob rang for alice's merged invitation")
		}
	}
	// A retried send returns the same merge.
	again := alice.CreateLocalInvitation("bob")
	again.ID = mine.ID
	if err := again.Send(ctx); err != nil || again.Invitation().MergedInto != theirs.ID {
		t.Fatalf("retried send: %+v, %v", again.Invitation(), err)
	}
	// The call holds both lines; its hangup frees them.
	carol := env.Login("carol", "phone")
	if r := carol.Invite(t, "alice").Invitation(); r.Reason != protocol.ReasonBusy {
		t.Fatalf("alice not busy in the merged call: %+v", r)
	}
	if err := alice.Hangup(ctx, theirs.ID); err != nil {
		t.Fatal(err)
	}
	bob.Rec.Wait(t, "CallEnded "+theirs.ID)
	waitFree(t, env, "alice", "bob")
}

// Both send at the same instant, many times, through two brokers: each
// time exactly one invitation becomes the call and the other merges into
// it — never two ringing invitations, never two busy refusals.
func TestGlareTrueRaces(t *testing.T) {
	env := ringertest.StartBrokers(t, 2)
	alice := env.Login("alice", "phone")
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)
	aliceWon := 0
	const rounds = 30
	for round := range rounds {
		a, b := alice.CreateLocalInvitation("bob"), bob.CreateLocalInvitation("alice")
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, 2)
		for i, li := range []*client.LocalInvitation{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = li.Send(ctx)
			}()
		}
		close(start)
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("round %d: sends: %v, %v", round, errs[0], errs[1])
		}
		ai, bi := a.Invitation(), b.Invitation()
		var call, merged protocol.Invitation
		switch {
		case ai.Reason == protocol.ReasonMerged && bi.Reason != protocol.ReasonMerged:
			call, merged = bi, ai
		case bi.Reason == protocol.ReasonMerged && ai.Reason != protocol.ReasonMerged:
			call, merged = ai, bi
			aliceWon++
		default:
			t.Fatalf("round %d: alice's %s/%s, bob's %s/%s: want one call and one merge", round, ai.State, ai.Reason, bi.State, bi.Reason)
		}
		if merged.MergedInto != call.ID {
			t.Fatalf("round %d: merged into %s, the call is %s", round, merged.MergedInto, call.ID)
		}
		callee := bob
		if call.Callee == "alice" {
			callee = alice
		}
		callee.Rec.Wait(t, "RemoteAccepted "+call.ID)
		if err := alice.Hangup(ctx, call.ID); err != nil {
			t.Fatalf("round %d: hangup: %v", round, err)
		}
		callee.Rec.Wait(t, "CallEnded "+call.ID)
		waitFree(t, env, "alice", "bob")
	}
	t.Logf("%d races: alice's invitation was the call %d times, bob's %d", rounds, aliceWon, rounds-aliceWon)
}

// A send from bob to alice was abandoned after its claims (its broker died):
// alice's send to bob waits a moment for that invitation, then treats the
// claim as any claim whose invitation is not written — busy, until the
// claim grace — rather than failing.
func TestGlareWithAnAbandonedSendIsBusy(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	env.Login("bob", "phone")
	putClaims(t, env.Brokers[0].Store(), "bob", store.Claim{ID: "ghost", At: time.Now().UnixMilli(), Peer: "alice", Out: true})
	start := time.Now()
	inv := alice.Invite(t, "bob").Invitation()
	if inv.State != protocol.StateRefused || inv.Reason != protocol.ReasonBusy {
		t.Fatalf("alice's send while bob's abandoned send to her holds his line: %+v, want a busy refusal", inv)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("the send took %s", took)
	}
}
