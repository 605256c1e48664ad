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

	"github.com/ringer-dev/ringer/subjects"
)

// ErrStale: the replica that answered a read had not yet applied a change
// the caller knows of; ask again.
var ErrStale = errors.New("store: stale read")

// errTooMany: more keys match than a multi-get answers.
var errTooMany = errors.New("store: too many keys for one multi-get")

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
		case errors.Is(gerr, errTooMany):
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
	upTo, err = s.multiLast(ctx, subjects.KVSubject(subjects.SessionKeysOf(user)), func(m *nats.Msg) error {
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
// key matching filter: each live value goes to each (deleted and expired
// keys are skipped), and upTo is the last stream sequence the answering
// replica had (0 when it found no key at all).
func (s *Store) multiLast(ctx context.Context, filter string, each func(*nats.Msg) error) (upTo uint64, err error) {
	s.stats.reads.Add(1)
	req, _ := json.Marshal(struct {
		MultiLast []string `json:"multi_last"`
		Batch     int      `json:"batch"`
	}{[]string{filter}, maxSessionsAnswer})
	inbox := s.nc.NewRespInbox()
	sub, err := s.nc.SubscribeSync(inbox)
	if err != nil {
		return 0, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := s.nc.PublishRequest(directGet(s.js, subjects.BucketStream), inbox, req); err != nil {
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
			case "404": // no key at all
				return 0, nil
			case "413":
				return 0, errTooMany
			case "503":
				return 0, nats.ErrNoResponders
			default:
				return 0, fmt.Errorf("status %s %s", status, m.Header.Get("Description"))
			}
		}
		if m.Header.Get("KV-Operation") == "" && m.Header.Get("Nats-Marker-Reason") == "" {
			if err := each(m); err != nil {
				return 0, err
			}
		}
	}
}

// sessionsListed lists user's live sessions with a key listing (an ordered
// consumer, fed by the stream leader): O(devices) and a consumer's creation,
// so only where a multi-get cannot prove it is current.
func (s *Store) sessionsListed(ctx context.Context, user string) ([]string, error) {
	s.stats.reads.Add(1)
	lister, err := s.kv.ListKeysFiltered(ctx, subjects.SessionKeysOf(user))
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

// directGet is the subject of the stream's direct get API.
func directGet(js jetstream.JetStream, stream string) string {
	prefix := js.Options().APIPrefix
	if prefix == "" {
		prefix = jetstream.DefaultAPIPrefix
	}
	return prefix + "DIRECT.GET." + stream
}
