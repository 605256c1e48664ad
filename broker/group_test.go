package broker_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
)

// sendGroup sends a group invitation from c and returns it.
func sendGroup(t *testing.T, c *ringertest.Client, mode protocol.Mode, callees ...string) *client.LocalInvitation {
	t.Helper()
	li := c.CreateGroupInvitation(mode, callees...)
	li.Content = "group"
	if err := li.Send(ringertest.Ctx(t)); err != nil {
		t.Fatalf("group send: %v", err)
	}
	return li
}

func code(err error) protocol.Code {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// Alice rings bob, carol and dave (who set himself busy): dave's leg is
// refused as busy at once and he hears nothing; carol accepts first and
// gets the call; bob stops ringing with ANSWERED_ELSEWHERE; alice followed
// every leg. The call holds alice's and carol's lines only.
func TestGroupFirstAcceptWins(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	ctx := ringertest.Ctx(t)
	alice, bob, carol, dave := env.Login("alice", "p"), env.Login("bob", "p"), env.Login("carol", "p"), env.Login("dave", "p")
	if err := dave.SetBusy(ctx, true); err != nil {
		t.Fatal(err)
	}
	li := sendGroup(t, alice, protocol.ModeFirst, "bob", "carol", "dave")
	if inv := li.Invitation(); inv.Leg("dave") == nil || inv.Leg("dave").Reason != protocol.ReasonBusy {
		t.Fatalf("dave's leg: %+v", inv.Legs)
	}
	ringB, ringC := bob.Rec.WaitRemote(t, li.ID), carol.Rec.WaitRemote(t, li.ID)
	if ringB.CallerID() != "alice" || ringB.Content() != "group" || ringB.Invitation().Callee != "bob" {
		t.Fatalf("bob's view: %+v", ringB.Invitation())
	}
	alice.Rec.Wait(t, "Leg "+li.ID+" bob RECEIVED")
	alice.Rec.Wait(t, "Leg "+li.ID+" carol RECEIVED")
	if err := ringC.Accept(ctx, "yes"); err != nil {
		t.Fatal(err)
	}
	alice.Rec.Wait(t, "Accepted "+li.ID+" yes")
	carol.Rec.Wait(t, "RemoteAccepted "+li.ID)
	bob.Rec.Wait(t, "RemoteCanceled "+li.ID)
	if v := ringB.Invitation(); v.State != protocol.StateCanceled || v.Reason != protocol.ReasonAnsweredElsewhere {
		t.Fatalf("bob's view after carol won: %s %s", v.State, v.Reason)
	}
	alice.Rec.Wait(t, "Leg "+li.ID+" bob CANCELED ANSWERED_ELSEWHERE")
	if err := ringB.Accept(ctx, ""); code(err) != protocol.CodeAlreadyAccept {
		t.Fatalf("bob accepts too late: %v, want ALREADY_ACCEPT", err)
	}
	if dave.Rec.Count("RemoteReceived "+li.ID) != 0 {
		t.Fatal("busy dave rang")
	}
	// Bob is free for another call; carol is not.
	erin := env.Login("erin", "p")
	if r := erin.Invite(t, "bob").Invitation(); r.Reason == protocol.ReasonBusy {
		t.Fatal("bob still busy after losing the group call")
	}
	if r := erin.Invite(t, "carol").Invitation(); r.Reason != protocol.ReasonBusy {
		t.Fatalf("carol in the call, yet erin's invitation: %s %s", r.State, r.Reason)
	}
	if err := alice.Hangup(ctx, li.ID); err != nil {
		t.Fatal(err)
	}
	carol.Rec.Wait(t, "CallEnded "+li.ID)
	if err := dave.SetBusy(ctx, false); err != nil {
		t.Fatal(err)
	}
	waitFree(t, env, "alice", "carol", "dave")
}

// Two callees accept at the same instant through two brokers, many
// times: exactly one gets the call, the other ALREADY_ACCEPT; every party
// ends up with the same legs.
func TestGroupFirstAcceptRaces(t *testing.T) {
	env := ringertest.StartBrokers(t, 2)
	firstAcceptRaces(t, env, 20)
}

// The same on a three-node cluster with R3 state, the brokers on
// different servers: the compare-and-set that picks the winner is the
// stream leader's, whichever server each accept came through.
func TestGroupFirstAcceptRacesR3(t *testing.T) {
	c, cfg := clusterR3(t)
	env := &ringertest.Env{T: t, URL: c.URLs()}
	for i := range 2 {
		bc := cfg
		bc.Name = fmt.Sprintf("b%d", i)
		env.Brokers = append(env.Brokers, ringertest.StartBroker(t, c.Servers[i].ClientURL(), bc))
	}
	for _, s := range c.Servers {
		ringertest.WaitServing(t, s.ClientURL())
	}
	firstAcceptRaces(t, env, 10)
}

func firstAcceptRaces(t *testing.T, env *ringertest.Env, rounds int) {
	ctx := ringertest.Ctx(t)
	alice, bob, carol := env.Login("alice", "p"), env.Login("bob", "p"), env.Login("carol", "p")
	wins := map[string]int{}
	for round := range rounds {
		li := sendGroup(t, alice, protocol.ModeFirst, "bob", "carol")
		rb, rc := bob.Rec.WaitRemote(t, li.ID), carol.Rec.WaitRemote(t, li.ID)
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := map[string]error{}
		var mu sync.Mutex
		for _, ri := range []*client.RemoteInvitation{rb, rc} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				err := ri.Accept(ctx, "")
				mu.Lock()
				errs[ri.Invitation().Callee] = err
				mu.Unlock()
			}()
		}
		close(start)
		wg.Wait()
		var winner string
		for u, err := range errs {
			switch code(err) {
			case "":
				if winner != "" {
					t.Fatalf("round %d: %s and %s both accepted", round, winner, u)
				}
				winner = u
			case protocol.CodeAlreadyAccept:
			default:
				t.Fatalf("round %d: %s's accept: %v", round, u, err)
			}
		}
		if winner == "" {
			t.Fatalf("round %d: nobody won: %v", round, errs)
		}
		wins[winner]++
		alice.Rec.Wait(t, "Accepted "+li.ID)
		got, err := alice.Get(ctx, li.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Callee != winner {
			t.Fatalf("round %d: the record's winner %s, the replies' %s", round, got.Callee, winner)
		}
		for _, l := range got.Legs {
			want := protocol.Reason(protocol.ReasonAnsweredElsewhere)
			if l.User == winner {
				want = ""
			}
			if l.Reason != want {
				t.Fatalf("round %d: %s's leg %s %s", round, l.User, l.State, l.Reason)
			}
		}
		if err := alice.Hangup(ctx, li.ID); err != nil {
			t.Fatal(err)
		}
		bob.Rec.Wait(t, "CallEnded "+li.ID, "RemoteCanceled "+li.ID)
		carol.Rec.Wait(t, "CallEnded "+li.ID, "RemoteCanceled "+li.ID)
	}
	t.Logf("wins: %v", wins)
	waitFree(t, env, "alice", "bob", "carol")
}

// A JOIN call: bob joins (the call starts), carol joins, alice leaves and
// the call goes on; carol invites dave, who joins late; bob leaves, then
// carol: dave alone, the call ends. Leaving twice is an error; every line
// is free at the end.
func TestGroupJoin(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	ctx := ringertest.Ctx(t)
	alice, bob, carol, dave := env.Login("alice", "p"), env.Login("bob", "p"), env.Login("carol", "p"), env.Login("dave", "p")
	li := sendGroup(t, alice, protocol.ModeJoin, "bob", "carol")
	rb, rc := bob.Rec.WaitRemote(t, li.ID), carol.Rec.WaitRemote(t, li.ID)
	if err := rb.Accept(ctx, ""); err != nil {
		t.Fatal(err)
	}
	alice.Rec.Wait(t, "Accepted "+li.ID)
	bob.Rec.Wait(t, "RemoteAccepted "+li.ID)
	if err := rc.Accept(ctx, ""); err != nil {
		t.Fatal(err)
	}
	carol.Rec.Wait(t, "RemoteAccepted "+li.ID)
	if err := li.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	alice.Rec.Wait(t, "CallEnded "+li.ID) // alice is out; the call is not
	if err := li.Leave(ctx); code(err) != protocol.CodeAlreadyEnd {
		t.Fatalf("alice leaves twice: %v, want ALREADY_END", err)
	}
	if inv, _ := bob.Get(ctx, li.ID); inv.CallState != protocol.CallActive || inv.InCall() != 2 {
		t.Fatalf("after alice left: %s, %d in the call", inv.CallState, inv.InCall())
	}
	if err := rc.Invite(ctx, "dave"); err != nil {
		t.Fatal(err)
	}
	rd := dave.Rec.WaitRemote(t, li.ID)
	if inv := rd.Invitation(); inv.Leg("dave").InvitedBy != "carol" {
		t.Fatalf("dave's legs: %+v", inv.Legs)
	}
	if err := rd.Accept(ctx, ""); err != nil {
		t.Fatal(err)
	}
	dave.Rec.Wait(t, "RemoteAccepted "+li.ID)
	if err := rb.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	bob.Rec.Wait(t, "CallEnded "+li.ID)
	if err := rb.Leave(ctx); code(err) != protocol.CodeAlreadyEnd {
		t.Fatalf("bob leaves twice: %v, want ALREADY_END", err)
	}
	// Out of the call, bob is free: erin's invitation rings him (and
	// rewrites his line, dropping the call's claim, which no longer holds).
	erin := env.Login("erin", "p")
	if r := erin.Invite(t, "bob"); r.Invitation().Reason == protocol.ReasonBusy {
		t.Fatal("bob busy after leaving the call")
	} else if err := r.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	// Bob rejoins while it lives: his line is claimed again, so he is
	// busy to others while in it; then he leaves again.
	if err := rb.Accept(ctx, ""); err != nil {
		t.Fatalf("bob joins again: %v", err)
	}
	if r := erin.Invite(t, "bob").Invitation(); r.Reason != protocol.ReasonBusy {
		t.Fatalf("bob back in the call, yet erin's invitation: %s %s", r.State, r.Reason)
	}
	if err := rb.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rc.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	dave.Rec.Wait(t, "CallEnded "+li.ID)
	final, err := alice.Get(ctx, li.ID)
	if err != nil {
		t.Fatal(err)
	}
	if final.CallState != protocol.CallEnded || final.Live() {
		t.Fatalf("final: %s/%s", final.State, final.CallState)
	}
	for _, l := range final.Legs {
		if l.Live() {
			t.Fatalf("%s's leg live after the call: %+v", l.User, l)
		}
	}
	waitFree(t, env, "alice", "bob", "carol", "dave", "erin")
}

// Legs time out on their own: bob is online but never acknowledges
// (PEER_NO_RESPONSE), carol is offline (PEER_OFFLINE); the invitation
// fails once both did, and no line stays held.
func TestGroupLegsTimeOut(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "p")
	bob := env.Login("bob", "p", client.WithoutAutoAck())
	li := sendGroup(t, alice, protocol.ModeJoin, "bob", "carol")
	bob.Rec.WaitRemote(t, li.ID)
	alice.Rec.Wait(t, "Leg "+li.ID+" bob FAILED PEER_NO_RESPONSE")
	alice.Rec.Wait(t, "Leg "+li.ID+" carol FAILED PEER_OFFLINE")
	alice.Rec.Wait(t, "Failure "+li.ID+" PEER_NO_RESPONSE")
	bob.Rec.Wait(t, "RemoteFailure "+li.ID+" PEER_NO_RESPONSE")
	waitFree(t, env, "alice", "bob", "carol")
}

// Every way to misuse a group gets its typed error.
func TestGroupBadInput(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	ctx := ringertest.Ctx(t)
	alice, bob, eve := env.Login("alice", "p"), env.Login("bob", "p"), env.Login("eve", "p")
	many := make([]string, 17)
	for i := range many {
		many[i] = fmt.Sprintf("u%d", i)
	}
	for _, tc := range []struct {
		name string
		li   *client.LocalInvitation
		want string
	}{
		{"duplicate callees", alice.CreateGroupInvitation(protocol.ModeFirst, "bob", "carol", "bob"), "named twice"},
		{"caller among its callees", alice.CreateGroupInvitation(protocol.ModeJoin, "bob", "alice"), "yourself"},
		{"more than the bound", alice.CreateGroupInvitation(protocol.ModeFirst, many...), "at most 16"},
		{"unknown mode", alice.CreateGroupInvitation("ALL", "bob"), "mode"},
		{"invalid callee", alice.CreateGroupInvitation(protocol.ModeFirst, "bob", "a b"), "callees[1]"},
		{"callee and callees", &client.LocalInvitation{Callee: "bob", Callees: []string{"carol"}}, "one or the other"},
	} {
		if tc.li.Callee != "" {
			tc.li = alice.CreateLocalInvitation("bob")
			tc.li.Callees = []string{"carol"}
		}
		err := tc.li.Send(ctx)
		if code(err) != protocol.CodeInvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want INVALID_ARGUMENT (%s)", tc.name, err, tc.want)
		}
	}
	if _, err := alice.Block(ctx, "alice"); code(err) != protocol.CodeInvalidArgument || !strings.Contains(err.Error(), "cannot block itself") {
		t.Errorf("block yourself: %v, want INVALID_ARGUMENT", err)
	}
	li := sendGroup(t, alice, protocol.ModeFirst, "bob")
	if err := eve.Accept(ctx, li.ID, ""); code(err) != protocol.CodeForbidden && code(err) != protocol.CodeNotFound {
		t.Errorf("a stranger joins: %v, want FORBIDDEN", err)
	}
	if err := eve.Client.Invite(ctx, li.ID, "carol"); code(err) != protocol.CodeNotFound {
		t.Errorf("a stranger invites: %v, want NOT_FOUND", err)
	}
	if err := li.Invite(ctx, "carol"); code(err) != protocol.CodeInvalidArgument {
		t.Errorf("invite into a FIRST invitation: %v, want INVALID_ARGUMENT", err)
	}
	ri := bob.Rec.WaitRemote(t, li.ID)
	long := strings.Repeat("x", protocol.MaxLegResponseLen+1)
	if err := ri.Accept(ctx, long); code(err) != protocol.CodeInvalidArgument {
		t.Errorf("oversize group response: %v, want INVALID_ARGUMENT", err)
	}
	if err := li.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	jl := sendGroup(t, alice, protocol.ModeJoin, "bob")
	if err := jl.Invite(ctx, "bob"); err != nil || len(jl.Legs()) != 1 {
		t.Errorf("the caller invites again the callee it rings: %v, legs %v; want a no-op (a retry)", err, jl.Legs())
	}
	if err := jl.Invite(ctx, "alice"); code(err) != protocol.CodeInvalidArgument {
		t.Errorf("invite yourself: %v, want INVALID_ARGUMENT", err)
	}
	if err := jl.Leave(ctx); code(err) != protocol.CodeInvalidArgument {
		t.Errorf("leave a call not started: %v, want INVALID_ARGUMENT", err)
	}
	if err := jl.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	bob.Rec.Wait(t, "RemoteCanceled "+jl.ID)
}

// A broker dies (its connection cut, as kill -9 does) with group
// invitations ringing, some of them accepted by two callees at that very
// moment: each still ends with one winner, the others answered
// elsewhere, the JOIN ones time out leg by leg on the surviving broker,
// and no line stays held.
func TestGroupsSurviveABrokerKill(t *testing.T) {
	t.Parallel() // waits on timeouts and elections, with no latency bound: run beside another such test
	env := ringertest.StartBrokers(t, 2)
	ctx := ringertest.Ctx(t)
	const n = 6
	var users []string
	type party struct {
		caller     *ringertest.Client
		bob, carol *ringertest.Client
		first      *client.LocalInvitation
		join       *client.LocalInvitation
	}
	ps := make([]party, n)
	for i := range ps {
		p := &ps[i]
		p.caller = env.Login(fmt.Sprintf("a%d", i), "p")
		p.bob = env.Login(fmt.Sprintf("b%d", i), "p", client.WithoutAutoAck())
		p.carol = env.Login(fmt.Sprintf("c%d", i), "p", client.WithoutAutoAck())
		users = append(users, p.caller.User(), p.bob.User(), p.carol.User(), fmt.Sprintf("d%d", i))
		// Rings for long enough for every accept below to come first,
		// however slow the machine (the JOIN one times out as usual).
		p.first = p.caller.CreateGroupInvitation(protocol.ModeFirst, p.bob.User(), p.carol.User())
		p.first.Timeouts = &protocol.Timeouts{OfflineMs: 60_000}
		if err := p.first.Send(ctx); err != nil {
			t.Fatal(err)
		}
		p.join = sendGroup(t, p.caller, protocol.ModeJoin, fmt.Sprintf("d%d", i)) // nobody home: times out
	}
	var wg sync.WaitGroup
	results := make([][2]error, n)
	for i := range ps {
		p := &ps[i]
		rb, rc := p.bob.Rec.WaitRemote(t, p.first.ID), p.carol.Rec.WaitRemote(t, p.first.ID)
		for k, ri := range []*client.RemoteInvitation{rb, rc} {
			wg.Add(1)
			go func() { defer wg.Done(); results[i][k] = ri.Accept(ctx, "") }()
		}
		if i == n/2 {
			env.Brokers[0].Kill()
		}
	}
	wg.Wait()
	for i, p := range ps {
		won := 0
		for _, err := range results[i] {
			if err == nil {
				won++
			} else if code(err) != protocol.CodeAlreadyAccept {
				t.Fatalf("group %d: accept: %v", i, err)
			}
		}
		if won != 1 {
			t.Fatalf("group %d: %d accepts succeeded", i, won)
		}
		p.caller.Rec.Wait(t, "Accepted "+p.first.ID)
		if err := p.caller.Hangup(ctx, p.first.ID); err != nil {
			t.Fatal(err)
		}
		p.caller.Rec.Wait(t, "Failure "+p.join.ID+" PEER_OFFLINE")
	}
	waitFree(t, &ringertest.Env{T: t, URL: env.URL, Brokers: env.Brokers[1:]}, users...)
}

// A group reaches an asleep callee by push, from that callee's own view:
// a RING when it starts ringing, a STOP when another callee answers first
// (and nothing for the callee who is awake). Every party's history then
// has the group, each from its own side.
func TestGroupPushAndHistory(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	ctx := ringertest.Ctx(t)
	w := watchPush(t, env)
	alice, carol := env.Login("alice", "p"), env.Login("carol", "p")
	bob := env.NewClient("bob", "phone") // asleep: a push target, no session
	register(t, bob, "tok-bob")
	li := sendGroup(t, alice, protocol.ModeFirst, "bob", "carol")
	ring := w.next()
	if ring.Kind != protocol.PushRing || ring.User != "bob" || ring.Invitation.ID != li.ID ||
		ring.Invitation.Callee != "bob" || ring.Invitation.State != protocol.StateSent || ring.Invitation.Leg("carol") == nil {
		t.Fatalf("ring request: %+v", ring)
	}
	if err := carol.Rec.WaitRemote(t, li.ID).Accept(ctx, ""); err != nil {
		t.Fatal(err)
	}
	stop := w.next()
	if stop.Kind != protocol.PushStop || stop.User != "bob" || stop.Invitation.State != protocol.StateCanceled ||
		stop.Invitation.Reason != protocol.ReasonAnsweredElsewhere {
		t.Fatalf("stop request: %+v", stop)
	}
	alice.Rec.Wait(t, "Accepted "+li.ID)
	if err := alice.Hangup(ctx, li.ID); err != nil {
		t.Fatal(err)
	}
	carol.Rec.Wait(t, "CallEnded "+li.ID)
	calls := waitHistory(t, alice, 1, false)
	if c := calls[0]; c.ID != li.ID || c.Mode != protocol.ModeFirst || c.Peer != "carol" || len(c.Peers) != 2 || c.State != protocol.StateAccepted {
		t.Fatalf("alice's entry: %+v", c)
	}
	if c := waitHistory(t, carol, 1, false)[0]; c.Peer != "alice" || c.Missed || c.State != protocol.StateAccepted {
		t.Fatalf("carol's entry: %+v", c)
	}
	if err := bob.Login(ctx); err != nil {
		t.Fatal(err)
	}
	if c := waitHistory(t, bob, 1, true)[0]; c.Peer != "alice" || !c.Missed || c.Reason != protocol.ReasonAnsweredElsewhere || c.Direction != protocol.Incoming {
		t.Fatalf("bob's missed call: %+v", c)
	}
}

// A callee on a frozen server misses its ring and the end of its leg (carol
// answered first) while the call goes on: after leaving the server its
// device learns the outcome from its history, which has the entry as soon
// as the leg ended — not when the call does.
func TestGroupCalleeOnAFrozenServerLearnsItWasAnsweredElsewhere(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.PresenceTTL = 3 * time.Second // a heartbeat every second
	cfg.Timeouts.Offline = time.Minute
	env := ringertest.Start(t, cfg)
	ctx := ringertest.Ctx(t)
	alice, carol := env.Login("alice", "phone"), env.Login("carol", "phone")
	nc, proxy := frozenPath(t, env, "bob/phone")
	bob := env.LoginOn(nc, "bob", "phone")

	proxy.Freeze()
	li := sendGroup(t, alice, protocol.ModeFirst, "bob", "carol")
	if err := carol.Rec.WaitRemote(t, li.ID).Accept(ctx, ""); err != nil {
		t.Fatal(err)
	}
	alice.Rec.Wait(t, "Accepted "+li.ID) // the call is on, and stays on
	bob.Rec.Wait(t, "RemoteCanceled "+li.ID)
	if v, _ := bob.Invitation(li.ID); v.Reason != protocol.ReasonAnsweredElsewhere {
		t.Fatalf("bob's view: %s %s", v.State, v.Reason)
	}
	if inv, _ := alice.Get(ctx, li.ID); !inv.Live() {
		t.Fatal("set-up: the call ended before bob learnt")
	}
}
