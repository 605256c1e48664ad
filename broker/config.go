package broker

import (
	"errors"
	"fmt"
	"time"

	"github.com/ringer-dev/ringer/broker/journal"
	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// Config is everything a broker can be told. The zero value is not valid;
// start from DefaultConfig.
type Config struct {
	// Name identifies this broker in logs.
	Name string
	// QueueGroup is shared by every broker serving the same deployment.
	QueueGroup string
	// Workers bounds how many commands one broker processes at once.
	Workers int
	// ShedLatency: when, over the last 250 ms (and at least 16 samples),
	// even the fastest of a broker's commands took longer than this from
	// arrival to reply, or even the fastest revision took longer from
	// commit to projection (a standing queue), the broker refuses new sends
	// at once with UNAVAILABLE while the commands of existing invitations
	// still run, until a sample takes less than half of it. 0 never sheds.
	ShedLatency time.Duration
	// Replicas of the bucket, timer stream and consumers (1, or 3 in a cluster).
	Replicas int
	// Partitions the state is spread over, each a bucket and a timer stream
	// with leaders of their own (docs/architecture.md, "Partitions"). The
	// first broker to start fixes it; brokers started with another count
	// refuse to start (store.ErrLayout).
	Partitions int
	// AckWait: how long in-flight projector/timer/presence work of a broker
	// that died stays invisible before another broker redoes it.
	AckWait time.Duration
	// ConsumerProjection projects committed revisions from the projector
	// consumer, delivered to any broker, as releases before 2026-12-05 did,
	// instead of by the committing broker right after its commit (outbox.go).
	ConsumerProjection bool
	// CacheGossip: each broker tells the others every invitation and line
	// it writes, and keeps what they write in its record cache
	// (store.Gossip): with several brokers, commands then rarely start
	// from a stale record. Needs the outbox (its watermarks name the
	// peers) and a cache; without either it does nothing. A lone broker
	// publishes nothing.
	CacheGossip bool
	// AtomicSends: on a replicated deployment, a send writes its record and
	// the line claims in the record's partition as one atomic batch
	// (store.CommitBatch), after claiming on its own a line in another
	// partition; with neither line there it writes one by one (the ids the
	// broker and the Go SDK draw put the record in the caller's partition,
	// store.NewIDFor). One server never batches
	// (JetStream stages an R1 batch on disk, which is slower).
	AtomicSends bool
	// TimerBatch: how long the recorder gathers the durable timers it arms
	// into one schedule per 100 ms slot (store.TimerBatcher); each timer
	// waits at least half of it, and is not stored if its invitation needs
	// it no more by then (ended, or a 1:1 call answered).
	// 0 arms one schedule per timer, as releases before 1.1 did. As long as
	// a slot by default: a shorter window splits a slot's deadlines over
	// several schedules where a broker arms few timers per window.
	TimerBatch time.Duration
	// LeaderCheck: how often a broker of a replicated deployment checks that
	// the Raft groups a call depends on are led by the bucket's leader, and
	// moves those that are not (leaders.go). 0 never does.
	LeaderCheck time.Duration
	// LeaderCheckIdle: the longest a broker goes between leader checks
	// while every group is where it wants it: the interval doubles from
	// LeaderCheck after each check that finds nothing to do, and falls back
	// to LeaderCheck when one does (a group to move, or one that cannot
	// move yet), at a reconnect, or when JetStream announces a leader
	// elected (each check asks JetStream about every group of every
	// partition: a fixed cost that grows with the partitions). At most
	// LeaderCheck: every LeaderCheck, as before.
	LeaderCheckIdle time.Duration
	// PullHeartbeat: the idle heartbeat of the broker's pulls of its
	// durable consumers (pulls.go): a pull lost without an announced
	// election of its consumer's leader is renewed after two missed ones.
	// Each heartbeat wakes the consumer on its leader, which then rewrites
	// its replicated state (docs/benchmarks.md, "Consumer state files").
	// Less than 15 s (half of nats.go's pull expiry).
	PullHeartbeat time.Duration
	// FollowLeader: at each leader check, a broker not connected to the
	// server leading its partition's bucket reconnects to it (follow.go).
	// Off by default: it helps only where the servers share CPU.
	FollowLeader bool

	// Timeouts are the defaults applied to every invitation (Agora's: 30 s
	// offline/no-response, 60 s expire, 10 s accept-ack; no call limit).
	Timeouts lifecycle.Timeouts
	// MinTimeout and MaxTimeout bound per-invitation overrides.
	MinTimeout, MaxTimeout time.Duration

	// PresenceTTL is how long a session lives without a heartbeat: the
	// presence-loss detection time. Clients heartbeat every PresenceTTL/3.
	PresenceTTL time.Duration

	// SendRate is how many invitations one user may send per second through
	// one broker on average, and SendBurst how many at once; more get
	// RATE_LIMITED. Together with Retention they bound what one user can
	// make the store keep (docs/security.md, "Availability"). 0 disables
	// the limit.
	SendRate  float64
	SendBurst int
	// CommandRate and CommandBurst are the same for every other verb
	// (login, heartbeat, get, sync, accept, …), counted together.
	CommandRate  float64
	CommandBurst int

	// MaxOutgoing is how many live invitations and calls of its own (as the
	// caller) one user may have at once; a send beyond gets
	// RESOURCE_EXHAUSTED.
	MaxOutgoing int
	// MaxIncoming is how many invitations a line keeps waiting for one
	// callee; a sender beyond is refused as busy.
	MaxIncoming int
	// MaxCallees bounds a group invitation's callees, at the send and
	// with those invited later (1..protocol.MaxCallees).
	MaxCallees int
	// UnreceivedHold is how long an invitation that no device of its callee
	// has received (SENT) keeps the callee busy; after it the invitation
	// still waits for the callee for its offline window, but other callers
	// can ring. 0: it keeps the callee busy for as long as it rings.
	UnreceivedHold time.Duration
	// MaxDevices is how many devices of one user may be logged in at once;
	// a login beyond gets RESOURCE_EXHAUSTED.
	MaxDevices int

	// RequireRequestInfo (secure mode, with accounts and a service import
	// with share: true): refuse a command unless the server-stamped
	// Nats-Request-Info names the same user as the command subject.
	RequireRequestInfo bool

	// OwnReplies (secure mode): reply only on the acting user's own reply
	// subject, named by the Ringer-Reply header (subjects.ReplyHeader). A
	// command that asks for its reply anywhere else is refused without a
	// reply and not executed: a user could otherwise aim the broker's
	// replies at another user's subjects.
	OwnReplies bool

	// Retention is how long a finished invitation stays readable (for
	// idempotent retries and late syncs) before JetStream removes it.
	Retention time.Duration

	// StoreMaxBytes caps the bucket's size (JetStream MaxBytes): a store
	// that reaches it refuses writes (RESOURCE_EXHAUSTED, /readyz not
	// ready) instead of filling the server's disk. Applied when the bucket
	// is created or the broker starts. 0 leaves the bucket unbounded.
	StoreMaxBytes int64

	// ClaimGrace is how long a line claim whose invitation was never written
	// keeps the line busy (a sender died between claiming the lines and
	// creating the invitation). A sender that has not created its invitation
	// within ClaimGrace/3 of claiming gives up with UNAVAILABLE, so a claim
	// it made cannot be taken over while it still might write.
	ClaimGrace time.Duration

	// CacheSize is how many invitation records, and as many line records,
	// the broker keeps in memory so that commands can skip their reads
	// (docs/architecture.md, "Record cache"); 0 disables the cache.
	CacheSize int

	// Size limits, in bytes.
	MaxContent, MaxResponse, MaxChannelID int

	// History turns the users' call histories on: two stream writes per
	// finished invitation (docs/architecture.md, "History").
	History bool
	// How many finished invitations each user's history keeps,
	// for how long, and a cap on the whole history stream (the oldest
	// entries go first; 0: unbounded).
	HistorySize      int
	HistoryRetention time.Duration
	HistoryMaxBytes  int64

	// Export appends every transition of every invitation to the export
	// stream (package journal, docs/protocol.md "Export"): per committed
	// revision a read and a write, done by the projector; kept for
	// ExportRetention.
	Export          bool
	ExportRetention time.Duration

	// Push turns on push requests: a RING for the callee's registered
	// devices that hold no connection when an invitation is sent, a STOP
	// when it stops ringing (package push).
	Push bool
	// PushTTL is how long a push registration lasts when the device asks
	// for no TTL; MaxPushTTL the longest it may ask for.
	PushTTL, MaxPushTTL time.Duration
	// MaxPushDevices bounds a user's registered push targets.
	MaxPushDevices int
	// MaxBlocked bounds a user's block list.
	MaxBlocked int
}

// Journal is the configuration of the history and export streams.
func (c Config) Journal() journal.Config {
	return journal.Config{
		Replicas: c.Replicas, HistorySize: c.HistorySize, HistoryRetention: c.HistoryRetention,
		HistoryMaxBytes: c.HistoryMaxBytes,
	}
}

// MinRetention is the shortest Retention allowed: every finished invitation,
// whatever the configuration it was written under, stays at least this long.
const MinRetention = time.Minute

// DefaultConfig returns the configuration brokerd runs with when given no flags.
func DefaultConfig() Config {
	return Config{
		Name:            "brokerd",
		QueueGroup:      "ringer",
		Workers:         256,
		ShedLatency:     50 * time.Millisecond,
		Replicas:        1,
		Partitions:      1,
		AckWait:         5 * time.Second,
		TimerBatch:      store.TimerSlot,
		LeaderCheck:     2 * time.Second,
		LeaderCheckIdle: 30 * time.Second,
		PullHeartbeat:   2 * time.Second,
		Timeouts: lifecycle.Timeouts{
			Offline: 30 * time.Second,
			Expire:  60 * time.Second,
			Accept:  10 * time.Second,
		},
		MinTimeout:     time.Second,
		MaxTimeout:     10 * time.Minute,
		PresenceTTL:    15 * time.Second,
		Retention:      time.Hour,
		StoreMaxBytes:  1 << 30,
		ClaimGrace:     15 * time.Second,
		SendRate:       1,
		SendBurst:      10,
		CommandRate:    50,
		CommandBurst:   100,
		MaxOutgoing:    4,
		MaxIncoming:    8,
		MaxCallees:     protocol.DefaultMaxCallees,
		UnreceivedHold: 10 * time.Second,
		MaxDevices:     10,
		CacheSize:      20000,
		CacheGossip:    true,
		AtomicSends:    true,
		MaxContent:     protocol.MaxContentLen,
		MaxResponse:    protocol.MaxResponseLen,
		MaxChannelID:   protocol.MaxChannelIDLen,

		History:          true,
		HistorySize:      100,
		HistoryRetention: 30 * 24 * time.Hour,
		ExportRetention:  7 * 24 * time.Hour,
		HistoryMaxBytes:  1 << 30,
		Push:             true,
		PushTTL:          30 * 24 * time.Hour,
		MaxPushTTL:       90 * 24 * time.Hour,
		MaxPushDevices:   10,
		MaxBlocked:       100,
	}
}

// ErrInvalidConfig is wrapped by Validate's errors.
var ErrInvalidConfig = errors.New("broker: invalid config")

// Validate reports the first inconsistency in c.
func (c Config) Validate() error {
	bad := func(f string, a ...any) error { return fmt.Errorf("%w: "+f, append([]any{ErrInvalidConfig}, a...)...) }
	switch {
	case c.QueueGroup == "":
		return bad("empty queue group")
	case c.Workers < 1:
		return bad("workers %d < 1", c.Workers)
	case c.ShedLatency < 0:
		return bad("shed latency %s < 0", c.ShedLatency)
	case c.Replicas < 1 || c.Replicas > 5:
		return bad("replicas %d not in 1..5", c.Replicas)
	case c.Partitions < 1 || c.Partitions > subjects.MaxPartitions:
		return bad("partitions %d not in 1..%d", c.Partitions, subjects.MaxPartitions)
	case c.AckWait < 100*time.Millisecond:
		return bad("ack wait %s < 100ms", c.AckWait)
	case c.TimerBatch < 0 || c.TimerBatch > time.Second:
		return bad("timer batch %s not in 0..1s", c.TimerBatch)
	case c.LeaderCheck != 0 && c.LeaderCheck < 100*time.Millisecond:
		return bad("leader check %s: 0 (off) or at least 100ms", c.LeaderCheck)
	case c.LeaderCheckIdle < 0:
		return bad("leader check idle %s < 0", c.LeaderCheckIdle)
	case c.PullHeartbeat < 100*time.Millisecond || c.PullHeartbeat >= 15*time.Second:
		return bad("pull heartbeat %s not in 100ms..15s", c.PullHeartbeat)
	case c.MinTimeout <= 0 || c.MaxTimeout < c.MinTimeout:
		return bad("timeout bounds [%s, %s]", c.MinTimeout, c.MaxTimeout)
	case c.PresenceTTL < time.Second:
		return bad("presence ttl %s < 1s (JetStream TTL granularity)", c.PresenceTTL)
	case c.CacheSize < 0:
		return bad("cache size %d < 0", c.CacheSize)
	case c.SendRate < 0 || c.SendBurst < 1 && c.SendRate > 0:
		return bad("send rate %g < 0, or burst %d < 1", c.SendRate, c.SendBurst)
	case c.CommandRate < 0 || c.CommandBurst < 1 && c.CommandRate > 0:
		return bad("command rate %g < 0, or burst %d < 1", c.CommandRate, c.CommandBurst)
	case c.MaxOutgoing < 1 || c.MaxIncoming < 1:
		return bad("max outgoing %d and max incoming %d must be at least 1", c.MaxOutgoing, c.MaxIncoming)
	case (c.MaxOutgoing+c.MaxIncoming+1)*maxViewLen(c) > protocol.MaxReplyLen:
		return bad("max outgoing %d + max incoming %d invitations of %d bytes do not fit a %d-byte reply",
			c.MaxOutgoing, c.MaxIncoming, maxViewLen(c), protocol.MaxReplyLen)
	case c.MaxCallees < 1 || c.MaxCallees > protocol.MaxCallees:
		return bad("max callees %d not in 1..%d", c.MaxCallees, protocol.MaxCallees)
	case maxViewLen(c) > protocol.MaxEventLen:
		return bad("an invitation of %d bytes (content, channel id, %d callees) does not fit a %d-byte event", maxViewLen(c), c.MaxCallees, protocol.MaxEventLen)
	case c.UnreceivedHold < 0:
		return bad("unreceived hold %s < 0", c.UnreceivedHold)
	case c.MaxDevices < 1 || c.MaxDevices > maxDevicesLimit:
		return bad("max devices %d not in 1..%d", c.MaxDevices, maxDevicesLimit)
	case c.StoreMaxBytes < 0:
		return bad("store max bytes %d < 0", c.StoreMaxBytes)
	case c.Retention < MinRetention:
		return bad("retention %s < %s", c.Retention, MinRetention)
	case c.ClaimGrace < 3*time.Second:
		return bad("claim grace %s < 3s", c.ClaimGrace)
	case c.MaxContent < 0 || c.MaxContent > protocol.MaxContentLen:
		return bad("max content %d not in 0..%d", c.MaxContent, protocol.MaxContentLen)
	case c.MaxResponse < 0 || c.MaxResponse > protocol.MaxResponseLen:
		return bad("max response %d not in 0..%d", c.MaxResponse, protocol.MaxResponseLen)
	case c.MaxChannelID < 0 || c.MaxChannelID > protocol.MaxChannelIDLen:
		return bad("max channel id %d not in 0..%d", c.MaxChannelID, protocol.MaxChannelIDLen)
	case c.HistorySize < journal.MinHistorySize || c.HistorySize > journal.MaxHistorySize:
		return bad("history size %d not in %d..%d", c.HistorySize, journal.MinHistorySize, journal.MaxHistorySize)
	case c.HistoryRetention < time.Minute:
		return bad("history retention %s < 1m", c.HistoryRetention)
	case c.ExportRetention < time.Minute:
		return bad("export retention %s < 1m", c.ExportRetention)
	case c.PushTTL < time.Minute || c.MaxPushTTL < c.PushTTL:
		return bad("push ttl %s < 1m, or max push ttl %s < push ttl", c.PushTTL, c.MaxPushTTL)
	case c.MaxPushDevices < 1 || c.MaxPushDevices > maxDevicesLimit:
		return bad("max push devices %d not in 1..%d", c.MaxPushDevices, maxDevicesLimit)
	case c.MaxBlocked < 1 || c.MaxBlocked > maxBlockedLimit:
		return bad("max blocked %d not in 1..%d", c.MaxBlocked, maxBlockedLimit)
	case c.HistoryMaxBytes < 0:
		return bad("history max bytes %d < 0", c.HistoryMaxBytes)
	case c.Timeouts.MaxDuration < 0:
		return bad("max call duration %s < 0", c.Timeouts.MaxDuration)
	}
	for name, d := range map[string]time.Duration{"offline": c.Timeouts.Offline, "expire": c.Timeouts.Expire, "accept": c.Timeouts.Accept} {
		if d < c.MinTimeout || d > c.MaxTimeout {
			return bad("%s timeout %s outside [%s, %s]", name, d, c.MinTimeout, c.MaxTimeout)
		}
	}
	return nil
}

// maxDevicesLimit bounds MaxDevices: presence reads every device of a user
// in one multi-get, which JetStream caps at 1024 subjects (beyond, it lists
// the keys: slower), and racing logins can overshoot the cap a little.
const maxDevicesLimit = 100

// maxBlockedLimit bounds MaxBlocked: the block list lives in the user's line,
// which every send to or from the user rewrites, and a record is at most
// 64 KiB (500 ids of 64 bytes: 33 KiB).
const maxBlockedLimit = 500

// maxViewLen bounds the encoded size of one invitation view (a login or
// sync reply lists each live one): its fields at their limits plus the
// ids, times and msgpack keys.
func maxViewLen(c Config) int {
	// A group's view carries its legs instead of a 1:1 response (its
	// winner's response is a leg's, at most MaxLegResponseLen).
	legs := c.MaxCallees * (2*subjects.MaxIDLen + protocol.MaxLegResponseLen + 160)
	return c.MaxContent + max(c.MaxResponse, legs) + c.MaxChannelID + 4*subjects.MaxIDLen + 512
}

// LineRules is how long claims hold (store.Holding, store.Busy).
func (c Config) LineRules() store.LineRules {
	return store.LineRules{Grace: c.ClaimGrace, Unreceived: c.UnreceivedHold}
}

// timeoutsFor merges per-invitation overrides into the defaults, rejecting
// values outside [MinTimeout, MaxTimeout].
func (c Config) timeoutsFor(o *protocol.Timeouts) (lifecycle.Timeouts, error) {
	t := c.Timeouts
	if o == nil {
		return t, nil
	}
	for _, f := range []struct {
		name string
		ms   int64
		dst  *time.Duration
	}{{"offlineMs", o.OfflineMs, &t.Offline}, {"expireMs", o.ExpireMs, &t.Expire}, {"acceptMs", o.AcceptMs, &t.Accept}} {
		if f.ms == 0 {
			continue
		}
		// Range-checked before the multiplication, which a huge value
		// would wrap around.
		if f.ms < c.MinTimeout.Milliseconds() || f.ms > c.MaxTimeout.Milliseconds() {
			return t, protocol.Errorf(protocol.CodeInvalidArgument, "timeouts.%s=%d outside [%d, %d]",
				f.name, f.ms, c.MinTimeout.Milliseconds(), c.MaxTimeout.Milliseconds())
		}
		*f.dst = time.Duration(f.ms) * time.Millisecond
	}
	return t, nil
}
