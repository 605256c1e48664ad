package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v4"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sideshow/apns2/token"

	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
)

// apnsCall is one request the fake APNs received.
type apnsCall struct {
	at            time.Time
	token, bearer string
	header        http.Header
	payload       struct{ Ringer protocol.PushDelivery }
}

// fakeAPNs is a real HTTP/2 TLS server speaking APNs' provider API as Apple
// documents it (POST /3/device/<token>, apns-* headers, a JWT bearer, a
// JSON body; 200 with apns-id, or a status with {"reason": …}). answer
// decides each response from the call and how many came before for that
// device token.
type fakeAPNs struct {
	*httptest.Server
	t      *testing.T
	key    *ecdsa.PrivateKey
	answer func(c apnsCall, n int) (int, string)
	mu     sync.Mutex
	calls  []apnsCall
	got    chan apnsCall
}

func newFakeAPNs(t *testing.T, answer func(c apnsCall, n int) (int, string)) *fakeAPNs {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAPNs{t: t, key: key, answer: answer, got: make(chan apnsCall, 100)}
	f.Server = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.EnableHTTP2 = true
	f.StartTLS()
	t.Cleanup(f.Close)
	return f
}

func (f *fakeAPNs) serve(w http.ResponseWriter, r *http.Request) {
	dev, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	bearer, _ := strings.CutPrefix(r.Header.Get("authorization"), "bearer ")
	c := apnsCall{at: time.Now(), token: dev, bearer: bearer, header: r.Header.Clone()}
	body, _ := io.ReadAll(r.Body)
	switch {
	case r.ProtoMajor != 2 || r.Method != http.MethodPost || !ok:
		f.t.Errorf("APNs request %s %s over HTTP/%d", r.Method, r.URL.Path, r.ProtoMajor)
	case json.Unmarshal(body, &c.payload) != nil:
		f.t.Errorf("APNs body %q", body)
	}
	// The provider token: an ES256 JWT of the team, signed by the key.
	tok, err := jwt.Parse(bearer, func(tk *jwt.Token) (any, error) {
		if tk.Header["kid"] != "KEY123" {
			return nil, fmt.Errorf("kid %v", tk.Header["kid"])
		}
		return &f.key.PublicKey, nil
	}, jwt.WithValidMethods([]string{"ES256"}))
	if err != nil || tok.Claims.(jwt.MapClaims)["iss"] != "TEAM456" {
		f.t.Errorf("provider token %q: %v", bearer, err)
	}
	f.mu.Lock()
	n := 0
	for _, o := range f.calls {
		if o.token == dev {
			n++
		}
	}
	f.calls = append(f.calls, c)
	f.mu.Unlock()
	status, reason := f.answer(c, n)
	w.Header().Set("apns-id", fmt.Sprintf("id-%d", n))
	w.WriteHeader(status)
	if status != http.StatusOK {
		_ = json.NewEncoder(w).Encode(map[string]string{"reason": reason})
	}
	f.got <- c
}

func (f *fakeAPNs) next(t *testing.T) apnsCall { t.Helper(); return receive(t, f.got, "APNs request") }

// startAPNsGateway runs a gateway whose apns devices go to f (with
// testConfig, changed by tune if given).
func startAPNsGateway(t *testing.T, env *ringertest.Env, f *fakeAPNs, tune ...func(*config)) *gateway {
	t.Helper()
	cfg := testConfig("")
	cfg.endpoints = nil
	for _, fn := range tune {
		fn(&cfg)
	}
	g := startGatewayWith(t, env, cfg, func(g *gateway) {
		g.apns = newAPNsWithKey(apnsConfig{host: f.URL}, &token.Token{AuthKey: f.key, KeyID: "KEY123", TeamID: "TEAM456"})
		g.apns.client.HTTPClient = f.Client() // trusts the test server's certificate, speaks HTTP/2
	})
	return g
}

func TestAPNsVoIPPushes(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	f := newFakeAPNs(t, func(apnsCall, int) (int, string) { return http.StatusOK, "" })
	startAPNsGateway(t, env, f)
	ctx := ringertest.Ctx(t)
	alice := env.Login("alice", "phone")
	bob := env.NewClient("bob", "iphone")
	if _, err := bob.RegisterPush(ctx, protocol.PlatformAPNs, "a1b2c3", "com.example.app", 0); err != nil {
		t.Fatal(err)
	}
	li := alice.Invite(t, "bob")
	ring := f.next(t)
	h := ring.header
	if ring.token != "a1b2c3" || h.Get("apns-push-type") != "voip" || h.Get("apns-topic") != "com.example.app.voip" ||
		h.Get("apns-priority") != "10" || h.Get("apns-collapse-id") != li.ID ||
		h.Get("apns-expiration") != strconv.FormatInt(li.Invitation().Deadline/1000, 10) {
		t.Fatalf("RING push: token %q, headers %v", ring.token, h)
	}
	if p := ring.payload.Ringer; p.Kind != protocol.PushRing || p.Invitation.ID != li.ID || p.Invitation.Caller != "alice" {
		t.Fatalf("RING payload: %+v", p)
	}
	if err := bob.Login(ctx); err != nil {
		t.Fatal(err)
	}
	bob.Rec.WaitRemote(t, li.ID)
	if err := bob.Accept(ctx, li.ID, ""); err != nil {
		t.Fatal(err)
	}
	stop := f.next(t)
	if stop.payload.Ringer.Kind != protocol.PushStop || stop.header.Get("apns-expiration") != "" {
		t.Fatalf("STOP push: %+v, headers %v", stop.payload.Ringer, stop.header)
	}
}

func TestAPNsRenewsItsProviderTokenAndBacksOff(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	// The first push finds the JWT expired, the second is throttled, the
	// third goes through.
	f := newFakeAPNs(t, func(_ apnsCall, n int) (int, string) {
		switch n {
		case 0:
			return http.StatusForbidden, "ExpiredProviderToken"
		case 1:
			return http.StatusTooManyRequests, "TooManyRequests"
		}
		return http.StatusOK, ""
	})
	g := startAPNsGateway(t, env, f)
	ctx := ringertest.Ctx(t)
	if _, err := env.NewClient("bob", "iphone").RegisterPush(ctx, protocol.PlatformAPNs, "a1b2c3", "com.example.app", 0); err != nil {
		t.Fatal(err)
	}
	env.Login("alice", "phone").Invite(t, "bob")
	a, b, c := f.next(t), f.next(t), f.next(t)
	if a.bearer == b.bearer {
		t.Fatal("the provider token was not renewed after ExpiredProviderToken")
	}
	if b.bearer != c.bearer {
		t.Fatal("the provider token changed without cause")
	}
	natstest.Eventually(t, ringertest.Wait, func() error {
		if n := testutilCount(g, "apns", "retry"); n != 2 {
			return fmt.Errorf("%g retries", n)
		}
		return nil
	})
}

func TestAPNsDeadTokenUnregistersTheDevice(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	f := newFakeAPNs(t, func(c apnsCall, _ int) (int, string) {
		if c.token == "dead" {
			return http.StatusGone, "Unregistered"
		}
		return http.StatusOK, ""
	})
	g := startAPNsGateway(t, env, f)
	ctx := ringertest.Ctx(t)
	for device, tok := range map[string]string{"old-iphone": "dead", "iphone": "alive"} {
		if _, err := env.NewClient("bob", device).RegisterPush(ctx, protocol.PlatformAPNs, tok, "com.example.app", 0); err != nil {
			t.Fatal(err)
		}
	}
	env.Login("alice", "phone").Invite(t, "bob")
	f.next(t)
	f.next(t)
	st := env.Brokers[0].Store()
	natstest.Eventually(t, ringertest.Wait, func() error {
		pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		targets, err := st.PushTargets(pctx, "bob")
		if err != nil {
			return err
		}
		if len(targets) != 1 || targets[0].Device != "iphone" {
			return fmt.Errorf("bob's push targets: %+v", targets)
		}
		return nil
	})
	// A device that registered a new token since is left alone.
	if _, err := env.NewClient("bob", "old-iphone").RegisterPush(ctx, protocol.PlatformAPNs, "fresh", "com.example.app", 0); err != nil {
		t.Fatal(err)
	}
	if err := g.unregister(ctx, "bob", protocol.PushTarget{Device: "old-iphone", Token: "dead"}); err != nil {
		t.Fatal(err)
	}
	if targets, err := st.PushTargets(ctx, "bob"); err != nil || len(targets) != 2 {
		t.Fatalf("a re-registered device was unregistered for its old token: %+v, %v", targets, err)
	}
}

// APNs failing (500) until the invitation is over: retried with the
// backoff, never pushed after its deadline, counted as expired.
func TestAPNsStopsRetryingARingPastItsDeadline(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	f := newFakeAPNs(t, func(c apnsCall, _ int) (int, string) {
		if c.payload.Ringer.Kind == protocol.PushStop {
			return http.StatusOK, ""
		}
		return http.StatusInternalServerError, "InternalServerError"
	})
	g := startAPNsGateway(t, env, f, func(c *config) {
		c.maxDeliver, c.backoff, c.maxBackoff = 1000, 200*time.Millisecond, 200*time.Millisecond
	})
	ctx := ringertest.Ctx(t)
	if _, err := env.NewClient("bob", "iphone").RegisterPush(ctx, protocol.PlatformAPNs, "a1b2c3", "com.example.app", 0); err != nil {
		t.Fatal(err)
	}
	alice := env.Login("alice", "phone")
	li := alice.CreateLocalInvitation("bob")
	li.Timeouts = &protocol.Timeouts{OfflineMs: 1000}
	if err := li.Send(ctx); err != nil {
		t.Fatal(err)
	}
	alice.Rec.Wait(t, "Failure "+li.ID)
	var rings []apnsCall
	for {
		c := f.next(t)
		if c.payload.Ringer.Kind == protocol.PushStop {
			break
		}
		rings = append(rings, c)
	}
	deadline := time.UnixMilli(li.Invitation().CreatedAt + 1000)
	if len(rings) < 2 {
		t.Fatalf("%d ring attempts before the deadline, want retries", len(rings))
	}
	for _, c := range rings {
		if c.at.After(deadline.Add(50 * time.Millisecond)) {
			t.Errorf("a ring pushed %s after its deadline", c.at.Sub(deadline))
		}
	}
	natstest.Eventually(t, ringertest.Wait, func() error {
		if n := testutil.ToFloat64(g.requests.WithLabelValues("RING", "expired")); n != 1 {
			return fmt.Errorf("expired rings: %g", n)
		}
		return nil
	})
}
