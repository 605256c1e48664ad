package broker

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/protocol"
)

// Bob's send to alice has landed both its claims and is about to write its
// invitation when alice's send to bob finds her own claim already on her
// line (an earlier attempt of the same send — a retry through another
// broker — landed it after bob's claims, from a stale view of bob's line).
// Bob's send is committed: alice must wait for its invitation and merge
// into it, not drop bob's claim as if he were waiting for her (the tie
// rule for two sends that each landed only their own line's claim). Before
// the fix both invitations rang: the glare that CI's chaos run found under
// a paused NATS node.
func TestGlareNeverOvertakesACommittedSend(t *testing.T) {
	e := newStaleEnv(t)
	e.b.store = e.other // no record cache: alice's first look sees her claim
	e.online(t, "alice", "bob")

	bobClaimed, release := make(chan struct{}), make(chan struct{})
	var once, releaseOnce sync.Once
	e.b.afterClaim = func() {
		first := false
		once.Do(func() { first = true })
		if first { // bob's send, the first to claim: hold it before its invitation
			close(bobClaimed)
			<-release
		}
	}
	releaseBob := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseBob)
	e.b.onGlareWait = releaseBob // alice waits for bob: let his send finish

	type result struct {
		inv *protocol.Invitation
		err error
	}
	bobDone := make(chan result, 1)
	go func() {
		rep, err := e.b.send(e.ctx, &command{user: "bob", verb: "send", req: &protocol.Request{Device: "phone", Callee: "alice", ID: "bobs"}})
		bobDone <- result{rep.Invitation, err}
	}()
	select {
	case <-bobClaimed:
	case <-time.After(10 * time.Second):
		t.Fatal("bob's send did not claim")
	}

	// Alice's claim lands on her line after bob's (an earlier attempt of
	// her send): her line holds bob's incoming claim and her outgoing one.
	line, rev, err := e.other.GetLineFresh(e.ctx, "alice")
	if err != nil || len(line.Claims) != 1 || line.Claims[0].ID != "bobs" {
		t.Fatalf("alice's line after bob's claims: %+v, %v", line, err)
	}
	mine := store.Claim{ID: "alices", At: time.Now().UnixMilli(), Peer: "bob", Out: true}
	if _, err := e.other.Commit(e.ctx, store.PutLine("alice", line.WithClaims(append(line.Claims, mine)), rev)); err != nil {
		t.Fatal(err)
	}

	rep, err := e.b.send(e.ctx, &command{user: "alice", verb: "send", req: &protocol.Request{Device: "phone", Callee: "bob", ID: "alices"}})
	releaseBob()
	if err != nil {
		t.Fatalf("alice's send: %v", err)
	}
	var bob result
	select {
	case bob = <-bobDone:
	case <-time.After(10 * time.Second):
		t.Fatal("bob's send did not finish")
	}
	if bob.err != nil {
		t.Fatalf("bob's send: %v", bob.err)
	}
	a := rep.Invitation
	if a.State != protocol.StateCanceled || a.Reason != protocol.ReasonMerged || a.MergedInto != "bobs" {
		t.Fatalf("alice's send: %s/%s into %q, bob's: %s/%s — want alice's merged into bob's (two invitations rang each other)",
			a.State, a.Reason, a.MergedInto, bob.inv.State, bob.inv.Reason)
	}
	call, _, err := e.other.GetInvitationFresh(e.ctx, "bobs")
	if err != nil || call.State != protocol.StateAccepting && call.State != protocol.StateAccepted {
		t.Fatalf("bob's invitation after the merge: %s, %v (want accepted by alice)", call.State, err)
	}
}

// The same committed send of bob's, seen by alice through a stale copy of
// her own line (her broker's record cache, which holds her earlier claim
// but not bob's): her send takes bob's send for one that waits for hers
// and drops his claim from his line. That is right only if her line is as
// she read it, so her line is written first: it has changed, the write
// fails, bob's line keeps his claim, and alice looks again and sees bob's
// send committed. Written in parallel, bob's line lost his claim while hers
// conflicted, and her next look found nothing of bob's send on his line:
// her invitation rang beside his.
func TestGlareTieDropWritesTheCallersLineFirst(t *testing.T) {
	e := newStaleEnv(t)
	e.online(t, "alice", "bob")
	now := time.Now().UnixMilli()
	alices := store.Claim{ID: "alices", At: now - 5, Peer: "bob", Out: true}
	// Her earlier attempt's claim, written through her broker (its cache has it)...
	if _, err := e.b.store.Commit(e.ctx, store.PutLine("alice", store.Line{Claims: []store.Claim{alices}}, 0)); err != nil {
		t.Fatal(err)
	}
	// ...then bob's send lands both its claims through another broker, and
	// has not written its invitation yet.
	line, rev, err := e.other.GetLineFresh(e.ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	bobsIn := store.Claim{ID: "bobs", At: now, Peer: "bob"}
	if _, err := e.other.Commit(e.ctx, store.PutLine("alice", line.WithClaims(append(line.Claims, bobsIn)), rev)); err != nil {
		t.Fatal(err)
	}
	bobsOut := store.Claim{ID: "bobs", At: now, Peer: "alice", Out: true}
	if _, err := e.other.Commit(e.ctx, store.PutLine("bob", store.Line{Claims: []store.Claim{bobsOut}}, 0)); err != nil {
		t.Fatal(err)
	}

	rep, err := e.b.send(e.ctx, &command{user: "alice", verb: "send", req: &protocol.Request{Device: "phone", Callee: "bob", ID: "alices"}})
	if err != nil {
		t.Fatalf("alice's send: %v", err)
	}
	if inv := rep.Invitation; inv.State != protocol.StateRefused || inv.Reason != protocol.ReasonBusy {
		t.Fatalf("alice's send beside bob's committed (never written) send: %s/%s, want REFUSED/BUSY", inv.State, inv.Reason)
	}
	bl, _, err := e.other.GetLineFresh(e.ctx, "bob")
	if err != nil || !slices.ContainsFunc(bl.Claims, func(c store.Claim) bool { return c == bobsOut }) {
		t.Fatalf("bob's line lost his send's claim: %+v, %v", bl, err)
	}
}

// Bob's invitation to alice rings, but its claim on bob's own line is gone
// (whatever dropped it): alice's send still finds it, through its claim on
// her line, and merges into it instead of ringing bob beside it.
func TestGlareFindsTheCalleesInvitationOnTheCallersLine(t *testing.T) {
	e := newStaleEnv(t)
	e.online(t, "alice", "bob")
	timeouts, err := e.b.cfg.timeoutsFor(nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rec := lifecycle.New("bobs", "bob", "phone", "alice", "", "", timeouts, now)
	if _, err := e.other.Commit(e.ctx, store.PutInvitation(rec, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.other.Commit(e.ctx, store.PutLine("alice", store.Line{Claims: []store.Claim{{ID: "bobs", At: now.UnixMilli(), Peer: "bob"}}}, 0)); err != nil {
		t.Fatal(err)
	}
	inv := e.send(t, "alice", "bob")
	if inv.State != protocol.StateCanceled || inv.Reason != protocol.ReasonMerged || inv.MergedInto != "bobs" {
		t.Fatalf("alice's send while bob's invitation to her rings: %s/%s into %q, want merged into bobs", inv.State, inv.Reason, inv.MergedInto)
	}
}
