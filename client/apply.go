package client

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// apply folds a view of an invitation (from an event, a reply or a sync) into
// the client's mirror and fires the callbacks it implies. Views whose revision
// is not newer than the mirror's are dropped (duplicates, reordering).
func (c *Client) apply(inv protocol.Invitation, ev protocol.EventType) {
	role := inv.RoleOf(c.user)
	if role == "" {
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	if t := c.tracked[inv.ID]; t != nil && t.inv.Revision >= inv.Revision {
		c.mu.Unlock()
		return
	}
	if c.tracked[inv.ID] == nil && c.forgotten.Contains(inv.ID) {
		// Finished and pruned: an invitation never comes back live, so any
		// view of it now (a redelivered event, a get, a sync) can only
		// repeat the end whose callbacks already fired.
		c.mu.Unlock()
		return
	}
	t := c.track(inv.ID)
	before := t.inv.Legs
	// A finished invitation is stored without its content (and a call that
	// ended without the accept's response): keep what this device saw.
	if inv.Content == "" {
		inv.Content = t.inv.Content
	}
	if inv.Response == "" {
		inv.Response = t.inv.Response
	}
	t.inv = inv
	var calls []func()
	once := func(key fired, f func()) {
		if t.fired&key == 0 {
			t.fired |= key
			calls = append(calls, f)
		}
	}
	var ack, ackAccept bool
	// A pointer, and the event built when its callback runs: the closures
	// below capture inv and h, and a copy of either (both large) would be
	// one more allocation per view.
	h := &c.h
	if ev != "" && h.OnEvent != nil {
		calls = append(calls, func() { h.OnEvent(protocol.Event{Type: ev, Role: role, Invitation: inv}) })
	}
	if inv.Group() && h.OnGroupUpdated != nil {
		calls = append(calls, func() { h.OnGroupUpdated(inv) })
	}
	if role == protocol.RoleCaller {
		n := len(calls)
		ackAccept = c.applyCaller(t, &inv, once, h)
		if li := t.local; inv.CallerDevice == c.device && h.OnLocalInvitationLegChanged != nil {
			var legs []func()
			for _, l := range legChanges(before, inv.Legs) {
				legs = append(legs, func() { h.OnLocalInvitationLegChanged(li, l) })
			}
			calls = slices.Insert(calls, n, legs...) // before the invitation's own
		}
	} else {
		ack = c.applyCallee(t, &inv, once, h)
	}
	var acked chan struct{} // closed after the ack's first answer
	if ack || ackAccept {
		// Counted while c.closed is known false and under the lock Close
		// takes to set it: an Add after the unlock could race Close's Wait.
		c.bg.Add(1)
		if ack {
			acked = make(chan struct{})
			t.acking = acked
		}
	}
	c.mu.Unlock()

	// The ack goes before the callbacks run: an app that accepts in its
	// callback finds the ack on its way (Accept waits for its answer).
	if ack || ackAccept {
		go func() {
			defer c.bg.Done()
			c.autoAck(inv, ackAccept, acked)
		}()
	}
	for _, f := range calls {
		f()
	}
}

// ackWait bounds how long a callee's accept or refuse waits for the
// answer to the device's own ack of the invitation (waitAck).
const ackWait = time.Second

// waitAck waits, for at most ackWait or until ctx ends, for the first
// answer to this device's automatic ack of invitation id, if one is in
// flight. With several brokers an accept sent while its ack is still
// being written lands, as often as not, on another broker whose copy of
// the invitation is a revision behind: a compare-and-set conflict, a read
// and a write again (docs/protocol.md §6.4). After its ack's answer the
// accept finds the revision the ack wrote.
func (c *Client) waitAck(ctx context.Context, id string) {
	c.mu.Lock()
	var acked chan struct{}
	if t := c.tracked[id]; t != nil {
		acked = t.acking
	}
	c.mu.Unlock()
	if acked == nil {
		return
	}
	wait := time.NewTimer(ackWait)
	defer wait.Stop()
	select {
	case <-acked:
	case <-wait.C:
	case <-ctx.Done():
	}
}

// maxAckBackoff caps the wait between attempts of an automatic ack.
const maxAckBackoff = time.Second

// autoAck sends an automatic ack of inv (an ack-accept if accepted) until it
// gets an answer. Both are idempotent, so an attempt whose reply was lost (a
// broker that died with it in flight) is simply made again. A transient
// failure is retried, backing off, until inv's deadline, when the broker
// times the invitation out anyway: a JetStream leader election (4-9 s) can
// make every attempt fail for a while, and an ack-accept given up sooner
// turned an accepted call into ACCEPT_FAILURE. Close stops it.
func (c *Client) autoAck(inv protocol.Invitation, accepted bool, acked chan struct{}) {
	first := func() {
		if acked != nil {
			close(acked)
			acked = nil
		}
	}
	defer first()
	verb, name := c.Ack, subjects.VerbAck
	if accepted {
		verb, name = c.AckAccept, subjects.VerbAckAccept
	}
	until := time.UnixMilli(inv.Deadline)
	if inv.Deadline == 0 {
		until = time.Now().Add(DefaultTimeout)
	}
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout/2)
		err := verb(ctx, inv.ID)
		cancel()
		first()
		// A stale reply (contradicts) is retried too, past what act
		// already retried within the attempt.
		if !transient(err) && !c.contradicts(name, inv.ID, err) {
			return
		}
		wait := min(time.Duration(attempt)*100*time.Millisecond, maxAckBackoff)
		if time.Now().Add(wait).After(until) {
			break
		}
		select {
		case <-c.quit:
			return
		case <-time.After(wait):
		}
	}
	// Still no answer by the deadline: the ack may have taken effect with
	// its reply lost. Learn the outcome rather than guess it.
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	_, _ = c.Get(ctx, inv.ID)
}

// applyCaller fires the LocalInvitation callbacks; only the device that sent
// the invitation has one. It reports whether to acknowledge an accept.
func (c *Client) applyCaller(t *tracked, inv *protocol.Invitation, once func(fired, func()), h *Handler) (ackAccept bool) {
	if inv.CallerDevice != c.device {
		return false
	}
	li := t.local
	if li == nil { // e.g. the app restarted and synced: rebuild the handle
		li = &LocalInvitation{c: c, Callee: inv.Callee, ID: inv.ID, Content: inv.Content, ChannelID: inv.ChannelID, sent: true}
		if inv.Group() {
			li.Mode, li.Callees = inv.Mode, inv.Callees()
		}
		t.local = li
	}
	li.mu.Lock()
	li.inv, li.sent = *inv, true
	li.mu.Unlock()

	switch inv.State {
	case protocol.StateReceived, protocol.StateAccepting, protocol.StateAccepted:
		if inv.ReceivedAt != 0 && h.OnLocalInvitationReceivedByPeer != nil {
			once(firedReceived, func() { h.OnLocalInvitationReceivedByPeer(li) })
		}
	}
	switch inv.State {
	case protocol.StateAccepting:
		if !c.noAutoAck && t.fired&firedAckAccept == 0 {
			t.fired |= firedAckAccept
			ackAccept = true
		}
		fallthrough
	case protocol.StateAccepted:
		if h.OnLocalInvitationAccepted != nil {
			once(firedAccepted, func() { h.OnLocalInvitationAccepted(li, inv.Response) })
		}
		// A JOIN call's caller is out of it when it left, though the
		// call may go on.
		if (inv.CallState == protocol.CallEnded || inv.CallerLeftAt != 0) && h.OnCallEnded != nil {
			once(firedEnded, func() { h.OnCallEnded(*inv) })
		}
	case protocol.StateRefused:
		if h.OnLocalInvitationRefused != nil {
			once(firedRefused, func() { h.OnLocalInvitationRefused(li, inv.Response) })
		}
	case protocol.StateCanceled:
		if inv.Reason == protocol.ReasonMerged {
			if h.OnLocalInvitationMerged != nil {
				once(firedCanceled, func() { h.OnLocalInvitationMerged(li, inv.MergedInto) })
			}
		} else if h.OnLocalInvitationCanceled != nil {
			once(firedCanceled, func() { h.OnLocalInvitationCanceled(li) })
		}
	case protocol.StateFailed:
		if h.OnLocalInvitationFailure != nil {
			once(firedFailed, func() { h.OnLocalInvitationFailure(li, inv.Reason) })
		}
	}
	return ackAccept
}

// applyCallee fires the RemoteInvitation callbacks on every device of the
// callee; a device that did not act sees HandledElsewhere instead of the
// acting device's confirmations. It reports whether to acknowledge receipt.
func (c *Client) applyCallee(t *tracked, inv *protocol.Invitation, once func(fired, func()), h *Handler) (ack bool) {
	ri := t.remote
	isNew := ri == nil
	if isNew {
		ri = &RemoteInvitation{c: c}
		t.remote = ri
	}
	ri.mu.Lock()
	ri.inv = *inv
	ri.mu.Unlock()
	mine := inv.CalleeDevice == c.device

	if isNew && (inv.State == protocol.StateSent || inv.State == protocol.StateReceived) {
		if h.OnRemoteInvitationReceived != nil {
			once(firedReceived, func() { h.OnRemoteInvitationReceived(ri) })
		}
		ack = inv.State == protocol.StateSent && !c.noAutoAck
	}
	elsewhere := func(s protocol.State) {
		if h.OnRemoteInvitationHandledElsewhere != nil {
			once(firedElsewhere, func() { h.OnRemoteInvitationHandledElsewhere(ri, s) })
		}
	}
	switch inv.State {
	case protocol.StateAccepting:
		if !mine {
			elsewhere(inv.State)
		}
	case protocol.StateAccepted:
		if !mine {
			elsewhere(inv.State)
			break
		}
		if h.OnRemoteInvitationAccepted != nil {
			once(firedAccepted, func() { h.OnRemoteInvitationAccepted(ri) })
		}
		if inv.CallState == protocol.CallEnded && h.OnCallEnded != nil {
			once(firedEnded, func() { h.OnCallEnded(*inv) })
		}
	case protocol.StateRefused:
		if !mine {
			elsewhere(inv.State)
		} else if h.OnRemoteInvitationRefused != nil {
			once(firedRefused, func() { h.OnRemoteInvitationRefused(ri) })
		}
	case protocol.StateCanceled:
		if h.OnRemoteInvitationCanceled != nil {
			once(firedCanceled, func() { h.OnRemoteInvitationCanceled(ri) })
		}
	case protocol.StateFailed:
		if h.OnRemoteInvitationFailure != nil {
			once(firedFailed, func() { h.OnRemoteInvitationFailure(ri, inv.Reason) })
		}
	}
	return ack
}

// transient reports whether a command failed for a reason worth retrying.
func transient(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, ErrUnavailable) || errors.Is(err, nats.ErrNoResponders)
}
