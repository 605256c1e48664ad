package broker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/broker"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/subjects"
)

// The Raft groups a call depends on gather on the server that leads the
// bucket, and a group moved elsewhere comes back (broker/leaders.go), so
// that a node that hangs stalls calls only if it leads the bucket.
func TestLeadersGatherOnTheBucketLeader(t *testing.T) {
	t.Parallel() // waits on timeouts and elections, with no latency bound: run beside another such test
	c, cfg := clusterR3(t)
	cfg.Export = true // RINGER_EXPORT is one of the groups too
	env := &ringertest.Env{T: t, URL: c.URLs()}
	off := cfg
	off.Name, off.LeaderCheck = "b0", 0 // leaves leaders where they are
	env.Brokers = append(env.Brokers, ringertest.StartBroker(t, env.URL, off))
	st := env.Brokers[0].Store()

	// Set-up: the presence consumer led by another server than the bucket.
	var bucket, other string
	g := store.PartitionGroups(0)[0] // presence
	natstest.Attempt(t, 30*time.Second, time.Second, func(ctx context.Context) error {
		var err error
		if bucket, err = st.Leader(ctx, store.BucketGroup(0)); err != nil {
			return err
		}
		other = c.Servers[0].Name()
		if other == bucket {
			other = c.Servers[1].Name()
		}
		if l, err := st.Leader(ctx, g); err != nil || l == other {
			return err
		}
		if err := st.MoveLeader(ctx, g, other); err != nil {
			return err
		}
		return fmt.Errorf("moving %s to %s", g, other)
	})
	t.Logf("%s led by %s, the bucket by %s", g, other, bucket)

	natstest.Attempt(t, 10*time.Second, 250*time.Millisecond, func(ctx context.Context) error {
		if err := env.Brokers[0].Settled(ctx); !errors.Is(err, broker.ErrNotSettled) {
			return fmt.Errorf("Settled with %s led away from its bucket: %v", g, err)
		}
		return nil
	})

	on := cfg
	on.Name, on.LeaderCheck = "b1", 200*time.Millisecond
	env.Brokers = append(env.Brokers, ringertest.StartBroker(t, env.URL, on))
	natstest.Attempt(t, 30*time.Second, time.Second, func(ctx context.Context) error {
		want, err := st.Leader(ctx, store.BucketGroup(0))
		if err != nil {
			return err
		}
		for _, g := range append(store.PartitionGroups(0), store.Shared...) {
			l, err := st.Leader(ctx, g)
			if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				continue // not provisioned here (export off), as the brokers skip it
			}
			if err != nil || l != want {
				return fmt.Errorf("%s led by %q (%v), the bucket by %s", g, l, err, want)
			}
		}
		return nil
	})
	natstest.Attempt(t, 10*time.Second, 250*time.Millisecond, func(ctx context.Context) error {
		return env.Brokers[0].Settled(ctx) // plan agrees: nothing left to move
	})
}

// With partitions, the buckets' leaders spread over the servers (each leads
// its share of the writes) even when elections put them all on one, and
// each partition's groups gather on its own bucket's leader.
func TestPartitionLeadersSpreadOverServers(t *testing.T) {
	t.Parallel() // waits on timeouts and elections, with no latency bound: run beside another such test
	c, cfg := clusterR3(t)
	cfg.Partitions = 3
	env := &ringertest.Env{T: t, URL: c.URLs()}
	off := cfg
	off.Name, off.LeaderCheck = "b0", 0 // leaves leaders where they are
	env.Brokers = append(env.Brokers, ringertest.StartBroker(t, env.URL, off))
	st := env.Brokers[0].Store()
	if st.Partitions() != 3 {
		t.Fatalf("%d partitions", st.Partitions())
	}

	// Set-up: every bucket led by the same server.
	crowded := c.Servers[0].Name()
	natstest.Attempt(t, 30*time.Second, time.Second, func(ctx context.Context) error {
		for p := range subjects.Partition(3) {
			g := store.BucketGroup(p)
			if l, err := st.Leader(ctx, g); err != nil || l == crowded {
				if err != nil {
					return err
				}
				continue
			}
			if err := st.MoveLeader(ctx, g, crowded); err != nil {
				return err
			}
			return fmt.Errorf("moving %s to %s", g, crowded)
		}
		return nil
	})

	natstest.Attempt(t, 10*time.Second, 250*time.Millisecond, func(ctx context.Context) error {
		if err := env.Brokers[0].Settled(ctx); !errors.Is(err, broker.ErrNotSettled) {
			return fmt.Errorf("Settled with every bucket led by one server: %v", err)
		}
		return nil
	})

	on := cfg
	on.Name, on.LeaderCheck = "b1", 200*time.Millisecond
	env.Brokers = append(env.Brokers, ringertest.StartBroker(t, env.URL, on))
	natstest.Attempt(t, 60*time.Second, time.Second, func(ctx context.Context) error {
		leads := map[string]int{}
		for p := range subjects.Partition(3) {
			want, err := st.Leader(ctx, store.BucketGroup(p))
			if err != nil {
				return err
			}
			leads[want]++
			groups := store.PartitionGroups(p)
			if p == 0 {
				groups = append(groups, store.Shared...)
			}
			for _, g := range groups {
				l, err := st.Leader(ctx, g)
				if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrConsumerNotFound) {
					continue
				}
				if err != nil || l != want {
					return fmt.Errorf("%s led by %q (%v), its bucket by %s", g, l, err, want)
				}
			}
		}
		if len(leads) != 3 {
			return fmt.Errorf("bucket leaders per server: %v", leads)
		}
		return nil
	})
	natstest.Attempt(t, 10*time.Second, 250*time.Millisecond, func(ctx context.Context) error {
		return env.Brokers[0].Settled(ctx) // plan agrees: nothing left to move
	})

	// And calls go through.
	alice, bob := env.Login("alice", "phone"), env.Login("bob", "phone")
	alice.Call(t, bob)
}

// Once every group is led where it should be, a broker's leader checks
// grow apart (each asks JetStream about every group of every partition, a
// cost the servers pay even when idle), and a group moved away while they
// are apart still comes back within seconds: JetStream's advisory of the
// group's new leader brings the checks back to every LeaderCheck.
func TestLeaderChecksThinOutWhenSettled(t *testing.T) {
	t.Parallel() // waits on timeouts and elections, with no latency bound: run beside another such test
	c, cfg := clusterR3(t)
	env := &ringertest.Env{T: t, URL: c.URLs()}
	off := cfg
	off.Name, off.LeaderCheck = "b0", 0 // leaves leaders where they are
	env.Brokers = append(env.Brokers, ringertest.StartBroker(t, env.URL, off))
	st := env.Brokers[0].Store()
	on := cfg
	on.Name, on.LeaderCheck, on.LeaderCheckIdle = "b1", 100*time.Millisecond, time.Minute
	env.Brokers = append(env.Brokers, ringertest.StartBroker(t, env.URL, on))
	b1 := env.Brokers[1].Broker
	natstest.Attempt(t, 30*time.Second, 250*time.Millisecond, func(ctx context.Context) error {
		return env.Brokers[0].Settled(ctx)
	})

	// A measuring window, not a wait for an event: every 100 ms the broker
	// would look ~60 times in it; growing apart from 100 ms, a handful.
	before := counter(t, b1, "ringer_leader_checks_total")
	time.Sleep(6 * time.Second)
	looks := counter(t, b1, "ringer_leader_checks_total") - before
	t.Logf("%g leader checks in 6 s once settled", looks)
	if looks > 10 {
		t.Errorf("%g leader checks in 6 s with nothing to move, want 10 or fewer", looks)
	}

	// Checks seconds apart now (without the advisory, the group came back
	// after 5.7 s; with it, in 0.4 s): move the presence consumer's leadership away.
	g := store.PartitionGroups(0)[0]
	var bucket string
	natstest.Attempt(t, 10*time.Second, 250*time.Millisecond, func(ctx context.Context) error {
		var err error
		if bucket, err = st.Leader(ctx, store.BucketGroup(0)); err != nil {
			return err
		}
		other := c.Servers[0].Name()
		if other == bucket {
			other = c.Servers[1].Name()
		}
		return st.MoveLeader(ctx, g, other)
	})
	moved := time.Now()
	natstest.Attempt(t, 30*time.Second, 100*time.Millisecond, func(ctx context.Context) error {
		if l, err := st.Leader(ctx, g); err != nil || l != bucket {
			return fmt.Errorf("%s led by %q (%v), the bucket by %s", g, l, err, bucket)
		}
		return nil
	})
	back := time.Since(moved)
	t.Logf("%s back on the bucket's leader %s after %s", g, bucket, back)
	if back > 2*time.Second {
		t.Errorf("%s came back after %s: the election's advisory did not bring the checks forward", g, back)
	}
}

// A broker that moved to another server may have missed the advisories of
// elections held meanwhile, so a reconnect brings its backed-off leader
// checks back to every LeaderCheck, as an advisory does.
func TestLeaderChecksComeBackAfterAReconnect(t *testing.T) {
	t.Parallel() // waits for the checks to grow apart, with no latency bound: run beside another such test
	c, cfg := clusterR3(t)
	env := &ringertest.Env{T: t, URL: c.URLs()}
	on := cfg
	on.Name, on.LeaderCheck, on.LeaderCheckIdle = "b1", 100*time.Millisecond, time.Minute
	env.Brokers = append(env.Brokers, ringertest.StartBroker(t, env.URL, on))
	b1 := env.Brokers[0]
	natstest.Attempt(t, 30*time.Second, 250*time.Millisecond, func(ctx context.Context) error {
		return b1.Settled(ctx)
	})

	// checked waits for the next check and returns when it was seen.
	checked := func(within time.Duration) (time.Time, bool) {
		before := counter(t, b1.Broker, "ringer_leader_checks_total")
		for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if counter(t, b1.Broker, "ringer_leader_checks_total") > before {
				return time.Now(), true
			}
		}
		return time.Time{}, false
	}
	// Apart: two checks more than 1.5 s from each other (the interval
	// doubles from 100 ms; the next after a 1.6 s gap is 1.6-4.8 s away).
	last, _ := checked(10 * time.Second)
	for {
		next, ok := checked(20 * time.Second)
		if !ok {
			t.Fatal("no leader check in 20 s")
		}
		gap := next.Sub(last)
		last = next
		if gap > 1500*time.Millisecond {
			break
		}
	}
	reconnects := b1.NC.Stats().Reconnects
	if err := b1.NC.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if b1.NC.Stats().Reconnects == reconnects || !b1.NC.IsConnected() {
			return errors.New("not reconnected yet")
		}
		return nil
	})
	back := time.Now()
	at, ok := checked(5 * time.Second)
	if !ok || at.Sub(back) > 700*time.Millisecond {
		t.Fatalf("after a reconnect the next leader check came %s later (seen: %v); want within 0.7 s", at.Sub(back), ok)
	}
	t.Logf("a leader check %s after the reconnect (%s after the one before it)", at.Sub(back).Round(time.Millisecond), at.Sub(last).Round(time.Millisecond))
}
