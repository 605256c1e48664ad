package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/protocol"
)

// The census finds every live invitation and call through the claims on
// the lines, over every partition and across more ids than one multi-get
// asks for; it counts each once however many lines claim it, skips
// finished invitations and claims whose invitation was never written, and
// tells overdue ones (live past their deadline by more than the margin).
func TestCensusCountsLiveInvitationsAndCalls(t *testing.T) {
	ctx, st := openPartitions(t, 2)
	now := time.Now()
	timeouts := lifecycle.Timeouts{Offline: 30 * time.Second, Expire: 30 * time.Second, Accept: 10 * time.Second}
	put := func(r lifecycle.Record) {
		t.Helper()
		if _, err := st.Commit(ctx, store.PutInvitation(r, 0)); err != nil {
			t.Fatal(err)
		}
	}
	claims := func(user string, l store.Line, ids ...string) {
		t.Helper()
		for _, id := range ids {
			l.Claims = append(l.Claims, store.Claim{ID: id, At: now.UnixMilli()})
		}
		if _, err := st.Commit(ctx, store.PutLine(user, l, 0)); err != nil {
			t.Fatal(err)
		}
	}

	put(lifecycle.New("ringing", "alice", "phone", "bob", "", "", timeouts, now))
	put(lifecycle.New("overdue", "alice", "phone", "carol", "", "", timeouts, now.Add(-5*time.Minute)))
	call := lifecycle.New("call", "alice", "phone", "dave", "", "", timeouts, now)
	call.State, call.CallState, call.Deadline = protocol.StateAccepted, protocol.CallActive, 0
	put(call)
	ended := call
	ended.ID, ended.CallState = "ended", protocol.CallEnded
	put(ended)
	refused := lifecycle.New("refused", "alice", "phone", "erin", "", "", timeouts, now)
	refused.State, refused.Deadline = protocol.StateRefused, 0
	put(refused)
	claims("alice", store.Line{}, "ringing", "overdue", "call", "ended", "refused", "never-written")
	claims("bob", store.Line{}, "ringing", "call") // the same ids again: counted once
	claims("frank", store.Line{Manual: true})      // do-not-disturb, no claim: a line, nothing live

	// More live invitations than one multi-get asks for, in each partition.
	const bulk, users = 600, 6
	for u := range users {
		var ids []string
		for i := range bulk / users {
			id := fmt.Sprintf("bulk-%d-%d", u, i)
			put(lifecycle.New(id, fmt.Sprintf("caller%d", u), "phone", "x", "", "", timeouts, now))
			ids = append(ids, id)
		}
		claims(fmt.Sprintf("caller%d", u), store.Line{}, ids...)
	}
	if err := st.ArmTimer(ctx, "ringing", now.Add(time.Hour).UnixMilli()); err != nil {
		t.Fatal(err)
	}

	got, err := st.Census(ctx, time.Now(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := store.Census{Lines: 3 + users, Invitations: 2 + bulk, Calls: 1, Overdue: 1, Timers: 1}
	if got != want {
		t.Fatalf("census %+v, want %+v", got, want)
	}
	// The margin: the ringing invitation is overdue once its deadline is
	// more than the margin past.
	late, err := st.Census(ctx, now.Add(timeouts.Offline+3*time.Second), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if late.Overdue != 2+bulk {
		t.Fatalf("33 s later %d overdue, want %d", late.Overdue, 2+bulk)
	}
}

// A census with nothing to count is zero, not an error.
func TestCensusOfAnEmptyStore(t *testing.T) {
	_, st := openStore(t, 1)
	got, err := st.Census(context.Background(), time.Now(), time.Second)
	if err != nil || got != (store.Census{}) {
		t.Fatalf("empty census %+v, %v", got, err)
	}
}

// BenchmarkCensus measures one census over 5 000 users with a line record,
// each claiming one live invitation (the figure docs/operations.md quotes).
func BenchmarkCensus(b *testing.B) {
	nc := natstest.Connect(b, natstest.RunServer(b).ClientURL())
	ctx := context.Background()
	if err := store.Provision(ctx, nc, store.ProvisionConfig{}); err != nil {
		b.Fatal(err)
	}
	st, err := store.Open(ctx, nc)
	if err != nil {
		b.Fatal(err)
	}
	const users = 5000
	now := time.Now()
	timeouts := lifecycle.Timeouts{Offline: time.Hour, Expire: time.Hour, Accept: time.Hour}
	for u := range users {
		id, user := fmt.Sprintf("inv-%d", u), fmt.Sprintf("user-%d", u)
		if _, err := st.Commit(ctx, store.PutInvitation(lifecycle.New(id, user, "phone", "x", "", "", timeouts, now), 0)); err != nil {
			b.Fatal(err)
		}
		line := store.Line{Claims: []store.Claim{{ID: id, At: now.UnixMilli()}}}
		if _, err := st.Commit(ctx, store.PutLine(user, line, 0)); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		c, err := st.Census(ctx, time.Now(), time.Second)
		if err != nil || c.Invitations != users {
			b.Fatalf("census %+v, %v", c, err)
		}
	}
}
