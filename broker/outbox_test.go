package broker_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
)

// gone is a write tracker that never projects: a broker that dies right
// after each commit.
type gone struct{}

func (gone) Begin(int) store.WriteDone { return gone{} }

func (gone) Stored(lifecycle.Record, uint64)          {}
func (gone) Refused()                                 {}
func (gone) Unknown(lifecycle.Record, store.Resolver) {}

// What a broker committed and never projected (it died in between) is
// projected by a peer: here a writer that never projects commits an
// invitation to bob under the instance "gone", whose watermarks stand
// before it and never change again. Within a few ack waits the running
// broker claims them, replays the invitation — bob's phone rings and
// acknowledges it — and deletes them.
func TestAGoneBrokersCommitsAreProjected(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)
	st, err := store.Open(ctx, natstest.Connect(t, env.URL))
	if err != nil {
		t.Fatal(err)
	}
	last, err := st.LastSequence(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutWatermarks(ctx, "gone", store.Watermarks{Parts: []uint64{last}}, 0); err != nil {
		t.Fatal(err)
	}
	st.TrackWrites("gone", gone{})
	cfg := ringertest.TestConfig()
	rec := lifecycle.New("fromthegone", "alice", "phone", "bob", "", "", cfg.Timeouts, time.Now())
	if _, err := st.Commit(ctx, store.PutInvitation(rec, 0)); err != nil {
		t.Fatal(err)
	}
	bob.Rec.Wait(t, "RemoteReceived "+rec.ID)
	natstest.Eventually(t, 10*time.Second, func() error {
		e, err := st.GetWatermarks(ringertest.Ctx(t), "gone")
		if errors.Is(err, store.ErrNotFound) || (err == nil && e.Deleted) {
			return nil
		}
		return fmt.Errorf("the gone instance's watermarks are still there (%+v, %v)", e, err)
	})
	b := env.Brokers[0].Broker
	if n := counter(t, b, "ringer_outbox_reclaims_total"); n != 1 {
		t.Errorf("ringer_outbox_reclaims_total = %g, want 1", n)
	}
	if n := counter(t, b, "ringer_outbox_replayed_total"); n != 1 {
		t.Errorf("ringer_outbox_replayed_total = %g, want 1 (the gone broker's one revision)", n)
	}
}

// A broker that commits nothing keeps its watermarks near the bucket's end
// all the same: what others write moves them, so a peer replaying after
// its death reads only what came after, not everything since its last
// commit.
func TestIdleWatermarksFollowTheBucket(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	ctx := ringertest.Ctx(t)
	st, err := store.Open(ctx, natstest.Connect(t, env.URL))
	if err != nil {
		t.Fatal(err)
	}
	instance := env.Brokers[0].Instance()
	before, err := st.GetWatermarks(ctx, instance)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := st.Commit(ctx, store.PutLine(fmt.Sprintf("user%d", i), store.Line{Manual: true}, 0)); err != nil {
			t.Fatal(err)
		}
	}
	last, err := st.LastSequence(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if before.Marks.Parts[0] >= last {
		t.Fatalf("set-up: watermark %d already at the end %d", before.Marks.Parts[0], last)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		e, err := st.GetWatermarks(ringertest.Ctx(t), instance)
		if err != nil {
			return err
		}
		if e.Marks.Parts[0] < last {
			return fmt.Errorf("the idle broker's watermark is %d, the bucket's end %d", e.Marks.Parts[0], last)
		}
		return nil
	})
}

// A broker's watermarks are there while it runs, deleted when it shuts
// down with nothing held, and left by one killed for a peer, which finds
// nothing to replay after them and deletes them.
func TestWatermarksLeaveWithTheirBroker(t *testing.T) {
	env := ringertest.StartBrokers(t, 2)
	st := env.Brokers[0].Store()
	present := func(instance string) error {
		e, err := st.GetWatermarks(ringertest.Ctx(t), instance)
		switch {
		case err != nil:
			return err
		case e.Deleted:
			return store.ErrNotFound
		}
		return nil
	}
	b0, b1 := env.Brokers[0].Instance(), env.Brokers[1].Instance()
	if b0 == "" || b1 == "" || b0 == b1 {
		t.Fatalf("instances %q and %q", b0, b1)
	}
	for _, in := range []string{b0, b1} {
		if err := present(in); err != nil {
			t.Fatalf("watermarks of a running broker: %v", err)
		}
	}
	if err := env.Brokers[1].Shutdown(ringertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := present(b1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("watermarks of a broker shut down: %v, want them deleted", err)
	}
	second := ringertest.TestConfig()
	second.Name = "b2"
	env.Brokers = append(env.Brokers, ringertest.StartBroker(t, env.URL, second))
	env.Brokers[0].Kill()
	st = env.Brokers[2].Store()
	natstest.Eventually(t, 10*time.Second, func() error {
		if err := present(b0); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("watermarks of a killed broker: %v, want them deleted by its peer", err)
		}
		return nil
	})
}
