package main

import (
	"testing"
	"time"

	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
)

// The end-of-run check of a user's line asks again a sync that no broker
// answers yet (a cluster just back from a fault: a chaos run on 2026-12-05
// reported nine users "left busy" because their syncs met "JetStream system
// temporarily unavailable"), rather than report it as a line left held.
func TestQuiescenceCheckWaitsForAnAnswer(t *testing.T) {
	s := natstest.RunServer(t)
	u := &user{id: "alice", nc: natstest.Connect(t, s.ClientURL())}
	r := newRun(&config{}, nil, nil)
	type result struct {
		invs []protocol.Invitation
		busy bool
		err  error
	}
	done := make(chan result, 1)
	go func() {
		invs, busy, err := r.syncUntilSettled(ringertest.Ctx(t), u)
		done <- result{invs, busy, err}
	}()
	time.Sleep(2 * time.Second) // the outage the check must outlast: no broker yet (a scenario's length)
	ringertest.StartBroker(t, s.ClientURL(), ringertest.TestConfig())
	if res := <-done; res.err != nil || len(res.invs) != 0 || res.busy {
		t.Fatalf("sync after the outage: %v live, busy %v, %v", res.invs, res.busy, res.err)
	}
}
