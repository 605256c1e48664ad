package broker

import (
	"context"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/push"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// project makes the world match one committed invitation revision. It is the
// outbox of every transition: whoever committed it (a command, a timer, a
// presence loss, on any broker), this runs afterwards, at least once:
//
//  1. publish the events of lifecycle.Events to the parties' subjects;
//  2. arm the durable timer if the revision asks for it;
//  3. ask push gateways to wake the callee's unconnected devices when it
//     starts ringing, and to take the ringing screen down when it stops;
//  4. append a finished invitation to both parties' histories, and
//  5. every transition to the export — 2 to 5 on the recorder
//     (recorder.go), off the workers that publish the events.
//
// (Lines need nothing: a claim stops holding when its invitation ends.)
// All are idempotent, so a redelivery after a crash repeats them
// harmlessly; the message is acked only when all are done.
func (b *Broker) project(_ context.Context, m jetstream.Msg) {
	if op := m.Headers().Get("KV-Operation"); op != "" || len(m.Data()) == 0 {
		_ = m.Ack() // deletes/expiries of old records: nothing to tell anyone
		return
	}
	meta, err := m.Metadata()
	if err != nil {
		_ = m.Term()
		return
	}
	var rec lifecycle.Record
	if err := msgpack.Unmarshal(m.Data(), &rec); err != nil {
		b.log.Error().Err(err).Str("subject", m.Subject()).Msg("undecodable invitation record")
		_ = m.Term()
		return
	}
	rec.Revision = meta.Sequence.Stream
	if meta.NumDelivered == 1 {
		b.projectorQueue.done(b.now().Sub(meta.Timestamp)) // commit → projection
	}
	b.store.Observe(rec) // a later command on this broker can skip its read
	b.projectRecord(rec, m, meta.NumDelivered == 1)
}

// A settler hears how a revision's projection ended: Ack when done, Nak
// or NakWithDelay to have it projected again (a jetstream.Msg of the
// projector consumer, or the outbox's committed and replayed).
type settler interface {
	Ack() error
	Nak() error
	NakWithDelay(time.Duration) error
}

// projectRecord is project's work on a decoded revision: its events here,
// steps 2 to 5 on the recorder, then s is settled. first: its outcome is
// counted.
//
// A revision with steps to take is handed to the recorder before its
// events are published, and the events are one of its parts (finish): a
// later revision of its invitation is committed only after a party heard
// these events (a RECEIVED, a cancel after the ring), so it reaches the
// recorder's shard behind this one and takes its steps after — its timer
// check finds this revision's timer armed, its STOP push follows this
// revision's RING. Handed over after the events, as before, a party's
// quick answer could overtake it.
func (b *Broker) projectRecord(rec lifecycle.Record, s settler, first bool) {
	if !b.recordings(&rec) {
		if !b.announce(&rec) {
			b.nak(s, "projector")
			return
		}
		b.projected(s, &rec, first)
		return
	}
	f := b.finisher(recording{m: s, rec: rec, first: first})
	f.add() // the events
	if !b.recorder.offer(f) {
		// The recorder's queue is full: the events now (a stream that
		// stalls must not hold up the events of the invitations queued
		// behind this one), and this revision is projected again later
		// (its events again: clients drop repeats).
		b.announce(&rec)
		b.metrics.kvError("recorder_full")
		_ = s.NakWithDelay(time.Second)
		return
	}
	f.done(b.announce(&rec))
}

// announce publishes the events of rec and reports whether it could (a
// failure is logged: the revision is projected again).
func (b *Broker) announce(rec *lifecycle.Record) bool {
	if err := b.publishEvents(rec); err != nil {
		withInvitation(b.log.Warn(), rec).Err(err).Msg("publish event failed; will retry")
		return false
	}
	return true
}

// publishEvents publishes the events of rec (step 1 of project).
func (b *Broker) publishEvents(rec *lifecycle.Record) error {
	for _, n := range lifecycle.Events(*rec) {
		subj, err := subjects.UserEvents(n.User)
		if err != nil {
			continue // ids were validated on the way in; an invalid one cannot have a subscriber
		}
		if err := protocol.MustEncode(&n.Event, func(data []byte) error { return b.nc.Publish(subj, data) }); err != nil {
			return err
		}
	}
	return nil
}

// projected acknowledges a revision whose projection is complete, counting
// its outcome at its first delivery.
func (b *Broker) projected(m settler, rec *lifecycle.Record, first bool) {
	if !rec.Live() && !rec.Quiet && first {
		b.metrics.outcome(*rec)
	}
	_ = m.Ack()
}

// timerLost reports whether rec, a live revision that relies on the timer
// an earlier revision asked for (Rearm unset, a deadline, its timer still
// to come), finds that timer missing. The bucket keeps one revision per
// key, so a revision superseded before its projection was redelivered is
// gone from the stream, and JetStream forgets its unacknowledged delivery
// with it: a broker that died after publishing an invitation's events but
// before arming its timer, followed within AckWait by the callee's ack,
// would leave the invitation with no timer at all. This check — one direct
// get of the schedule — closes that. A failed check counts as missing
// (arming twice is harmless). A batched timer (Config.TimerBatch) cannot
// be looked up by invitation: one not known armed (this broker armed it,
// or a peer's gossip said it did: store.KnownArmed) is handed to the
// batcher again, which costs less than the look-up, and which drops it at
// its flush if it is known armed by then (the peer that committed the
// earlier revision stores its batch 50–150 ms after it).
func (b *Broker) timerLost(ctx context.Context, rec *lifecycle.Record) bool {
	if !b.reliesOnTimer(rec) {
		return false
	}
	if b.cfg.TimerBatch > 0 {
		return !b.store.KnownArmed(rec.ID, rec.TimerAt)
	}
	armed, err := b.store.TimerArmed(ctx, rec.ID, rec.TimerAt)
	if err == nil && armed {
		return false
	}
	withInvitation(b.log.Warn(), rec).Err(err).Int64("timerAt", rec.TimerAt).Msg("an earlier revision's timer is missing; arming it")
	return true
}

// reliesOnTimer reports whether rec is a live revision that relies on the
// timer an earlier revision asked for, due later than store.DueSoon
// (timerLost checks those): not one that asks for its own (Rearm), needs
// none, or fires about now anyway.
func (b *Broker) reliesOnTimer(rec *lifecycle.Record) bool {
	return !rec.Rearm && rec.Live() && rec.Deadline != 0 && rec.TimerAt != 0 &&
		time.UnixMilli(rec.TimerAt).After(b.now().Add(store.DueSoon))
}

// recordings reports whether rec has work for the recorder (steps 2 to 5
// of project).
func (b *Broker) recordings(rec *lifecycle.Record) bool {
	return rec.Rearm || b.reliesOnTimer(rec) || b.pushes(rec) ||
		len(b.historyParties(rec)) > 0 || (b.cfg.Export && !rec.Quiet)
}

// pushes reports whether rec may call for push requests (step 3).
func (b *Broker) pushes(rec *lifecycle.Record) bool {
	return b.cfg.Push && (rec.Push || len(rec.PushTo) > 0) && !rec.Quiet
}

// pushFor puts inv's push request, if it needs one, on the push stream:
// one read of the callee's push targets (and, for a RING, of its live
// sessions), one write. Only for callees with push targets (Record.Push):
// the others cost nothing.
func (b *Broker) pushFor(ctx context.Context, inv *protocol.Invitation) error {
	kind, ok := push.KindOf(inv)
	if !ok {
		return nil
	}
	targets, err := b.store.PushTargets(ctx, inv.Callee)
	if err != nil || len(targets) == 0 {
		return err
	}
	var live []string
	if kind == protocol.PushRing {
		if live, err = b.store.Sessions(ctx, inv.Callee, 0); err != nil {
			return err
		}
	}
	req := push.Request(kind, inv, targets, live)
	if req == nil {
		return nil // every registered device is connected: the event rings them
	}
	if err := push.Publish(ctx, b.store.JetStream(), req); err != nil {
		return err
	}
	b.metrics.pushRequests.WithLabelValues(string(kind)).Inc()
	return nil
}

// historyParties lists whose history a revision adds an entry to: both
// parties of a 1:1 invitation when it finishes (only the caller when the
// callee does not want to hear of it, or has the call it placed). A group
// callee's entry is written when its leg ends for good — it may be long
// before the group does, and a device that missed the leg's end finds it
// in its history at its next resync (client.Resync's catch-up) — and the
// caller's, and those of callees who took part in the call, when the
// invitation finishes. A JOIN callee whose leg ended without joining gets
// its entry then; if it joins later, the entry stays the first
// (journal.Append deduplicates per invitation and user).
func (b *Broker) historyParties(rec *lifecycle.Record) []string {
	if !b.cfg.History || rec.Quiet {
		return nil
	}
	if !rec.Group() {
		switch {
		case !rec.Finished():
			return nil
		case rec.Blocked || rec.Reason == protocol.ReasonMerged:
			return []string{rec.Caller}
		}
		return []string{rec.Caller, rec.Callee}
	}
	var out []string
	if rec.Finished() {
		out = append(out, rec.Caller)
	}
	for _, l := range rec.Legs {
		switch {
		case l.Reason == protocol.ReasonBusy || l.Live():
			// never rang (busy, blocked), or rings or is in the call
		case rec.Finished() && (l.State == protocol.StateAccepted || l.User == rec.Callee || slices.Contains(rec.Touched, l.User)):
			out = append(out, l.User) // took part in the call, or ended with it
		case !rec.Finished() && l.State != protocol.StateAccepted && slices.Contains(rec.Touched, l.User):
			out = append(out, l.User) // its leg ended now, without taking part
		}
	}
	return out
}

// pushGroup makes the push requests of one revision: the callee's of a
// 1:1 invitation, or for a group, those of every callee with push
// targets whose leg this revision changed, each from its own view.
func (b *Broker) pushGroup(ctx context.Context, rec *lifecycle.Record) error {
	if !rec.Group() {
		return b.pushFor(ctx, &rec.Invitation)
	}
	for _, u := range rec.PushTo {
		if !slices.Contains(rec.Touched, u) {
			continue
		}
		v := rec.Invitation.For(u)
		if err := b.pushFor(ctx, &v); err != nil {
			return err
		}
	}
	return nil
}
