package auth_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/auth"
	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
)

// The real broker in BROKER, real clients authenticated by token in USERS:
// alice invites bob and bob accepts. Mallory, with a valid token of her own,
// tries to accept bob's invitation as bob (her publish is denied by the
// server and never reaches a broker) and as herself (the broker refuses:
// she is not a party).
func TestCalloutInviteAcceptWithRealBroker(t *testing.T) {
	e := startEnv(t, envOpts{})
	brokerURL := strings.Replace(e.url, "nats://", "nats://broker:broker@", 1)
	cfg := ringertest.TestConfig()
	cfg.RequireRequestInfo = true // secure mode: identity stamped by the server must match the subject
	ringertest.StartBroker(t, brokerURL, cfg)

	// A second subscriber in BROKER sees a copy of every command that reaches
	// the brokers, with the identity the server stamped on it.
	sp := e.startSpy(false)
	seenAs := func(m *nats.Msg) string { who, _ := auth.RequestUser(m.Header); return who }

	login := func(name string) (*user, *client.Client, *ringertest.Recorder) {
		u := e.login(name)
		rec := ringertest.NewRecorder()
		c, err := client.New(u.Conn, name, "phone", client.WithHandler(rec.Handler()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		if err := c.Login(ringertest.Ctx(t)); err != nil {
			t.Fatalf("%s login: %v", name, err)
		}
		return u, c, rec
	}
	_, alice, aliceRec := login("alice")
	_, bob, bobRec := login("bob")
	mallory, malloryAsSelf, _ := login("mallory")

	inv := alice.CreateLocalInvitation("bob")
	inv.Content = "lunch?"
	if err := inv.Send(ringertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	id := inv.Invitation().ID
	bobRec.WaitRemote(t, id)

	// Mallory as bob: the client builds ringer.v1.cmd.bob.accept, the server
	// denies the publish, the request can only time out.
	malloryAsBob, err := client.New(mallory.Conn, "bob", "evil")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- malloryAsBob.Accept(ctx, id, "hijacked") }()
	mallory.errs.violation(t, "Publish", "ringer.v1.cmd.bob.accept")
	cancel()
	if err := <-done; err == nil {
		t.Fatal("mallory's accept as bob succeeded")
	}

	// Mallory as herself: it reaches the broker, which refuses.
	err = malloryAsSelf.Accept(ringertest.Ctx(t), id, "hijacked")
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.CodeForbidden {
		t.Fatalf("mallory's accept as mallory: %v, want FORBIDDEN", err)
	}
	// That request was sent after the denied one on the same connection and
	// has reached the brokers, so the denied one would have too.
	if who := seenAs(sp.waitSubject(t, "ringer.v1.cmd.mallory.accept")); who != "mallory" {
		t.Fatalf("mallory's own accept stamped as %q", who)
	}
	if got := sp.subjects(); slices.Contains(got, "ringer.v1.cmd.bob.accept") {
		t.Fatalf("a bob.accept reached the brokers before bob accepted: %v", got)
	}

	// Bob accepts for real.
	if err := bob.Accept(ringertest.Ctx(t), id, "on my way"); err != nil {
		t.Fatal(err)
	}
	aliceRec.Wait(t, "Accepted "+id+" on my way")
	if who := seenAs(sp.waitSubject(t, "ringer.v1.cmd.bob.accept")); who != "bob" {
		t.Fatalf("bob's accept stamped as %q", who)
	}
	if n := aliceRec.Count("Accepted "); n != 1 {
		t.Fatalf("alice saw %d accepts: %q", n, aliceRec.Lines())
	}

	// A connection inside BROKER (no service import, so no server-stamped
	// identity) cannot act as bob either: the broker requires the stamp.
	insider, err := nats.Connect(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer insider.Close()
	msg, err := insider.Request("ringer.v1.cmd.bob.refuse", protocol.MustMarshal(&protocol.Request{Device: "x", ID: id}), ringertest.Wait)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := protocol.DecodeReply(msg.Data)
	if err != nil || rep.Error == nil || rep.Error.Code != protocol.CodeForbidden {
		t.Fatalf("unstamped command as bob: %+v %v, want FORBIDDEN", rep, err)
	}
}
