// Command ringer-token mints and checks Ringer user tokens (package auth,
// docs/security.md), and creates the keys a secure deployment needs. It is a
// demo and operations helper: a real application mints tokens in its own
// backend, in any language, with the same HMAC-SHA256 format.
//
//	ringer-token --secret-file secret --user alice --ttl 1h   # print a token
//	ringer-token --secret-file secret --verify TOKEN          # print its user and expiry
//	ringer-token --new-secret secret                          # write a random 48-byte secret
//	ringer-token --new-issuer issuer.nk                       # write an account seed, print auth_callout.issuer
//	ringer-token --new-xkey xkey.nk                           # write a curve seed, print auth_callout.xkey
package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/ringer-dev/ringer/auth"
	"github.com/ringer-dev/ringer/internal/buildinfo"
)

func main() {
	err := run(os.Args[1:], os.Stdout)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ringer-token:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("ringer-token", flag.ContinueOnError)
	secretFile := fs.String("secret-file", os.Getenv("RINGER_AUTH_SECRET_FILE"), "file holding the HMAC secret (env RINGER_AUTH_SECRET_FILE)")
	user := fs.String("user", "", "user id to mint a token for")
	ttl := fs.Duration("ttl", time.Hour, "token lifetime")
	verify := fs.String("verify", "", "token to check instead of minting one")
	newSecret := fs.String("new-secret", "", "write a new random secret to this file (mode 0600) and exit")
	newIssuer := fs.String("new-issuer", "", "write a new account nkey seed to this file (0600), print its public key (auth_callout.issuer) and exit")
	version := fs.Bool("version", false, "print the version and exit")
	newXKey := fs.String("new-xkey", "", "write a new curve (xkey) seed to this file (0600), print its public key (auth_callout.xkey) and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch {
	case *version:
		_, err := fmt.Fprintln(out, buildinfo.Get().String("ringer-token"))
		return err
	case *newSecret != "":
		b := make([]byte, 48)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		return writeNew(*newSecret, []byte(base64.RawURLEncoding.EncodeToString(b)+"\n"))
	case *newIssuer != "":
		return newKey(*newIssuer, nkeys.CreateAccount, out)
	case *newXKey != "":
		return newKey(*newXKey, nkeys.CreateCurveKeys, out)
	}
	if *secretFile == "" {
		return errors.New("--secret-file is required")
	}
	secret, err := auth.ReadSecretFile(*secretFile)
	if err != nil {
		return err
	}
	if *verify != "" {
		c, err := auth.VerifyClaims(secret, *verify, time.Now())
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "user %s, expires %s (in %s)\n", c.Subject, c.ExpiresAt().UTC().Format(time.RFC3339), time.Until(c.ExpiresAt()).Round(time.Second))
		return err
	}
	if *user == "" {
		return errors.New("--user is required")
	}
	tok, err := auth.Mint(secret, *user, *ttl)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, tok)
	return err
}

func newKey(path string, create func() (nkeys.KeyPair, error), out io.Writer) error {
	kp, err := create()
	if err != nil {
		return err
	}
	seed, err := kp.Seed()
	if err != nil {
		return err
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return err
	}
	if err := writeNew(path, append(seed, '\n')); err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, pub)
	return err
}

// writeNew creates path with mode 0600; it never overwrites a key.
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
