package auth

import (
	"encoding/json"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/subjects"
)

// RequestInfoHeader is the header nats-server stamps on a request that crosses
// a service import (server.ClientInfoHdr). With "share: true" on the import it
// describes the requester's connection in detail; the server replaces any
// value the client sent.
const RequestInfoHeader = "Nats-Request-Info"

// RequestInfo is the part of the header (nats-server's server.ClientInfo,
// JSON) Ringer uses.
type RequestInfo struct {
	// Account is the requester's account ("acc"), e.g. "USERS"; always present.
	Account string `json:"acc,omitempty"`
	// Service is the exporting account ("svc") when imports were chained.
	Service string `json:"svc,omitempty"`
	// User is the requester's authenticated user ("user"): for auth callout
	// users the name in the user JWT, which Responder sets to the Ringer user
	// id; "[REDACTED]" for a plain token user; absent without share: true.
	User string `json:"user,omitempty"`
	// Name is the connection name the CLIENT chose ("name"): not an identity.
	Name string `json:"name,omitempty"`
	// ID is the server's client id of the connection ("id").
	ID uint64 `json:"id,omitempty"`
	// Server is the name of the server the requester is connected to.
	Server string `json:"server,omitempty"`
	// Kind is "Client", "Leafnode", ... ("kind").
	Kind string `json:"kind,omitempty"`
}

// ParseRequestInfo decodes the Nats-Request-Info header. ok is false if the
// header is absent, repeated or not valid JSON.
func ParseRequestInfo(hdr nats.Header) (info RequestInfo, ok bool) {
	vals := hdr.Values(RequestInfoHeader)
	if len(vals) != 1 {
		return RequestInfo{}, false
	}
	if err := json.Unmarshal([]byte(vals[0]), &info); err != nil {
		return RequestInfo{}, false
	}
	return info, true
}

// RequestUser returns the authenticated Ringer user that sent a request, as
// stamped by the server: ok only if the header parses and its "user" is a
// valid Ringer id. It is meaningful only for requests that reached the broker
// through a "share: true" service import (secure mode); a client connected
// directly to the broker's account can write any header it likes.
func RequestUser(hdr nats.Header) (user string, ok bool) {
	info, ok := ParseRequestInfo(hdr)
	if !ok || subjects.ValidateID(info.User) != nil {
		return "", false
	}
	return info.User, true
}
