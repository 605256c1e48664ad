package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/ringer-dev/ringer/auth"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const testSecret = "brokerd-test-secret-0123456789-abcdefghij"

func TestAuthFlagsValidation(t *testing.T) {
	issuer, _ := nkeys.CreateAccount()
	seed, _ := issuer.Seed()
	user, _ := nkeys.CreateUser()
	userSeed, _ := user.Seed()
	secretFile := writeFile(t, "secret", testSecret+"\n")
	seedFile := writeFile(t, "issuer.nk", string(seed)+"\n")
	full := []string{"--nats", "nats://127.0.0.1:1", "--auth-callout", "--auth-secret-file", secretFile, "--auth-issuer-seed-file", seedFile, "--auth-nats", "nats://auth:x@127.0.0.1:1"}
	if o, err := parseFlags(full); err != nil || o.auth.resp == nil || o.auth.account != "USERS" {
		t.Fatalf("valid flags: %v", err)
	}
	if o, err := parseFlags([]string{"--nats", "nats://127.0.0.1:1"}); err != nil || o.auth.enabled {
		t.Fatalf("auth off by default: %v", err)
	}
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"embedded":       {full[2:], "needs --nats"},
		"no secret":      {without(full, "--auth-secret-file"), "needs --auth-secret-file"},
		"no issuer":      {without(full, "--auth-issuer-seed-file"), "needs --auth-issuer-seed-file"},
		"no auth nats":   {without(full, "--auth-nats"), "needs --auth-nats"},
		"weak secret":    {with(full, "--auth-secret-file", writeFile(t, "weak", "short")), "secret too short"},
		"user seed":      {with(full, "--auth-issuer-seed-file", writeFile(t, "user.nk", string(userSeed))), "not an account key"},
		"not a seed":     {with(full, "--auth-issuer-seed-file", writeFile(t, "junk.nk", "hello")), "not an nkey seed"},
		"missing file":   {with(full, "--auth-secret-file", "/nonexistent/secret"), "no such file"},
		"issuer as xkey": {append(full, "--auth-xkey-seed-file", seedFile), "xkey"},
	} {
		_, err := parseFlags(c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

// without drops flag and its value; with replaces its value.
func without(args []string, flagName string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == flagName {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

func with(args []string, flagName, value string) []string {
	return append(without(args, flagName), flagName, value)
}

// brokerd's flags drive a responder that a real nats-server accepts.
func TestAuthCalloutFromFlags(t *testing.T) {
	issuer, _ := nkeys.CreateAccount()
	issuerPub, _ := issuer.PublicKey()
	seed, _ := issuer.Seed()
	xkey, _ := nkeys.CreateCurveKeys()
	xpub, _ := xkey.PublicKey()
	xseed, _ := xkey.Seed()
	conf := writeFile(t, "server.conf", fmt.Sprintf(`
listen: "127.0.0.1:-1"
accounts {
  AUTH { users: [ { user: auth, password: auth } ] }
  BROKER { users: [ { user: broker, password: broker } ], exports: [ { service: "ringer.v1.cmd.*.*" } ] }
  USERS { imports: [ { service: { account: BROKER, subject: "ringer.v1.cmd.*.*" }, share: true } ] }
}
authorization { auth_callout { issuer: %s, account: AUTH, auth_users: [ auth, broker ], xkey: %s } }
`, issuerPub, xpub))
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	url := srv.ClientURL()

	secretFile := writeFile(t, "secret", testSecret)
	o, err := parseFlags([]string{"--nats", strings.Replace(url, "nats://", "nats://broker:broker@", 1),
		"--auth-callout", "--auth-secret-file", secretFile,
		"--auth-issuer-seed-file", writeFile(t, "issuer.nk", string(seed)),
		"--auth-xkey-seed-file", writeFile(t, "xkey.nk", string(xseed)),
		"--auth-nats", strings.Replace(url, "nats://", "nats://auth:auth@", 1)})
	if err != nil {
		t.Fatal(err)
	}
	stop, err := startAuth(&o.auth, "test", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	broker, err := nats.Connect(o.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	if _, err := broker.Subscribe("ringer.v1.cmd.*.*", func(m *nats.Msg) {
		who, _ := auth.RequestUser(m.Header)
		_ = m.Respond([]byte(who))
	}); err != nil {
		t.Fatal(err)
	}
	if err := broker.Flush(); err != nil {
		t.Fatal(err)
	}

	tok, err := auth.Mint([]byte(testSecret), "alice", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, nats.Token(tok), nats.CustomInboxPrefix("_INBOX_alice"))
	if err != nil {
		t.Fatalf("alice with a valid token: %v", err)
	}
	defer nc.Close()
	rep, err := nc.Request("ringer.v1.cmd.alice.login", nil, 10*time.Second)
	if err != nil || string(rep.Data) != "alice" {
		t.Fatalf("alice's request: %v", err)
	}
	if _, err := nats.Connect(url, nats.Token(tok[:len(tok)-1])); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("tampered token: %v", err)
	}
	if st := o.auth.resp.Stats(); st.Authorized != 1 || st.Refused != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// Like every brokerd flag, the --auth-* flags can come from RINGER_<FLAG>
// (which keeps the callout user's password out of the process list).
func TestAuthFlagsFromEnv(t *testing.T) {
	issuer, _ := nkeys.CreateAccount()
	seed, _ := issuer.Seed()
	t.Setenv("RINGER_AUTH_CALLOUT", "true")
	t.Setenv("RINGER_AUTH_SECRET_FILE", writeFile(t, "secret", testSecret))
	t.Setenv("RINGER_AUTH_ISSUER_SEED_FILE", writeFile(t, "issuer.nk", string(seed)))
	t.Setenv("RINGER_AUTH_NATS", "nats://auth:pw@127.0.0.1:1")
	t.Setenv("RINGER_AUTH_ACCOUNT", "CUSTOMERS")
	o, err := parseFlags([]string{"--nats", "nats://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if !o.auth.enabled || o.auth.resp == nil || o.auth.account != "CUSTOMERS" || o.auth.natsURL != "nats://auth:pw@127.0.0.1:1" {
		t.Fatalf("auth options from env: %+v", o.auth)
	}
}
