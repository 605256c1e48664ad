package auth_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/ringer-dev/ringer/auth"
)

// fakeServer signs authorization requests the way nats-server does
// (server/auth_callout.go), so a response can be checked field by field.
type fakeServer struct {
	t      *testing.T
	kp     nkeys.KeyPair
	id     string
	issuer string
}

func newFakeServer(t *testing.T, issuer string) *fakeServer {
	kp, err := nkeys.CreateServer()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := kp.PublicKey()
	return &fakeServer{t: t, kp: kp, id: id, issuer: issuer}
}

// request returns a signed request for a client presenting co, and the user
// nkey the server expects in the answer.
func (s *fakeServer) request(co jwt.ConnectOptions, kind, xkey string) (string, string) {
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	rc := jwt.NewAuthorizationRequestClaims(s.issuer)
	rc.Audience = "nats-authorization-request"
	rc.UserNkey = upub
	rc.Server = jwt.ServerID{Name: "n1", Host: "127.0.0.1", ID: s.id, Version: "2.15.2", XKey: xkey}
	rc.ClientInformation = jwt.ClientInformation{Host: "10.0.0.7", ID: 42, Kind: kind, Type: "nats"}
	rc.ConnectOptions = co
	rc.Expires = time.Now().Add(2 * time.Second).Unix()
	enc, err := rc.Encode(s.kp)
	if err != nil {
		s.t.Fatal(err)
	}
	return enc, upub
}

// decode checks the response envelope and returns it.
func (s *fakeServer) decode(resp []byte, upub string) *jwt.AuthorizationResponseClaims {
	s.t.Helper()
	cr, err := jwt.DecodeAuthorizationResponseClaims(string(resp))
	if err != nil {
		s.t.Fatal(err)
	}
	if cr.Subject != upub || cr.Audience != s.id || cr.Issuer != s.issuer || cr.IssuerAccount != "" {
		s.t.Fatalf("response sub %q aud %q iss %q issacc %q; want %q %q %q", cr.Subject, cr.Audience, cr.Issuer, cr.IssuerAccount, upub, s.id, s.issuer)
	}
	return cr
}

func newTestResponder(t *testing.T, mod func(*auth.ResponderConfig)) (*auth.Responder, string) {
	t.Helper()
	issuer, _ := nkeys.CreateAccount()
	pub, _ := issuer.PublicKey()
	cfg := auth.ResponderConfig{Secret: secret, Issuer: issuer, Account: "USERS"}
	if mod != nil {
		mod(&cfg)
	}
	r, err := auth.NewResponder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.IssuerPublicKey() != pub {
		t.Fatal("issuer public key")
	}
	return r, pub
}

// The user JWT carries exactly the documented grant.
func TestResponderGrantsExactlyOwnSubjects(t *testing.T) {
	r, issuer := newTestResponder(t, nil)
	s := newFakeServer(t, issuer)
	tok, _ := auth.Mint(secret, "alice", time.Hour)
	c, _ := auth.VerifyClaims(secret, tok, time.Now())
	for _, co := range []jwt.ConnectOptions{{Token: tok}, {Username: "anything", Password: tok}} {
		req, upub := s.request(co, "Client", "")
		resp, err := r.Respond([]byte(req), "")
		if err != nil {
			t.Fatal(err)
		}
		cr := s.decode(resp, upub)
		if cr.Error != "" {
			t.Fatalf("refused: %s", cr.Error)
		}
		uc, err := jwt.DecodeUserClaims(cr.Jwt)
		if err != nil {
			t.Fatal(err)
		}
		if uc.Subject != upub || uc.Issuer != issuer || uc.IssuerAccount != "" || uc.Audience != "USERS" || uc.Name != "alice" {
			t.Fatalf("user JWT sub %q iss %q aud %q name %q", uc.Subject, uc.Issuer, uc.Audience, uc.Name)
		}
		if uc.Expires != c.Expires {
			t.Fatalf("user JWT expires %d, token %d", uc.Expires, c.Expires)
		}
		p := uc.Permissions
		if !slices.Equal(p.Pub.Allow, jwt.StringList{"ringer.v1.cmd.alice.*"}) || len(p.Pub.Deny) != 0 ||
			!slices.Equal(p.Sub.Allow, jwt.StringList{"ringer.v1.user.alice.>", "_INBOX_alice.>"}) || len(p.Sub.Deny) != 0 ||
			p.Resp != nil {
			t.Fatalf("permissions %+v", p)
		}
		if uc.BearerToken || len(uc.Src) != 0 || len(uc.Times) != 0 || len(uc.AllowedConnectionTypes) != 0 {
			t.Fatalf("unexpected user limits %+v", uc.UserPermissionLimits)
		}
	}
}

func TestResponderMaxTTL(t *testing.T) {
	r, issuer := newTestResponder(t, func(c *auth.ResponderConfig) { c.MaxTTL = time.Minute })
	s := newFakeServer(t, issuer)
	tok, _ := auth.Mint(secret, "alice", 24*time.Hour)
	req, upub := s.request(jwt.ConnectOptions{Token: tok}, "Client", "")
	resp, err := r.Respond([]byte(req), "")
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(s.decode(resp, upub).Jwt)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(time.Unix(uc.Expires, 0)); d > time.Minute || d < 58*time.Second {
		t.Fatalf("expires in %s, want the 1m cap", d)
	}
}

// Refusals are signed responses with an error (the server logs the reason
// and refuses the connection).
func TestResponderRefusals(t *testing.T) {
	now := time.Now().Unix()
	r, issuer := newTestResponder(t, nil)
	s := newFakeServer(t, issuer)
	expired, _ := auth.Sign(secret, auth.Claims{Subject: "alice", Expires: now - 1})
	forged, _ := auth.Mint([]byte("not-the-secret-not-the-secret-not-the-secret"), "alice", time.Hour)
	valid, _ := auth.Mint(secret, "alice", time.Hour)
	cases := []struct {
		co     jwt.ConnectOptions
		kind   string
		reason string
	}{
		{jwt.ConnectOptions{Token: expired}, "Client", "token expired"},
		{jwt.ConnectOptions{Token: forged}, "Client", "token signature invalid"},
		{jwt.ConnectOptions{Token: "v1.x.y"}, "Client", "token malformed"},
		{jwt.ConnectOptions{Username: "alice", Password: "alice"}, "Client", "token malformed"},
		{jwt.ConnectOptions{Username: "alice"}, "Client", "no token"},
		{jwt.ConnectOptions{}, "Client", "no token"},
		{jwt.ConnectOptions{Token: valid}, "Leafnode", "Leafnode connections are not Ringer users"},
	}
	for _, c := range cases {
		req, upub := s.request(c.co, c.kind, "")
		resp, err := r.Respond([]byte(req), "")
		if err != nil {
			t.Fatal(err)
		}
		cr := s.decode(resp, upub)
		if cr.Jwt != "" || !strings.HasPrefix(cr.Error, c.reason) {
			t.Fatalf("%+v: error %q jwt %q, want %q", c.co, cr.Error, cr.Jwt, c.reason)
		}
	}
	if st := r.Stats(); st.Refused != uint64(len(cases)) || st.Authorized != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// What is not a valid request from a server gets no answer at all.
func TestResponderDropsInvalidRequests(t *testing.T) {
	r, issuer := newTestResponder(t, nil)
	s := newFakeServer(t, issuer)
	tok, _ := auth.Mint(secret, "alice", time.Hour)

	// Signed by a user key instead of a server key.
	ukp, _ := nkeys.CreateUser()
	rc := jwt.NewAuthorizationRequestClaims(issuer)
	rc.Audience = "nats-authorization-request"
	rc.UserNkey, _ = ukp.PublicKey()
	rc.Server.ID = "x"
	rc.ConnectOptions.Token = tok
	notServer, _ := rc.Encode(ukp)

	// Wrong audience.
	rc.Audience = "something-else"
	wrongAud, _ := rc.Encode(s.kp)

	good, _ := s.request(jwt.ConnectOptions{Token: tok}, "Client", "")
	xkp, _ := nkeys.CreateCurveKeys()
	xpub, _ := xkp.PublicKey()
	for name, c := range map[string]struct{ data, xkey string }{
		"garbage":                   {"hello", ""},
		"user-signed":               {notServer, ""},
		"wrong audience":            {wrongAud, ""},
		"encrypted without an xkey": {good, xpub},
	} {
		if resp, err := r.Respond([]byte(c.data), c.xkey); err == nil {
			t.Fatalf("%s: answered %q", name, resp)
		}
	}
}

func TestResponderXKey(t *testing.T) {
	rx, _ := nkeys.CreateCurveKeys()
	rxPub, _ := rx.PublicKey()
	r, issuer := newTestResponder(t, func(c *auth.ResponderConfig) { c.XKey = rx })
	s := newFakeServer(t, issuer)
	sx, _ := nkeys.CreateCurveKeys()
	sxPub, _ := sx.PublicKey()
	tok, _ := auth.Mint(secret, "alice", time.Hour)
	req, upub := s.request(jwt.ConnectOptions{Token: tok}, "Client", sxPub)
	sealed, err := sx.Seal([]byte(req), rxPub)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := r.Respond(sealed, sxPub)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(string(resp), "eyJ") {
		t.Fatal("response to an encrypted request is not encrypted")
	}
	plain, err := sx.Open(resp, rxPub)
	if err != nil {
		t.Fatal(err)
	}
	if cr := s.decode(plain, upub); cr.Error != "" || cr.Jwt == "" {
		t.Fatalf("refused: %q", cr.Error)
	}
	// The header must name the key the server signed into its request.
	other, _ := nkeys.CreateCurveKeys()
	otherPub, _ := other.PublicKey()
	sealed2, _ := other.Seal([]byte(req), rxPub)
	if _, err := r.Respond(sealed2, otherPub); err == nil {
		t.Fatal("answered a request whose xkey header does not match its claims")
	}
}

func TestNewResponderValidates(t *testing.T) {
	acct, _ := nkeys.CreateAccount()
	acctPub, _ := acct.PublicKey()
	pubOnly, _ := nkeys.FromPublicKey(acctPub)
	user, _ := nkeys.CreateUser()
	curve, _ := nkeys.CreateCurveKeys()
	for name, cfg := range map[string]auth.ResponderConfig{
		"weak secret":     {Secret: secret[:8], Issuer: acct, Account: "USERS"},
		"no issuer":       {Secret: secret, Account: "USERS"},
		"user issuer":     {Secret: secret, Issuer: user, Account: "USERS"},
		"public issuer":   {Secret: secret, Issuer: pubOnly, Account: "USERS"},
		"no account":      {Secret: secret, Issuer: acct},
		"account as xkey": {Secret: secret, Issuer: acct, Account: "USERS", XKey: acct},
		"curve as issuer": {Secret: secret, Issuer: curve, Account: "USERS"},
	} {
		if _, err := auth.NewResponder(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestPermissions(t *testing.T) {
	if _, err := auth.Permissions("a.b"); err == nil {
		t.Fatal("dotted user accepted")
	}
}
