package lifecycle

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/protocol"
)

var (
	t0       = time.UnixMilli(1_000_000)
	timeouts = Timeouts{Offline: 30 * time.Second, Expire: 60 * time.Second, Accept: 10 * time.Second}
)

// at builds a record in the given state as the real transitions would leave it.
func at(state protocol.State, call protocol.CallState) Record {
	r := New("inv1", "alice", "a1", "bob", "hi", "ch", timeouts, t0)
	r.Rearm = false
	switch state {
	case protocol.StateReceived:
		r.State, r.ReceivedAt, r.CalleeDevice = state, t0.UnixMilli(), "b1"
		r.Deadline = t0.Add(timeouts.Expire).UnixMilli()
	case protocol.StateAccepting:
		r.State, r.ReceivedAt, r.AnsweredAt, r.CalleeDevice, r.Response = state, t0.UnixMilli(), t0.UnixMilli(), "b1", "yes"
		r.Deadline = t0.Add(timeouts.Accept).UnixMilli()
	case protocol.StateAccepted:
		r.State, r.CalleeDevice, r.Response, r.CallState, r.Deadline = state, "b1", "yes", call, 0
		if call == protocol.CallEnded {
			r.Reason, r.EndedBy = protocol.ReasonHangup, "alice"
		}
	case protocol.StateRefused:
		r.State, r.CalleeDevice, r.Response, r.Deadline = state, "b1", "no", 0
	case protocol.StateCanceled:
		r.State, r.Deadline = state, 0
	case protocol.StateFailed:
		r.State, r.Reason, r.Deadline = state, protocol.ReasonPeerOffline, 0
	}
	return r
}

type outcome struct {
	state protocol.State
	call  protocol.CallState
	err   protocol.Code // "" = no error
	write bool          // a new revision must be written
}

// TestApplyTable covers every (state, action) pair with the legitimate actor,
// plus the wrong actor for each party action.
func TestApplyTable(t *testing.T) {
	S, R, AG, A, RF, C, F := protocol.StateSent, protocol.StateReceived, protocol.StateAccepting,
		protocol.StateAccepted, protocol.StateRefused, protocol.StateCanceled, protocol.StateFailed
	act := map[Kind]Action{
		Ack:          {Kind: Ack, User: "bob", Device: "b1"},
		Accept:       {Kind: Accept, User: "bob", Device: "b1", Response: "yes"},
		Refuse:       {Kind: Refuse, User: "bob", Device: "b1", Response: "no"},
		Cancel:       {Kind: Cancel, User: "alice", Device: "a1"},
		AckAccept:    {Kind: AckAccept, User: "alice", Device: "a1"},
		Hangup:       {Kind: Hangup, User: "bob", Device: "b1"},
		Timeout:      {Kind: Timeout},
		PresenceLost: {Kind: PresenceLost, User: "alice"},
	}
	type row struct {
		from protocol.State
		call protocol.CallState
		kind Kind
		want outcome
	}
	ok := func(s protocol.State) outcome { return outcome{state: s, write: true} }
	same := func(s protocol.State) outcome { return outcome{state: s} }
	fail := func(s protocol.State, c protocol.Code) outcome { return outcome{state: s, err: c} }
	active, ended := protocol.CallActive, protocol.CallEnded
	rows := []row{
		{S, "", Ack, ok(R)}, {S, "", Accept, ok(AG)}, {S, "", Refuse, ok(RF)}, {S, "", Cancel, ok(C)},
		{S, "", AckAccept, fail(S, protocol.CodeInvalidArgument)}, {S, "", Hangup, fail(S, protocol.CodeInvalidArgument)},
		{S, "", Timeout, ok(F)}, {S, "", PresenceLost, ok(F)},

		{R, "", Ack, same(R)}, {R, "", Accept, ok(AG)}, {R, "", Refuse, ok(RF)}, {R, "", Cancel, ok(C)},
		{R, "", AckAccept, fail(R, protocol.CodeInvalidArgument)}, {R, "", Hangup, fail(R, protocol.CodeInvalidArgument)},
		{R, "", Timeout, ok(F)}, {R, "", PresenceLost, ok(F)},

		{AG, "", Ack, same(AG)}, {AG, "", Accept, same(AG)}, {AG, "", Refuse, fail(AG, protocol.CodeAlreadyAccept)},
		{AG, "", Cancel, fail(AG, protocol.CodeAlreadyAccept)}, {AG, "", AckAccept, outcome{state: A, call: active, write: true}},
		{AG, "", Hangup, outcome{state: A, call: ended, write: true}}, {AG, "", Timeout, ok(F)}, {AG, "", PresenceLost, ok(F)},

		{A, active, Ack, same(A)}, {A, active, Accept, same(A)}, {A, active, Refuse, fail(A, protocol.CodeAlreadyAccept)},
		{A, active, Cancel, fail(A, protocol.CodeAlreadyAccept)}, {A, active, AckAccept, same(A)},
		{A, active, Hangup, outcome{state: A, call: ended, write: true}},
		{A, active, Timeout, same(A)}, // no max duration configured: no deadline, a stale timer
		{A, active, PresenceLost, outcome{state: A, call: ended, write: true}},

		{A, ended, Ack, same(A)}, {A, ended, Accept, same(A)}, {A, ended, Refuse, fail(A, protocol.CodeAlreadyAccept)},
		{A, ended, Cancel, fail(A, protocol.CodeAlreadyAccept)}, {A, ended, AckAccept, same(A)},
		{A, ended, Hangup, same(A)}, {A, ended, Timeout, same(A)}, {A, ended, PresenceLost, same(A)},
	}
	for _, s := range []protocol.State{RF, C, F} {
		for _, k := range Kinds {
			want := fail(s, protocol.CodeAlreadyEnd)
			switch {
			case k == Timeout || k == PresenceLost:
				want = same(s)
			case k == Refuse && s == RF, k == Cancel && s == C:
				want = same(s) // the same actor retrying what already took effect
			}
			rows = append(rows, row{s, "", k, want})
		}
	}
	seen := map[string]bool{}
	for _, rw := range rows {
		name := fmt.Sprintf("%s%s/%s", rw.from, rw.call, rw.kind)
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			r := at(rw.from, rw.call)
			now := t0.Add(time.Second)
			if rw.kind == Timeout {
				now = t0.Add(time.Hour) // past every deadline
			}
			next, changed, err := Apply(r, act[rw.kind], now)
			if rw.want.err != "" {
				if protocol.CodeOf(err) != rw.want.err {
					t.Fatalf("err %v, want code %s", err, rw.want.err)
				}
				var pe *protocol.Error
				if errors.As(err, &pe) && (rw.want.err == protocol.CodeAlreadyEnd || rw.want.err == protocol.CodeAlreadyAccept) && pe.State != rw.from {
					t.Fatalf("error names state %q, want %q", pe.State, rw.from)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if changed != rw.want.write {
				t.Fatalf("changed=%v, want %v", changed, rw.want.write)
			}
			if next.State != rw.want.state {
				t.Fatalf("state %s, want %s", next.State, rw.want.state)
			}
			if rw.want.call != "" && next.CallState != rw.want.call {
				t.Fatalf("call state %s, want %s", next.CallState, rw.want.call)
			}
			if next.Live() && next.State != protocol.StateAccepted && next.Deadline == 0 {
				t.Fatalf("live %s without a deadline", next.State)
			}
			if !next.Live() && next.Deadline != 0 {
				t.Fatalf("finished record keeps deadline %d", next.Deadline)
			}
		})
	}
	// Every (state, action) pair is covered.
	for _, s := range protocol.States {
		calls := []protocol.CallState{""}
		if s == A {
			calls = []protocol.CallState{active, ended}
		}
		for _, c := range calls {
			for _, k := range Kinds {
				if !seen[fmt.Sprintf("%s%s/%s", s, c, k)] {
					t.Errorf("no row for %s%s/%s", s, c, k)
				}
			}
		}
	}
}

func TestWrongActor(t *testing.T) {
	r := at(protocol.StateReceived, "")
	for _, a := range []Action{
		{Kind: Accept, User: "alice", Device: "a1"}, // the caller may not accept
		{Kind: Refuse, User: "alice", Device: "a1"},
		{Kind: Ack, User: "alice", Device: "a1"},
		{Kind: Cancel, User: "bob", Device: "b1"}, // the callee may not cancel
		{Kind: AckAccept, User: "bob", Device: "b1"},
		{Kind: Accept, User: "mallory", Device: "m1"}, // nor may a stranger
		{Kind: Cancel, User: "mallory", Device: "m1"},
		{Kind: Hangup, User: "mallory", Device: "m1"},
	} {
		if _, _, err := Apply(r, a, t0); !errors.Is(err, protocol.ErrForbidden) {
			t.Errorf("%s by %s: %v, want FORBIDDEN", a.Kind, a.User, err)
		}
	}
}

func TestTimeoutReasons(t *testing.T) {
	late := t0.Add(time.Hour)
	for _, tc := range []struct {
		from   protocol.State
		online bool
		want   protocol.Reason
	}{
		{protocol.StateSent, false, protocol.ReasonPeerOffline},
		{protocol.StateSent, true, protocol.ReasonPeerNoResponse},
		{protocol.StateReceived, true, protocol.ReasonInvitationExpire},
		{protocol.StateAccepting, true, protocol.ReasonAcceptFailure},
	} {
		next, _, err := Apply(at(tc.from, ""), Action{Kind: Timeout, CalleeOnline: tc.online}, late)
		if err != nil || next.State != protocol.StateFailed || next.Reason != tc.want {
			t.Errorf("%s online=%v: %s %s %v, want FAILED %s", tc.from, tc.online, next.State, next.Reason, err, tc.want)
		}
	}
	// Not yet due: the timer fired early or the deadline moved later.
	if _, _, err := Apply(at(protocol.StateSent, ""), Action{Kind: Timeout}, t0); !errors.Is(err, ErrNotDue) {
		t.Errorf("early timeout: %v, want ErrNotDue", err)
	}
	// Max call duration ends a call.
	r := at(protocol.StateAccepted, protocol.CallActive)
	r.Deadline = t0.Add(time.Minute).UnixMilli()
	next, _, err := Apply(r, Action{Kind: Timeout}, late)
	if err != nil || next.CallState != protocol.CallEnded || next.Reason != protocol.ReasonMaxDuration {
		t.Errorf("max duration: %+v %v", next.Invitation, err)
	}
}

func TestPresenceLostCalleeKeepsWaiting(t *testing.T) {
	for _, s := range []protocol.State{protocol.StateSent, protocol.StateReceived} {
		r := at(s, "")
		next, changed, err := Apply(r, Action{Kind: PresenceLost, User: "bob"}, t0)
		if err != nil || changed || next.State != s {
			t.Errorf("callee lost in %s: changed=%v state=%s err=%v, want unchanged", s, changed, next.State, err)
		}
	}
	next, _, _ := Apply(at(protocol.StateAccepting, ""), Action{Kind: PresenceLost, User: "bob"}, t0)
	if next.State != protocol.StateFailed || next.Reason != protocol.ReasonPeerOffline {
		t.Errorf("callee lost while accepting: %s %s", next.State, next.Reason)
	}
}

func TestIdempotentAcceptOtherDevice(t *testing.T) {
	r := at(protocol.StateAccepting, "")
	if _, changed, err := Apply(r, Action{Kind: Accept, User: "bob", Device: "b1", Response: "yes"}, t0); err != nil || changed {
		t.Fatalf("same device retry: changed=%v err=%v", changed, err)
	}
	if _, _, err := Apply(r, Action{Kind: Accept, User: "bob", Device: "b2", Response: "yes"}, t0); !errors.Is(err, protocol.ErrAlreadyAccept) {
		t.Fatalf("other device: %v, want ALREADY_ACCEPT", err)
	}
}

func TestTimerArming(t *testing.T) {
	r := New("i", "a", "d", "b", "", "", timeouts, t0)
	if !r.Rearm || r.TimerAt != r.Deadline {
		t.Fatalf("new invitation must arm its offline timer: %+v", r)
	}
	// A later deadline (expire after receipt) rides on the armed timer.
	recv, _, _ := Apply(r, Action{Kind: Ack, User: "b", Device: "x"}, t0.Add(time.Second))
	if recv.Rearm || recv.TimerAt != r.TimerAt {
		t.Fatalf("later deadline must not re-arm: %+v", recv)
	}
	// An earlier one (accept-ack) re-arms.
	short := timeouts
	short.Accept = time.Second
	recv.Timeouts = short
	acc, _, _ := Apply(recv, Action{Kind: Accept, User: "b", Device: "x"}, t0.Add(2*time.Second))
	if !acc.Rearm || acc.TimerAt != acc.Deadline {
		t.Fatalf("earlier deadline must re-arm: %+v", acc)
	}
	if got := Rearmed(recv); !got.Rearm || got.TimerAt != recv.Deadline || !got.Quiet || Events(got) != nil {
		t.Fatalf("Rearmed must re-arm quietly: %+v", got)
	}
	if next, _, _ := Apply(Rearmed(recv), Action{Kind: Cancel, User: "a", Device: "d"}, t0.Add(2*time.Second)); next.Quiet {
		t.Fatal("a real transition after a quiet one must not be quiet")
	}
}

func TestEvents(t *testing.T) {
	names := func(r Record) string {
		s := ""
		for _, n := range Events(r) {
			s += fmt.Sprintf("%s:%s ", n.User, n.Event.Type)
		}
		return s
	}
	for _, tc := range []struct {
		r    Record
		want string
	}{
		{at(protocol.StateSent, ""), "bob:Invited "},
		{at(protocol.StateReceived, ""), "alice:ReceivedByPeer "},
		{at(protocol.StateAccepting, ""), "alice:Accepted bob:Accepting "},
		{at(protocol.StateAccepted, protocol.CallActive), "alice:Accepted bob:Accepted "},
		{at(protocol.StateAccepted, protocol.CallEnded), "alice:CallEnded bob:CallEnded "},
		{at(protocol.StateRefused, ""), "alice:Refused bob:Refused "},
		{NewBusy("i", "alice", "a1", "bob", "", t0), "alice:Refused "},
		{at(protocol.StateCanceled, ""), "alice:Canceled bob:Canceled "},
		{NewMerged("i", "alice", "a1", "bob", "", "j", t0), "alice:Canceled "}, // glare: bob has his own call
		{at(protocol.StateFailed, ""), "alice:Failure bob:Failure "},
	} {
		if got := names(tc.r); got != tc.want {
			t.Errorf("%s/%s: %q, want %q", tc.r.State, tc.r.CallState, got, tc.want)
		}
	}
}
