package broker

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// A send whose line claims took longer than a third of the claim grace
// gives up with UNAVAILABLE instead of creating the invitation: by then
// another sender could be about to count its claims as abandoned. The
// claims it leaves hold like any abandoned claim (for the grace).
func TestSlowClaimGivesUp(t *testing.T) {
	e := newStaleEnv(t)
	slowClaim(t, e, "alice", "bob", "slowclaim")
}

// The same with atomic sends, where the callee's line is in another
// partition than the record: claimed on its own first, it is as old when
// the batch of the caller's claim and the record would go, which then
// does not (nothing of it lands).
func TestSlowClaimGivesUpBeforeTheBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := natstest.RunCluster(t, 3)
	nc := natstest.Connect(t, c.URLs())
	natstest.Attempt(t, time.Minute, 10*time.Second, func(ctx context.Context) error {
		return store.Provision(ctx, nc, store.ProvisionConfig{Replicas: 3, Partitions: 2, AckWait: time.Second})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	cfg := DefaultConfig()
	cfg.Replicas, cfg.Partitions, cfg.AtomicSends = 3, 2, true
	e := staleEnvOn(t, ctx, nc, cfg)
	// The caller and the record in partition 0, the callee in 1.
	in := func(p subjects.Partition, key func(string) string, prefix string) string {
		for i := 0; ; i++ {
			if s := fmt.Sprintf("%s%d", prefix, i); subjects.PartitionOf(key(s), 2) == p {
				return s
			}
		}
	}
	caller, callee := in(0, subjects.LineKey, "caller"), in(1, subjects.LineKey, "callee")
	id := in(0, subjects.InvitationKey, "slowbatch")
	if in, ok := e.b.batchable([2]string{callee, caller}, id, false); !ok || in != [2]bool{false, true} {
		t.Fatalf("batchable: %v %v, want the caller's line only in the batch", in, ok)
	}
	// A send that must write the caller's line before the callee's (a
	// glare drop) cannot claim the callee's first and batch the caller's.
	if _, ok := e.b.batchable([2]string{callee, caller}, id, true); ok {
		t.Fatal("batchable with the caller's line first: the callee's would be claimed before it")
	}
	if line := slowClaim(t, e, caller, callee, id); len(line.Claims) > 0 {
		t.Fatalf("%s's line: %+v (the batch with its claim must not have gone)", caller, line)
	}
}

// slowClaim has caller send invitation id to callee with a clock that
// jumps past a third of the grace right after the first claim, checks the
// send gave UNAVAILABLE, wrote no invitation and left its claim on the
// callee's line, and returns the caller's line as it is.
func slowClaim(t *testing.T, e *staleEnv, caller, callee, id string) store.Line {
	t.Helper()
	ctx := e.ctx
	e.online(t, caller)
	var skew atomic.Int64 // ns added to the broker's clock
	e.b.clock = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	e.b.afterClaim = func() { skew.Store(int64(e.b.cfg.ClaimGrace/3 + time.Millisecond)) }

	c := &command{user: caller, verb: "send", req: &protocol.Request{Device: "phone", Callee: callee, ID: id}}
	_, err := e.b.send(ctx, c)
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.CodeUnavailable {
		t.Fatalf("send after a slow claim: %v, want UNAVAILABLE", err)
	}
	if _, _, err := e.other.GetInvitationFresh(ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the invitation was written after the claim grew old: %v", err)
	}
	line, _, err := e.other.GetLineFresh(ctx, callee)
	if err != nil || len(line.Claims) != 1 || line.Claims[0].ID != id {
		t.Fatalf("%s's line: %+v, %v (want the abandoned claim)", callee, line, err)
	}
	mine, _, err := e.other.GetLineFresh(ctx, caller)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return mine
}

// A group send gives up the same way: its claims on the caller's and every
// callee's line were written, then the clock passes a third of the grace
// before the record is; the send answers UNAVAILABLE, writes no record and
// leaves its claims to lapse like any abandoned claim.
func TestSlowGroupClaimGivesUp(t *testing.T) {
	e := newStaleEnv(t)
	const id = "slowgroup"
	e.online(t, "alice")
	var skew atomic.Int64 // ns added to the broker's clock
	e.b.clock = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	e.b.afterClaim = func() { skew.Store(int64(e.b.cfg.ClaimGrace/3 + time.Millisecond)) }

	c := &command{user: "alice", verb: "send", req: &protocol.Request{Device: "phone", Callees: []string{"bob", "carol"}, Mode: protocol.ModeJoin, ID: id}}
	_, err := e.b.sendGroup(e.ctx, c)
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.CodeUnavailable {
		t.Fatalf("group send after a slow claim: %v, want UNAVAILABLE", err)
	}
	if _, _, err := e.other.GetInvitationFresh(e.ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the group invitation was written after its claims grew old: %v", err)
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		line, _, err := e.other.GetLineFresh(e.ctx, u)
		if err != nil || len(line.Claims) != 1 || line.Claims[0].ID != id {
			t.Fatalf("%s's line: %+v, %v (want the abandoned claim)", u, line, err)
		}
	}
}
