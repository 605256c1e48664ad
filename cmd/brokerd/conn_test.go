package main

import (
	"testing"

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
