package broker_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
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
