package broker_test

import (
	"testing"

	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// A partitioned deployment tells clients at login how many partitions it
// has, and invitations are named in their caller's partition whoever names
// them: the Go client when the app leaves the id empty, the broker when a
// raw send carries none. An app's own id is kept as it is. One partition
// says nothing (the field is absent).
func TestInvitationsLiveInTheCallersPartition(t *testing.T) {
	const parts = 3
	cfg := ringertest.TestConfig()
	cfg.Partitions = parts
	env := ringertest.Start(t, cfg)
	ctx := ringertest.Ctx(t)
	home := func(user string) subjects.Partition { return subjects.PartitionOf(subjects.LineKey(user), parts) }
	in := func(id string) subjects.Partition { return subjects.PartitionOf(subjects.InvitationKey(id), parts) }

	for _, user := range []string{"alice", "bob", "carol", "dave"} {
		c := env.Login(user, "phone", client.WithoutHeartbeat())
		if got := c.Session().Partitions; got != parts {
			t.Fatalf("%s's login says %d partitions, want %d", user, got, parts)
		}
		for range 20 {
			if id := c.NewInvitationID(); in(id) != home(user) {
				t.Fatalf("%s drew %s in partition %d, its line is in %d", user, id, in(id), home(user))
			}
		}
	}

	alice := env.Login("alice", "tablet", client.WithoutHeartbeat())
	for _, callee := range []string{"bob", "carol", "dave"} {
		li := alice.CreateLocalInvitation(callee) // no id: the client names it
		if err := li.Send(ctx); err != nil {
			t.Fatal(err)
		}
		if in(li.ID) != home("alice") {
			t.Errorf("the client named %s (to %s) in partition %d, alice's line is in %d", li.ID, callee, in(li.ID), home("alice"))
		}
		if err := li.Cancel(ctx); err != nil {
			t.Fatal(err)
		}
		alice.Rec.Wait(t, "Canceled "+li.ID)
	}

	// A raw client that names nothing: the broker names it.
	send, _ := subjects.Command("alice", subjects.VerbSend)
	for _, callee := range []string{"bob", "carol", "dave"} {
		rep := rawRequest(t, env, send, protocol.MustMarshal(&protocol.Request{Device: "tablet", Callee: callee}))
		if rep.Error != nil || rep.Invitation == nil {
			t.Fatalf("raw send to %s: %+v", callee, rep.Error)
		}
		if id := rep.Invitation.ID; in(id) != home("alice") {
			t.Errorf("the broker named %s (to %s) in partition %d, alice's line is in %d", id, callee, in(id), home("alice"))
		}
		if err := alice.Cancel(ctx, rep.Invitation.ID); err != nil {
			t.Fatal(err)
		}
	}

	// An app's own id stays as it is, wherever it lands.
	li := alice.CreateLocalInvitation("bob")
	li.ID = "mine"
	if err := li.Send(ctx); err != nil || li.ID != "mine" {
		t.Fatalf("send with the app's id: %v, id %q", err, li.ID)
	}

	one := ringertest.Start(t, ringertest.TestConfig())
	if got := one.Login("erin", "phone", client.WithoutHeartbeat()).Session().Partitions; got != 0 {
		t.Errorf("one partition: login says %d partitions, want the field absent (0)", got)
	}
}
