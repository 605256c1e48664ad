package broker

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// fire handles a timer that JetStream fired (ADR-51 schedule → work queue).
// The record, not the timer, decides (fireOne).
func (b *Broker) fire(_ context.Context, m jetstream.Msg) {
	id, err := subjects.ParseTimerFire(m.Subject())
	if err != nil {
		_ = m.Term()
		return
	}
	at, _ := strconv.ParseInt(string(m.Data()), 10, 64)
	switch wait, ok := b.fireOne(id, at); {
	case !ok:
		b.nak(m, "timers")
	case wait > 0:
		// This is the deadline's own timer, a little early (clock skew):
		// ask JetStream to bring it back when due.
		_ = m.NakWithDelay(wait)
	default:
		_ = m.Ack()
	}
}

// fireBatch handles a fired batch of timers (store.TimerBatcher): each as
// its own timer, several at once. The batch is acknowledged when every one
// is handled, and redelivered whole if one is not (handling is idempotent).
func (b *Broker) fireBatch(_ context.Context, m jetstream.Msg) {
	es, err := store.DecodeTimerBatch(m.Data())
	if err != nil {
		b.log.Error().Err(err).Str("subject", m.Subject()).Msg("undecodable timer batch")
		_ = m.Term()
		return
	}
	var (
		wg     sync.WaitGroup
		failed atomic.Bool
		sem    = make(chan struct{}, fireParallel)
	)
	// A batch of up to store.MaxTimerBatch timeouts can take longer than
	// the consumer's ack wait (≤ 1 s) under load: keep it ours meanwhile,
	// or the server gives it to another broker, which does it all again.
	held := make(chan struct{})
	defer close(held)
	go func() {
		tick := time.NewTicker(store.TimerAckWait(b.cfg.AckWait) / 3)
		defer tick.Stop()
		for {
			select {
			case <-held:
				return
			case <-tick.C:
				_ = m.InProgress()
			}
		}
	}()
	for _, e := range es {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			wait, ok := b.fireOne(e.ID, e.At)
			if ok && wait > 0 {
				// Early (clock skew): this one gets a timer of its own.
				ctx, cancel := b.opContext()
				ok = b.store.ArmTimer(ctx, e.ID, e.At) == nil
				cancel()
			}
			if !ok {
				failed.Store(true)
			}
		})
	}
	wg.Wait()
	if failed.Load() {
		b.nak(m, "timers")
		return
	}
	_ = m.Ack()
}

// fireParallel bounds the timers of one fired batch handled at once.
const fireParallel = 16

// fireOne handles invitation id's timer for the deadline at. The record,
// not the timer, decides: a timer of a resolved invitation is dropped, a
// timer that fired before a deadline that moved later re-arms at the new
// deadline, and a due one applies lifecycle.Timeout through the same
// compare-and-set as every command — so a racing accept or cancel and the
// timeout have exactly one winner. It reports false if the timer must be
// handled again, and a wait if it is the deadline's own timer fired early.
func (b *Broker) fireOne(id string, at int64) (wait time.Duration, ok bool) {
	ctx, cancel := b.opContext()
	defer cancel()

	// Most timers fire after their invitation ended or its call started. A
	// cached record that needs no timer says so for good (NeedsTimer);
	// anything else needs a leader read: a lagging follower could say "not
	// found" or show an older deadline, and a dropped timer would leave the
	// invitation stuck.
	if rec, ok := b.store.CachedInvitation(id); ok && !rec.NeedsTimer() {
		return 0, true
	}
	rec, rev, err := b.store.GetInvitationFresh(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return 0, true
	}
	if err != nil {
		return 0, false
	}
	now := b.now()
	if rec.Deadline == 0 || !rec.Live() {
		return 0, true // resolved before its deadline
	}
	if wait := time.UnixMilli(rec.Deadline).Sub(now); wait > 0 {
		switch {
		case at == rec.Deadline:
			return wait, true
		case rec.TimerAt == rec.Deadline && rec.TimerAt != at:
			return 0, true // a superseded timer; the current deadline has its own
		default:
			// The deadline moved past every armed timer: arm it via the record,
			// so the projector arms it as for any transition. On a conflict
			// the record moved meanwhile: look again.
			_, err := b.store.Commit(ctx, store.PutInvitation(lifecycle.Rearmed(rec), rev))
			return 0, err == nil
		}
	}

	_, committed, err := b.timeout(ctx, rec, true)
	if errors.Is(err, lifecycle.ErrNotDue) {
		return 0, false // the deadline moved while we looked: handle it again against the new record
	}
	if err != nil && !isFinal(err) {
		withInvitation(b.log.Warn(), &rec).Err(err).Msg("timeout not applied; will retry")
		return 0, false
	}
	if committed {
		b.metrics.timerFired(now.Sub(time.UnixMilli(rec.Deadline)))
		// A callee that never came: nothing else may ever write that line
		// again, so drop the claims that no longer hold now.
		for _, u := range unreached(rec, now) {
			b.tidyLine(ctx, u)
		}
	}
	return 0, true
}

// tidyLine rewrites user's line without the claims that no longer hold, and
// deletes it (the delete marker expires too) when nothing is left. Lines
// are otherwise tidied only by their user's next send or busy, which a user
// who never comes back never makes: without this, every id ever invited
// would keep a line record. Best effort: a line that changed meanwhile was
// written by someone who tidied it.
func (b *Broker) tidyLine(ctx context.Context, user string) {
	line, rev, err := b.store.GetLineFresh(ctx, user)
	if err != nil {
		return // missing, or unreadable: nothing to tidy now
	}
	held, err := b.store.Holding(ctx, user, line, b.now(), b.cfg.LineRules(), true)
	if err != nil || len(held) == len(line.Claims) {
		return
	}
	tidy := line.WithClaims(store.Claims(held))
	if _, err := b.store.Commit(ctx, store.PutLine(user, tidy, rev)); err != nil {
		b.log.Debug().Err(err).Str("user", user).Msg("line not tidied")
	}
}

// timeout applies lifecycle.Timeout to rec's invitation through the
// compare-and-set loop (for a SENT invitation, after asking whether the
// callee is online: PEER_NO_RESPONSE or PEER_OFFLINE). It reports whether
// this call committed the timeout, which a read that settles an overdue
// invitation and the invitation's timer can race. fromLeader says rec was
// just read through the stream leader, so the first attempt need not read
// it again.
func (b *Broker) timeout(ctx context.Context, rec lifecycle.Record, fromLeader bool) (lifecycle.Record, bool, error) {
	a := lifecycle.Action{Kind: lifecycle.Timeout}
	for _, u := range unreached(rec, b.now()) {
		live, err := b.store.Sessions(ctx, u, 0)
		if err != nil {
			return lifecycle.Record{}, false, err
		}
		if len(live) > 0 {
			a.CalleeOnline, a.Online = true, append(a.Online, u)
		}
	}
	var read *lifecycle.Record
	if fromLeader {
		read = &rec
	}
	return b.commitTransition(ctx, rec.ID, a, read)
}

// overdueAfter is how far past its deadline a live invitation must be for a
// read to time it out itself: timers fire within a second (SPEC §4), so one
// this late has lost its timer or is stuck behind a JetStream election.
const overdueAfter = 2 * time.Second

// settleOverdue is the safety net under the timers, on every read a party
// makes (get, sync, login): a live invitation whose deadline passed more than
// overdueAfter ago is timed out now, through the same compare-and-set as its
// timer, so a lost timer cannot leave an invitation live and two lines busy.
// The SDK reads overdue invitations it tracks on every heartbeat. It returns
// the record to show: the one the timeout left (read from the leader if it
// found the invitation already ended), or rec if it failed.
func (b *Broker) settleOverdue(ctx context.Context, rec lifecycle.Record) lifecycle.Record {
	now := b.now()
	if !rec.Live() || rec.Deadline == 0 || now.Before(time.UnixMilli(rec.Deadline).Add(overdueAfter)) {
		return rec
	}
	next, committed, err := b.timeout(ctx, rec, false) // rec may be a follower's
	if err != nil {
		// Not due after all (the deadline moved) or the store is
		// unavailable: the read answers with what it read. (One already
		// ended is no error: the leader's record comes back, not committed.)
		withInvitation(b.log.Debug(), &rec).Err(err).Msg("overdue invitation not timed out on read")
		return rec
	}
	if committed { // not when the timer, or another read, got there first
		late := now.Sub(time.UnixMilli(rec.Deadline))
		b.metrics.timerFired(late)
		withInvitation(b.log.Warn(), &rec).Dur("late", late).Msg("deadline passed without its timer; timed out on read")
	}
	return next
}

// unreached lists the callees whose invitation (or group leg) no device
// received and whose deadline is due at now: a timeout ends them
// PEER_NO_RESPONSE if they have a live session, PEER_OFFLINE if not.
func unreached(rec lifecycle.Record, now time.Time) []string {
	if !rec.Group() {
		if rec.State == protocol.StateSent {
			return []string{rec.Callee}
		}
		return nil
	}
	var out []string
	for _, l := range rec.Legs {
		if l.State == protocol.StateSent && l.Deadline != 0 && l.Deadline <= now.UnixMilli() {
			out = append(out, l.User)
		}
	}
	return out
}
