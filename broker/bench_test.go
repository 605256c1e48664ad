package broker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/broker"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
)

// benchParty is one logged-in user whose callbacks feed channels.
type benchParty struct {
	c        *ringertest.Client
	ring     chan *client.RemoteInvitation
	received chan string // caller: OnLocalInvitationReceivedByPeer
	accepted chan string // callee: the call exists (OnRemoteInvitationAccepted)
	ended    chan string // OnCallEnded
}

func newBenchParty(env *ringertest.Env, user string) *benchParty {
	p := &benchParty{ring: make(chan *client.RemoteInvitation, 8), received: make(chan string, 8),
		accepted: make(chan string, 8), ended: make(chan string, 8)}
	p.c = env.Login(user, "d1", client.WithHandler(client.Handler{
		OnLocalInvitationReceivedByPeer: func(li *client.LocalInvitation) { p.received <- li.ID },
		OnRemoteInvitationReceived:      func(ri *client.RemoteInvitation) { p.ring <- ri },
		OnRemoteInvitationAccepted:      func(ri *client.RemoteInvitation) { p.accepted <- ri.ID() },
		OnCallEnded:                     func(inv protocol.Invitation) { p.ended <- inv.ID },
	}))
	return p
}

// await waits for a callback of invitation id; if none comes it fails with
// both parties' views of the invitation, which say what happened instead.
func await[T any](b *testing.B, ch chan T, what, id string, caller, callee *benchParty) T {
	select {
	case v := <-ch:
		return v
	case <-time.After(ringertest.Wait):
		ci, _ := caller.c.Invitation(id)
		ce, _ := callee.c.Invitation(id)
		b.Fatalf("no %s within %s: caller view %s/%s rev %d, callee view %s/%s rev %d",
			what, ringertest.Wait, ci.State, ci.Reason, ci.Revision, ce.State, ce.Reason, ce.Revision)
		panic("unreachable")
	}
}

// benchLifecycle runs one accepted call from caller to callee and returns
// once both parties saw it end and both lines are free again: send, ring,
// the callee's automatic ack (awaited: a person answers after the ring, so
// accept does not race the ack), accept, the caller's automatic ack-accept,
// hangup by the callee.
func benchLifecycle(b *testing.B, lines *store.Store, caller, callee *benchParty) {
	ctx, cancel := context.WithTimeout(context.Background(), ringertest.Wait)
	defer cancel()
	li := caller.c.CreateLocalInvitation(callee.c.User())
	if err := li.Send(ctx); err != nil {
		b.Fatal(err)
	}
	ri := await(b, callee.ring, "ring", li.ID, caller, callee)
	await(b, caller.received, "ReceivedByPeer", li.ID, caller, callee)
	if err := ri.Accept(ctx, "ok"); err != nil {
		b.Fatal(err)
	}
	await(b, callee.accepted, "call", li.ID, caller, callee)
	if err := ri.Hangup(ctx); err != nil {
		b.Fatal(err)
	}
	await(b, caller.ended, "call end at the caller", li.ID, caller, callee)
	await(b, callee.ended, "call end at the callee", li.ID, caller, callee)
	// The commit that ended the call freed both lines (a claim holds only
	// while its invitation does); both parties have seen that commit.
	for _, u := range []string{caller.c.User(), callee.c.User()} {
		busy, l, err := lines.Busy(ctx, u, ringertest.TestConfig().LineRules())
		if err != nil {
			b.Fatal(err)
		}
		if busy {
			b.Fatalf("%s still busy after the call ended: claims %v", u, l.IDs())
		}
	}
}

// benchEnv is an embedded NATS (one server and R1, or a three-node cluster
// and R3; file store) and one broker whose sessions outlive the benchmark,
// so that no heartbeat is counted; lines are watched through a second store
// handle, so that only the broker's own round trips are counted.
func benchEnv(b *testing.B, replicas int) (*ringertest.Env, *store.Store) {
	cfg := ringertest.TestConfig()
	cfg.PresenceTTL = 10 * time.Minute
	// Timeouts far beyond any lifecycle: with the test config's 2 s ones, a
	// stall of the loaded box (CI, R3) turned a slow ack into PEER_NO_RESPONSE
	// or ACCEPT_FAILURE and the benchmark into a failure. Timers are
	// BenchmarkTimerLateness's subject, not this one's.
	cfg.Timeouts.Offline, cfg.Timeouts.Expire, cfg.Timeouts.Accept = 30*time.Second, 30*time.Second, 30*time.Second
	cfg.Replicas = replicas
	cfg.SendRate = 0 // one pair sends back to back: measure the lifecycle, not the per-user limit
	var env *ringertest.Env
	if replicas == 1 {
		env = ringertest.Start(b, cfg)
	} else {
		c := natstest.RunCluster(b, replicas)
		env = &ringertest.Env{T: b, URL: c.URLs()}
		env.Brokers = append(env.Brokers, ringertest.StartBroker(b, env.URL, cfg))
		// The broker's queue subscription reaches the other servers over
		// routes a moment later; a login before that finds no responders.
		for _, s := range c.Servers {
			ringertest.WaitServing(b, s.ClientURL())
		}
	}
	nc := natstest.Connect(b, env.URL, nats.Name("bench line watcher"))
	// On a cluster this young, the server this connection landed on may
	// not answer a direct get yet ("no responders": a CI run on
	// 2026-12-05): ask again.
	var lines *store.Store
	natstest.Attempt(b, 30*time.Second, 5*time.Second, func(ctx context.Context) (err error) {
		lines, err = store.Open(ctx, nc)
		return err
	})
	return env, lines
}

func reportStats(b *testing.B, br *broker.Broker, before store.StatsSnapshot) {
	d := br.Store().Stats().Sub(before)
	n := float64(b.N)
	b.ReportMetric(float64(d.Writes)/n, "kv_writes/op")
	b.ReportMetric(float64(d.Reads)/n, "kv_reads/op")
	b.ReportMetric(float64(d.Timers)/n, "timers/op")
}

// BenchmarkAcceptedLifecycle is one accepted call at a time, end to end
// (ns/op is the latency of a whole lifecycle, lines free again included),
// with the broker's JetStream round trips per lifecycle.
func BenchmarkAcceptedLifecycle(b *testing.B) {
	b.Run("R1", func(b *testing.B) { benchSerial(b, 1) })
	b.Run("R3", func(b *testing.B) { benchSerial(b, 3) })
}

func benchSerial(b *testing.B, replicas int) {
	env, lines := benchEnv(b, replicas)
	alice, bob := newBenchParty(env, "alice"), newBenchParty(env, "bob")
	benchLifecycle(b, lines, alice, bob) // warm up
	br := env.Brokers[0].Broker
	before := br.Store().Stats()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		benchLifecycle(b, lines, alice, bob)
	}
	b.StopTimer()
	reportStats(b, br, before)
}

// BenchmarkAcceptedLifecycleParallel runs lifecycles from GOMAXPROCS×4
// pairs at once (b.SetParallelism(4)): ns/op is the inverse throughput.
func BenchmarkAcceptedLifecycleParallel(b *testing.B) {
	b.Run("R1", func(b *testing.B) { benchParallel(b, 1) })
	b.Run("R3", func(b *testing.B) { benchParallel(b, 3) })
}

func benchParallel(b *testing.B, replicas int) {
	env, lines := benchEnv(b, replicas)
	b.SetParallelism(4)
	pairs := make(chan [2]*benchParty, 64)
	for i := 0; i < 64; i++ {
		pairs <- [2]*benchParty{newBenchParty(env, fmt.Sprintf("caller%d", i)), newBenchParty(env, fmt.Sprintf("callee%d", i))}
	}
	br := env.Brokers[0].Broker
	before := br.Store().Stats()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		p := <-pairs
		for pb.Next() {
			benchLifecycle(b, lines, p[0], p[1])
		}
	})
	b.StopTimer()
	reportStats(b, br, before)
}
