package client

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/ringer-dev/ringer/subjects"
)

// replies receives the replies to a client's commands on the user's own
// reply subjects, ringer.v1.user.<user>.reply.<client>.<request>: the
// command names its token in the Ringer-Reply header, and a broker in
// secure mode replies nowhere else (docs/protocol.md §3). Commands are
// published without a NATS reply subject, so none can be aimed elsewhere.
type replies struct {
	mu      sync.Mutex
	sub     *nats.Subscription
	client  string // this client's token: unique per Client
	next    uint64
	waiting map[string]chan *nats.Msg
}

// await registers a request and returns its token and the channel its reply
// will arrive on; done must follow. The subscription is made on first use.
func (c *Client) await() (token string, reply chan *nats.Msg, err error) {
	r := &c.replies
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sub == nil {
		r.client = nuid.Next()
		subj, err := subjects.UserReplies(c.user, r.client)
		if err != nil {
			return "", nil, err
		}
		r.waiting = map[string]chan *nats.Msg{}
		prefix := strings.TrimSuffix(subj, "*")
		sub, err := c.nc.Subscribe(subj, func(m *nats.Msg) {
			id := strings.TrimPrefix(m.Subject, prefix)
			r.mu.Lock()
			ch := r.waiting[id]
			delete(r.waiting, id)
			r.mu.Unlock()
			if ch != nil {
				ch <- m // buffered: never blocks
			}
		})
		if err != nil {
			return "", nil, err
		}
		r.sub = sub
	}
	r.next++
	id := strconv.FormatUint(r.next, 36)
	ch := make(chan *nats.Msg, 1)
	r.waiting[id] = ch
	return r.client + "." + id, ch, nil
}

// done forgets a request whose reply came or will not be waited for.
func (c *Client) done(token string) {
	r := &c.replies
	_, id, _ := strings.Cut(token, ".")
	r.mu.Lock()
	delete(r.waiting, id)
	r.mu.Unlock()
}

// stopReplies ends the reply subscription (Close).
func (c *Client) stopReplies() {
	r := &c.replies
	r.mu.Lock()
	sub := r.sub
	r.sub = nil
	r.mu.Unlock()
	if sub != nil {
		_ = sub.Unsubscribe()
	}
}

// exchange publishes a command to subj asking for its reply under token, and
// waits for the reply or the end of ctx.
func (c *Client) exchange(ctx context.Context, subj string, data []byte) (*nats.Msg, error) {
	token, ch, err := c.await()
	if err != nil {
		return nil, err
	}
	defer c.done(token)
	m := nats.NewMsg(subj)
	m.Header.Set(subjects.ReplyHeader, token)
	m.Data = data
	// A connection that drops (or that liveness leaves) loses the command
	// or its reply: give up on it at once, so that a retry can go through
	// the next server, instead of waiting for ctx.
	var moved <-chan struct{}
	lv := c.lv.Load()
	if lv != nil {
		moved = lv.generation()
	}
	if err := c.nc.PublishMsg(m); err != nil {
		return nil, err
	}
	sent := time.Now()
	slow := time.NewTicker(probeAfter)
	defer slow.Stop()
	for {
		select {
		case reply := <-ch:
			return reply, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-moved:
			return nil, fmt.Errorf("%w: the connection to NATS dropped with %s in flight", ErrUnavailable, subj)
		case now := <-slow.C:
			if lv != nil {
				lv.waiting(c.nc, sent, now) // is the server still there, and does anything get through?
			}
		}
	}
}
