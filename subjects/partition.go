package subjects

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// Partition is one slice of Ringer's state: a KV bucket and a timer stream
// of its own, each with its own Raft leader, so that a cluster's servers
// share the writes (docs/architecture.md, "Partitions"). Every key lives in
// exactly one partition (PartitionOf); partition 0 has the names of an
// unpartitioned deployment (Bucket, TimerStream), so a deployment of one
// partition is laid out as before partitions existed.
type Partition int

// MaxPartitions bounds a deployment's partitions (each is five Raft groups).
const MaxPartitions = 64

// PartitionOf is the partition of a KV key among n: the FNV-1a hash of the
// key's second token (the invitation id of inv.<id>, the user of
// line.<user>, sess.<user>.<device> and push.<user>.<device>), so that a
// user's line, sessions and push targets share a partition.
func PartitionOf(key string, n int) Partition {
	if n <= 1 {
		return 0
	}
	_, rest, _ := strings.Cut(key, ".")
	entity, _, _ := strings.Cut(rest, ".")
	h := fnv.New32a()
	_, _ = h.Write([]byte(entity))
	return Partition(h.Sum32() % uint32(n))
}

// LocalInvitationID returns the first id drawn from next whose invitation
// record lives, among n partitions, in the partition of user's line: an
// invitation that user sends then writes its record and its caller's claim
// to one partition, in one atomic batch at R3 (docs/protocol.md §1.4). It
// draws n ids on average; with n ≤ 1 it returns next's first.
func LocalInvitationID(user string, n int, next func() string) string {
	want := PartitionOf(LineKey(user), n)
	for {
		if id := next(); PartitionOf(InvitationKey(id), n) == want {
			return id
		}
	}
}

// Bucket is the partition's KV bucket: RINGER, RINGER_P1, RINGER_P2…
func (p Partition) Bucket() string {
	if p == 0 {
		return Bucket
	}
	return Bucket + "_P" + strconv.Itoa(int(p))
}

// BucketStream is the stream behind the partition's bucket.
func (p Partition) BucketStream() string { return "KV_" + p.Bucket() }

// TimerStream is the partition's timer stream: RINGER_TIMERS,
// RINGER_TIMERS_P1…
func (p Partition) TimerStream() string {
	if p == 0 {
		return TimerStream
	}
	return TimerStream + "_P" + strconv.Itoa(int(p))
}

// KVSubject turns a key of the partition into the stream subject it is
// stored under.
func (p Partition) KVSubject(key string) string { return "$KV." + p.Bucket() + "." + key }

// InvitationChanges is the partition's subject filter for invitation records.
func (p Partition) InvitationChanges() string { return p.KVSubject(invPrefix + "*") }

// SessionChanges is the partition's subject filter for session records.
func (p Partition) SessionChanges() string { return p.KVSubject(sessPrefix + "*.*") }

// timers is the prefix of the partition's timer subjects: ringer.v1.timer.
// for partition 0, ringer.v1.timer<p>. for the others (disjoint, as the
// subjects of two streams must be).
func (p Partition) timers() string {
	if p == 0 {
		return Prefix + ".timer."
	}
	return Prefix + ".timer" + strconv.Itoa(int(p)) + "."
}

// TimerSchedule is the subject of the ADR-51 schedule that fires for
// invitation id (of this partition) at Unix millisecond at. Each deadline
// gets its own subject, so arming is idempotent and order-independent:
// re-arming the same deadline replaces an identical schedule, and a
// superseded timer fires harmlessly.
func (p Partition) TimerSchedule(id string, at int64) string {
	return p.timers() + "set." + id + "." + strconv.FormatInt(at, 10)
}

// TimerFire is the subject the schedule of invitation id fires into.
func (p Partition) TimerFire(id string) string { return p.timers() + "fire." + id }

// TimerFires is the filter of the partition's timer consumer.
func (p Partition) TimerFires() string { return p.timers() + "fire.*" }

// TimerBatchSchedule is the subject of the ADR-51 schedule of one batch
// of timers (store.TimerBatcher): many invitations' deadlines in one
// message, named by a fresh batch id.
func (p Partition) TimerBatchSchedule(batch string) string { return p.timers() + "sets." + batch }

// TimerBatchFire is the subject the schedule of a batch fires into.
func (p Partition) TimerBatchFire(batch string) string { return p.timers() + "fires." + batch }

// TimerBatchFires is the filter of the partition's timer-batch consumer.
// It is a consumer of its own (not TimerFires widened) so that a broker of
// an earlier release, which knows only single timers, never takes a batch.
func (p Partition) TimerBatchFires() string { return p.timers() + "fires.*" }

// TimerSubjects is the subject space of the partition's timer stream.
func (p Partition) TimerSubjects() string { return p.timers() + ">" }

// partitionToken checks one subject token naming a partition: base itself
// (partition 0) or base<sep><n>.
func partitionToken(tok, base, sep string) bool {
	if tok == base {
		return true
	}
	n, ok := strings.CutPrefix(tok, base+sep)
	if !ok || n == "" {
		return false
	}
	i, err := strconv.Atoi(n)
	return err == nil && i > 0 && i < MaxPartitions && strconv.Itoa(i) == n
}

// cutKV splits a KV stream subject of any partition, $KV.<bucket>.<key>,
// and returns its key.
func cutKV(subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, "$KV.")
	if !ok {
		return "", false
	}
	bucket, key, ok := strings.Cut(rest, ".")
	return key, ok && partitionToken(bucket, Bucket, "_P")
}

// ParseInvitationSubject extracts the invitation id from a change on
// $KV.<bucket>.inv.<id> (any partition's bucket).
func ParseInvitationSubject(subject string) (string, error) {
	key, ok := cutKV(subject)
	id, isInv := strings.CutPrefix(key, invPrefix)
	if !ok || !isInv {
		return "", fmt.Errorf("%w: %q is not an invitation key", ErrInvalidSubject, subject)
	}
	return id, ValidateID(id)
}

// ParseSessionSubject extracts user and device from a change on
// $KV.<bucket>.sess.<user>.<device> (any partition's bucket).
func ParseSessionSubject(subject string) (user, device string, err error) {
	key, ok := cutKV(subject)
	if !ok {
		return "", "", fmt.Errorf("%w: %q is not a session key", ErrInvalidSubject, subject)
	}
	return ParseSessionKey(key)
}

// ParseSessionKey splits a session key sess.<user>.<device>.
func ParseSessionKey(key string) (user, device string, err error) {
	rest, ok := strings.CutPrefix(key, sessPrefix)
	if !ok {
		return "", "", fmt.Errorf("%w: %q is not a session key", ErrInvalidSubject, key)
	}
	user, device, ok = strings.Cut(rest, ".")
	if !ok {
		return "", "", fmt.Errorf("%w: %q is not a session key", ErrInvalidSubject, key)
	}
	if err := ValidateID(user); err != nil {
		return "", "", err
	}
	return user, device, ValidateID(device)
}

// ParseTimerFire extracts the invitation id from a fired timer subject of
// any partition, ringer.v1.timer[<p>].fire.<id>.
func ParseTimerFire(subject string) (string, error) {
	rest, ok := strings.CutPrefix(subject, Prefix+".")
	tok, rest, _ := strings.Cut(rest, ".")
	id, isFire := strings.CutPrefix(rest, "fire.")
	if !ok || !isFire || !partitionToken(tok, "timer", "") {
		return "", fmt.Errorf("%w: %q is not a timer subject", ErrInvalidSubject, subject)
	}
	return id, ValidateID(id)
}
