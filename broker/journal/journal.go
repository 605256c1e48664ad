// Package journal keeps what outlives an invitation: each user's call
// history, appended by the projector when an invitation finishes, and the
// export of every transition of every invitation for app backends.
package journal

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/subjects"
)

// Config sizes the journal's streams.
type Config struct {
	Replicas int
	// HistorySize is how many entries a user's history keeps (the oldest
	// go first); HistoryRetention how long an entry stays.
	HistorySize      int
	HistoryRetention time.Duration
	// HistoryMaxBytes caps the history stream (0: unbounded); past it the
	// oldest entries of all users go first.
	HistoryMaxBytes int64
}

// Bounds of Config.HistorySize: one history read fetches at most this many
// entries, whatever the page size.
const (
	MinHistorySize = 1
	MaxHistorySize = 1000
)

// dedupeWindow is how long the history stream remembers an entry's id: a
// projector redelivery after a broker crash comes within the ack wait.
const dedupeWindow = 10 * time.Minute

// Provision creates or updates the history stream. Idempotent; every
// broker runs it at start.
func Provision(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              subjects.HistoryStream,
		Description:       "Ringer call history: finished invitations, one subject per user",
		Subjects:          []string{subjects.HistorySubjects()},
		MaxMsgsPerSubject: int64(cfg.HistorySize),
		MaxAge:            cfg.HistoryRetention,
		MaxBytes:          limit(cfg.HistoryMaxBytes),
		Discard:           jetstream.DiscardOld,
		Storage:           jetstream.FileStorage,
		Replicas:          cfg.Replicas,
		Duplicates:        dedupeWindow,
		AllowDirect:       true,
	}); err != nil {
		return fmt.Errorf("journal: provision %s: %w", subjects.HistoryStream, err)
	}
	return nil
}

// BindHistory binds the journal to the history stream (Provision must have
// created it). On a replicated stream every history read is then checked
// against the stream leader (complete); on a single replica the direct get
// is the leader's own answer.
func (j *Journal) BindHistory(ctx context.Context) error {
	leader, err := store.BindLeader(ctx, j.js, subjects.HistoryStream)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if leader.CachedInfo().Config.Replicas > 1 {
		j.historyLeader = leader
	}
	return nil
}

// limit is JetStream's spelling of a size limit (-1: none).
func limit(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// Journal appends to and reads the history stream.
type Journal struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	size int
	// export and exportLeader are the export stream (BindExport).
	export, exportLeader jetstream.Stream
	// historyLeader reads the history stream through its leader; nil on a
	// single replica, or before BindHistory.
	historyLeader jetstream.Stream
	// testHookAfterDirect, when set, runs between a history read's direct
	// get and its check with the leader (complete).
	testHookAfterDirect func()
}

// New returns a journal on nc whose streams were provisioned with a
// history of size entries per user.
func New(nc *nats.Conn, js jetstream.JetStream, size int) *Journal {
	return &Journal{nc: nc, js: js, size: size}
}
