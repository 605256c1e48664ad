package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/protocol"
)

// Two brokers' stores gossip: what one writes (an invitation, a line, a
// freed line) shows up in the other's cache at its revision, once it
// listens; before, nothing is published at all. Gossip that does not
// match its key is ignored.
func TestCacheGossip(t *testing.T) {
	nc, _ := openStore(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := openGossiping(ctx, t, nc.ConnectedUrl(), "a"), openGossiping(ctx, t, nc.ConnectedUrl(), "b")
	heard := make(chan *nats.Msg, 16)
	if _, err := nc.ChanSubscribe(store.GossipPrefix+"a", heard); err != nil {
		t.Fatal(err)
	}
	rec := lifecycle.New("early", "alice", "phone", "bob", "", "", lifecycle.Timeouts{Offline: time.Minute, Expire: time.Minute, Accept: time.Minute}, time.Now())
	if _, err := a.Commit(ctx, store.PutInvitation(rec, 0)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(heard) != 0 {
		t.Fatal("a store that listens to no peer published its write")
	}

	stop, err := b.ListenTo("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ListenTo("b"); err != nil {
		t.Fatal(err)
	}
	rec.ID = "gossiped"
	rev, err := a.Commit(ctx, store.PutInvitation(rec, 0))
	if err != nil {
		t.Fatal(err)
	}
	lineRev, err := a.Commit(ctx, store.PutLine("bob", store.Line{Claims: []store.Claim{{ID: rec.ID, At: 1, Peer: "alice"}}}, 0))
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		r, ok := b.CachedInvitation(rec.ID)
		if !ok || r.Revision != rev {
			return fmt.Errorf("b's cache: %v rev %d, want rev %d", ok, r.Revision, rev)
		}
		l, lrev, ok := b.CachedLine("bob")
		if !ok || lrev != lineRev || len(l.Claims) != 1 || l.Claims[0].ID != rec.ID {
			return fmt.Errorf("b's cached line: %v %+v rev %d, want rev %d", ok, l, lrev, lineRev)
		}
		return nil
	})
	freed, err := a.Commit(ctx, store.PutLine("bob", store.Line{}, lineRev))
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if l, lrev, ok := b.CachedLine("bob"); !ok || lrev != freed || len(l.Claims) != 0 {
			return fmt.Errorf("b's cached line after the delete: %v %+v rev %d, want free at %d", ok, l, lrev, freed)
		}
		return nil
	})
	// A message whose record is not its key's is dropped.
	forged := nats.NewMsg(store.GossipPrefix + "a")
	forged.Header.Set("Ringer-Key", "inv.other")
	forged.Header.Set("Ringer-Rev", "999")
	victim := rec
	victim.ID = "victim"
	forged.Data = protocol.MustMarshal(&victim)
	if err := nc.PublishMsg(forged); err != nil {
		t.Fatal(err)
	}
	after := nats.NewMsg(store.GossipPrefix + "a") // handled after it: same publisher, same subscription
	after.Header.Set("Ringer-Key", "line.carol")
	after.Header.Set("Ringer-Rev", "5")
	if err := nc.PublishMsg(after); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if _, rev, ok := b.CachedLine("carol"); !ok || rev != 5 {
			return fmt.Errorf("the message after the forged one not heard yet")
		}
		return nil
	})
	for _, id := range []string{"other", "victim"} {
		if _, ok := b.CachedInvitation(id); ok {
			t.Fatalf("a record sent under another key was cached as %s", id)
		}
	}
	stop()
	if _, ok := b.CachedInvitation("early"); ok {
		t.Fatal("b cached a write made before it listened")
	}
}

// A batch of timers one broker stores is gossiped to its peers: a peer
// that is handed one of those timers again (the next revision of its
// invitation, projected there, relies on it) knows it is stored and does
// not store it a second time; a timer it was not told of it stores. A
// gossiped batch whose body is not a batch is ignored.
func TestTimersArmedByAPeerAreNotStoredAgain(t *testing.T) {
	nc, _ := openStore(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := openGossiping(ctx, t, nc.ConnectedUrl(), "a"), openGossiping(ctx, t, nc.ConnectedUrl(), "b")
	for _, l := range []struct {
		st   *store.Store
		peer string
	}{{a, "b"}, {b, "a"}} {
		if _, err := l.st.ListenTo(l.peer); err != nil {
			t.Fatal(err)
		}
	}
	junk := nats.NewMsg(store.GossipPrefix + "a")
	junk.Header.Set("Ringer-Key", "timers.armed")
	junk.Header.Set("Ringer-Rev", "1")
	junk.Data = []byte("not a batch")
	if err := nc.PublishMsg(junk); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(time.Hour).UnixMilli()
	if err := a.ArmTimers(ctx, 0, at, []store.TimerEntry{{ID: "shared", At: at}}); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if !b.KnownArmed("shared", at) {
			return fmt.Errorf("b has not heard that a stored the timer of shared")
		}
		return nil
	})
	if b.KnownArmed("shared", at+1) {
		t.Fatal("b takes a timer at another deadline for the one a stored")
	}
	before := b.Stats()
	armAndClose(t, b.NewTimerBatcher(time.Hour), store.TimerEntry{ID: "shared", At: at}, store.TimerEntry{ID: "own", At: at})
	if d := b.Stats().Sub(before); d.Timers != 1 || d.Skipped != 1 {
		t.Errorf("b stored %d schedules and skipped %d timers, want 1 (own) and 1 (shared)", d.Timers, d.Skipped)
	}
}

// openGossiping opens a store with a record cache on a connection of its
// own to url, gossiping as instance (listening to no one yet).
func openGossiping(ctx context.Context, t *testing.T, url, instance string) *store.Store {
	t.Helper()
	st, err := store.Open(ctx, natstest.Connect(t, url), store.CacheSize(100))
	if err != nil {
		t.Fatal(err)
	}
	st.Gossip(instance)
	return st
}
