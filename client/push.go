package client

import (
	"context"
	"time"

	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// RegisterPush registers this device's push target (a VoIP/FCM token from
// the platform, and which app it belongs to) for ttl (0: the broker's
// default, 30 days). While registered, an invitation sent when the device
// holds no connection produces a RING push request for it, and a STOP when
// the invitation stops ringing; the woken app logs in, and the invitation
// is in its login reply. Register again on every app start and whenever
// the platform rotates the token. It returns the registration, with its
// expiry.
func (c *Client) RegisterPush(ctx context.Context, platform protocol.Platform, token, app string, ttl time.Duration) (protocol.PushTarget, error) {
	rep, err := c.request(ctx, subjects.VerbRegister, &protocol.Request{Push: &protocol.PushTarget{
		Platform: platform, Token: token, App: app, TTLMs: ttl.Milliseconds(),
	}})
	if err != nil {
		return protocol.PushTarget{}, err
	}
	if rep.Push == nil {
		return protocol.PushTarget{}, protocol.Errorf(protocol.CodeInternal, "register reply without the registration")
	}
	return *rep.Push, nil
}

// UnregisterPush removes this device's push target (e.g. at sign-out).
func (c *Client) UnregisterPush(ctx context.Context) error {
	_, err := c.request(ctx, subjects.VerbUnregister, &protocol.Request{})
	return err
}
