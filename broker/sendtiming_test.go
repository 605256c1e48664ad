package broker

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/protocol"
)

// A send whose line claims took longer than a third of the claim grace
// gives up with UNAVAILABLE instead of creating the invitation: by then
// another sender could be about to count its claims as abandoned. The
// claims it leaves hold like any abandoned claim (for the grace).
func TestSlowClaimGivesUp(t *testing.T) {
	e := newStaleEnv(t)
	ctx := e.ctx
	e.online(t, "alice")
	var skew atomic.Int64 // ns added to the broker's clock
	e.b.clock = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	e.b.afterClaim = func() { skew.Store(int64(e.b.cfg.ClaimGrace/3 + time.Millisecond)) }

	c := &command{user: "alice", verb: "send", req: &protocol.Request{Device: "phone", Callee: "bob", ID: "slowclaim"}}
	_, err := e.b.send(ctx, c)
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.CodeUnavailable {
		t.Fatalf("send after a slow claim: %v, want UNAVAILABLE", err)
	}
	if _, _, err := e.other.GetInvitationFresh(ctx, "slowclaim"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the invitation was written after the claim grew old: %v", err)
	}
	line, _, err := e.other.GetLineFresh(ctx, "bob")
	if err != nil || len(line.Claims) != 1 || line.Claims[0].ID != "slowclaim" {
		t.Fatalf("bob's line: %+v, %v (want the abandoned claim)", line, err)
	}
}
