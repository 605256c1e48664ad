package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/ringer-dev/ringer/subjects"
)

// Watermarks is what a broker instance keeps in partition 0's bucket under
// proj.<instance> while it commits invitation revisions: per partition,
// the bucket sequence up to which every revision it wrote is projected
// (events published, timer armed, push, history and export done). A peer
// that sees them stop changing replays the rest (Store.Replay).
type Watermarks struct {
	Parts []uint64 `msgpack:"parts"`
	// Claim is the instance of a peer replaying them, its owner gone.
	Claim string `msgpack:"claim,omitempty"`
}

// WatermarksEntry is one instance's watermarks as read or watched, with
// the revision to compare-and-set them on.
type WatermarksEntry struct {
	Instance string
	Marks    Watermarks
	Revision uint64
	Deleted  bool
}

// The watermarks' reads and writes (a few a second per broker, none per
// invitation) are not counted in Stats, the KV budget per invitation.

// PutWatermarks writes instance's watermarks: created if expect is 0, else
// compare-and-set on revision expect (ErrConflict when it moved).
func (s *Store) PutWatermarks(ctx context.Context, instance string, w Watermarks, expect uint64) (uint64, error) {
	data, err := msgpack.Marshal(&w)
	if err != nil {
		return 0, err
	}
	kv, key := s.parts[0].kv, subjects.WatermarksKey(instance)
	var rev uint64
	if expect == 0 {
		rev, err = kv.Create(ctx, key, data)
	} else {
		rev, err = kv.Update(ctx, key, data, expect)
	}
	return rev, mapKVErr(err, key)
}

// DeleteWatermarks deletes instance's watermarks if they are still at
// revision expect (ErrConflict when they moved).
func (s *Store) DeleteWatermarks(ctx context.Context, instance string, expect uint64) error {
	key := subjects.WatermarksKey(instance)
	return mapKVErr(s.parts[0].kv.Delete(ctx, key, jetstream.LastRevision(expect)), key)
}

// GetWatermarks reads instance's watermarks from the stream leader.
func (s *Store) GetWatermarks(ctx context.Context, instance string) (WatermarksEntry, error) {
	key := subjects.WatermarksKey(instance)
	e := WatermarksEntry{Instance: instance}
	m, err := s.parts[0].leader.GetLastMsgForSubject(ctx, s.parts[0].p.KVSubject(key))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return e, ErrNotFound
	case err != nil:
		return e, fmt.Errorf("store: get %s: %w", key, err)
	}
	e.Revision = m.Sequence
	if m.Header.Get("KV-Operation") != "" || len(m.Data) == 0 {
		e.Deleted = true
		return e, nil
	}
	return e, msgpack.Unmarshal(m.Data, &e.Marks)
}

// WatchWatermarks calls f with every instance's watermarks, as they are
// and then as they change, until ctx ends or the watch fails.
func (s *Store) WatchWatermarks(ctx context.Context, f func(WatermarksEntry)) error {
	w, err := s.parts[0].kv.Watch(ctx, subjects.AllWatermarks())
	if err != nil {
		return fmt.Errorf("store: watch watermarks: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-w.Updates():
			if !ok {
				return errors.New("store: watch watermarks: closed")
			}
			if u == nil {
				continue // the initial values are in
			}
			e := WatermarksEntry{Instance: strings.TrimPrefix(u.Key(), subjects.WatermarksKey("")), Revision: u.Revision()}
			if u.Operation() != jetstream.KeyValuePut {
				e.Deleted = true
			} else if err := msgpack.Unmarshal(u.Value(), &e.Marks); err != nil {
				continue // not ours to read
			}
			f(e)
		}
	}
}

// mapKVErr maps a KV write's error to the store's sentinels.
func mapKVErr(err error, key string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jetstream.ErrKeyExists):
		return fmt.Errorf("%w: %s exists", ErrConflict, key)
	}
	return mapPubErr(err, key)
}
