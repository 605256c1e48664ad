package store

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// What a broker answers UNAVAILABLE (retry) rather than INTERNAL (a bug):
// every way the store can be out of reach for a moment. A request in flight
// when the connection drops (a broker leaving a frozen or cut-off server)
// fails with nats.ErrDisconnected; a chaos run answered two sends INTERNAL
// for it.
func TestTransient(t *testing.T) {
	for _, err := range []error{
		context.DeadlineExceeded, nats.ErrTimeout, nats.ErrNoResponders, nats.ErrConnectionClosed,
		nats.ErrConnectionReconnecting, nats.ErrDisconnected, jetstream.ErrNoStreamResponse, ErrConflict,
		&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"},
	} {
		if wrapped := fmt.Errorf("store: get inv.x: %w", err); !Transient(wrapped) {
			t.Errorf("%v: not transient", wrapped)
		}
	}
	for _, err := range []error{errors.New("decode: bad msgpack"), &jetstream.APIError{Code: 400, ErrorCode: 10071}} {
		if Transient(err) {
			t.Errorf("%v: transient", err)
		}
	}
}
