package client

import (
	"context"
	"slices"

	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// Group invitations (docs/protocol.md, "Group invitations"): one
// LocalInvitation rings several callees (ZEGO ZIM callInvite, Tencent TIM
// inviteInGroup). Each callee's device sees an ordinary RemoteInvitation:
// its own leg, with the 1:1 callbacks (a callee of a FIRST invitation that
// another callee answered first gets OnRemoteInvitationCanceled, reason
// ANSWERED_ELSEWHERE). The caller follows every callee through
// OnLocalInvitationLegChanged.

// CreateGroupInvitation prepares an invitation to several callees: with
// protocol.ModeFirst the first to accept gets the call and the others stop
// ringing; with protocol.ModeJoin everyone who accepts joins one call,
// which lives while at least two parties are in it.
func (c *Client) CreateGroupInvitation(mode protocol.Mode, callees ...string) *LocalInvitation {
	return &LocalInvitation{c: c, Mode: mode, Callees: slices.Clone(callees)}
}

// Legs returns the callees' legs as last seen (nil for a 1:1 invitation).
func (li *LocalInvitation) Legs() []protocol.Leg {
	return slices.Clone(li.Invitation().Legs)
}

// Invite rings more callees into a JOIN invitation (while it rings, or its
// call is on); see Client.Invite.
func (li *LocalInvitation) Invite(ctx context.Context, callees ...string) error {
	return li.c.Invite(ctx, li.ID, callees...)
}

// Leave leaves a JOIN call, which goes on while two parties remain in it
// (Hangup under another name; on a 1:1 call it ends the call).
func (li *LocalInvitation) Leave(ctx context.Context) error {
	return li.c.Hangup(ctx, li.ID)
}

// Invite rings more callees into a JOIN invitation (while it rings, or its
// call is on); see Client.Invite.
func (ri *RemoteInvitation) Invite(ctx context.Context, callees ...string) error {
	return ri.c.Invite(ctx, ri.ID(), callees...)
}

// Leave leaves a JOIN call (Hangup under another name).
func (ri *RemoteInvitation) Leave(ctx context.Context) error { return ri.Hangup(ctx) }

// Invite rings callees into the JOIN invitation id, on behalf of this user,
// who must be in its call (or be its caller, while it rings). A callee that
// refused, timed out or left before is rung afresh; a busy one gets a leg
// refused as busy.
func (c *Client) Invite(ctx context.Context, id string, callees ...string) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	rep, err := c.requestRetrying(ctx, subjects.VerbInvite, &protocol.Request{ID: id, Callees: callees})
	if err != nil {
		return err
	}
	if rep.Invitation != nil {
		c.apply(*rep.Invitation, "")
	}
	return nil
}

// legChanges lists the legs of now that differ from the same callee's leg
// in before (all of them when before has none): what
// OnLocalInvitationLegChanged reports.
func legChanges(before, now []protocol.Leg) []protocol.Leg {
	var out []protocol.Leg
	for _, l := range now {
		i := slices.IndexFunc(before, func(b protocol.Leg) bool { return b.User == l.User })
		if i < 0 || before[i] != l {
			out = append(out, l)
		}
	}
	return out
}
