package main

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/ringer-dev/ringer/internal/natstest"
)

// TestNatsOrderedConnectsToTheFirstServer: with --nats-ordered the broker
// joins the first server of its list every time (nats.go alone picks one
// at random: twelve picks of the same one would happen once in 4 096), and
// the next one when the first does not answer.
func TestNatsOrderedConnectsToTheFirstServer(t *testing.T) {
	first, second := natstest.RunServer(t), natstest.RunServer(t)
	o, err := parseFlags([]string{"--nats-ordered"})
	if err != nil {
		t.Fatal(err)
	}
	urls := first.ClientURL() + "," + second.ClientURL()
	for i := 0; i < 12; i++ {
		nc, err := brokerConn(o, urls, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		got := nc.ConnectedServerId()
		nc.Close()
		if got != first.ID() {
			t.Fatalf("connection %d joined %s, not the first server listed (%s)", i, got, first.ID())
		}
	}

	first.Shutdown()
	first.WaitForShutdown()
	nc, err := brokerConn(o, urls, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got := nc.ConnectedServerId(); got != second.ID() {
		t.Fatalf("with the first server down the broker joined %s, not the second (%s)", got, second.ID())
	}
}

// TestBrokerConnBuffersNothingWhileReconnecting: a publish on the broker's
// connection while it is down fails at once (nats.ErrReconnectBufExceeded,
// which the store counts as a write never sent) instead of waiting in a
// buffer to be sent after the reconnect, long after the broker, and the
// client it answered, gave up on it.
func TestBrokerConnBuffersNothingWhileReconnecting(t *testing.T) {
	srv := natstest.RunServer(t)
	o, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := brokerConn(o, srv.ClientURL(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	srv.Shutdown()
	srv.WaitForShutdown()
	natstest.Eventually(t, 10*time.Second, func() error {
		if s := nc.Status(); s != nats.RECONNECTING {
			return fmt.Errorf("connection %v, want RECONNECTING", s)
		}
		return nil
	})
	if err := nc.Publish("ringer.test", []byte("late")); !errors.Is(err, nats.ErrReconnectBufExceeded) {
		t.Fatalf("publish while reconnecting: %v, want nats.ErrReconnectBufExceeded", err)
	}
}
