package broker

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/subjects"
)

// The projector publishes a revision's events before it arms the revision's
// timer: arming is a JetStream round trip the ring need not wait for. Both
// leave on the broker's one connection, so a subscriber to both sees them in
// the order the broker sent them.
func TestProjectorRingsBeforeArmingTheTimer(t *testing.T) {
	e := newStaleEnv(t)
	id := "ringfirst1"
	rec := lifecycle.New(id, "alice", "phone", "bob", "", "", e.b.cfg.Timeouts, time.Now())
	if !rec.Rearm {
		t.Fatal("set-up: a new invitation arms its offline timer")
	}
	if _, err := e.b.store.Commit(e.ctx, store.PutInvitation(rec, 0)); err != nil {
		t.Fatal(err)
	}
	m := e.lastRevision(t, id)

	bob, err := subjects.UserEvents("bob")
	if err != nil {
		t.Fatal(err)
	}
	timerPrefix := strings.TrimSuffix(subjects.TimerSubjects(), ">")
	// One subscription (one delivery goroutine) to every Ringer subject, on
	// a connection of its own: messages arrive in the order the server got them.
	nc := natstest.Connect(t, e.b.nc.ConnectedUrl())
	got := make(chan string, 64)
	if _, err := nc.Subscribe(subjects.Prefix+".>", func(m *nats.Msg) {
		if m.Subject == bob || strings.HasPrefix(m.Subject, timerPrefix) {
			got <- m.Subject
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	e.b.project(e.ctx, m)
	var order []string
	for len(order) < 2 {
		select {
		case s := <-got:
			order = append(order, s)
		case <-time.After(5 * time.Second):
			t.Fatalf("saw only %q", order)
		}
	}
	if order[0] != bob {
		t.Fatalf("first out: %s, then %s; want bob's ring first", order[0], order[1])
	}
}
