package client

import (
	"errors"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/internal/natstest"
)

// A heartbeat that gets through while a resync is owed or under way must
// not count the client as hearing everything: the resync's catch-up reads
// the history from aware, and moving it would skip the invitations that
// ended while the client was deaf (a group callee on a paused NATS node
// never learned its leg ended, in chaos runs, when the reconnect's resync
// was still running as the first heartbeat after it succeeded).
func TestHeartbeatKeepsAwareWhileAResyncIsOwed(t *testing.T) {
	c := &Client{}
	before, later := time.UnixMilli(1_000_000), time.UnixMilli(2_000_000)
	c.aware.Store(before.UnixMilli())

	c.resyncing.Add(1)
	c.heard(later)
	if got := c.aware.Load(); got != before.UnixMilli() {
		t.Fatalf("a heartbeat during a resync moved aware to %d", got)
	}
	c.resyncing.Add(-1)

	c.resyncDue.Store(true)
	c.heard(later)
	if got := c.aware.Load(); got != before.UnixMilli() {
		t.Fatalf("a heartbeat while a resync is owed moved aware to %d", got)
	}
	c.resyncDue.Store(false)

	c.heard(later)
	if got := c.aware.Load(); got != later.UnixMilli() {
		t.Fatalf("a heartbeat with nothing owed left aware at %d", got)
	}
}

// A dropped connection makes the client owe a resync at once, before any
// reconnect (whose resync runs in the background) and before any heartbeat
// on a new connection can get through.
func TestDisconnectOwesAResync(t *testing.T) {
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv.ClientURL())
	c, err := New(nc, "alice", "phone")
	if err != nil {
		t.Fatal(err)
	}
	watchReconnects(c)
	t.Cleanup(func() { unwatchReconnects(c) })
	if c.resyncDue.Load() {
		t.Fatal("a resync owed before anything dropped")
	}
	srv.Shutdown() // no server to reconnect to: only the drop itself can owe it
	natstest.Eventually(t, 10*time.Second, func() error {
		if !c.resyncDue.Load() {
			return errors.New("no resync owed after the connection dropped")
		}
		return nil
	})
}
