package subjects

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
	invPrefix   = "inv."
	linePrefix  = "line."
	sessPrefix  = "sess."
	history     = Prefix + ".history."
	pushPrefix  = "push."
	projPrefix  = "proj."
	pushAll     = Prefix + ".push.>"
	pushRequest = Prefix + ".push.req."
	pushDead    = Prefix + ".push.dead."
	export      = Prefix + ".export."
	webhookDead = Prefix + ".webhook.dead."
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

// WatermarksKey is the KV key (in partition 0) of a broker instance's
// projection watermarks: proj.<instance>.
func WatermarksKey(instance string) string { return projPrefix + instance }

// AllWatermarks is the KV key filter matching every instance's watermarks.
func AllWatermarks() string { return projPrefix + "*" }

// InvitationKey is the KV key of an invitation record: inv.<id>.
func InvitationKey(id string) string { return invPrefix + id }

// LineKey is the KV key of a user's line (busy claim and index of live
// invitations): line.<user>.
func LineKey(user string) string { return linePrefix + user }

// SessionKey is the KV key of one logged-in device: sess.<user>.<device>.
func SessionKey(user, device string) string { return sessPrefix + user + "." + device }

// SessionKeysOf is the KV key filter matching every session of user.
func SessionKeysOf(user string) string { return sessPrefix + user + ".*" }

// KVSubject turns a KV key of partition 0 into the stream subject it is
// stored under (Partition.KVSubject for any partition).
func KVSubject(key string) string { return Partition(0).KVSubject(key) }

// InvitationChanges is partition 0's subject filter for invitation records.
func InvitationChanges() string { return Partition(0).InvitationChanges() }

// SessionChanges is partition 0's subject filter for session records.
func SessionChanges() string { return Partition(0).SessionChanges() }

// TimerSchedule is partition 0's Partition.TimerSchedule.
func TimerSchedule(id string, at int64) string { return Partition(0).TimerSchedule(id, at) }

// TimerFire is partition 0's Partition.TimerFire.
func TimerFire(id string) string { return Partition(0).TimerFire(id) }

// TimerFires is partition 0's Partition.TimerFires.
func TimerFires() string { return Partition(0).TimerFires() }

// TimerSubjects is partition 0's Partition.TimerSubjects.
func TimerSubjects() string { return Partition(0).TimerSubjects() }
