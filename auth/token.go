package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ringer-dev/ringer/subjects"
)

// TokenVersion is the first field of every token this package mints.
const TokenVersion = "v1"

// MaxTokenLen bounds the size of a token; longer input is rejected unparsed.
const MaxTokenLen = 1024

// MinSecretLen is the shortest accepted HMAC secret, in bytes.
const MinSecretLen = 32

// Sentinel errors, usable with errors.Is. Verify wraps them with detail.
var (
	// ErrMalformed: not a v1 token (shape, encoding, JSON, user id).
	ErrMalformed = errors.New("auth: malformed token")
	// ErrBadSignature: well-formed, but not signed with this secret.
	ErrBadSignature = errors.New("auth: bad token signature")
	// ErrExpired: authentic, but its exp is not after now.
	ErrExpired = errors.New("auth: token expired")
	// ErrWeakSecret: the secret is shorter than MinSecretLen.
	ErrWeakSecret = errors.New("auth: secret too short")
)

var b64 = base64.RawURLEncoding.Strict()

// Claims is the payload of a token.
type Claims struct {
	// Subject is the Ringer user id ("sub").
	Subject string `json:"sub"`
	// IssuedAt is the issue time in Unix seconds ("iat"; 0 = absent).
	IssuedAt int64 `json:"iat,omitempty"`
	// Expires is the expiry in Unix seconds ("exp"): the token is valid
	// strictly before it.
	Expires int64 `json:"exp"`
}

// ExpiresAt returns the expiry as a time.
func (c Claims) ExpiresAt() time.Time { return time.Unix(c.Expires, 0) }

func checkSecret(secret []byte) error {
	if len(secret) < MinSecretLen {
		return fmt.Errorf("%w: %d bytes, need at least %d", ErrWeakSecret, len(secret), MinSecretLen)
	}
	return nil
}

func mac(secret []byte, signed string) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(signed))
	return h.Sum(nil)
}

// Sign encodes and signs c as it is (no time checks). Mint is the usual entry
// point; Sign exists for issuers that compute their own times and for tests.
func Sign(secret []byte, c Claims) (string, error) {
	if err := checkSecret(secret); err != nil {
		return "", err
	}
	if err := subjects.ValidateID(c.Subject); err != nil {
		return "", fmt.Errorf("auth: user: %w", err)
	}
	js, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signed := TokenVersion + "." + b64.EncodeToString(js)
	return signed + "." + b64.EncodeToString(mac(secret, signed)), nil
}

// Mint issues a token for user, valid from now for ttl (rounded up to a whole
// second).
func Mint(secret []byte, user string, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		return "", fmt.Errorf("auth: ttl must be positive, got %s", ttl)
	}
	now := time.Now()
	exp := now.Add(ttl)
	expUnix := exp.Unix()
	if exp.After(time.Unix(expUnix, 0)) {
		expUnix++
	}
	return Sign(secret, Claims{Subject: user, IssuedAt: now.Unix(), Expires: expUnix})
}

// Verify checks token against secret at time now and returns its user id.
// Errors wrap ErrMalformed, ErrBadSignature, ErrExpired or ErrWeakSecret.
func Verify(secret []byte, token string, now time.Time) (user string, err error) {
	c, err := VerifyClaims(secret, token, now)
	if err != nil {
		return "", err
	}
	return c.Subject, nil
}

// VerifyClaims is Verify returning the whole payload (the responder needs the
// expiry).
func VerifyClaims(secret []byte, token string, now time.Time) (Claims, error) {
	c, err := Parse(secret, token)
	if err != nil {
		return Claims{}, err
	}
	if !now.Before(c.ExpiresAt()) {
		return Claims{}, fmt.Errorf("%w: at %s", ErrExpired, c.ExpiresAt().UTC().Format(time.RFC3339))
	}
	return c, nil
}

// Parse checks the shape and signature of token and decodes its payload,
// without looking at the time.
func Parse(secret []byte, token string) (Claims, error) {
	if err := checkSecret(secret); err != nil {
		return Claims{}, err
	}
	if len(token) > MaxTokenLen {
		return Claims{}, fmt.Errorf("%w: %d bytes, at most %d", ErrMalformed, len(token), MaxTokenLen)
	}
	ver, rest, ok := strings.Cut(token, ".")
	if !ok || ver != TokenVersion {
		return Claims{}, fmt.Errorf("%w: not a %s token", ErrMalformed, TokenVersion)
	}
	payload, sigText, ok := strings.Cut(rest, ".")
	if !ok || payload == "" || strings.Contains(sigText, ".") {
		return Claims{}, fmt.Errorf("%w: want v1.<payload>.<signature>", ErrMalformed)
	}
	sig, err := b64.DecodeString(sigText)
	if err != nil || len(sig) != sha256.Size {
		return Claims{}, fmt.Errorf("%w: signature is not 32 bytes of base64url", ErrMalformed)
	}
	if !hmac.Equal(sig, mac(secret, ver+"."+payload)) {
		return Claims{}, ErrBadSignature
	}
	js, err := b64.DecodeString(payload)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: payload is not base64url", ErrMalformed)
	}
	var raw struct {
		Subject  *string `json:"sub"`
		IssuedAt int64   `json:"iat"`
		Expires  *int64  `json:"exp"`
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	if err := dec.Decode(&raw); err != nil || dec.More() {
		return Claims{}, fmt.Errorf("%w: payload is not a JSON object of sub, exp, iat", ErrMalformed)
	}
	if raw.Subject == nil || raw.Expires == nil {
		return Claims{}, fmt.Errorf("%w: sub and exp are required", ErrMalformed)
	}
	if err := subjects.ValidateID(*raw.Subject); err != nil {
		return Claims{}, fmt.Errorf("%w: sub: %v", ErrMalformed, err)
	}
	return Claims{Subject: *raw.Subject, IssuedAt: raw.IssuedAt, Expires: *raw.Expires}, nil
}

// ReadSecretFile reads an HMAC secret: the file's bytes with surrounding
// whitespace trimmed, at least MinSecretLen of them.
func ReadSecretFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	secret := bytes.TrimSpace(b)
	if err := checkSecret(secret); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return secret, nil
}
