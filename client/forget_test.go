package client

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/brokertest"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// A client forgets a finished invitation after its remember window; a
// history catch-up that still reaches back past its end (the window of a
// resync, re-armed by later ones while a fault lasts) must not fetch it
// again as one the client never saw, or its end callback fires a second
// time. Chaos runs saw thousands of such re-fetches, once per heartbeat.
func TestCatchUpSkipsForgottenInvitations(t *testing.T) {
	srv := brokertest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice, err := New(natstest.Connect(t, srv.URL), "alice", "phone", WithoutHeartbeat())
	if err != nil {
		t.Fatal(err)
	}
	var canceled atomic.Int32
	bob, err := New(natstest.Connect(t, srv.URL), "bob", "phone", WithoutHeartbeat(), WithRemember(time.Millisecond),
		WithHandler(Handler{OnRemoteInvitationCanceled: func(*RemoteInvitation) { canceled.Add(1) }}))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Client{alice, bob} {
		if err := c.Login(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
	}
	since := time.Now().Add(-time.Second).UnixMilli()
	li := alice.CreateLocalInvitation("bob")
	if err := li.Send(ctx); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if _, ok := bob.Invitation(li.ID); !ok {
			return errors.New("bob has not seen the invitation")
		}
		return nil
	})
	if err := li.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if canceled.Load() != 1 {
			return errors.New("bob has not seen the cancel")
		}
		return nil
	})
	// The history entry is written after the end: wait for it, so that
	// the catch-up below would find it.
	natstest.Eventually(t, 10*time.Second, func() error {
		page, err := bob.History(ctx, "", 10)
		if err != nil || len(page.Calls) == 0 {
			return errors.New("no history entry yet")
		}
		return nil
	})
	bob.reconcile(ctx, time.Now().Add(time.Second)) // past the remember window: pruned
	if _, ok := bob.Invitation(li.ID); ok {
		t.Fatal("the finished invitation was not forgotten")
	}
	if err := bob.catchUp(ctx, since); err != nil {
		t.Fatal(err)
	}
	if _, ok := bob.Invitation(li.ID); ok || canceled.Load() != 1 {
		t.Fatalf("the catch-up fetched a forgotten invitation again (tracked %v, Canceled fired %d times)", ok, canceled.Load())
	}

	// Any other view of it must not revive it either: the projector
	// republishing its end event (a redelivery), or an explicit get.
	end, err := bob.Get(ctx, li.ID)
	if err != nil {
		t.Fatal(err)
	}
	if end.State != protocol.StateCanceled {
		t.Fatalf("get of the canceled invitation says %v", end.State)
	}
	subj, err := subjects.UserEvents("bob")
	if err != nil {
		t.Fatal(err)
	}
	data, err := protocol.Marshal(protocol.Event{Type: protocol.EventCanceled, Role: protocol.RoleCallee, Invitation: end})
	if err != nil {
		t.Fatal(err)
	}
	nc := natstest.Connect(t, srv.URL)
	if err := nc.Publish(subj, data); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// A second, fresh invitation's event after it: once bob has seen that
	// one, the replayed one (published before it, same connection) was
	// handled.
	li2 := alice.CreateLocalInvitation("bob")
	if err := li2.Send(ctx); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if _, ok := bob.Invitation(li2.ID); !ok {
			return errors.New("bob has not seen the second invitation")
		}
		return nil
	})
	if _, ok := bob.Invitation(li.ID); ok || canceled.Load() != 1 {
		t.Fatalf("a replayed end event or a get revived a forgotten invitation (tracked %v, Canceled fired %d times)", ok, canceled.Load())
	}
}
