package broker_test

import (
	"errors"
	"testing"

	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
)

func TestAcceptedLifecycle(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)

	before := env.Brokers[0].Store().Stats()
	li := alice.CreateLocalInvitation("bob")
	li.Content, li.ChannelID = "video please", "room-1"
	if err := li.Send(ctx); err != nil {
		t.Fatal(err)
	}
	id := li.ID
	ri := bob.Rec.WaitRemote(t, id)
	if ri.CallerID() != "alice" || ri.ChannelID() != "room-1" || ri.Content() != "video please" {
		t.Fatalf("remote invitation fields: %+v", ri.Invitation())
	}
	alice.Rec.Wait(t, "ReceivedByPeer "+id)
	if err := ri.Accept(ctx, "coming"); err != nil {
		t.Fatal(err)
	}
	if got := alice.Rec.Wait(t, "Accepted "+id); got != "Accepted "+id+" coming" {
		t.Fatalf("caller got %q", got)
	}
	bob.Rec.Wait(t, "RemoteAccepted "+id)
	if got := li.State(); got != client.LocalAcceptedByRemote {
		t.Fatalf("local state %d", got)
	}
	if inv, _ := bob.Invitation(id); inv.State != protocol.StateAccepted || inv.CallState != protocol.CallActive {
		t.Fatalf("callee view %s/%s", inv.State, inv.CallState)
	}

	// Both lines are busy during the call.
	carol := env.Login("carol", "phone")
	for _, callee := range []string{"bob", "alice"} {
		c := carol.Invite(t, callee)
		if inv := c.Invitation(); inv.State != protocol.StateRefused || inv.Reason != protocol.ReasonBusy || inv.Response != "busy" {
			t.Fatalf("invite %s during call: %+v", callee, inv)
		}
		carol.Rec.Wait(t, "Refused "+c.ID+" busy")
	}

	if err := bob.Hangup(ctx, id); err != nil {
		t.Fatal(err)
	}
	alice.Rec.Wait(t, "CallEnded "+id+" HANGUP")
	bob.Rec.Wait(t, "CallEnded "+id+" HANGUP")
	waitFree(t, env, "alice", "bob")
	after := env.Brokers[0].Store().Stats().Sub(before)
	t.Logf("accepted lifecycle incl. 2 busy refusals: %+v", after)
}

func TestRefuseAndCancel(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)

	t.Run("refuse", func(t *testing.T) {
		li := alice.Invite(t, "bob")
		ri := bob.Rec.WaitRemote(t, li.ID)
		if err := ri.Refuse(ctx, "not now"); err != nil {
			t.Fatal(err)
		}
		alice.Rec.Wait(t, "Refused "+li.ID+" not now")
		bob.Rec.Wait(t, "RemoteRefused "+li.ID)
		// Refusing again from the same device is an idempotent success.
		if err := ri.Refuse(ctx, "not now"); err != nil {
			t.Fatalf("retried refuse: %v", err)
		}
		if err := ri.Accept(ctx, ""); !errors.Is(err, client.ErrAlreadyEnd) {
			t.Fatalf("accept after refuse: %v, want ALREADY_END", err)
		}
		waitFree(t, env, "alice", "bob")
	})
	t.Run("cancel after receipt", func(t *testing.T) {
		li := alice.Invite(t, "bob")
		bob.Rec.WaitRemote(t, li.ID)
		alice.Rec.Wait(t, "ReceivedByPeer "+li.ID)
		if err := li.Cancel(ctx); err != nil {
			t.Fatal(err)
		}
		alice.Rec.Wait(t, "Canceled "+li.ID)
		bob.Rec.Wait(t, "RemoteCanceled "+li.ID)
		if err := li.Cancel(ctx); err != nil {
			t.Fatalf("retried cancel: %v", err)
		}
		waitFree(t, env, "alice", "bob")
	})
	t.Run("cancel before receipt", func(t *testing.T) {
		// Bob's device does not ack, so the invitation stays SENT.
		mute := env.Login("dave", "tablet", client.WithoutAutoAck())
		li := alice.Invite(t, "dave")
		mute.Rec.WaitRemote(t, li.ID)
		if err := li.Cancel(ctx); err != nil {
			t.Fatal(err)
		}
		mute.Rec.Wait(t, "RemoteCanceled "+li.ID)
		if inv := li.Invitation(); inv.State != protocol.StateCanceled || inv.ReceivedAt != 0 {
			t.Fatalf("%+v", inv)
		}
		if n := alice.Rec.Count("ReceivedByPeer " + li.ID); n != 0 {
			t.Fatalf("ReceivedByPeer fired %d times for an unacknowledged invitation", n)
		}
		waitFree(t, env, "alice", "dave")
	})
	t.Run("cancel unsent", func(t *testing.T) {
		li := alice.CreateLocalInvitation("bob")
		if err := li.Cancel(ctx); !errors.Is(err, client.ErrNotStarted) {
			t.Fatalf("cancel before send: %v", err)
		}
	})
}

// waitFree waits until none of users is busy (their line records are gone).
func waitFree(t *testing.T, env *ringertest.Env, users ...string) {
	t.Helper()
	ringertest.WaitFree(t, env.Brokers[0].Store(), users...)
}
