package broker_test

import (
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/subjects"
)

// A device whose connection never dropped can still miss events: a NATS
// node that hangs, or is cut off from the others while its clients stay
// connected, loses what is published for them meanwhile, and no reconnect
// will make them resync. Their heartbeats fail meanwhile, though, so the
// SDK resyncs at the first heartbeat that succeeds after a failed one. Here
// bob's ring is lost (loseRing) while no broker runs.
func TestHeartbeatsThatFailedTriggerAResync(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.PresenceTTL = 6 * time.Second // heartbeats every 2 s; the session outlives one failure
	cfg.Timeouts.Offline = time.Minute
	env := ringertest.Start(t, cfg)
	env.Login("alice", "phone") // the caller
	bob := env.Login("bob", "phone")

	ctx := ringertest.Ctx(t)
	b := env.Brokers[0]
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// One of bob's heartbeats fails: it reaches this subscriber, which does
	// not answer, instead of a broker.
	nc := natstest.Connect(t, env.URL)
	hbSubj, err := subjects.Command("bob", subjects.VerbHeartbeat)
	if err != nil {
		t.Fatal(err)
	}
	heartbeats, err := nc.SubscribeSync(hbSubj)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// Meanwhile an invitation to bob is sent, but its ring never reaches him.
	loseRing(t, b.Store(), cfg.Timeouts, "lostring1")

	if _, err := heartbeats.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("no heartbeat from bob while no broker ran: %v", err)
	}
	if err := heartbeats.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	env.Brokers = append(env.Brokers, ringertest.StartBroker(t, env.URL, cfg))
	bob.Rec.WaitRemote(t, "lostring1")
	if n := bob.Rec.Count("RemoteReceived lostring1"); n != 1 {
		t.Fatalf("bob rang %d times", n)
	}
}

// The resync after a reconnect can fail while heartbeats succeed (here bob's
// line does not decode, so sync answers INTERNAL; an overloaded broker's
// timeout would do the same). The next heartbeat resyncs, so what bob
// missed meanwhile still reaches him.
func TestAFailedReconnectResyncIsRetried(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.PresenceTTL = 6 * time.Second
	cfg.Timeouts.Offline = time.Minute
	env := ringertest.Start(t, cfg)
	env.Login("alice", "phone")
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)
	st := env.Brokers[0].Store()

	failed := watchErrorReplies(t, env.URL, "decode line bob")
	if _, err := st.JetStream().Publish(ctx, subjects.KVSubject(subjects.LineKey("bob")), []byte{0xc1}); err != nil { // 0xc1: never valid msgpack
		t.Fatal(err)
	}
	if err := bob.NC.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-failed:
	case <-time.After(ringertest.Wait):
		t.Fatal("bob's resync after the reconnect did not fail as arranged")
	}

	loseRing(t, st, cfg.Timeouts, "lostring2") // also writes bob's line afresh
	bob.Rec.WaitRemote(t, "lostring2")
}

// loseRing commits an invitation from alice's phone to bob, with both line
// claims, whose ring never reaches bob: its record is marked Quiet (a
// revision that only re-arms the timer), so no broker's projector publishes
// an event for it, as if the ring had been published and lost.
func loseRing(t *testing.T, st *store.Store, timeouts lifecycle.Timeouts, id string) {
	t.Helper()
	ctx := ringertest.Ctx(t)
	now := time.Now()
	for _, user := range []string{"bob", "alice"} {
		_, rev, _ := st.GetLineFresh(ctx, user) // the revision, even of a line that does not decode
		if _, err := st.Commit(ctx, store.PutLine(user, store.Line{Claims: []store.Claim{{ID: id, At: now.UnixMilli()}}}, rev)); err != nil {
			t.Fatal(err)
		}
	}
	rec := lifecycle.Rearmed(lifecycle.New(id, "alice", "phone", "bob", "", "", timeouts, now))
	if lifecycle.Events(rec) != nil {
		t.Fatal("set-up: a quiet record has events")
	}
	if _, err := st.Commit(ctx, store.PutInvitation(rec, 0)); err != nil {
		t.Fatal(err)
	}
}
