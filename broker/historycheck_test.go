package broker_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/broker/journal"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
)

// checkJournal checks that each party's history lists each of the finished
// invitations exactly once, with its outcome.
func checkJournal(t *testing.T, url string, finals []protocol.Invitation) {
	t.Helper()
	nc := natstest.Connect(t, url)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	hist := journal.New(nc, js, journal.MaxHistorySize)
	natstest.Eventually(t, 2*ringertest.Wait, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), ringertest.Wait)
		defer cancel()
		histories := map[string]map[string][]protocol.CallRecord{}
		for _, f := range finals {
			for _, user := range []string{f.Caller, f.Callee} {
				if histories[user] == nil {
					page, err := hist.Read(ctx, user, "", protocol.MaxHistoryPage, false)
					if err != nil {
						return err
					}
					histories[user] = map[string][]protocol.CallRecord{}
					for _, r := range page.Calls {
						histories[user][r.ID] = append(histories[user][r.ID], r)
					}
				}
				got := histories[user][f.ID]
				if len(got) != 1 || got[0].State != f.State || got[0].Reason != f.Reason {
					return fmt.Errorf("%s's history has %s as %+v, want once as %s/%s", user, f.ID, got, f.State, f.Reason)
				}
			}
		}
		return nil
	})
	t.Logf("history: each of %d invitations in both parties' histories once", len(finals))
}
