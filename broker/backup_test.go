package broker_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
)

// A backup taken while calls run, restored into a fresh server before its
// brokers start: the call that was active is still a call and can be hung
// up, the invitation that was ringing reaches its outcome, and nobody is
// left busy.
func TestBackupWhileCallsRunAndRestore(t *testing.T) {
	t.Parallel() // waits on timeouts and elections, with no latency bound: run beside another such test
	cfg := ringertest.TestConfig()
	env := ringertest.Start(t, cfg)
	alice, bob := env.Login("alice", "phone"), env.Login("bob", "phone")
	carol := env.Login("carol", "phone")
	call := alice.Call(t, bob)
	ringing := carol.CreateLocalInvitation("dave") // dave never comes: it rings until its offline deadline
	ringing.Timeouts = &protocol.Timeouts{OfflineMs: 5000}
	if err := ringing.Send(ringertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}

	// Traffic while the backup runs.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		e, f := env.Login("erin", "phone"), env.Login("frank", "phone")
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			li := e.CreateLocalInvitation(f.User())
			if err := li.Send(ringertest.Ctx(t)); err == nil {
				_ = li.Cancel(ringertest.Ctx(t))
			}
		}
	}()
	dir := t.TempDir()
	nc := natstest.Connect(t, env.URL)
	if _, err := store.Backup(ringertest.Ctx(t), nc, dir); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()

	// A fresh server: restore, then start its broker.
	fresh := &ringertest.Env{T: t, URL: natstest.RunServer(t).ClientURL()}
	if _, err := store.Restore(ringertest.Ctx(t), natstest.Connect(t, fresh.URL), dir); err != nil {
		t.Fatal(err)
	}
	fresh.Brokers = append(fresh.Brokers, ringertest.StartBroker(t, fresh.URL, cfg))
	alice2, bob2 := fresh.Login("alice", "phone"), fresh.Login("bob", "phone")
	carol2 := fresh.Login("carol", "phone")

	inv, err := alice2.Get(ringertest.Ctx(t), call.ID)
	if err != nil || inv.State != protocol.StateAccepted || inv.CallState != protocol.CallActive {
		t.Fatalf("the call after the restore: %+v %v", inv, err)
	}
	if err := alice2.Hangup(ringertest.Ctx(t), call.ID); err != nil {
		t.Fatal(err)
	}
	bob2.Rec.Wait(t, "CallEnded "+call.ID)
	natstest.Eventually(t, 2*ringertest.Wait, func() error {
		inv, err := carol2.Get(ringertest.Ctx(t), ringing.ID)
		if err != nil {
			return err
		}
		if inv.Live() {
			return fmt.Errorf("the ringing invitation is still %s (deadline in %s)", inv.State, time.Until(time.UnixMilli(inv.Deadline)).Round(time.Millisecond))
		}
		if inv.State != protocol.StateFailed || inv.Reason != protocol.ReasonPeerOffline {
			return errors.New("unexpected outcome " + string(inv.State) + " " + string(inv.Reason))
		}
		return nil
	})
	ringertest.WaitFree(t, fresh.Brokers[0].Store(), "alice", "bob", "carol", "dave", "erin", "frank")
}
