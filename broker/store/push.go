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
	t.TTLMs = 0
	data, err := msgpack.Marshal(&t)
	if err != nil {
		return fmt.Errorf("store: encode push target: %w", err)
	}
	return s.putExpiring(ctx, subjects.PushKey(user, t.Device), data, ttl, "push target")
}

// DeletePushTarget removes device's push target (unregister).
func (s *Store) DeletePushTarget(ctx context.Context, user, device string) error {
	return s.deleteKey(ctx, subjects.PushKey(user, device), "push target delete")
}

// PushTargets returns user's registered push targets, in one JetStream round
// trip (a direct multi-get of push.<user>.*). On a replicated bucket a
// follower may answer: a registration made a moment ago can be missing.
func (s *Store) PushTargets(ctx context.Context, user string) ([]protocol.PushTarget, error) {
	var out []protocol.PushTarget
	_, err := s.multiLast(ctx, subjects.PushKeysOf(user), func(m *nats.Msg) error {
		var t protocol.PushTarget
		if err := msgpack.Unmarshal(m.Data, &t); err != nil {
			return fmt.Errorf("undecodable push target %s: %w", m.Header.Get(jetstream.SubjectHeader), err)
		}
		out = append(out, t)
		return nil
	})
	if errors.Is(err, ErrTooMany) {
		err = fmt.Errorf("more than %d push targets", maxSessionsAnswer)
	}
	if err != nil {
		return nil, fmt.Errorf("store: push targets of %s: %w", user, err)
	}
	return out, nil
}
