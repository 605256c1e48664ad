package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/internal/signature"
)

func TestSinkChecksSignaturesAndLogs(t *testing.T) {
	var out bytes.Buffer
	srv := httptest.NewServer(handler([]byte("k"), &out))
	defer srv.Close()
	body := []byte(`{"id":"i.ring"}`)
	post := func(sig string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/push", bytes.NewReader(body))
		req.Header.Set(signature.Header, sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(signature.Sign([]byte("k"), time.Now(), body)); code != http.StatusNoContent {
		t.Fatalf("signed delivery: %d", code)
	}
	if code := post(signature.Sign([]byte("other"), time.Now(), body)); code != http.StatusUnauthorized {
		t.Fatalf("badly signed delivery: %d", code)
	}
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != 1 ||
		!strings.Contains(lines[0], `"body":{"id":"i.ring"}`) || !strings.Contains(lines[0], `"signed":true`) {
		t.Fatalf("log: %q", out.String())
	}
}
