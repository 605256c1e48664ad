package broker_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
)

func TestBlockedCallerIsRefusedAsBusyWithoutRinging(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	mallory := env.Login("mallory", "phone")
	alice := env.Login("alice", "phone")
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)

	list, err := bob.Block(ctx, "mallory")
	if err != nil || !slices.Equal(list, []string{"mallory"}) {
		t.Fatalf("block: %v, %v", list, err)
	}
	li := mallory.Invite(t, "bob")
	if inv := li.Invitation(); inv.State != protocol.StateRefused || inv.Reason != protocol.ReasonBusy || inv.Response != "busy" {
		t.Fatalf("a blocked caller's invitation: %+v, want a busy refusal", inv)
	}
	mallory.Rec.Wait(t, "Refused "+li.ID+" busy")
	// Others still ring bob; bob never heard of mallory's attempt.
	call := alice.Invite(t, "bob")
	bob.Rec.WaitRemote(t, call.ID)
	for _, l := range bob.Rec.Lines() {
		if strings.Contains(l, li.ID) {
			t.Fatalf("bob heard of the blocked invitation: %q", l)
		}
	}
	if err := call.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	// It is in mallory's history, not in bob's.
	if r := waitHistory(t, mallory, 1, false)[0]; r.ID != li.ID || r.Reason != protocol.ReasonBusy {
		t.Fatalf("mallory's history: %+v", r)
	}
	for _, r := range waitHistory(t, bob, 1, false) {
		if r.ID == li.ID {
			t.Fatalf("the blocked invitation is in bob's history: %+v", r)
		}
	}

	// Blocking twice is once; the list survives bob's own calls (which
	// rewrite his line); unblocking lets mallory ring again.
	if list, err := bob.Block(ctx, "mallory"); err != nil || len(list) != 1 {
		t.Fatalf("block again: %v, %v", list, err)
	}
	out := bob.Invite(t, "alice")
	if err := out.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	bob.Rec.Wait(t, "Canceled "+out.ID)
	if inv := mallory.Invite(t, "bob").Invitation(); inv.Reason != protocol.ReasonBusy {
		t.Fatalf("after bob's own call, mallory rang: %+v", inv)
	}
	if list, err := bob.Unblock(ctx, "mallory"); err != nil || len(list) != 0 {
		t.Fatalf("unblock: %v, %v", list, err)
	}
	again := mallory.Invite(t, "bob")
	bob.Rec.WaitRemote(t, again.ID)
}

func TestBlockListIsBounded(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.MaxBlocked = 3
	env := ringertest.Start(t, cfg)
	bob := env.NewClient("bob", "phone") // no session needed
	ctx := ringertest.Ctx(t)
	for i := range 3 {
		if _, err := bob.Block(ctx, fmt.Sprintf("spammer%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bob.Block(ctx, "spammer3"); protocol.CodeOf(err) != protocol.CodeResourceExhausted {
		t.Fatalf("a fourth block with a limit of 3: %v, want RESOURCE_EXHAUSTED", err)
	}
	if _, err := bob.Block(ctx, "spammer1"); err != nil {
		t.Fatalf("blocking a blocked user again at the limit: %v", err)
	}
	for _, peer := range []string{"", "bob", "not an id", "x/y"} {
		if _, err := bob.Block(ctx, peer); !errors.Is(err, client.ErrInvalidArgument) {
			t.Errorf("block %q: %v, want INVALID_ARGUMENT", peer, err)
		}
	}
	if list, err := bob.Unblock(ctx, "nobody"); err != nil || len(list) != 3 {
		t.Fatalf("unblocking someone not blocked: %v, %v", list, err)
	}
}
