package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
)

// tlsOptions are the --tls-* flags: how brokerd's connections to NATS
// (--nats, --auth-nats) verify the servers and, with a client certificate,
// identify themselves (docs/security.md, "TLS").
type tlsOptions struct {
	ca, cert, key string
}

func (t *tlsOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&t.ca, "tls-ca", "", "PEM file of the CA that signed the NATS servers' certificates (default: the system's roots); use tls:// URLs")
	fs.StringVar(&t.cert, "tls-cert", "", "PEM client certificate for NATS servers that verify clients (with --tls-key)")
	fs.StringVar(&t.key, "tls-key", "", "PEM private key of --tls-cert")
}

// prepare checks that the files exist and come in pairs, so that a
// misconfiguration fails at startup rather than at the first connect.
func (t *tlsOptions) prepare() error {
	if (t.cert == "") != (t.key == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	for _, f := range []struct{ flag, file string }{{"--tls-ca", t.ca}, {"--tls-cert", t.cert}, {"--tls-key", t.key}} {
		if f.file == "" {
			continue
		}
		if _, err := os.Stat(f.file); err != nil {
			return fmt.Errorf("%s: %w", f.flag, err)
		}
	}
	return nil
}

// natsOptions are the connection options the flags ask for.
func (t *tlsOptions) natsOptions() []nats.Option {
	var opts []nats.Option
	if t.ca != "" {
		opts = append(opts, nats.RootCAs(t.ca))
	}
	if t.cert != "" {
		opts = append(opts, nats.ClientCert(t.cert, t.key))
	}
	return opts
}
