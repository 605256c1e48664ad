package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/internal/signature"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// attempt is one POST the test's endpoint received.
type attempt struct {
	at time.Time
	d  protocol.PushDelivery
}

// endpoint is a real HTTP server standing in for an APNs/FCM adapter: it
// checks each delivery's signature, records it, and answers what status
// says for it.
type endpoint struct {
	*httptest.Server
	secret   []byte
	status   func(d protocol.PushDelivery, n int) int // n: how many times this id was seen before
	mu       sync.Mutex
	attempts []attempt
	got      chan attempt
}

func newEndpoint(t *testing.T, secret string, status func(d protocol.PushDelivery, n int) int) *endpoint {
	e := &endpoint{secret: []byte(secret), status: status, got: make(chan attempt, 100)}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := signature.Verify(e.secret, r.Header.Get(signature.Header), body, time.Now(), 5*time.Minute); err != nil {
			t.Errorf("delivery with a bad signature %q: %v", r.Header.Get(signature.Header), err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var d protocol.PushDelivery
		if err := json.Unmarshal(body, &d); err != nil || r.Header.Get("Ringer-Push-Id") != d.ID {
			t.Errorf("delivery %q: %v", body, err)
		}
		e.mu.Lock()
		n := 0
		for _, a := range e.attempts {
			if a.d.ID == d.ID && a.d.Device.Device == d.Device.Device {
				n++
			}
		}
		a := attempt{time.Now(), d}
		e.attempts = append(e.attempts, a)
		e.mu.Unlock()
		w.WriteHeader(e.status(d, n))
		e.got <- a
	}))
	t.Cleanup(e.Close)
	return e
}

// receive waits for the next value on ch (what a test server received).
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(ringertest.Wait):
		t.Fatalf("no %s within %s", what, ringertest.Wait)
	}
	var zero T
	return zero
}

// next waits for the endpoint's next delivery.
func (e *endpoint) next(t *testing.T) attempt { t.Helper(); return receive(t, e.got, "delivery") }

func (e *endpoint) count(id string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, a := range e.attempts {
		if a.d.ID == id {
			n++
		}
	}
	return n
}

// startGateway runs a gateway against env until the test ends.
func startGateway(t *testing.T, env *ringertest.Env, cfg config) *gateway {
	t.Helper()
	return startGatewayWith(t, env, cfg, func(*gateway) {})
}

// startGatewayWith is startGateway with setup applied to the gateway
// before it starts.
func startGatewayWith(t *testing.T, env *ringertest.Env, cfg config, setup func(*gateway)) *gateway {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, env.URL))
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.Nop()
	if testing.Verbose() {
		log = zerolog.New(zerolog.NewTestWriter(t))
	}
	g := newGateway(js, cfg, log, prometheus.NewRegistry())
	setup(g)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.consume(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	return g
}

func testConfig(url string) config {
	return config{endpoints: map[protocol.Platform]string{protocol.PlatformAPNs: url}, secret: []byte("s3cret"),
		timeout: 2 * time.Second, maxDeliver: 3, backoff: 50 * time.Millisecond, maxBackoff: 200 * time.Millisecond, ackWait: 5 * time.Second}
}

func ok(protocol.PushDelivery, int) int { return http.StatusOK }

func TestGatewayWakesTheCallee(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	ep := newEndpoint(t, "s3cret", ok)
	startGateway(t, env, testConfig(ep.URL))
	ctx := ringertest.Ctx(t)
	alice := env.Login("alice", "phone")
	bob := env.NewClient("bob", "iphone")
	if _, err := bob.RegisterPush(ctx, protocol.PlatformAPNs, "f00d", "com.example.voip", 0); err != nil {
		t.Fatal(err)
	}

	li := alice.Invite(t, "bob")
	ring := ep.next(t).d
	if ring.ID != li.ID+".ring" || ring.Kind != protocol.PushRing || ring.User != "bob" || ring.CollapseKey != li.ID ||
		ring.Device.Device != "iphone" || ring.Device.Token != "f00d" || ring.Device.App != "com.example.voip" ||
		ring.Invitation.Caller != "alice" || ring.Deadline == 0 {
		t.Fatalf("ring delivery: %+v", ring)
	}
	// What the app does on the push: log in, find the invitation, answer.
	if err := bob.Login(ctx); err != nil {
		t.Fatal(err)
	}
	bob.Rec.WaitRemote(t, li.ID)
	if err := bob.Accept(ctx, li.ID, "woken"); err != nil {
		t.Fatal(err)
	}
	alice.Rec.Wait(t, "ReceivedByPeer "+li.ID)
	alice.Rec.Wait(t, "Accepted "+li.ID+" woken")
	if stop := ep.next(t).d; stop.ID != li.ID+".stop" || stop.Kind != protocol.PushStop || stop.Device.Device != "iphone" {
		t.Fatalf("stop delivery: %+v", stop)
	}
}

func TestGatewayRetriesWithBackoff(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	// The ring fails twice (a 503, then a 429), then goes through.
	ep := newEndpoint(t, "s3cret", func(d protocol.PushDelivery, n int) int {
		if d.Kind == protocol.PushRing && n < 2 {
			return []int{http.StatusServiceUnavailable, http.StatusTooManyRequests}[n]
		}
		return http.StatusOK
	})
	cfg := testConfig(ep.URL)
	g := startGateway(t, env, cfg)
	ctx := ringertest.Ctx(t)
	alice := env.Login("alice", "phone")
	if _, err := env.NewClient("bob", "iphone").RegisterPush(ctx, protocol.PlatformAPNs, "f00d", "", 0); err != nil {
		t.Fatal(err)
	}
	li := alice.Invite(t, "bob")
	a, b, c := ep.next(t), ep.next(t), ep.next(t)
	for _, x := range []attempt{a, b, c} {
		if x.d.ID != li.ID+".ring" {
			t.Fatalf("attempt %+v, want the ring", x.d)
		}
	}
	if gap1, gap2 := b.at.Sub(a.at), c.at.Sub(b.at); gap1 < cfg.backoff || gap2 < 2*cfg.backoff {
		t.Fatalf("attempts %s and %s apart, want at least %s and %s", gap1, gap2, cfg.backoff, 2*cfg.backoff)
	}
	natstest.Eventually(t, ringertest.Wait, func() error {
		if n := testutil.ToFloat64(g.requests.WithLabelValues("RING", "delivered")); n != 1 {
			return fmt.Errorf("ring requests delivered: %g", n)
		}
		return nil
	})
	if n := testutil.ToFloat64(g.deliveries.WithLabelValues("apns", "retry")); n != 2 {
		t.Fatalf("retried deliveries: %g, want 2", n)
	}
}

func TestGatewayDeadLettersWhatNeverGoesThrough(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	ep := newEndpoint(t, "s3cret", func(protocol.PushDelivery, int) int { return http.StatusInternalServerError })
	cfg := testConfig(ep.URL)
	cfg.backoff, cfg.maxBackoff = 20*time.Millisecond, 40*time.Millisecond
	startGateway(t, env, cfg)
	ctx := ringertest.Ctx(t)
	alice := env.Login("alice", "phone")
	if _, err := env.NewClient("bob", "iphone").RegisterPush(ctx, protocol.PlatformAPNs, "f00d", "", 0); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(natstest.Connect(t, env.URL))
	if err != nil {
		t.Fatal(err)
	}
	dead, err := js.OrderedConsumer(ctx, subjects.PushStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subjects.PushDeadLetters("bob")}})
	if err != nil {
		t.Fatal(err)
	}
	li := alice.Invite(t, "bob")
	m, err := dead.Next(jetstream.FetchMaxWait(ringertest.Wait))
	if err != nil {
		t.Fatalf("no dead letter: %v", err)
	}
	req, err := protocol.DecodePushRequest(m.Data())
	if err != nil || req.ID != li.ID+".ring" || m.Headers().Get("Ringer-Push-Error") != "retries exhausted" {
		t.Fatalf("dead letter %+v (%v), headers %v", req, err, m.Headers())
	}
	if n := ep.count(li.ID + ".ring"); n != cfg.maxDeliver {
		t.Fatalf("%d attempts before the dead letter, want --max-deliver %d", n, cfg.maxDeliver)
	}
}

func TestGatewayNeitherRetriesARejectionNorRingsPastTheDeadline(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	ep := newEndpoint(t, "s3cret", func(d protocol.PushDelivery, _ int) int {
		switch {
		case d.Kind == protocol.PushStop:
			return http.StatusOK
		case d.Device.Device == "old":
			return http.StatusGone // the platform says the token is dead
		}
		return http.StatusServiceUnavailable
	})
	cfg := testConfig(ep.URL)
	cfg.maxDeliver, cfg.backoff, cfg.maxBackoff = 1000, 200*time.Millisecond, 200*time.Millisecond
	g := startGateway(t, env, cfg)
	ctx := ringertest.Ctx(t)
	alice := env.Login("alice", "phone")
	for _, device := range []string{"old", "iphone"} {
		if _, err := env.NewClient("bob", device).RegisterPush(ctx, protocol.PlatformAPNs, "t-"+device, "", 0); err != nil {
			t.Fatal(err)
		}
	}
	li := alice.CreateLocalInvitation("bob")
	li.Timeouts = &protocol.Timeouts{OfflineMs: 1000}
	if err := li.Send(ctx); err != nil {
		t.Fatal(err)
	}
	alice.Rec.Wait(t, "Failure "+li.ID) // PEER_OFFLINE after 1 s: nobody woke
	for ep.next(t).d.Kind != protocol.PushStop {
	}
	deadline := time.UnixMilli(li.Invitation().CreatedAt + 1000)
	ep.mu.Lock()
	defer ep.mu.Unlock()
	old, iphone := 0, 0
	for _, a := range ep.attempts {
		if a.d.Kind != protocol.PushRing {
			continue
		}
		if a.at.After(deadline.Add(50 * time.Millisecond)) {
			t.Errorf("a ring delivered %s after its deadline", a.at.Sub(deadline))
		}
		if a.d.Device.Device == "old" {
			old++
		} else {
			iphone++
		}
	}
	if old != 1 || iphone < 2 {
		t.Fatalf("ring attempts: %d to the rejected token (want 1), %d to the failing endpoint (want several)", old, iphone)
	}
	if n := testutil.ToFloat64(g.requests.WithLabelValues("RING", "expired")); n != 1 {
		t.Fatalf("expired ring requests: %g", n)
	}
}

// testutilCount is the deliveries counter of platform and result.
func testutilCount(g *gateway, platform, result string) float64 {
	return testutil.ToFloat64(g.deliveries.WithLabelValues(platform, result))
}
