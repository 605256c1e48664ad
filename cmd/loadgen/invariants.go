// End-of-run invariant checks: every invitation finished, and no user is left busy.
package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/broker"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/protocol"
)

// checkQuiescent runs after the drain. For every user it asks the broker,
// as that user, for a sync: the reply must list no live invitation and the
// manual busy flag must be false (see syncUser).
//
// With an embedded broker it also reads every user's line record from the
// store, which sync cannot show, and checks that no claim on it still holds
// (store.Busy): a claim of a live invitation sync missed, or one whose
// invitation was never written, which holds for the claim grace only — so
// lines get the grace plus 5 s.
func (r *run) checkQuiescent(ctx context.Context, st *store.Store) {
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for _, u := range r.pool.all {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			invs, busy, err := r.syncUntilSettled(ctx, u)
			if err != nil {
				r.st.cmdError("sync", err)
				r.tr.violate(vLeftBusy, "%s: could not check: %v", u.id, err)
				return
			}
			if len(invs) > 0 || busy {
				ids := make([]string, 0, len(invs))
				for _, inv := range invs {
					ids = append(ids, fmt.Sprintf("%s(%s)", inv.ID, inv.State))
				}
				r.tr.violate(vLeftBusy, "%s: sync lists %v live, busy flag %v", u.id, ids, busy)
			}
		}()
	}
	wg.Wait()
	if st == nil {
		return
	}
	// Claims are released lazily: a line keeps claims of finished
	// invitations until its next write, and those hold nothing. What must
	// not remain is a claim that holds — of a live invitation, or of one
	// never written (a sender killed mid-send), which holds for the claim
	// grace only; so wait out the grace before calling it a violation.
	rules := broker.DefaultConfig().LineRules()
	deadline := time.Now().Add(rules.Grace + 5*time.Second)
	pending := r.pool.all
	for len(pending) > 0 {
		var still []*user
		lines := map[string]store.Line{}
		for _, u := range pending {
			gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			busy, l, err := st.Busy(gctx, u.id, rules)
			cancel()
			if err == nil && !busy {
				continue
			}
			still = append(still, u)
			lines[u.id] = l
		}
		pending = still
		if len(pending) == 0 || time.Now().After(deadline) {
			for _, u := range pending {
				r.tr.violate(vLeftBusyLine, "%s: line still held: claims %v (manual %v)", u.id, lines[u.id].IDs(), lines[u.id].Manual)
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// settleAfter is how long past its deadline an invitation may still be live
// when checked: a read times out an invitation more than 2 s overdue by
// itself (docs/architecture.md, "Reads settle overdue invitations").
const settleAfter = 3 * time.Second

// staleFor is how long a call, or an invitation past its deadline, listed
// live by the end-of-run sync is asked about again before it counts.
const staleFor = 10 * time.Second

// maxSettle bounds how long the check waits for one user's invitations.
const maxSettle = 90 * time.Second

// unreadableFor bounds how long the check asks again a sync that the
// cluster could not answer.
const unreadableFor = 60 * time.Second

// unanswered reports whether err says the cluster did not answer (rather
// than answered wrong).
func unanswered(err error) bool {
	return errors.Is(err, client.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders)
}

// syncUntilSettled is syncUser, asked again while every invitation it lists
// still has a deadline to reach (plus settleAfter). The drain waits for the
// invitations loadgen tracks; one whose send timed out at the client but
// was executed (its reply lost to a paused server) is not tracked, and
// legitimately rings until its deadline. A live invitation without a
// deadline (a call) or past it is asked about again for staleFor: a replica
// catching up after a NATS node came back (a leader-fault chaos run) may
// answer the sync with a view seconds old; still live then, it is a
// violation.
//
// A sync the cluster cannot answer yet (a server just back from a fault:
// UNAVAILABLE, a timeout) is asked again for up to unreadableFor before it
// is reported: it says nothing about the user's line.
func (r *run) syncUntilSettled(ctx context.Context, u *user) ([]protocol.Invitation, bool, error) {
	stale := time.Now().Add(staleFor)
	unreadable := time.Now().Add(unreadableFor)
	for {
		invs, busy, err := r.syncUser(ctx, u)
		if err != nil && unanswered(err) && time.Now().Before(unreadable) && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		if err != nil || len(invs) == 0 {
			return invs, busy, err
		}
		wait := time.Duration(0)
		for _, inv := range invs {
			left := time.Until(time.UnixMilli(inv.Deadline).Add(settleAfter))
			if inv.Deadline == 0 || left <= 0 {
				left = time.Until(stale)
			}
			if left <= 0 || left > maxSettle {
				return invs, busy, nil
			}
			wait = max(wait, left)
		}
		select {
		case <-ctx.Done():
			return invs, busy, nil
		case <-time.After(min(wait, time.Second)):
		}
	}
}

// syncUser returns the user's live invitations and manual busy flag. It
// syncs through a throw-away client (sync needs no session), so the views it
// applies fire no callbacks in the tracked client.
func (r *run) syncUser(ctx context.Context, u *user) ([]protocol.Invitation, bool, error) {
	cl, device := u.client()
	if cl == nil {
		device = "check"
	}
	c, err := client.New(u.nc, u.id, device)
	if err != nil {
		return nil, false, err
	}
	defer c.Close()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	invs, err := c.Sync(sctx)
	return invs, c.Session().Busy, err
}
