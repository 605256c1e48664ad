package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
)

// A view in doubt (a command on it failed with no known outcome) is asked
// for at every heartbeat while its doubt window lasts, and a get that
// succeeds then does not end the doubt: a replica or a deposed leader may
// answer stale until a while after the failure. The first get that succeeds
// after the window ends it. (broker's TestDeviceAsksAfterACommandWithNoKnownOutcome
// makes the doubt from a command whose reply was lost.)
func TestDoubtEndsWithAGetAfterItsWindow(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	ctx := ringertest.Ctx(t)
	// No heartbeats of its own: the test runs them (Reconcile), and counts
	// what bob's connection sends.
	alice, bob := env.Login("alice", "p"), env.Login("bob", "p", client.WithoutHeartbeat())
	id := alice.Invite(t, "bob").ID
	if err := bob.Rec.WaitRemote(t, id).Refuse(ctx, ""); err != nil {
		t.Fatal(err)
	}
	ended, _ := bob.Invitation(id)
	if ended.State != protocol.StateRefused {
		t.Fatalf("set-up: bob's view %s", ended.State)
	}
	if d := bob.Doubt(id); d != 0 {
		t.Fatalf("a view in doubt after a command that was answered (%d)", d)
	}
	gets := func() uint64 { return bob.NC.Stats().OutMsgs }

	bob.SetDoubt(id, time.Now().Add(time.Hour))
	before := gets()
	client.Reconcile(bob.Client, context.Background(), time.Now())
	if gets() == before {
		t.Fatal("a view in doubt was not asked for at the heartbeat")
	}
	if bob.Doubt(id) == 0 {
		t.Fatal("a get within the doubt window ended the doubt")
	}

	bob.SetDoubt(id, time.Now().Add(-time.Millisecond))
	client.Reconcile(bob.Client, context.Background(), time.Now())
	if d := bob.Doubt(id); d != 0 {
		t.Fatalf("still in doubt after a get past its window (%d)", d)
	}
	before = gets()
	client.Reconcile(bob.Client, context.Background(), time.Now())
	if gets() != before {
		t.Fatal("a finished view no longer in doubt was asked for again")
	}
}
