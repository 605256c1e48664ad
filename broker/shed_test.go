package broker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// An overloaded broker refuses new invitations at once with UNAVAILABLE and
// keeps serving the commands of existing ones. The overload is staged: a
// 1 ns target that every real command misses, and a 50 ms window.
func TestOverloadShedsSendsNotActions(t *testing.T) {
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv.ClientURL())
	cfg := DefaultConfig()
	cfg.ShedLatency = time.Nanosecond
	b, err := New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.commandQueue = newOverload(cfg.ShedLatency, 50*time.Millisecond)
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

	served := func() bool {
		switch got := code(call(subjects.VerbSend, send)); got {
		case protocol.CodeNotLoggedIn: // served (alice never logged in)
			return true
		case protocol.CodeUnavailable: // shed
			return false
		default:
			t.Fatalf("send: %q", got)
			return false
		}
	}
	// A few commands per window: however slow, no queue; sends are served.
	for range 3 {
		if !served() {
			t.Fatal("a send was shed with hardly any load")
		}
	}
	// Many commands per window, every one slower than the target: sends are
	// shed, while the commands of existing invitations are still served.
	natstest.Eventually(t, 10*time.Second, func() error {
		for range 2 * shedMinSamples {
			if got := code(call(subjects.VerbCancel, act)); got != protocol.CodeNotFound {
				t.Fatalf("cancel: %q, want %s (served, even when shedding)", got, protocol.CodeNotFound)
			}
		}
		if served() {
			return errors.New("send still served")
		}
		return nil
	})
	// The load stops (shed sends are no samples): sends are served again.
	natstest.Eventually(t, 5*time.Second, func() error {
		if !served() {
			return errors.New("send still shed")
		}
		return nil
	})
}
