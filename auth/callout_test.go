package auth_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/auth"
)

// A valid token logs alice in (as the CONNECT token or as a password); her
// request crosses the service import to BROKER, which sees her identity in
// Nats-Request-Info, and she receives what BROKER publishes on her events.
func TestCalloutAliceRequestReplyAndEvents(t *testing.T) {
	e := startEnv(t, envOpts{})
	sp := e.startSpy(true)
	alice := e.login("alice")

	events := make(chan *nats.Msg, 1)
	if _, err := alice.ChanSubscribe("ringer.v1.user.alice.>", events); err != nil {
		t.Fatal(err)
	}
	if err := alice.Flush(); err != nil {
		t.Fatal(err)
	}

	rep, err := alice.Request("ringer.v1.cmd.alice.login", []byte("hi"), wait)
	if err != nil {
		t.Fatalf("alice login request: %v", err)
	}
	if string(rep.Data) != "ok alice" {
		t.Fatalf("reply %q, want %q (broker did not see alice in Nats-Request-Info)", rep.Data, "ok alice")
	}
	m := sp.waitSubject(t, "ringer.v1.cmd.alice.login")
	info, ok := auth.ParseRequestInfo(m.Header)
	if !ok || info.Account != "USERS" || info.User != "alice" || info.Name != "alice-phone" {
		t.Fatalf("Nats-Request-Info %q parsed as %+v, %v", m.Header.Get(auth.RequestInfoHeader), info, ok)
	}
	t.Logf("captured %s: %s", auth.RequestInfoHeader, m.Header.Get(auth.RequestInfoHeader))

	brokerNC := e.connect(nats.UserInfo("broker", "broker"))
	if err := brokerNC.Publish("ringer.v1.user.alice.events", []byte("invited")); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-events:
		if ev.Subject != "ringer.v1.user.alice.events" || string(ev.Data) != "invited" {
			t.Fatalf("event %s %q", ev.Subject, ev.Data)
		}
	case <-time.After(wait):
		t.Fatal("alice did not receive the event published in BROKER")
	}

	// The token as a password, with any user name.
	nc := e.connect(nats.UserInfo("whoever", e.token("alice")), nats.CustomInboxPrefix("_INBOX_alice"))
	rep, err = nc.Request("ringer.v1.cmd.alice.sync", nil, wait)
	if err != nil || string(rep.Data) != "ok alice" {
		t.Fatalf("token as password: %v %q", err, rep.Data)
	}
	if st := e.resp.Stats(); st.Authorized != 2 || st.Refused != 0 || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// Mallory has a valid token for mallory and nothing else: she cannot read
// bob's events or anyone's replies, and nothing she publishes as someone else
// reaches the broker.
func TestCalloutMalloryCannotActAsOthers(t *testing.T) {
	e := startEnv(t, envOpts{})
	sp := e.startSpy(true)
	mallory := e.login("mallory")

	for _, subj := range []string{"ringer.v1.user.bob.>", "ringer.v1.user.bob.events", "_INBOX.>", "_INBOX_bob.>", ">", "ringer.v1.cmd.*.*"} {
		if _, err := mallory.SubscribeSync(subj); err != nil {
			t.Fatal(err) // violations are asynchronous; Subscribe itself succeeds
		}
		mallory.errs.violation(t, "Subscription", subj)
	}
	for _, subj := range []string{"ringer.v1.cmd.alice.send", "ringer.v1.cmd.bob.accept", "ringer.v1.user.bob.events", "$SYS.REQ.USER.AUTH"} {
		if err := mallory.Publish(subj, []byte("x")); err != nil {
			t.Fatal(err)
		}
		mallory.errs.violation(t, "Publish", subj)
	}

	// Marker: her own command, sent after the denied ones on the same
	// connection. Messages from one connection are delivered in order, so
	// once the marker has reached the broker, anything sent before it would
	// have too.
	rep, err := mallory.Request("ringer.v1.cmd.mallory.login", nil, wait)
	if err != nil || string(rep.Data) != "ok mallory" {
		t.Fatalf("mallory's own command: %v", err)
	}
	sp.waitSubject(t, "ringer.v1.cmd.mallory.login")
	if got := sp.subjects(); !slices.Equal(got, []string{"ringer.v1.cmd.mallory.login"}) {
		t.Fatalf("the broker received %v; only mallory's own command may reach it", got)
	}

	// Without her own inbox prefix a request cannot even get its reply.
	plain := e.connect(nats.Token(e.token("mallory")), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if _, err := plain.Request("ringer.v1.cmd.mallory.login", nil, 500*time.Millisecond); err == nil {
		t.Fatal("a request with the default _INBOX prefix got a reply")
	}
}

// The server stamps Nats-Request-Info itself: a header mallory writes is
// replaced, so the broker still sees mallory.
func TestCalloutRequestInfoCannotBeSpoofed(t *testing.T) {
	e := startEnv(t, envOpts{})
	sp := e.startSpy(true)
	mallory := e.login("mallory")
	for _, key := range []string{auth.RequestInfoHeader, "nats-request-info"} {
		m := nats.NewMsg("ringer.v1.cmd.mallory.get")
		m.Header.Set(key, `{"acc":"USERS","user":"bob","name":"bob"}`)
		m.Header.Add(auth.RequestInfoHeader, `{"acc":"USERS","user":"bob"}`)
		rep, err := mallory.RequestMsg(m, wait)
		if err != nil {
			t.Fatal(err)
		}
		if string(rep.Data) != "ok mallory" {
			t.Fatalf("%s spoofed: broker saw %q", key, rep.Data)
		}
	}
	got := sp.waitSubject(t, "ringer.v1.cmd.mallory.get")
	if user, ok := auth.RequestUser(got.Header); !ok || user != "mallory" {
		t.Fatalf("RequestUser = %q, %v", user, ok)
	}
}

// Expired, forged, malformed and missing tokens are refused at connect.
func TestCalloutRefusesBadTokens(t *testing.T) {
	e := startEnv(t, envOpts{})
	now := time.Now().Unix()
	expired, err := auth.Sign(e.secret, auth.Claims{Subject: "alice", IssuedAt: now - 7200, Expires: now - 3600})
	if err != nil {
		t.Fatal(err)
	}
	forged, err := auth.Mint([]byte("not-the-secret-not-the-secret-not-the-secret"), "alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	valid := e.token("alice")
	// One signature character changed for another. Overwriting the last
	// two with "AA" left the token valid whenever it already ended so
	// (about once in 1 024 runs: the last character of a strict raw
	// base64 signature is one of 16), and the test then failed on a
	// token that was never tampered with.
	i := len(valid) - 3
	swap := byte('A')
	if valid[i] == swap {
		swap = 'B'
	}
	tampered := valid[:i] + string(swap) + valid[i+1:]
	cases := map[string][]nats.Option{
		"expired":          {nats.Token(expired)},
		"forged":           {nats.Token(forged)},
		"tampered":         {nats.Token(tampered)},
		"malformed":        {nats.Token("alice")},
		"expired password": {nats.UserInfo("alice", expired)},
		"no credentials":   nil,
		"user name only":   {nats.UserInfo("alice", "")},
	}
	for name, opts := range cases {
		nc, err := nats.Connect(e.url, opts...)
		if err == nil {
			nc.Close()
			t.Fatalf("%s: connected", name)
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("%s: %v, want nats.ErrAuthorization", name, err)
		}
	}
	if st := e.resp.Stats(); st.Refused != uint64(len(cases)) || st.Authorized != 0 {
		t.Fatalf("stats %+v, want %d refused", st, len(cases))
	}
}

// The connection ends when the token expires: the user JWT expires with it.
func TestCalloutConnectionExpiresWithToken(t *testing.T) {
	e := startEnv(t, envOpts{})
	tok, err := auth.Sign(e.secret, auth.Claims{Subject: "alice", Expires: time.Now().Unix() + 2})
	if err != nil {
		t.Fatal(err)
	}
	errs := newErrLog()
	closed := make(chan struct{})
	nc := e.connect(nats.Token(tok), nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs.add(err) }),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if !nc.IsConnected() {
		t.Fatal("not connected")
	}
	err = errs.waitFor(t, "expired")
	if !errors.Is(err, nats.ErrAuthExpired) {
		t.Fatalf("%v is not nats.ErrAuthExpired", err)
	}
	select {
	case <-closed:
	case <-time.After(wait):
		t.Fatal("connection not closed after its token expired")
	}
}

// With auth_callout.xkey the server encrypts its requests; the responder
// decrypts them and encrypts its answers.
func TestCalloutXKey(t *testing.T) {
	e := startEnv(t, envOpts{xkey: true})
	sp := e.startSpy(true)
	alice := e.login("alice")
	rep, err := alice.Request("ringer.v1.cmd.alice.login", nil, wait)
	if err != nil || string(rep.Data) != "ok alice" {
		t.Fatalf("alice over xkey: %v", err)
	}
	sp.waitSubject(t, "ringer.v1.cmd.alice.login")
	forged, _ := auth.Mint([]byte("not-the-secret-not-the-secret-not-the-secret"), "alice", time.Hour)
	if _, err := nats.Connect(e.url, nats.Token(forged)); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("forged token over xkey: %v", err)
	}
	if st := e.resp.Stats(); st.Authorized != 1 || st.Refused != 1 || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
}
