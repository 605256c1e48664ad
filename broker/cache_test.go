package broker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// staleEnv is a broker whose store caches records, next to a cache-less
// store that stands for another broker: what "other" writes, the broker's
// cache does not see (the broker is not started, so no projector refreshes
// it). Every command the broker decides from its cache is then stale.
type staleEnv struct {
	b     *Broker
	other *store.Store
	ctx   context.Context
}

func newStaleEnv(t *testing.T) *staleEnv {
	t.Helper()
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	if err := store.Provision(ctx, nc, store.ProvisionConfig{Replicas: 1, AckWait: time.Second}); err != nil {
		t.Fatal(err)
	}
	return staleEnvOn(t, ctx, nc, DefaultConfig())
}

// staleEnvOn is newStaleEnv's broker (config cfg) over a store nc already
// holds (provisioned).
func staleEnvOn(t *testing.T, ctx context.Context, nc *nats.Conn, cfg Config) *staleEnv {
	t.Helper()
	opts := []store.Option{store.CacheSize(100)}
	if cfg.AtomicSends {
		opts = append(opts, store.AtomicBatches())
	}
	cached, err := store.Open(ctx, nc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	other, err := store.Open(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ClaimGrace = 3 * time.Second
	b, err := New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.store = cached
	b.recorder = b.newRecorder() // project hands it the steps after the events
	t.Cleanup(b.recorder.close)
	return &staleEnv{b: b, other: other, ctx: ctx}
}

// online gives each user a live session on device "phone".
func (e *staleEnv) online(t *testing.T, users ...string) {
	t.Helper()
	for _, u := range users {
		if _, err := e.other.PutSession(e.ctx, u, "phone", time.Minute); err != nil {
			t.Fatal(err)
		}
	}
}

// send has the broker decide caller's send to callee (device "phone") and
// returns the invitation it gave.
func (e *staleEnv) send(t *testing.T, caller, callee string) *protocol.Invitation {
	t.Helper()
	c := &command{user: caller, verb: "send", req: &protocol.Request{Device: "phone", Callee: callee}}
	rep, err := e.b.send(e.ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	return rep.Invitation
}

// apply commits a through st with compare-and-set, as a broker would.
func (e *staleEnv) apply(t *testing.T, st *store.Store, id string, a lifecycle.Action) {
	t.Helper()
	rec, rev, err := st.GetInvitationFresh(e.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	next, changed, err := lifecycle.Apply(rec, a, time.Now())
	if err != nil || !changed {
		t.Fatalf("%s on %s: changed=%v err=%v", a.Kind, rec.State, changed, err)
	}
	if _, err := st.Commit(e.ctx, store.PutInvitation(next, rev)); err != nil {
		t.Fatal(err)
	}
}

var (
	doAck       = lifecycle.Action{Kind: lifecycle.Ack, User: "bob", Device: "phone"}
	doAccept    = lifecycle.Action{Kind: lifecycle.Accept, User: "bob", Device: "phone", Response: "ok"}
	doRefuse    = lifecycle.Action{Kind: lifecycle.Refuse, User: "bob", Device: "phone"}
	doCancel    = lifecycle.Action{Kind: lifecycle.Cancel, User: "alice", Device: "phone"}
	doAckAccept = lifecycle.Action{Kind: lifecycle.AckAccept, User: "alice", Device: "phone"}
	doHangup    = lifecycle.Action{Kind: lifecycle.Hangup, User: "alice", Device: "phone"}
)

// A command decided from a stale cached record gets exactly the verdict the
// current record gives: the cache saves reads, never changes an outcome.
// Each case writes the first `cached` steps through the caching store (so
// its cache holds that revision), the rest through the other store, then
// sends every action through the broker and compares with lifecycle.Apply
// on the current record.
func TestStaleCacheNeverChangesAVerdict(t *testing.T) {
	e := newStaleEnv(t)
	paths := []struct {
		steps  []lifecycle.Action
		cached int
	}{
		{[]lifecycle.Action{doAck}, 0},
		{[]lifecycle.Action{doAck, doAccept}, 0},
		{[]lifecycle.Action{doAck, doAccept}, 1},
		{[]lifecycle.Action{doRefuse}, 0},
		{[]lifecycle.Action{doCancel}, 0},
		{[]lifecycle.Action{doAck, doAccept, doAckAccept}, 1},
		{[]lifecycle.Action{doAck, doAccept, doAckAccept, doHangup}, 2},
	}
	n := 0
	for _, p := range paths {
		for _, a := range []lifecycle.Action{doAck, doAccept, doRefuse, doCancel, doAckAccept, doHangup} {
			n++
			id := fmt.Sprintf("stale%d", n)
			t.Run(fmt.Sprintf("%s/cached%d/then-%s", id, p.cached, a.Kind), func(t *testing.T) {
				rec := lifecycle.New(id, "alice", "phone", "bob", "", "", e.b.cfg.Timeouts, time.Now())
				if _, err := e.b.store.Commit(e.ctx, store.PutInvitation(rec, 0)); err != nil {
					t.Fatal(err)
				}
				for i, s := range p.steps {
					st := e.other
					if i < p.cached {
						st = e.b.store
					}
					e.apply(t, st, id, s)
				}
				stale, ok := e.b.store.CachedInvitation(id)
				truth, truthRev, err := e.other.GetInvitationFresh(e.ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if !ok || stale.Revision >= truthRev {
					t.Fatalf("set-up: cache must hold an older revision: cached=%v rev %d, current rev %d", ok, stale.Revision, truthRev)
				}
				want, wantChanged, wantErr := lifecycle.Apply(truth, a, time.Now())

				for range 4 { // keep the cache trusted for writes: this test is about what a stale entry decides
					e.b.store.CacheOutcome(false)
				}
				got, err := e.b.transition(e.ctx, id, a)
				switch {
				case wantErr != nil:
					var pw, pg *protocol.Error
					if !errors.As(wantErr, &pw) || !errors.As(err, &pg) || pw.Code != pg.Code {
						t.Fatalf("stale %s, current %s: got %v, want %v", stale.State, truth.State, err, wantErr)
					}
				case err != nil:
					t.Fatalf("stale %s, current %s: got %v, want state %s", stale.State, truth.State, err, want.State)
				case !wantChanged:
					if got.Revision != truthRev || got.State != truth.State {
						t.Fatalf("idempotent %s answered from stale rev %d (%s); current rev %d (%s)", a.Kind, got.Revision, got.State, truthRev, truth.State)
					}
				default:
					if got.State != want.State || got.Reason != want.Reason || got.CallState != want.CallState || got.Revision <= truthRev {
						t.Fatalf("got %s/%s/%s rev %d, want %s/%s/%s after rev %d", got.State, got.Reason, got.CallState, got.Revision,
							want.State, want.Reason, want.CallState, truthRev)
					}
				}
			})
		}
	}
}

// A send decided from a stale cached line — free in the cache, claimed by
// another broker's live invitation in fact — is refused as busy, not rung.
func TestStaleCachedLineStillRefusesBusy(t *testing.T) {
	e := newStaleEnv(t)
	ctx := e.ctx
	e.online(t, "alice", "carol")
	// The broker's cache learns that bob's line is free.
	if _, _, err := e.b.store.GetLine(ctx, "bob"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("bob's line: %v", err)
	}
	if _, _, ok := e.b.store.CachedLine("bob"); !ok {
		t.Fatal("set-up: bob's free line is not cached")
	}
	// Another broker rings bob for carol: claim, then invitation.
	claim := store.Line{Claims: []store.Claim{{ID: "fromcarol", At: time.Now().UnixMilli()}}}
	_, rev, _ := e.other.GetLine(ctx, "bob")
	if _, err := e.other.Commit(ctx, store.PutLine("bob", claim, rev)); err != nil {
		t.Fatal(err)
	}
	live := lifecycle.New("fromcarol", "carol", "phone", "bob", "", "", e.b.cfg.Timeouts, time.Now())
	if _, err := e.other.Commit(ctx, store.PutInvitation(live, 0)); err != nil {
		t.Fatal(err)
	}

	inv := e.send(t, "alice", "bob")
	if inv.State != protocol.StateRefused || inv.Reason != protocol.ReasonBusy {
		t.Fatalf("send to a callee rung by another broker: %s/%s, want REFUSED/BUSY", inv.State, inv.Reason)
	}
	line, _, err := e.other.GetLineFresh(ctx, "bob")
	if err != nil || len(line.Claims) != 1 || line.Claims[0].ID != "fromcarol" {
		t.Fatalf("bob's line after the refused send: %+v, %v", line, err)
	}
}

// The reverse: the cache says bob's line is held by a ringing invitation
// that has in fact ended; the send must ring bob, not refuse him as busy.
func TestStaleCachedClaimDoesNotRefuse(t *testing.T) {
	e := newStaleEnv(t)
	ctx := e.ctx
	e.online(t, "alice", "carol")
	// Carol rings bob through the caching store: it caches the claim and
	// the live invitation.
	_, rev, _ := e.b.store.GetLine(ctx, "bob")
	claim := store.Line{Claims: []store.Claim{{ID: "fromcarol", At: time.Now().UnixMilli()}}}
	if _, err := e.b.store.Commit(ctx, store.PutLine("bob", claim, rev)); err != nil {
		t.Fatal(err)
	}
	live := lifecycle.New("fromcarol", "carol", "phone", "bob", "", "", e.b.cfg.Timeouts, time.Now())
	if _, err := e.b.store.Commit(ctx, store.PutInvitation(live, 0)); err != nil {
		t.Fatal(err)
	}
	// Another broker ends it: carol cancels.
	e.apply(t, e.other, "fromcarol", lifecycle.Action{Kind: lifecycle.Cancel, User: "carol", Device: "phone"})
	if rec, ok := e.b.store.CachedInvitation("fromcarol"); !ok || !rec.Live() {
		t.Fatal("set-up: the cache must still show carol's invitation ringing")
	}

	inv := e.send(t, "alice", "bob")
	if inv.State != protocol.StateSent {
		t.Fatalf("send to a callee whose only call has ended: %s/%s, want SENT", inv.State, inv.Reason)
	}
}

// Glare from a stale cache: the cache shows alice's invitation to bob
// ringing, while in fact bob's phone accepted it and alice hung up. Bob's
// send to alice must ring her, not merge into the call that is over.
// (Accepting again what this device accepted is a no-op that succeeds even
// after the call; merge must not take that for a merge.)
func TestStaleCachedGlareDoesNotMergeIntoAnEndedCall(t *testing.T) {
	e := newStaleEnv(t)
	ctx := e.ctx
	e.online(t, "alice", "bob")
	at := time.Now().UnixMilli()
	for _, l := range []struct {
		user  string
		claim store.Claim
	}{{"bob", store.Claim{ID: "old", At: at, Peer: "alice"}}, {"alice", store.Claim{ID: "old", At: at, Peer: "bob", Out: true}}} {
		_, rev, _ := e.b.store.GetLine(ctx, l.user)
		if _, err := e.b.store.Commit(ctx, store.PutLine(l.user, store.Line{Claims: []store.Claim{l.claim}}, rev)); err != nil {
			t.Fatal(err)
		}
	}
	old := lifecycle.New("old", "alice", "phone", "bob", "", "", e.b.cfg.Timeouts, time.Now())
	if _, err := e.b.store.Commit(ctx, store.PutInvitation(old, 0)); err != nil {
		t.Fatal(err)
	}
	// Another broker: bob's phone accepts as a merge does (no response),
	// alice confirms, then hangs up.
	for _, a := range []lifecycle.Action{{Kind: lifecycle.Accept, User: "bob", Device: "phone"}, doAckAccept, doHangup} {
		e.apply(t, e.other, "old", a)
	}
	if rec, ok := e.b.store.CachedInvitation("old"); !ok || rec.State != protocol.StateSent {
		t.Fatal("set-up: the cache must still show alice's invitation ringing")
	}

	inv := e.send(t, "bob", "alice")
	if inv.State != protocol.StateSent || inv.MergedInto != "" {
		t.Fatalf("bob's send after his call with alice ended: %s/%s merged into %q, want SENT", inv.State, inv.Reason, inv.MergedInto)
	}
}

// A cached line still shows bob's do-not-disturb flag, which another broker
// has cleared since: the send must ring bob. (The busy verdict came from a
// cached line, so it is confirmed with a read before it is given.)
func TestStaleCachedManualFlagDoesNotRefuse(t *testing.T) {
	e := newStaleEnv(t)
	ctx := e.ctx
	e.online(t, "alice")
	_, rev, _ := e.b.store.GetLine(ctx, "bob")
	if _, err := e.b.store.Commit(ctx, store.PutLine("bob", store.Line{Manual: true}, rev)); err != nil {
		t.Fatal(err)
	}
	_, rev, _ = e.other.GetLineFresh(ctx, "bob")
	if _, err := e.other.Commit(ctx, store.PutLine("bob", store.Line{}, rev)); err != nil {
		t.Fatal(err)
	}
	if l, _, ok := e.b.store.CachedLine("bob"); !ok || !l.Manual {
		t.Fatal("set-up: the cache must still show bob's busy flag")
	}
	inv := e.send(t, "alice", "bob")
	if inv.State != protocol.StateSent {
		t.Fatalf("send to a callee whose busy flag was cleared: %s/%s, want SENT", inv.State, inv.Reason)
	}
}

// lastRevision is the invitation's latest revision as the projector gets
// it: a real message from the bucket's stream, through an ephemeral consumer.
func (e *staleEnv) lastRevision(t *testing.T, id string) jetstream.Msg {
	t.Helper()
	cons, err := e.b.store.JetStream().CreateConsumer(e.ctx, subjects.BucketStream, jetstream.ConsumerConfig{
		FilterSubject: subjects.KVSubject(subjects.InvitationKey(id)),
		DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A revision another broker committed reaches this broker's cache through
// its projector (Store.Observe), so this broker's next command on that
// invitation starts from it: no read, and no write that conflicts.
func TestProjectedRevisionRefreshesTheCache(t *testing.T) {
	e := newStaleEnv(t)
	id := "projected1"
	rec := lifecycle.New(id, "alice", "phone", "bob", "", "", e.b.cfg.Timeouts, time.Now())
	if _, err := e.b.store.Commit(e.ctx, store.PutInvitation(rec, 0)); err != nil {
		t.Fatal(err)
	}
	e.apply(t, e.other, id, doAck) // "another broker" commits RECEIVED
	_, current, err := e.other.GetInvitationFresh(e.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if cached, _ := e.b.store.CachedInvitation(id); cached.Revision >= current {
		t.Fatalf("set-up: the cache must hold an older revision: %d, current %d", cached.Revision, current)
	}

	// This broker's projector gets that revision.
	e.b.project(e.ctx, e.lastRevision(t, id))
	e.b.recorder.close() // waits for its steps (a read of the timer stream), so that they are not counted below
	if cached, ok := e.b.store.CachedInvitation(id); !ok || cached.Revision != current || cached.State != protocol.StateReceived {
		t.Fatalf("after projecting rev %d the cache holds rev %d (%s), ok=%v", current, cached.Revision, cached.State, ok)
	}

	before := e.b.store.Stats()
	got, err := e.b.transition(e.ctx, id, doAccept)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != protocol.StateAccepting && got.State != protocol.StateAccepted {
		t.Fatalf("accept gave %s", got.State)
	}
	if d := e.b.store.Stats().Sub(before); d.Reads != 0 || d.Writes != 1 {
		t.Errorf("accept after the projected revision: %d reads, %d writes; want 0 and 1", d.Reads, d.Writes)
	}
}

// A command on an invitation that has finished is answered from the record
// in hand, with no leader read: a finished record never changes, so the
// leader's verdict is the same (the caller's ackaccept after a hangup during
// ACCEPTING, a repeated hangup, an accept after a cancel). A record that
// finished longer than half MinRetention ago is confirmed with the leader as
// before: its id could have expired and been taken.
func TestAFinishedCachedRecordNeedsNoRead(t *testing.T) {
	e := newStaleEnv(t)
	cases := []struct {
		steps []lifecycle.Action
		then  lifecycle.Action
		code  protocol.Code // "" = an idempotent success
	}{
		{[]lifecycle.Action{doAck, doAccept, doHangup}, doAckAccept, ""},
		{[]lifecycle.Action{doAck, doAccept, doAckAccept, doHangup}, doHangup, ""},
		{[]lifecycle.Action{doCancel}, doAccept, protocol.CodeAlreadyEnd},
		{[]lifecycle.Action{doRefuse}, doCancel, protocol.CodeAlreadyEnd},
	}
	for i, c := range cases {
		for _, old := range []bool{false, true} {
			id := fmt.Sprintf("final%d%v", i, old)
			t.Run(id, func(t *testing.T) {
				created := time.Now()
				if old {
					created = created.Add(-e.b.cfg.Retention)
				}
				rec := lifecycle.New(id, "alice", "phone", "bob", "", "", e.b.cfg.Timeouts, created)
				rev, err := e.b.store.Commit(e.ctx, store.PutInvitation(rec, 0))
				if err != nil {
					t.Fatal(err)
				}
				for _, s := range c.steps { // through the broker's own store: its cache holds each revision
					next, changed, err := lifecycle.Apply(rec, s, created)
					if err != nil || !changed {
						t.Fatalf("set-up %s on %s: changed=%v err=%v", s.Kind, rec.State, changed, err)
					}
					if rev, err = e.b.store.Commit(e.ctx, store.PutInvitation(next, rev)); err != nil {
						t.Fatal(err)
					}
					rec = next
				}
				if cached, ok := e.b.store.CachedInvitation(id); !ok || cached.Revision != rev || cached.Live() {
					t.Fatalf("set-up: the cache must hold the finished record at rev %d: %v %+v", rev, ok, cached)
				}
				for range 4 {
					e.b.store.CacheOutcome(false)
				}
				before := e.b.store.Stats().Reads
				got, err := e.b.transition(e.ctx, id, c.then)
				reads := e.b.store.Stats().Reads - before
				var pe *protocol.Error
				switch {
				case c.code != "" && (!errors.As(err, &pe) || pe.Code != c.code):
					t.Fatalf("%s on a finished %s: %v, want %s", c.then.Kind, rec.State, err, c.code)
				case c.code == "" && (err != nil || got.Revision != rev || got.State != rec.State || got.CallState != rec.CallState):
					t.Fatalf("%s on a finished %s/%s: %v rev %d %s/%s, want the record at rev %d", c.then.Kind, rec.State, rec.CallState,
						err, got.Revision, got.State, got.CallState, rev)
				case !old && reads != 0:
					t.Fatalf("%s on a finished invitation read the store %d times, want 0", c.then.Kind, reads)
				case old && reads != 1:
					t.Fatalf("%s on an invitation finished %s ago read the store %d times, want 1 (the leader's confirmation)", c.then.Kind, e.b.cfg.Retention, reads)
				}
			})
		}
	}
}
