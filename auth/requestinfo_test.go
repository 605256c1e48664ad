package auth_test

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/auth"
)

// captured is the header nats-server v2.15.2 stamped on alice's request in
// TestCalloutAliceRequestReplyAndEvents (go test -v -run Alice ./auth/).
const captured = `{"start":"2026-11-21T19:59:38.335962448Z","host":"127.0.0.1","id":10,"acc":"USERS","user":"alice","name":"alice-phone","lang":"go","ver":"1.55.0","rtt":586214,"server":"ringer-auth-test","issuer_key":"USERS","kind":"Client","client_type":"nats"}`

func TestRequestUser(t *testing.T) {
	h := nats.Header{}
	h.Set(auth.RequestInfoHeader, captured)
	info, ok := auth.ParseRequestInfo(h)
	want := auth.RequestInfo{Account: "USERS", User: "alice", Name: "alice-phone", ID: 10, Server: "ringer-auth-test", Kind: "Client"}
	if !ok || info != want {
		t.Fatalf("ParseRequestInfo = %+v, %v", info, ok)
	}
	if u, ok := auth.RequestUser(h); !ok || u != "alice" {
		t.Fatalf("RequestUser = %q, %v", u, ok)
	}

	for name, hdr := range map[string]nats.Header{
		"no header":  nil,
		"empty":      {},
		"other case": {"nats-request-info": {captured}},
		"repeated":   {auth.RequestInfoHeader: {captured, captured}},
		"not json":   {auth.RequestInfoHeader: {"alice"}},
		// without share: true only the account and rtt are stamped
		"no share": {auth.RequestInfoHeader: {`{"acc":"USERS","rtt":1000}`}},
		// a plain token user (not through Responder)
		"redacted": {auth.RequestInfoHeader: {`{"acc":"USERS","user":"[REDACTED]"}`}},
		"wildcard": {auth.RequestInfoHeader: {`{"acc":"USERS","user":"*"}`}},
	} {
		if u, ok := auth.RequestUser(hdr); ok {
			t.Errorf("%s: RequestUser = %q, true", name, u)
		}
	}
}
