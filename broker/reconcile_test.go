package broker_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// The SDK asks the broker about every tracked invitation that should have
// ended by now (reconcile, on each heartbeat). A NOT_FOUND for one it still
// sees live comes from a replica catching up (a live invitation is never
// removed), so the SDK keeps tracking it: forgetting it made a redelivered
// event of that invitation fire its callback a second time (a CI chaos run
// saw RECEIVED applied twice at one revision). Here the record is deleted
// under the clients, so every get answers NOT_FOUND.
func TestReconcileKeepsLiveInvitationOnNotFound(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.CacheSize = 0 // gets read the bucket, not the broker's cache
	env := ringertest.Start(t, cfg)
	alice, bob := env.Login("alice", "phone"), env.Login("bob", "phone")
	li := alice.Invite(t, "bob")
	bob.Rec.WaitRemote(t, li.ID)
	// The ring is followed by bob's automatic ack (RECEIVED): wait for it to
	// land, or it races the delete below (CI saw the delete's CAS lose).
	alice.Rec.Wait(t, "ReceivedByPeer "+li.ID)

	st := env.Brokers[0].Store()
	ctx := ringertest.Ctx(t)
	_, rev, err := st.GetInvitationFresh(ctx, li.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Commit(ctx, store.Write{Key: subjects.InvitationKey(li.ID), Delete: true, ExpectRev: rev}); err != nil {
		t.Fatal(err)
	}
	// Past the deadline (2 s) plus the SDK's 2 s of patience, both clients
	// ask at every heartbeat (every 667 ms): a dozen reads means each asked
	// several times.
	before := st.Stats().Reads
	natstest.Eventually(t, 20*time.Second, func() error {
		if n := st.Stats().Reads - before; n < 12 {
			return fmt.Errorf("%d reads so far", n)
		}
		return nil
	})
	for _, c := range []*ringertest.Client{alice, bob} {
		if inv, ok := c.Invitation(li.ID); !ok || !inv.Live() {
			t.Errorf("%s: tracking of live %s dropped on NOT_FOUND (ok=%v, %s)", c.User(), li.ID, ok, inv.State)
		}
	}
}

// A command on an invitation the client sees live is asked again when the
// broker answers NOT_FOUND, which can only be stale (a replica catching up,
// a leader deposed a moment ago: live invitations are never removed). A
// stress run of loadgen on R3 saw a callee's refuse of an invitation that
// had just rung answered NOT_FOUND; the invitation then expired instead.
// Here the record is deleted under bob's refuse and put back once the
// broker has denied it once.
func TestActionsRetryAStaleNotFound(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.CacheSize = 0                      // the refuse reads the bucket
	cfg.Timeouts.Expire = 20 * time.Second // the retry, not the deadline, is under test
	env := ringertest.Start(t, cfg)
	alice, bob := env.Login("alice", "phone"), env.Login("bob", "phone")
	li := alice.Invite(t, "bob")
	ri := bob.Rec.WaitRemote(t, li.ID)
	alice.Rec.Wait(t, "ReceivedByPeer "+li.ID) // bob's automatic ack has landed

	st := env.Brokers[0].Store()
	ctx := ringertest.Ctx(t)
	restore := hide(t, st, li.ID)
	denied := watchErrorReplies(t, env.URL, "no invitation "+li.ID)
	refused := make(chan error, 1)
	go func() { refused <- ri.Refuse(ctx, "no") }()
	select {
	case <-denied:
	case <-time.After(ringertest.Wait):
		t.Fatal("the broker never denied the refuse")
	}
	restore()
	select {
	case err := <-refused:
		if err != nil {
			t.Fatalf("refuse: %v", err)
		}
	case <-time.After(ringertest.Wait):
		t.Fatal("refuse never returned")
	}
	awaitStored(t, st, li.ID, protocol.StateRefused, 5*time.Second)
}

// A client remembers an ended invitation for WithRemember (its view stays
// readable, late duplicates of its events are dropped), then prunes it at a
// heartbeat; one still live is never pruned.
func TestEndedInvitationsAreForgottenAfterRemember(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig()) // heartbeats every ~0.7 s
	alice := env.Login("alice", "phone", client.WithRemember(300*time.Millisecond))
	bob := env.Login("bob", "phone")
	carol := env.Login("carol", "phone")
	ended := alice.Invite(t, "bob")
	bob.Rec.WaitRemote(t, ended.ID)
	if err := ended.Cancel(ringertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	alice.Rec.Wait(t, "Canceled "+ended.ID)
	live := alice.CreateLocalInvitation("carol")
	live.Timeouts = &protocol.Timeouts{OfflineMs: 60000, ExpireMs: 60000} // stays live through the test
	if err := live.Send(ringertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	carol.Rec.WaitRemote(t, live.ID)
	natstest.Eventually(t, ringertest.Wait, func() error {
		if _, ok := alice.Invitation(ended.ID); ok {
			return fmt.Errorf("alice still remembers %s long after it ended", ended.ID)
		}
		return nil
	})
	if _, ok := alice.Invitation(live.ID); !ok {
		t.Errorf("the live invitation %s was forgotten", live.ID)
	}
	// bob keeps the default (5 minutes).
	if _, ok := bob.Invitation(ended.ID); !ok {
		t.Errorf("bob forgot %s with the default retention", ended.ID)
	}
	if _, err := client.New(alice.NC, "alice", "tablet", client.WithRemember(0)); !errors.Is(err, client.ErrInvalidOption) {
		t.Errorf("WithRemember(0): %v, want ErrInvalidOption", err)
	}
}

// hide deletes invitation id's record, as a store that is behind shows it
// (NOT_FOUND), and returns what puts it back.
func hide(t *testing.T, st *store.Store, id string) (restore func()) {
	t.Helper()
	ctx := ringertest.Ctx(t)
	rec, rev, err := st.GetInvitationFresh(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	gone, err := st.Commit(ctx, store.Write{Key: subjects.InvitationKey(id), Delete: true, ExpectRev: rev})
	if err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if _, err := st.Commit(ctx, store.PutInvitation(rec, gone)); err != nil {
			t.Fatal(err)
		}
	}
}
