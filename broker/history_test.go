package broker_test

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
)

// waitHistory waits until c's history (or missed calls) holds want
// entries, and returns them: a finished invitation enters the history
// right after its events are published.
func waitHistory(t *testing.T, c *ringertest.Client, want int, missed bool) []protocol.CallRecord {
	t.Helper()
	var calls []protocol.CallRecord
	natstest.Eventually(t, ringertest.Wait, func() error {
		read := c.History
		if missed {
			read = c.MissedCalls
		}
		page, err := read(ringertest.Ctx(t), "", protocol.MaxHistoryPage)
		if err != nil {
			return err
		}
		if calls = page.Calls; len(calls) != want {
			return fmt.Errorf("%s has %d history entries (missed only: %v), want %d", c.User(), len(calls), missed, want)
		}
		return nil
	})
	return calls
}

func TestHistoryListsCallsAndMissedCalls(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	bob := env.Login("bob", "phone")
	carol := env.Login("carol", "phone")
	ctx := ringertest.Ctx(t)

	// alice calls bob; bob hangs up.
	call := alice.Call(t, bob)
	bob.Rec.Wait(t, "RemoteAccepted "+call.ID)
	if err := bob.Hangup(ctx, call.ID); err != nil {
		t.Fatal(err)
	}
	alice.Rec.Wait(t, "CallEnded "+call.ID)
	// carol calls bob; bob refuses.
	refused := carol.Invite(t, "bob")
	if err := bob.Rec.WaitRemote(t, refused.ID).Refuse(ctx, "in a meeting"); err != nil {
		t.Fatal(err)
	}
	carol.Rec.Wait(t, "Refused "+refused.ID)

	got := waitHistory(t, bob, 2, false)
	if got[0].ID != refused.ID || got[1].ID != call.ID {
		t.Fatalf("bob's history is not newest first: %+v", got)
	}
	r := got[0]
	if r.Direction != protocol.Incoming || r.Peer != "carol" || r.State != protocol.StateRefused || !r.Missed || r.DurationMs != 0 {
		t.Fatalf("refused call in bob's history: %+v", r)
	}
	c := got[1]
	if c.Direction != protocol.Incoming || c.Peer != "alice" || c.State != protocol.StateAccepted || c.Missed ||
		c.Reason != protocol.ReasonHangup || c.EndedBy != "bob" || c.AnsweredAt == 0 ||
		c.DurationMs != c.EndedAt-c.AnsweredAt || c.CreatedAt > c.AnsweredAt {
		t.Fatalf("accepted call in bob's history: %+v", c)
	}
	mine := waitHistory(t, alice, 1, false)[0]
	if mine.Direction != protocol.Outgoing || mine.Peer != "bob" || mine.Missed || mine.DurationMs != c.DurationMs {
		t.Fatalf("the call in alice's history: %+v", mine)
	}
	if missed := waitHistory(t, bob, 1, true); missed[0].ID != refused.ID {
		t.Fatalf("bob's missed calls: %+v", missed)
	}
	// A caller's refused invitation is no missed call of the caller's.
	waitHistory(t, carol, 0, true)
	if o := waitHistory(t, carol, 1, false)[0]; o.Direction != protocol.Outgoing || o.Missed {
		t.Fatalf("carol's refused invitation: %+v", o)
	}
}

func TestHistoryHasEveryOutcome(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)

	canceled := alice.Invite(t, "bob")
	bob.Rec.WaitRemote(t, canceled.ID)
	if err := canceled.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	bob.Rec.Wait(t, "RemoteCanceled "+canceled.ID)
	if err := bob.SetBusy(ctx, true); err != nil {
		t.Fatal(err)
	}
	busy := alice.Invite(t, "bob")
	if err := bob.SetBusy(ctx, false); err != nil {
		t.Fatal(err)
	}
	offline := alice.Invite(t, "dave") // never logs in: PEER_OFFLINE after 2 s
	alice.Rec.Wait(t, "Failure "+offline.ID)

	want := map[string]protocol.CallRecord{
		canceled.ID: {State: protocol.StateCanceled, Missed: true},
		busy.ID:     {State: protocol.StateRefused, Reason: protocol.ReasonBusy, Missed: true},
	}
	for _, r := range waitHistory(t, bob, 2, true) {
		if w := want[r.ID]; r.State != w.State || r.Reason != w.Reason || !r.Missed || r.Peer != "alice" {
			t.Fatalf("bob's missed call %s: %+v, want %+v", r.ID, r, w)
		}
	}
	if r := waitHistory(t, alice, 3, false)[0]; r.ID != offline.ID || r.State != protocol.StateFailed || r.Reason != protocol.ReasonPeerOffline || r.Peer != "dave" {
		t.Fatalf("alice's newest entry: %+v", r)
	}
	if r := waitHistory(t, env.Login("dave", "phone"), 1, true)[0]; r.ID != offline.ID || r.Reason != protocol.ReasonPeerOffline {
		t.Fatalf("dave's missed call while offline: %+v", r)
	}
}

func TestHistoryPagesNewestFirst(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.HistorySize = 5 // the oldest of 7 go
	env := ringertest.Start(t, cfg)
	alice := env.Login("alice", "phone")
	env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)

	var ids []string
	for range 7 {
		li := alice.Invite(t, "bob")
		if err := li.Cancel(ctx); err != nil {
			t.Fatal(err)
		}
		alice.Rec.Wait(t, "Canceled "+li.ID)
		ids = append(ids, li.ID)
		// Its entry is in before the next call: past five entries the
		// count alone says nothing (the oldest go as new ones come).
		natstest.Eventually(t, ringertest.Wait, func() error {
			page, err := alice.History(ctx, "", 1)
			if err == nil && (len(page.Calls) == 0 || page.Calls[0].ID != li.ID) {
				err = fmt.Errorf("newest entry %+v, want %s", page.Calls, li.ID)
			}
			return err
		})
	}
	var got []string
	cursor, prev := "", uint64(1<<63)
	for pages := 0; ; pages++ {
		page, err := alice.History(ctx, cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Calls {
			seq, err := strconv.ParseUint(r.Cursor, 10, 64)
			if err != nil || seq >= prev {
				t.Fatalf("cursor %q after %d", r.Cursor, prev)
			}
			prev = seq
			got = append(got, r.ID)
		}
		if page.Next == "" {
			if pages != 2 || len(page.Calls) != 1 {
				t.Fatalf("last page %d has %d entries: %+v", pages, len(page.Calls), page)
			}
			break
		}
		if page.Next != page.Calls[len(page.Calls)-1].Cursor {
			t.Fatalf("next cursor %q is not the last entry's", page.Next)
		}
		cursor = page.Next
	}
	for i, id := range got {
		if want := ids[len(ids)-1-i]; id != want {
			t.Fatalf("entry %d is %s, want %s (history %v, sent %v)", i, id, want, got, ids)
		}
	}
}

func TestHistoryBadRequests(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	ctx := ringertest.Ctx(t)
	for _, tc := range []struct {
		cursor string
		limit  int
	}{
		{"", -1}, {"", protocol.MaxHistoryPage + 1}, {"abc", 0}, {"0", 0}, {"-5", 0},
		{"123456789012345678901", 0}, // longer than MaxCursorLen
	} {
		_, err := alice.History(ctx, tc.cursor, tc.limit)
		if !errors.Is(err, client.ErrInvalidArgument) {
			t.Errorf("history(cursor %q, limit %d): %v, want INVALID_ARGUMENT", tc.cursor, tc.limit, err)
		}
	}
	// An empty history is an empty page, not an error; so is a cursor past
	// everything.
	for _, cursor := range []string{"", "1"} {
		if page, err := alice.History(ctx, cursor, 0); err != nil || len(page.Calls) != 0 || page.Next != "" {
			t.Fatalf("empty history from %q: %+v, %v", cursor, page, err)
		}
	}
}

func TestHistoryCanBeTurnedOff(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.History = false
	env := ringertest.Start(t, cfg)
	alice := env.Login("alice", "phone")
	li := alice.Invite(t, "bob")
	if err := li.Cancel(ringertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	alice.Rec.Wait(t, "Canceled "+li.ID)
	if _, err := alice.History(ringertest.Ctx(t), "", 0); !errors.Is(err, client.ErrInvalidArgument) || !strings.Contains(err.Error(), "--history=false") {
		t.Fatalf("history with --history=false: %v", err)
	}
}
