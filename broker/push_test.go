package broker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// pushWatch reads the push stream from its start, as a gateway would.
type pushWatch struct {
	t    *testing.T
	cons jetstream.Consumer
	seen []protocol.PushRequest
}

func watchPush(t *testing.T, env *ringertest.Env) *pushWatch {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, env.URL))
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ringertest.Ctx(t), subjects.PushStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subjects.AllPushRequests()},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &pushWatch{t: t, cons: cons}
}

// next waits for the next push request.
func (w *pushWatch) next() protocol.PushRequest {
	w.t.Helper()
	m, err := w.cons.Next(jetstream.FetchMaxWait(ringertest.Wait))
	if err != nil {
		w.t.Fatalf("no push request within %s (seen %d): %v", ringertest.Wait, len(w.seen), err)
	}
	r, err := protocol.DecodePushRequest(m.Data())
	if err != nil {
		w.t.Fatal(err)
	}
	if got := m.Headers().Get(jetstream.MsgIDHeader); got != r.ID {
		w.t.Fatalf("push request %s stored with message id %q", r.ID, got)
	}
	if m.Subject() != subjects.PushRequests(r.User) {
		w.t.Fatalf("push request for %s on %s", r.User, m.Subject())
	}
	w.seen = append(w.seen, *r)
	return *r
}

// register registers c's device for pushes.
func register(t *testing.T, c *ringertest.Client, token string) protocol.PushTarget {
	t.Helper()
	reg, err := c.RegisterPush(ringertest.Ctx(t), protocol.PlatformAPNs, token, "com.example.app", 0)
	if err != nil {
		t.Fatalf("register %s/%s: %v", c.User(), c.Device(), err)
	}
	return reg
}

func TestPushWakesAnAsleepDeviceAndStopsTheRinging(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	w := watchPush(t, env)
	alice := env.Login("alice", "phone")
	bobPhone := env.NewClient("bob", "phone") // the app is asleep: no session
	reg := register(t, bobPhone, "a1b2c3")
	if reg.Device != "phone" || reg.Platform != protocol.PlatformAPNs || reg.ExpiresAt < time.Now().Add(29*24*time.Hour).UnixMilli() {
		t.Fatalf("registration: %+v", reg)
	}

	li := alice.Invite(t, "bob")
	ring := w.next()
	if ring.ID != li.ID+".ring" || ring.Kind != protocol.PushRing || ring.User != "bob" || ring.CollapseKey != li.ID ||
		ring.Invitation.ID != li.ID || ring.Invitation.State != protocol.StateSent || ring.Deadline != ring.Invitation.Deadline ||
		len(ring.Devices) != 1 || ring.Devices[0].Device != "phone" || ring.Devices[0].Token != "a1b2c3" || ring.Devices[0].App != "com.example.app" {
		t.Fatalf("ring request: %+v", ring)
	}
	// The push wakes the app: it logs in, finds the invitation, and
	// accepts it by id; the caller hears of the receipt from its ack.
	ctx := ringertest.Ctx(t)
	if err := bobPhone.Login(ctx); err != nil {
		t.Fatal(err)
	}
	bobPhone.Rec.WaitRemote(t, li.ID)
	alice.Rec.Wait(t, "ReceivedByPeer "+li.ID)
	if err := bobPhone.Accept(ctx, li.ID, "hi"); err != nil {
		t.Fatal(err)
	}
	alice.Rec.Wait(t, "Accepted "+li.ID)
	stop := w.next()
	if stop.ID != li.ID+".stop" || stop.Kind != protocol.PushStop || stop.Deadline != 0 || len(stop.Devices) != 1 {
		t.Fatalf("stop request: %+v", stop)
	}
	// ACCEPTING and ACCEPTED both ask for the STOP: the stream keeps one.
	// The next request is the next invitation's.
	bobPhone.Rec.Wait(t, "RemoteAccepted "+li.ID)
	if err := bobPhone.Hangup(ctx, li.ID); err != nil {
		t.Fatal(err)
	}
	if err := bobPhone.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	alice.Rec.Wait(t, "CallEnded "+li.ID)
	next := alice.Invite(t, "bob")
	if r := w.next(); r.ID != next.ID+".ring" {
		t.Fatalf("after the call's STOP came %s, want the next invitation's RING", r.ID)
	}
	if err := next.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if r := w.next(); r.ID != next.ID+".stop" || r.Invitation.State != protocol.StateCanceled {
		t.Fatalf("after a cancel: %+v", r)
	}
}

func TestPushOnlyToDevicesWithoutAConnection(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	w := watchPush(t, env)
	alice := env.Login("alice", "phone")
	register(t, env.Login("bob", "phone"), "connected-token")
	register(t, env.NewClient("bob", "tablet"), "asleep-token")
	register(t, env.NewClient("carol", "phone"), "carol-token")
	ctx := ringertest.Ctx(t)

	li := alice.Invite(t, "bob")
	if r := w.next(); r.ID != li.ID+".ring" || len(r.Devices) != 1 || r.Devices[0].Device != "tablet" {
		t.Fatalf("ring request to bob: %+v", r)
	}
	if err := li.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	// STOP goes to every registered device: a connected one may have rung
	// through a push too, before it connected.
	if r := w.next(); r.ID != li.ID+".stop" || len(r.Devices) != 2 {
		t.Fatalf("stop request to bob: %+v", r)
	}

	// A busy refusal rings nobody: no request at all. Unregistered: none.
	bob := env.Login("bob", "laptop")
	if err := bob.SetBusy(ctx, true); err != nil {
		t.Fatal(err)
	}
	if inv := alice.Invite(t, "bob").Invitation(); inv.Reason != protocol.ReasonBusy {
		t.Fatalf("not busy: %+v", inv)
	}
	if err := env.NewClient("carol", "phone").UnregisterPush(ctx); err != nil {
		t.Fatal(err)
	}
	alice.Invite(t, "carol")
	dave := env.NewClient("dave", "phone")
	register(t, dave, "dave-token")
	marker := alice.Invite(t, "dave")
	if r := w.next(); r.ID != marker.ID+".ring" {
		t.Fatalf("a busy refusal or an unregistered device got a push request: %+v", r)
	}
}

func TestRegisterRefusesBadTargets(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.MaxPushDevices = 2
	env := ringertest.Start(t, cfg)
	bob := env.NewClient("bob", "phone")
	ctx := ringertest.Ctx(t)
	long := strings.Repeat("x", protocol.MaxPushTokenLen+1)
	for _, tc := range []struct {
		platform   protocol.Platform
		token, app string
		ttl        time.Duration
	}{
		{"pager", "t", "", 0}, {"", "t", "", 0}, {protocol.PlatformFCM, "", "", 0}, {protocol.PlatformFCM, long, "", 0},
		{protocol.PlatformFCM, "\xff\xfe", "", 0}, {protocol.PlatformFCM, "t", "my app", 0},
		{protocol.PlatformFCM, "t", strings.Repeat("a", protocol.MaxPushAppLen+1), 0},
		{protocol.PlatformFCM, "t", "", -time.Second}, {protocol.PlatformFCM, "t", "", time.Second},
		{protocol.PlatformFCM, "t", "", 91 * 24 * time.Hour},
	} {
		_, err := bob.RegisterPush(ctx, tc.platform, tc.token, tc.app, tc.ttl)
		if !errors.Is(err, client.ErrInvalidArgument) {
			t.Errorf("register %q %.20q %q %s: %v, want INVALID_ARGUMENT", tc.platform, tc.token, tc.app, tc.ttl, err)
		}
	}
	if _, err := bob.RegisterPush(ctx, protocol.PlatformWebPush, `{"endpoint":"https://push.example/x"}`, "https://app.example", time.Hour); err != nil {
		t.Fatal(err)
	}
	register(t, env.NewClient("bob", "tablet"), "t2")
	laptop := env.NewClient("bob", "laptop")
	if _, err := laptop.RegisterPush(ctx, protocol.PlatformFCM, "t3", "", 0); protocol.CodeOf(err) != protocol.CodeResourceExhausted {
		t.Fatalf("a third push target with a cap of 2: %v, want RESOURCE_EXHAUSTED", err)
	}
	register(t, bob, "rotated") // a registered device may replace its token at the cap
	if err := bob.UnregisterPush(ctx); err != nil {
		t.Fatal(err)
	}
	register(t, laptop, "t3") // and once one leaves, another may come
	natstest.Eventually(t, ringertest.Wait, func() error {
		targets, err := env.Brokers[0].Store().PushTargets(context.Background(), "bob")
		if err != nil || len(targets) != 2 {
			return fmt.Errorf("bob's push targets: %+v, %v", targets, err)
		}
		return nil
	})
}
