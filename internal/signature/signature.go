// Package signature signs and verifies the HTTP bodies Ringer's gateways
// send (docs/push.md, "Verifying the signature"): the header
// Ringer-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>.
package signature

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header is the name of the signature header.
const Header = "Ringer-Signature"

// Sign returns the header value for body sent at t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + mac(secret, ts, body)
}

func mac(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts + "."))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Errors of Verify.
var (
	ErrMalformed = errors.New("signature: malformed header")
	ErrStale     = errors.New("signature: timestamp too far from now (a replay?)")
	ErrMismatch  = errors.New("signature: does not match the body")
)

// Verify checks header against body: the HMAC must match, and its time
// must be within tolerance of now.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig == "" {
		return ErrMalformed
	}
	if now.Sub(time.Unix(t, 0)).Abs() > tolerance {
		return ErrStale
	}
	if !hmac.Equal([]byte(sig), []byte(mac(secret, ts, body))) {
		return ErrMismatch
	}
	return nil
}

// ReadVerified reads r's body (at most limit bytes) and, when secret is not
// empty, verifies its Header against it (Verify, at the time now): what a
// receiver of Ringer's gateways does first.
func ReadVerified(r *http.Request, secret []byte, limit int64, now time.Time, tolerance time.Duration) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, limit))
	if err != nil {
		return nil, err
	}
	if len(secret) > 0 {
		if err := Verify(secret, r.Header.Get(Header), body, now, tolerance); err != nil {
			return body, err
		}
	}
	return body, nil
}
