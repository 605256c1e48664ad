package broker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
)

// A broker connected elsewhere than the server that leads its bucket
// reconnects to that server (broker/follow.go), and follows the leadership
// when it moves; calls go on working through the moves.
func TestABrokerFollowsTheBucketLeader(t *testing.T) {
	t.Parallel() // waits out elections and restarts, with no latency bound: run beside another such test
	c, cfg := clusterR3(t)
	cfg.LeaderCheck, cfg.FollowLeader = 200*time.Millisecond, true
	env := &ringertest.Env{T: t, URL: c.URLs()}
	env.Brokers = append(env.Brokers, ringertest.StartBroker(t, env.URL, cfg))
	b := env.Brokers[0]
	st := b.Store()

	// onLeader waits until b is connected to the server leading the bucket
	// (and Settled agrees), and returns it.
	onLeader := func() string {
		var leader string
		natstest.Attempt(t, 40*time.Second, 250*time.Millisecond, func(ctx context.Context) error {
			var err error
			if leader, err = st.Leader(ctx, store.BucketGroup(0)); err != nil {
				return err
			}
			if on := b.NC.ConnectedServerName(); on != leader {
				return fmt.Errorf("broker on %s, bucket led by %s", on, leader)
			}
			return b.Settled(ctx)
		})
		return leader
	}
	// Log in once the broker sits on the leader's server: a login in flight
	// while it moves there is lost with its reply, and the SDK reports
	// UNAVAILABLE rather than guess (a CI run on 2026-12-05).
	leader := onLeader()
	alice, bob := env.Login("alice", "phone"), env.Login("bob", "phone")
	call(t, alice, bob)

	// The leadership moves to another server: the broker follows it there.
	follows := counter(t, b.Broker, "ringer_nats_server_follows_total")
	other := c.Servers[0].Name()
	if other == leader {
		other = c.Servers[1].Name()
	}
	natstest.Attempt(t, 30*time.Second, time.Second, func(ctx context.Context) error {
		if l, err := st.Leader(ctx, store.BucketGroup(0)); err != nil || l == other {
			return err
		}
		if err := st.MoveLeader(ctx, store.BucketGroup(0), other); err != nil {
			return err
		}
		return fmt.Errorf("moving the bucket's leadership to %s", other)
	})
	if got := onLeader(); got != other {
		t.Fatalf("the bucket is led by %s, not %s where it was moved", got, other)
	}
	if n := counter(t, b.Broker, "ringer_nats_server_follows_total"); n <= follows {
		t.Errorf("ringer_nats_server_follows_total %v, was %v before the move", n, follows)
	}
	call(t, alice, bob)
}

// Without --follow-leader (the default) a broker stays where it is, and
// Settled does not wait for it to move.
func TestABrokerThatDoesNotFollowIsSettledAnywhere(t *testing.T) {
	c, cfg := clusterR3(t)
	cfg.LeaderCheck, cfg.FollowLeader = 200*time.Millisecond, false
	var b *ringertest.Broker
	// A broker on each server in turn until one is not on the leader's.
	for _, s := range c.Servers {
		cfg.Name = "b-" + s.Name()
		b = ringertest.StartBroker(t, s.ClientURL(), cfg)
		leader, err := b.Store().Leader(ringertest.Ctx(t), store.BucketGroup(0))
		if err == nil && leader != b.NC.ConnectedServerName() {
			break
		}
		b = nil
	}
	if b == nil {
		t.Fatal("no broker connected away from the bucket's leader")
	}
	natstest.Attempt(t, 20*time.Second, 250*time.Millisecond, func(ctx context.Context) error {
		err := b.Settled(ctx)
		if errors.Is(err, broker.ErrNotSettled) {
			return fmt.Errorf("not settled although not following: %w", err)
		}
		return err
	})
	if n := counter(t, b.Broker, "ringer_nats_server_follows_total"); n != 0 {
		t.Errorf("ringer_nats_server_follows_total %v with --follow-leader=false", n)
	}
}

// call makes a call from caller to callee and hangs it up.
func call(t *testing.T, caller, callee *ringertest.Client) {
	t.Helper()
	li := caller.Call(t, callee)
	if err := caller.Hangup(ringertest.Ctx(t), li.ID); err != nil {
		t.Fatal(err)
	}
}
