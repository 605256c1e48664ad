package broker_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// The attacks of SPEC §10, each by a signed-in user against real servers:
// what one user must not be able to do to the others.

// abuseConfig is TestConfig with the default per-user limits back on.
func abuseConfig() broker.Config {
	cfg := ringertest.TestConfig()
	d := broker.DefaultConfig()
	cfg.SendRate, cfg.SendBurst = d.SendRate, d.SendBurst
	cfg.CommandRate, cfg.CommandBurst = d.CommandRate, d.CommandBurst
	return cfg
}

// bucketBytes is the size of Ringer's bucket now.
func bucketBytes(t *testing.T, env *ringertest.Env) uint64 {
	t.Helper()
	st, err := env.Brokers[0].Store().JetStream().Stream(ringertest.Ctx(t), subjects.BucketStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ringertest.Ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Bytes
}

// An invitation waiting for a callee that no device has received keeps the
// callee busy only for UnreceivedHold, however long its offline window: a
// caller cannot make someone unreachable by inviting them while they are
// offline. The invitation still waits, and rings when the callee logs in,
// beside the ones sent after it.
func TestUnreceivedInvitationHoldsTheCalleeBriefly(t *testing.T) {
	cfg := ringertest.TestConfig() // carol asks again and again
	cfg.UnreceivedHold = time.Second
	cfg.MaxTimeout = time.Hour
	env := ringertest.Start(t, cfg)
	mallory := env.Login("mallory", "phone")
	carol := env.Login("carol", "phone")
	ctx := ringertest.Ctx(t)

	squat := mallory.CreateLocalInvitation("victim")
	squat.Timeouts = &protocol.Timeouts{OfflineMs: time.Hour.Milliseconds()}
	if err := squat.Send(ctx); err != nil {
		t.Fatal(err)
	}
	sent := time.UnixMilli(squat.Invitation().CreatedAt) // the broker's clock, this process's
	if inv := carol.Invite(t, "victim").Invitation(); inv.Reason != protocol.ReasonBusy {
		t.Fatalf("within the hold the victim is busy: %+v", inv)
	}
	var later *client.LocalInvitation
	natstest.Eventually(t, ringertest.Wait, func() error {
		later = carol.Invite(t, "victim")
		if inv := later.Invitation(); inv.State != protocol.StateSent {
			return fmt.Errorf("carol's invitation %s %s", inv.State, inv.Reason)
		}
		return nil
	})
	if held := time.Since(sent); held < cfg.UnreceivedHold || held > cfg.UnreceivedHold+ringertest.Wait/2 {
		t.Fatalf("the victim was busy for %s, hold %s", held, cfg.UnreceivedHold)
	}
	// The victim comes online: both invitations ring (store-and-forward).
	victim := env.Login("victim", "phone")
	victim.Rec.WaitRemote(t, squat.ID)
	victim.Rec.WaitRemote(t, later.ID)
	// Received, the squatter's invitation holds the line like any ringing one.
	natstest.Eventually(t, ringertest.Wait, func() error {
		if inv, _ := victim.Invitation(squat.ID); inv.State != protocol.StateReceived {
			return fmt.Errorf("squat is %s", inv.State)
		}
		return nil
	})
	if inv := env.Login("dave", "phone").Invite(t, "victim").Invitation(); inv.Reason != protocol.ReasonBusy {
		t.Fatalf("a received invitation must keep the victim busy: %+v", inv)
	}
}

// A line keeps at most MaxIncoming invitations waiting for its callee;
// further senders are refused as busy.
func TestWaitingInvitationsPerCalleeAreBounded(t *testing.T) {
	cfg := abuseConfig()
	cfg.UnreceivedHold = time.Millisecond // every waiting invitation stops making busy at once
	cfg.MaxIncoming = 3
	env := ringertest.Start(t, cfg)
	for i := range cfg.MaxIncoming + 2 {
		c := env.Login(fmt.Sprintf("caller%d", i), "phone")
		inv := c.Invite(t, "offline").Invitation()
		busy := inv.Reason == protocol.ReasonBusy
		if busy != (i >= cfg.MaxIncoming) {
			t.Fatalf("send %d to a callee with %d waiting: %s %s", i+1, i, inv.State, inv.Reason)
		}
	}
}

// A user has at most MaxOutgoing live invitations and calls of its own: one
// more is refused with RESOURCE_EXHAUSTED, and ending one makes room.
func TestOutgoingInvitationsPerUserAreBounded(t *testing.T) {
	cfg := abuseConfig()
	cfg.MaxOutgoing = 2
	env := ringertest.Start(t, cfg)
	alice := env.Login("alice", "phone")
	ctx := ringertest.Ctx(t)
	var sent []*client.LocalInvitation
	for i := range cfg.MaxOutgoing {
		sent = append(sent, alice.Invite(t, fmt.Sprintf("friend%d", i)))
	}
	err := alice.CreateLocalInvitation("one-too-many").Send(ctx)
	if !errors.Is(err, client.ErrResourceExhausted) {
		t.Fatalf("send past the quota: %v, want RESOURCE_EXHAUSTED", err)
	}
	if err := sent[0].Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if inv := alice.Invite(t, "one-too-many").Invitation(); inv.State != protocol.StateSent {
		t.Fatalf("after a cancel: %+v", inv)
	}
}

// One user sending as fast as the broker lets it, 8 KB of content each, to
// users who are not there, and canceling each: what the store keeps is
// bounded by the send rate (finished and busy-refused invitations keep no
// content) and the outgoing quota — not by how long the attacker keeps at it.
func TestOneUserCannotFillTheStore(t *testing.T) {
	cfg := abuseConfig()
	env := ringertest.Start(t, cfg)
	mallory := env.Login("mallory", "phone")
	env.Login("busybody", "phone").SetBusy(ringertest.Ctx(t), true)
	ctx := ringertest.Ctx(t)
	before := bucketBytes(t, env)
	content := strings.Repeat("x", protocol.MaxContentLen)
	start := time.Now()
	accepted, limited := 0, 0
	for i := 0; i < 200; i++ {
		callee := fmt.Sprintf("ghost%d", i)
		if i%2 == 0 {
			callee = "busybody" // a busy refusal
		}
		li := mallory.CreateLocalInvitation(callee)
		li.Content = content
		err := li.Send(ctx)
		switch {
		case errors.Is(err, client.ErrRateLimited):
			limited++
			continue
		case err != nil:
			t.Fatalf("send %d: %v", i, err)
		}
		accepted++
		if inv := li.Invitation(); inv.Live() {
			if err := li.Cancel(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	elapsed := time.Since(start)
	grown := bucketBytes(t, env) - before
	// Every accepted send leaves at most one finished record (and a line
	// write) of well under 2 KB once its content is dropped.
	allowed := int(float64(cfg.SendBurst)+cfg.SendRate*elapsed.Seconds()) + 1
	if accepted > allowed {
		t.Fatalf("%d sends went through in %s, the limit allows %d", accepted, elapsed, allowed)
	}
	if limit := uint64(accepted) * 2048; grown > limit {
		t.Fatalf("%d sends of %d-byte content grew the bucket by %d bytes, more than %d", accepted, len(content), grown, limit)
	}
	t.Logf("200 sends in %s: %d went through, %d rate limited; the bucket grew %d bytes", elapsed.Round(time.Millisecond), accepted, limited, grown)
}

// A finished invitation is stored without its content, and the devices that
// saw it live keep it.
func TestFinishedInvitationsKeepNoContent(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)
	li := alice.CreateLocalInvitation("bob")
	li.Content = "video, from the kitchen"
	if err := li.Send(ctx); err != nil {
		t.Fatal(err)
	}
	ri := bob.Rec.WaitRemote(t, li.ID)
	if err := li.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	bob.Rec.Wait(t, "RemoteCanceled "+li.ID)
	stored, _, err := env.Brokers[0].Store().GetInvitationFresh(ctx, li.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Content != "" {
		t.Fatalf("a canceled invitation keeps %q", stored.Content)
	}
	if got := ri.Content(); got != li.Content {
		t.Fatalf("the callee's device lost the content it was shown: %q", got)
	}
}

// get of an invitation the asker is not a party to answers as if it did not
// exist, so ids cannot be probed.
func TestGetOfAStrangersInvitationIsNotFound(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	env.Login("bob", "phone")
	mallory := env.Login("mallory", "phone")
	li := alice.Invite(t, "bob")
	_, err := mallory.Get(ringertest.Ctx(t), li.ID)
	_, errNone := mallory.Get(ringertest.Ctx(t), "no-such-id")
	if !errors.Is(err, client.ErrNotFound) || !errors.Is(errNone, client.ErrNotFound) {
		t.Fatalf("get of a stranger's invitation: %v; of none: %v; want NOT_FOUND for both", err, errNone)
	}
	if strings.Contains(err.Error(), "party") {
		t.Fatalf("the answer tells them apart: %v", err)
	}
}

// Every verb is rate limited per user, not only send; other users are not.
func TestEveryVerbIsRateLimited(t *testing.T) {
	cfg := abuseConfig()
	cfg.CommandRate, cfg.CommandBurst = 5, 10
	env := ringertest.Start(t, cfg)
	mallory := env.Login("mallory", "phone")
	alice := env.Login("alice", "phone")
	ctx := ringertest.Ctx(t)
	limited := 0
	for range 50 {
		if _, err := mallory.Get(ctx, "whatever"); errors.Is(err, client.ErrRateLimited) {
			limited++
		} else if !errors.Is(err, client.ErrNotFound) {
			t.Fatal(err)
		}
	}
	if limited < 30 {
		t.Fatalf("only %d of 50 gets in a burst were rate limited (burst %d)", limited, cfg.CommandBurst)
	}
	if err := alice.Heartbeat(ctx); err != nil {
		t.Fatalf("another user was limited: %v", err)
	}
}

// Integer fields are range-checked before arithmetic: a timeout that would
// wrap around when turned into a duration is refused.
func TestHugeTimeoutsAreRefused(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	for _, ms := range []int64{288230376151712744, 1<<63 - 1, -1 << 63} {
		li := alice.CreateLocalInvitation("bob")
		li.Timeouts = &protocol.Timeouts{OfflineMs: ms}
		if err := li.Send(ringertest.Ctx(t)); !errors.Is(err, client.ErrInvalidArgument) {
			t.Fatalf("offlineMs=%d: %v, want INVALID_ARGUMENT", ms, err)
		}
	}
}

// When JetStream refuses writes for lack of space, the refused command gets
// RESOURCE_EXHAUSTED saying so, the broker reports itself not ready, and the
// refusal is counted.
func TestFullStoreIsReported(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.StoreMaxBytes = 64 << 10
	cfg.MaxOutgoing, cfg.MaxIncoming = 20, 1
	env := ringertest.Start(t, cfg)
	b := env.Brokers[0]
	ctx := ringertest.Ctx(t)
	if err := b.Check(ctx); err != nil {
		t.Fatal(err)
	}
	var users []*ringertest.Client
	for i := range 20 {
		users = append(users, env.Login(fmt.Sprintf("user%d", i), "phone"))
	}
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		li := users[i%len(users)].CreateLocalInvitation(fmt.Sprintf("callee%d", i))
		li.Content = strings.Repeat("x", protocol.MaxContentLen)
		li.Timeouts = &protocol.Timeouts{OfflineMs: time.Minute.Milliseconds()}
		err = li.Send(ctx)
	}
	if !errors.Is(err, client.ErrResourceExhausted) || !strings.Contains(err.Error(), "full") {
		t.Fatalf("sends into a full store: %v, want RESOURCE_EXHAUSTED saying the store is full", err)
	}
	if err := b.Check(ctx); err == nil || !strings.Contains(err.Error(), "full") {
		t.Fatalf("readiness with a full store: %v", err)
	}
	if n := counter(t, b.Broker, "ringer_store_full_total"); n < 1 {
		t.Fatalf("ringer_store_full_total = %v", n)
	}
}

// counter reads a counter without labels from a broker's registry.
func counter(t *testing.T, b *broker.Broker, name string) float64 {
	t.Helper()
	mfs, err := b.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// One user logs in (and heartbeats) 3 000 distinct devices as fast as it
// can while alice and bob talk; then bob hangs up by logging out. The
// storm leaves mallory at most a cap of devices (and the rate limits
// refuse most of it before any work), so the presence events it causes
// are few and cheap: bob's logout ends alice's call within a second.
func TestDeviceStormDoesNotDelayOthers(t *testing.T) {
	cfg := abuseConfig()
	env := ringertest.Start(t, cfg)
	st := env.Brokers[0].Store()
	alice := env.Login("alice", "phone")
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)
	li := alice.Call(t, bob)

	const devices, conns = 3000, 8
	results := make(chan string, 2*devices)
	stormStart := time.Now()
	var wg sync.WaitGroup
	for c := range conns {
		nc := natstest.Connect(t, env.URL)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; i < devices; i += conns {
				for _, verb := range []string{subjects.VerbLogin, subjects.VerbHeartbeat} {
					subj, _ := subjects.Command("mallory", verb)
					body := protocol.MustMarshal(&protocol.Request{Device: fmt.Sprintf("d%d-%s", i, verb)})
					m, err := nc.Request(subj, body, ringertest.Wait)
					if err != nil {
						results <- "no reply"
						continue
					}
					rep, err := protocol.DecodeReply(m.Data)
					switch {
					case err != nil:
						results <- "undecodable"
					case rep.Error != nil:
						results <- verb + " " + string(rep.Error.Code)
					default:
						results <- verb + " ok"
					}
				}
			}
		}()
	}
	wg.Wait()
	storm := time.Since(stormStart)
	close(results)
	seen := map[string]int{}
	for r := range results {
		seen[r]++
	}
	t.Logf("mallory's storm: %v in %s", seen, storm.Round(time.Millisecond))
	// At most the cap (plus racing logins, one per connection) at once;
	// a session expires after the presence TTL and frees its slot, so a
	// storm longer than the TTL (a slow machine) may open more in all.
	if n, most := seen["login ok"], (cfg.MaxDevices+conns)*(1+int(storm/cfg.PresenceTTL)); n > most {
		t.Fatalf("%d of mallory's logins opened a session in %s, device cap %d (at most %d with expiries)", n, storm, cfg.MaxDevices, most)
	}
	if n := seen["heartbeat ok"]; n > 0 {
		t.Fatalf("%d heartbeats of devices never logged in opened a session", n)
	}
	// Let mallory's sessions expire: their presence events are handled now.
	natstest.Eventually(t, ringertest.Wait, func() error {
		live, err := st.Sessions(ctx, "mallory", 0)
		if err != nil || len(live) > 0 {
			return fmt.Errorf("mallory still has %d sessions (%v)", len(live), err)
		}
		return nil
	})
	hungUp := time.Now()
	if err := bob.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	alice.Rec.Wait(t, "CallEnded "+li.ID)
	if took := time.Since(hungUp); took > time.Second {
		t.Fatalf("bob's logout reached alice after %s, want at most 1s", took)
	} else {
		t.Logf("bob's logout reached alice after %s", took.Round(time.Millisecond))
	}
}

// The largest login and sync replies a broker can produce decode in the
// SDK: a user with every live invitation the quotas allow, each with
// content and response at their size limits (before, four 8 KB outgoing
// invitations made a 33 519-byte reply that the SDK refused).
func TestLargestRepliesDecode(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.UnreceivedHold = time.Millisecond // waiting invitations pile up at once
	cfg.Timeouts.Offline = time.Minute
	env := ringertest.Start(t, cfg)
	content := strings.Repeat("é", protocol.MaxContentLen/2) // 2-byte runes: exactly at the limit
	ctx := ringertest.Ctx(t)
	// While alice is away, the most invitations a line keeps wait for her;
	// back, she dials out as often as she may (a caller is busy to others,
	// so this order is the one that reaches both quotas).
	for i := range cfg.MaxIncoming {
		li := env.Login(fmt.Sprintf("fan%d", i), "phone").CreateLocalInvitation("alice")
		li.Content = content
		if err := li.Send(ctx); err != nil {
			t.Fatal(err)
		}
	}
	alice := env.Login("alice", "phone", client.WithoutAutoAck()) // what rings her stays unreceived
	for i := range cfg.MaxOutgoing {
		li := alice.CreateLocalInvitation(fmt.Sprintf("away%d", i))
		li.Content = content
		if err := li.Send(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := cfg.MaxOutgoing + cfg.MaxIncoming
	second := env.Login("alice", "tablet", client.WithoutAutoAck()) // t.Fatal on a reply it cannot decode
	invs, err := second.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(invs) != want {
		t.Fatalf("sync lists %d live invitations, want %d", len(invs), want)
	}
	size := len(protocol.MustMarshal(&protocol.Reply{Invitations: invs}))
	t.Logf("a sync reply of %d invitations: %d bytes (limit %d)", want, size, protocol.MaxReplyLen)
}

// The line of a callee who never comes back is removed once the invitation
// that claimed it has timed out: invited ids do not accumulate line records.
func TestLinesOfCalleesWhoNeverComeAreRemoved(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	st := env.Brokers[0].Store()
	alice := env.Login("alice", "phone")
	li := alice.CreateLocalInvitation("nobody")
	li.Timeouts = &protocol.Timeouts{OfflineMs: 500}
	if err := li.Send(ringertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	alice.Rec.Wait(t, "Failure "+li.ID+" PEER_OFFLINE")
	natstest.Eventually(t, ringertest.Wait, func() error {
		if l, _, err := st.GetLineFresh(ringertest.Ctx(t), "nobody"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("nobody's line is still there: %v (%v)", l.IDs(), err)
		}
		return nil
	})
}

// A heartbeat does not bring back a session that has ended: it is
// NOT_LOGGEDIN, and the SDK logs in again by itself (through the device cap)
// and resyncs.
func TestHeartbeatOfAnEndedSessionLogsInAgain(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig()) // heartbeats every ~0.7 s
	st := env.Brokers[0].Store()
	env.Login("alice", "phone")
	ctx := ringertest.Ctx(t)
	// The session vanishes behind the device's back (as when it expired
	// while its heartbeats could not get through).
	if err := st.DeleteSession(ctx, "alice", "phone"); err != nil {
		t.Fatal(err)
	}
	if err := env.NewClient("alice", "phone", client.WithoutHeartbeat()).Heartbeat(ctx); !errors.Is(err, client.ErrNotLoggedIn) {
		t.Fatalf("heartbeat of an ended session: %v, want NOT_LOGGEDIN", err)
	}
	natstest.Eventually(t, ringertest.Wait, func() error {
		if ok, err := st.HasSessionFresh(ctx, "alice", "phone"); err != nil || !ok {
			return fmt.Errorf("alice/phone has no session again yet (%v)", err)
		}
		return nil
	})
}
