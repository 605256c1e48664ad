package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrTooMany: more messages match a batched direct get than it answers.
var ErrTooMany = errors.New("store: too many messages for one direct get")

// DirectBatch is one batched direct get (ADR-31) on stream: req is the
// request (multi_last, or next_by_subj with batch), each sees every message
// of the answer in order. It returns the last stream sequence the answering
// replica had (0 when nothing matched: a 404 is an empty answer, not an
// error); ErrTooMany for a 413, nats.ErrNoResponders for a 503.
func DirectBatch(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, stream string, req any, each func(*nats.Msg) error) (upTo uint64, err error) {
	body, err := json.Marshal(req)
	if err != nil {
		return 0, err
	}
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return 0, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(directGet(js, stream), inbox, body); err != nil {
		return 0, err
	}
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return 0, err
		}
		if status := m.Header.Get("Status"); len(m.Data) == 0 && status != "" {
			switch status {
			case "204": // end of the answer
				upTo, _ := strconv.ParseUint(m.Header.Get("Nats-UpTo-Sequence"), 10, 64)
				return upTo, nil
			case "404": // nothing matched
				return 0, nil
			case "413":
				return 0, ErrTooMany
			case "503":
				return 0, nats.ErrNoResponders
			default:
				return 0, fmt.Errorf("status %s %s", status, m.Header.Get("Description"))
			}
		}
		if err := each(m); err != nil {
			return 0, err
		}
	}
}

// directGet is the subject of the stream's direct get API.
func directGet(js jetstream.JetStream, stream string) string {
	prefix := js.Options().APIPrefix
	if prefix == "" {
		prefix = jetstream.DefaultAPIPrefix
	}
	return prefix + "DIRECT.GET." + stream
}
