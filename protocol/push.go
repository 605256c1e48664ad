package protocol

// Platform is where a push target's notifications go.
type Platform string

// Push platforms. The broker only stores and forwards the token; a push
// gateway (cmd/ringer-push) turns each into the platform's request.
const (
	PlatformAPNs    Platform = "apns"    // Apple: token = the device's VoIP (PushKit) token, hex
	PlatformFCM     Platform = "fcm"     // Firebase Cloud Messaging: registration token
	PlatformWebPush Platform = "webpush" // Web Push: the subscription (JSON), as the browser gave it
	PlatformHTTP    Platform = "http"    // the operator's own endpoint: an opaque token it understands
)

// Platforms lists every platform.
var Platforms = []Platform{PlatformAPNs, PlatformFCM, PlatformWebPush, PlatformHTTP}

// Valid reports whether p is one of Platforms.
func (p Platform) Valid() bool {
	for _, k := range Platforms {
		if k == p {
			return true
		}
	}
	return false
}

// Push limits that are part of the contract.
const (
	MaxPushTokenLen = 4096 // bytes of PushTarget.Token (a web push subscription fits)
	MaxPushAppLen   = 128  // bytes of PushTarget.App
)

// PushTarget is where to wake one device of a user: registered by the
// device (register), carried by push requests.
type PushTarget struct {
	Device   string   `msgpack:"device" json:"device"` // set by the broker: the registering device
	Platform Platform `msgpack:"platform" json:"platform"`
	Token    string   `msgpack:"token" json:"token"`
	// App tells the gateway which app's credentials to use (an iOS bundle
	// id, an Android package, a web origin); "" for the gateway's default.
	App string `msgpack:"app,omitempty" json:"app,omitempty"`
	// TTLMs is how long the registration lasts (register; 0: the broker's
	// default). In push requests: absent.
	TTLMs int64 `msgpack:"ttlMs,omitempty" json:"ttlMs,omitempty"`
	// ExpiresAt is when the registration ends (Unix ms; set by the broker).
	ExpiresAt int64 `msgpack:"expiresAt,omitempty" json:"expiresAt,omitempty"`
}

// PushKind says what a push request asks for.
type PushKind string

// Push request kinds.
const (
	PushRing PushKind = "RING" // an invitation rings: wake the devices and show it
	PushStop PushKind = "STOP" // it stopped ringing: take the incoming-call screen down
)

// PushRequest is what brokers put on the push stream for a gateway to
// deliver (docs/protocol.md, "Push requests").
type PushRequest struct {
	// ID is stable across redeliveries: <invitation id>.ring or .stop. A
	// gateway dedupes on it; the stream does within its duplicate window.
	ID   string   `msgpack:"id"`
	Kind PushKind `msgpack:"kind"`
	User string   `msgpack:"user"` // the callee
	// CollapseKey is the invitation id: a platform that collapses pushes
	// (apns-collapse-id, FCM collapse_key) shows only the newest of one
	// invitation.
	CollapseKey string `msgpack:"collapseKey"`
	// Invitation is the invitation as of the revision that caused the
	// request (for RING, with its content).
	Invitation Invitation `msgpack:"invitation"`
	// Deadline (Unix ms) is when the invitation stops waiting for a device
	// of the callee: a RING delivered later is useless. 0 for STOP.
	Deadline int64 `msgpack:"deadline,omitempty"`
	// Devices are the targets to push to: for RING, the callee's
	// registered devices that had no live session; for STOP, all of them.
	Devices []PushTarget `msgpack:"devices"`
}

// PushDelivery is what a push gateway (cmd/ringer-push) POSTs, as JSON, to
// the endpoint of one device's platform: one push request for one device
// (docs/push.md).
type PushDelivery struct {
	ID          string     `json:"id"`
	Kind        PushKind   `json:"kind"`
	User        string     `json:"user"`
	CollapseKey string     `json:"collapseKey"`
	Deadline    int64      `json:"deadline,omitempty"`
	Device      PushTarget `json:"device"`
	Invitation  Invitation `json:"invitation"`
}

// Deliveries splits r into one delivery per device.
func (r *PushRequest) Deliveries() []PushDelivery {
	out := make([]PushDelivery, len(r.Devices))
	for i, d := range r.Devices {
		out[i] = PushDelivery{ID: r.ID, Kind: r.Kind, User: r.User, CollapseKey: r.CollapseKey,
			Deadline: r.Deadline, Device: d, Invitation: r.Invitation}
	}
	return out
}

// Request is the push request d was cut from, for its one device.
func (d *PushDelivery) Request() *PushRequest {
	return &PushRequest{ID: d.ID, Kind: d.Kind, User: d.User, CollapseKey: d.CollapseKey,
		Deadline: d.Deadline, Invitation: d.Invitation, Devices: []PushTarget{d.Device}}
}
