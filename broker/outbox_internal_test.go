package broker

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// outboxEnv is a started broker, a store of another writer (untracked: the
// broker never projects what it commits) standing for the broker's own
// writes whose outcome the test hands to the outbox, and bob's events.
type outboxEnv struct {
	ctx    context.Context
	b      *Broker
	other  *store.Store
	nc     *nats.Conn
	events chan *nats.Msg // bob's, in the order the connection read them
}

func newOutboxEnv(t *testing.T) *outboxEnv {
	t.Helper()
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv.ClientURL())
	cfg := DefaultConfig()
	cfg.AckWait = time.Second
	b, err := New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Shutdown(ctx) })
	other, err := store.Open(ctx, natstest.Connect(t, srv.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	e := &outboxEnv{ctx: ctx, b: b, other: other, nc: nc, events: make(chan *nats.Msg, 64)}
	subj, _ := subjects.UserEvents("bob")
	if _, err := nc.ChanSubscribe(subj, e.events); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return e
}

// commit writes a fresh invitation from alice to bob (or a's next revision
// of it) through the other writer and returns it with its revision.
func (e *outboxEnv) commit(t *testing.T, id string, a *lifecycle.Action) lifecycle.Record {
	t.Helper()
	var (
		rec lifecycle.Record
		rev uint64
	)
	if a == nil {
		rec = lifecycle.New(id, "alice", "phone", "bob", "", "", e.b.cfg.Timeouts, time.Now())
	} else {
		cur, curRev, err := e.other.GetInvitationFresh(e.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if rec, _, err = lifecycle.Apply(cur, *a, time.Now()); err != nil {
			t.Fatal(err)
		}
		rev = curRev
	}
	got, err := e.other.Commit(e.ctx, store.PutInvitation(rec, rev))
	if err != nil {
		t.Fatal(err)
	}
	rec.Revision = got
	return rec
}

// settled waits until the outbox holds nothing.
func (e *outboxEnv) settled(t *testing.T) {
	t.Helper()
	natstest.Eventually(t, 10*time.Second, func() error {
		if !e.b.outbox.settled() {
			return errors.New("the outbox still holds a write")
		}
		return nil
	})
}

// event waits for bob's event about id at revision rev.
func (e *outboxEnv) event(t *testing.T, id string, rev uint64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-e.events:
			if ev := decodeEvent(t, m); ev.Invitation.ID == id && ev.Invitation.Revision == rev {
				return
			}
		case <-deadline:
			t.Fatalf("bob got no event for %s at revision %d", id, rev)
		}
	}
}

// none checks that bob got no event about id: the broker publishes on the
// subscription's connection, so after a flush everything it published
// before the call is in the channel (a channel subscription is fed as the
// connection reads).
func (e *outboxEnv) none(t *testing.T, id string) {
	t.Helper()
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case m := <-e.events:
			if ev := decodeEvent(t, m); ev.Invitation.ID == id {
				t.Fatalf("bob got %s for %s at revision %d", ev.Type, id, ev.Invitation.Revision)
			}
		default:
			return
		}
	}
}

// A projection that failed is tried again; one that a later revision
// superseded meanwhile sends its events and writes its journals all the
// same, since a group callee whose leg it alone ended hears of it, and
// enters it in its history, from no later revision.
func TestOutboxRetriesOnlyTheNewestRevision(t *testing.T) {
	e := newOutboxEnv(t)
	t.Run("newest: projected again", func(t *testing.T) {
		w := e.b.outbox.Begin(0).(*outboxWrite)
		rec := e.commit(t, "retried", nil)
		e.b.outbox.stored(0, w.hold, rec.Revision) // as Stored, without its projection
		c := &committed{o: e.b.outbox, part: 0, rec: rec}
		_ = c.NakWithDelay(0)
		e.event(t, rec.ID, rec.Revision)
		e.settled(t)
	})
	t.Run("superseded: its events and journals", func(t *testing.T) {
		g := lifecycle.NewGroup("leftout", "alice", "phone", protocol.ModeJoin, []string{"bob", "carol"},
			func(string) bool { return false }, "", "", e.b.cfg.Timeouts, time.Now())
		if _, err := e.other.Commit(e.ctx, store.PutInvitation(g, 0)); err != nil {
			t.Fatal(err)
		}
		w := e.b.outbox.Begin(0).(*outboxWrite)
		refused := e.commit(t, g.ID, &lifecycle.Action{Kind: lifecycle.Refuse, User: "bob", Device: "d1"})
		e.b.outbox.stored(0, w.hold, refused.Revision)
		// carol refuses too: the invitation ends, a revision that does not
		// touch bob's leg, so bob's entry is the superseded revision's.
		e.commit(t, g.ID, &lifecycle.Action{Kind: lifecycle.Refuse, User: "carol", Device: "d1"})
		_ = (&committed{o: e.b.outbox, part: 0, rec: refused}).NakWithDelay(0)
		e.settled(t)
		page, err := e.b.journal.Read(e.ctx, "bob", "", 10, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Calls) != 1 || page.Calls[0].ID != g.ID {
			t.Fatalf("bob's history %+v, want the invitation whose leg the superseded revision ended", page.Calls)
		}
		e.event(t, g.ID, refused.Revision) // bob learns his leg ended: no later revision tells him
	})
	if n := testutil.ToFloat64(e.b.metrics.outboxRetries); n != 2 {
		t.Errorf("ringer_outbox_retries_total = %g, want 2", n)
	}
}

// A write whose answer was lost keeps its hold until its resolver can
// tell: stored, the revision is projected; not stored, the hold is dropped
// and nothing is published.
func TestOutboxResolvesAWriteWhoseAnswerWasLost(t *testing.T) {
	e := newOutboxEnv(t)
	t.Run("stored", func(t *testing.T) {
		w := e.b.outbox.Begin(0)
		rec := e.commit(t, "lostanswer", nil)
		var asked atomic.Int32
		w.Unknown(rec, func(context.Context) (uint64, bool, error) {
			if asked.Add(1) == 1 {
				return 0, false, errors.New("no leader yet") // cannot tell: ask again
			}
			return rec.Revision, true, nil
		})
		e.event(t, rec.ID, rec.Revision)
		e.settled(t)
		if asked.Load() < 2 {
			t.Fatalf("resolver asked %d times", asked.Load())
		}
	})
	t.Run("undecided for too long", func(t *testing.T) {
		e.b.outbox.mu.Lock()
		e.b.outbox.undecided = 0
		e.b.outbox.mu.Unlock()
		defer func() {
			e.b.outbox.mu.Lock()
			e.b.outbox.undecided = undecidedFor
			e.b.outbox.mu.Unlock()
		}()
		w := e.b.outbox.Begin(0)
		rec := lifecycle.New("neverdecided", "alice", "phone", "bob", "", "", e.b.cfg.Timeouts, time.Now())
		w.Unknown(rec, func(context.Context) (uint64, bool, error) { return 0, false, store.ErrUndecided })
		e.settled(t)
		e.none(t, rec.ID)
	})
	t.Run("not stored", func(t *testing.T) {
		w := e.b.outbox.Begin(0)
		rec := lifecycle.New("neverstored", "alice", "phone", "bob", "", "", e.b.cfg.Timeouts, time.Now())
		w.Unknown(rec, func(context.Context) (uint64, bool, error) { return 0, false, nil })
		e.settled(t)
		e.none(t, rec.ID)
	})
	for found, want := range map[string]float64{"stored": 1, "not_stored": 1, "undecided": 1} {
		if n := testutil.ToFloat64(e.b.metrics.outboxUnknown.WithLabelValues(found)); n != want {
			t.Errorf("ringer_outbox_unknown_writes_total{found=%q} = %g, want %g", found, n, want)
		}
	}
}

func decodeEvent(t *testing.T, m *nats.Msg) *protocol.Event {
	t.Helper()
	ev, err := protocol.DecodeEvent(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// The outbox's gauges are what its watermarks were at the last refresh: a
// committed revision not yet projected is one hold, its watermark one
// sequence below what was acknowledged; projected, both are back to 0.
func TestOutboxGaugesAtRefresh(t *testing.T) {
	e := newOutboxEnv(t)
	o := e.b.outbox
	w := o.Begin(0).(*outboxWrite)
	rec := e.commit(t, "gauged", nil)
	o.stored(0, w.hold, rec.Revision) // as Stored, without its projection
	gauges := func(held, lag float64) {
		t.Helper()
		if err := o.refresh(e.ctx); err != nil {
			t.Fatal(err)
		}
		if got := testutil.ToFloat64(e.b.metrics.outboxHeld); got != held {
			t.Errorf("ringer_outbox_held = %g, want %g", got, held)
		}
		if got := testutil.ToFloat64(e.b.metrics.outboxLag); got != lag {
			t.Errorf("ringer_outbox_watermark_lag = %g, want %g", got, lag)
		}
	}
	gauges(1, 1)
	_ = (&committed{o: o, part: 0, rec: rec}).Ack()
	gauges(0, 0)
}
