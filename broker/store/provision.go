package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/subjects"
)

// Durable consumer names shared by every broker.
const (
	ConsumerProjector = "ringer-projector" // invitation changes → events, timers (--consumer-projection only)
	ConsumerTimers    = "ringer-timers"    // fired timers → timeouts
	// ConsumerTimerBatches: fired batches of timers (TimerBatcher) → timeouts.
	ConsumerTimerBatches = "ringer-timer-batches"
	ConsumerPresence     = "ringer-presence" // session deletes/expiries → presence loss
)

// ProvisionConfig sizes what Provision creates.
type ProvisionConfig struct {
	Replicas int           // 1 for a single server, 3 in a cluster
	MaxAge   time.Duration // how long finished records stay readable; 0 = forever
	// MaxBytes caps the buckets (0 = unbounded), each partition's at its
	// share. Past it JetStream refuses writes (ErrFull) rather than
	// discarding records.
	MaxBytes int64
	// AckWait bounds how long a crashed broker's in-flight work waits before
	// another broker redoes it.
	AckWait time.Duration
	// Partitions is how many partitions the state is spread over (0 or 1:
	// one, laid out as before partitions existed). Fixed when the first
	// broker provisions: a later start with another count is refused
	// (ErrLayout).
	Partitions int
	// Projector provisions each bucket's projector consumer, which only a
	// broker run with --consumer-projection reads. Unread, it would still
	// cost every partition a replicated consumer (a Raft group): it is
	// created by the first broker that needs it, and never removed by one.
	Projector bool
}

// partitionBytes is one partition's share of MaxBytes.
func (cfg ProvisionConfig) partitionBytes() int64 {
	return cfg.MaxBytes / int64(max(cfg.Partitions, 1))
}

// ErrLayout: the deployment was provisioned with another partition count
// than asked for. Keys are placed by a hash modulo the count, so changing it
// needs the state moved (docs/operations.md, "Partitions").
var ErrLayout = errors.New("store: partition count differs from the provisioned one")

// layoutKey is the marker in partition 0's bucket holding the partition
// count, written once by the first Provision.
const layoutKey = "meta.partitions"

// Layout reads how many partitions the deployment has: the marker's count,
// or 1 where there is none (a deployment from before partitions).
func Layout(ctx context.Context, js jetstream.JetStream) (int, error) {
	kv, err := js.KeyValue(ctx, subjects.Bucket)
	if err != nil {
		return 0, fmt.Errorf("store: bind bucket %s: %w", subjects.Bucket, err)
	}
	e, err := kv.Get(ctx, layoutKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: read the partition count: %w", err)
	}
	n, err := strconv.Atoi(string(e.Value()))
	if err != nil || n < 1 || n > subjects.MaxPartitions {
		return 0, fmt.Errorf("store: partition marker %s holds %q", layoutKey, e.Value())
	}
	return n, nil
}

// fixLayout writes the partition count n into the marker of kv (partition
// 0's bucket), or checks it against the marker there. existed: the bucket
// was there before this provisioning, so a missing marker means one
// partition.
func fixLayout(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, n int, existed bool) error {
	have, err := Layout(ctx, js)
	if err != nil {
		return err
	}
	if _, err := kv.Get(ctx, layoutKey); errors.Is(err, jetstream.ErrKeyNotFound) {
		if existed && n != 1 {
			// An empty bucket holds no state to look for elsewhere: one
			// created by a provisioning that was cut short before its
			// marker (a timeout while a cluster elects: the retry finds the
			// bucket), or by another broker starting at the same moment.
			status, err := kv.Status(ctx)
			if err != nil {
				return fmt.Errorf("store: read bucket %s: %w", subjects.Bucket, err)
			}
			if status.Values() > 0 {
				return fmt.Errorf("%w: bucket %s predates partitions (1 partition), asked for %d", ErrLayout, subjects.Bucket, n)
			}
		}
		_, err = kv.Create(ctx, layoutKey, []byte(strconv.Itoa(n)))
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("store: write the partition count: %w", err)
		}
		// Another broker wrote it first: compare with its count.
		if have, err = Layout(ctx, js); err != nil {
			return err
		}
	}
	if have != n {
		return fmt.Errorf("%w: provisioned with %d, asked for %d", ErrLayout, have, n)
	}
	return nil
}

// Provision creates or updates every partition's bucket, timer stream and
// durable consumers, after fixing (or checking) the partition count. It is
// idempotent and safe to run from every broker at start.
func Provision(ctx context.Context, nc *nats.Conn, cfg ProvisionConfig) error {
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 5 * time.Second
	}
	cfg.Partitions = max(cfg.Partitions, 1)
	if cfg.Partitions > subjects.MaxPartitions {
		return fmt.Errorf("store: %d partitions: at most %d", cfg.Partitions, subjects.MaxPartitions)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	kv, existed, err := provisionBucket(ctx, js, 0, cfg)
	if err != nil {
		return err
	}
	if err := fixLayout(ctx, js, kv, cfg.Partitions, existed); err != nil {
		return err
	}
	for p := range subjects.Partition(cfg.Partitions) {
		if p > 0 {
			if _, _, err := provisionBucket(ctx, js, p, cfg); err != nil {
				return err
			}
		}
		if err := provisionTimers(ctx, js, p, cfg); err != nil {
			return err
		}
	}
	return nil
}

// provisionBucket creates partition p's bucket if it is missing (existed:
// it was there), else applies the size limits to it.
func provisionBucket(ctx context.Context, js jetstream.JetStream, p subjects.Partition, cfg ProvisionConfig) (kv jetstream.KeyValue, existed bool, err error) {
	// Create the bucket only if it is missing: "create or update" would
	// rewrite the stream config from the KV defaults on every broker start,
	// under live traffic, undoing whatever an operator tuned on the stream.
	kv, err = js.KeyValue(ctx, p.Bucket())
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:         p.Bucket(),
			Description:    "Ringer invitations, lines and sessions",
			History:        1,
			Replicas:       cfg.Replicas,
			Storage:        jetstream.FileStorage,
			LimitMarkerTTL: time.Minute, // sessions expire with a marker the presence consumer sees
			MaxBytes:       maxBytes(cfg.partitionBytes()),
			MaxValueSize:   MaxValueSize,
		})
		if errors.Is(err, jetstream.ErrBucketExists) { // another broker, just now
			kv, err = js.KeyValue(ctx, p.Bucket())
		}
		if err != nil {
			return nil, false, fmt.Errorf("store: provision bucket %s: %w", p.Bucket(), err)
		}
		return kv, false, tuneBucket(ctx, js, p, cfg.partitionBytes())
	}
	if err != nil {
		return nil, false, fmt.Errorf("store: bind bucket %s: %w", p.Bucket(), err)
	}
	return kv, true, tuneBucket(ctx, js, p, cfg.partitionBytes())
}

// provisionTimers creates or updates partition p's timer stream and its
// durable consumers and those of its bucket.
func provisionTimers(ctx context.Context, js jetstream.JetStream, p subjects.Partition, cfg ProvisionConfig) error {
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              p.TimerStream(),
		Description:       "Ringer durable timers (ADR-51 schedules and what they fire)",
		Subjects:          []string{p.TimerSubjects()},
		Retention:         jetstream.WorkQueuePolicy, // a fired timer is gone once handled
		Storage:           jetstream.FileStorage,
		Replicas:          cfg.Replicas,
		AllowMsgSchedules: true,
		AllowMsgTTL:       true,
		AllowDirect:       true, // TimerArmed asks any replica
	}); err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.Code == 400 {
			// Refused, not unanswered: most likely a server without message
			// schedules (AllowMsgSchedules arrived in 2.12).
			return fmt.Errorf("store: provision timers (nats-server >= 2.12 required for message schedules): %w", err)
		}
		return fmt.Errorf("store: provision timers: %w", err)
	}
	timerAckWait := TimerAckWait(cfg.AckWait) // timers keep their ≤ 1 s promise across a kill -9
	type consumer struct {
		stream, name, filter string
		policy               jetstream.DeliverPolicy
		ackWait              time.Duration
	}
	consumers := []consumer{
		// New changes only: a broker starting on an old bucket must not replay
		// history; what a dead broker left unacked is redelivered anyway.
		{p.BucketStream(), ConsumerPresence, p.SessionChanges(), jetstream.DeliverNewPolicy, cfg.AckWait},
		{p.TimerStream(), ConsumerTimers, p.TimerFires(), jetstream.DeliverAllPolicy, timerAckWait},
		{p.TimerStream(), ConsumerTimerBatches, p.TimerBatchFires(), jetstream.DeliverAllPolicy, timerAckWait},
	}
	if cfg.Projector {
		consumers = append(consumers, consumer{p.BucketStream(), ConsumerProjector, p.InvitationChanges(), jetstream.DeliverNewPolicy, cfg.AckWait})
	}
	for _, c := range consumers {
		_, err := js.CreateOrUpdateConsumer(ctx, c.stream, jetstream.ConsumerConfig{
			Durable:       c.name,
			FilterSubject: c.filter,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       c.ackWait,
			MaxDeliver:    -1,
			MaxAckPending: 20000,
			DeliverPolicy: c.policy,
			Replicas:      cfg.Replicas,
		})
		if err != nil && !errors.Is(err, jetstream.ErrConsumerExists) {
			return fmt.Errorf("store: provision consumer %s: %w", c.name, err)
		}
	}
	return nil
}

// MaxValueSize bounds one record in the bucket: an invitation at its field
// limits is under 18 KiB, a line under 2 KiB at the default quotas.
const MaxValueSize = 64 << 10

// maxBytes is JetStream's spelling of a size limit (-1: none).
func maxBytes(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// tuneBucket sets what the KV API does not on partition p's bucket: the
// size limits (an operator may change --store-max-bytes) and atomic batches
// allowed (CommitBatch), leaving the rest of its configuration as it is.
func tuneBucket(ctx context.Context, js jetstream.JetStream, p subjects.Partition, limit int64) error {
	st, err := js.Stream(ctx, p.BucketStream())
	if err != nil {
		return fmt.Errorf("store: bind stream %s: %w", p.BucketStream(), err)
	}
	cfg := st.CachedInfo().Config
	if cfg.MaxBytes == maxBytes(limit) && cfg.MaxMsgSize == MaxValueSize && cfg.AllowAtomicPublish {
		return nil
	}
	cfg.MaxBytes, cfg.MaxMsgSize, cfg.AllowAtomicPublish = maxBytes(limit), MaxValueSize, true
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("store: tune bucket %s (%d bytes, atomic batches): %w", p.Bucket(), limit, err)
	}
	return nil
}

// Stats counts the JetStream round trips a store made.
type Stats struct {
	reads, writes, timers, skipped atomic.Uint64
}

// StatsSnapshot is a point-in-time copy of Stats.
type StatsSnapshot struct {
	Reads  uint64 // direct gets and key listings
	Writes uint64 // messages written to the bucket, each its own round trip
	Timers uint64 // timer schedules published
	// Skipped: timers handed to a TimerBatcher and not stored, because
	// their invitation needed them no more by the flush (no round trip).
	Skipped uint64
}

func (s *Stats) snapshot() StatsSnapshot {
	return StatsSnapshot{Reads: s.reads.Load(), Writes: s.writes.Load(), Timers: s.timers.Load(), Skipped: s.skipped.Load()}
}

// Sub returns a - b, for measuring one operation.
func (a StatsSnapshot) Sub(b StatsSnapshot) StatsSnapshot {
	return StatsSnapshot{Reads: a.Reads - b.Reads, Writes: a.Writes - b.Writes, Timers: a.Timers - b.Timers, Skipped: a.Skipped - b.Skipped}
}

// Add returns a + b (the round trips of several stores).
func (a StatsSnapshot) Add(b StatsSnapshot) StatsSnapshot {
	return StatsSnapshot{Reads: a.Reads + b.Reads, Writes: a.Writes + b.Writes, Timers: a.Timers + b.Timers, Skipped: a.Skipped + b.Skipped}
}

// TimerAckWait is the ack wait of the timer consumers provisioned with
// ack wait ackWait: at most a second, so that a fired timer held by a
// broker that died is redelivered within the timers' one-second promise.
func TimerAckWait(ackWait time.Duration) time.Duration { return min(ackWait, time.Second) }
