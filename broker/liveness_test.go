package broker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
)

// The SDK's side of a NATS server that hangs or is cut off (client/liveness.go):
// the device's connection reaches the server through a proxy that the test
// freezes, so bytes stop both ways and the connection stays open, as with a
// docker pause or a half-open network path. The connection's second URL is
// the same server, directly: "another server" for the client.

// frozenPath connects through a proxy to env's server, with env's server as
// the next URL to try.
func frozenPath(t *testing.T, env *ringertest.Env, name string) (*nats.Conn, *natstest.Proxy) {
	t.Helper()
	p := natstest.NewProxy(t, strings.TrimPrefix(env.URL, "nats://"))
	nc := natstest.Connect(t, p.URL()+","+env.URL, nats.Name(name), nats.DontRandomize(),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if got := nc.ConnectedUrl(); got != p.URL() {
		t.Fatalf("set-up: connected to %s, not through the proxy", got)
	}
	return nc, p
}

// A send whose server froze is sent again through another server within the
// send's own context: it costs time, not the call.
func TestSendGetsThroughAFrozenServer(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.PresenceTTL = time.Minute // no heartbeat during the test: the send alone finds the fault
	env := ringertest.Start(t, cfg)
	nc, proxy := frozenPath(t, env, "alice/phone")
	alice := env.LoginOn(nc, "alice", "phone")
	bob := env.Login("bob", "phone")

	proxy.Freeze()
	li := alice.CreateLocalInvitation("bob")
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	start := time.Now()
	if err := li.Send(ctx); err != nil {
		t.Fatalf("send through a frozen server, after %s: %v", time.Since(start).Round(time.Millisecond), err)
	}
	t.Logf("sent in %s, through %s", time.Since(start).Round(time.Millisecond), nc.ConnectedUrl())
	if nc.ConnectedUrl() == proxy.URL() {
		t.Fatal("the client is still on the frozen server")
	}
	bob.Rec.WaitRemote(t, li.ID)
}

// A device whose server froze misses the ring and the cancel of an
// invitation that starts and ends meanwhile; its next heartbeat gets no
// answer, the client leaves the server, and its resync finds the
// invitation in the history: the callback for its end fires.
func TestADeviceOnAFrozenServerLearnsWhatItMissed(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.PresenceTTL = 3 * time.Second // a heartbeat every second
	cfg.Timeouts.Offline = time.Minute
	env := ringertest.Start(t, cfg)
	alice := env.Login("alice", "phone")
	nc, proxy := frozenPath(t, env, "bob/phone")
	bob := env.LoginOn(nc, "bob", "phone")

	proxy.Freeze()
	li := alice.Invite(t, "bob") // rings: bob's session is alive
	ctx := ringertest.Ctx(t)
	if err := li.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	alice.Rec.Wait(t, "Canceled "+li.ID)

	bob.Rec.Wait(t, "RemoteCanceled "+li.ID)
	if nc.ConnectedUrl() == proxy.URL() {
		t.Fatal("bob learnt it on the frozen server?")
	}
	if n := bob.Rec.Count("RemoteCanceled " + li.ID); n != 1 {
		t.Fatalf("bob was told %d times", n)
	}
}

// A server that answers its pings but through which no command gets an
// answer (cut off from every broker, as a NATS node cut off from the others
// is) is left too, after a few seconds of unanswered heartbeats.
func TestADeviceLeavesAServerThatAnswersNothing(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.PresenceTTL = 3 * time.Second
	env := ringertest.Start(t, cfg)
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)
	if err := env.Brokers[0].Shutdown(ctx); err != nil { // no broker answers; the server does
		t.Fatal(err)
	}
	start := time.Now()
	bob.Rec.Wait(t, "Connection "+client.ConnectionReconnecting.String())
	t.Logf("left the server after %s", time.Since(start).Round(time.Millisecond))
	if err := bob.NC.FlushTimeout(time.Second); err != nil {
		t.Fatalf("set-up: the server stopped answering pings: %v", err)
	}
}

// A device answered NOT_FOUND for an invitation it has seen live (a replica
// behind, or the deposed leader of a server cut off from the others still
// answering) counts those answers as none: after a few seconds of them it
// leaves its server. Here the record is removed for a while, as a stale
// store would show it.
func TestADeviceLeavesAServerThatDeniesWhatItSaw(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.CacheSize = 0
	cfg.PresenceTTL = time.Minute // no heartbeat: the refuse alone tells
	cfg.Timeouts.Expire = 30 * time.Second
	env := ringertest.Start(t, cfg)
	alice, bob := env.Login("alice", "phone"), env.Login("bob", "phone")
	li := alice.Invite(t, "bob")
	ri := bob.Rec.WaitRemote(t, li.ID)
	alice.Rec.Wait(t, "ReceivedByPeer "+li.ID)

	restore := hide(t, env.Brokers[0].Store(), li.ID)
	refused := make(chan error, 1)
	go func() {
		rctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		refused <- ri.Refuse(rctx, "no")
	}()
	start := time.Now()
	bob.Rec.Wait(t, "Connection "+client.ConnectionReconnecting.String())
	t.Logf("left after %s of denials", time.Since(start).Round(time.Millisecond))
	restore()
	if err := <-refused; err != nil {
		t.Fatalf("refuse: %v", err)
	}
}

// A command whose reply never came may have been carried out: the device
// asks the broker what became of the invitation, even one it holds as
// ended. Bob left a JOIN call and joins it again; the join is carried out,
// but his server's sends to him are held, so neither its reply nor its
// event reaches him and his device still sees himself out of the call.
// The call then ends, his leg with it. Nothing else would ask: his resync
// lists live invitations (his leg no longer is), re-reads the views it
// holds as live (his is LEFT) and catches up on ones it never saw (it saw
// this one). Without the ask he would keep a revision the broker moved
// past (chaos: group_views_differ, a callee seeing LEFT where the caller's
// leg of it had ended otherwise).
func TestDeviceAsksAfterACommandWithNoKnownOutcome(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	ctx := ringertest.Ctx(t)
	nc, proxy := frozenPath(t, env, "bob/phone")
	alice, carol := env.Login("alice", "p"), env.Login("carol", "p")
	bob := env.LoginOn(nc, "bob", "p")
	li := sendGroup(t, alice, protocol.ModeJoin, "bob", "carol")
	rb, rc := bob.Rec.WaitRemote(t, li.ID), carol.Rec.WaitRemote(t, li.ID)
	for _, ri := range []*client.RemoteInvitation{rb, rc} {
		if err := ri.Accept(ctx, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := rb.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	left, _ := bob.Invitation(li.ID)
	if left.Reason != protocol.ReasonLeft || left.Live() {
		t.Fatalf("bob's view after leaving: %s %s", left.State, left.Reason)
	}

	proxy.FreezeToClient()
	joined := make(chan error, 1)
	go func() {
		jctx, cancel := context.WithTimeout(ctx, time.Second) // one attempt
		defer cancel()
		joined <- rb.Accept(jctx, "")
	}()
	natstest.Eventually(t, 5*time.Second, func() error { // carried out
		inv, err := alice.Get(ctx, li.ID)
		if err != nil {
			return err
		}
		if !inv.Leg("bob").Joined() {
			return fmt.Errorf("bob's leg: %+v", *inv.Leg("bob"))
		}
		return nil
	})
	if err := rc.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	if err := li.Leave(ctx); err != nil { // bob alone: the call ends, his leg with it
		t.Fatal(err)
	}
	final, err := alice.Get(ctx, li.ID)
	if err != nil {
		t.Fatal(err)
	}
	if l := final.Leg("bob"); final.CallState != protocol.CallEnded || l.Reason != protocol.ReasonHangup {
		t.Fatalf("set-up: the call %s, bob's leg %s %s", final.CallState, l.State, l.Reason)
	}
	if err := <-joined; err == nil {
		t.Fatal("set-up: bob's join was answered through a path that holds what his server sends")
	}
	proxy.Sever() // what was held is lost; the device reconnects and resyncs

	want := final.For("bob")
	natstest.Eventually(t, 10*time.Second, func() error {
		v, _ := bob.Invitation(li.ID)
		if v.Revision != want.Revision || v.Reason != want.Reason {
			return fmt.Errorf("bob's device sees %s %s rev %d; the broker's view of him is %s %s rev %d",
				v.State, v.Reason, v.Revision, want.State, want.Reason, want.Revision)
		}
		return nil
	})
}
