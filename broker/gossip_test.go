package broker_test

import (
	"fmt"
	"testing"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
)

// With two brokers, an invitation's commands land on either, and each
// broker's record cache would be stale for what the other wrote: cache
// gossip (Config.CacheGossip, on by default) keeps them current, so an
// accepted call costs about the reads it costs with one broker (the
// caller's session) instead of a read before most commands. Measured over
// ten calls, both brokers' reads and writes summed; gossip off is the
// control that shows the difference.
func TestCacheGossipSavesTwoBrokersTheirReads(t *testing.T) {
	for _, tc := range []struct {
		gossip bool
		check  func(reads, writes float64) error
	}{
		{true, func(reads, writes float64) error {
			if reads > 2.5 || writes > 7.5 {
				return fmt.Errorf("%.1f reads and %.1f writes per call with gossip, want at most 2.5 and 7.5", reads, writes)
			}
			return nil
		}},
		{false, func(reads, _ float64) error {
			if reads < 3 {
				return fmt.Errorf("%.1f reads per call without gossip: the control no longer shows what gossip saves", reads)
			}
			return nil
		}},
	} {
		t.Run(fmt.Sprintf("gossip=%v", tc.gossip), func(t *testing.T) {
			env := &ringertest.Env{T: t, URL: natstest.RunServer(t).ClientURL()}
			for i := range 2 {
				cfg := ringertest.TestConfig()
				cfg.Name = fmt.Sprintf("b%d", i)
				cfg.CacheGossip = tc.gossip
				env.Brokers = append(env.Brokers, ringertest.StartBroker(t, env.URL, cfg))
			}
			alice := env.Login("alice", "phone", client.WithoutHeartbeat())
			bob := env.Login("bob", "phone", client.WithoutHeartbeat())
			ctx := ringertest.Ctx(t)
			stats := func() (s store.StatsSnapshot) {
				for _, b := range env.Brokers {
					got := b.Store().Stats()
					s.Reads, s.Writes = s.Reads+got.Reads, s.Writes+got.Writes
				}
				return s
			}
			call := func() {
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
				bob.Rec.Wait(t, "CallEnded "+li.ID)
			}
			call() // the first call reads what no cache holds yet
			before := stats()
			const calls = 10
			for range calls {
				call()
			}
			got := stats().Sub(before)
			reads, writes := float64(got.Reads)/calls, float64(got.Writes)/calls
			t.Logf("per call, both brokers: %.1f reads, %.1f writes", reads, writes)
			if err := tc.check(reads, writes); err != nil {
				t.Error(err)
			}
		})
	}
}
