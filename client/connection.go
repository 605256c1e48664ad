package client

import (
	"context"
	"errors"
	"slices"
	"time"
)

// ConnectionState is the client's connection state, with Agora RTM's
// names and values (CONNECTION_STATE_*).
type ConnectionState int

// Connection states.
const (
	// ConnectionDisconnected: not logged in (before Login, after Logout or a
	// failed Login).
	ConnectionDisconnected ConnectionState = 1
	// ConnectionConnecting: Login is in progress.
	ConnectionConnecting ConnectionState = 2
	// ConnectionConnected: logged in; commands and events flow.
	ConnectionConnected ConnectionState = 3
	// ConnectionReconnecting: the NATS connection dropped and nats.go is
	// reconnecting. Commands fail at once with ErrUnavailable instead of
	// waiting in nats.go's buffer (where one could run after its caller
	// gave up); events published meanwhile are recovered by the resync
	// that follows the reconnect.
	ConnectionReconnecting ConnectionState = 4
	// ConnectionAborted: the NATS connection is closed for good (nats.go
	// gave up reconnecting, or the app closed it).
	ConnectionAborted ConnectionState = 5
)

func (s ConnectionState) String() string {
	switch s {
	case ConnectionDisconnected:
		return "DISCONNECTED"
	case ConnectionConnecting:
		return "CONNECTING"
	case ConnectionConnected:
		return "CONNECTED"
	case ConnectionReconnecting:
		return "RECONNECTING"
	case ConnectionAborted:
		return "ABORTED"
	}
	return "UNKNOWN"
}

// ConnectionChangeReason says why the state changed, with Agora RTM's
// names and values (CONNECTION_CHANGE_REASON_*) where Agora has one.
type ConnectionChangeReason int

// Reasons for a connection state change.
const (
	ConnectionChangeLogin        ConnectionChangeReason = 1 // Login started
	ConnectionChangeLoginSuccess ConnectionChangeReason = 2 // Login succeeded, or the connection came back
	ConnectionChangeLoginFailure ConnectionChangeReason = 3 // Login failed
	ConnectionChangeLoginTimeout ConnectionChangeReason = 4 // Login ran out of time
	ConnectionChangeInterrupted  ConnectionChangeReason = 5 // the NATS connection dropped
	ConnectionChangeLogout       ConnectionChangeReason = 6 // Logout
	// ConnectionChangeClosed: the NATS connection was closed (not an Agora
	// reason: Agora's ABORTED comes from a ban or a login elsewhere).
	ConnectionChangeClosed ConnectionChangeReason = 100
)

func (r ConnectionChangeReason) String() string {
	switch r {
	case ConnectionChangeLogin:
		return "LOGIN"
	case ConnectionChangeLoginSuccess:
		return "LOGIN_SUCCESS"
	case ConnectionChangeLoginFailure:
		return "LOGIN_FAILURE"
	case ConnectionChangeLoginTimeout:
		return "LOGIN_TIMEOUT"
	case ConnectionChangeInterrupted:
		return "INTERRUPTED"
	case ConnectionChangeLogout:
		return "LOGOUT"
	case ConnectionChangeClosed:
		return "CLOSED"
	}
	return "UNKNOWN"
}

// ConnectionState returns the client's connection state now.
func (c *Client) ConnectionState() ConnectionState {
	return ConnectionState(c.conn.Load())
}

// setConnection moves to state (from one of the states in from, if any are
// given) and tells the handler. It reports whether the state changed.
func (c *Client) setConnection(state ConnectionState, reason ConnectionChangeReason, from ...ConnectionState) bool {
	for {
		old := ConnectionState(c.conn.Load())
		if old == state {
			return false
		}
		if len(from) > 0 && !slices.Contains(from, old) {
			return false
		}
		if c.conn.CompareAndSwap(int32(old), int32(state)) {
			break
		}
	}
	if f := c.h.OnConnectionStateChanged; f != nil {
		f(state, reason)
	}
	return true
}

// loginFailed is the state change of a Login that returned err.
func (c *Client) loginFailed(err error) {
	reason := ConnectionChangeLoginFailure
	if errors.Is(err, context.DeadlineExceeded) {
		reason = ConnectionChangeLoginTimeout
	}
	c.setConnection(ConnectionDisconnected, reason, ConnectionConnecting)
}

// deadline is when the broker must stop considering a command whose
// context ends at dl, in the broker's clock (protocol.Request.Deadline):
// dl shifted by the clock offset learnt from the last login or heartbeat
// reply. 0 (no deadline) until an offset is known, so that a device whose
// clock is off can still log in.
func (c *Client) deadline(dl time.Time) int64 {
	if !c.clockKnown.Load() {
		return 0
	}
	return dl.UnixMilli() + c.clockOffset.Load()
}

// maxClockRTT: a reply that took longer than this to come back (a server
// that froze meanwhile) says too little about when the broker read its
// clock; it updates a known offset no more.
const maxClockRTT = 500 * time.Millisecond

// learnClock takes the broker's clock from a reply that carried it: the
// offset is the broker's time minus the middle of the request's round trip,
// which is off by up to half the round trip.
func (c *Client) learnClock(brokerMs int64, sent, received time.Time) {
	if brokerMs == 0 || received.Sub(sent) > maxClockRTT && c.clockKnown.Load() {
		return
	}
	mid := (sent.UnixMilli() + received.UnixMilli()) / 2
	c.clockOffset.Store(brokerMs - mid)
	c.clockKnown.Store(true)
}
