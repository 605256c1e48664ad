package lifecycle

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/protocol"
)

var callees = []string{"bob", "carol", "dave"}

func noneBusy(string) bool { return false }

// group plays actions on a fresh group invitation from alice to bob, carol
// and dave (dave busy if busyDave), each a millisecond apart, failing the
// test if one is refused: the record as real transitions leave it.
func group(t *testing.T, mode protocol.Mode, busyDave bool, steps ...Action) Record {
	t.Helper()
	busy := func(u string) bool { return busyDave && u == "dave" }
	r := NewGroup("g1", "alice", "a1", mode, callees, busy, "hi", "ch", timeouts, t0)
	for i, a := range steps {
		next, _, err := Apply(r, a, t0.Add(time.Duration(i+1)*time.Millisecond))
		if err != nil {
			t.Fatalf("setup step %d (%s by %s): %v", i, a.Kind, a.User, err)
		}
		r = next
	}
	return r
}

func by(k Kind, user string) Action {
	return Action{Kind: k, User: user, Device: user[:1] + "1", Response: "r"}
}

// TestNewGroup: every callee rings but the busy one; all busy ends at once.
func TestNewGroup(t *testing.T) {
	r := group(t, protocol.ModeFirst, true)
	if r.State != protocol.StateSent || r.Callee != "" || !r.Live() || r.Deadline != t0.Add(timeouts.Offline).UnixMilli() || !r.Rearm {
		t.Fatalf("new group: %+v", r.Invitation)
	}
	if l := r.Leg("dave"); l.State != protocol.StateRefused || l.Reason != protocol.ReasonBusy {
		t.Fatalf("busy leg: %+v", l)
	}
	if !slices.Equal(r.Touched, []string{"bob", "carol"}) {
		t.Fatalf("told: %v, want bob and carol (a busy callee is not disturbed)", r.Touched)
	}
	all := NewGroup("g2", "alice", "a1", protocol.ModeJoin, callees, func(string) bool { return true }, "hi", "ch", timeouts, t0)
	if all.State != protocol.StateRefused || all.Reason != protocol.ReasonBusy || all.Live() || HoldsLine(all, "alice") {
		t.Fatalf("all busy: %+v", all.Invitation)
	}
}

// TestGroupTable covers each action on each situation a callee's leg (or
// the caller) can be in, in both modes: the acting leg's state after, the
// invitation's state after, or the error.
func TestGroupTable(t *testing.T) {
	S, R, AG, A, RF, C, F := protocol.StateSent, protocol.StateReceived, protocol.StateAccepting,
		protocol.StateAccepted, protocol.StateRefused, protocol.StateCanceled, protocol.StateFailed
	first, join := protocol.ModeFirst, protocol.ModeJoin
	bobAck, bobAccept, bobRefuse, bobHangup := by(Ack, "bob"), by(Accept, "bob"), by(Refuse, "bob"), by(Hangup, "bob")
	carolAccept, carolHangup := by(Accept, "carol"), by(Hangup, "carol")
	cancel, aliceHangup, ackAccept := by(Cancel, "alice"), by(Hangup, "alice"), by(AckAccept, "alice")
	type row struct {
		name  string
		mode  protocol.Mode
		setup []Action
		act   Action
		leg   protocol.State // bob's leg after ("" : not checked)
		why   protocol.Reason
		state protocol.State // the invitation's state after
		call  protocol.CallState
		err   protocol.Code
	}
	rows := []row{
		// Ringing, either mode.
		{"ack", first, nil, bobAck, R, "", R, "", ""},
		{"ack twice", first, []Action{bobAck}, bobAck, R, "", R, "", ""},
		{"refuse", first, nil, bobRefuse, RF, "", S, "", ""},
		{"refuse twice", first, []Action{bobRefuse}, bobRefuse, RF, "", S, "", ""},
		{"refuse from another device", first, []Action{bobRefuse}, Action{Kind: Refuse, User: "bob", Device: "b2"}, RF, "", S, "", protocol.CodeAlreadyEnd},
		{"accept after refusing", first, []Action{bobRefuse}, bobAccept, RF, "", S, "", protocol.CodeAlreadyEnd},
		{"ack after refusing", first, []Action{bobRefuse}, bobAck, RF, "", S, "", protocol.CodeAlreadyEnd},
		{"cancel", first, nil, cancel, C, "", C, "", ""},
		{"cancel twice", first, []Action{cancel}, cancel, C, "", C, "", ""},
		{"accept after cancel", first, []Action{cancel}, bobAccept, C, "", C, "", protocol.CodeAlreadyEnd},
		{"callee cancels", first, nil, by(Cancel, "bob"), S, "", S, "", protocol.CodeForbidden},
		{"caller accepts", first, nil, by(Accept, "alice"), S, "", S, "", protocol.CodeForbidden},
		{"stranger accepts", first, nil, by(Accept, "eve"), S, "", S, "", protocol.CodeForbidden},
		{"busy callee accepts", first, nil, by(Accept, "dave"), "", "", S, "", protocol.CodeAlreadyEnd},
		{"hangup while ringing", first, nil, bobHangup, S, "", S, "", protocol.CodeInvalidArgument},
		{"ackaccept while ringing", first, nil, ackAccept, S, "", S, "", protocol.CodeInvalidArgument},
		{"all refuse", first, []Action{by(Refuse, "carol")}, bobRefuse, RF, "", RF, "", ""},
		{"caller offline", first, []Action{bobAck}, Action{Kind: PresenceLost, User: "alice"}, F, protocol.ReasonPeerOffline, F, "", ""},
		{"ringing callee offline", first, nil, Action{Kind: PresenceLost, User: "bob"}, S, "", S, "", ""},
		{"oversize response", first, nil, Action{Kind: Accept, User: "bob", Device: "b1", Response: string(make([]byte, protocol.MaxLegResponseLen+1))}, S, "", S, "", protocol.CodeInvalidArgument},

		// FIRST: the first accept wins.
		{"accept wins", first, []Action{bobAck}, bobAccept, A, "", AG, "", ""},
		{"winner accepts again", first, []Action{bobAccept}, bobAccept, A, "", AG, "", ""},
		{"loser accepts", first, []Action{carolAccept}, bobAccept, C, protocol.ReasonAnsweredElsewhere, AG, "", protocol.CodeAlreadyAccept},
		{"loser refuses", first, []Action{carolAccept}, bobRefuse, C, protocol.ReasonAnsweredElsewhere, AG, "", protocol.CodeAlreadyAccept},
		{"loser acks", first, []Action{carolAccept}, bobAck, C, protocol.ReasonAnsweredElsewhere, AG, "", protocol.CodeAlreadyAccept},
		{"loser hangs up", first, []Action{carolAccept, ackAccept}, bobHangup, C, protocol.ReasonAnsweredElsewhere, A, protocol.CallActive, protocol.CodeAlreadyAccept},
		{"loser goes offline", first, []Action{carolAccept, ackAccept}, Action{Kind: PresenceLost, User: "bob"}, C, protocol.ReasonAnsweredElsewhere, A, protocol.CallActive, ""},
		{"caller acks the winner", first, []Action{bobAccept}, ackAccept, A, "", A, protocol.CallActive, ""},
		{"cancel after the accept", first, []Action{bobAccept}, cancel, A, "", AG, "", protocol.CodeAlreadyAccept},
		{"winner hangs up", first, []Action{bobAccept, ackAccept}, bobHangup, A, protocol.ReasonHangup, A, protocol.CallEnded, ""},

		// JOIN: everyone who accepts joins.
		{"first join starts the call", join, []Action{bobAck}, bobAccept, A, "", A, protocol.CallActive, ""},
		{"second join", join, []Action{carolAccept}, bobAccept, A, "", A, protocol.CallActive, ""},
		{"join twice", join, []Action{bobAccept}, bobAccept, A, "", A, protocol.CallActive, ""},
		{"join from another device", join, []Action{bobAccept}, Action{Kind: Accept, User: "bob", Device: "b2", Response: "r"}, A, "", A, protocol.CallActive, protocol.CodeAlreadyAccept},
		{"late join after refusing", join, []Action{bobRefuse, carolAccept}, bobAccept, A, "", A, protocol.CallActive, ""},
		{"busy callee joins", join, []Action{carolAccept}, by(Accept, "dave"), "", "", A, protocol.CallActive, ""},
		{"leave, call goes on", join, []Action{bobAccept, carolAccept}, bobHangup, A, protocol.ReasonLeft, A, protocol.CallActive, ""},
		{"leave twice", join, []Action{bobAccept, carolAccept, bobHangup}, bobHangup, A, protocol.ReasonLeft, A, protocol.CallActive, protocol.CodeAlreadyEnd},
		{"join again after leaving", join, []Action{bobAccept, carolAccept, bobHangup}, bobAccept, A, "", A, protocol.CallActive, ""},
		{"last callee leaves: call ends", join, []Action{bobAccept}, bobHangup, A, protocol.ReasonLeft, A, protocol.CallEnded, ""},
		{"caller leaves, two remain", join, []Action{bobAccept, carolAccept}, aliceHangup, A, "", A, protocol.CallActive, ""},
		{"caller leaves twice", join, []Action{bobAccept, carolAccept, aliceHangup}, aliceHangup, A, "", A, protocol.CallActive, protocol.CodeAlreadyEnd},
		{"caller leaves, one remains", join, []Action{carolAccept}, aliceHangup, C, protocol.ReasonCallEnded, A, protocol.CallEnded, ""},
		{"ringing leg when the call ends", join, []Action{carolAccept}, carolHangup, C, protocol.ReasonCallEnded, A, protocol.CallEnded, ""},
		{"joined leg when the call ends", join, []Action{bobAccept, carolAccept, bobHangup}, carolHangup, A, protocol.ReasonLeft, A, protocol.CallEnded, ""},
		{"ringing callee leaves", join, []Action{carolAccept}, bobHangup, S, "", A, protocol.CallActive, protocol.CodeInvalidArgument},
		{"cancel a live call", join, []Action{carolAccept}, cancel, S, "", A, protocol.CallActive, protocol.CodeAlreadyAccept},
		{"ackaccept a join call", join, []Action{carolAccept}, ackAccept, S, "", A, protocol.CallActive, ""},
		{"joined callee offline", join, []Action{bobAccept, carolAccept}, Action{Kind: PresenceLost, User: "bob"}, A, protocol.ReasonPeerOffline, A, protocol.CallActive, ""},
		{"caller offline in the call", join, []Action{bobAccept, carolAccept}, Action{Kind: PresenceLost, User: "alice"}, A, "", A, protocol.CallActive, ""},
		{"join after the call ended", join, []Action{carolAccept, carolHangup}, bobAccept, C, protocol.ReasonCallEnded, A, protocol.CallEnded, protocol.CodeAlreadyEnd},
		{"leave after the call ended", join, []Action{bobAccept, bobHangup}, bobHangup, A, protocol.ReasonLeft, A, protocol.CallEnded, protocol.CodeAlreadyEnd},
	}
	for _, tc := range rows {
		t.Run(fmt.Sprintf("%s/%s", tc.mode, tc.name), func(t *testing.T) {
			r := group(t, tc.mode, true, tc.setup...)
			next, changed, err := Apply(r, tc.act, t0.Add(time.Second))
			var pe *protocol.Error
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("error %v, want none", err)
			case tc.err != "" && (!errors.As(err, &pe) || pe.Code != tc.err):
				t.Fatalf("error %v, want %s", err, tc.err)
			case err != nil && (changed || next.Revision != r.Revision || next.State != r.State):
				t.Fatalf("refused, yet changed=%v", changed)
			}
			if l := next.Leg("bob"); tc.leg != "" && (l.State != tc.leg || l.Reason != tc.why) {
				t.Fatalf("bob's leg %s %s, want %s %s", l.State, l.Reason, tc.leg, tc.why)
			}
			if next.State != tc.state || next.CallState != tc.call {
				t.Fatalf("invitation %s/%s, want %s/%s", next.State, next.CallState, tc.state, tc.call)
			}
		})
	}
}

// TestGroupTimeouts: each ringing leg times out on its own deadline, with
// the reason its own callee earned; the invitation fails with the best.
func TestGroupTimeouts(t *testing.T) {
	r := group(t, protocol.ModeFirst, false, by(Ack, "carol"))
	at := time.UnixMilli(r.Deadline)
	if _, _, err := Apply(r, Action{Kind: Timeout}, at.Add(-time.Millisecond)); !errors.Is(err, ErrNotDue) {
		t.Fatalf("early timeout: %v", err)
	}
	next, changed, err := Apply(r, Action{Kind: Timeout, Online: []string{"bob"}}, at)
	if err != nil || !changed {
		t.Fatalf("timeout: %v", err)
	}
	if b, d, c := next.Leg("bob"), next.Leg("dave"), next.Leg("carol"); b.Reason != protocol.ReasonPeerNoResponse ||
		d.Reason != protocol.ReasonPeerOffline || !c.Ringing() {
		t.Fatalf("legs after the offline window: %+v %+v %+v", b, d, c)
	}
	if next.State != protocol.StateReceived || next.Deadline != c0(r).Add(timeouts.Expire).UnixMilli() || !slices.Equal(next.Touched, []string{"bob", "dave"}) {
		t.Fatalf("invitation after the first timeout: %s deadline %d touched %v", next.State, next.Deadline, next.Touched)
	}
	last, _, err := Apply(next, Action{Kind: Timeout}, time.UnixMilli(next.Deadline))
	if err != nil || last.State != protocol.StateFailed || last.Reason != protocol.ReasonInvitationExpire || last.Live() {
		t.Fatalf("last timeout: %s %s %v", last.State, last.Reason, err)
	}
}

// A FIRST winner whose call never starts (the caller does not
// acknowledge the accept) ends the way the invitation does: its own view
// and the caller's leg of it agree.
func TestFirstWinnerEndsAsTheInvitation(t *testing.T) {
	r := group(t, protocol.ModeFirst, false, by(Accept, "bob"))
	next, _, err := Apply(r, Action{Kind: Timeout}, time.UnixMilli(r.Deadline))
	if err != nil {
		t.Fatal(err)
	}
	l, v := next.Leg("bob"), next.Invitation.For("bob")
	if next.State != protocol.StateFailed || next.Reason != protocol.ReasonAcceptFailure ||
		l.State != v.State || l.Reason != v.Reason || l.EndedAt == 0 || l.Live() {
		t.Fatalf("invitation %s %s; bob's leg %+v; bob's view %s %s", next.State, next.Reason, *l, v.State, v.Reason)
	}
}

// c0 is when carol's ack happened in group's setup.
func c0(Record) time.Time { return t0.Add(time.Millisecond) }

// TestAddLegs: who may invite into a JOIN invitation, and whom.
func TestAddLegs(t *testing.T) {
	live := group(t, protocol.ModeJoin, false, by(Accept, "bob"), by(Refuse, "carol"))
	now := t0.Add(time.Second)
	next, changed, err := AddLegs(live, "bob", []string{"erin", "carol"}, func(u string) bool { return u == "erin" }, 16, now)
	if err != nil || !changed {
		t.Fatal(changed, err)
	}
	// A retried invite (carol rings, invited by bob) changes nothing.
	if again, changed, err := AddLegs(next, "bob", []string{"carol"}, noneBusy, 16, now); err != nil || changed || again.Revision != next.Revision {
		t.Fatalf("retried invite: changed=%v, %v", changed, err)
	}
	if _, _, err := AddLegs(next, "alice", []string{"carol"}, noneBusy, 16, now); err == nil {
		t.Fatal("alice re-invites carol, whom bob invited and who rings: no error")
	}
	if e, c := next.Leg("erin"), next.Leg("carol"); e.Reason != protocol.ReasonBusy || c.State != protocol.StateSent || c.InvitedBy != "bob" {
		t.Fatalf("added legs: %+v %+v", e, c)
	}
	if !slices.Equal(next.Touched, []string{"carol"}) || next.Deadline != next.Leg("dave").Deadline {
		t.Fatalf("touched %v, deadline %d", next.Touched, next.Deadline)
	}
	for _, tc := range []struct {
		r     Record
		by    string
		users []string
		max   int
		code  protocol.Code
	}{
		{group(t, protocol.ModeFirst, false), "alice", []string{"erin"}, 16, protocol.CodeInvalidArgument},
		{live, "dave", []string{"erin"}, 16, protocol.CodeForbidden},      // ringing, not in the call
		{live, "eve", []string{"erin"}, 16, protocol.CodeForbidden},       // a stranger
		{live, "bob", []string{"dave"}, 16, protocol.CodeInvalidArgument}, // still ringing
		{live, "bob", []string{"alice"}, 16, protocol.CodeInvalidArgument},
		{live, "alice", []string{"erin", "frank"}, 4, protocol.CodeInvalidArgument},
		{group(t, protocol.ModeJoin, false, by(Cancel, "alice")), "alice", []string{"erin"}, 16, protocol.CodeAlreadyEnd},
	} {
		var pe *protocol.Error
		if _, _, err := AddLegs(tc.r, tc.by, tc.users, noneBusy, tc.max, now); !errors.As(err, &pe) || pe.Code != tc.code {
			t.Errorf("%s invites %v: %v, want %s", tc.by, tc.users, err, tc.code)
		}
	}
}

// TestGroupRandomRaces plays random actions by random parties on group
// invitations and checks after each: a callee's leg that ended never
// changes its outcome (except a JOIN callee joining again), a FIRST
// invitation has at most one winner, a JOIN call is on only with two in
// it, the invitation's lines are held exactly while something is live,
// and every leg is decided once the invitation ended.
func TestGroupRandomRaces(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	users := []string{"alice", "bob", "carol", "dave", "eve"}
	for round := 0; round < 3000; round++ {
		mode := []protocol.Mode{protocol.ModeFirst, protocol.ModeJoin}[round%2]
		r := NewGroup("g", "alice", "a1", mode, callees, func(u string) bool { return rng.IntN(6) == 0 && u == "dave" }, "", "", timeouts, t0)
		now := t0
		for step := 0; step < 25 && r.Live(); step++ {
			now = now.Add(time.Duration(rng.IntN(40_000)) * time.Millisecond)
			a := Action{Kind: Kinds[rng.IntN(len(Kinds))], User: users[rng.IntN(len(users))]}
			a.Device = a.User[:1] + "1"
			next, changed, err := Apply(r, a, now)
			if errors.Is(err, ErrNotDue) || err != nil {
				if changed {
					t.Fatalf("round %d: error %v with a change", round, err)
				}
				continue
			}
			checkGroupStep(t, round, r, next, a)
			if changed {
				r = next
			}
		}
	}
}

func checkGroupStep(t *testing.T, round int, prev, next Record, a Action) {
	t.Helper()
	winners := 0
	for i, l := range next.Legs {
		p := prev.Legs[i]
		if l.State == protocol.StateAccepted {
			winners++
		}
		if !p.Live() && p.EndedAt != 0 && (l.State != p.State || l.Reason != p.Reason) && !(next.Mode == protocol.ModeJoin && l.Joined()) {
			t.Fatalf("round %d: %s's ended leg %s/%s became %s/%s on %s by %s", round, l.User, p.State, p.Reason, l.State, l.Reason, a.Kind, a.User)
		}
		if !next.Live() && l.Live() {
			t.Fatalf("round %d: invitation %s/%s ended with %s's leg live (%s)", round, next.State, next.CallState, l.User, l.State)
		}
		if HoldsLine(next, l.User) != (next.Live() && l.Live() && (next.Callee == "" || next.Callee == l.User)) {
			t.Fatalf("round %d: %s's line held=%v with its leg %s and the invitation %s", round, l.User, HoldsLine(next, l.User), l.State, next.State)
		}
	}
	if next.Mode == protocol.ModeFirst && winners > 1 {
		t.Fatalf("round %d: %d winners", round, winners)
	}
	if next.Mode == protocol.ModeJoin && next.CallState == protocol.CallActive && next.InCall() < 2 {
		t.Fatalf("round %d: call on with %d in it", round, next.InCall())
	}
	if next.Live() && next.Deadline == 0 && next.Mode == protocol.ModeFirst && next.State != protocol.StateAccepted {
		t.Fatalf("round %d: live %s invitation without a deadline", round, next.State)
	}
}

// TestGroupEveryPair applies every action, by every kind of actor (the
// caller, each callee whatever its leg's state, a stranger), to every
// situation the table builds, in both modes: each answer is a typed
// error that changes nothing, or a change that keeps the invariants of
// TestGroupRandomRaces.
func TestGroupEveryPair(t *testing.T) {
	setups := [][]Action{
		nil, {by(Ack, "bob")}, {by(Refuse, "bob")}, {by(Cancel, "alice")}, {by(Accept, "carol")},
		{by(Accept, "bob"), by(Accept, "carol")}, {by(Accept, "carol"), by(AckAccept, "alice")},
		{by(Accept, "bob"), by(Accept, "carol"), by(Hangup, "bob")}, {by(Accept, "bob"), by(Hangup, "bob")},
		{by(Accept, "bob"), by(Accept, "carol"), by(Hangup, "alice")}, {{Kind: PresenceLost, User: "alice"}},
	}
	n := 0
	for _, mode := range []protocol.Mode{protocol.ModeFirst, protocol.ModeJoin} {
		for _, setup := range setups {
			r := NewGroup("g1", "alice", "a1", mode, callees, func(u string) bool { return u == "dave" }, "hi", "ch", timeouts, t0)
			ok := true
			for i, a := range setup {
				next, _, err := Apply(r, a, t0.Add(time.Duration(i+1)*time.Millisecond))
				if err != nil {
					ok = false // not a situation of this mode
					break
				}
				r = next
			}
			if !ok {
				continue
			}
			for _, k := range Kinds {
				for _, u := range []string{"alice", "bob", "carol", "dave", "eve"} {
					for _, at := range []time.Time{t0.Add(time.Second), t0.Add(time.Hour)} {
						a := Action{Kind: k, User: u, Device: u[:1] + "1", Online: []string{"bob"}}
						next, changed, err := Apply(r, a, at)
						n++
						var pe *protocol.Error
						switch {
						case err != nil && !errors.As(err, &pe):
							t.Fatalf("%s %v: %s by %s: untyped error %v", mode, setup, k, u, err)
						case err != nil && changed:
							t.Fatalf("%s %v: %s by %s: error %v with a change", mode, setup, k, u, err)
						case err == nil && changed:
							checkGroupStep(t, n, r, next, a)
						}
					}
				}
			}
		}
	}
	t.Logf("%d (situation, action, actor, time) cases", n)
}
