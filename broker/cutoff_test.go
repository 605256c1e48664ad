package broker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
)

// A broker whose every write fails for seconds leaves its NATS server
// (broker/cutoff.go). Here the server loses its two peers, so that it has no
// quorum, as a node cut off from the others has none; it still answers the
// broker's pings, so only the failing writes (a device's heartbeats) can
// tell the broker to move.
func TestABrokerLeavesAServerWhereNoWriteGoesThrough(t *testing.T) {
	t.Parallel() // waits out elections and restarts, with no latency bound: run beside another such test
	c, cfg := clusterR3(t)
	cfg.PresenceTTL = 3 * time.Second // a heartbeat, so a write, every second
	cfg.FollowLeader = false          // only the failing writes may move it (follow.go moves it too)
	env := &ringertest.Env{T: t, URL: c.Servers[0].ClientURL()}
	env.Brokers = append(env.Brokers, ringertest.StartBroker(t, env.URL, cfg))
	env.Login("bob", "phone")
	b := env.Brokers[0]
	before := b.NC.Stats().Reconnects

	c.Stop(1)
	c.Stop(2)
	start := time.Now()
	natstest.Eventually(t, 20*time.Second, func() error {
		if n := b.NC.Stats().Reconnects; n == before {
			return fmt.Errorf("the broker did not leave its server (%d reconnects)", n)
		}
		return nil
	})
	t.Logf("left after %s", time.Since(start).Round(time.Millisecond))
}
