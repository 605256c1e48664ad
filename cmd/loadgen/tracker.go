// Per-invitation tracking: what each party observed, completion, and the invariants checked on the fly.
package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/protocol"
)

// role indexes an invitation's two parties.
type role int

const (
	roleCaller role = iota
	roleCallee
)

func (r role) String() string { return [...]string{"caller", "callee"}[r] }

func roleOf(pr protocol.Role) role {
	if pr == protocol.RoleCallee {
		return roleCallee
	}
	return roleCaller
}

// Outcome names: state names for non-failures, the reason for failures.
const (
	outAccepted    = "ACCEPTED"
	outRefused     = "REFUSED"
	outRefusedBusy = "REFUSED_BUSY"
	outCanceled    = "CANCELED"
	outSendFailed  = "SEND_FAILED" // Send returned an error: the invitation may not exist
	outMerged      = "MERGED"      // glare: the callee was calling the caller; the send accepted that instead
)

// expected is the outcome each behaviour aims at; anything else is counted
// as unexpected (a race the workload lost, not a broker fault by itself).
var expected = map[behaviour]string{
	bAccept: outAccepted, bRefuse: outRefused, bCancel: outCanceled, bIgnore: string(protocol.ReasonInvitationExpire),
	bOffline: string(protocol.ReasonPeerOffline), bBusy: outRefusedBusy, bDisconnect: string(protocol.ReasonPeerOffline),
	bCarrier: outCanceled, bPush: outAccepted, bGroup: outGroupAnswered, bGroupJoin: outGroupJoined, bGlare: outGlareMerged,
}

// rank orders views along the lifecycle, for the event-order check.
func rank(inv protocol.Invitation) int {
	switch inv.State {
	case protocol.StateSent:
		return 0
	case protocol.StateReceived:
		return 1
	case protocol.StateAccepting:
		return 2
	case protocol.StateAccepted:
		if inv.CallState == protocol.CallEnded {
			return 4
		}
		return 3
	}
	return 3 // REFUSED, CANCELED, FAILED
}

// observer is what one party's client saw of one invitation.
type observer struct {
	device  string   // the client (device) the event-order check follows
	maxRev  uint64   // highest revision passed to OnEvent on that client
	maxRank int      // highest lifecycle rank passed to OnEvent on that client
	saw     []string // distinct terminal outcomes seen (callbacks)
	ended   bool     // OnCallEnded fired
	closed  bool     // the party's client was closed on purpose: it will not observe
}

// invState is one invitation as loadgen knows it. Guarded by tracker.mu.
type invState struct {
	id             string
	group          string // a group or glare scenario's invitation id (groups.go); id is then the tracker's key only
	p              plan
	caller, callee *user
	li             *client.LocalInvitation
	ri             *client.RemoteInvitation

	sendAt, ringAt, acceptAt, hangupAt time.Time
	hangupBy                           role
	receivedByPeer                     bool
	localAccepted                      int // OnLocalInvitationAccepted callbacks

	obs        [2]observer
	outcome    string
	outcomeAt  time.Time
	terminal   protocol.Invitation // first terminal view
	lastRev    uint64              // highest-revision non-terminal view seen by anyone
	lastDL     int64               // its Deadline
	lastState  protocol.State      // its State
	engaged    bool                // the callee is in the engaged set because of this invitation
	sendFailed bool

	carrier   *invState // busy: the carrier that makes the callee ring first
	collision *invState // carrier: the busy invitation to send once the callee rings
	launched  bool      // carrier: the collision was sent

	done   bool
	doneAt time.Time
	doneCh chan struct{}

	// waits: what a scenario is waiting for right now (tracker.waiting),
	// since when, and what it sees meanwhile: named when it never finishes.
	waits map[string]wait
}

// tracker holds every invitation of the run and the violations found.
type tracker struct {
	st *stats

	mu       sync.Mutex
	invs     map[string]*invState
	finished []*invState // completed invitations, in completion order, until forgotten
	inflight int
	viol     int64
	byKind   map[string]int64
	samples  []string
}

func newTracker(st *stats) *tracker {
	return &tracker{st: st, invs: map[string]*invState{}, byKind: map[string]int64{}}
}

// Violation kinds.
const (
	vNoTerminal     = "no_terminal_outcome"       // nobody saw a terminal outcome by the end of the drain
	vMissing        = "outcome_not_seen_by_party" // an online party never saw the terminal outcome (or the call end)
	vMultiple       = "multiple_terminal_outcomes"
	vMismatch       = "caller_callee_outcome_mismatch"
	vOutOfOrder     = "event_out_of_revision_order"
	vTimerEarly     = "timer_fired_before_deadline"
	vLeftBusy       = "user_left_busy"
	vLeftBusyLine   = "user_line_not_released"
	vUnknownOutcome = "terminal_view_without_outcome"
	vExportMissing  = "export_transition_missing"  // --export: an invitation's exported transitions do not chain to its outcome
	vExportTwice    = "export_transition_twice"    // --export: a transition exported twice
	vWebhookOrder   = "webhook_out_of_order"       // --webhook-listen: a transition delivered after a later one of its invitation (or badly signed)
	vWebhookMissing = "webhook_transition_missing" // --webhook-listen: an exported transition never delivered
	vPushRing       = "push_ring_not_once"         // an invitation to an asleep callee made no RING push request, or several
	vPushStop       = "push_stop_not_once"         // it ended without exactly one STOP push request
)

// violateLocked records one broken invariant; t.mu must be held.
func (t *tracker) violateLocked(kind, format string, args ...any) {
	t.viol++
	t.byKind[kind]++
	if len(t.samples) < 10 {
		t.samples = append(t.samples, kind+": "+fmt.Sprintf(format, args...))
	}
}

// violate records one broken invariant.
func (t *tracker) violate(kind, format string, args ...any) {
	t.mu.Lock()
	t.violateLocked(kind, format, args...)
	t.mu.Unlock()
}

func (t *tracker) register(s *invState) {
	t.mu.Lock()
	s.doneCh = make(chan struct{})
	t.invs[s.id] = s
	t.inflight++
	t.forgetLocked(time.Now())
	t.mu.Unlock()
}

// keepDone is how long a completed invitation is kept to check callbacks
// that come late (a duplicate outcome would be a violation). After that a
// callback for it counts as one for an unknown invitation (a note). Without
// it a long run would keep every invitation it ever made: a soak test at
// 500/s for an hour, ~2 GB of records.
const keepDone = time.Minute

// forgetLocked drops the invitations completed more than keepDone ago.
func (t *tracker) forgetLocked(now time.Time) {
	n := 0
	for n < len(t.finished) && now.Sub(t.finished[n].doneAt) > keepDone {
		delete(t.invs, t.finished[n].id)
		t.finished[n] = nil
		n++
	}
	if n > 0 {
		t.finished = t.finished[n:]
	}
}

func (t *tracker) get(id string) *invState {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.invs[id]
}

func (t *tracker) inFlight() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.inflight
}

// view notes a non-terminal view (any source) for timer lateness: the
// Deadline that a timeout outcome is measured against is the one of the
// highest-revision non-terminal view.
func (t *tracker) viewLocked(s *invState, inv protocol.Invitation) {
	if inv.State.Terminal() || inv.Revision <= s.lastRev {
		return
	}
	s.lastRev, s.lastDL, s.lastState = inv.Revision, inv.Deadline, inv.State
}

// event runs the event-order check. The client applies an event only if its
// revision is newer than the last view it applied for that invitation (from
// an event, a reply or a sync), and Handler.OnEvent sees only applied events,
// in the order the client applied them. So the check is: per invitation and
// per client (device), every OnEvent revision must be strictly greater than
// the previous OnEvent revision, and its lifecycle rank (SENT < RECEIVED <
// ACCEPTING < terminal < call ended) must not be lower than one already seen.
// Stale events the SDK dropped are invisible here (see docs/benchmarks.md).
func (t *tracker) event(s *invState, r role, device string, inv protocol.Invitation) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.viewLocked(s, inv)
	o := &s.obs[r]
	if o.device != device {
		o.device, o.maxRev, o.maxRank = device, inv.Revision, rank(inv)
		return
	}
	if inv.Revision <= o.maxRev {
		t.violateLocked(vOutOfOrder, "%s %s/%s: event %s rev %d after rev %d", s.id, r, device, inv.State, inv.Revision, o.maxRev)
	}
	if k := rank(inv); k < o.maxRank {
		t.violateLocked(vOutOfOrder, "%s %s/%s: state %s (rank %d) after rank %d", s.id, r, device, inv.State, k, o.maxRank)
	} else {
		o.maxRank = k
	}
	if inv.Revision > o.maxRev {
		o.maxRev = inv.Revision
	}
}

// terminal records that party r saw outcome (from a callback), and
// completes the invitation if that was the last expected observation. It
// reports whether the invitation completed now.
func (t *tracker) terminal(s *invState, r role, outcome string, inv protocol.Invitation, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.terminalLocked(s, r, outcome, inv, now)
	return t.completeLocked(s, now)
}

func (t *tracker) terminalLocked(s *invState, r role, outcome string, inv protocol.Invitation, now time.Time) {
	if s.sendFailed {
		t.st.note("views of an invitation whose send failed")
		return
	}
	if outcome == "" {
		t.violateLocked(vUnknownOutcome, "%s %s: terminal callback with view %s/%s", s.id, r, inv.State, inv.Reason)
		return
	}
	o := &s.obs[r]
	for _, seen := range o.saw {
		if seen == outcome {
			return
		}
	}
	o.saw = append(o.saw, outcome)
	if len(o.saw) > 1 {
		t.violateLocked(vMultiple, "%s %s saw %v", s.id, r, o.saw)
	}
	switch {
	case s.outcome == "":
		s.outcome, s.outcomeAt, s.terminal = outcome, now, inv
	case s.outcome != outcome && len(o.saw) == 1:
		t.violateLocked(vMismatch, "%s: %s saw %s, %s saw %s", s.id, r, outcome, 1-r, s.outcome)
	}
}

// callEnded records OnCallEnded at party r (which implies ACCEPTED).
func (t *tracker) callEnded(s *invState, r role, inv protocol.Invitation, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.terminalLocked(s, r, outAccepted, inv, now)
	s.obs[r].ended = true
	return t.completeLocked(s, now)
}

// needs reports whether party r must observe the outcome before the
// invitation counts as completed.
func (s *invState) needs(r role) bool {
	if s.obs[r].closed || s.sendFailed {
		return false
	}
	if r == roleCallee && (s.p.b == bOffline || s.outcome == outRefusedBusy || s.outcome == outMerged) {
		return false // never logged in; a busy callee is not disturbed; a merged invitation never rang
	}
	if r == roleCallee && s.p.b == bPush && s.ringAt.IsZero() {
		return false // asleep, and not woken while it rang: a missed call
	}
	return true
}

// completeLocked decides whether every expected observation is in: each
// party that is online saw the terminal outcome, and for an accepted
// invitation, saw the call end.
func (t *tracker) completeLocked(s *invState, now time.Time) bool {
	if s.done || s.outcome == "" {
		return false
	}
	for _, r := range []role{roleCaller, roleCallee} {
		if !s.needs(r) {
			continue
		}
		if s.outcome == outAccepted && !s.obs[r].ended {
			return false
		}
		if len(s.obs[r].saw) == 0 {
			return false
		}
	}
	s.done, s.doneAt = true, now
	t.inflight--
	close(s.doneCh)
	t.finished = append(t.finished, s)

	t.st.outcome(s.p.b, s.outcome)
	var accDone time.Time
	if s.outcome == outAccepted {
		accDone = now
	}
	t.st.inWindow(s.outcomeAt, accDone)
	if want := expected[s.p.b]; s.outcome != want && !s.sendFailed {
		t.st.note(fmt.Sprintf("unexpected outcome: %s ended %s", s.p.b, s.outcome))
	}
	if s.timerOutcome() && s.lastDL > 0 && s.lastState != s.timedOut() {
		// The last view this run saw is of an earlier state (the view of
		// the state that timed out was lost: its event, and the reply of
		// the command that made it): its deadline is not the one that
		// fired. Not checked.
		t.st.note("timeout of a state whose view was lost: its deadline not checked")
	} else if s.timerOutcome() && s.lastDL > 0 {
		early := s.terminal.EndedAt != 0 && s.terminal.EndedAt < s.lastDL
		switch {
		case early && protocol.Reason(s.outcome) == protocol.ReasonPeerOffline:
			// In SENT, PEER_OFFLINE is the offline window running out, or
			// the caller's presence loss (e.g. its heartbeats failed), which
			// may come at any time: not a timer then.
			t.st.note("PEER_OFFLINE before the offline deadline (caller's presence lost)")
		case early:
			t.violateLocked(vTimerEarly, "%s: %s at %d, deadline %d", s.id, s.outcome, s.terminal.EndedAt, s.lastDL)
		default:
			t.st.record(stTimerLateness, s.outcomeAt.Sub(time.UnixMilli(s.lastDL)))
			t.st.record(stTimerLatenessBroke, time.Duration(s.terminal.EndedAt-s.lastDL)*time.Millisecond)
		}
	}
	return true
}

// timerOutcome reports whether the outcome can be the broker's durable
// timer's (as opposed to an action or a presence loss). INVITATION_EXPIRE,
// PEER_NO_RESPONSE and ACCEPT_FAILURE only come from timers; PEER_OFFLINE
// does in SENT (the offline window), and may also be a caller's presence loss.
// timedOut is the state whose deadline a timer outcome ends.
func (s *invState) timedOut() protocol.State {
	switch protocol.Reason(s.outcome) {
	case protocol.ReasonInvitationExpire:
		return protocol.StateReceived
	case protocol.ReasonAcceptFailure:
		return protocol.StateAccepting
	}
	return protocol.StateSent // PEER_NO_RESPONSE, PEER_OFFLINE
}

func (s *invState) timerOutcome() bool {
	switch protocol.Reason(s.outcome) {
	case protocol.ReasonInvitationExpire, protocol.ReasonPeerNoResponse, protocol.ReasonAcceptFailure:
		return true
	case protocol.ReasonPeerOffline:
		return s.lastState == protocol.StateSent // the offline window ran out; in RECEIVED it is a presence loss
	}
	return false
}

// finish completes a group or glare scenario's invitation, which its own
// goroutine checked (groups.go), with outcome.
// wait is one thing a scenario waits for: since when, and (sees, if not
// nil) what it sees meanwhile, asked when the scenario is reported.
type wait struct {
	since time.Time
	sees  func() string
}

// waiting notes that scenario s waits for what (a ring, a device's view,
// a read) until the returned func is called.
func (t *tracker) waiting(s *invState, what string) (done func()) {
	return t.waitingSeeing(s, what, nil)
}

// waitingSeeing is waiting with a description of what the scenario sees
// meanwhile (a device's view), named if the wait never ends.
func (t *tracker) waitingSeeing(s *invState, what string, sees func() string) (done func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.waits == nil {
		s.waits = map[string]wait{}
	}
	s.waits[what] = wait{since: time.Now(), sees: sees}
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		delete(s.waits, what)
	}
}

// describeWaits renders what a scenario still waits for, oldest first.
func describeWaits(waits map[string]wait, now time.Time) string {
	if len(waits) == 0 {
		return ""
	}
	whats := slices.SortedFunc(maps.Keys(waits), func(a, b string) int { return waits[a].since.Compare(waits[b].since) })
	var b strings.Builder
	b.WriteString("; waiting for")
	for i, w := range whats {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, " %s (%.1fs", w, now.Sub(waits[w].since).Seconds())
		if sees := waits[w].sees; sees != nil {
			fmt.Fprintf(&b, "; sees %s", sees())
		}
		b.WriteString(")")
	}
	return b.String()
}

func (t *tracker) finish(s *invState, outcome string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s.outcome, s.outcomeAt, s.done, s.doneAt = outcome, now, true, now
	t.inflight--
	close(s.doneCh)
	t.finished = append(t.finished, s)
	t.st.outcome(s.p.b, outcome)
	t.st.inWindow(now, now)
	if outcome != expected[s.p.b] {
		t.st.note(fmt.Sprintf("unexpected outcome: %s ended %s", s.p.b, outcome))
	}
}

// failSend completes an invitation whose Send returned an error.
func (t *tracker) failSend(s *invState, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	s.sendFailed = true
	if s.outcome == "" {
		s.outcome, s.outcomeAt = outSendFailed, now
	}
	return t.completeLocked(s, now)
}

// close marks party r's client as closed on purpose (disconnect); false if
// the invitation is already done.
func (t *tracker) close(s *invState, r role, now time.Time) (ok, completed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.done {
		return false, false
	}
	s.obs[r].closed = true
	return true, t.completeLocked(s, now)
}

// unfinished returns the invitations that did not complete, and records why
// each of them breaks an invariant. One still waiting for a deadline that
// is not yet 5 s past (the drain was too short for its timeouts) is only
// noted: it has not had its chance to end.
func (t *tracker) unfinished(now time.Time) []*invState {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*invState
	for _, s := range t.invs {
		if s.done {
			continue
		}
		out = append(out, s)
		if s.outcome == "" && s.lastDL > 0 && now.Before(time.UnixMilli(s.lastDL).Add(5*time.Second)) {
			t.st.note("unfinished: its deadline was not due by the end of the drain (use a longer --drain)")
			continue
		}
		if s.outcome == "" {
			t.violateLocked(vNoTerminal, "%s (%s, %s→%s): no terminal outcome; last state %s%s", s.id, s.p.b, s.caller.id, s.callee.id, s.lastState, describeWaits(s.waits, now))
			continue
		}
		for _, r := range []role{roleCaller, roleCallee} {
			if !s.needs(r) {
				continue
			}
			if len(s.obs[r].saw) == 0 {
				t.violateLocked(vMissing, "%s (%s): outcome %s, %s never saw it", s.id, s.p.b, s.outcome, r)
			} else if s.outcome == outAccepted && !s.obs[r].ended {
				t.violateLocked(vMissing, "%s (%s): call never ended at the %s", s.id, s.p.b, r)
			}
		}
	}
	return out
}

// violations returns the count, counts by kind and samples.
func (t *tracker) violations() (int64, map[string]int64, []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	kinds := map[string]int64{}
	for k, v := range t.byKind {
		kinds[k] = v
	}
	return t.viol, kinds, append([]string{}, t.samples...)
}
