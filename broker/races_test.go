package broker_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
)

// Accept and cancel fired at the same instant: exactly one wins, the loser
// gets the typed error naming the winner, and both parties see the winner.
func TestAcceptVsCancelRace(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)
	wins := map[string]int{}
	for i := 0; i < 20; i++ {
		li := alice.Invite(t, "bob")
		ri := bob.Rec.WaitRemote(t, li.ID)
		var acceptErr, cancelErr error
		var wg sync.WaitGroup
		start := make(chan struct{})
		wg.Add(2)
		go func() { defer wg.Done(); <-start; acceptErr = ri.Accept(ctx, "yes") }()
		go func() { defer wg.Done(); <-start; cancelErr = li.Cancel(ctx) }()
		close(start)
		wg.Wait()
		switch {
		case acceptErr == nil && cancelErr == nil:
			t.Fatalf("round %d: both accept and cancel succeeded", i)
		case acceptErr == nil:
			if !errors.Is(cancelErr, client.ErrAlreadyAccept) {
				t.Fatalf("round %d: cancel lost with %v, want ALREADY_ACCEPT", i, cancelErr)
			}
			wins["accept"]++
			alice.Rec.Wait(t, "Accepted "+li.ID)
			bob.Rec.Wait(t, "RemoteAccepted "+li.ID)
			if err := bob.Hangup(ctx, li.ID); err != nil {
				t.Fatal(err)
			}
			alice.Rec.Wait(t, "CallEnded "+li.ID)
		case cancelErr == nil:
			if !errors.Is(acceptErr, client.ErrAlreadyEnd) {
				t.Fatalf("round %d: accept lost with %v, want ALREADY_END", i, acceptErr)
			}
			var pe *protocol.Error
			if !errors.As(acceptErr, &pe) || pe.State != protocol.StateCanceled {
				t.Fatalf("round %d: loser's error does not name CANCELED: %v", i, acceptErr)
			}
			wins["cancel"]++
			alice.Rec.Wait(t, "Canceled "+li.ID)
			bob.Rec.Wait(t, "RemoteCanceled "+li.ID)
		default:
			t.Fatalf("round %d: both failed: %v / %v", i, acceptErr, cancelErr)
		}
		if n := alice.Rec.Count("Canceled "+li.ID) + alice.Rec.Count("Accepted "+li.ID); n != 1 {
			t.Fatalf("round %d: caller saw %d outcomes", i, n)
		}
		waitFree(t, env, "alice", "bob")
	}
	t.Logf("winners over 20 rounds: %v", wins)
}

// Many callers invite one callee at once: exactly one rings, every other gets
// Refused("busy"), and the callee's line is released at the end.
func TestConcurrentInvitesOneRings(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)
	const n = 30
	callers := make([]*ringertest.Client, n)
	for i := range callers {
		callers[i] = env.Login(fmt.Sprintf("caller%d", i), "phone")
	}
	invs := make([]*client.LocalInvitation, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range callers {
		invs[i] = callers[i].CreateLocalInvitation("bob")
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			if err := invs[i].Send(ctx); err != nil {
				t.Errorf("send %d: %v", i, err)
			}
		}(i)
	}
	close(start)
	wg.Wait()
	ringing := -1
	for i, li := range invs {
		inv := li.Invitation()
		switch {
		case inv.State == protocol.StateRefused && inv.Reason == protocol.ReasonBusy:
			callers[i].Rec.Wait(t, "Refused "+li.ID+" busy")
		case inv.Live():
			if ringing >= 0 {
				t.Fatalf("two invitations ring: %d and %d", ringing, i)
			}
			ringing = i
		default:
			t.Fatalf("invitation %d: %s %s", i, inv.State, inv.Reason)
		}
	}
	if ringing < 0 {
		t.Fatal("no invitation rang")
	}
	winner := invs[ringing]
	bob.Rec.WaitRemote(t, winner.ID)
	if got := bob.Rec.Count("RemoteReceived"); got != 1 {
		t.Fatalf("bob rang %d times", got)
	}
	if err := winner.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	bob.Rec.Wait(t, "RemoteCanceled "+winner.ID)
	users := []string{"bob"}
	for i := range callers {
		users = append(users, callers[i].User())
	}
	waitFree(t, env, users...)
}

// Bob has two devices: both ring, the first accept wins, the other device is
// told HandledElsewhere and its own accept fails with ALREADY_ACCEPT.
func TestMultiDevice(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	phone := env.Login("bob", "phone")
	laptop := env.Login("bob", "laptop")
	ctx := ringertest.Ctx(t)

	li := alice.Invite(t, "bob")
	onPhone := phone.Rec.WaitRemote(t, li.ID)
	onLaptop := laptop.Rec.WaitRemote(t, li.ID)
	if err := onLaptop.Accept(ctx, "from laptop"); err != nil {
		t.Fatal(err)
	}
	phone.Rec.Wait(t, "HandledElsewhere "+li.ID)
	laptop.Rec.Wait(t, "RemoteAccepted "+li.ID)
	alice.Rec.Wait(t, "Accepted "+li.ID+" from laptop")
	if err := onPhone.Accept(ctx, "from phone"); !errors.Is(err, client.ErrAlreadyAccept) {
		t.Fatalf("second device accept: %v, want ALREADY_ACCEPT", err)
	}
	if n := laptop.Rec.Count("HandledElsewhere"); n != 0 {
		t.Fatalf("the accepting device was told HandledElsewhere")
	}
	if n := phone.Rec.Count("RemoteAccepted"); n != 0 {
		t.Fatalf("the other device got the accept confirmation")
	}

	// A refusal on one device is HandledElsewhere on the other.
	li2 := alice.CreateLocalInvitation("carol")
	carolA, carolB := env.Login("carol", "a"), env.Login("carol", "b")
	if err := li2.Send(ctx); err != nil {
		t.Fatal(err)
	}
	carolB.Rec.WaitRemote(t, li2.ID)
	if err := carolA.Rec.WaitRemote(t, li2.ID).Refuse(ctx, "no"); err != nil {
		t.Fatal(err)
	}
	carolB.Rec.Wait(t, "HandledElsewhere "+li2.ID+" REFUSED")
	carolA.Rec.Wait(t, "RemoteRefused "+li2.ID)
}

// A push-woken device accepts by id straight from SENT (SPEC §2 rule 5).
func TestAcceptBySentID(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	bob := env.Login("bob", "phone", client.WithoutAutoAck())
	ctx := ringertest.Ctx(t)
	li := alice.Invite(t, "bob")
	if err := bob.Accept(ctx, li.ID, "pushed"); err != nil {
		t.Fatal(err)
	}
	alice.Rec.Wait(t, "Accepted "+li.ID+" pushed")
	// Accepting implies receipt: the caller learns ReceivedByPeer too.
	alice.Rec.Wait(t, "ReceivedByPeer "+li.ID)
}

// A flood of invitations at one callee is refused as busy without starving
// an unrelated call.
func TestFloodAtOneCalleeDoesNotStarveOthers(t *testing.T) {
	cfg := ringertest.TestConfig()
	env := ringertest.Start(t, cfg)
	env.Login("victim", "phone")
	alice := env.Login("alice", "phone")
	carol := env.Login("carol", "phone")
	ctx := ringertest.Ctx(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		flooder := env.Login(fmt.Sprintf("flooder%d", i), "phone")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = flooder.CreateLocalInvitation("victim").Send(ctx) // busy, rate limited, or ringing
			}
		}()
	}
	for i := 0; i < 5; i++ {
		start := time.Now()
		li := alice.Invite(t, "carol")
		ri := carol.Rec.WaitRemote(t, li.ID)
		if err := ri.Refuse(ctx, "later"); err != nil {
			t.Fatal(err)
		}
		alice.Rec.Wait(t, "Refused "+li.ID)
		took := time.Since(start)
		t.Logf("alice→carol send→ring→refuse during the flood: %s", took.Round(time.Millisecond))
		if took > 2*time.Second {
			t.Errorf("an unrelated call took %s during the flood: starved", took)
		}
	}
	close(stop)
	wg.Wait()
}
