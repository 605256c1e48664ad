package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/subjects"
)

// ErrStale: the replica that answered a read had not yet applied a change
// the caller knows of; ask again.
var ErrStale = errors.New("store: stale read")

// maxSessionsAnswer bounds one Sessions answer: JetStream's multi-get
// serves at most 1024 subjects, and a user's devices are capped far below.
const maxSessionsAnswer = 1024

// Sessions returns the devices of user that have a live session, in one
// JetStream round trip however many devices the user has (a direct
// multi-get of the last message of each sess.<user>.* key, ADR-31): login
// counts them against the device cap, the presence consumer asks whether
// any is left.
//
// A direct get may be served by a follower that lags. With seen > 0 (the
// stream sequence of the presence event being handled) the answer must
// come from a replica that has applied it: one whose last sequence is
// older answers ErrStale after a few quick retries. Every change after it
// has a presence event of its own, handled later, so no decision rests on
// a view older than the event that asked for it. On a single server every
// answer is current.
func (s *Store) Sessions(ctx context.Context, user string, seen uint64) ([]string, error) {
	if !s.Replicated() {
		seen = 0
	}
	var err error
	for attempt, silent := 0, 0; attempt < 4; attempt++ {
		if err != nil { // a stale answer, or no responders: ask again shortly
			wait := time.Duration(attempt) * 20 * time.Millisecond
			if errors.Is(err, nats.ErrNoResponders) {
				wait = jetstream.DefaultPubRetryWait
			}
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		live, upTo, gerr := s.sessions(ctx, user)
		switch {
		case errors.Is(gerr, nats.ErrNoResponders) && silent < jetstream.DefaultPubRetryAttempts:
			// A stream between leaders, or whose replicas have not set up
			// their direct gets yet (a cluster that has just started),
			// answers no one for a moment: as publish does, ask again.
			silent++
			attempt--
			err = gerr
			continue
		case errors.Is(gerr, ErrTooMany):
			// More session keys than one multi-get answers (devices past
			// the cap, logged in by racing logins): list them.
			return s.sessionsListed(ctx, user)
		case gerr != nil:
			return nil, gerr
		case upTo >= seen:
			return live, nil
		case upTo == 0 && attempt == 3:
			// No session key at all, on a replica that cannot say how far
			// it got: list the keys through the stream leader instead.
			return s.sessionsListed(ctx, user)
		}
		err = ErrStale
	}
	return nil, err
}

// sessions is one multi-get: the live devices, and the last stream
// sequence the answering replica had (0 when it found no key at all).
func (s *Store) sessions(ctx context.Context, user string) (live []string, upTo uint64, err error) {
	upTo, err = s.multiLast(ctx, subjects.SessionKeysOf(user), func(m *nats.Msg) error {
		_, device, err := subjects.ParseSessionSubject(m.Header.Get(jetstream.SubjectHeader))
		if err != nil {
			return err
		}
		live = append(live, device)
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("store: sessions of %s: %w", user, err)
	}
	return live, upTo, nil
}

// multiLast is one direct multi-get (ADR-31) of the newest message of every
// key matching keys (a filter of one user's keys, so of one partition):
// each live value goes to each (deleted and expired keys are skipped), and
// upTo is the last stream sequence the answering replica had (0 when it
// found no key at all).
func (s *Store) multiLast(ctx context.Context, keys string, each func(*nats.Msg) error) (upTo uint64, err error) {
	s.stats.reads.Add(1)
	p := s.partOf(keys).p
	return s.lastValues(ctx, p, []string{p.KVSubject(keys)}, maxSessionsAnswer, each)
}

// lastValues is one direct multi-get (ADR-31) on partition p's bucket of
// the newest message of every subject matching subjs, at most batch of
// them: each live value goes to each (deleted and expired keys are
// skipped); upTo as DirectBatch's.
func (s *Store) lastValues(ctx context.Context, p subjects.Partition, subjs []string, batch int, each func(*nats.Msg) error) (upTo uint64, err error) {
	return DirectBatch(ctx, s.nc, s.js, p.BucketStream(), DirectRequest{MultiLast: subjs, Batch: batch}, func(m *nats.Msg) error {
		if m.Header.Get("KV-Operation") != "" || m.Header.Get("Nats-Marker-Reason") != "" {
			return nil
		}
		return each(m)
	})
}

// sessionsListed lists user's live sessions with a key listing (an ordered
// consumer, fed by the stream leader): O(devices) and a consumer's creation,
// so only where a multi-get cannot prove it is current.
func (s *Store) sessionsListed(ctx context.Context, user string) ([]string, error) {
	s.stats.reads.Add(1)
	keys := subjects.SessionKeysOf(user)
	lister, err := s.partOf(keys).kv.ListKeysFiltered(ctx, keys)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("store: list sessions: %w", err)
	}
	defer lister.Stop()
	var live []string
	for key := range lister.Keys() {
		if _, device, err := subjects.ParseSessionKey(key); err == nil {
			live = append(live, device)
		}
	}
	return live, nil
}
