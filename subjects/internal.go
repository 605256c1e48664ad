package subjects

import (
	"fmt"
	"strconv"
	"strings"
)

// Broker-private names: the KV bucket holding all state, its keys, and the
// timer stream. Clients never use these; they are here so that every name
// Ringer puts on the wire is built and parsed in one place.
const (
	// Bucket is the JetStream KV bucket holding invitations, lines and sessions.
	Bucket = "RINGER"
	// BucketStream is the stream behind Bucket.
	BucketStream = "KV_" + Bucket
	// TimerStream holds ADR-51 schedules and the messages they fire.
	TimerStream = "RINGER_TIMERS"
	// HistoryStream holds each user's finished invitations and calls, one
	// subject per user.
	HistoryStream = "RINGER_HISTORY"
	// PushStream holds push requests for gateways, and their dead letters.
	PushStream = "RINGER_PUSH"
	// ExportStream holds every transition of every invitation, one subject
	// per invitation, for app backends (docs/protocol.md, "Export").
	ExportStream = "RINGER_EXPORT"
	// WebhookDeadStream holds the transitions a webhook relay gave up on.
	WebhookDeadStream = "RINGER_WEBHOOK_DEAD"
)

const (
	kvPrefix     = "$KV." + Bucket + "."
	invPrefix    = "inv."
	linePrefix   = "line."
	sessPrefix   = "sess."
	timerSet     = Prefix + ".timer.set."
	timerFire    = Prefix + ".timer.fire."
	timerFireAll = Prefix + ".timer.fire.*"
	timerAll     = Prefix + ".timer.>"
	history      = Prefix + ".history."
	pushPrefix   = "push."
	pushAll      = Prefix + ".push.>"
	pushRequest  = Prefix + ".push.req."
	pushDead     = Prefix + ".push.dead."
	export       = Prefix + ".export."
	webhookDead  = Prefix + ".webhook.dead."
)

// Export is the export subject of invitation id: ringer.v1.export.<id>.
func Export(id string) string { return export + id }

// ExportSubjects matches every invitation's export subject.
func ExportSubjects() string { return export + "*" }

// WebhookDead is where a webhook relay puts a transition of invitation id
// it gave up on: ringer.v1.webhook.dead.<id>.
func WebhookDead(id string) string { return webhookDead + id }

// WebhookDeadSubjects matches every dead-lettered transition.
func WebhookDeadSubjects() string { return webhookDead + "*" }

// PushKey is the KV key of one device's push target: push.<user>.<device>.
func PushKey(user, device string) string { return pushPrefix + user + "." + device }

// PushKeysOf is the KV key filter matching every push target of user.
func PushKeysOf(user string) string { return pushPrefix + user + ".*" }

// PushSubjects is the subject filter of the push stream.
func PushSubjects() string { return pushAll }

// PushRequests is the subject of the push requests for user's devices:
// ringer.v1.push.req.<user>.
func PushRequests(user string) string { return pushRequest + user }

// AllPushRequests matches every user's push requests (a gateway's filter).
func AllPushRequests() string { return pushRequest + "*" }

// PushDeadLetters is where a gateway puts a request for user it gave up
// on: ringer.v1.push.dead.<user>.
func PushDeadLetters(user string) string { return pushDead + user }

// History is the subject of user's history entries: ringer.v1.history.<user>.
func History(user string) string { return history + user }

// HistorySubjects is the subject filter of the history stream.
func HistorySubjects() string { return history + "*" }

// InvitationKey is the KV key of an invitation record: inv.<id>.
func InvitationKey(id string) string { return invPrefix + id }

// LineKey is the KV key of a user's line (busy claim and index of live
// invitations): line.<user>.
func LineKey(user string) string { return linePrefix + user }

// SessionKey is the KV key of one logged-in device: sess.<user>.<device>.
func SessionKey(user, device string) string { return sessPrefix + user + "." + device }

// SessionKeysOf is the KV key filter matching every session of user.
func SessionKeysOf(user string) string { return sessPrefix + user + ".*" }

// KVSubject turns a KV key into the stream subject it is stored under.
func KVSubject(key string) string { return kvPrefix + key }

// InvitationChanges is the stream subject filter for every invitation record.
func InvitationChanges() string { return kvPrefix + invPrefix + "*" }

// SessionChanges is the stream subject filter for every session record.
func SessionChanges() string { return kvPrefix + sessPrefix + "*.*" }

// ParseInvitationSubject extracts the invitation id from a change on
// $KV.RINGER.inv.<id>.
func ParseInvitationSubject(subject string) (string, error) {
	id, ok := strings.CutPrefix(subject, kvPrefix+invPrefix)
	if !ok {
		return "", fmt.Errorf("%w: %q is not an invitation key", ErrInvalidSubject, subject)
	}
	return id, ValidateID(id)
}

// ParseSessionSubject extracts user and device from a change on
// $KV.RINGER.sess.<user>.<device>.
func ParseSessionSubject(subject string) (user, device string, err error) {
	rest, ok := strings.CutPrefix(subject, kvPrefix+sessPrefix)
	if !ok {
		return "", "", fmt.Errorf("%w: %q is not a session key", ErrInvalidSubject, subject)
	}
	user, device, ok = strings.Cut(rest, ".")
	if !ok {
		return "", "", fmt.Errorf("%w: %q is not a session key", ErrInvalidSubject, subject)
	}
	if err := ValidateID(user); err != nil {
		return "", "", err
	}
	return user, device, ValidateID(device)
}

// ParseSessionKey splits a session key sess.<user>.<device>.
func ParseSessionKey(key string) (user, device string, err error) {
	return ParseSessionSubject(kvPrefix + key)
}

// TimerSchedule is the subject of the ADR-51 schedule that fires for
// invitation id at Unix millisecond at. Each deadline gets its own subject, so
// arming is idempotent and order-independent: re-arming the same deadline
// replaces an identical schedule, and a superseded timer fires harmlessly.
func TimerSchedule(id string, at int64) string {
	return timerSet + id + "." + strconv.FormatInt(at, 10)
}

// TimerFire is the subject the schedule of an invitation fires into.
func TimerFire(id string) string { return timerFire + id }

// TimerFires is the filter of the durable consumer that handles fired timers.
func TimerFires() string { return timerFireAll }

// TimerSubjects is the subject space of TimerStream.
func TimerSubjects() string { return timerAll }

// ParseTimerFire extracts the invitation id from a fired timer subject.
func ParseTimerFire(subject string) (string, error) {
	id, ok := strings.CutPrefix(subject, timerFire)
	if !ok {
		return "", fmt.Errorf("%w: %q is not a timer subject", ErrInvalidSubject, subject)
	}
	return id, ValidateID(id)
}
