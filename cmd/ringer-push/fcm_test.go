package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v4"

	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
)

// fcmCall is one messages:send the fake FCM received.
type fcmCall struct {
	at      time.Time
	bearer  string
	message fcmMessage
	ringer  protocol.PushDelivery
}

// fakeFCM is a real HTTP server speaking FCM HTTP v1 as Google documents it:
// the OAuth 2 token endpoint of a service account (a JWT-bearer grant,
// checked with the account's public key) and
// POST /v1/projects/<project>/messages:send with a bearer token; errors as
// {"error": {code, status, details: [{errorCode}]}}.
type fakeFCM struct {
	*httptest.Server
	t      *testing.T
	key    *rsa.PrivateKey
	answer func(c fcmCall, n int) (status int, errorCode string, retryAfter string)
	mu     sync.Mutex
	calls  []fcmCall
	tokens int
	got    chan fcmCall
}

func newFakeFCM(t *testing.T, answer func(c fcmCall, n int) (int, string, string)) *fakeFCM {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeFCM{t: t, key: key, answer: answer, got: make(chan fcmCall, 100)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", f.token)
	mux.HandleFunc("POST /v1/projects/ringer-test/messages:send", f.send)
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

// credentials is the service account's JSON key, pointing at f.
func (f *fakeFCM) credentials() []byte {
	der, _ := x509.MarshalPKCS8PrivateKey(f.key)
	b, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "ringer-test", "private_key_id": "k1",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": "ringer-push@ringer-test.iam.gserviceaccount.com", "client_id": "1",
		"token_uri": f.URL + "/token",
	})
	return b
}

func (f *fakeFCM) token(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	tok, err := jwt.Parse(r.PostForm.Get("assertion"), func(*jwt.Token) (any, error) { return &f.key.PublicKey, nil },
		jwt.WithValidMethods([]string{"RS256"}))
	if err != nil || r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" ||
		tok.Claims.(jwt.MapClaims)["scope"] != fcmScope {
		f.t.Errorf("token request %v: %v", r.PostForm, err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.tokens++
	n := f.tokens
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("access-%d", n), "token_type": "Bearer", "expires_in": 3600})
}

func (f *fakeFCM) send(w http.ResponseWriter, r *http.Request) {
	c := fcmCall{at: time.Now(), bearer: strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")}
	if err := json.NewDecoder(r.Body).Decode(&c.message); err != nil {
		f.t.Errorf("messages:send body: %v", err)
	}
	if err := json.Unmarshal([]byte(c.message.Message.Data["ringer"]), &c.ringer); err != nil {
		f.t.Errorf("data.ringer: %v", err)
	}
	f.mu.Lock()
	n := 0
	for _, o := range f.calls {
		if o.message.Message.Token == c.message.Message.Token {
			n++
		}
	}
	f.calls = append(f.calls, c)
	f.mu.Unlock()
	status, code, after := f.answer(c, n)
	if after != "" {
		w.Header().Set("Retry-After", after)
	}
	w.WriteHeader(status)
	if status != http.StatusOK {
		_, _ = fmt.Fprintf(w, `{"error":{"code":%d,"status":"X","message":"m","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":%q}]}}`, status, code)
	} else {
		_, _ = fmt.Fprint(w, `{"name":"projects/ringer-test/messages/1"}`)
	}
	f.got <- c
}

func (f *fakeFCM) next(t *testing.T) fcmCall { t.Helper(); return receive(t, f.got, "FCM message") }

func startFCMGateway(t *testing.T, env *ringertest.Env, f *fakeFCM) *gateway {
	t.Helper()
	cfg := testConfig("")
	cfg.endpoints = nil
	return startGatewayWith(t, env, cfg, func(g *gateway) {
		var err error
		if g.fcm, err = newFCM(context.Background(), f.credentials(), f.URL, f.Client()); err != nil {
			t.Fatal(err)
		}
	})
}

func TestFCMDataMessages(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	f := newFakeFCM(t, func(fcmCall, int) (int, string, string) { return http.StatusOK, "", "" })
	startFCMGateway(t, env, f)
	ctx := ringertest.Ctx(t)
	alice := env.Login("alice", "phone")
	bob := env.NewClient("bob", "pixel")
	if _, err := bob.RegisterPush(ctx, protocol.PlatformFCM, "fcm-token-1", "com.example.app", 0); err != nil {
		t.Fatal(err)
	}
	li := alice.Invite(t, "bob")
	ring := f.next(t)
	m := ring.message.Message
	if ring.bearer != "access-1" || m.Token != "fcm-token-1" || m.Android.Priority != "high" || m.Android.CollapseKey != li.ID ||
		m.Android.TTL == "0s" || !strings.HasSuffix(m.Android.TTL, "s") || ring.ringer.Kind != protocol.PushRing || ring.ringer.Invitation.ID != li.ID {
		t.Fatalf("RING message: bearer %q, %+v, ringer %+v", ring.bearer, m, ring.ringer)
	}
	if err := li.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	stop := f.next(t)
	if stop.ringer.Kind != protocol.PushStop || stop.message.Message.Android.TTL != "0s" || stop.bearer != "access-1" {
		t.Fatalf("STOP message: bearer %q, %+v", stop.bearer, stop.message.Message)
	}
}

func TestFCMRetriesHonouringRetryAfterAndUnregistersDeadTokens(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	f := newFakeFCM(t, func(c fcmCall, n int) (int, string, string) {
		switch {
		case c.message.Message.Token == "dead":
			return http.StatusNotFound, "UNREGISTERED", ""
		case c.ringer.Kind == protocol.PushRing && n == 0:
			return http.StatusTooManyRequests, "QUOTA_EXCEEDED", "1"
		case c.ringer.Kind == protocol.PushRing && n == 1:
			return http.StatusServiceUnavailable, "UNAVAILABLE", ""
		}
		return http.StatusOK, "", ""
	})
	g := startFCMGateway(t, env, f)
	ctx := ringertest.Ctx(t)
	for device, tok := range map[string]string{"old": "dead", "pixel": "live"} {
		if _, err := env.NewClient("bob", device).RegisterPush(ctx, protocol.PlatformFCM, tok, "", 0); err != nil {
			t.Fatal(err)
		}
	}
	li := env.Login("alice", "phone").CreateLocalInvitation("bob")
	li.Timeouts = &protocol.Timeouts{OfflineMs: 20000}
	if err := li.Send(ctx); err != nil {
		t.Fatal(err)
	}
	var live []fcmCall
	for len(live) < 3 {
		if c := f.next(t); c.message.Message.Token == "live" {
			live = append(live, c)
		}
	}
	if gap := live[1].at.Sub(live[0].at); gap < time.Second {
		t.Fatalf("retried %s after a 429 with Retry-After: 1", gap)
	}
	natstest.Eventually(t, ringertest.Wait, func() error {
		pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		targets, err := env.Brokers[0].Store().PushTargets(pctx, "bob")
		if err != nil || len(targets) != 1 || targets[0].Device != "pixel" {
			return fmt.Errorf("bob's push targets after UNREGISTERED: %+v, %v", targets, err)
		}
		return nil
	})
	if n := testutilCount(g, "fcm", "gone"); n != 1 {
		t.Fatalf("gone deliveries: %g", n)
	}
}
