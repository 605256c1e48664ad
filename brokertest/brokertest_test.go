package brokertest_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/brokertest"
	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/protocol"
)

// An app's test: a real Ringer, an invitation nobody answers, its failure
// after the shortened offline timeout.
func TestAppAgainstARealRinger(t *testing.T) {
	r := brokertest.New(t, brokertest.WithTimeouts(500*time.Millisecond, time.Second, time.Second))
	nc, err := nats.Connect(r.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	failed := make(chan protocol.Reason, 1)
	alice, err := client.New(nc, "alice", "phone", client.WithHandler(client.Handler{
		OnLocalInvitationFailure: func(_ *client.LocalInvitation, r protocol.Reason) { failed <- r },
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	if err := alice.Login(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := alice.CreateLocalInvitation("nobody").Send(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-failed:
		if r != protocol.ReasonPeerOffline {
			t.Fatalf("reason %s", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no failure within 10 s")
	}
}
