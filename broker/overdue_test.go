package broker

import (
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/protocol"
)

// An invitation whose timer was lost (here: never armed, as no projector
// runs) is timed out by the first party that reads it once its deadline is
// more than overdueAfter past: get and sync (and login, which syncs) answer
// with the outcome, and the store holds it. Before the deadline, a read
// changes nothing.
func TestReadsSettleOverdueInvitations(t *testing.T) {
	e := newStaleEnv(t)
	e.online(t, "alice", "bob")
	// created ages ago and received by bob: the expire deadline has passed
	long := time.Now().Add(-5 * time.Minute)
	commit := func(id string, at time.Time, received bool) {
		t.Helper()
		rec := lifecycle.New(id, "alice", "phone", "bob", "", "", e.b.cfg.Timeouts, at)
		if received {
			var err error
			if rec, _, err = lifecycle.Apply(rec, doAck, at); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.other.Commit(e.ctx, store.PutInvitation(rec, 0)); err != nil {
			t.Fatal(err)
		}
	}
	commit("overdue-get", long, true)
	commit("overdue-sync", long, true)
	commit("overdue-sent", long, false)
	commit("fresh", time.Now(), true)
	// bob's line lists what sync looks at
	line := store.Line{}
	for _, id := range []string{"overdue-sync", "overdue-sent", "fresh"} {
		line.Claims = append(line.Claims, store.Claim{ID: id, At: time.Now().UnixMilli()})
	}
	if _, err := e.other.Commit(e.ctx, store.PutLine("bob", line, 0)); err != nil {
		t.Fatal(err)
	}
	// alice's line claims all four, as her sends would have left it.
	line.Claims = append(line.Claims, store.Claim{ID: "overdue-get", At: time.Now().UnixMilli()})
	if _, err := e.other.Commit(e.ctx, store.PutLine("alice", line, 0)); err != nil {
		t.Fatal(err)
	}
	// The census sees what is stuck (the gauge of the stuck-invitations alert).
	if c, err := e.b.census(); err != nil || c.Invitations != 4 || c.Overdue != 3 {
		t.Fatalf("census before the reads: %+v, %v; want 4 live, 3 overdue", c, err)
	}

	rep, err := e.b.get(e.ctx, &command{user: "alice", verb: "get", req: &protocol.Request{Device: "phone", ID: "overdue-get"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Invitation; got.State != protocol.StateFailed || got.Reason != protocol.ReasonInvitationExpire {
		t.Fatalf("get of an overdue invitation: %s/%s, want FAILED/INVITATION_EXPIRE", got.State, got.Reason)
	}
	rep, err = e.b.sync(e.ctx, &command{user: "bob", verb: "sync", req: &protocol.Request{Device: "phone"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Invitations) != 1 || rep.Invitations[0].ID != "fresh" {
		t.Fatalf("sync lists %+v; want only the invitation not yet due", rep.Invitations)
	}
	for id, want := range map[string]protocol.Reason{
		"overdue-get": protocol.ReasonInvitationExpire, "overdue-sync": protocol.ReasonInvitationExpire,
		"overdue-sent": protocol.ReasonPeerNoResponse, // bob is online
	} {
		rec, _, err := e.other.GetInvitationFresh(e.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if rec.State != protocol.StateFailed || rec.Reason != want {
			t.Errorf("%s in the store: %s/%s, want FAILED/%s", id, rec.State, rec.Reason, want)
		}
	}
	if rec, _, _ := e.other.GetInvitationFresh(e.ctx, "fresh"); !rec.Live() {
		t.Errorf("a read timed out an invitation before its deadline: %s/%s", rec.State, rec.Reason)
	}
	if c, err := e.b.census(); err != nil || c.Invitations != 1 || c.Overdue != 0 {
		t.Errorf("census after the reads: %+v, %v; want 1 live, 0 overdue", c, err)
	}
}

// A read that finds an overdue invitation already timed out (by its timer,
// or by another read) counts nothing: only the timeout a call commits goes
// into ringer_timer_lateness_seconds and the "deadline passed without its
// timer" warning. On R3 a read can hand settleOverdue a follower's stale
// live view of an invitation the leader has long ended.
func TestSettleOverdueCountsOnlyItsOwnTimeout(t *testing.T) {
	e := newStaleEnv(t)
	e.online(t, "alice", "bob")
	rec := lifecycle.New("overdue-twice", "alice", "phone", "bob", "", "", e.b.cfg.Timeouts, time.Now().Add(-5*time.Minute))
	var err error
	if rec.Revision, err = e.other.Commit(e.ctx, store.PutInvitation(rec, 0)); err != nil {
		t.Fatal(err)
	}
	lateness := func() uint64 {
		var m dto.Metric
		if err := e.b.metrics.timerLateness.Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetHistogram().GetSampleCount()
	}
	before := lateness()
	for i := 1; i <= 2; i++ { // the second read has the same stale view
		got := e.b.settleOverdue(e.ctx, rec)
		if got.State != protocol.StateFailed || got.Reason != protocol.ReasonPeerNoResponse {
			t.Fatalf("read %d: %s/%s, want FAILED/PEER_NO_RESPONSE", i, got.State, got.Reason)
		}
	}
	if n := lateness() - before; n != 1 {
		t.Fatalf("%d timer lateness samples for one timeout", n)
	}
}
