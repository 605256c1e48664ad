package client

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/protocol"
)

// Events are core NATS messages: a device that is disconnected when one is
// published never sees it. So after every reconnect each client resyncs. One
// connection may carry many clients (and the app's own reconnect handler), so
// the handler is installed once per connection and fans out.
var (
	fanoutMu sync.Mutex
	fanouts  = map[*nats.Conn]*fanout{}
)

type fanout struct {
	lv                       liveness
	clients                  map[*Client]bool
	prevReconnect, prevClose nats.ConnHandler
	prevDisconnect           nats.ConnErrHandler
}

// members returns the clients on the connection.
func (f *fanout) members() []*Client {
	fanoutMu.Lock()
	defer fanoutMu.Unlock()
	cs := make([]*Client, 0, len(f.clients))
	for cl := range f.clients {
		cs = append(cs, cl)
	}
	return cs
}

// watchReconnects installs, once per connection, the handlers that tell
// each client on it that the connection dropped, came back (resync) or
// closed; the app's own handlers keep running first.
func watchReconnects(c *Client) {
	fanoutMu.Lock()
	defer fanoutMu.Unlock()
	f := fanouts[c.nc]
	if f == nil {
		nc := c.nc
		f = &fanout{clients: map[*Client]bool{}, prevReconnect: nc.Opts.ReconnectedCB,
			prevDisconnect: nc.Opts.DisconnectedErrCB, prevClose: nc.Opts.ClosedCB}
		fanouts[nc] = f
		nc.SetReconnectHandler(func(conn *nats.Conn) {
			if f.prevReconnect != nil {
				f.prevReconnect(conn)
			}
			for _, cl := range f.members() {
				cl.setConnection(ConnectionConnected, ConnectionChangeLoginSuccess, ConnectionReconnecting)
				cl.resyncInBackground()
			}
		})
		nc.SetDisconnectErrHandler(func(conn *nats.Conn, err error) {
			f.lv.dropped()
			if f.prevDisconnect != nil {
				f.prevDisconnect(conn, err)
			}
			for _, cl := range f.members() {
				// Events for it are lost until the resync after the
				// reconnect: owe one now, so that no heartbeat that gets
				// through first counts the client as hearing everything.
				cl.resyncDue.Store(true)
				cl.setConnection(ConnectionReconnecting, ConnectionChangeInterrupted, ConnectionConnected)
			}
		})
		nc.SetClosedHandler(func(conn *nats.Conn) {
			if f.prevClose != nil {
				f.prevClose(conn)
			}
			for _, cl := range f.members() {
				cl.setConnection(ConnectionAborted, ConnectionChangeClosed, ConnectionConnected, ConnectionReconnecting)
			}
		})
	}
	f.clients[c] = true
	c.lv.Store(&f.lv)
}

func unwatchReconnects(c *Client) {
	fanoutMu.Lock()
	defer fanoutMu.Unlock()
	if f := fanouts[c.nc]; f != nil {
		delete(f.clients, c)
	}
}

func (c *Client) resyncInBackground() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.bg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.bg.Done()
		ctx, cancel := c.background(4 * DefaultTimeout)
		defer cancel()
		if err := c.Resync(ctx); err != nil {
			c.resyncDue.Store(true) // the heartbeats try again
		}
	}()
}

// background is a context for the client's own work: it ends after d, or
// when the client is closed.
func (c *Client) background(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	go func() {
		select {
		case <-c.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// Resync recovers whatever the device missed (it runs by itself after every
// reconnect): every live invitation and call, the final state of any
// invitation this client still believed live that has since ended, and
// (catchUp) the final state of incoming invitations that rang and ended
// while the client could not hear of them.
func (c *Client) Resync(ctx context.Context) error {
	c.resyncing.Add(1)
	defer c.resyncing.Add(-1)
	started, aware := time.Now(), c.aware.Load() // deaf since about then
	live, err := c.Sync(ctx)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, inv := range live {
		seen[inv.ID] = true
	}
	c.mu.Lock()
	var stale []string
	for id, t := range c.tracked {
		if t.inv.Revision != 0 && t.inv.Live() && !seen[id] && t.doubt == 0 { // askDoubted gets the others
			stale = append(stale, id)
		}
	}
	c.mu.Unlock()
	for _, id := range stale {
		if _, err := c.Get(ctx, id); err != nil && !isGone(err) {
			return err
		}
	}
	if err := c.askDoubted(ctx); err != nil {
		return err
	}
	if since := aware - c.blindSpot().Milliseconds(); aware != 0 {
		if err := c.catchUp(ctx, since); err != nil {
			return err
		}
		// Again at every heartbeat for catchUpWindow: an invitation that
		// ended before the sync may not be in the history yet (the
		// projector appends it after the end, seconds after under a fault).
		// (From the earliest moment still being caught up from: a resync
		// during the window of an earlier one must not narrow it.)
		for old := c.catchUpFrom.Load(); old == 0 || since < old; old = c.catchUpFrom.Load() {
			if c.catchUpFrom.CompareAndSwap(old, since) {
				break
			}
		}
		c.catchUpUntil.Store(time.Now().Add(catchUpWindow).UnixMilli())
	}
	c.aware.Store(started.UnixMilli())
	return nil
}

// catchUpWindow is how long after a resync the heartbeats keep catching
// up from the history: longer than the projector lags behind a commit
// after a fault (a JetStream election is 4–9 s).
const catchUpWindow = 30 * time.Second

// catchUpPage is how much of the history a catch-up reads: the invitations
// a device can miss in one outage, with room to spare.
const catchUpPage = 50

// catchUp gets every incoming invitation in the user's history that ended
// at or after since (unix ms) and that this client never saw: it rang while
// the client could not be told (its NATS server froze or was cut off, events
// lost on the way) and ended before the client resynced, so Sync, which
// lists live invitations, does not have it. Get brings its final state and
// fires its callback (OnRemoteInvitationCanceled, …Failure, …Refused or
// …HandledElsewhere; not …Received: it no longer rings). A broker run with
// history off offers nothing to catch up from.
func (c *Client) catchUp(ctx context.Context, since int64) error {
	page, err := c.History(ctx, "", catchUpPage)
	if errors.Is(err, ErrInvalidArgument) {
		return nil // history is off
	}
	if err != nil {
		return err
	}
	for _, rec := range page.Calls {
		if rec.EndedAt < since {
			break // newest first
		}
		if rec.Direction != protocol.Incoming {
			continue // outgoing: this device tracks its own (Resync's stale gets)
		}
		c.mu.Lock()
		_, seen := c.tracked[rec.ID]
		seen = seen || c.forgotten.Contains(rec.ID)
		c.mu.Unlock()
		if seen {
			continue
		}
		if _, err := c.Get(ctx, rec.ID); err != nil && !isGone(err) {
			return err
		}
	}
	return nil
}

// forgetMax bounds Client.forgotten: more than a catch-up reads (catchUpPage),
// so that no entry of a page can be one the client saw and then forgot.
const forgetMax = 2 * catchUpPage

// blindSpot is how long before the last moment the client knew it was
// hearing everything (aware) it may already have been deaf: events lost
// just before a heartbeat that still got through.
func (c *Client) blindSpot() time.Duration {
	return time.Duration(c.Session().HeartbeatMs)*time.Millisecond + overdue
}

// isGone: the invitation expired from the broker's retention meanwhile.
func isGone(err error) bool { return errors.Is(err, ErrNotFound) }

// overdue is how long past its deadline an invitation may look live before
// the client asks the broker what became of it.
const overdue = 2 * time.Second

// lostAfter is how long past its deadline a view the broker no longer has
// (NOT_FOUND) is kept anyway: far longer than a replica lags.
const lostAfter = time.Hour

// reconcile runs with every heartbeat. Events are at-most-once per delivery
// and replies can be lost, so the client does not trust silence: an
// invitation that should have ended by now, or a call in progress, is
// fetched (get) so that a missed outcome still fires its callback. Finished
// invitations are pruned after a while.
func (c *Client) reconcile(ctx context.Context, now time.Time) {
	ms := now.UnixMilli()
	var ask []string
	c.mu.Lock()
	for id, t := range c.tracked {
		inv := t.inv
		switch {
		case inv.Revision == 0:
		case t.doubt != 0: // asked below (askDoubted), and kept meanwhile
		case !inv.Live():
			if inv.EndedAt != 0 && ms-inv.EndedAt > c.remember.Milliseconds() {
				delete(c.tracked, id)
				c.forgotten.Add(id, struct{}{})
			}
		case inv.Deadline != 0 && ms > inv.Deadline+overdue.Milliseconds(),
			inv.State == protocol.StateAccepted && inv.CallState == protocol.CallActive:
			ask = append(ask, id)
		}
	}
	c.mu.Unlock()
	for _, id := range ask {
		if _, err := c.Get(ctx, id); isGone(err) {
			// A live invitation is never removed, so NOT_FOUND soon after
			// its deadline is a replica catching up: keep it (forgetting it
			// would let a redelivered event of it fire its callbacks again)
			// and ask again at the next heartbeat. Only a view stale for
			// longer than any replica lags can have ended and expired from
			// the broker's retention meanwhile. (A view that ended while the
			// get was in flight is kept as long as any ended one, to
			// drop late duplicates of its events.)
			c.mu.Lock()
			if t := c.tracked[id]; t != nil && t.inv.Live() && t.inv.Deadline != 0 && ms-t.inv.Deadline > lostAfter.Milliseconds() {
				delete(c.tracked, id)
			}
			c.mu.Unlock()
		}
	}
	_ = c.askDoubted(ctx) // a failure: again at the next heartbeat
}
