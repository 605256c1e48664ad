package journal

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

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
	// Unchecked is why the replica's answer could not be checked against
	// the stream leader (complete), which did not answer within
	// leaderWait: it may lack the newest entries. Nil when checked, or
	// when there is nothing to check against (a single replica).
	Unchecked error
}

// leaderWait bounds the check of a history read against the stream leader.
// A stream without a leader (no quorum; an election, 4–9 s) refuses it or
// leaves it unanswered, while its replicas still answer the direct get:
// their answer is served rather than an error or a read held to its
// deadline, and a later read (the SDK's catch-up repeats its reads for half
// a minute after a resync) is checked once the leader is back. Shorter than
// the SDK's probeAfter, so the reply comes before the client suspects its
// server.
const leaderWait = 500 * time.Millisecond

// Read returns up to limit entries of user's history older than cursor (""
// for the newest), only missed calls if missed. It costs one batched direct
// get of the user's subject (at most the history size in entries, whatever
// the number of users or of calls in the stream) and, on a replicated
// stream bound with BindHistory, one read of the subject's last entry
// through the stream leader (complete).
func (j *Journal) Read(ctx context.Context, user, cursor string, limit int, missed bool) (Page, error) {
	before := uint64(0) // 0: no bound
	if cursor != "" {
		n, err := strconv.ParseUint(cursor, 10, 64)
		if err != nil || n == 0 {
			return Page{}, fmt.Errorf("%w: %q", ErrBadCursor, cursor)
		}
		before = n
	}
	all, unchecked, err := j.entries(ctx, user)
	if err != nil {
		return Page{}, err
	}
	page := Page{Unchecked: unchecked}
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
// stream sequence as cursor; unchecked is why they could not be checked
// against the leader (Page.Unchecked).
func (j *Journal) entries(ctx context.Context, user string) (out []protocol.CallRecord, unchecked, err error) {
	req := store.DirectRequest{NextBySubj: subjects.History(user), Batch: j.size, MaxBytes: 4 << 20}
	_, err = store.DirectBatch(ctx, j.nc, j.js, subjects.HistoryStream, req, func(m *nats.Msg) error {
		e, err := entryOf(m.Data, m.Header.Get(jetstream.SequenceHeader))
		out = append(out, e)
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("journal: history of %s: %w", user, err)
	}
	if j.testHookAfterDirect != nil {
		j.testHookAfterDirect()
	}
	if j.historyLeader != nil {
		lctx, cancel := context.WithTimeout(ctx, leaderWait)
		full, cerr := j.complete(lctx, user, out)
		cancel()
		if cerr != nil {
			return out, fmt.Errorf("journal: history of %s: the stream leader: %w", user, cerr), nil
		}
		out = full
	}
	return out, nil, nil
}

// entryOf decodes one history entry stored at stream sequence seq.
func entryOf(data []byte, seq string) (protocol.CallRecord, error) {
	var e protocol.CallRecord
	if err := msgpack.Unmarshal(data, &e); err != nil {
		return e, fmt.Errorf("undecodable entry: %w", err)
	}
	e.Cursor = seq
	return e, nil
}

// complete checks entries, user's history as a replica answered it, against
// the stream leader, and adds what the leader holds past the replica's last
// entry. Any replica answers a direct get, and one on a server that a
// network partition cut off keeps answering with what it had, for as long as
// the partition and its catching up last (docs/architecture.md, "Reads"):
// without this, a call that ended meanwhile would be missing from the
// history, and from the SDK's catch-up after a resync, for all that time.
// When the replica is current it costs one leader read of the subject's last
// entry; when it lags, one more per missing entry (at most the history size).
func (j *Journal) complete(ctx context.Context, user string, entries []protocol.CallRecord) ([]protocol.CallRecord, error) {
	subj := subjects.History(user)
	last, err := j.historyLeader.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil // the leader's word: every entry aged out (the replica's are on their way out)
	}
	if err != nil {
		return nil, err
	}
	have := uint64(0)
	if n := len(entries); n > 0 {
		have, _ = strconv.ParseUint(entries[n-1].Cursor, 10, 64)
	}
	if last.Sequence <= have {
		return entries, nil
	}
	// From the oldest entry the leader holds after the replica's last, up
	// to the last one, which is in hand.
	for seq, reads := have+1, 0; seq < last.Sequence && reads < j.size; reads++ {
		m, err := j.historyLeader.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if err != nil {
			return nil, err
		}
		if m.Sequence >= last.Sequence {
			break
		}
		e, err := entryOf(m.Data, strconv.FormatUint(m.Sequence, 10))
		if err != nil {
			return nil, err
		}
		entries, seq = append(entries, e), m.Sequence+1
	}
	e, err := entryOf(last.Data, strconv.FormatUint(last.Sequence, 10))
	if err != nil {
		return nil, err
	}
	entries = append(entries, e)
	if len(entries) > j.size { // the leader dropped the replica's oldest meanwhile
		entries = entries[len(entries)-j.size:]
	}
	return entries, nil
}
