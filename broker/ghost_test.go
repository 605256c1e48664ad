package broker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// A command that reaches a broker after the deadline its client set is not
// executed: DEADLINE_EXCEEDED, and nothing changed.
func TestLateCommandIsNotExecuted(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	env.Login("bob", "phone")
	send, _ := subjects.Command("alice", subjects.VerbSend)
	late := protocol.MustMarshal(&protocol.Request{Device: "phone", ID: "late1", Callee: "bob", Deadline: time.Now().Add(-time.Millisecond).UnixMilli()})
	rep := rawRequest(t, env, send, late)
	if rep.Error == nil || rep.Error.Code != protocol.CodeDeadlineExceeded {
		t.Fatalf("a send past its deadline: %+v", rep)
	}
	if _, err := alice.Get(ringertest.Ctx(t), "late1"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("the late send took effect: %v", err)
	}
	onTime := protocol.MustMarshal(&protocol.Request{Device: "phone", ID: "ontime1", Callee: "bob", Deadline: time.Now().Add(time.Minute).UnixMilli()})
	if rep := rawRequest(t, env, send, onTime); rep.Error != nil {
		t.Fatalf("a send within its deadline: %v", rep.Error)
	}
}

// The scenario of a user typing "invite bob" while its NATS server is down:
// the SDK says at once that it is not connected instead of leaving the send
// in nats.go's reconnect buffer, and a command that did wait in that buffer
// (a client without the check) is refused when it arrives after its
// deadline. Either way bob never rings for a call alice was told failed.
// The SDK reports RECONNECTING and CONNECTED again.
func TestNoGhostCommandsAfterReconnect(t *testing.T) {
	c, env := servingClusterR3(t)
	// alice's connection knows node 0 only (not the others it learns of):
	// while it is down, alice reconnects.
	alice := &ringertest.Client{NC: natstest.Connect(t, c.Servers[0].ClientURL(), nats.IgnoreDiscoveredServers()), Rec: ringertest.NewRecorder()}
	var err error
	if alice.Client, err = client.New(alice.NC, "alice", "phone", client.WithHandler(alice.Rec.Handler())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(alice.Close)
	if err := alice.Login(ringertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	bob := env.Login("bob", "phone")
	carol := env.Login("carol", "phone")
	alice.Rec.Wait(t, "Connection CONNECTED LOGIN_SUCCESS")

	c.Stop(0)
	alice.Rec.Wait(t, "Connection RECONNECTING INTERRUPTED")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ghost := alice.CreateLocalInvitation("bob")
	if err := ghost.Send(ctx); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("a send while reconnecting: %v, want ErrUnavailable at once", err)
	}
	// What a client without that check would do: the request waits in
	// nats.go's buffer past its deadline.
	send, _ := subjects.Command("alice", subjects.VerbSend)
	deadline := time.Now().Add(200 * time.Millisecond)
	buffered := protocol.MustMarshal(&protocol.Request{Device: "phone", ID: "buffered1", Callee: "bob", Deadline: deadline.UnixMilli()})
	if err := alice.NC.PublishRequest(send, nats.NewInbox(), buffered); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(deadline) + 50*time.Millisecond) // the deadline itself must pass

	c.Restart(0)
	alice.Rec.Wait(t, "Connection CONNECTED LOGIN_SUCCESS") // the second one: reconnected
	natstest.Eventually(t, ringertest.Wait, func() error {
		if n := alice.Rec.Count("Connection CONNECTED"); n < 2 {
			return errors.New("alice has not reconnected")
		}
		return nil
	})
	// The buffer was flushed before anything alice sends now; once carol
	// rings, the buffered send has been decided.
	natstest.Eventually(t, ringertest.Wait, func() error {
		return alice.CreateLocalInvitation("carol").Send(ringertest.Ctx(t))
	})
	carol.Rec.Wait(t, "RemoteReceived ")
	for _, id := range []string{ghost.ID, "buffered1"} {
		if _, err := alice.Get(ringertest.Ctx(t), id); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("invitation %s exists after its client gave up: %v", id, err)
		}
	}
	if n := bob.Rec.Count("RemoteReceived "); n != 0 {
		t.Fatalf("bob rang %d times for invitations alice was told failed", n)
	}
}
