package broker_test

import (
	"testing"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/ringertest"
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
	}{
		// The default: lines and invitations come from the broker's record
		// cache (kept current by its own writes and the projector), so the
		// only read is the caller's session.
		{"cache", 1000, store.StatsSnapshot{Reads: 1, Writes: 7, Timers: 2}, store.StatsSnapshot{Reads: 1, Writes: 7, Timers: 2}},
		// No cache: the send reads both lines and every action its record.
		// Later calls also find the claims of the previous call on both
		// lines (a claim is dropped by the next write of its line, not when
		// its call ends): one more read per line to see that it no longer holds.
		{"nocache", 0, store.StatsSnapshot{Reads: 7, Writes: 7, Timers: 2}, store.StatsSnapshot{Reads: 9, Writes: 7, Timers: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ringertest.TestConfig()
			cfg.CacheSize = tc.cacheSize
			cfg.Timeouts.Accept = cfg.Timeouts.Offline / 2 // as with Agora's defaults, the accept-ack deadline comes first
			env := ringertest.Start(t, cfg)
			// No heartbeats, so that nothing but the lifecycle touches the store.
			alice := env.Login("alice", "phone", client.WithoutHeartbeat())
			bob := env.Login("bob", "phone", client.WithoutHeartbeat())
			ctx := ringertest.Ctx(t)
			st := env.Brokers[0].Store()

			lifecycle := func() store.StatsSnapshot {
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
				return st.Stats().Sub(before)
			}
			for i, want := range []store.StatsSnapshot{tc.first, tc.later, tc.later} {
				got := lifecycle()
				t.Logf("accepted lifecycle %d: %+v", i+1, got)
				if got != want {
					t.Errorf("KV round trips of accepted lifecycle %d: %+v, budget %+v (update docs/architecture.md if this is intended)", i+1, got, want)
				}
			}
		})
	}
}
