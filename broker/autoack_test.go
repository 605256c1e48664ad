package broker_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/broker"
	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// acceptedDuringAnOutage brings an invitation from alice to bob to
// ACCEPTING while no broker runs: bob's accept is committed, and its events
// published, by hand, as a broker's command and projector would have done
// just before the outage. It returns once alice has seen ACCEPTING (her
// Accepted callback), which starts her automatic ack-accept.
func acceptedDuringAnOutage(t *testing.T, cfg broker.Config) (*ringertest.Env, *ringertest.Client, string) {
	t.Helper()
	env := ringertest.Start(t, cfg)
	alice, bob := env.Login("alice", "phone"), env.Login("bob", "phone")
	li := alice.Invite(t, "bob")
	bob.Rec.WaitRemote(t, li.ID)
	alice.Rec.Wait(t, "ReceivedByPeer "+li.ID)

	ctx := ringertest.Ctx(t)
	b := env.Brokers[0]
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	accepting, rev := bobAccepts(t, b.Store(), li.ID)
	var err error
	if accepting.Revision, err = b.Store().Commit(ctx, store.PutInvitation(accepting, rev)); err != nil {
		t.Fatal(err)
	}
	publishEvents(t, b.NC, accepting, "alice", "bob")
	alice.Rec.Wait(t, "Accepted "+li.ID)
	return env, alice, li.ID
}

// outageConfig gives the outage, not the deadlines, the leading part.
func outageConfig() broker.Config {
	cfg := ringertest.TestConfig()
	cfg.Timeouts.Accept = 20 * time.Second
	cfg.PresenceTTL = time.Minute // heartbeats fail during the outage too
	return cfg
}

// The caller's automatic ack-accept outlasts a stretch in which no broker
// answers (as in a JetStream leader election, 4-9 s, when every broker's
// store calls fail): it is retried until the accept deadline. It used to
// give up after ~0.6 s, and the accepted call then failed ACCEPT_FAILURE
// (chaos runs saw 1-4 per run).
func TestAutoAckAcceptOutlastsAnOutage(t *testing.T) {
	cfg := outageConfig()
	env, alice, id := acceptedDuringAnOutage(t, cfg)

	// The outage lasts well past the old retries (~0.6 s). Its length is
	// the fault under test, not a wait for something to happen.
	time.Sleep(2 * time.Second)
	env.Brokers = append(env.Brokers, ringertest.StartBroker(t, env.URL, cfg))

	awaitStored(t, env.Brokers[0].Store(), id, protocol.StateAccepted, 10*time.Second) // the ack-accept landed
	if n := alice.Rec.Count("Failure " + id); n != 0 {
		t.Fatalf("caller saw %d failures: %q", n, alice.Rec.Lines())
	}
}

// Close stops an automatic ack-accept that is still retrying: it does not
// wait for the invitation's deadline (20 s here).
func TestCloseStopsAutoAckRetries(t *testing.T) {
	_, alice, _ := acceptedDuringAnOutage(t, outageConfig())
	start := time.Now()
	alice.Close()
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Close took %s with an ack-accept retrying", took)
	}
}

// The broker can answer an automatic ack-accept "not accepted yet" when it
// read a replica (or a leader deposed a moment ago) that lags behind the
// ACCEPTING revision the caller has already seen: a stress run of the R3
// benchmarks saw calls stall in ACCEPTING until the deadline. The caller
// retries such a refusal. Here alice sees ACCEPTING before it is committed
// (its event published by hand), so the broker refuses her first
// ack-accept; then bob's accept commits, and a retry must land.
func TestAutoAckAcceptRetriesAStaleRefusal(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.Timeouts.Accept = 20 * time.Second // the retry, not the deadline, is under test
	cfg.PresenceTTL = time.Minute
	env := ringertest.Start(t, cfg)
	alice, bob := env.Login("alice", "phone"), env.Login("bob", "phone")
	li := alice.Invite(t, "bob")
	ri := bob.Rec.WaitRemote(t, li.ID)
	alice.Rec.Wait(t, "ReceivedByPeer "+li.ID)

	refused := watchErrorReplies(t, env.URL, "not accepted yet")

	ctx := ringertest.Ctx(t)
	st := env.Brokers[0].Store()
	accepting, rev := bobAccepts(t, st, li.ID)
	accepting.Revision = rev + 1 // newer than what alice holds
	publishEvents(t, env.Brokers[0].NC, accepting, "alice")
	alice.Rec.Wait(t, "Accepted "+li.ID)
	select {
	case <-refused:
	case <-time.After(ringertest.Wait):
		t.Fatal("the broker never refused alice's early ack-accept")
	}

	if err := ri.Accept(ctx, "ok"); err != nil {
		t.Fatal(err)
	}
	awaitStored(t, st, li.ID, protocol.StateAccepted, 10*time.Second) // a retry of the refused ack-accept landed
}

// bobAccepts is bob's accept of invitation id applied to its current record
// (read from the stream leader), not committed, and that record's revision.
func bobAccepts(t *testing.T, st *store.Store, id string) (lifecycle.Record, uint64) {
	t.Helper()
	rec, rev, err := st.GetInvitationFresh(ringertest.Ctx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	accepting, _, err := lifecycle.Apply(rec, lifecycle.Action{Kind: lifecycle.Accept, User: "bob", Device: "phone", Response: "ok"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return accepting, rev
}

// publishEvents publishes the events of rec to the given users, as the
// projector would.
func publishEvents(t *testing.T, nc *nats.Conn, rec lifecycle.Record, users ...string) {
	t.Helper()
	for _, n := range lifecycle.Events(rec) {
		if !slices.Contains(users, n.User) {
			continue
		}
		subj, err := subjects.UserEvents(n.User)
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish(subj, protocol.MustMarshal(&n.Event)); err != nil {
			t.Fatal(err)
		}
	}
}

// A callee that accepts in its ring callback sends the accept only once its
// automatic ack has been answered. With several brokers, an accept racing
// its own device's ack landed on another broker and wrote against the
// revision the ack had just replaced: a conflict, a read and a second
// write (docs/benchmarks.md, "The callee's accept after its ack"). A
// monitor sees, in the server's order, bob's ack, its reply, then his
// accept.
func TestAcceptInTheRingCallbackFollowsItsAck(t *testing.T) {
	for _, verb := range []string{subjects.VerbAccept, subjects.VerbRefuse} {
		t.Run(verb, func(t *testing.T) { testAnswerInTheRingCallbackFollowsItsAck(t, verb) })
	}
}

// testAnswerInTheRingCallbackFollowsItsAck: bob answers (verb: accept or
// refuse) inside his ring callback; the monitor must see his ack, its
// reply, then the answer.
func testAnswerInTheRingCallbackFollowsItsAck(t *testing.T, verb string) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	answered := make(chan error, 1)
	env.Login("bob", "phone", client.WithHandler(client.Handler{
		OnRemoteInvitationReceived: func(ri *client.RemoteInvitation) {
			if verb == subjects.VerbAccept {
				answered <- ri.Accept(ringertest.Ctx(t), "at once")
			} else {
				answered <- ri.Refuse(ringertest.Ctx(t), "at once")
			}
		},
	}))
	ackSubj, _ := subjects.Command("bob", subjects.VerbAck)
	answerSubj, _ := subjects.Command("bob", verb)
	var (
		mu    sync.Mutex
		order []string // "ack", "ack reply", verb, as the monitor saw them
	)
	mon := natstest.Connect(t, env.URL, nats.Name("monitor"))
	if _, err := mon.Subscribe(">", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case m.Subject == ackSubj:
			order = append(order, "ack")
		case strings.HasPrefix(m.Subject, "ringer.v1.user.bob.reply.") && slices.Equal(order, []string{"ack"}):
			order = append(order, "ack reply") // bob's first reply after his ack (replies are per user, in order)
		case m.Subject == answerSubj:
			order = append(order, verb)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := mon.Flush(); err != nil {
		t.Fatal(err)
	}

	li := alice.Invite(t, "bob")
	select {
	case err := <-answered:
		if err != nil {
			t.Fatalf("%s in the ring callback: %v", verb, err)
		}
	case <-time.After(ringertest.Wait):
		t.Fatal("bob's ring callback did not run")
	}
	if verb == subjects.VerbAccept {
		alice.Rec.Wait(t, "Accepted "+li.ID)
	} else {
		alice.Rec.Wait(t, "Refused "+li.ID)
	}
	// The monitor's deliveries run on its own goroutine, which may not
	// have had them all yet when alice's callback did (CI saw it see
	// nothing at all at this point): wait for three, then check the order.
	want := []string{"ack", "ack reply", verb}
	natstest.Eventually(t, ringertest.Wait, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(order) < len(want) {
			return fmt.Errorf("the monitor has seen %v so far", order)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(order, want) {
		t.Fatalf("the monitor saw %v, want %v", order, want)
	}
}

// An accept does not wait for ever behind an ack that goes unanswered: the
// server maps bob's acks to a subject the test holds them on (never
// answered, as if the broker that took one had died with it), and bob's
// accept in his ring callback goes out about a second after his ack
// (client's ackWait), well before the ack's first attempt gives up
// (DefaultTimeout/2, 2.5 s), which is when it would go without the bound.
// The call is accepted: an accept needs no ack before it.
func TestAcceptDoesNotWaitForAnUnansweredAck(t *testing.T) {
	s := natstest.RunServer(t)
	env := &ringertest.Env{T: t, URL: s.ClientURL()}
	cfg := ringertest.TestConfig()
	// An invitation whose ack never lands stays SENT: its offline timeout
	// must not end it before the accept, however slow the machine.
	cfg.Timeouts.Offline = 10 * time.Second
	env.Brokers = append(env.Brokers, ringertest.StartBroker(t, env.URL, cfg))
	ackSubj, _ := subjects.Command("bob", subjects.VerbAck)
	acceptSubj, _ := subjects.Command("bob", subjects.VerbAccept)
	if err := s.GlobalAccount().AddMapping(ackSubj, "held.ack"); err != nil {
		t.Fatal(err)
	}
	acks, accepts := make(chan time.Time, 16), make(chan time.Time, 16)
	mon := natstest.Connect(t, env.URL, nats.Name("monitor"))
	for subj, seen := range map[string]chan time.Time{"held.ack": acks, acceptSubj: accepts} {
		if _, err := mon.Subscribe(subj, func(*nats.Msg) { seen <- time.Now() }); err != nil {
			t.Fatal(err)
		}
	}
	if err := mon.Flush(); err != nil {
		t.Fatal(err)
	}

	alice := env.Login("alice", "phone")
	answered := make(chan error, 1)
	env.Login("bob", "phone", client.WithHandler(client.Handler{
		OnRemoteInvitationReceived: func(ri *client.RemoteInvitation) {
			answered <- ri.Accept(ringertest.Ctx(t), "")
		},
	}))
	li := alice.Invite(t, "bob")
	wait := func(what string, ch <-chan time.Time) time.Time {
		t.Helper()
		select {
		case at := <-ch:
			return at
		case <-time.After(ringertest.Wait):
			t.Fatalf("no %s seen", what)
			return time.Time{}
		}
	}
	acked := wait("ack", acks)
	accepted := wait("accept", accepts)
	if err := <-answered; err != nil {
		t.Fatalf("accept: %v", err)
	}
	alice.Rec.Wait(t, "Accepted "+li.ID)
	gap := accepted.Sub(acked)
	t.Logf("accept sent %s after the unanswered ack", gap)
	// About a second (client's ackWait), measured from where the monitor
	// saw the ack: the SDK's wait starts as the ack is sent, so under load
	// the two ends move by a scheduling delay either way. Above 2 s is the
	// failure this test is for: the ack attempt's timeout, 2.5 s.
	if gap < 500*time.Millisecond || gap > 2*time.Second {
		t.Fatalf("accept sent %s after the unanswered ack, want about a second (client's ackWait)", gap)
	}
}
