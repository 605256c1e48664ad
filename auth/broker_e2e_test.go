package auth_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/auth"
	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
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
	cfg.OwnReplies = true
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
	replies, err := insider.SubscribeSync("ringer.v1.user.bob.reply.insider.*")
	if err != nil {
		t.Fatal(err)
	}
	cmd := nats.NewMsg("ringer.v1.cmd.bob.refuse")
	cmd.Header.Set(subjects.ReplyHeader, "insider.1")
	cmd.Data = protocol.MustMarshal(&protocol.Request{Device: "x", ID: id})
	if err := insider.PublishMsg(cmd); err != nil {
		t.Fatal(err)
	}
	msg, err := replies.NextMsg(ringertest.Wait)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := protocol.DecodeReply(msg.Data)
	if err != nil || rep.Error == nil || rep.Error.Code != protocol.CodeForbidden {
		t.Fatalf("unstamped command as bob: %+v %v, want FORBIDDEN", rep, err)
	}
}

// In secure mode the server rewrites the reply subject of a command on its
// way from USERS to BROKER, so a broker cannot see where a reply would go:
// mallory could aim replies (a 29-byte get answered with kilobytes) at
// carol's events or bob's inbox. Brokers therefore reply only on the acting
// user's own reply subject (the Ringer-Reply header) and refuse any other
// reply subject without answering: carol and bob receive nothing, the
// refusals are counted, and mallory's own commands work.
func TestRepliesGoOnlyToTheAsker(t *testing.T) {
	e := startEnv(t, envOpts{})
	brokerURL := strings.Replace(e.url, "nats://", "nats://broker:broker@", 1)
	cfg := ringertest.TestConfig()
	cfg.RequireRequestInfo, cfg.OwnReplies = true, true
	b := ringertest.StartBroker(t, brokerURL, cfg)

	carol := e.login("carol")
	carolEvents, err := carol.Conn.SubscribeSync("ringer.v1.user.carol.>")
	if err != nil {
		t.Fatal(err)
	}
	bob := e.login("bob", nats.CustomInboxPrefix("_INBOX_bob"))
	bobInbox, err := bob.Conn.SubscribeSync("_INBOX_bob.>")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*nats.Conn{carol.Conn, bob.Conn} {
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	mallory := e.login("mallory")
	get := protocol.MustMarshal(&protocol.Request{Device: "phone", ID: "anything"})
	const aimed = 50
	for i := range aimed {
		target := "ringer.v1.user.carol.events"
		if i%2 == 1 {
			target = "_INBOX_bob.abc.def"
		}
		if err := mallory.Conn.PublishRequest("ringer.v1.cmd.mallory.get", target, get); err != nil {
			t.Fatal(err)
		}
	}
	// Mallory's own commands, asking on her own reply subject, are served.
	m, err := client.New(mallory.Conn, "mallory", "phone")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Get(ringertest.Ctx(t), "anything"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("mallory's own get: %v, want NOT_FOUND", err)
	}
	natstest.Eventually(t, ringertest.Wait, func() error {
		if n := refusedReplies(t, b); n < aimed {
			return fmt.Errorf("%v of %d aimed commands refused", n, aimed)
		}
		return nil
	})
	if err := carol.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	for name, sub := range map[string]*nats.Subscription{"carol's events": carolEvents, "bob's inbox": bobInbox} {
		if n, _, _ := sub.Pending(); n > 0 {
			m, _ := sub.NextMsg(0)
			t.Fatalf("%s received %d broker replies meant for mallory (%s)", name, n, m.Subject)
		}
	}
}

// refusedReplies reads ringer_replies_refused_total.
func refusedReplies(t *testing.T, b *ringertest.Broker) float64 {
	t.Helper()
	mfs, err := b.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "ringer_replies_refused_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no ringer_replies_refused_total")
	return 0
}

// A Ringer client needs no custom inbox prefix in secure mode: its
// commands are published without a NATS reply subject and answered on
// the user's own reply subject, so a connection with nats.go's default
// _INBOX (which the user may not subscribe to) makes a whole call, with
// no permissions violation. (cmd/ringer's --secure-inbox is not needed.)
func TestSecureModeNeedsNoInboxPrefix(t *testing.T) {
	e := startEnv(t, envOpts{})
	cfg := ringertest.TestConfig()
	cfg.RequireRequestInfo, cfg.OwnReplies = true, true
	ringertest.StartBroker(t, strings.Replace(e.url, "nats://", "nats://broker:broker@", 1), cfg)
	ctx := ringertest.Ctx(t)
	parties := map[string]*ringertest.Recorder{}
	clients := map[string]*client.Client{}
	var violations []error
	var mu sync.Mutex
	for _, name := range []string{"alice", "bob"} {
		nc := e.connect(nats.Token(e.token(name)), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			violations = append(violations, err)
			mu.Unlock()
		}))
		rec := ringertest.NewRecorder()
		c, err := client.New(nc, name, "phone", client.WithHandler(rec.Handler()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		if err := c.Login(ctx); err != nil {
			t.Fatalf("%s logs in without an inbox prefix: %v", name, err)
		}
		parties[name], clients[name] = rec, c
	}
	li := clients["alice"].CreateLocalInvitation("bob")
	if err := li.Send(ctx); err != nil {
		t.Fatal(err)
	}
	ri := parties["bob"].WaitRemote(t, li.ID)
	if err := ri.Accept(ctx, "ok"); err != nil {
		t.Fatal(err)
	}
	parties["alice"].Wait(t, "Accepted "+li.ID)
	if err := clients["alice"].Hangup(ctx, li.ID); err != nil {
		t.Fatal(err)
	}
	parties["bob"].Wait(t, "CallEnded "+li.ID)
	if _, err := clients["bob"].History(ctx, "", 5); err != nil {
		t.Fatalf("history: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(violations) > 0 {
		t.Fatalf("asynchronous errors: %v", violations)
	}
}
