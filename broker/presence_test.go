package broker_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// The caller's only device vanishes (no logout, no heartbeat) while ringing:
// the callee gets Failure(PEER_OFFLINE) and both lines are freed.
func TestCallerLostWhileRinging(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)
	li := alice.CreateLocalInvitation("bob")
	li.Timeouts = &protocol.Timeouts{OfflineMs: 60000, ExpireMs: 60000} // only presence loss can end it
	if err := li.Send(ctx); err != nil {
		t.Fatal(err)
	}
	bob.Rec.WaitRemote(t, li.ID)
	lost := time.Now()
	alice.Close() // the app died: no logout
	bob.Rec.Wait(t, "RemoteFailure "+li.ID+" PEER_OFFLINE")
	ttl := ringertest.TestConfig().PresenceTTL
	if took := time.Since(lost); took > ttl+2*time.Second {
		t.Errorf("presence loss detected after %s, TTL %s", took, ttl)
	} else {
		t.Logf("presence loss resolved %s after the caller vanished (TTL %s)", took.Round(time.Millisecond), ttl)
	}
	waitFree(t, env, "alice", "bob")
}

// A party of a call vanishes: the call ends for the other and both lines free.
func TestPartyLostDuringCall(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)
	li := alice.Invite(t, "bob")
	if err := bob.Rec.WaitRemote(t, li.ID).Accept(ctx, ""); err != nil {
		t.Fatal(err)
	}
	bob.Rec.Wait(t, "RemoteAccepted "+li.ID)
	bob.Close()
	alice.Rec.Wait(t, "CallEnded "+li.ID+" PEER_OFFLINE")
	inv, _ := alice.Invitation(li.ID)
	if inv.EndedBy != "bob" {
		t.Errorf("endedBy %q, want bob", inv.EndedBy)
	}
	waitFree(t, env, "alice", "bob")
}

// An invitation to an offline callee waits; the callee's login within the
// offline window delivers it at once (store-and-forward).
func TestStoreAndForward(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	ctx := ringertest.Ctx(t)
	li := alice.CreateLocalInvitation("bob")
	li.Content = "while you were away"
	li.Timeouts = &protocol.Timeouts{OfflineMs: 30000}
	if err := li.Send(ctx); err != nil {
		t.Fatal(err)
	}
	bob := env.NewClient("bob", "phone")
	if err := bob.Login(ctx); err != nil {
		t.Fatal(err)
	}
	// Delivered by the login reply itself, before Login returned.
	if bob.Rec.Count("RemoteReceived "+li.ID+" while you were away") != 1 {
		t.Fatalf("not delivered at login: %q", bob.Rec.Lines())
	}
	alice.Rec.Wait(t, "ReceivedByPeer "+li.ID)
}

// Logging out of one device while another stays does not touch invitations;
// logging out of the last one resolves them at once.
func TestLogoutLastDevice(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alicePhone := env.Login("alice", "phone")
	aliceLaptop := env.Login("alice", "laptop")
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)
	li := alicePhone.CreateLocalInvitation("bob")
	li.Timeouts = &protocol.Timeouts{OfflineMs: 60000, ExpireMs: 60000}
	if err := li.Send(ctx); err != nil {
		t.Fatal(err)
	}
	bob.Rec.WaitRemote(t, li.ID)
	// Bob's client acknowledges receipt in the background: wait until the
	// caller has seen it, so that the sync below can expect RECEIVED.
	alicePhone.Rec.Wait(t, "ReceivedByPeer "+li.ID)
	if err := aliceLaptop.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	// Still ringing (alice is online on her phone), in contrast with the last logout below.
	if invs, err := bob.Sync(ctx); err != nil || len(invs) != 1 || invs[0].State != protocol.StateReceived {
		t.Fatalf("after one device logged out: %+v %v", invs, err)
	}
	if err := alicePhone.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	bob.Rec.Wait(t, "RemoteFailure "+li.ID+" PEER_OFFLINE")
	waitFree(t, env, "alice", "bob")
}

// A device that missed events (it was not subscribed) recovers them by sync.
func TestSyncRecoversMissedEvents(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)
	li := alice.Invite(t, "bob")
	bob.Rec.WaitRemote(t, li.ID)
	tablet := env.NewClient("bob", "tablet") // never subscribed: missed everything
	invs, err := tablet.Sync(ctx)
	if err != nil || len(invs) != 1 || invs[0].ID != li.ID {
		t.Fatalf("sync: %+v %v", invs, err)
	}
	tablet.Rec.Wait(t, "RemoteReceived "+li.ID)
	// Applying the same views again fires nothing twice.
	if _, err := tablet.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := tablet.Rec.Count("RemoteReceived " + li.ID); n != 1 {
		t.Fatalf("duplicate callbacks after a second sync: %d", n)
	}
}

// Devices that log in together do not heartbeat together: each one's first
// heartbeat comes after a random half to whole period, so a fleet that
// reconnects at once (an app start, a NATS node restart) spreads its
// heartbeats over the period instead of sending them in one burst per
// period.
func TestHeartbeatsOfDevicesLoggedInTogetherAreSpread(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.PresenceTTL = 6 * time.Second // heartbeats every 2 s
	env := ringertest.Start(t, cfg)
	period := cfg.PresenceTTL / 3

	// Watch the heartbeat commands arrive beside the broker.
	watcher := natstest.Connect(t, env.URL)
	first := make(chan time.Time, 64)
	seen := map[string]bool{}
	if _, err := watcher.Subscribe(subjects.CommandWildcard(), func(m *nats.Msg) {
		user, verb, _ := subjects.ParseCommand(m.Subject)
		if verb == subjects.VerbHeartbeat && !seen[user] { // one callback at a time: no lock
			seen[user] = true
			first <- time.Now()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := watcher.Flush(); err != nil {
		t.Fatal(err)
	}

	const devices = 16
	loggedIn := time.Now()
	var wg sync.WaitGroup
	for i := range devices {
		wg.Add(1)
		go func() { defer wg.Done(); env.Login(fmt.Sprintf("u%d", i), "phone") }()
	}
	wg.Wait()
	allIn := time.Now()

	var earliest, latest time.Time
	for range devices {
		select {
		case at := <-first:
			if earliest.IsZero() || at.Before(earliest) {
				earliest = at
			}
			if at.After(latest) {
				latest = at
			}
		case <-time.After(2 * period):
			t.Fatalf("not every device heartbeat within %s of logging in", 2*period)
		}
	}
	if earliest.Before(loggedIn.Add(period / 2)) {
		t.Errorf("a first heartbeat %s after the logins began, before half the period (%s)", earliest.Sub(loggedIn), period/2)
	}
	if latest.After(allIn.Add(period + time.Second)) {
		t.Errorf("a first heartbeat %s after the last login, later than a period (%s)", latest.Sub(allIn), period)
	}
	// Uniform over half a period, 16 first heartbeats all fall within an
	// eighth of the period with a probability of 4^-15.
	if spread := latest.Sub(earliest); spread < period/8 {
		t.Errorf("16 devices logged in together sent their first heartbeats within %s (period %s): not spread", spread, period)
	} else {
		t.Logf("first heartbeats spread over %s (period %s)", spread.Round(time.Millisecond), period)
	}
}

// A heartbeat that names its session's revision (the SDK's, from its last
// login or heartbeat reply) refreshes the session in one write and no
// read. One at a revision that is only stale (the session was written
// since) still refreshes a live session, by reading it first. And one
// whose session has ended — here logged out behind the device's back — is
// NOT_LOGGEDIN, and leaves the session ended: the compare-and-set on the
// revision is what keeps a refresh from bringing it back.
func TestHeartbeatAtTheSessionRevision(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	st := env.Brokers[0].Store()
	ctx := ringertest.Ctx(t)
	alice := env.Login("alice", "phone", client.WithoutHeartbeat())
	first := alice.Session().Rev
	if first == 0 {
		t.Fatal("the login reply has no session revision")
	}

	before := st.Stats()
	if err := alice.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	if d := st.Stats().Sub(before); d.Writes != 1 || d.Reads != 0 {
		t.Errorf("a heartbeat at its session's revision cost %d writes and %d reads, want 1 and 0", d.Writes, d.Reads)
	}
	second := alice.Session().Rev
	if second <= first {
		t.Fatalf("the session revision went from %d to %d", first, second)
	}

	// At the login's revision, which the heartbeat replaced: a conflict,
	// a read, a write.
	hb, _ := subjects.Command("alice", subjects.VerbHeartbeat)
	before = st.Stats()
	rep := rawRequest(t, env, hb, protocol.MustMarshal(&protocol.Request{Device: "phone", SessionRev: first}))
	if rep.Error != nil || rep.Session == nil || rep.Session.Rev <= second {
		t.Fatalf("heartbeat at a stale revision of a live session: %+v", rep)
	}
	if d := st.Stats().Sub(before); d.Writes != 2 || d.Reads != 1 {
		t.Errorf("a heartbeat at a stale revision cost %d writes and %d reads, want 2 (the refused one) and 1", d.Writes, d.Reads)
	}

	if err := st.DeleteSession(ctx, "alice", "phone"); err != nil {
		t.Fatal(err)
	}
	if err := alice.Heartbeat(ctx); !errors.Is(err, client.ErrNotLoggedIn) {
		t.Fatalf("heartbeat of a session logged out: %v, want NOT_LOGGEDIN", err)
	}
	if live, err := st.HasSessionFresh(ctx, "alice", "phone"); err != nil || live {
		t.Fatalf("after the heartbeat of a session logged out: live %v, %v", live, err)
	}
}
