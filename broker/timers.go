package broker

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// fire handles a timer that JetStream fired (ADR-51 schedule → work queue).
// The record, not the timer, decides: a timer of a resolved invitation is
// dropped, a timer that fired before a deadline that moved later re-arms at
// the new deadline, and a due one applies lifecycle.Timeout through the same
// compare-and-set as every command — so a racing accept or cancel and the
// timeout have exactly one winner.
func (b *Broker) fire(_ context.Context, m jetstream.Msg) {
	id, err := subjects.ParseTimerFire(m.Subject())
	if err != nil {
		_ = m.Term()
		return
	}
	at, _ := strconv.ParseInt(string(m.Data()), 10, 64)
	ctx, cancel := b.opContext()
	defer cancel()

	// Most timers fire after their invitation ended. A cached record that is
	// no longer live says so for good (nothing revives a finished record);
	// anything else needs a leader read: a lagging follower could say "not
	// found" or show an older deadline, and a dropped timer would leave the
	// invitation stuck.
	if rec, ok := b.store.CachedInvitation(id); ok && !rec.Live() {
		_ = m.Ack()
		return
	}
	rec, rev, err := b.store.GetInvitationFresh(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		_ = m.Ack()
		return
	}
	if err != nil {
		b.nak(m, "timers")
		return
	}
	now := b.now()
	if rec.Deadline == 0 || !rec.Live() {
		_ = m.Ack() // resolved before its deadline
		return
	}
	if wait := time.UnixMilli(rec.Deadline).Sub(now); wait > 0 {
		switch {
		case at == rec.Deadline:
			// This is the deadline's own timer, a little early (clock skew):
			// ask JetStream to bring it back when due.
			_ = m.NakWithDelay(wait)
		case rec.TimerAt == rec.Deadline && rec.TimerAt != at:
			_ = m.Ack() // a superseded timer; the current deadline has its own
		default:
			// The deadline moved past every armed timer: arm it via the record,
			// so the projector arms it as for any transition.
			if _, err := b.store.Commit(ctx, store.PutInvitation(lifecycle.Rearmed(rec), rev)); err != nil {
				// On a conflict the record moved meanwhile: look again.
				b.nak(m, "timers")
				return
			}
			_ = m.Ack()
		}
		return
	}

	a := lifecycle.Action{Kind: lifecycle.Timeout}
	if rec.State == protocol.StateSent {
		online, err := b.store.Online(ctx, rec.Callee)
		if err != nil {
			b.nak(m, "timers")
			return
		}
		a.CalleeOnline = online
	}
	next, err := b.transition(ctx, id, a)
	if errors.Is(err, lifecycle.ErrNotDue) {
		b.nak(m, "timers") // the deadline moved while we looked: handle it again against the new record
		return
	}
	if err != nil && !isFinal(err) {
		withInvitation(b.log.Warn(), &rec).Err(err).Msg("timeout not applied; will retry")
		b.nak(m, "timers")
		return
	}
	if err == nil && next.Revision != rec.Revision {
		b.metrics.timerFired(now.Sub(time.UnixMilli(rec.Deadline)))
	}
	_ = m.Ack()
}
