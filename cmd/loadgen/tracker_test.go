package main

import (
	"strings"
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

// A timeout is checked against the deadline of the state it ended: an
// ACCEPT_FAILURE before the ACCEPTING deadline is a violation, but one
// before the deadline of a RECEIVED view (the ACCEPTING view lost with its
// event and the accept's reply: a chaos run on 2026-12-03) is not.
func TestTrackerChecksATimeoutAgainstItsOwnState(t *testing.T) {
	for _, tc := range []struct {
		last protocol.State
		want int64
	}{{protocol.StateAccepting, 1}, {protocol.StateReceived, 0}} {
		tr := newTracker(newStats())
		s := &invState{id: "x", p: plan{b: bAccept}, caller: &user{id: "a"}, callee: &user{id: "b"}}
		tr.register(s)
		tr.mu.Lock()
		tr.viewLocked(s, protocol.Invitation{ID: "x", State: tc.last, Revision: 3, Deadline: 10_000})
		tr.mu.Unlock()
		failed := protocol.Invitation{ID: "x", State: protocol.StateFailed, Reason: protocol.ReasonAcceptFailure, Revision: 4, EndedAt: 9_345}
		tr.terminal(s, roleCaller, string(protocol.ReasonAcceptFailure), failed, time.Now())
		tr.terminal(s, roleCallee, string(protocol.ReasonAcceptFailure), failed, time.Now())
		if n, kinds, _ := tr.violations(); n != tc.want || n > 0 && kinds[vTimerEarly] != 1 {
			t.Errorf("last view %s: %d violations (%v), want %d", tc.last, n, kinds, tc.want)
		}
	}
}

// A scenario that never finishes is reported with what it still waits
// for, oldest first; a wait that ended is not named.
func TestUnfinishedScenarioNamesItsWaits(t *testing.T) {
	tr := newTracker(newStats())
	s := &invState{id: "g~scenario", group: "g", p: plan{b: bGroupJoin}, caller: &user{id: "a"}, callee: &user{id: "b"}}
	tr.register(s)
	ring := tr.waiting(s, "b's ring")
	view := tr.waiting(s, "a's device to see g end")
	tr.waitingSeeing(s, "c's device to see g end", func() string { return "nothing" })
	ring()
	tr.mu.Lock()
	s.waits["a's device to see g end"] = wait{since: time.Now().Add(-30 * time.Second)}
	tr.mu.Unlock()
	tr.unfinished(time.Now())
	_, _, samples := tr.violations()
	if len(samples) != 1 || !strings.Contains(samples[0], "waiting for a's device to see g end (30.0s), c's device to see g end (0.0s; sees nothing)") {
		t.Fatalf("samples %q", samples)
	}
	view()
}
