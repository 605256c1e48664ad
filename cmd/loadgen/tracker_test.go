package main

import (
	"testing"
	"time"

	"github.com/ringer-dev/ringer/protocol"
)

// A completed invitation is kept for keepDone, so that a late duplicate
// outcome is still a violation, and then forgotten, so that a long run
// does not keep every invitation it made.
func TestTrackerForgetsCompletedInvitations(t *testing.T) {
	tr := newTracker(newStats())
	caller, callee := &user{id: "a"}, &user{id: "b"}
	done := &invState{id: "done", p: plan{b: bRefuse}, caller: caller, callee: callee}
	live := &invState{id: "live", p: plan{b: bRefuse}, caller: caller, callee: callee}
	tr.register(done)
	tr.register(live)
	at := time.Now()
	refused := protocol.Invitation{ID: "done", State: protocol.StateRefused}
	tr.terminal(done, roleCaller, outRefused, refused, at)
	if !tr.terminal(done, roleCallee, outRefused, refused, at) {
		t.Fatal("both parties saw the outcome: the invitation should be complete")
	}

	tr.mu.Lock()
	tr.forgetLocked(at.Add(keepDone / 2))
	tr.mu.Unlock()
	if tr.get("done") == nil {
		t.Fatal("forgotten before keepDone")
	}
	// A late, different outcome within keepDone is still caught.
	tr.terminal(done, roleCaller, outCanceled, protocol.Invitation{ID: "done", State: protocol.StateCanceled}, at)
	if n, _, _ := tr.violations(); n != 1 {
		t.Fatalf("%d violations after a second outcome, want 1", n)
	}

	tr.mu.Lock()
	tr.forgetLocked(at.Add(keepDone + time.Second))
	tr.mu.Unlock()
	if tr.get("done") != nil {
		t.Error("a completed invitation is kept past keepDone")
	}
	if tr.get("live") == nil {
		t.Error("an invitation in flight was forgotten")
	}
	if len(tr.unfinished(time.Now())) != 1 {
		t.Error("the invitation in flight is not reported unfinished")
	}
}
