package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrTooMany: more messages match a batched direct get than it answers.
var ErrTooMany = errors.New("store: too many messages for one direct get")

// DirectRequest is a batched direct get (ADR-31): the newest message of
// each subject MultiLast matches, or the messages of NextBySubj from the
// stream's start; at most Batch of them (and MaxBytes, if set).
type DirectRequest struct {
	MultiLast  []string `json:"multi_last,omitempty"`
	NextBySubj string   `json:"next_by_subj,omitempty"`
	Batch      int      `json:"batch"`
	MaxBytes   int      `json:"max_bytes,omitempty"`
}

// DirectBatch makes the direct get req on stream, and each sees every
// message of the answer in order. It returns the last stream sequence the
// answering replica had (0 when nothing matched: a 404 is an empty answer,
// not an error); ErrTooMany for a 413, nats.ErrNoResponders for a 503.
//
// Any replica answers, and one on a NATS node that hangs does not: an
// attempt that has had no answer at all after replicaWait is made again
// (another replica, most likely) for as long as ctx allows.
func DirectBatch(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, stream string, req DirectRequest, each func(*nats.Msg) error) (upTo uint64, err error) {
	body, err := json.Marshal(req)
	if err != nil {
		return 0, err
	}
	for {
		upTo, answered, err := directBatch(ctx, nc, js, stream, body, req.Batch, each)
		if answered || !errors.Is(err, errNoAnswer) {
			return upTo, err
		}
	}
}

// errNoAnswer: an attempt of DirectBatch had no answer within replicaWait.
var errNoAnswer = errors.New("store: no answer from a replica")

// directBatch is one attempt of DirectBatch; answered reports whether any
// of the answer came (then it is not made again: each saw part of it).
//
// The answer arrives on a channel that holds all of it (batch messages and
// the end): a synchronous subscription would allocate nats.go's default
// 65 536-message channel, 512 KiB, for every look-up of a user's sessions —
// most of the garbage a call made at R3 (docs/benchmarks.md).
func directBatch(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, stream string, body []byte, batch int, each func(*nats.Msg) error) (upTo uint64, answered bool, err error) {
	inbox := nc.NewRespInbox()
	answer := make(chan *nats.Msg, batch+1)
	sub, err := nc.ChanSubscribe(inbox, answer)
	if err != nil {
		return 0, false, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(directGet(js, stream), inbox, body); err != nil {
		return 0, false, err
	}
	first := time.NewTimer(replicaWait) // for the first message of the answer
	defer first.Stop()
	for {
		var m *nats.Msg
		select {
		case m = <-answer:
		case <-first.C:
			if !answered {
				return 0, false, errNoAnswer
			}
			continue
		case <-ctx.Done():
			return 0, answered, ctx.Err()
		}
		answered = true
		if status := m.Header.Get("Status"); len(m.Data) == 0 && status != "" {
			switch status {
			case "204": // end of the answer
				upTo, _ := strconv.ParseUint(m.Header.Get("Nats-UpTo-Sequence"), 10, 64)
				return upTo, true, nil
			case "404": // nothing matched
				return 0, true, nil
			case "413":
				return 0, true, ErrTooMany
			case "503":
				return 0, true, nats.ErrNoResponders
			default:
				return 0, true, fmt.Errorf("status %s %s", status, m.Header.Get("Description"))
			}
		}
		if err := each(m); err != nil {
			return 0, true, err
		}
	}
}

// BindLeader returns a handle on stream whose message gets go to the
// stream leader (STREAM.MSG.GET), never to a replica's direct get: the
// reads that must not be stale.
func BindLeader(ctx context.Context, js jetstream.JetStream, stream string) (jetstream.Stream, error) {
	leader, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("store: bind stream %s: %w", stream, err)
	}
	leader.CachedInfo().Config.AllowDirect = false
	return leader, nil
}

// directGet is the subject of the stream's direct get API.
func directGet(js jetstream.JetStream, stream string) string {
	prefix := js.Options().APIPrefix
	if prefix == "" {
		prefix = jetstream.DefaultAPIPrefix
	}
	return prefix + "DIRECT.GET." + stream
}
