// Package client is Ringer's Go SDK. It speaks the protocol of
// docs/protocol.md over a nats.Conn and offers the API Agora RTM users know:
// create and send a LocalInvitation, receive and accept or refuse a
// RemoteInvitation, and a callback for every transition.
//
// Callbacks are derived from the invitation's state (not from which message
// carried it), so an event, a command reply and a sync all converge on the
// same callbacks, each fired at most once per invitation, in revision order.
// Callbacks run on the goroutine that applied the update; keep them short.
package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// Sentinel errors: command errors decode to *protocol.Error, which matches
// these with errors.Is.
var (
	ErrInvalidArgument   = protocol.ErrInvalidArgument
	ErrNotFound          = protocol.ErrNotFound
	ErrForbidden         = protocol.ErrForbidden
	ErrNotLoggedIn       = protocol.ErrNotLoggedIn
	ErrAlreadyEnd        = protocol.ErrAlreadyEnd
	ErrAlreadyAccept     = protocol.ErrAlreadyAccept
	ErrAlreadySent       = protocol.ErrAlreadySent
	ErrRateLimited       = protocol.ErrRateLimited
	ErrResourceExhausted = protocol.ErrResourceExhausted
	ErrDeadlineExceeded  = protocol.ErrDeadlineExceeded
	ErrUnavailable       = protocol.ErrUnavailable
	ErrInternal          = protocol.ErrInternal

	// ErrNotStarted: the local invitation was not sent yet (Agora's NOT_STARTED).
	ErrNotStarted = errors.New("client: invitation not sent")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("client: closed")
	// ErrInvalidOption wraps an invalid Option value.
	ErrInvalidOption = errors.New("client: invalid option")
)

// DefaultTimeout bounds a command whose context has no deadline.
const DefaultTimeout = 5 * time.Second

// Option configures a Client.
type Option func(*Client) error

// WithHandler sets the callbacks.
func WithHandler(h Handler) Option {
	return func(c *Client) error { c.h = h; return nil }
}

// WithoutHeartbeat disables the automatic heartbeat (tests simulating a device
// that vanished, or apps that drive Heartbeat themselves).
func WithoutHeartbeat() Option {
	return func(c *Client) error { c.noHeartbeat = true; return nil }
}

// DefaultRemember is how long a client remembers an invitation after it
// ended, unless WithRemember says otherwise.
const DefaultRemember = 5 * time.Minute

// WithRemember sets how long the client remembers an invitation after it
// ended: meanwhile its last view stays readable (Invitation,
// RemoteInvitation) and late duplicates of its events are dropped; then it
// is pruned, at a heartbeat. A device needs the default: a late duplicate
// of a forgotten invitation's event would fire its callbacks again
// (docs/protocol.md §6.6 asks clients to keep ids a few minutes). A
// process that hosts thousands of clients (loadgen) may keep less.
func WithRemember(d time.Duration) Option {
	return func(c *Client) error {
		if d <= 0 {
			return fmt.Errorf("%w: remember %s", ErrInvalidOption, d)
		}
		c.remember = d
		return nil
	}
}

// WithoutAutoAck disables the automatic acknowledgement of received
// invitations (ack) and of accepts (ackaccept), to drive them by hand.
func WithoutAutoAck() Option {
	return func(c *Client) error { c.noAutoAck = true; return nil }
}

// Client is one device of one user. It is safe for concurrent use.
type Client struct {
	nc     *nats.Conn
	user   string
	device string
	h      Handler

	noHeartbeat, noAutoAck bool
	remember               time.Duration // see WithRemember

	mu      sync.Mutex
	tracked map[string]*tracked
	// forgotten holds the ids of the finished invitations pruned last
	// (up to forgetMax), so that a history catch-up does not fetch them
	// again and fire their callbacks a second time.
	forgotten *lru.Cache[string, struct{}]
	sub       *nats.Subscription
	stopHB    chan struct{}
	closed    bool
	quit      chan struct{} // closed by Close: stops background retries
	// resyncDue: events may have been missed and no resync has succeeded
	// since (a heartbeat failed, or the resync after a reconnect did); the
	// next heartbeat that succeeds resyncs.
	resyncDue atomic.Bool
	// resyncing counts Resyncs in flight: while one runs, a heartbeat that
	// gets through must not move aware past what it has not caught up.
	resyncing atomic.Int32
	session   protocol.Session
	bg        sync.WaitGroup
	// conn is the ConnectionState; clockOffset (ms, valid once clockKnown)
	// is the broker's clock minus this device's (see deadline).
	conn        atomic.Int32
	clockOffset atomic.Int64
	clockKnown  atomic.Bool
	replies     replies // see exchange
	// lv watches the connection's commands (liveness.go); set at Login.
	lv atomic.Pointer[liveness]
	// aware (unix ms): when the client last knew it was hearing every event
	// (its login, a heartbeat or a resync that succeeded); a resync catches
	// up from the history since then (catchUp), and again from catchUpFrom
	// at every heartbeat that succeeds for catchUpWindow.
	aware, catchUpFrom atomic.Int64
	// catchUpUntil (unix ms): the heartbeats catch up from catchUpFrom
	// until then (catchUpWindow after a resync).
	catchUpUntil atomic.Int64
}

// New returns a client for user's device on nc. It does no I/O: call Login.
func New(nc *nats.Conn, user, device string, opts ...Option) (*Client, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: nil connection", ErrInvalidOption)
	}
	if err := subjects.ValidateID(user); err != nil {
		return nil, fmt.Errorf("%w: user: %v", ErrInvalidOption, err)
	}
	if err := subjects.ValidateID(device); err != nil {
		return nil, fmt.Errorf("%w: device: %v", ErrInvalidOption, err)
	}
	forgotten, _ := lru.New[string, struct{}](forgetMax) // errors only for size <= 0
	c := &Client{nc: nc, user: user, device: device, tracked: map[string]*tracked{}, forgotten: forgotten, quit: make(chan struct{}), remember: DefaultRemember}
	c.conn.Store(int32(ConnectionDisconnected))
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// User returns the client's user id.
func (c *Client) User() string { return c.user }

// Device returns the client's device id.
func (c *Client) Device() string { return c.device }

// Login subscribes to the user's events, opens the session and starts
// heartbeats. Invitations that waited while the user was offline are
// delivered (OnRemoteInvitationReceived) before Login returns.
func (c *Client) Login(ctx context.Context) (err error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	c.setConnection(ConnectionConnecting, ConnectionChangeLogin)
	defer func() {
		if err != nil {
			c.loginFailed(err)
		}
	}()
	subj, err := subjects.UserEvents(c.user)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.sub == nil {
		sub, err := c.nc.Subscribe(subj, c.onEvent)
		if err != nil {
			c.mu.Unlock()
			return err
		}
		c.sub = sub
		watchReconnects(c)
	}
	c.mu.Unlock()
	if err := c.nc.FlushWithContext(ctx); err != nil {
		return err
	}
	asked := time.Now()
	rep, err := c.request(ctx, subjects.VerbLogin, &protocol.Request{})
	if err != nil {
		return err
	}
	c.aware.CompareAndSwap(0, asked.UnixMilli())
	c.mu.Lock()
	if rep.Session != nil {
		c.session = *rep.Session
	}
	// Decided, and counted in c.bg, under the lock Close takes: a client
	// closed while its login was in flight starts no heartbeats, and no Add
	// can race Close's Wait.
	start := !c.closed && !c.noHeartbeat && c.stopHB == nil && c.session.HeartbeatMs > 0
	var stop chan struct{}
	period := time.Duration(c.session.HeartbeatMs) * time.Millisecond
	if start {
		stop = make(chan struct{})
		c.stopHB = stop
		c.bg.Add(1)
	}
	c.mu.Unlock()
	if start {
		go c.heartbeats(stop, period)
	}
	c.setConnection(ConnectionConnected, ConnectionChangeLoginSuccess)
	for i := range rep.Invitations {
		c.apply(rep.Invitations[i], "")
	}
	return nil
}

// Session returns what the broker said at login: TTL, heartbeat period, busy flag.
func (c *Client) Session() protocol.Session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session
}

func (c *Client) heartbeats(stop chan struct{}, every time.Duration) {
	defer c.bg.Done()
	// The first heartbeat comes after a random part of the period (between
	// a half and a whole one), then one every period: devices that log in
	// together (an app's start, a fleet reconnecting after a NATS node
	// restart) would otherwise heartbeat together for ever, a burst of
	// requests and writes every period.
	t := time.NewTimer(every/2 + rand.N(every/2+1))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			t.Reset(every)
			ctx, cancel := context.WithTimeout(context.Background(), every)
			err := c.Heartbeat(ctx)
			if errors.Is(err, ErrNotLoggedIn) {
				// The session ended (it expired while heartbeats could not
				// get through, or the broker lost it): log in again, which
				// also brings back what was missed.
				err = c.relogin(ctx)
			}
			switch {
			case err != nil:
				// While heartbeats fail (a NATS node hung or cut off from
				// the others, JetStream without a leader), events may be
				// lost on a connection that never drops, so no reconnect
				// will resync: the first heartbeat that succeeds does
				// (protocol.md §6.7).
				c.resyncDue.Store(true)
			case c.resyncDue.Swap(false):
				if c.Resync(ctx) != nil {
					c.resyncDue.Store(true) // again at the next heartbeat
				}
			default:
				// After a resync, every heartbeat for catchUpWindow reads
				// the history again: an invitation that ended while the
				// device was deaf enters it when the projector gets to it,
				// which after a fault can be many seconds later.
				if from := c.catchUpFrom.Load(); from != 0 && c.catchUp(ctx, from) == nil && time.Now().UnixMilli() > c.catchUpUntil.Load() {
					c.catchUpFrom.CompareAndSwap(from, 0)
				}
				c.heard(time.Now())
			}
			c.reconcile(ctx, time.Now())
			cancel()
		}
	}
}

// heard records that a heartbeat got through at now: the client hears
// every event since — unless a resync is owed or under way (the
// reconnect's, in the background), whose catch-up must start from before
// the deaf moments: aware then stays where it was.
func (c *Client) heard(now time.Time) {
	if !c.resyncDue.Load() && c.resyncing.Load() == 0 {
		c.aware.Store(now.UnixMilli())
	}
}

// relogin opens the session again after a heartbeat found it ended, and
// resyncs: the device was offline for the broker meanwhile.
func (c *Client) relogin(ctx context.Context) error {
	rep, err := c.request(ctx, subjects.VerbLogin, &protocol.Request{})
	if err != nil {
		return err
	}
	if rep.Session != nil {
		c.mu.Lock()
		c.session = *rep.Session
		c.mu.Unlock()
	}
	for i := range rep.Invitations {
		c.apply(rep.Invitations[i], "")
	}
	return c.Resync(ctx)
}

// Heartbeat refreshes the session now (Login starts automatic heartbeats).
// A session that has ended is not brought back: that is ErrNotLoggedIn
// (the automatic heartbeats then log in again).
//
// It names the session's revision from the last login or heartbeat reply
// (protocol.md §4.4), so that the broker refreshes the session in one write.
func (c *Client) Heartbeat(ctx context.Context) error {
	c.mu.Lock()
	rev := c.session.Rev
	c.mu.Unlock()
	rep, err := c.request(ctx, subjects.VerbHeartbeat, &protocol.Request{SessionRev: rev})
	if err != nil {
		return err
	}
	if rep.Session != nil && rep.Session.Rev != 0 {
		c.mu.Lock()
		// Unless a login meanwhile wrote a newer one (revisions only grow).
		c.session.Rev = max(c.session.Rev, rep.Session.Rev)
		c.mu.Unlock()
	}
	return nil
}

// Logout ends the session at once (if it was the user's last, the broker
// resolves the user's invitations and calls) and closes the client.
func (c *Client) Logout(ctx context.Context) error {
	_, err := c.request(ctx, subjects.VerbLogout, &protocol.Request{})
	c.Close()
	c.setConnection(ConnectionDisconnected, ConnectionChangeLogout)
	return err
}

// Close stops heartbeats and event delivery without logging out: the broker
// will consider the device gone after the presence TTL. It does not close the
// NATS connection.
func (c *Client) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	close(c.quit)
	if c.stopHB != nil {
		close(c.stopHB)
	}
	sub := c.sub
	c.mu.Unlock()
	if sub != nil {
		_ = sub.Unsubscribe()
		unwatchReconnects(c)
	}
	c.bg.Wait()
	c.stopReplies()
}

// Sync fetches every live invitation and call of the user and applies them,
// firing the callbacks of whatever was missed (e.g. while disconnected). It
// also refreshes Session().Busy, the user's manual busy flag.
func (c *Client) Sync(ctx context.Context) ([]protocol.Invitation, error) {
	rep, err := c.request(ctx, subjects.VerbSync, &protocol.Request{})
	if err != nil {
		return nil, err
	}
	if rep.Session != nil {
		c.mu.Lock()
		c.session.Busy = rep.Session.Busy // the manual busy flag, as of now
		c.mu.Unlock()
	}
	for i := range rep.Invitations {
		c.apply(rep.Invitations[i], "")
	}
	return rep.Invitations, nil
}

// SetBusy sets or clears the user's manual busy flag (do-not-disturb).
func (c *Client) SetBusy(ctx context.Context, busy bool) error {
	_, err := c.request(ctx, subjects.VerbBusy, &protocol.Request{Busy: busy})
	return err
}

// Get fetches one invitation (live or recently finished) the user is a
// party to, and applies it (unless it finished and was forgotten: then its
// end is returned and no callback fires again).
func (c *Client) Get(ctx context.Context, id string) (protocol.Invitation, error) {
	var seen uint64 // the broker answers with no older view
	c.mu.Lock()
	if t := c.tracked[id]; t != nil {
		seen = t.inv.Revision
	}
	c.mu.Unlock()
	rep, err := c.request(ctx, subjects.VerbGet, &protocol.Request{ID: id, Seen: seen})
	if err != nil {
		return protocol.Invitation{}, err
	}
	c.apply(*rep.Invitation, "")
	return *rep.Invitation, nil
}

// Hangup ends the call that invitation id became.
func (c *Client) Hangup(ctx context.Context, id string) error {
	return c.act(ctx, subjects.VerbHangup, id, "")
}

// act sends a command about an invitation and applies the resulting view.
// A transient failure (no answer, UNAVAILABLE), or a reply that contradicts
// this client's view (contradicts), is asked again, backing off, for as
// long as ctx allows (at most DefaultTimeout) before it is returned.
func (c *Client) act(ctx context.Context, verb, id, response string) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	for attempt := 1; ; attempt++ {
		// Acting twice is a success with the same result for the same
		// device, so a transient failure is retried (requestRetrying).
		rep, err := c.requestRetrying(ctx, verb, &protocol.Request{ID: id, Response: response})
		if c.contradicts(verb, id, err) {
			select {
			case <-ctx.Done():
				return err
			case <-time.After(min(time.Duration(attempt)*50*time.Millisecond, 500*time.Millisecond)):
				continue
			}
		}
		if err != nil {
			if transient(err) || errors.Is(err, ErrDeadlineExceeded) {
				c.doubted(id)
			}
			return err
		}
		if rep.Invitation != nil {
			c.apply(*rep.Invitation, "")
		}
		return nil
	}
}

// doubted marks the view of invitation id in doubt: a command on it failed
// with no known outcome. It may have been carried out all the same, its
// reply lost and its events too, and a view the device holds as ended is
// asked for by nothing else: a JOIN callee who left and whose join again
// took effect unheard, then dropped from the call, would see itself out
// of the call for good (chaos: group_views_differ). So the view is asked
// for (Get) at every resync and heartbeat until one succeeds after
// catchUpWindow from now (a replica or a deposed leader may answer stale
// before then). Only a view this client tracks is marked: an invitation it
// never saw becomes live by a command only if it was live before, and
// Sync lists live ones.
func (c *Client) doubted(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.tracked[id]; t != nil && t.inv.Revision != 0 {
		t.doubt = time.Now().Add(catchUpWindow).UnixMilli()
	}
}

// inDoubt lists the invitations whose view is in doubt (see doubted).
func (c *Client) inDoubt() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for id, t := range c.tracked {
		if t.doubt != 0 {
			ids = append(ids, id)
		}
	}
	return ids
}

// askDoubted gets each view in doubt; a view got after its doubt window
// (at asked, unix ms) is no longer in doubt.
func (c *Client) askDoubted(ctx context.Context) error {
	for _, id := range c.inDoubt() {
		asked := time.Now().UnixMilli()
		if _, err := c.Get(ctx, id); err != nil && !isGone(err) {
			return err
		}
		c.mu.Lock()
		if t := c.tracked[id]; t != nil && t.doubt != 0 && asked > t.doubt {
			t.doubt = 0
		}
		c.mu.Unlock()
	}
	return nil
}

// contradicts reports whether err, the reply to verb on invitation id,
// denies what this client has already seen, which makes it stale: the broker
// read a replica still catching up, or a leader deposed a moment ago
// (docs/architecture.md, stale reads). NOT_FOUND for an invitation it sees
// live (live invitations are never removed), and "not accepted yet"
// (INVALID_ARGUMENT) to an ackaccept after it saw the accept.
func (c *Client) contradicts(verb, id string, err error) bool {
	if err == nil || !c.seesLive(id) {
		return false
	}
	inv, _ := c.Invitation(id)
	return errors.Is(err, ErrNotFound) ||
		verb == subjects.VerbAckAccept && errors.Is(err, ErrInvalidArgument) &&
			(inv.State == protocol.StateAccepting || inv.State == protocol.StateAccepted)
}

// watch tells the connection's liveness how a command went: answered (any
// reply but UNAVAILABLE), or not (no reply by its deadline, or UNAVAILABLE:
// the broker could not reach its store). A read answered proves little: a
// broker on a server cut off from the others still reads that server's
// replica of the bucket (stale), while every write fails; so only the
// answer to a command that writes counts as the connection working.
func (c *Client) watch(verb string, answered bool) {
	lv := c.lv.Load()
	if lv == nil {
		return
	}
	switch {
	case !answered:
		lv.unanswered(c.nc, time.Now())
	case verb != subjects.VerbGet && verb != subjects.VerbSync && verb != subjects.VerbHistory:
		lv.answered(time.Now())
	}
}

// seesLive reports whether this client has seen invitation id live: a
// NOT_FOUND for it is a stale answer (live invitations are never removed),
// from a replica behind, or from a server cut off from the others whose
// deposed stream leader still answers (liveness.go counts it as no answer).
func (c *Client) seesLive(id string) bool {
	if id == "" {
		return false
	}
	inv, ok := c.Invitation(id)
	return ok && inv.Revision != 0 && inv.Live()
}

// request sends one command and decodes the reply; a typed error reply is
// returned as *protocol.Error.
func (c *Client) request(ctx context.Context, verb string, req *protocol.Request) (*protocol.Reply, error) {
	subj, err := subjects.Command(c.user, verb)
	if err != nil {
		return nil, err
	}
	req.Device = c.device
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	// Not while nats.go reconnects: it would keep the request in its
	// buffer and send it when the connection is back, maybe long after
	// this call gave up (a ghost invitation). The deadline covers a drop
	// between this check and the publish.
	if !c.nc.IsConnected() {
		return nil, fmt.Errorf("%w: not connected to NATS (%s): %s not sent", ErrUnavailable, c.nc.Status(), verb)
	}
	if dl, ok := ctx.Deadline(); ok {
		req.Deadline = c.deadline(dl)
	}
	var msg *nats.Msg
	sent := time.Now()
	err = protocol.Encode(req, func(data []byte) (err error) { // data is only valid in here
		msg, err = c.exchange(ctx, subj, data)
		return err
	})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			c.watch(verb, false)
		}
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, fmt.Errorf("%w: no broker is serving %s", ErrUnavailable, subj)
		}
		return nil, err
	}
	rep, err := protocol.DecodeReply(msg.Data)
	if err != nil {
		return nil, err
	}
	c.watch(verb, rep.Error == nil || rep.Error.Code != protocol.CodeUnavailable &&
		!(rep.Error.Code == protocol.CodeNotFound && c.seesLive(req.ID)))
	if rep.Session != nil {
		c.learnClock(rep.Session.NowMs, sent, time.Now())
	}
	if rep.Error != nil {
		return nil, rep.Error
	}
	return rep, nil
}

// withDefaultTimeout applies DefaultTimeout to a context without deadline.
func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx == nil {
		ctx = context.Background()
	}
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, DefaultTimeout)
}
