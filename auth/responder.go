package auth

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/ringer-dev/ringer/subjects"
)

// Names fixed by nats-server's auth callout (server/auth_callout.go).
const (
	// CalloutSubject is where the server sends authorization requests, in
	// the auth_callout account.
	CalloutSubject = "$SYS.REQ.USER.AUTH"
	// requestAudience is the audience of every authorization request JWT.
	requestAudience = "nats-authorization-request"
	// ServerXKeyHeader carries the server's public xkey on an encrypted request.
	ServerXKeyHeader = "Nats-Server-Xkey"
)

// DefaultQueueGroup lets every brokerd run a responder: each request is
// answered once.
const DefaultQueueGroup = "ringer-auth"

// ResponderConfig configures a Responder.
type ResponderConfig struct {
	// Secret is the HMAC secret tokens are signed with (required).
	Secret []byte
	// Issuer is the account key pair whose public key is auth_callout.issuer
	// in the server config; it signs the responses and user JWTs (required).
	Issuer nkeys.KeyPair
	// Account is the account users are placed in, e.g. "USERS" (required).
	Account string
	// XKey is the curve key pair whose public key is auth_callout.xkey, if
	// the server encrypts its requests. Nil: only plain requests are served.
	XKey nkeys.KeyPair
	// MaxTTL, if positive, caps a connection's lifetime below the token's
	// expiry.
	MaxTTL time.Duration
	// QueueGroup defaults to DefaultQueueGroup.
	QueueGroup string
	// Logger defaults to a no-op logger.
	Logger *zerolog.Logger
	// Now defaults to time.Now (tests).
	Now func() time.Time
}

// Stats counts the responder's decisions.
type Stats struct {
	Authorized, Refused, Dropped uint64
}

// Responder is a NATS auth callout service for Ringer tokens.
type Responder struct {
	cfg       ResponderConfig
	issuerPub string
	xkeyPub   string
	log       zerolog.Logger

	mu  sync.Mutex
	sub *nats.Subscription

	authorized, refused, dropped atomic.Uint64
}

// NewResponder validates cfg and returns a responder that is not yet serving.
func NewResponder(cfg ResponderConfig) (*Responder, error) {
	if err := checkSecret(cfg.Secret); err != nil {
		return nil, err
	}
	if cfg.Issuer == nil {
		return nil, errors.New("auth: issuer key pair is required")
	}
	pub, err := cfg.Issuer.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("auth: issuer: %w", err)
	}
	if !nkeys.IsValidPublicAccountKey(pub) {
		return nil, fmt.Errorf("auth: issuer %q is not an account key (A…): auth_callout.issuer must be an account nkey", pub)
	}
	if _, err := cfg.Issuer.Sign([]byte("probe")); err != nil {
		return nil, fmt.Errorf("auth: issuer key pair cannot sign (a public key, not a seed?): %w", err)
	}
	if cfg.Account == "" {
		return nil, errors.New("auth: users account is required")
	}
	r := &Responder{cfg: cfg, issuerPub: pub, log: zerolog.Nop()}
	if cfg.XKey != nil {
		if r.xkeyPub, err = cfg.XKey.PublicKey(); err != nil || !nkeys.IsValidPublicCurveKey(r.xkeyPub) {
			return nil, fmt.Errorf("auth: xkey is not a curve (X…) key pair")
		}
	}
	if cfg.QueueGroup == "" {
		r.cfg.QueueGroup = DefaultQueueGroup
	}
	if cfg.Logger != nil {
		r.log = *cfg.Logger
	}
	if cfg.Now == nil {
		r.cfg.Now = time.Now
	}
	return r, nil
}

// SetLogger replaces the logger; call it before Start.
func (r *Responder) SetLogger(l zerolog.Logger) { r.log = l }

// IssuerPublicKey is the value for auth_callout.issuer.
func (r *Responder) IssuerPublicKey() string { return r.issuerPub }

// Start subscribes on nc, which must be a connection of an auth_callout
// auth_users user (in the auth_callout account).
func (r *Responder) Start(nc *nats.Conn) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sub != nil {
		return errors.New("auth: responder already started")
	}
	sub, err := nc.QueueSubscribe(CalloutSubject, r.cfg.QueueGroup, r.onRequest)
	if err != nil {
		return err
	}
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return err
	}
	r.sub = sub
	return nil
}

// Stop drains the subscription: requests already received are answered.
func (r *Responder) Stop() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sub == nil {
		return nil
	}
	err := r.sub.Drain()
	r.sub = nil
	return err
}

// Stats returns how many connections were authorized, refused, and how many
// requests could not be answered at all (undecodable: the server times out
// and refuses).
func (r *Responder) Stats() Stats {
	return Stats{Authorized: r.authorized.Load(), Refused: r.refused.Load(), Dropped: r.dropped.Load()}
}

func (r *Responder) onRequest(m *nats.Msg) {
	resp, err := r.Respond(m.Data, m.Header.Get(ServerXKeyHeader))
	if err != nil {
		r.dropped.Add(1)
		r.log.Warn().Err(err).Msg("auth callout: request dropped")
		return
	}
	if err := m.Respond(resp); err != nil {
		r.log.Warn().Err(err).Msg("auth callout: response not sent")
	}
}

// Respond computes the answer to one authorization request: data is the
// message body and serverXKey the Nats-Server-Xkey header (empty when the
// request is not encrypted). An error means no answer can be built (the
// request is not a valid authorization request from a server); every
// decision about the client itself, including a refusal, is a response.
func (r *Responder) Respond(data []byte, serverXKey string) ([]byte, error) {
	encrypted := serverXKey != ""
	if encrypted {
		if r.cfg.XKey == nil {
			return nil, errors.New("encrypted request but no xkey configured (set the xkey seed matching auth_callout.xkey)")
		}
		plain, err := r.cfg.XKey.Open(data, serverXKey)
		if err != nil {
			return nil, fmt.Errorf("decrypt request: %w", err)
		}
		data = plain
	}
	req, err := jwt.DecodeAuthorizationRequestClaims(string(data))
	if err != nil {
		return nil, fmt.Errorf("decode request: %w", err)
	}
	vr := jwt.CreateValidationResults()
	req.Validate(vr)
	if len(vr.Errors()) > 0 {
		return nil, fmt.Errorf("invalid request: %v", vr.Errors()[0])
	}
	if req.Audience != requestAudience {
		return nil, fmt.Errorf("request audience %q, want %q", req.Audience, requestAudience)
	}
	if req.Server.ID == "" {
		return nil, errors.New("request without server id")
	}
	if encrypted && req.Server.XKey != serverXKey {
		return nil, errors.New("request xkey header does not match the signed server xkey")
	}
	if req.Subject != r.issuerPub {
		r.log.Warn().Str("server_issuer", req.Subject).Str("our_issuer", r.issuerPub).
			Msg("auth callout: the server's auth_callout.issuer is not our issuer key; it will reject our answers")
	}

	userJWT, user, reason := r.decide(req)
	cr := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	cr.Audience = req.Server.ID
	if reason != "" {
		cr.Error = reason
	} else {
		cr.Jwt = userJWT
	}
	out, err := cr.Encode(r.cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("encode response: %w", err)
	}
	resp := []byte(out)
	if encrypted {
		if resp, err = r.cfg.XKey.Seal(resp, serverXKey); err != nil {
			return nil, fmt.Errorf("encrypt response: %w", err)
		}
	}
	ev := r.log.Debug()
	if reason != "" {
		r.refused.Add(1)
		ev = ev.Str("refused", reason)
	} else {
		r.authorized.Add(1)
		ev = ev.Str("user", user)
	}
	ev.Str("host", req.ClientInformation.Host).Uint64("cid", req.ClientInformation.ID).Msg("auth callout")
	return resp, nil
}

// decide verifies the presented token and builds the user JWT, or says why not.
func (r *Responder) decide(req *jwt.AuthorizationRequestClaims) (userJWT, user, reason string) {
	if k := req.ClientInformation.Kind; k != "" && k != "Client" {
		return "", "", fmt.Sprintf("%s connections are not Ringer users", k)
	}
	token := req.ConnectOptions.Token
	if token == "" {
		token = req.ConnectOptions.Password
	}
	if token == "" {
		return "", "", "no token presented (use the CONNECT token, or the password with any user name)"
	}
	now := r.cfg.Now()
	claims, err := VerifyClaims(r.cfg.Secret, token, now)
	switch {
	case errors.Is(err, ErrExpired):
		return "", "", "token expired"
	case errors.Is(err, ErrBadSignature):
		return "", "", "token signature invalid"
	case err != nil:
		return "", "", "token malformed"
	}
	user = claims.Subject
	exp := claims.Expires
	if r.cfg.MaxTTL > 0 {
		if capAt := now.Add(r.cfg.MaxTTL).Unix(); capAt < exp {
			exp = capAt
		}
	}
	ujwt, err := r.userJWT(req.UserNkey, user, exp)
	if err != nil {
		r.log.Error().Err(err).Str("user", user).Msg("auth callout: cannot build user JWT")
		return "", "", "internal error"
	}
	return ujwt, user, ""
}

// Permissions returns the exact permissions a user is granted.
func Permissions(user string) (jwt.Permissions, error) {
	cmds, err := subjects.UserCommands(user)
	if err != nil {
		return jwt.Permissions{}, err
	}
	own, err := subjects.UserSubjects(user)
	if err != nil {
		return jwt.Permissions{}, err
	}
	inbox, err := subjects.InboxPrefix(user)
	if err != nil {
		return jwt.Permissions{}, err
	}
	var p jwt.Permissions
	p.Pub.Allow.Add(cmds)
	p.Sub.Allow.Add(own, inbox+".>")
	return p, nil
}

func (r *Responder) userJWT(userNkey, user string, exp int64) (string, error) {
	perms, err := Permissions(user)
	if err != nil {
		return "", err
	}
	uc := jwt.NewUserClaims(userNkey)
	// The name becomes the connection's user name: the "user" of the
	// Nats-Request-Info header the server stamps on shared service imports.
	uc.Name = user
	// In server-config mode the audience is the account the user is placed in.
	uc.Audience = r.cfg.Account
	uc.Expires = exp
	uc.Permissions = perms
	vr := jwt.CreateValidationResults()
	uc.Validate(vr)
	if len(vr.Errors()) > 0 {
		return "", vr.Errors()[0]
	}
	return uc.Encode(r.cfg.Issuer)
}

// ReadSeedFile reads an nkey seed (an account seed "SA…" for the issuer, a
// curve seed "SX…" for the xkey) from a file; surrounding whitespace is
// trimmed, and a decorated .creds/.nk style file is accepted.
func ReadSeedFile(path string) (nkeys.KeyPair, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	kp, err := nkeys.FromSeed(bytes.TrimSpace(b))
	if err != nil {
		if kp, err = nkeys.ParseDecoratedNKey(b); err != nil {
			return nil, fmt.Errorf("%s: not an nkey seed: %w", path, err)
		}
	}
	return kp, nil
}
