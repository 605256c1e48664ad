// Package protocol defines Ringer's wire contract: the msgpack messages,
// states, events and error codes exchanged on the subjects of package subjects.
// docs/protocol.md is its prose twin.
package protocol

// Limits that are part of the contract; brokers may be configured lower.
const (
	MaxContentLen   = 8 * 1024 // bytes of Invitation.Content
	MaxResponseLen  = 8 * 1024 // bytes of Invitation.Response
	MaxChannelIDLen = 64       // bytes of Invitation.ChannelID
	MaxRequestLen   = 32 * 1024
	// MaxReplyLen bounds a command reply (and so what a client must be able
	// to decode): a login or sync reply lists every live invitation of the
	// user, and brokers refuse to start with quotas whose invitations at
	// their size limits would not fit.
	MaxReplyLen = 512 * 1024
	// MaxEventLen bounds an event: one invitation view.
	MaxEventLen = MaxRequestLen
)

// Invitation is the view of an invitation (and the call it became) that
// replies and events carry. Times are Unix milliseconds of the broker's clock;
// zero means "not yet".
type Invitation struct {
	ID           string    `msgpack:"id" json:"id"`
	Caller       string    `msgpack:"caller" json:"caller"`
	CallerDevice string    `msgpack:"callerDevice" json:"callerDevice"`
	Callee       string    `msgpack:"callee" json:"callee"`
	CalleeDevice string    `msgpack:"calleeDevice,omitempty" json:"calleeDevice,omitempty"` // the callee device that acted last (ack, accept, refuse)
	Content      string    `msgpack:"content,omitempty" json:"content,omitempty"`
	ChannelID    string    `msgpack:"channelId,omitempty" json:"channelId,omitempty"`
	Response     string    `msgpack:"response,omitempty" json:"response,omitempty"`
	State        State     `msgpack:"state" json:"state"`
	Reason       Reason    `msgpack:"reason,omitempty" json:"reason,omitempty"`
	CallState    CallState `msgpack:"callState,omitempty" json:"callState,omitempty"`
	EndedBy      string    `msgpack:"endedBy,omitempty" json:"endedBy,omitempty"` // user who hung up
	Revision     uint64    `msgpack:"revision" json:"revision"`
	CreatedAt    int64     `msgpack:"createdAt" json:"createdAt"`
	ReceivedAt   int64     `msgpack:"receivedAt,omitempty" json:"receivedAt,omitempty"`
	AnsweredAt   int64     `msgpack:"answeredAt,omitempty" json:"answeredAt,omitempty"` // accept or refuse
	EndedAt      int64     `msgpack:"endedAt,omitempty" json:"endedAt,omitempty"`       // terminal state, or call end
	Deadline     int64     `msgpack:"deadline,omitempty" json:"deadline,omitempty"`     // when the broker will resolve the current state by itself
	// MergedInto is, for an invitation CANCELED with reason MERGED, the
	// callee's invitation to the caller that the send accepted instead.
	MergedInto string `msgpack:"mergedInto,omitempty" json:"mergedInto,omitempty"`
	// Group invitations (Mode FIRST or JOIN): one leg per callee, and when
	// the caller left a JOIN call (Unix ms; 0: in it, or not joined yet).
	// Callee is "" until a FIRST invitation's winner accepts.
	Mode         Mode  `msgpack:"mode,omitempty" json:"mode,omitempty"`
	Legs         []Leg `msgpack:"legs,omitempty" json:"legs,omitempty"`
	CallerLeftAt int64 `msgpack:"callerLeftAt,omitempty" json:"callerLeftAt,omitempty"`
}

// RoleOf returns the role of user in inv, or "" if user is not a party.
func (inv *Invitation) RoleOf(user string) Role {
	switch user {
	case inv.Caller:
		return RoleCaller
	case "":
		return ""
	case inv.Callee:
		return RoleCallee
	}
	if inv.Leg(user) != nil {
		return RoleCallee
	}
	return ""
}

// Live reports whether the invitation or its call still holds the parties' lines.
func (inv *Invitation) Live() bool {
	if inv.State == StateAccepted {
		return inv.CallState != CallEnded
	}
	return !inv.State.Terminal()
}

// Request is the body of every command. Which fields matter depends on the
// verb (docs/protocol.md, "Commands"); unknown fields are ignored.
type Request struct {
	Device    string    `msgpack:"device"`
	ID        string    `msgpack:"id,omitempty"`
	Callee    string    `msgpack:"callee,omitempty"`
	Content   string    `msgpack:"content,omitempty"`
	ChannelID string    `msgpack:"channelId,omitempty"`
	Response  string    `msgpack:"response,omitempty"`
	Busy      bool      `msgpack:"busy,omitempty"`
	Timeouts  *Timeouts `msgpack:"timeouts,omitempty"`
	// Deadline (Unix ms, the broker's clock; 0: none) is when the client
	// stops waiting for the reply. A broker that receives the command later
	// (it waited in a reconnecting client's buffer, or in a queue) does not
	// execute it: DEADLINE_EXCEEDED.
	Deadline int64 `msgpack:"deadline,omitempty"`
	// History: the page size (0: DefaultHistoryPage; at most
	// MaxHistoryPage), where to continue (a CallRecord's Cursor; "": the
	// newest), and whether to list missed calls only.
	Limit  int    `msgpack:"limit,omitempty"`
	Cursor string `msgpack:"cursor,omitempty"`
	Missed bool   `msgpack:"missed,omitempty"`
	// Push is the acting device's push target (register).
	Push *PushTarget `msgpack:"push,omitempty"`
	// Peer is the user to block or unblock.
	Peer string `msgpack:"peer,omitempty"`
	// Callees and Mode make a send a group invitation (Callee empty), and
	// an invite adds Callees to a live JOIN invitation (ID).
	Callees []string `msgpack:"callees,omitempty"`
	Mode    Mode     `msgpack:"mode,omitempty"`
	// Seen (get) is the newest revision of the invitation the client has
	// applied (0: none): the broker answers with a view no older, reading
	// through the stream leader if its fast read is older (a replica that
	// is catching up, e.g. after a network partition).
	Seen uint64 `msgpack:"seen,omitempty"`
	// SessionRev (heartbeat) is the session's revision from the last
	// login or heartbeat reply (Session.Rev; 0: none): the broker
	// refreshes the session in one compare-and-set write instead of a
	// read and a write.
	SessionRev uint64 `msgpack:"sessionRev,omitempty"`
}

// Timeouts are per-invitation overrides, in milliseconds; zero keeps the
// broker default. The broker rejects values outside its bounds.
type Timeouts struct {
	OfflineMs int64 `msgpack:"offlineMs,omitempty"` // SENT → PEER_OFFLINE / PEER_NO_RESPONSE
	ExpireMs  int64 `msgpack:"expireMs,omitempty"`  // RECEIVED → INVITATION_EXPIRE
	AcceptMs  int64 `msgpack:"acceptMs,omitempty"`  // ACCEPTING → ACCEPT_FAILURE
}

// Reply is the body of every command reply: Error is set on failure,
// otherwise the fields the verb documents.
type Reply struct {
	Error       *Error       `msgpack:"error,omitempty"`
	Invitation  *Invitation  `msgpack:"invitation,omitempty"`
	Invitations []Invitation `msgpack:"invitations,omitempty"`
	Session     *Session     `msgpack:"session,omitempty"`
	// Calls is a history page, newest first; Cursor (if not "") asks for
	// the next, older, page.
	Calls  []CallRecord `msgpack:"calls,omitempty"`
	Cursor string       `msgpack:"cursor,omitempty"`
	// Push is the registered push target (register), with its ExpiresAt.
	Push *PushTarget `msgpack:"push,omitempty"`
	// Blocked is the user's block list (block, unblock).
	Blocked []string `msgpack:"blocked,omitempty"`
}

// Session is the login/heartbeat reply: how long the session lives without a
// heartbeat, and how often to send one.
type Session struct {
	TTLMs       int64 `msgpack:"ttlMs"`
	HeartbeatMs int64 `msgpack:"heartbeatMs"`
	Busy        bool  `msgpack:"busy,omitempty"` // the user's manual busy flag
	// NowMs is the broker's clock when it replied (Unix ms): clients learn
	// from it the offset to write Request.Deadline in the broker's clock.
	NowMs int64 `msgpack:"nowMs,omitempty"`
	// Partitions is how many partitions the deployment's state is spread
	// over (login, heartbeat; absent for one): a client that names its
	// invitations draws ids in its own user's partition
	// (subjects.LocalInvitationID), so that a call writes to fewer of them.
	Partitions int `msgpack:"partitions,omitempty"`
	// Rev (login, heartbeat) is the revision of the device's session
	// record as this reply left it: sent back as the next heartbeat's
	// Request.SessionRev.
	Rev uint64 `msgpack:"rev,omitempty"`
}

// Event is published on a user's events subject for every committed
// transition that concerns the user. Clients apply an event only if
// Invitation.Revision is newer than the last they applied for that id.
type Event struct {
	Type       EventType  `msgpack:"type"`
	Role       Role       `msgpack:"role"` // the receiving user's role in the invitation
	Invitation Invitation `msgpack:"invitation"`
}
