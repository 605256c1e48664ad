package broker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// Timers armed together go out as a few schedules (Config.TimerBatch, on
// by default), and every one of them still fires on time: 40 invitations
// sent at once to callees that never come online time out PEER_OFFLINE
// within a second of their deadlines, from fewer than a quarter as many
// schedules.
func TestTimerBatches(t *testing.T) {
	cfg := ringertest.TestConfig()
	if cfg.TimerBatch == 0 {
		t.Fatal("timer batches are off by default")
	}
	// The callers log in without heartbeats: their sessions must outlive the
	// offline timeout, or a caller's lapse fails its invitations
	// PEER_OFFLINE before the timer does (fresh-clone CI: one observed
	// 56 ms before its deadline).
	cfg.PresenceTTL = time.Minute
	env := ringertest.Start(t, cfg)
	st := env.Brokers[0].Store()
	const callers, each = 10, 4 // each caller's MaxOutgoing
	var clients []*ringertest.Client
	for i := range callers {
		clients = append(clients, env.Login(fmt.Sprintf("caller%d", i), "phone", client.WithoutHeartbeat()))
	}
	before := st.Stats()
	type sent struct {
		c        *ringertest.Client
		id       string
		deadline int64
	}
	var (
		mu   sync.Mutex
		all  []sent
		wg   sync.WaitGroup
		ctx  = ringertest.Ctx(t)
		errs = make(chan error, callers*each)
	)
	for i, c := range clients {
		for j := range each {
			wg.Go(func() {
				li := c.CreateLocalInvitation(fmt.Sprintf("away%d-%d", i, j))
				if err := li.Send(ctx); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				all = append(all, sent{c, li.ID, li.Invitation().Deadline})
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, s := range all {
		s.c.Rec.Wait(t, "Failure "+s.id+" PEER_OFFLINE")
		checkLateness(t, s.deadline, time.Now())
	}
	schedules := st.Stats().Sub(before).Timers
	t.Logf("%d timers armed in %d schedules", len(all), schedules)
	if schedules == 0 || schedules > uint64(len(all))/4 {
		t.Errorf("%d timers armed in %d schedules, want 1..%d", len(all), schedules, len(all)/4)
	}
	// Each fired once: the timer stream keeps nothing behind.
	natstest.Eventually(t, 10*time.Second, func() error {
		n, err := st.PendingTimers(ctx)
		if err != nil || n != 0 {
			return fmt.Errorf("%d messages left in the timer stream (%v)", n, err)
		}
		return nil
	})
}

// A fired batch whose body is not a batch is terminated with an error in
// the log, not redelivered for ever and not a panic; the batches after it
// are handled as usual.
func TestTimerBatchUndecodable(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	ctx := ringertest.Ctx(t)
	js := env.Brokers[0].Store().JetStream()
	for _, body := range [][]byte{[]byte("not msgpack"), {0x91, 0x82, 0xa1, 'i', 0xa3, 'a', '.', 'b', 0xa1, 'a', 0x01}} {
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: subjects.Partition(0).TimerBatchFire("junk"), Data: body}); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.Consumer(ctx, subjects.TimerStream, store.ConsumerTimerBatches)
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.AckFloor.Stream < 2 || info.NumAckPending > 0 || info.NumRedelivered > 0 {
			return fmt.Errorf("ack floor %d, %d pending, %d redelivered", info.AckFloor.Stream, info.NumAckPending, info.NumRedelivered)
		}
		return nil
	})
	// And a real one after them still times its invitation out.
	alice := env.Login("alice", "phone")
	li := alice.Invite(t, "nobody")
	deadline := li.Invitation().Deadline
	alice.Rec.Wait(t, "Failure "+li.ID+" PEER_OFFLINE")
	checkLateness(t, deadline, time.Now())
}

// A revision's projection is done only once the batch holding its timer
// is stored (broker/recorder.go): until then it stays the broker's — its
// outbox watermark stays below it, or with the projector consumer it stays
// unacknowledged — and a broker that dies meanwhile leaves it to a peer,
// which arms the timer again. Here the timer stream has no quorum when an
// invitation to a user who is offline is sent: the revision must stay held
// while the batch cannot be stored. The broker is then killed, the
// stream's server restarted and a new broker started: the invitation still
// times out. Letting go of it before the batch is stored loses the timer
// with the broker, and the invitation stays live. (The caller sends no
// heartbeat, so no read of hers settles the overdue invitation, the net
// under lost timers, and presence lasts a minute.)
func TestTimerBatchOutlivesABrokerKilledBeforeItIsStored(t *testing.T) {
	t.Parallel() // waits out elections and restarts, with no latency bound: run beside another such test
	for _, consumer := range []bool{false, true} {
		t.Run(map[bool]string{false: "outbox", true: "consumer"}[consumer], func(t *testing.T) {
			timerBatchOutlivesAKilledBroker(t, consumer)
		})
	}
}

func timerBatchOutlivesAKilledBroker(t *testing.T, consumer bool) {
	c, cfg := clusterR3(t)
	cfg.Timeouts.Offline = 15 * time.Second
	cfg.PresenceTTL = time.Minute
	cfg.ConsumerProjection = consumer
	env := &ringertest.Env{T: t, URL: c.URLs()}
	b0 := cfg
	b0.Name = "b0"
	env.Brokers = append(env.Brokers, ringertest.StartBroker(t, env.URL, b0))
	for _, s := range c.Servers {
		ringertest.WaitServing(t, s.ClientURL())
	}
	alice := env.Login("alice", "phone", client.WithoutHeartbeat())
	js, err := jetstream.New(natstest.Connect(t, c.URLs()))
	if err != nil {
		t.Fatal(err)
	}
	stopped := stallStream(t, c, js, subjects.Partition(0).TimerStream(), nil)

	// Sent once the groups the stopped server led have new leaders.
	var li *client.LocalInvitation
	natstest.Attempt(t, 30*time.Second, 5*time.Second, func(ctx context.Context) error {
		li = alice.CreateLocalInvitation("nobody")
		return li.Send(ctx)
	})
	ctx := ringertest.Ctx(t)
	st := env.Brokers[0].Store()
	rec, rev, err := st.GetInvitationFresh(ctx, li.ID)
	if err != nil {
		t.Fatal(err)
	}
	// held reports whether b0 still holds the revision's projection as
	// unfinished, or why not.
	held := func() error {
		if !consumer {
			e, err := st.GetWatermarks(ringertest.Ctx(t), env.Brokers[0].Instance())
			if err != nil {
				return err
			}
			if e.Marks.Parts[0] >= rev {
				return fmt.Errorf("watermark %d past revision %d", e.Marks.Parts[0], rev)
			}
			return nil
		}
		projector, err := js.Consumer(ringertest.Ctx(t), subjects.Partition(0).BucketStream(), store.ConsumerProjector)
		if err != nil {
			return err
		}
		info, err := projector.Info(ringertest.Ctx(t))
		switch {
		case err != nil:
			return err
		case info.Delivered.Stream < rev:
			return fmt.Errorf("revision %d not delivered yet (%d)", rev, info.Delivered.Stream)
		case info.AckFloor.Stream >= rev:
			return fmt.Errorf("revision %d acknowledged", rev)
		}
		return nil
	}
	// Held for as long as the stream has no quorum (checked for two
	// seconds, well past the batch window).
	natstest.Eventually(t, 10*time.Second, held)
	for until := time.Now().Add(2 * time.Second); time.Now().Before(until); {
		if err := held(); err != nil {
			t.Fatalf("let go while the batch holding its timer cannot be stored: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // a sampling interval of a check over a window
	}

	env.Brokers[0].Kill()
	c.Restart(stopped)
	b1 := cfg
	b1.Name = "b1"
	env.Brokers = append(env.Brokers, ringertest.StartBroker(t, env.URL, b1))
	deadline := time.UnixMilli(rec.Deadline)
	endsPeerOffline(t, env.Brokers[1].Store(), li.ID, deadline, time.Until(deadline)+30*time.Second)
	alice.Rec.Wait(t, "Failure "+li.ID+" PEER_OFFLINE")
}

// A fired batch stays the broker's while it is handled, however long that
// takes: fireBatch tells the server it is in progress every third of the
// ack wait, or a batch slower than the ack wait would be redelivered and
// handled twice. Here the bucket has no quorum when an invitation's
// offline deadline fires, so its timeout cannot be written: the batch must
// stay delivered once, unacknowledged, for twice the ack wait; then the
// quorum comes back and the invitation ends PEER_OFFLINE.
func TestTimerBatchHeldWhileItsTimeoutsWait(t *testing.T) {
	t.Parallel() // waits out elections and restarts, with no latency bound: run beside another such test
	c, cfg := clusterR3(t)
	cfg.Timeouts.Offline = 10 * time.Second
	cfg.PresenceTTL = time.Minute
	// No leader spreading: the broker must not move the batches' consumer
	// while the test watches it (a new consumer leader redelivers what
	// the old one had delivered).
	cfg.LeaderCheck = 0
	env := &ringertest.Env{T: t, URL: c.URLs()}
	env.Brokers = append(env.Brokers, ringertest.StartBroker(t, env.URL, cfg))
	for _, s := range c.Servers {
		ringertest.WaitServing(t, s.ClientURL())
	}
	alice := env.Login("alice", "phone", client.WithoutHeartbeat())
	js, err := jetstream.New(natstest.Connect(t, c.URLs()))
	if err != nil {
		t.Fatal(err)
	}
	// Looked up before a server stops: the test's connection may be on it.
	// Each try with a deadline of its own (natstest.Attempt): the cluster
	// has only just formed.
	var batches jetstream.Consumer
	natstest.Attempt(t, 30*time.Second, 5*time.Second, func(ctx context.Context) (err error) {
		batches, err = js.Consumer(ctx, subjects.Partition(0).TimerStream(), store.ConsumerTimerBatches)
		return err
	})
	li := alice.Invite(t, "nobody")
	deadline := time.UnixMilli(li.Invitation().Deadline)
	moves := env.Brokers[0].NC.Stats().Reconnects
	stopped := stallStream(t, c, js, subjects.Partition(0).BucketStream(), env.Brokers[0].Store(),
		store.Group{Stream: subjects.Partition(0).TimerStream(), Consumer: store.ConsumerTimerBatches})
	if time.Until(deadline) < time.Second {
		t.Fatalf("the bucket took until %s before its deadline to stall", time.Until(deadline))
	}

	natstest.Eventually(t, time.Until(deadline)+10*time.Second, func() error {
		info, err := batches.Info(ringertest.Ctx(t))
		if err != nil {
			return err
		}
		if info.NumAckPending == 0 {
			return fmt.Errorf("no batch in hand (delivered up to %d)", info.Delivered.Stream)
		}
		return nil
	})
	ackWait := store.TimerAckWait(cfg.AckWait)
	// Sampled over twice the ack wait, and at least five times (a sample
	// the cluster does not answer, its connection moving, is not one).
	for held, n := time.Now().Add(2*ackWait), 0; time.Now().Before(held) || n < 5; {
		info, err := batches.Info(ringertest.Ctx(t))
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		n++
		if info.NumRedelivered > 0 || info.NumAckPending == 0 {
			if env.Brokers[0].NC.Stats().Reconnects != moves {
				// The stopped server was the broker's: its connection
				// moved, and what it held was redelivered, as it must be
				// (a redelivered batch is handled again, idempotently).
				// This run cannot tell whether the batch was held.
				t.Logf("the broker's connection moved with the stopped server: the batch's redelivery is not a sample (%d redelivered)", info.NumRedelivered)
				break
			}
			t.Fatalf("the batch was let go while its timeout waited for the bucket: %d redelivered, %d pending", info.NumRedelivered, info.NumAckPending)
		}
		time.Sleep(100 * time.Millisecond) // a sampling interval of a check over a window
	}

	c.Restart(stopped)
	endsPeerOffline(t, env.Brokers[0].Store(), li.ID, deadline, 30*time.Second)
	alice.Rec.Wait(t, "Failure "+li.ID+" PEER_OFFLINE")
}

// endsPeerOffline waits up to within for invitation id, due at deadline, to
// end FAILED PEER_OFFLINE (read from st's stream leader).
func endsPeerOffline(t *testing.T, st *store.Store, id string, deadline time.Time, within time.Duration) {
	t.Helper()
	natstest.Eventually(t, within, func() error {
		got, _, err := st.GetInvitationFresh(ringertest.Ctx(t), id)
		if err != nil {
			return err
		}
		if got.Live() {
			return fmt.Errorf("%s still %s, %s after its deadline", id, got.State, time.Since(deadline).Round(time.Millisecond))
		}
		if got.State != protocol.StateFailed || got.Reason != protocol.ReasonPeerOffline {
			t.Fatalf("%s ended %s %s, want FAILED PEER_OFFLINE", id, got.State, got.Reason)
		}
		return nil
	})
}

// A call answered while its timers wait in the batcher stores none of
// them: the offline timer of SENT and the accept-ack timer of ACCEPTING
// are needed no more once the call is ACCEPTED (no maximum duration), so
// the batcher drops them at its flush instead of storing schedules that
// would only fire into a record that ignores them.
func TestAnsweredCallsStoreNoTimers(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.TimerBatch = time.Second // each timer waits half a second or more before it is stored
	cfg.Timeouts.Offline, cfg.Timeouts.Expire, cfg.Timeouts.Accept = time.Minute, time.Minute, 30*time.Second
	env := ringertest.Start(t, cfg)
	st := env.Brokers[0].Store()
	const calls = 4
	var callers, callees []*ringertest.Client
	for i := range calls {
		callers = append(callers, env.Login(fmt.Sprintf("caller%d", i), "phone"))
		callees = append(callees, env.Login(fmt.Sprintf("callee%d", i), "phone"))
	}
	before := st.Stats()
	for i := range calls {
		li := callers[i].Call(t, callees[i])
		callees[i].Rec.Wait(t, "RemoteAccepted "+li.ID) // the caller's ackaccept is committed
	}
	// Each call asked for two timers (SENT, ACCEPTING) and maybe a third
	// (RECEIVED relies on SENT's, not yet stored): all are dropped.
	natstest.Eventually(t, 10*time.Second, func() error {
		if d := st.Stats().Sub(before); d.Skipped < 2*calls {
			return fmt.Errorf("%d timers skipped, want %d or more", d.Skipped, 2*calls)
		}
		return nil
	})
	d := st.Stats().Sub(before)
	if d.Timers != 0 {
		t.Errorf("%d answered calls stored %d timer schedules (%d skipped), want none", calls, d.Timers, d.Skipped)
	}
	if n := counter(t, env.Brokers[0].Broker, "ringer_timers_skipped_total"); n < float64(d.Skipped) {
		t.Errorf("ringer_timers_skipped_total = %g, want %d or more", n, d.Skipped)
	}
	if n, err := st.PendingTimers(ringertest.Ctx(t)); err != nil || n != 0 {
		t.Errorf("%d messages in the timer streams (%v), want none", n, err)
	}
}
