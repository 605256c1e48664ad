package broker

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// project makes the world match one committed invitation revision. It is the
// outbox of every transition: whoever committed it (a command, a timer, a
// presence loss, on any broker), this runs afterwards, at least once:
//
//  1. publish the events of lifecycle.Events to the parties' subjects;
//  2. arm the durable timer if the revision asks for it;
//  3. append a finished invitation to both parties' histories.
//
// (Lines need nothing: a claim stops holding when its invitation ends.)
// All three are idempotent, so a redelivery after a crash repeats them
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
	ctx, cancel := b.opContext()
	defer cancel()

	for _, n := range lifecycle.Events(rec) {
		subj, err := subjects.UserEvents(n.User)
		if err != nil {
			continue // ids were validated on the way in; an invalid one cannot have a subscriber
		}
		if err := protocol.MustEncode(&n.Event, func(data []byte) error { return b.nc.Publish(subj, data) }); err != nil {
			withInvitation(b.log.Warn(), &rec).Err(err).Msg("publish event failed; will retry")
			b.nak(m, "projector")
			return
		}
	}
	// The timer after the events: arming is a JetStream round trip that the
	// ring need not wait for (a redelivery after a crash redoes both).
	if rec.Rearm {
		if err := b.store.ArmTimer(ctx, rec.ID, rec.TimerAt); err != nil {
			withInvitation(b.log.Warn(), &rec).Err(err).Msg("arm timer failed; will retry")
			b.nak(m, "projector")
			return
		}
	}
	// 3. A finished invitation enters both parties' histories.
	if rec.Finished() && !rec.Quiet {
		if err := b.journal.Append(ctx, &rec.Invitation); err != nil {
			withInvitation(b.log.Warn(), &rec).Err(err).Msg("history append failed; will retry")
			b.nak(m, "projector")
			return
		}
	}
	if !rec.Live() && !rec.Quiet && meta.NumDelivered == 1 {
		b.metrics.outcome(rec)
	}
	_ = m.Ack()
}
