package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// markerTTL is how long the delete marker of an unregistered device stays
// (the brokers use the same for theirs).
const markerTTL = 10 * time.Minute

// unregister removes user's push target for d.Device from Ringer's bucket,
// if it still holds the dead token: a device that registered a new token
// since keeps it (compare-and-set on the key's revision).
func (g *gateway) unregister(ctx context.Context, user string, d protocol.PushTarget) error {
	n, err := store.Layout(ctx, g.js)
	if err != nil {
		return err
	}
	key := subjects.PushKey(user, d.Device)
	kv, err := g.js.KeyValue(ctx, subjects.PartitionOf(key, n).Bucket())
	if err != nil {
		return err
	}
	entry, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var cur protocol.PushTarget
	if err := msgpack.Unmarshal(entry.Value(), &cur); err != nil {
		return fmt.Errorf("push target %s: %w", key, err)
	}
	if cur.Token != d.Token {
		return nil // re-registered with another token meanwhile
	}
	err = kv.Purge(ctx, key, jetstream.LastRevision(entry.Revision()), jetstream.PurgeTTL(markerTTL))
	if err == nil {
		g.unregistered.Inc()
	}
	return err
}
