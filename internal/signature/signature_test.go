package signature

import (
	"errors"
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
