package main

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/ringer-dev/ringer/auth"
)

// authOptions are the --auth-* flags: brokerd as the NATS auth callout
// service of a secure deployment (docs/security.md).
type authOptions struct {
	enabled        bool
	secretFile     string
	issuerSeedFile string
	xkeySeedFile   string
	account        string
	natsURL        string
	maxTTL         time.Duration

	resp *auth.Responder // built by prepare
}

func (a *authOptions) register(fs *flag.FlagSet) {
	fs.BoolVar(&a.enabled, "auth-callout", false, "serve the NATS auth callout: end users connect with tokens signed with --auth-secret-file (needs --nats and --auth-nats)")
	fs.StringVar(&a.secretFile, "auth-secret-file", "", "file holding the HMAC-SHA256 secret of user tokens, at least 32 bytes")
	fs.StringVar(&a.issuerSeedFile, "auth-issuer-seed-file", "", "file holding the account nkey seed (SA…) whose public key is auth_callout.issuer")
	fs.StringVar(&a.xkeySeedFile, "auth-xkey-seed-file", "", "file holding the curve seed (SX…) whose public key is auth_callout.xkey, if the server encrypts callouts")
	fs.StringVar(&a.account, "auth-account", "USERS", "account authenticated end users are placed in")
	fs.StringVar(&a.natsURL, "auth-nats", "", "NATS URL(s) for an auth_callout auth_users user, e.g. nats://auth:PASSWORD@host:4222")
	fs.DurationVar(&a.maxTTL, "auth-max-ttl", 0, "cap on an authenticated connection's lifetime (0: until its token expires)")
}

// prepare checks the flags and loads the keys, so that a misconfiguration
// fails at startup. brokerNATS is --nats: the embedded development server has
// no auth, so the callout needs an external one.
func (a *authOptions) prepare(brokerNATS string) error {
	if !a.enabled {
		return nil
	}
	var missing []error
	if brokerNATS == "" {
		missing = append(missing, errors.New("--auth-callout needs --nats: the embedded development server has no auth"))
	}
	for _, f := range []struct{ name, value string }{
		{"--auth-secret-file", a.secretFile}, {"--auth-issuer-seed-file", a.issuerSeedFile}, {"--auth-nats", a.natsURL},
	} {
		if f.value == "" {
			missing = append(missing, fmt.Errorf("--auth-callout needs %s", f.name))
		}
	}
	if err := errors.Join(missing...); err != nil {
		return err
	}
	secret, err := auth.ReadSecretFile(a.secretFile)
	if err != nil {
		return fmt.Errorf("--auth-secret-file: %w", err)
	}
	issuer, err := auth.ReadSeedFile(a.issuerSeedFile)
	if err != nil {
		return fmt.Errorf("--auth-issuer-seed-file: %w", err)
	}
	cfg := auth.ResponderConfig{Secret: secret, Issuer: issuer, Account: a.account, MaxTTL: a.maxTTL}
	if a.xkeySeedFile != "" {
		if cfg.XKey, err = auth.ReadSeedFile(a.xkeySeedFile); err != nil {
			return fmt.Errorf("--auth-xkey-seed-file: %w", err)
		}
	}
	a.resp, err = auth.NewResponder(cfg)
	return err
}

// startAuth connects as the callout user and serves authorization requests
// until the returned stop is called. Without --auth-callout it only logs how
// identity is established.
func startAuth(a *authOptions, name string, log zerolog.Logger, extra ...nats.Option) (stop func(), err error) {
	if !a.enabled {
		log.Info().Msg("auth callout off: identity is whatever the NATS server's accounts and permissions enforce (see docs/security.md)")
		return func() {}, nil
	}
	alog := log.With().Str("component", "auth").Logger()
	a.resp.SetLogger(alog)
	closed := make(chan struct{})
	nc, err := nats.Connect(a.natsURL, append([]nats.Option{nats.Name("ringer-auth " + name), nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: our own Drain/Close
				alog.Warn().Err(err).Msg("auth callout connection lost")
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { alog.Info().Str("url", c.ConnectedUrlRedacted()).Msg("auth callout reconnected") }),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) })}, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("auth callout: connect --auth-nats: %w", err)
	}
	if err := a.resp.Start(nc); err != nil {
		nc.Close()
		return nil, fmt.Errorf("auth callout: %w", err)
	}
	alog.Info().Str("nats", nc.ConnectedUrlRedacted()).Str("issuer", a.resp.IssuerPublicKey()).
		Str("account", a.account).Bool("xkey", a.xkeySeedFile != "").Dur("max_ttl", a.maxTTL).
		Msg("auth callout serving " + auth.CalloutSubject + ": end users need a token")
	return func() {
		_ = a.resp.Stop()
		if err := nc.Drain(); err != nil {
			nc.Close()
			return
		}
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			nc.Close()
		}
	}, nil
}
