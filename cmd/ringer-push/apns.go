package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"

	"github.com/ringer-dev/ringer/protocol"
)

// apnsSender delivers to Apple's push service itself: token-based auth (a
// .p8 key), VoIP pushes to the topic <app>.voip (sideshow/apns2 speaks the
// HTTP/2 provider API).
type apnsSender struct {
	client *apns2.Client
	token  *token.Token
}

// apnsConfig is the APNs part of the gateway's configuration.
type apnsConfig struct {
	keyFile, keyID, teamID string
	production             bool
	host                   string // tests: a server speaking APNs' API; "" = Apple's
}

func newAPNs(c apnsConfig) (*apnsSender, error) {
	key, err := token.AuthKeyFromFile(c.keyFile)
	if err != nil {
		return nil, fmt.Errorf("apns: key %s: %w", c.keyFile, err)
	}
	return newAPNsWithKey(c, &token.Token{AuthKey: key, KeyID: c.keyID, TeamID: c.teamID}), nil
}

func newAPNsWithKey(c apnsConfig, tok *token.Token) *apnsSender {
	client := apns2.NewTokenClient(tok).Development()
	if c.production {
		client.Production()
	}
	if c.host != "" {
		client.Host = c.host
	}
	return &apnsSender{client: client, token: tok}
}

// apnsPayload is what the app's PushKit handler receives: the delivery, under
// "ringer" (VoIP pushes carry no alert: the app reports the call to
// CallKit itself).
type apnsPayload struct {
	Ringer *protocol.PushDelivery `json:"ringer"`
}

// send pushes d: a RING expires with its invitation's deadline; a STOP is
// sent now or never (expiration 0).
func (a *apnsSender) send(ctx context.Context, d *protocol.PushDelivery) error {
	n := &apns2.Notification{
		DeviceToken: d.Device.Token,
		Topic:       d.Device.App + ".voip",
		PushType:    apns2.PushTypeVOIP,
		Priority:    apns2.PriorityHigh,
		CollapseID:  d.CollapseKey,
		Payload:     apnsPayload{Ringer: d},
	}
	if d.Kind == protocol.PushRing && d.Deadline > 0 {
		n.Expiration = time.UnixMilli(d.Deadline)
	}
	res, err := a.client.PushWithContext(ctx, n)
	if err != nil {
		return &retryAfter{err: fmt.Errorf("apns: %w", err)}
	}
	switch {
	case res.Sent():
		return nil
	case res.StatusCode == http.StatusGone || res.Reason == apns2.ReasonBadDeviceToken || res.Reason == apns2.ReasonUnregistered:
		return fmt.Errorf("%w: apns %d %s", errGone, res.StatusCode, res.Reason)
	case res.Reason == apns2.ReasonExpiredProviderToken:
		// Our JWT is older than Apple accepts (clock skew, a long idle):
		// sign a new one and try again.
		a.token.Lock()
		_, gerr := a.token.Generate()
		a.token.Unlock()
		if gerr != nil {
			return fmt.Errorf("apns: new provider token: %w", gerr)
		}
		return &retryAfter{err: errors.New("apns: ExpiredProviderToken (provider token renewed)")}
	case res.StatusCode == http.StatusTooManyRequests || res.StatusCode >= 500:
		return &retryAfter{err: fmt.Errorf("apns %d %s", res.StatusCode, res.Reason)}
	}
	return fmt.Errorf("apns %d %s", res.StatusCode, res.Reason)
}
