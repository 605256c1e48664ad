package signature

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	secret, body, now := []byte("s3cret"), []byte(`{"id":"x"}`), time.Unix(1764770501, 0)
	h := Sign(secret, now, body)
	if h != "t=1764770501,v1="+mac(secret, "1764770501", body) {
		t.Fatalf("header %q", h)
	}
	if err := Verify(secret, h, body, now.Add(time.Minute), 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		secret []byte
		header string
		body   string
		now    time.Time
		want   error
	}{
		"other body":   {secret, h, `{"id":"y"}`, now, ErrMismatch},
		"other secret": {[]byte("guess"), h, string(body), now, ErrMismatch},
		"replayed":     {secret, h, string(body), now.Add(6 * time.Minute), ErrStale},
		"no time":      {secret, "v1=abc", string(body), now, ErrMalformed},
		"no mac":       {secret, "t=1764770501", string(body), now, ErrMalformed},
		"empty":        {secret, "", string(body), now, ErrMalformed},
	} {
		if err := Verify(tc.secret, tc.header, []byte(tc.body), tc.now, 5*time.Minute); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

// A receiver reads the body and checks its signature in one step; without a
// secret it only reads.
func TestReadVerified(t *testing.T) {
	secret, body, now := []byte("s3cret"), `{"id":"x"}`, time.Unix(1764770501, 0)
	req := func(header string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader(body))
		r.Header.Set(Header, header)
		return r
	}
	got, err := ReadVerified(req(Sign(secret, now, []byte(body))), secret, 1<<10, now, time.Minute)
	if err != nil || string(got) != body {
		t.Fatalf("signed: %q, %v", got, err)
	}
	if _, err := ReadVerified(req(Sign([]byte("other"), now, []byte(body))), secret, 1<<10, now, time.Minute); !errors.Is(err, ErrMismatch) {
		t.Fatalf("another key: %v", err)
	}
	if got, err := ReadVerified(req(""), nil, 1<<10, now, time.Minute); err != nil || string(got) != body {
		t.Fatalf("no secret: %q, %v", got, err)
	}
}
