package client

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/protocol"
)

// A NATS server can fail without closing its connections: frozen (a VM or
// process stall, a long GC or disk stall), or cut off from the other servers
// while its clients stay connected to it (a network partition). nats.go
// notices the first only after PingInterval × MaxPingsOut (four minutes by
// default, and an app that lowers it pays for the pings on a phone's radio
// all day), and the second never: the server still answers its pings. Both
// leave every command of the device unanswered, and every event for it
// lost, until the fault ends.
//
// So the client watches its commands instead (no traffic when all is well):
// a command with no answer after probeAfter makes it ask the server for a
// PONG (probeTimeout); a server that does not give one is left for another
// (ForceReconnect; commands in flight give up at once and a retried send
// goes through the next server; the resync after the reconnect recovers
// what was missed). A server that answers its pings while no command that
// writes gets through for stallReconnect, counted from the first one it
// swallowed, is left too: for a client, a server cut off from the others
// is as good as a frozen one. A cluster-wide stall (a JetStream
// leader election) also makes a client move, at most once per
// minReconnectGap, which costs one reconnect and one resync.
const (
	probeAfter      = time.Second
	probeTimeout    = time.Second
	stallReconnect  = 3 * time.Second
	minReconnectGap = 5 * time.Second
)

// liveness watches the commands of all the clients on one connection.
type liveness struct {
	mu        sync.Mutex
	gen       chan struct{} // closed when the connection drops; then replaced
	probing   bool
	lastReply time.Time // the last command that writes answered (see Client.watch)
	firstMiss time.Time // the first command unanswered since lastReply; zero if none
	moved     time.Time // the last ForceReconnect
}

// answered records that a command that writes got a reply on nc.
func (l *liveness) answered(now time.Time) {
	l.mu.Lock()
	l.lastReply, l.firstMiss = now, time.Time{}
	l.mu.Unlock()
}

// generation returns a channel closed when the connection next drops.
func (l *liveness) generation() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gen == nil {
		l.gen = make(chan struct{})
	}
	return l.gen
}

// dropped ends the current generation: the connection dropped (nats.go's
// disconnect handler, also after a ForceReconnect).
func (l *liveness) dropped() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gen != nil {
		close(l.gen)
		l.gen = nil
	}
}

// unanswered records a command that got no reply in time (or none that
// moved it on: UNAVAILABLE, the broker could not reach its store) and
// decides whether the server is worth probing or leaving.
func (l *liveness) unanswered(nc *nats.Conn, now time.Time) {
	l.miss(nc, now, now)
}

// waiting records a command sent at sent and still unanswered at now
// (probeAfter and every probeAfter since): it counts as a miss from when it
// was sent, so a server through which nothing gets is left stallReconnect
// after the first command it swallowed, not after that command's timeout.
func (l *liveness) waiting(nc *nats.Conn, sent, now time.Time) {
	l.miss(nc, sent, now)
}

func (l *liveness) miss(nc *nats.Conn, at, now time.Time) {
	l.mu.Lock()
	if at.Before(l.lastReply) {
		at = l.lastReply // something got through since it was sent
	}
	if l.firstMiss.IsZero() || now.Sub(l.firstMiss) > 10*stallReconnect {
		l.firstMiss = at // the first miss, or one long enough ago to be another story
	}
	stalled := now.Sub(l.firstMiss) >= stallReconnect && now.Sub(l.moved) >= minReconnectGap
	probe := !l.probing && !stalled
	if stalled {
		l.moved, l.firstMiss = now, time.Time{}
	}
	if probe {
		l.probing = true
	}
	l.mu.Unlock()
	switch {
	case stalled:
		_ = nc.ForceReconnect()
	case probe:
		go l.probe(nc)
	}
}

// probe leaves the server if it does not answer a PING in probeTimeout.
func (l *liveness) probe(nc *nats.Conn) {
	err := nc.FlushTimeout(probeTimeout)
	l.mu.Lock()
	l.probing = false
	leave := err != nil && nc.IsConnected() && time.Since(l.moved) >= minReconnectGap
	if leave {
		l.moved, l.firstMiss = time.Now(), time.Time{}
	}
	l.mu.Unlock()
	if leave {
		_ = nc.ForceReconnect()
	}
}

// minAttempt is the least time an attempt of a retried command gets.
const minAttempt = time.Second

// requestRetrying sends an idempotent command until it is answered with
// anything but a transient failure or ctx ends. Each attempt gets half the
// time left (at least minAttempt) and carries its own deadline, so an
// attempt that reaches a broker late is not executed (DEADLINE_EXCEEDED)
// and the last attempt has time to get through another server.
func (c *Client) requestRetrying(ctx context.Context, verb string, req *protocol.Request) (*protocol.Reply, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	for attempt := 1; ; attempt++ {
		actx, acancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok {
			if left := time.Until(dl); left > 2*minAttempt {
				actx, acancel = context.WithTimeout(ctx, max(left/2, minAttempt))
			}
		}
		r := *req // request fills in the deadline
		rep, err := c.request(actx, verb, &r)
		acancel()
		if err == nil || !transient(err) && !errors.Is(err, ErrDeadlineExceeded) || ctx.Err() != nil {
			return rep, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-c.quit:
			return nil, err
		case <-time.After(min(time.Duration(attempt)*100*time.Millisecond, 500*time.Millisecond)):
		}
	}
}
