package client

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// Handler holds the callbacks; nil ones are skipped. The names are Agora's.
type Handler struct {
	// Caller side (only on the device that sent the invitation).
	OnLocalInvitationReceivedByPeer func(li *LocalInvitation)
	OnLocalInvitationAccepted       func(li *LocalInvitation, response string)
	OnLocalInvitationRefused        func(li *LocalInvitation, response string)
	OnLocalInvitationCanceled       func(li *LocalInvitation)
	OnLocalInvitationFailure        func(li *LocalInvitation, reason protocol.Reason)
	// OnLocalInvitationMerged: the callee was calling this user at the
	// same moment (glare); instead of ringing them, this device accepted
	// their invitation, into — whose RemoteInvitation callbacks follow
	// (OnRemoteInvitationAccepted when the call starts). li ends CANCELED
	// with reason MERGED; OnLocalInvitationCanceled does not fire.
	OnLocalInvitationMerged func(li *LocalInvitation, into string)
	// OnLocalInvitationLegChanged: a callee of a group invitation changed
	// (received, refused, joined, left, timed out, answered elsewhere…);
	// leg is its new state. It fires once per change, before the
	// invitation's own callbacks (Accepted when a FIRST callee wins or a
	// JOIN call starts, Refused or Failure when no callee is left).
	OnLocalInvitationLegChanged func(li *LocalInvitation, leg protocol.Leg)

	// Callee side (on every device of the callee).
	OnRemoteInvitationReceived func(ri *RemoteInvitation)
	OnRemoteInvitationAccepted func(ri *RemoteInvitation)
	OnRemoteInvitationRefused  func(ri *RemoteInvitation)
	OnRemoteInvitationCanceled func(ri *RemoteInvitation)
	OnRemoteInvitationFailure  func(ri *RemoteInvitation, reason protocol.Reason)
	// OnRemoteInvitationHandledElsewhere: another device of this user
	// accepted (state ACCEPTING/ACCEPTED) or refused (REFUSED) the invitation.
	OnRemoteInvitationHandledElsewhere func(ri *RemoteInvitation, state protocol.State)

	// OnGroupUpdated: a newer view of a group invitation this user is a
	// party to (who rings, who is in the call), on every device; a
	// callee's view is its own leg (protocol.Invitation.For) with every
	// leg in Legs.
	OnGroupUpdated func(inv protocol.Invitation)

	// OnCallEnded: a call this device was part of ended (hangup, presence loss
	// or maximum duration; see inv.Reason and inv.EndedBy).
	OnCallEnded func(inv protocol.Invitation)

	// OnEvent sees every event the client applied (after deduplication), on
	// any device of the user, before the callbacks above.
	OnEvent func(ev protocol.Event)

	// OnConnectionStateChanged: the client's connection state changed
	// (Agora onConnectionStateChanged). It runs on nats.go's callback
	// goroutine or the goroutine that called Login/Logout: keep it short.
	OnConnectionStateChanged func(state ConnectionState, reason ConnectionChangeReason)
}

// tracked is the client's mirror of one invitation.
type tracked struct {
	inv    protocol.Invitation
	local  *LocalInvitation
	remote *RemoteInvitation
	fired  fired // callbacks already fired
	// doubt (unix ms), if not 0: a command on it failed with no known
	// outcome (no reply, UNAVAILABLE, DEADLINE_EXCEEDED after a retry), so
	// it may have been carried out with its reply and events lost. The
	// view is asked for at every resync and heartbeat until one succeeds
	// after then (see Client.doubted).
	doubt int64
	// acking, if not nil, is closed when this device's automatic ack of
	// the invitation has had its first answer (or failed): its accept or
	// refuse waits for that (waitAck).
	acking chan struct{}
}

// fired is a set of callbacks (and automatic acks) already given for one
// invitation: each fires at most once, whichever view brings it.
type fired uint16

const (
	firedReceived fired = 1 << iota
	firedAccepted
	firedRefused
	firedCanceled
	firedFailed
	firedEnded
	firedElsewhere
	firedAckAccept
)

// LocalInvitation is an invitation this device sends (Agora LocalInvitation).
// Set Content, ChannelID (and optionally ID, Timeouts) before Send.
type LocalInvitation struct {
	c      *Client
	Callee string
	// Callees and Mode make it a group invitation (CreateGroupInvitation).
	Callees []string
	Mode    protocol.Mode
	// ID names the invitation; a retried Send with the same ID returns the
	// same invitation. Empty: Send generates one.
	ID        string
	Content   string
	ChannelID string
	// Timeouts overrides the broker's defaults for this invitation.
	Timeouts *protocol.Timeouts

	mu   sync.Mutex
	inv  protocol.Invitation
	sent bool
}

// NewInvitationID returns a fresh invitation id for this user to send
// under: a NUID drawn, once Login has learnt how many partitions the
// deployment has, so that the invitation's record lives in the same
// partition as the user's line (docs/protocol.md §1.4) — the send then
// writes both in one batch, and the call touches fewer partitions. Send
// names an invitation with it when LocalInvitation.ID is empty; an app
// that needs the id before Send may set ID to one.
func (c *Client) NewInvitationID() string {
	c.mu.Lock()
	n := c.session.Partitions
	c.mu.Unlock()
	return subjects.LocalInvitationID(c.user, n, nuid.Next)
}

// CreateLocalInvitation prepares an invitation to callee.
func (c *Client) CreateLocalInvitation(callee string) *LocalInvitation {
	return &LocalInvitation{c: c, Callee: callee}
}

// Send sends the invitation. A busy callee is not an error: the invitation
// ends as REFUSED with response "busy" (OnLocalInvitationRefused fires).
// A send that gets no answer, or UNAVAILABLE, is sent again (the same id:
// it creates one invitation whatever reached the broker) until ctx ends,
// so that a NATS server that froze or was cut off costs a send time, not
// the call (see liveness.go).
func (li *LocalInvitation) Send(ctx context.Context) error {
	c := li.c
	li.mu.Lock()
	if li.ID == "" {
		// The client names the invitation, so that events cannot overtake the
		// reply unrecognised and a retried Send is idempotent.
		li.ID = c.NewInvitationID()
	}
	id := li.ID
	li.mu.Unlock()
	c.mu.Lock()
	t := c.track(id)
	if t.local == nil {
		t.local = li
	}
	c.mu.Unlock()
	rep, err := c.requestRetrying(ctx, subjects.VerbSend, &protocol.Request{
		ID: id, Callee: li.Callee, Content: li.Content, ChannelID: li.ChannelID, Timeouts: li.Timeouts,
		Callees: li.Callees, Mode: li.Mode,
	})
	if err != nil {
		return err
	}
	li.mu.Lock()
	li.sent = true
	if rep.Invitation.Revision > li.inv.Revision {
		li.inv = *rep.Invitation // a retried Send through a new handle gets the existing invitation
	}
	li.mu.Unlock()
	c.apply(*rep.Invitation, "")
	if into := rep.Invitation.MergedInto; into != "" {
		// Glare: the call is the callee's invitation, which this device
		// accepted. Track it now (its events may have been missed).
		if _, err := c.Get(ctx, into); err != nil && !transient(err) {
			return err
		}
	}
	return nil
}

// Cancel cancels the invitation (before it is accepted).
func (li *LocalInvitation) Cancel(ctx context.Context) error {
	li.mu.Lock()
	sent, id := li.sent, li.ID
	li.mu.Unlock()
	if !sent {
		return ErrNotStarted
	}
	return li.c.act(ctx, subjects.VerbCancel, id, "")
}

// Invitation returns the latest view of the invitation.
func (li *LocalInvitation) Invitation() protocol.Invitation {
	li.mu.Lock()
	defer li.mu.Unlock()
	return li.inv
}

// State returns the Agora caller-side state.
func (li *LocalInvitation) State() LocalInvitationState {
	li.mu.Lock()
	defer li.mu.Unlock()
	if !li.sent {
		return LocalIdle
	}
	return LocalState(li.inv.State)
}

// RemoteInvitation is an invitation this user received (Agora RemoteInvitation).
type RemoteInvitation struct {
	c   *Client
	mu  sync.Mutex
	inv protocol.Invitation
}

// Invitation returns the latest view of the invitation.
func (ri *RemoteInvitation) Invitation() protocol.Invitation {
	ri.mu.Lock()
	defer ri.mu.Unlock()
	return ri.inv
}

// ID, CallerID, Content and ChannelID are the invitation's fields.
func (ri *RemoteInvitation) ID() string        { return ri.Invitation().ID }
func (ri *RemoteInvitation) CallerID() string  { return ri.Invitation().Caller }
func (ri *RemoteInvitation) Content() string   { return ri.Invitation().Content }
func (ri *RemoteInvitation) ChannelID() string { return ri.Invitation().ChannelID }

// State returns the Agora callee-side state.
func (ri *RemoteInvitation) State() RemoteInvitationState { return RemoteState(ri.Invitation().State) }

// Accept accepts with a response for the caller.
func (ri *RemoteInvitation) Accept(ctx context.Context, response string) error {
	return ri.c.Accept(ctx, ri.ID(), response)
}

// Refuse refuses with a response for the caller.
func (ri *RemoteInvitation) Refuse(ctx context.Context, response string) error {
	return ri.c.Refuse(ctx, ri.ID(), response)
}

// Hangup ends the call this invitation became.
func (ri *RemoteInvitation) Hangup(ctx context.Context) error { return ri.c.Hangup(ctx, ri.ID()) }

// RemoteInvitation returns the callee-side handle of invitation id, for
// acting on it by id (e.g. from a push notification), or nil if unknown.
func (c *Client) RemoteInvitation(id string) *RemoteInvitation {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.tracked[id]; t != nil {
		return t.remote
	}
	return nil
}

// Accept accepts invitation id by id, without having received it first
// (SPEC §2 rule 5).
func (c *Client) Accept(ctx context.Context, id, response string) error {
	c.waitAck(ctx, id)
	return c.act(ctx, subjects.VerbAccept, id, response)
}

// Refuse refuses invitation id by id.
func (c *Client) Refuse(ctx context.Context, id, response string) error {
	c.waitAck(ctx, id)
	return c.act(ctx, subjects.VerbRefuse, id, response)
}

// Cancel cancels, as the caller, invitation id by id (e.g. after a restart,
// when the LocalInvitation handle is gone).
func (c *Client) Cancel(ctx context.Context, id string) error {
	return c.act(ctx, subjects.VerbCancel, id, "")
}

// Ack acknowledges receipt of invitation id (automatic unless WithoutAutoAck).
func (c *Client) Ack(ctx context.Context, id string) error {
	return c.act(ctx, subjects.VerbAck, id, "")
}

// AckAccept confirms, as the caller, the callee's accept (automatic unless
// WithoutAutoAck).
func (c *Client) AckAccept(ctx context.Context, id string) error {
	return c.act(ctx, subjects.VerbAckAccept, id, "")
}

// Invitation returns the client's latest view of invitation id.
func (c *Client) Invitation(id string) (protocol.Invitation, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.tracked[id]
	if !ok {
		return protocol.Invitation{}, false
	}
	return t.inv, true
}

func (c *Client) track(id string) *tracked {
	t := c.tracked[id]
	if t == nil {
		t = &tracked{}
		c.tracked[id] = t
	}
	return t
}

func (c *Client) onEvent(m *nats.Msg) {
	ev, err := protocol.DecodeEvent(m.Data)
	if err != nil {
		return // not ours to answer: events are one-way; a malformed one is dropped
	}
	c.apply(ev.Invitation, ev.Type)
}
