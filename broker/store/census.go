package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// Census is a snapshot of the live state of every partition (Store.Census).
type Census struct {
	// Lines: users with a line record (a claim, held or not yet dropped;
	// the manual busy flag; push targets; blocked callers).
	Lines int
	// Invitations: live invitations that are not a call yet (sent, ringing,
	// being accepted).
	Invitations int
	// Calls: accepted invitations whose call has not ended.
	Calls int
	// Overdue: live invitations and calls more than the census's overdue
	// past their deadline, which their timer should have resolved.
	Overdue int
	// Timers: armed timers not yet handled (PendingTimers).
	Timers uint64
}

// censusChunk is how many invitations one multi-get of a census asks for:
// JetStream answers at most 1024 subjects, and stops early past its
// max_pending bytes (64 MB by default); 256 records of the largest size
// (a group invitation, tens of KB) stay well below both.
const censusChunk = 256

// Census counts the live invitations and calls, cluster-wide, and those
// more than overdue past their deadline, with the line records and pending
// timers. A live invitation always holds a claim on a line — its caller's
// (written before it), or while a JOIN call goes on without its caller,
// its joined callees' — and claims of live invitations are never dropped
// (Holding), so it reads every line record (an ordered consumer per
// partition) and then the invitation of every distinct claim (multi-gets of
// censusChunk, as lastValues; a deleted or expired one is not live). Direct gets may be served by a follower a moment behind:
// a snapshot, not a decision. O(users with a line) per call: meant for a
// periodic gauge, not a hot path; not counted in Stats, which are per
// invitation.
func (s *Store) Census(ctx context.Context, now time.Time, overdue time.Duration) (Census, error) {
	var c Census
	ids := map[string]struct{}{}
	for _, pt := range s.parts {
		n, err := claimedIn(ctx, pt.kv, ids)
		if err != nil {
			return Census{}, fmt.Errorf("store: census of %s: %w", pt.p.Bucket(), err)
		}
		c.Lines += n
	}
	byPart := make([][]string, len(s.parts))
	for id := range ids {
		key := subjects.InvitationKey(id)
		i := subjects.PartitionOf(key, len(s.parts))
		byPart[i] = append(byPart[i], s.parts[i].p.KVSubject(key))
	}
	due := now.Add(-overdue).UnixMilli()
	for i, subjs := range byPart {
		p := s.parts[i].p
		for len(subjs) > 0 {
			chunk := subjs[:min(censusChunk, len(subjs))]
			subjs = subjs[len(chunk):]
			_, err := s.lastValues(ctx, p, chunk, len(chunk), func(m *nats.Msg) error {
				var r lifecycle.Record
				if err := msgpack.Unmarshal(m.Data, &r); err != nil {
					return fmt.Errorf("decode %s: %w", m.Header.Get(jetstream.SubjectHeader), err)
				}
				c.count(&r, due)
				return nil
			})
			if err != nil {
				return Census{}, fmt.Errorf("store: census of %s: %w", p.Bucket(), err)
			}
		}
	}
	t, err := s.PendingTimers(ctx)
	if err != nil {
		return Census{}, err
	}
	c.Timers = t
	return c, nil
}

// count adds r to the census; due is the deadline (Unix ms) at or before
// which a live record is overdue.
func (c *Census) count(r *lifecycle.Record, due int64) {
	if !r.Live() {
		return
	}
	if r.State == protocol.StateAccepted {
		c.Calls++
	} else {
		c.Invitations++
	}
	if r.Deadline != 0 && r.Deadline <= due {
		c.Overdue++
	}
}

// claimedIn adds the invitation ids claimed on kv's line records to ids and
// returns how many line records it read.
func claimedIn(ctx context.Context, kv jetstream.KeyValue, ids map[string]struct{}) (int, error) {
	w, err := kv.WatchFiltered(ctx, []string{subjects.LineKey("*")}, jetstream.IgnoreDeletes())
	if err != nil {
		return 0, err
	}
	defer func() { _ = w.Stop() }()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return 0, errors.New("line watch closed")
			}
			if e == nil {
				return n, nil // every line record as of the watch's start
			}
			var l Line
			if err := msgpack.Unmarshal(e.Value(), &l); err != nil {
				return 0, fmt.Errorf("decode line %s: %w", e.Key(), err)
			}
			n++
			for _, cl := range l.Claims {
				ids[cl.ID] = struct{}{}
			}
		}
	}
}
