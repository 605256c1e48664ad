package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// PutPushTarget stores device's push target for ttl (whole seconds,
// rounded up), replacing any it had.
func (s *Store) PutPushTarget(ctx context.Context, user string, t protocol.PushTarget, ttl time.Duration) error {
	m := nats.NewMsg(subjects.KVSubject(subjects.PushKey(user, t.Device)))
	m.Header.Set(jetstream.MsgTTLHeader, ttlHeader(ttl))
	t.TTLMs = 0
	var err error
	if m.Data, err = msgpack.Marshal(&t); err != nil {
		return fmt.Errorf("store: encode push target: %w", err)
	}
	s.stats.writes.Add(1)
	if _, err := s.publish(ctx, m); err != nil {
		return mapPubErr(err, "push target")
	}
	return nil
}

// DeletePushTarget removes device's push target (unregister).
func (s *Store) DeletePushTarget(ctx context.Context, user, device string) error {
	m := nats.NewMsg(subjects.KVSubject(subjects.PushKey(user, device)))
	m.Header.Set("KV-Operation", "DEL")
	m.Header.Set(jetstream.MsgTTLHeader, ttlHeader(markerTTL))
	s.stats.writes.Add(1)
	if _, err := s.publish(ctx, m); err != nil {
		return mapPubErr(err, "push target delete")
	}
	return nil
}

// PushTargets returns user's registered push targets, in one JetStream round
// trip (a direct multi-get of push.<user>.*). On a replicated bucket a
// follower may answer: a registration made a moment ago can be missing.
func (s *Store) PushTargets(ctx context.Context, user string) ([]protocol.PushTarget, error) {
	var out []protocol.PushTarget
	_, err := s.multiLast(ctx, subjects.KVSubject(subjects.PushKeysOf(user)), func(m *nats.Msg) error {
		var t protocol.PushTarget
		if err := msgpack.Unmarshal(m.Data, &t); err != nil {
			return fmt.Errorf("undecodable push target %s: %w", m.Header.Get(jetstream.SubjectHeader), err)
		}
		out = append(out, t)
		return nil
	})
	if errors.Is(err, errTooMany) {
		err = fmt.Errorf("more than %d push targets", maxSessionsAnswer)
	}
	if err != nil {
		return nil, fmt.Errorf("store: push targets of %s: %w", user, err)
	}
	return out, nil
}
