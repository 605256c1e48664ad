package journal

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/protocol"
)

// A history read answered by a replica that lags (one a network partition
// cut off answers direct gets with what it had) is completed from the
// stream leader. The lag is made exactly: entries are appended after the
// read's direct get has been answered and before its check with the
// leader, which is what a lagging replica looks like to the reader.
func TestHistoryReadIsCompletedFromTheLeader(t *testing.T) {
	c := natstest.RunCluster(t, 3)
	nc := natstest.Connect(t, c.URLs())
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const size = 5
	// A stream's creation on a fresh cluster can go unanswered while a
	// retry succeeds at once (see natstest.Attempt).
	natstest.Attempt(t, 30*time.Second, 5*time.Second, func(ctx context.Context) error {
		return Provision(ctx, js, Config{Replicas: 3, HistorySize: size, HistoryRetention: time.Hour})
	})
	j := New(nc, js, size)
	natstest.Attempt(t, 10*time.Second, 2*time.Second, j.BindHistory)
	if j.historyLeader == nil {
		t.Fatal("an R3 history stream is not read through its leader")
	}
	n := 0
	appendCalls := func(user string, k int) {
		t.Helper()
		for range k {
			n++
			inv := protocol.Invitation{ID: fmt.Sprintf("inv%d", n), Caller: "carol", Callee: user,
				State: protocol.StateCanceled, CreatedAt: int64(n), EndedAt: int64(n)}
			// A publish to a stream created a moment ago can find no
			// responder on this connection's server until the leader's
			// interest has crossed the routes ("no response from stream",
			// CI at ea73bf4): try again, the message id dedupes.
			natstest.Attempt(t, 10*time.Second, 2*time.Second, func(ctx context.Context) error {
				return j.Append(ctx, &inv, user)
			})
		}
	}
	ids := func(user string) []string {
		t.Helper()
		page, err := j.Read(ctx, user, "", size, false)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range page.Calls {
			out = append(out, e.ID)
		}
		return out
	}
	laggingBy := func(user string, k int) {
		j.testHookAfterDirect = func() {
			j.testHookAfterDirect = nil
			appendCalls(user, k)
		}
	}

	for _, tc := range []struct {
		name        string
		before, lag int
		want        []string // newest first
	}{
		{"current", 2, 0, []string{"inv2", "inv1"}},
		{"one behind", 0, 1, []string{"inv3", "inv2", "inv1"}},
		{"several behind", 0, 2, []string{"inv5", "inv4", "inv3", "inv2", "inv1"}},
		{"behind by more than the history keeps", 0, size + 2, []string{"inv12", "inv11", "inv10", "inv9", "inv8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			appendCalls("bob", tc.before)
			laggingBy("bob", tc.lag)
			if got := ids("bob"); !slices.Equal(got, tc.want) {
				t.Fatalf("bob's history: %v, want %v", got, tc.want)
			}
		})
	}
	t.Run("empty replica", func(t *testing.T) {
		laggingBy("dave", 2)
		if got, want := ids("dave"), []string{"inv14", "inv13"}; !slices.Equal(got, want) {
			t.Fatalf("dave's history: %v, want %v", got, want)
		}
	})
}

// A history read whose stream has no leader (no quorum: two of three
// servers down) is served from the replica that answers, marked unchecked,
// within leaderWait — not held to the read's deadline, nor refused.
func TestHistoryReadWithoutALeaderIsServedUnchecked(t *testing.T) {
	t.Parallel() // waits for a leader to be lost, with no latency bound: run beside the other tests
	c := natstest.RunCluster(t, 3)
	nc := natstest.Connect(t, c.Servers[0].ClientURL())
	js := natstest.JetStream(t, nc)
	const size = 5
	natstest.Attempt(t, 30*time.Second, 5*time.Second, func(ctx context.Context) error {
		return Provision(ctx, js, Config{Replicas: 3, HistorySize: size, HistoryRetention: time.Hour})
	})
	j := New(nc, js, size)
	natstest.Attempt(t, 10*time.Second, 2*time.Second, j.BindHistory)
	inv := protocol.Invitation{ID: "inv1", Caller: "carol", Callee: "bob", State: protocol.StateCanceled, CreatedAt: 1, EndedAt: 1}
	natstest.Attempt(t, 10*time.Second, 2*time.Second, func(ctx context.Context) error {
		return j.Append(ctx, &inv, "bob")
	})
	// Every replica has it before the others go.
	natstest.Eventually(t, 10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		page, err := j.Read(ctx, "bob", "", size, false)
		if err != nil || len(page.Calls) != 1 || page.Unchecked != nil {
			return fmt.Errorf("read: %v, %d entries, unchecked %v", err, len(page.Calls), page.Unchecked)
		}
		return nil
	})
	c.Stop(1)
	c.Stop(2)

	var page Page
	natstest.Eventually(t, 30*time.Second, func() error { // until the lone replica knows it leads no more
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		var err error
		page, err = j.Read(ctx, "bob", "", size, false)
		took := time.Since(start)
		switch {
		case err != nil:
			return err
		case page.Unchecked == nil:
			return errors.New("read checked against a leader: the stream still has one")
		case took > 3*leaderWait:
			return fmt.Errorf("a read without a leader took %s (leaderWait %s)", took, leaderWait)
		}
		return nil
	})
	if len(page.Calls) != 1 || page.Calls[0].ID != "inv1" {
		t.Fatalf("without a leader: %+v", page.Calls)
	}
}
