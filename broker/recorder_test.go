package broker_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// A history stream that stops answering (no quorum: every append waits for
// its deadline) delays the histories, not the rings (broker/recorder.go).
// Here the history stream is scaled to two replicas and one of them
// stopped, while the bucket, its consumers and the timer stream keep a
// quorum of their three. Forty invitations end, so forty appends hang;
// before the recorder they held the projector's sixteen workers for
// seconds each, and an invitation sent next rang after them. Once the
// server is back, every ended invitation is in both parties' histories.
func TestAStalledHistoryDoesNotHoldUpRings(t *testing.T) {
	c, env := servingClusterR3(t)
	const ended, rung = 40, 8
	callers, callees := make([]*ringertest.Client, ended+rung), make([]*ringertest.Client, ended+rung)
	for i := range callers {
		callers[i] = env.Login(fmt.Sprintf("caller%d", i), "phone")
		callees[i] = env.Login(fmt.Sprintf("callee%d", i), "phone")
	}

	// Two replicas of the history stream, then one of them stopped.
	js, err := jetstream.New(natstest.Connect(t, c.URLs()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ringertest.Ctx(t)
	st, err := js.Stream(ctx, subjects.HistoryStream)
	if err != nil {
		t.Fatal(err)
	}
	sc := st.CachedInfo().Config
	sc.Replicas = 2
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	var peers []string
	natstest.Eventually(t, 20*time.Second, func() error {
		info, err := st.Info(ctx)
		if err != nil {
			return err
		}
		peers = peers[:0]
		if info.Cluster != nil && info.Cluster.Leader != "" {
			peers = append(peers, info.Cluster.Leader)
			for _, r := range info.Cluster.Replicas {
				if r.Current {
					peers = append(peers, r.Name)
				}
			}
		}
		if len(peers) != 2 || len(info.Cluster.Replicas) != 1 {
			return fmt.Errorf("history stream not on two current replicas yet: %v", peers)
		}
		return nil
	})
	stopped := slices.IndexFunc(c.Servers, func(s *server.Server) bool { return slices.Contains(peers, s.Name()) })
	t.Logf("history replicas %v; stopping %s", peers, c.Servers[stopped].Name())
	c.Stop(stopped)
	// Ready again when a call rings: the groups led by the stopped server
	// elect new leaders (seconds). These calls end too, with their appends.
	natstest.Attempt(t, 30*time.Second, time.Second, func(ctx context.Context) error {
		li := callers[0].CreateLocalInvitation(callees[0].User())
		if err := li.Send(ctx); err != nil {
			return err
		}
		defer func() { _ = li.Cancel(context.Background()) }()
		for callees[0].Rec.Count("RemoteReceived "+li.ID) == 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s did not ring: %w", li.ID, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
		return nil
	})

	ids := make([]string, ended)
	for i := range ended {
		li := callers[i].Invite(t, callees[i].User())
		callees[i].Rec.WaitRemote(t, li.ID)
		if err := li.Cancel(ringertest.Ctx(t)); err != nil {
			t.Fatalf("cancel %s: %v", li.ID, err)
		}
		ids[i] = li.ID
	}
	// The appends of those forty hang now. New invitations still ring at once.
	for i := ended; i < ended+rung; i++ {
		start := time.Now()
		li := callers[i].Invite(t, callees[i].User())
		callees[i].Rec.WaitRemote(t, li.ID)
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("invitation %d rang %s after its send, behind the stalled history appends", i-ended, took.Round(time.Millisecond))
		}
	}

	c.Restart(stopped)
	for i := range ended {
		for _, who := range []*ringertest.Client{callers[i], callees[i]} {
			natstest.Eventually(t, 60*time.Second, func() error {
				page, err := who.History(ringertest.Ctx(t), "", 50)
				if err != nil {
					return err
				}
				if !slices.ContainsFunc(page.Calls, func(r protocol.CallRecord) bool { return r.ID == ids[i] }) {
					return fmt.Errorf("%s's history lacks %s", who.User(), ids[i])
				}
				return nil
			})
		}
	}
}
