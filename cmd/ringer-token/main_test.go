package main

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/ringer-dev/ringer/auth"
)

func TestRingerToken(t *testing.T) {
	dir := t.TempDir()
	secretPath := filepath.Join(dir, "secret")
	var out bytes.Buffer
	if err := run([]string{"--new-secret", secretPath}, &out); err != nil {
		t.Fatal(err)
	}
	if err := run([]string{"--new-secret", secretPath}, &out); err == nil {
		t.Fatal("overwrote an existing secret")
	}
	secret, err := auth.ReadSecretFile(secretPath)
	if err != nil {
		t.Fatal(err)
	}

	out.Reset()
	if err := run([]string{"--secret-file", secretPath, "--user", "alice", "--ttl", "1h"}, &out); err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(out.String())
	c, err := auth.VerifyClaims(secret, tok, time.Now())
	if err != nil || c.Subject != "alice" || time.Until(c.ExpiresAt()) > time.Hour+time.Second {
		t.Fatalf("minted %q: %+v %v", tok, c, err)
	}
	out.Reset()
	if err := run([]string{"--secret-file", secretPath, "--verify", tok}, &out); err != nil || !strings.HasPrefix(out.String(), "user alice, expires ") {
		t.Fatalf("verify: %q %v", out.String(), err)
	}
	if err := run([]string{"--secret-file", secretPath, "--verify", tok + "x"}, &out); !errors.Is(err, auth.ErrMalformed) {
		t.Fatalf("verify tampered: %v", err)
	}
	if err := run([]string{"--secret-file", secretPath, "--user", "a.b"}, &out); err == nil {
		t.Fatal("minted for an invalid user")
	}

	for flagName, valid := range map[string]func(string) bool{"--new-issuer": nkeys.IsValidPublicAccountKey, "--new-xkey": nkeys.IsValidPublicCurveKey} {
		out.Reset()
		path := filepath.Join(dir, flagName[2:])
		if err := run([]string{flagName, path}, &out); err != nil {
			t.Fatal(err)
		}
		pub := strings.TrimSpace(out.String())
		kp, err := auth.ReadSeedFile(path)
		if err != nil || !valid(pub) {
			t.Fatalf("%s: %q %v", flagName, pub, err)
		}
		if got, _ := kp.PublicKey(); got != pub {
			t.Fatalf("%s: seed file holds %s, printed %s", flagName, got, pub)
		}
	}
}
