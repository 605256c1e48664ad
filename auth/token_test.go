package auth_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/auth"
	"github.com/ringer-dev/ringer/subjects"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

// The example of the package documentation and docs/security.md, byte for
// byte (the shell recipe there produces the same string).
func TestTokenVector(t *testing.T) {
	const want = "v1.eyJzdWIiOiJhbGljZSIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoxNzAwMDAzNjAwfQ.CYiJ_zObHYbOfjSbUDWiWSXTa51naDLmAtLvCLIGxiE"
	got, err := auth.Sign(secret, auth.Claims{Subject: "alice", IssuedAt: 1700000000, Expires: 1700003600})
	if err != nil || got != want {
		t.Fatalf("Sign = %q, %v; want %q", got, err, want)
	}
	user, err := auth.Verify(secret, want, time.Unix(1700003599, 0))
	if err != nil || user != "alice" {
		t.Fatalf("Verify = %q, %v", user, err)
	}
	if _, err := auth.Verify(secret, want, time.Unix(1700003600, 0)); !errors.Is(err, auth.ErrExpired) {
		t.Fatalf("at exp: %v, want ErrExpired", err)
	}
}

func TestMintVerify(t *testing.T) {
	before := time.Now()
	tok, err := auth.Mint(secret, "bob_2-x", 1500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	c, err := auth.VerifyClaims(secret, tok, time.Now())
	if err != nil || c.Subject != "bob_2-x" {
		t.Fatalf("VerifyClaims = %+v, %v", c, err)
	}
	// exp is rounded up: never earlier than now+ttl, at most a second later.
	if exp := c.ExpiresAt(); exp.Before(before.Add(1500*time.Millisecond).Truncate(time.Second)) || exp.After(before.Add(2600*time.Millisecond)) {
		t.Fatalf("exp %s for ttl 1.5s from %s", exp, before)
	}
	if c.IssuedAt != before.Unix() && c.IssuedAt != before.Unix()+1 {
		t.Fatalf("iat %d, now %d", c.IssuedAt, before.Unix())
	}
	if _, err := auth.Verify(secret, tok, c.ExpiresAt()); !errors.Is(err, auth.ErrExpired) {
		t.Fatalf("at expiry: %v", err)
	}
	other := []byte("another-secret-another-secret-another")
	if _, err := auth.Verify(other, tok, time.Now()); !errors.Is(err, auth.ErrBadSignature) {
		t.Fatalf("other secret: %v", err)
	}
}

func TestMintRejects(t *testing.T) {
	if _, err := auth.Mint(secret[:31], "alice", time.Hour); !errors.Is(err, auth.ErrWeakSecret) {
		t.Fatalf("short secret: %v", err)
	}
	for _, u := range []string{"", "a.b", "*", ">", "alice bob", strings.Repeat("a", 65)} {
		if _, err := auth.Mint(secret, u, time.Hour); !errors.Is(err, subjects.ErrInvalidID) {
			t.Fatalf("user %q: %v", u, err)
		}
	}
	if _, err := auth.Mint(secret, "alice", 0); err == nil {
		t.Fatal("zero ttl accepted")
	}
}

// sign builds a token around an arbitrary payload, correctly signed.
// (The format written out by hand, independently of the package.)
func sign(payload string) string {
	signed := "v1." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(signed))
	return signed + "." + base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

func TestVerifyRejects(t *testing.T) {
	now := time.Unix(1700000000, 0)
	good, _ := auth.Sign(secret, auth.Claims{Subject: "alice", Expires: now.Unix() + 60})
	parts := strings.Split(good, ".")
	cases := []struct {
		name, tok string
		want      error
	}{
		{"empty", "", auth.ErrMalformed},
		{"two fields", parts[0] + "." + parts[1], auth.ErrMalformed},
		{"four fields", good + ".x", auth.ErrMalformed},
		{"version", "v2." + parts[1] + "." + parts[2], auth.ErrMalformed},
		{"empty payload", "v1.." + parts[2], auth.ErrMalformed},
		{"padded signature", good + "=", auth.ErrMalformed},
		{"std base64 signature", parts[0] + "." + parts[1] + "." + strings.NewReplacer("-", "+", "_", "/").Replace(parts[2]) + "+/", auth.ErrMalformed},
		{"short signature", parts[0] + "." + parts[1] + "." + parts[2][:20], auth.ErrMalformed},
		{"too long", "v1." + strings.Repeat("A", auth.MaxTokenLen) + "." + parts[2], auth.ErrMalformed},
		{"other payload", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"bob","exp":1800000000}`)) + "." + parts[2], auth.ErrBadSignature},
		{"flipped signature", parts[0] + "." + parts[1] + "." + flip(parts[2]), auth.ErrBadSignature},
		{"not json", sign("alice"), auth.ErrMalformed},
		{"json array", sign(`["alice"]`), auth.ErrMalformed},
		{"json null", sign(`null`), auth.ErrMalformed},
		{"trailing data", sign(`{"sub":"alice","exp":1800000000} {}`), auth.ErrMalformed},
		{"no sub", sign(`{"exp":1800000000}`), auth.ErrMalformed},
		{"no exp", sign(`{"sub":"alice"}`), auth.ErrMalformed},
		{"exp string", sign(`{"sub":"alice","exp":"1800000000"}`), auth.ErrMalformed},
		{"exp float", sign(`{"sub":"alice","exp":1.8e9}`), auth.ErrMalformed},
		{"sub wildcard", sign(`{"sub":"*","exp":1800000000}`), auth.ErrMalformed},
		{"sub dotted", sign(`{"sub":"alice.>","exp":1800000000}`), auth.ErrMalformed},
		{"sub number", sign(`{"sub":7,"exp":1800000000}`), auth.ErrMalformed},
		{"expired", sign(`{"sub":"alice","exp":1700000000}`), auth.ErrExpired},
	}
	for _, c := range cases {
		if _, err := auth.Verify(secret, c.tok, now); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// Members in another order, unknown members and whitespace are fine:
	// the signature covers the encoded bytes.
	user, err := auth.Verify(secret, sign(` { "exp": 1800000000, "kid": "k1", "sub": "alice" } `), now)
	if err != nil || user != "alice" {
		t.Fatalf("reordered payload: %q %v", user, err)
	}
	if _, err := auth.Verify(secret[:16], good, now); !errors.Is(err, auth.ErrWeakSecret) {
		t.Fatalf("weak secret: %v", err)
	}
}

func flip(s string) string {
	b := []byte(s)
	if b[0] == 'A' {
		b[0] = 'B'
	} else {
		b[0] = 'A'
	}
	return string(b)
}

func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "secret")
	if err := os.WriteFile(p, append(append([]byte("  "), secret...), '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := auth.ReadSecretFile(p)
	if err != nil || string(got) != string(secret) {
		t.Fatalf("ReadSecretFile = %q, %v", got, err)
	}
	if err := os.WriteFile(p, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := auth.ReadSecretFile(p); !errors.Is(err, auth.ErrWeakSecret) {
		t.Fatalf("short secret file: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	good, _ := auth.Sign(secret, auth.Claims{Subject: "alice", Expires: 1800000000})
	f.Add(good)
	f.Add("v1..")
	f.Add(sign(`{"sub":"alice","exp":1800000000}`))
	f.Fuzz(func(t *testing.T, tok string) {
		user, err := auth.Verify(secret, tok, time.Unix(1700000000, 0))
		if err == nil && subjects.ValidateID(user) != nil {
			t.Fatalf("accepted invalid user %q", user)
		}
		if err != nil && !errors.Is(err, auth.ErrMalformed) && !errors.Is(err, auth.ErrBadSignature) && !errors.Is(err, auth.ErrExpired) {
			t.Fatalf("unclassified error %v", err)
		}
	})
}
