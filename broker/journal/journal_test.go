package journal_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/broker/journal"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

func open(t *testing.T, size int) *journal.Journal {
	t.Helper()
	j, _ := openPartitioned(t, journal.Config{HistorySize: size, HistoryRetention: time.Hour})
	return j
}

// openPartitioned provisions the journal of cfg on a fresh server.
func openPartitioned(t *testing.T, cfg journal.Config) (*journal.Journal, jetstream.JetStream) {
	t.Helper()
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := journal.Provision(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	return journal.New(nc, js, cfg.HistorySize, cfg.Partitions), js
}

// With partitions, a user's history lives in its partition's stream (the
// one of its line), which gets its share of the size cap: the two parties
// of a call in different partitions each find the call in their own.
func TestHistoriesLiveInTheirUsersPartitions(t *testing.T) {
	const n = 3
	j, js := openPartitioned(t, journal.Config{Partitions: n, HistorySize: 10, HistoryRetention: time.Hour, HistoryMaxBytes: 3 << 20})
	ctx := context.Background()
	caller, callee := "alice", ""
	for i := 0; callee == ""; i++ {
		if u := fmt.Sprintf("bob%d", i); subjects.PartitionOf(subjects.LineKey(u), n) != subjects.PartitionOf(subjects.LineKey(caller), n) {
			callee = u
		}
	}
	inv := protocol.Invitation{ID: "inv1", Caller: caller, Callee: callee, State: protocol.StateCanceled, CreatedAt: 1, EndedAt: 2}
	if err := j.Append(ctx, &inv, caller, callee); err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{caller, callee} {
		page, err := j.Read(ctx, user, "", 10, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Calls) != 1 || page.Calls[0].ID != "inv1" {
			t.Errorf("%s's history: %+v", user, page.Calls)
		}
	}
	held := map[subjects.Partition]uint64{
		subjects.PartitionOf(subjects.LineKey(caller), n): 1,
		subjects.PartitionOf(subjects.LineKey(callee), n): 1,
	}
	for p := range subjects.Partition(n) {
		st, err := js.Stream(ctx, p.HistoryStream())
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs != held[p] || info.Config.MaxBytes != 1<<20 {
			t.Errorf("%s: %d entries (want %d), max bytes %d (want a third of 3 MiB)", p.HistoryStream(), info.State.Msgs, held[p], info.Config.MaxBytes)
		}
	}
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
