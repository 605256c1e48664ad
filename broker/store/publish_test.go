package store

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// The acknowledgement shapes nats-server 2.15 sends (server/stream.go,
// PubAck and ApiError), read as nats.go reads them.
func TestParsePubAck(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    string
		seq     uint64
		errCode jetstream.ErrorCode // 0: no API error expected
		invalid bool
	}{
		{name: "plain", data: `{"stream":"KV_RINGER","seq":42}`, seq: 42},
		{name: "domain and duplicate", data: `{"stream":"KV_RINGER","domain":"hub","seq":18446744073709551615,"duplicate":true}`, seq: 18446744073709551615},
		{name: "seq first", data: `{"seq":7,"stream":"S"}`, seq: 7},
		{name: "batch", data: `{"stream":"S","seq":9,"batch":"b1","count":3}`, seq: 9},
		{name: "wrong last sequence",
			data:    `{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"},"stream":"KV_RINGER","seq":0}`,
			errCode: jetstream.JSErrCodeStreamWrongLastSequence},
		{name: "error before stream", data: `{"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}`, errCode: 10008},
		{name: "not json", data: `+OK`, invalid: true},
		{name: "no stream", data: `{"seq":3}`, invalid: true},
		{name: "empty", data: ``, invalid: true},
		{name: "seq not a number", data: `{"stream":"S","seq":"x"}`, invalid: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seq, err := parsePubAck([]byte(tc.data))
			switch {
			case tc.invalid:
				if !errors.Is(err, jetstream.ErrInvalidJSAck) {
					t.Fatalf("got %d, %v; want ErrInvalidJSAck", seq, err)
				}
			case tc.errCode != 0:
				var apiErr *jetstream.APIError
				if !errors.As(err, &apiErr) || apiErr.ErrorCode != tc.errCode {
					t.Fatalf("got %d, %v; want API error %d", seq, err, tc.errCode)
				}
			case err != nil || seq != tc.seq:
				t.Fatalf("got %d, %v; want %d", seq, err, tc.seq)
			}
		})
	}
}

// A conflict read by parsePubAck is still ErrConflict to the broker.
func TestParsedConflictMapsToErrConflict(t *testing.T) {
	_, err := parsePubAck([]byte(`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"}}`))
	if !errors.Is(mapPubErr(err, "inv.x"), ErrConflict) {
		t.Fatalf("%v is not ErrConflict", mapPubErr(err, "inv.x"))
	}
}
