package auth_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/ringer-dev/ringer/auth"
)

// wait bounds everything a test waits for.
const wait = 10 * time.Second

// serverConf is the secure layout of docs/security.md: brokers in BROKER
// (JetStream), end users in USERS (only through the auth callout), the
// callout service in AUTH.
const serverConf = `
listen: "127.0.0.1:-1"
server_name: ringer-auth-test
jetstream { store_dir: %q }
system_account: SYS
accounts {
  SYS { users: [ { user: admin, password: admin } ] }
  AUTH { users: [ { user: auth, password: auth } ] }
  BROKER {
    jetstream: enabled
    users: [ { user: broker, password: broker } ]
    exports: [
      { service: "ringer.v1.cmd.*.*" }
      { stream: "ringer.v1.user.>" }
    ]
  }
  USERS {
    imports: [
      { service: { account: BROKER, subject: "ringer.v1.cmd.*.*" }, share: true }
      { stream: { account: BROKER, subject: "ringer.v1.user.>" } }
    ]
  }
}
authorization {
  timeout: 2s
  auth_callout {
    issuer: %s
    account: AUTH
    auth_users: [ auth ]
    # Only connections that match no configured user (and any user of USERS)
    # are delegated; broker and admin authenticate as configured.
    allowed_accounts: [ USERS ]
    %s
  }
}
`

// env is a real nats-server with auth callout and a running Responder.
type env struct {
	t      *testing.T
	srv    *server.Server
	url    string
	secret []byte
	resp   *auth.Responder
}

type envOpts struct {
	xkey bool
}

func startEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	issuer, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	issuerPub, _ := issuer.PublicKey()
	var xkp nkeys.KeyPair
	xkeyLine := ""
	if o.xkey {
		if xkp, err = nkeys.CreateCurveKeys(); err != nil {
			t.Fatal(err)
		}
		xpub, _ := xkp.PublicKey()
		xkeyLine = "xkey: " + xpub
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "server.conf")
	body := fmt.Sprintf(serverConf, filepath.Join(dir, "js"), issuerPub, xkeyLine)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		srv.ConfigureLogger()
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(wait) {
		t.Fatal("nats-server not ready")
	}
	e := &env{t: t, srv: srv, url: srv.ClientURL(), secret: []byte("test-secret-0123456789-abcdefghijklmnop")}

	log := zerolog.Nop()
	if testing.Verbose() {
		log = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel)
	}
	e.resp, err = auth.NewResponder(auth.ResponderConfig{
		Secret: e.secret, Issuer: issuer, Account: "USERS", XKey: xkp, Logger: &log,
	})
	if err != nil {
		t.Fatal(err)
	}
	authNC := e.connect(nats.UserInfo("auth", "auth"), nats.Name("auth callout"))
	if err := e.resp.Start(authNC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.resp.Stop() })
	return e
}

// connect opens a connection closed at cleanup, or fails the test.
func (e *env) connect(opts ...nats.Option) *nats.Conn {
	e.t.Helper()
	nc, err := nats.Connect(e.url, opts...)
	if err != nil {
		e.t.Fatalf("connect: %v", err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

// token mints a token for user with the environment's secret.
func (e *env) token(user string) string {
	e.t.Helper()
	tok, err := auth.Mint(e.secret, user, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// user is an authenticated end-user connection whose asynchronous errors
// (permission violations) are collected.
type user struct {
	*nats.Conn
	errs *errLog
}

// login connects user with a token, the way a Ringer app does.
func (e *env) login(name string, extra ...nats.Option) *user {
	e.t.Helper()
	el := newErrLog()
	opts := append([]nats.Option{
		nats.Token(e.token(name)), nats.CustomInboxPrefix("_INBOX_" + name), nats.Name(name + "-phone"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { el.add(err) }),
	}, extra...)
	return &user{Conn: e.connect(opts...), errs: el}
}

// errLog records asynchronous errors so a test can wait for one.
type errLog struct {
	mu     sync.Mutex
	errs   []error
	notify chan struct{}
}

func newErrLog() *errLog { return &errLog{notify: make(chan struct{})} }

func (l *errLog) add(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err)
	close(l.notify)
	l.notify = make(chan struct{})
	l.mu.Unlock()
}

// waitFor blocks until an error containing substr was recorded.
func (l *errLog) waitFor(t *testing.T, substr string) error {
	t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		for _, err := range l.errs {
			if strings.Contains(err.Error(), substr) {
				l.mu.Unlock()
				return err
			}
		}
		ch, got := l.notify, append([]error(nil), l.errs...)
		l.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("no async error containing %q within %s; got %v", substr, wait, got)
		}
	}
}

// violation waits for the permissions violation for op ("Publish" or
// "Subscription") on subject.
func (l *errLog) violation(t *testing.T, op, subject string) {
	t.Helper()
	err := l.waitFor(t, fmt.Sprintf("Permissions Violation for %s to %q", op, subject))
	if !errors.Is(err, nats.ErrPermissionViolation) {
		t.Fatalf("%v is not nats.ErrPermissionViolation", err)
	}
}

// spy subscribes to every command in BROKER and records what reached it, with
// the server-stamped Nats-Request-Info. With serve, it stands in for the
// broker and answers "ok <RequestUser>".
type spy struct {
	mu     sync.Mutex
	got    []*nats.Msg
	notify chan struct{}
}

func (e *env) startSpy(serve bool) *spy {
	e.t.Helper()
	s := &spy{notify: make(chan struct{})}
	nc := e.connect(nats.UserInfo("broker", "broker"), nats.Name("spy broker"))
	_, err := nc.Subscribe("ringer.v1.cmd.*.*", func(m *nats.Msg) {
		s.mu.Lock()
		s.got = append(s.got, m)
		close(s.notify)
		s.notify = make(chan struct{})
		s.mu.Unlock()
		who, _ := auth.RequestUser(m.Header)
		if serve && m.Reply != "" {
			_ = m.Respond([]byte("ok " + who))
		}
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		e.t.Fatal(err)
	}
	return s
}

// waitSubject blocks until a message on subject arrived and returns it.
func (s *spy) waitSubject(t *testing.T, subject string) *nats.Msg {
	t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		for _, m := range s.got {
			if m.Subject == subject {
				s.mu.Unlock()
				return m
			}
		}
		ch := s.notify
		s.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("broker never received %s; got %v", subject, s.subjects())
		}
	}
}

func (s *spy) subjects() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, m := range s.got {
		out = append(out, m.Subject)
	}
	return out
}
