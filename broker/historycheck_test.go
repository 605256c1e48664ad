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

// checkJournal checks that each party's history lists each of the finished
// invitations exactly once, with its outcome.
func checkJournal(t *testing.T, url string, finals []protocol.Invitation) {
	t.Helper()
	nc := natstest.Connect(t, url)
	js := natstest.JetStream(t, nc)
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

// checkTransitions checks one invitation's export: each revision once, in
// order, each naming the one before it, ending with final.
func checkTransitions(id string, got []protocol.Transition, final protocol.Invitation) error {
	if len(got) == 0 {
		return fmt.Errorf("%s: nothing exported", id)
	}
	if err := protocol.CheckChain(got); err != nil {
		return fmt.Errorf("%s: %w", id, err)
	}
	for i, tr := range got {
		if tr.V != protocol.ExportVersion || tr.ID != id {
			return fmt.Errorf("%s: transition %d is %+v", id, i+1, tr)
		}
	}
	last := got[len(got)-1]
	if last.Revision != final.Revision || last.State != final.State || last.Reason != final.Reason || last.CallState != final.CallState {
		return fmt.Errorf("%s: last exported %d %s/%s/%s, final %d %s/%s/%s", id, last.Revision, last.State, last.Reason,
			last.CallState, final.Revision, final.State, final.Reason, final.CallState)
	}
	return nil
}

// checkExport checks that the export holds every finished invitation's
// transitions once each, in order (checkTransitions).
func checkExport(t *testing.T, url string, finals []protocol.Invitation) {
	t.Helper()
	nc := natstest.Connect(t, url)
	js := natstest.JetStream(t, nc)
	exp := journal.New(nc, js, journal.MaxHistorySize)
	transitions := 0
	natstest.Eventually(t, 2*ringertest.Wait, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), ringertest.Wait)
		defer cancel()
		transitions = 0
		for _, f := range finals {
			got, err := exp.Exported(ctx, f.ID)
			if err != nil {
				return err
			}
			if err := checkTransitions(f.ID, got, f); err != nil {
				return err
			}
			transitions += len(got)
		}
		return nil
	})
	t.Logf("export: %d invitations, %d transitions, each once and in order", len(finals), transitions)
}
