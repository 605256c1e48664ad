package broker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// lateness checks that the failure came within a second of the deadline the
// broker announced.
func checkLateness(t *testing.T, deadline int64, observed time.Time) {
	t.Helper()
	late := observed.Sub(time.UnixMilli(deadline))
	if late < -50*time.Millisecond || late > time.Second+500*time.Millisecond {
		t.Errorf("timeout observed %s after its deadline, want within ~1s", late)
	}
	t.Logf("observed %s after the deadline", late.Round(time.Millisecond))
}

func TestTimeouts(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	ctx := ringertest.Ctx(t)

	t.Run("PEER_OFFLINE: callee never online", func(t *testing.T) {
		li := alice.Invite(t, "nobody")
		deadline := li.Invitation().Deadline
		alice.Rec.Wait(t, "Failure "+li.ID+" PEER_OFFLINE")
		checkLateness(t, deadline, time.Now())
		waitFree(t, env, "alice", "nobody")
	})
	t.Run("PEER_NO_RESPONSE: callee online, never acks", func(t *testing.T) {
		mute := env.Login("mute", "phone", client.WithoutAutoAck())
		li := alice.Invite(t, "mute")
		deadline := li.Invitation().Deadline
		mute.Rec.WaitRemote(t, li.ID)
		alice.Rec.Wait(t, "Failure "+li.ID+" PEER_NO_RESPONSE")
		checkLateness(t, deadline, time.Now())
		mute.Rec.Wait(t, "RemoteFailure "+li.ID+" PEER_NO_RESPONSE")
		waitFree(t, env, "alice", "mute")
	})
	t.Run("INVITATION_EXPIRE: received, nobody acts", func(t *testing.T) {
		bob := env.Login("bob", "phone")
		li := alice.Invite(t, "bob")
		alice.Rec.Wait(t, "ReceivedByPeer "+li.ID)
		deadline := li.Invitation().Deadline // the expiry, counted from receipt
		if inv := li.Invitation(); deadline != inv.ReceivedAt+2000 {
			t.Fatalf("expire deadline %d, want receivedAt+2s=%d", deadline, inv.ReceivedAt+2000)
		}
		alice.Rec.Wait(t, "Failure "+li.ID+" INVITATION_EXPIRE")
		bob.Rec.Wait(t, "RemoteFailure "+li.ID+" INVITATION_EXPIRE")
		checkLateness(t, deadline, time.Now())
		waitFree(t, env, "alice", "bob")
	})
	t.Run("ACCEPT_FAILURE: caller never acknowledges the accept", func(t *testing.T) {
		deaf := env.Login("deaf", "phone", client.WithoutAutoAck())
		carol := env.Login("carol", "phone")
		li := deaf.CreateLocalInvitation("carol")
		li.Timeouts = &protocol.Timeouts{AcceptMs: 1000} // per-invitation override
		if err := li.Send(ctx); err != nil {
			t.Fatal(err)
		}
		ri := carol.Rec.WaitRemote(t, li.ID)
		if err := ri.Accept(ctx, "hello?"); err != nil {
			t.Fatal(err)
		}
		deadline := ri.Invitation().Deadline
		if inv := ri.Invitation(); deadline != inv.AnsweredAt+1000 {
			t.Fatalf("accept-ack deadline %d, want answeredAt+1s", deadline)
		}
		carol.Rec.Wait(t, "RemoteFailure "+li.ID+" ACCEPT_FAILURE")
		checkLateness(t, deadline, time.Now())
		deaf.Rec.Wait(t, "Failure "+li.ID+" ACCEPT_FAILURE")
		waitFree(t, env, "deaf", "carol")
	})
}

// A timeout racing an accept has one winner: whichever commits first.
func TestTimeoutLosesToAccept(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)
	li := alice.CreateLocalInvitation("bob")
	li.Timeouts = &protocol.Timeouts{ExpireMs: 1000}
	if err := li.Send(ctx); err != nil {
		t.Fatal(err)
	}
	ri := bob.Rec.WaitRemote(t, li.ID)
	alice.Rec.Wait(t, "ReceivedByPeer "+li.ID)
	// Accept right at the deadline.
	time.Sleep(time.Until(time.UnixMilli(li.Invitation().Deadline))) // aiming at the race is the point of this test
	err := ri.Accept(ctx, "just in time")
	if err == nil {
		alice.Rec.Wait(t, "Accepted "+li.ID)
		bob.Rec.Wait(t, "RemoteAccepted "+li.ID)
		if n := alice.Rec.Count("Failure " + li.ID); n != 0 {
			t.Fatal("accepted and failed")
		}
		return
	}
	alice.Rec.Wait(t, "Failure "+li.ID+" INVITATION_EXPIRE")
	bob.Rec.Wait(t, "RemoteFailure "+li.ID+" INVITATION_EXPIRE")
	if n := alice.Rec.Count("Accepted " + li.ID); n != 0 {
		t.Fatal("failed and accepted")
	}
}

// BenchmarkTimerLateness: b.N invitations from distinct callers to offline
// callees, all with a 1 s offline timeout; reports how long after its
// deadline each PEER_OFFLINE was committed (the record's endedAt).
func BenchmarkTimerLateness(b *testing.B) {
	cfg := ringertest.TestConfig()
	cfg.PresenceTTL = time.Minute // callers log in without heartbeats
	env := ringertest.Start(b, cfg)
	callers := make([]*ringertest.Client, b.N)
	for i := range callers {
		callers[i] = env.Login(fmt.Sprintf("caller%d", i), "phone", client.WithoutHeartbeat())
	}
	b.ResetTimer()
	invs := make([]*client.LocalInvitation, b.N)
	deadlines := make([]int64, b.N)
	for i, c := range callers {
		li := c.CreateLocalInvitation(fmt.Sprintf("offline%d", i))
		li.Timeouts = &protocol.Timeouts{OfflineMs: 1000}
		if err := li.Send(ringertest.Ctx(b)); err != nil {
			b.Fatal(err)
		}
		invs[i], deadlines[i] = li, li.Invitation().Deadline
	}
	lates := make([]time.Duration, 0, b.N)
	for i, li := range invs {
		callers[i].Rec.Wait(b, "Failure "+li.ID)
		lates = append(lates, time.UnixMilli(li.Invitation().EndedAt).Sub(time.UnixMilli(deadlines[i])))
	}
	ringertest.ReportPercentiles(b, "lateness", lates)
}

// A revision superseded before it was projected is gone from the bucket's
// stream (one revision per key), and with it JetStream's pending delivery
// or the replay of a gone broker's commits: if it was the one that asked
// for the timer (a broker died after the ring's events and before arming,
// or its arm failed and was to be retried), the revision that replaced it
// must arm it. Here the invitation is sent and received while no broker
// runs (with the outbox: sent by a writer no broker will ever replay, and
// received through the broker), so the broker only ever projects the
// received revision, which asks for no timer of its own; the invitation
// still times out at its deadline.
func TestTimerOfASupersededRevisionIsArmed(t *testing.T) {
	for _, consumer := range []bool{false, true} {
		t.Run(map[bool]string{false: "outbox", true: "consumer"}[consumer], func(t *testing.T) {
			timerOfASupersededRevisionIsArmed(t, consumer)
		})
	}
}

func timerOfASupersededRevisionIsArmed(t *testing.T, consumer bool) {
	url := natstest.RunServer(t).ClientURL()
	nc := natstest.Connect(t, url)
	ctx := ringertest.Ctx(t)
	cfg := ringertest.TestConfig()
	cfg.Timeouts.Offline, cfg.Timeouts.Expire = 3*time.Second, 3*time.Second
	cfg.PresenceTTL = time.Minute
	cfg.ConsumerProjection = consumer
	if err := store.Provision(ctx, nc, store.ProvisionConfig{Replicas: 1, AckWait: cfg.AckWait, Projector: consumer}); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	sent := lifecycle.New("superseded", "alice", "phone", "bob", "", "", cfg.Timeouts, now)
	rev, err := st.Commit(ctx, store.PutInvitation(sent, 0))
	if err != nil {
		t.Fatal(err)
	}
	received, _, err := lifecycle.Apply(sent, lifecycle.Action{Kind: lifecycle.Ack, User: "bob", Device: "phone"}, now.Add(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if received.Rearm {
		t.Fatal("the received revision asks for a timer of its own; the test needs one that relies on the sent one's")
	}
	if consumer {
		if _, err := st.Commit(ctx, store.PutInvitation(received, rev)); err != nil {
			t.Fatal(err)
		}
		ringertest.StartBroker(t, url, cfg)
	} else {
		ringertest.StartBroker(t, url, cfg)
		for _, c := range []struct {
			verb string
			req  protocol.Request
		}{{subjects.VerbLogin, protocol.Request{Device: "phone"}}, {subjects.VerbAck, protocol.Request{Device: "phone", ID: "superseded"}}} {
			subj, err := subjects.Command("bob", c.verb)
			if err != nil {
				t.Fatal(err)
			}
			m, err := nc.RequestWithContext(ctx, subj, protocol.MustMarshal(&c.req))
			if err != nil {
				t.Fatal(err)
			}
			if rep, err := protocol.DecodeReply(m.Data); err != nil || rep.Error != nil {
				t.Fatalf("%s: %v %+v", c.verb, err, rep)
			}
		}
	}
	natstest.Eventually(t, time.Until(time.UnixMilli(received.Deadline))+2*time.Second, func() error {
		rec, _, err := st.GetInvitationFresh(ringertest.Ctx(t), "superseded")
		if err != nil {
			return err
		}
		if rec.State != protocol.StateFailed || rec.Reason != protocol.ReasonInvitationExpire {
			return fmt.Errorf("invitation %s/%s", rec.State, rec.Reason)
		}
		return nil
	})
}

// The accept-ack timer of an answered call fires into a record that needs
// no timer (ACCEPTED, no maximum duration), which the broker's cache says
// for good: it is dropped without a read (lifecycle.Record.NeedsTimer).
func TestAnsweredCallsTimerFiresWithoutARead(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.TimerBatch = 0 // a schedule of its own per timer, so that it fires
	cfg.PresenceTTL = time.Minute
	cfg.Timeouts.Offline, cfg.Timeouts.Expire, cfg.Timeouts.Accept = time.Minute, time.Minute, time.Second
	env := ringertest.Start(t, cfg)
	st := env.Brokers[0].Store()
	alice := env.Login("alice", "phone", client.WithoutHeartbeat())
	bob := env.Login("bob", "phone", client.WithoutHeartbeat())
	li := alice.Call(t, bob)
	bob.Rec.Wait(t, "RemoteAccepted "+li.ID) // ACCEPTED, in the broker's cache
	ctx := ringertest.Ctx(t)
	before := st.Stats()
	// The offline timer (a minute away) stays; the accept-ack one (a second) fires and goes.
	natstest.Eventually(t, 10*time.Second, func() error {
		if n, err := st.PendingTimers(ctx); err != nil || n != 1 {
			return fmt.Errorf("%d timers pending (%v), want the offline one alone", n, err)
		}
		return nil
	})
	if d := st.Stats().Sub(before); d.Reads != 0 {
		t.Errorf("the answered call's accept-ack timer fired with %d reads, want none", d.Reads)
	}
	if inv, _ := alice.Invitation(li.ID); inv.State != protocol.StateAccepted || inv.CallState != protocol.CallActive {
		t.Errorf("the call after its accept-ack timer: %s/%s", inv.State, inv.CallState)
	}
}
