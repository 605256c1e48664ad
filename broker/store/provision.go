package store

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/subjects"
)

// Durable consumer names shared by every broker.
const (
	ConsumerProjector = "ringer-projector" // invitation changes → events, timers
	ConsumerTimers    = "ringer-timers"    // fired timers → timeouts
	ConsumerPresence  = "ringer-presence"  // session deletes/expiries → presence loss
)

// ProvisionConfig sizes what Provision creates.
type ProvisionConfig struct {
	Replicas int           // 1 for a single server, 3 in a cluster
	MaxAge   time.Duration // how long finished records stay readable; 0 = forever
	// MaxBytes caps the bucket (0 = unbounded). Past it JetStream refuses
	// writes (ErrFull) rather than discarding records.
	MaxBytes int64
	// AckWait bounds how long a crashed broker's in-flight work waits before
	// another broker redoes it.
	AckWait time.Duration
}

// Provision creates or updates the bucket, the timer stream and the durable
// consumers. It is idempotent and safe to run from every broker at start.
func Provision(ctx context.Context, nc *nats.Conn, cfg ProvisionConfig) error {
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 5 * time.Second
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	// Create the bucket only if it is missing: "create or update" would
	// rewrite the stream config from the KV defaults on every broker start,
	// under live traffic, undoing whatever an operator tuned on the stream.
	if _, err := js.KeyValue(ctx, subjects.Bucket); errors.Is(err, jetstream.ErrBucketNotFound) {
		_, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:         subjects.Bucket,
			Description:    "Ringer invitations, lines and sessions",
			History:        1,
			Replicas:       cfg.Replicas,
			Storage:        jetstream.FileStorage,
			LimitMarkerTTL: time.Minute, // sessions expire with a marker the presence consumer sees
			MaxBytes:       maxBytes(cfg.MaxBytes),
			MaxValueSize:   MaxValueSize,
		})
		if err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return fmt.Errorf("store: provision bucket: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("store: bind bucket: %w", err)
	} else if err := limitBucket(ctx, js, cfg.MaxBytes); err != nil {
		return err
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              subjects.TimerStream,
		Description:       "Ringer durable timers (ADR-51 schedules and what they fire)",
		Subjects:          []string{subjects.TimerSubjects()},
		Retention:         jetstream.WorkQueuePolicy, // a fired timer is gone once handled
		Storage:           jetstream.FileStorage,
		Replicas:          cfg.Replicas,
		AllowMsgSchedules: true,
		AllowMsgTTL:       true,
	}); err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.Code == 400 {
			// Refused, not unanswered: most likely a server without message
			// schedules (AllowMsgSchedules arrived in 2.12).
			return fmt.Errorf("store: provision timers (nats-server >= 2.12 required for message schedules): %w", err)
		}
		return fmt.Errorf("store: provision timers: %w", err)
	}
	// A fired timer held by a broker that died is redelivered after at most
	// a second, so timers keep their ≤ 1 s promise across a kill -9.
	timerAckWait := min(cfg.AckWait, time.Second)
	consumers := []struct {
		stream, name, filter string
		policy               jetstream.DeliverPolicy
		ackWait              time.Duration
	}{
		// New changes only: a broker starting on an old bucket must not replay
		// history; what a dead broker left unacked is redelivered anyway.
		{subjects.BucketStream, ConsumerProjector, subjects.InvitationChanges(), jetstream.DeliverNewPolicy, cfg.AckWait},
		{subjects.BucketStream, ConsumerPresence, subjects.SessionChanges(), jetstream.DeliverNewPolicy, cfg.AckWait},
		{subjects.TimerStream, ConsumerTimers, subjects.TimerFires(), jetstream.DeliverAllPolicy, timerAckWait},
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

// limitBucket applies the size limits to a bucket that exists already (an
// operator changed --store-max-bytes), leaving the rest of its
// configuration as it is.
func limitBucket(ctx context.Context, js jetstream.JetStream, limit int64) error {
	st, err := js.Stream(ctx, subjects.BucketStream)
	if err != nil {
		return fmt.Errorf("store: bind stream %s: %w", subjects.BucketStream, err)
	}
	cfg := st.CachedInfo().Config
	if cfg.MaxBytes == maxBytes(limit) && cfg.MaxMsgSize == MaxValueSize {
		return nil
	}
	cfg.MaxBytes, cfg.MaxMsgSize = maxBytes(limit), MaxValueSize
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("store: limit bucket to %d bytes: %w", limit, err)
	}
	return nil
}

// Stats counts the JetStream round trips a store made.
type Stats struct {
	reads, writes, timers atomic.Uint64
}

// StatsSnapshot is a point-in-time copy of Stats.
type StatsSnapshot struct {
	Reads  uint64 // direct gets and key listings
	Writes uint64 // messages written to the bucket, each its own round trip
	Timers uint64 // timer schedules published
}

func (s *Stats) snapshot() StatsSnapshot {
	return StatsSnapshot{Reads: s.reads.Load(), Writes: s.writes.Load(), Timers: s.timers.Load()}
}

// Sub returns a - b, for measuring one operation.
func (a StatsSnapshot) Sub(b StatsSnapshot) StatsSnapshot {
	return StatsSnapshot{Reads: a.Reads - b.Reads, Writes: a.Writes - b.Writes, Timers: a.Timers - b.Timers}
}

// Add returns a + b (the round trips of several stores).
func (a StatsSnapshot) Add(b StatsSnapshot) StatsSnapshot {
	return StatsSnapshot{Reads: a.Reads + b.Reads, Writes: a.Writes + b.Writes, Timers: a.Timers + b.Timers}
}
