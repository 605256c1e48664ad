package client

import (
	"context"

	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// HistoryPage is one page of a user's history, newest first.
type HistoryPage struct {
	Calls []protocol.CallRecord
	// Next, passed as the cursor of the next call, continues with older
	// entries; "" when there are none.
	Next string
}

// History returns up to limit (0: 20, at most 100) of the user's finished
// invitations and calls, incoming and outgoing, newest first, older than
// cursor ("" for the newest). An invitation enters the history when it
// ends; a live one is in Sync.
func (c *Client) History(ctx context.Context, cursor string, limit int) (HistoryPage, error) {
	return c.history(ctx, cursor, limit, false)
}

// MissedCalls is History restricted to incoming invitations that never
// became a call (refused, busy, canceled, timed out, failed).
func (c *Client) MissedCalls(ctx context.Context, cursor string, limit int) (HistoryPage, error) {
	return c.history(ctx, cursor, limit, true)
}

func (c *Client) history(ctx context.Context, cursor string, limit int, missed bool) (HistoryPage, error) {
	rep, err := c.request(ctx, subjects.VerbHistory, &protocol.Request{Cursor: cursor, Limit: limit, Missed: missed})
	if err != nil {
		return HistoryPage{}, err
	}
	return HistoryPage{Calls: rep.Calls, Next: rep.Cursor}, nil
}
