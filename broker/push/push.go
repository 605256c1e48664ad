// Package push decides when an invitation needs a push request — a callee
// device to wake because it holds no connection, or a ringing screen to take
// down — and keeps the stream that push gateways consume them from.
package push

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// Retention is how long a push request stays in the stream: far longer than
// any invitation rings (10 min at most), so a gateway that was down for a
// while still finds its stop requests.
const Retention = time.Hour

// DedupeWindow is how long the stream drops a second request with the same
// id: a projector redelivery comes within seconds, a call's STOP after its
// ACCEPTING one within the accept timeout.
const DedupeWindow = 10 * time.Minute

// Provision creates or updates the push stream. Idempotent.
func Provision(ctx context.Context, js jetstream.JetStream, replicas int) error {
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        subjects.PushStream,
		Description: "Ringer push requests for gateways (ringer.v1.push.req.<user>) and their dead letters (ringer.v1.push.dead.<user>)",
		Subjects:    []string{subjects.PushSubjects()},
		MaxAge:      Retention,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
		Duplicates:  DedupeWindow,
	})
	if err != nil {
		return fmt.Errorf("push: provision %s: %w", subjects.PushStream, err)
	}
	return nil
}

// KindOf says which push request the revision inv calls for, if any: RING
// for a ringing invitation (SENT, and RECEIVED again), STOP for the first
// revision that no longer rings. Several revisions may ask for the same
// request (SENT then RECEIVED the RING, ACCEPTING then ACCEPTED the STOP);
// its id makes the stream keep one.
func KindOf(inv *protocol.Invitation) (protocol.PushKind, bool) {
	switch inv.State {
	case protocol.StateSent, protocol.StateReceived:
		// RECEIVED asks too: a device answered, but the SENT revision's
		// request may not be stored yet (the push stream did not answer, so
		// it was to be redone), and RECEIVED has replaced that revision in
		// the bucket, so nothing would redo it. Stored, the second is dropped.
		return protocol.PushRing, true
	case protocol.StateRefused, protocol.StateCanceled:
		return protocol.PushStop, !inv.NeverRang() // busy, blocked, merged: nothing rang
	case protocol.StateAccepted:
		// A call's STOP was asked at ACCEPTING; its end asks again only if
		// that may not have been seen (the whole call fitted in the dedupe
		// window), so that a long call's end pushes nothing.
		if inv.CallState == protocol.CallEnded && inv.EndedAt-inv.AnsweredAt >= (DedupeWindow/2).Milliseconds() {
			return "", false
		}
		return protocol.PushStop, true
	}
	return protocol.PushStop, true // ACCEPTING, FAILED
}

// Request builds the push request of kind for inv: for RING, to the
// targets whose device has no live session (nil if there is none); for
// STOP, to every target.
func Request(kind protocol.PushKind, inv *protocol.Invitation, targets []protocol.PushTarget, live []string) *protocol.PushRequest {
	devices := targets
	if kind == protocol.PushRing {
		devices = nil
		for _, t := range targets {
			if !slices.Contains(live, t.Device) {
				devices = append(devices, t)
			}
		}
	}
	if len(devices) == 0 {
		return nil
	}
	r := &protocol.PushRequest{
		ID:   inv.ID + "." + map[protocol.PushKind]string{protocol.PushRing: "ring", protocol.PushStop: "stop"}[kind],
		Kind: kind, User: inv.Callee, CollapseKey: inv.ID, Invitation: *inv, Devices: devices,
	}
	if kind == protocol.PushRing {
		r.Deadline = inv.Deadline
	}
	return r
}

// Publish stores r in the push stream, with its id as the message id.
func Publish(ctx context.Context, js jetstream.JetStream, r *protocol.PushRequest) error {
	m := nats.NewMsg(subjects.PushRequests(r.User))
	m.Header.Set(jetstream.MsgIDHeader, r.ID)
	if err := protocol.MustEncode(r, func(data []byte) error {
		m.Data = data
		_, err := js.PublishMsg(ctx, m)
		return err
	}); err != nil {
		return fmt.Errorf("push: publish %s: %w", r.ID, err)
	}
	return nil
}
