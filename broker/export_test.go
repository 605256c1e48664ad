package broker_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/ringer-dev/ringer/broker/journal"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
)

// The export holds every committed transition once, in order, even one
// superseded before any projector saw it: an invitation canceled the
// moment it was sent (the bucket then keeps only the CANCELED revision, and
// a consumer of the bucket never sees SENT; measured on 2026-12-03 with a
// JetStream source of the bucket, which missed it). Two brokers project.
func TestExportHasEveryTransitionOnce(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.Export = true
	env := ringertest.Start(t, cfg)
	second := cfg
	second.Name = "b1"
	env.Brokers = append(env.Brokers, ringertest.StartBroker(t, env.URL, second))
	alice := env.Login("alice", "phone")
	ctx := ringertest.Ctx(t)

	type sent struct {
		id    string
		revs  []uint64
		final protocol.Invitation
	}
	var all []sent
	for i := 0; i < 20; i++ {
		li := alice.CreateLocalInvitation("bob") // offline: the invitation waits
		if err := li.Send(ctx); err != nil {
			t.Fatal(err)
		}
		first := li.Invitation().Revision
		if err := li.Cancel(ctx); err != nil {
			t.Fatal(err)
		}
		final := li.Invitation()
		all = append(all, sent{li.ID, []uint64{first, final.Revision}, final})
	}

	nc := natstest.Connect(t, env.URL)
	js := natstest.JetStream(t, nc)
	exp := journal.New(nc, js, journal.MaxHistorySize)
	natstest.Eventually(t, ringertest.Wait, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), ringertest.Wait)
		defer cancel()
		for _, s := range all {
			got, err := exp.Exported(ctx, s.id)
			if err != nil {
				return err
			}
			if err := checkTransitions(s.id, got, s.final); err != nil {
				return err
			}
			if len(got) != 2 || got[0].Revision != s.revs[0] || got[0].State != protocol.StateSent || got[1].Revision != s.revs[1] {
				return fmt.Errorf("%s: exported %+v, want SENT at %d then CANCELED at %d", s.id, got, s.revs[0], s.revs[1])
			}
		}
		return nil
	})
}
