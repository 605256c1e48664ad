package broker_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// The KV budget of one accepted lifecycle (send, ack, accept, ackaccept,
// hangup, with every projector side effect), as written in
// docs/architecture.md. A change that adds a round trip fails here.
func TestKVBudgetAcceptedLifecycle(t *testing.T) {
	// Every write is a single-key compare-and-set (no multi-message batch):
	// the two line claims, then the five states of the invitation; two timer
	// schedules (ring, then accept-ack).
	for _, tc := range []struct {
		name         string
		cacheSize    int
		first, later store.StatsSnapshot
		fireReads    uint64 // reads when each call's timer fires, after the call
	}{
		// The default: lines and invitations come from the broker's record
		// cache (kept current by its own writes and the projector), so the
		// only read is the caller's session. (The received revision relies
		// on the ring timer, which this broker armed and so knows is there:
		// timerLost reads nothing.)
		// A timer that fires after its call ended is dropped with no read:
		// the cached record is finished, which is final.
		{"cache", 1000, store.StatsSnapshot{Reads: 1, Writes: 7, Timers: 2}, store.StatsSnapshot{Reads: 1, Writes: 7, Timers: 2}, 0},
		// No cache: the send reads both lines and every action its record.
		// Later calls also find the claims of the previous call on both
		// lines (a claim is dropped by the next write of its line, not when
		// its call ends): one more read per line to see that it no longer holds.
		// Its timers each cost a leader read, and the received revision a
		// look at the ring timer it relies on (timerLost).
		{"nocache", 0, store.StatsSnapshot{Reads: 8, Writes: 7, Timers: 2}, store.StatsSnapshot{Reads: 10, Writes: 7, Timers: 2}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ringertest.TestConfig()
			cfg.TimerBatch = 0 // one schedule per timer, counted exactly (TestTimerBatches counts batches)
			cfg.CacheSize = tc.cacheSize
			cfg.Timeouts.Accept = cfg.Timeouts.Offline / 2 // as with Agora's defaults, the accept-ack deadline comes first
			env := ringertest.Start(t, cfg)
			// No heartbeats, so that nothing but the lifecycle touches the store.
			alice := env.Login("alice", "phone", client.WithoutHeartbeat())
			bob := env.Login("bob", "phone", client.WithoutHeartbeat())
			ctx := ringertest.Ctx(t)
			st := env.Brokers[0].Store()

			lifecycle := func(want store.StatsSnapshot) store.StatsSnapshot {
				t.Helper()
				before := st.Stats()
				li := alice.Invite(t, "bob")
				ri := bob.Rec.WaitRemote(t, li.ID)
				alice.Rec.Wait(t, "ReceivedByPeer "+li.ID)
				if err := ri.Accept(ctx, "ok"); err != nil {
					t.Fatal(err)
				}
				bob.Rec.Wait(t, "RemoteAccepted "+li.ID)
				if err := ri.Hangup(ctx); err != nil {
					t.Fatal(err)
				}
				alice.Rec.Wait(t, "CallEnded "+li.ID)
				// The projector arms the timers, and checks the one the
				// received revision relies on, after it published the events
				// waited for: let them land in this call's count.
				natstest.Eventually(t, 10*time.Second, func() error {
					if got := st.Stats().Sub(before); got.Timers < want.Timers || got.Reads < want.Reads {
						return fmt.Errorf("%+v so far, %+v expected", got, want)
					}
					return nil
				})
				return st.Stats().Sub(before)
			}
			calls := []store.StatsSnapshot{tc.first, tc.later, tc.later}
			for i, want := range calls {
				got := lifecycle(want)
				t.Logf("accepted lifecycle %d: %+v", i+1, got)
				if got != want {
					t.Errorf("KV round trips of accepted lifecycle %d: %+v, budget %+v (update docs/architecture.md if this is intended)", i+1, got, want)
				}
			}
			// Each call's timer (re-armed to its accept-ack deadline, ~1 s
			// after the accept) fires after the call has ended.
			before := st.Stats()
			timers, err := st.JetStream().Consumer(ctx, subjects.TimerStream, store.ConsumerTimers)
			if err != nil {
				t.Fatal(err)
			}
			natstest.Eventually(t, 15*time.Second, func() error {
				info, err := timers.Info(ctx)
				if err != nil {
					return err
				}
				if info.Delivered.Consumer < uint64(len(calls)) || info.NumAckPending > 0 {
					return fmt.Errorf("timers fired %d of %d, %d unacked", info.Delivered.Consumer, len(calls), info.NumAckPending)
				}
				return nil
			})
			if got, want := st.Stats().Sub(before), (store.StatsSnapshot{Reads: tc.fireReads * uint64(len(calls))}); got != want {
				t.Errorf("KV round trips of %d timers firing after their calls: %+v, budget %+v", len(calls), got, want)
			}
		})
	}
}

// The KV budget of an invitation that expires once received. Receipt moves
// the deadline later without a timer write (lifecycle.armTimer), so the
// offline timer armed at the send fires first: a leader read, and the
// record re-armed for the expiry (a write, and the projector's schedule).
// The expiry timer then costs a leader read and the write of the outcome.
// (A timer that finds its invitation SENT also asks whether the callee is
// online: one more read.)
func TestKVBudgetExpiry(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cacheSize int
	}{{"cache", 1000}, {"nocache", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ringertest.TestConfig()
			cfg.TimerBatch = 0 // one schedule per timer, counted exactly (TestTimerBatches counts batches)
			cfg.CacheSize = tc.cacheSize
			cfg.PresenceTTL = time.Minute // no session expires meanwhile
			// The offline timer fires (up to ~0.4 s late) well before the
			// expiry deadline, so it always finds it later and re-arms.
			cfg.Timeouts.Offline, cfg.Timeouts.Expire = time.Second, 3*time.Second
			env := ringertest.Start(t, cfg)
			alice := env.Login("alice", "phone", client.WithoutHeartbeat())
			bob := env.Login("bob", "phone", client.WithoutHeartbeat())
			st := env.Brokers[0].Store()

			li := alice.Invite(t, "bob")
			bob.Rec.WaitRemote(t, li.ID)
			alice.Rec.Wait(t, "ReceivedByPeer "+li.ID)
			before, moves := st.Stats(), env.Brokers[0].NC.Stats().Reconnects
			if got := alice.Rec.Wait(t, "Failure "+li.ID); !strings.HasSuffix(got, string(protocol.ReasonInvitationExpire)) {
				t.Fatalf("caller saw %q, want INVITATION_EXPIRE", got)
			}
			got := st.Stats().Sub(before)
			t.Logf("from receipt to expiry: %+v", got)
			if env.Brokers[0].NC.Stats().Reconnects != moves {
				// A loaded machine dropped the broker's connection (CI,
				// once): writes in flight then are retried, as they must
				// be, and counted twice. Not the budget of a lifecycle.
				t.Skip("the broker's connection dropped meanwhile: its retried writes are not the budget")
			}
			if want := (store.StatsSnapshot{Reads: 2, Writes: 2, Timers: 1}); got != want {
				t.Errorf("KV round trips from receipt to expiry: %+v, budget %+v (update docs/architecture.md if this is intended)", got, want)
			}
		})
	}
}

// The KV budget of a FIRST group invitation to four callees that one
// answers (send, four acks, the winning accept and three that lose,
// ackaccept, hangup), with the record cache: what a group costs per
// callee (docs/architecture.md, "Group invitations").
func TestKVBudgetGroupFirst(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.TimerBatch = 0 // one schedule per timer, counted exactly (TestTimerBatches counts batches)
	cfg.Timeouts.Accept = cfg.Timeouts.Offline / 2
	env := ringertest.Start(t, cfg)
	ctx := ringertest.Ctx(t)
	st := env.Brokers[0].Store()
	alice := env.Login("alice", "phone", client.WithoutHeartbeat())
	names := []string{"bob", "carol", "dave", "erin"}
	var callees []*ringertest.Client
	for _, n := range names {
		// Acks one after the other (the test's), so that the count is
		// exact: four devices acking at the same instant collide on the
		// one record, and each collision costs a write and a read more.
		callees = append(callees, env.Login(n, "phone", client.WithoutHeartbeat(), client.WithoutAutoAck()))
	}
	want := map[string]store.StatsSnapshot{
		"send":             {Reads: 1, Writes: 6, Timers: 1}, // the caller's session; 5 line claims and the record; the ring timer
		"4 acks":           {Reads: 0, Writes: 4},            // each revision relies on the ring timer, which this broker armed
		"accept+ackaccept": {Reads: 0, Writes: 2, Timers: 1},
		"3 late accepts":   {Reads: 3, Writes: 0}, // each refusal is confirmed with the leader
		"hangup":           {Reads: 0, Writes: 1},
	}
	call := func() (steps map[string]store.StatsSnapshot) {
		t.Helper()
		steps = map[string]store.StatsSnapshot{}
		mark := st.Stats()
		step := func(name string) {
			// The projector arms a timer, or checks one, after it published
			// the events the step waited for: let the step's timer and
			// reads land in the step.
			natstest.Eventually(t, 10*time.Second, func() error {
				if got := st.Stats().Sub(mark); got.Timers < want[name].Timers || got.Reads < want[name].Reads {
					return fmt.Errorf("%s: %+v so far, %+v expected", name, got, want[name])
				}
				return nil
			})
			now := st.Stats()
			steps[name] = now.Sub(mark)
			mark = now
		}
		li := sendGroup(t, alice, protocol.ModeFirst, names...)
		var rs []*client.RemoteInvitation
		for _, c := range callees {
			rs = append(rs, c.Rec.WaitRemote(t, li.ID))
		}
		step("send")
		for i, c := range callees {
			if err := c.Ack(ctx, li.ID); err != nil {
				t.Fatal(err)
			}
			alice.Rec.Wait(t, "Leg "+li.ID+" "+names[i]+" RECEIVED")
		}
		step("4 acks")
		if err := rs[0].Accept(ctx, ""); err != nil {
			t.Fatal(err)
		}
		callees[0].Rec.Wait(t, "RemoteAccepted "+li.ID)
		step("accept+ackaccept")
		for _, ri := range rs[1:] {
			if err := ri.Accept(ctx, ""); code(err) != protocol.CodeAlreadyAccept {
				t.Fatalf("a late accept: %v", err)
			}
		}
		step("3 late accepts")
		if err := alice.Hangup(ctx, li.ID); err != nil {
			t.Fatal(err)
		}
		callees[0].Rec.Wait(t, "CallEnded "+li.ID)
		step("hangup")
		return steps
	}
	for i := range 2 {
		got := call()
		t.Logf("group of 4, call %d: %+v", i+1, got)
		for k, w := range want {
			if got[k] != w {
				t.Errorf("call %d, %s: %+v, budget %+v", i+1, k, got[k], w)
			}
		}
	}
}
