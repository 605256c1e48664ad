package journal_test

import (
	"context"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker/journal"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/protocol"
)

func open(t *testing.T, size int) *journal.Journal {
	t.Helper()
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s.ClientURL())
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := journal.Provision(ctx, js, journal.Config{HistorySize: size, HistoryRetention: time.Hour}); err != nil {
		t.Fatal(err)
	}
	return journal.New(nc, js, size)
}

// A projector that appends the same finished invitation again (it died
// before acking, and another broker redid its work) adds nothing.
func TestAppendTwiceIsOnce(t *testing.T) {
	j := open(t, 10)
	ctx := context.Background()
	inv := protocol.Invitation{ID: "inv1", Caller: "alice", Callee: "bob", State: protocol.StateCanceled, CreatedAt: 1, EndedAt: 2}
	for range 3 {
		if err := j.Append(ctx, &inv, inv.Caller, inv.Callee); err != nil {
			t.Fatal(err)
		}
	}
	for _, user := range []string{"alice", "bob"} {
		page, err := j.Read(ctx, user, "", 10, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Calls) != 1 || page.Calls[0].ID != "inv1" {
			t.Fatalf("%s's history after three appends: %+v", user, page.Calls)
		}
	}
	if page, _ := j.Read(ctx, "bob", "", 10, true); len(page.Calls) != 1 || !page.Calls[0].Missed {
		t.Fatalf("bob's canceled incoming invitation is not a missed call: %+v", page.Calls)
	}
	if page, _ := j.Read(ctx, "alice", "", 10, true); len(page.Calls) != 0 {
		t.Fatalf("alice's canceled outgoing invitation is a missed call: %+v", page.Calls)
	}
}

// The history keeps the newest size entries of each user, and one user's
// calls never push out another's.
func TestHistoryIsBoundedPerUser(t *testing.T) {
	j := open(t, 3)
	ctx := context.Background()
	for i := range 5 {
		inv := protocol.Invitation{ID: "a" + string(rune('0'+i)), Caller: "alice", Callee: "bob", State: protocol.StateFailed, EndedAt: int64(i)}
		if err := j.Append(ctx, &inv, inv.Caller, inv.Callee); err != nil {
			t.Fatal(err)
		}
	}
	inv := protocol.Invitation{ID: "c0", Caller: "carol", Callee: "dave", State: protocol.StateFailed}
	if err := j.Append(ctx, &inv, inv.Caller, inv.Callee); err != nil {
		t.Fatal(err)
	}
	page, err := j.Read(ctx, "alice", "", 10, false)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range page.Calls {
		ids = append(ids, c.ID)
	}
	if len(ids) != 3 || ids[0] != "a4" || ids[2] != "a2" {
		t.Fatalf("alice's history of size 3 after 5 calls: %v", ids)
	}
	if page, _ := j.Read(ctx, "carol", "", 10, false); len(page.Calls) != 1 {
		t.Fatalf("carol's history: %+v", page.Calls)
	}
}
