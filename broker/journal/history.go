package journal

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// ErrBadCursor: a history cursor that no history entry ever carried.
var ErrBadCursor = errors.New("journal: malformed cursor")

// Append writes inv, which has just finished, into the history of each of
// users (its parties): the writes in flight together. Each entry's message
// id is <id>.<user>, so a projector that redoes this after a crash writes
// nothing new.
func (j *Journal) Append(ctx context.Context, inv *protocol.Invitation, users ...string) error {
	futures := make([]jetstream.PubAckFuture, len(users))
	for i, user := range users {
		rec := protocol.CallRecordOf(inv, user)
		data, err := msgpack.Marshal(&rec)
		if err != nil {
			return fmt.Errorf("journal: encode history entry: %w", err)
		}
		m := nats.NewMsg(subjects.History(user))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, inv.ID+"."+user)
		if futures[i], err = j.js.PublishMsgAsync(m); err != nil {
			return fmt.Errorf("journal: history of %s: %w", user, err)
		}
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("journal: history entry of %s: %w", inv.ID, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Page is one history read.
type Page struct {
	Calls []protocol.CallRecord // newest first
	Next  string                // cursor of the next, older, page; "" if none
}

// Read returns up to limit entries of user's history older than cursor (""
// for the newest), only missed calls if missed. It costs one batched direct
// get of the user's subject: at most the history size in entries, whatever
// the number of users or of calls in the stream. On a replicated stream a
// follower may answer, so an invitation that finished a moment ago can be
// missing for that moment.
func (j *Journal) Read(ctx context.Context, user, cursor string, limit int, missed bool) (Page, error) {
	before := uint64(0) // 0: no bound
	if cursor != "" {
		n, err := strconv.ParseUint(cursor, 10, 64)
		if err != nil || n == 0 {
			return Page{}, fmt.Errorf("%w: %q", ErrBadCursor, cursor)
		}
		before = n
	}
	all, err := j.entries(ctx, user)
	if err != nil {
		return Page{}, err
	}
	var page Page
	for _, e := range slices.Backward(all) {
		seq, _ := strconv.ParseUint(e.Cursor, 10, 64)
		if (before != 0 && seq >= before) || (missed && !e.Missed) {
			continue
		}
		if len(page.Calls) == limit {
			page.Next = page.Calls[limit-1].Cursor
			break
		}
		page.Calls = append(page.Calls, e)
	}
	return page, nil
}

// entries reads every entry of user's history, oldest first, each with its
// stream sequence as cursor.
func (j *Journal) entries(ctx context.Context, user string) ([]protocol.CallRecord, error) {
	req := struct {
		NextFor  string `json:"next_by_subj"`
		Batch    int    `json:"batch"`
		MaxBytes int    `json:"max_bytes"`
	}{subjects.History(user), j.size, 4 << 20}
	var out []protocol.CallRecord
	_, err := store.DirectBatch(ctx, j.nc, j.js, subjects.HistoryStream, req, func(m *nats.Msg) error {
		var e protocol.CallRecord
		if err := msgpack.Unmarshal(m.Data, &e); err != nil {
			return fmt.Errorf("undecodable entry: %w", err)
		}
		e.Cursor = m.Header.Get(jetstream.SequenceHeader)
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("journal: history of %s: %w", user, err)
	}
	return out, nil
}
