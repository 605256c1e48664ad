package broker

import (
	"context"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// An overloaded broker refuses new invitations at once with UNAVAILABLE and
// keeps serving the commands of existing ones. Commands in flight are
// simulated by holding worker slots, which is all the broker counts.
func TestOverloadShedsSendsNotActions(t *testing.T) {
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv.ClientURL())
	cfg := DefaultConfig()
	cfg.Workers, cfg.ShedSendsAt = 4, 2
	b, err := New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Shutdown(ctx) }()

	client := natstest.Connect(t, srv.ClientURL())
	call := func(verb string, req protocol.Request) *protocol.Error {
		t.Helper()
		subj, err := subjects.Command("alice", verb)
		if err != nil {
			t.Fatal(err)
		}
		m, err := client.RequestWithContext(ctx, subj, protocol.MustMarshal(&req))
		if err != nil {
			t.Fatal(err)
		}
		rep, err := protocol.DecodeReply(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		return rep.Error
	}
	send := protocol.Request{Device: "phone", Callee: "bob"}
	act := protocol.Request{Device: "phone", ID: "nosuchinvitation"}
	code := func(e *protocol.Error) protocol.Code {
		if e == nil {
			return ""
		}
		return e.Code
	}

	// Not overloaded: the send is served (and refused: alice never logged in).
	if got := code(call(subjects.VerbSend, send)); got != protocol.CodeNotLoggedIn {
		t.Fatalf("send below the threshold: %q, want %s", got, protocol.CodeNotLoggedIn)
	}
	// Two commands in flight: sends are shed, actions still served.
	b.sem <- struct{}{}
	b.sem <- struct{}{}
	if got := code(call(subjects.VerbSend, send)); got != protocol.CodeUnavailable {
		t.Fatalf("send at the threshold: %q, want %s", got, protocol.CodeUnavailable)
	}
	if got := code(call(subjects.VerbCancel, act)); got != protocol.CodeNotFound {
		t.Fatalf("cancel at the threshold: %q, want %s (served)", got, protocol.CodeNotFound)
	}
	<-b.sem
	if got := code(call(subjects.VerbSend, send)); got != protocol.CodeNotLoggedIn {
		t.Fatalf("send once load fell: %q, want %s", got, protocol.CodeNotLoggedIn)
	}
	<-b.sem
}
