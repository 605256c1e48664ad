package client

import (
	"context"

	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// Block refuses user's invitations for good: from now on they are refused
// as busy (user is not told it is blocked) without ringing, and stay out of
// this user's history. It returns the block list.
func (c *Client) Block(ctx context.Context, user string) ([]string, error) {
	return c.blockList(ctx, subjects.VerbBlock, user)
}

// Unblock takes user off the block list, and returns the list.
func (c *Client) Unblock(ctx context.Context, user string) ([]string, error) {
	return c.blockList(ctx, subjects.VerbUnblock, user)
}

func (c *Client) blockList(ctx context.Context, verb, user string) ([]string, error) {
	rep, err := c.request(ctx, verb, &protocol.Request{Peer: user})
	if err != nil {
		return nil, err
	}
	return rep.Blocked, nil
}
