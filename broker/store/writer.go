package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/subjects"
)

// HeaderWriter names, on every invitation revision a tracked store writes
// (TrackWrites), the broker instance that wrote it: the instance that must
// project it, or whose peers must once it is gone.
const HeaderWriter = "Ringer-Writer"

// A WriteTracker hears of every invitation write of a store (TrackWrites):
// Begin in the invitation's partition before the publish, then Done with
// its outcome.
type WriteTracker interface {
	Begin(part int) WriteDone
}

// WriteDone is the outcome of one tracked invitation write: Stored with the
// revision written, Refused when JetStream certainly did not store it (a
// full store, an encoding error, never sent), or Unknown when it may have
// (no answer in time, the connection lost, or a compare-and-set conflict:
// see settleWrite): resolve then tells whether and as which revision it was
// stored.
type WriteDone interface {
	Stored(r lifecycle.Record, rev uint64)
	Refused()
	Unknown(r lifecycle.Record, resolve Resolver)
}

// Resolver looks up whether a write whose outcome is unknown (its answer
// lost, or a conflict: settleWrite) was stored: its revision if the key's
// newest revision is that write, landed false if another write replaced the
// revision it expected (or the key is gone), and ErrUndecided while the key
// is still at that revision (ask again later).
type Resolver func(ctx context.Context) (rev uint64, landed bool, err error)

// ErrUndecided: a write whose answer was lost may still be stored. Its key
// still holds the revision the write expected, and a publish that timed out
// can be a Raft proposal that the stream commits seconds later (a leader
// without quorum, an election); "not stored" is certain only once another
// revision replaced the expected one, since the write's compare-and-set can
// then never succeed.
var ErrUndecided = errors.New("store: a write whose answer was lost may still be stored")

// TrackWrites makes every later invitation write carry HeaderWriter =
// instance and report to t. Call it before the store is used.
func (s *Store) TrackWrites(instance string, t WriteTracker) {
	s.writer, s.tracker = instance, t
}

// trackWrite begins a tracked write of key's record (nil: untracked).
func (s *Store) trackWrite(key string) WriteDone {
	if s.tracker == nil {
		return nil
	}
	return s.tracker.Begin(int(subjects.PartitionOf(key, len(s.parts))))
}

// settleWrite tells done (if any) the outcome of a write of r under key
// over revision expect: rev on success, else err, with data (a copy of what
// was sent) for the resolver when the outcome is unknown.
func (s *Store) settleWrite(done WriteDone, key string, expect uint64, r lifecycle.Record, data []byte, rev uint64, err error) {
	switch {
	case done == nil:
	case err == nil:
		r.Revision = rev
		done.Stored(r, rev)
	case errors.Is(err, ErrFull), errors.Is(err, nats.ErrReconnectBufExceeded), data == nil:
		// (ErrReconnectBufExceeded: a connection without a reconnect
		// buffer, as brokerd's, never sent it.)
		done.Refused()
	default:
		// A compare-and-set conflict is no proof either: while a network
		// partition heals, a deposed leader that has not stepped down yet
		// can refuse the write against its stale state while its successor
		// stores it, and the first answer is the one heard. Harsh chaos
		// runs lost the projections (export, history, events) of revisions
		// stored so: a conflict answered, and the writer's fresh read then
		// found its own write already there. The read settles it (one
		// leader read per conflict, off the command's path).
		done.Unknown(r, func(ctx context.Context) (uint64, bool, error) {
			got, rev, err := s.getFrom(ctx, true, key)
			switch {
			case errors.Is(err, ErrNotFound) && expect == 0:
				return 0, false, ErrUndecided // a create not (yet) stored
			case errors.Is(err, ErrNotFound):
				return 0, false, nil // the key is gone: the write can no longer land
			case err != nil:
				return 0, false, err
			case bytes.Equal(got, data):
				return rev, true, nil
			case rev == expect:
				return 0, false, ErrUndecided
			}
			return rev, false, nil
		})
	}
}

// Replay calls f, in stream order, for every invitation revision still in
// partition part's bucket after sequence from (up to the bucket's last
// sequence when it starts) that instance wrote (HeaderWriter): what a
// broker that died may have committed without projecting. A revision
// superseded since is no longer in the bucket (it keeps one per key); its
// successor's writer projects it.
//
// It reads through an ordered consumer, which JetStream may place on any
// replica of the bucket, including one still catching up after a
// partition or a restart: such a consumer sees only part of the stream and
// would end the replay early, its missing revisions never projected
// (chaos runs: timeouts committed just before a kill -9, never exported).
// So the consumer is used only on the stream leader or a replica that is
// current, both when it starts and when it ends; otherwise the replay
// fails, to be tried again.
func (s *Store) Replay(ctx context.Context, part int, from uint64, instance string, f func(r lifecycle.Record) error) error {
	pt := s.parts[part]
	last, err := s.LastSequence(ctx, part)
	if err != nil {
		return fmt.Errorf("store: replay: %w", err)
	}
	if last <= from {
		return nil
	}
	var cons jetstream.Consumer
	for try := 0; ; try++ {
		cons, err = s.js.OrderedConsumer(ctx, pt.p.BucketStream(), jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{pt.p.InvitationChanges()},
			DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:    from + 1,
		})
		if err != nil {
			return fmt.Errorf("store: replay: %w", err)
		}
		if err = s.upToDate(ctx, pt.p.BucketStream(), cons.CachedInfo()); err == nil {
			break
		}
		if try == replayPlacements {
			return fmt.Errorf("store: replay: %w", err)
		}
	}
	pending := uint64(0)
	if info := cons.CachedInfo(); info != nil {
		pending = info.NumPending
	}
	for done := pending == 0; !done; {
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			return fmt.Errorf("store: replay: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("store: replay: %w", err)
			}
			if meta.Sequence.Stream > last {
				done = true
				break
			}
			if m.Headers().Get(HeaderWriter) == instance && m.Headers().Get("KV-Operation") == "" && len(m.Data()) > 0 {
				var r lifecycle.Record
				if err := msgpack.Unmarshal(m.Data(), &r); err != nil {
					return fmt.Errorf("store: replay: decode %s: %w", m.Subject(), err)
				}
				r.Revision = meta.Sequence.Stream
				if err := f(r); err != nil {
					return err
				}
			}
			if pending = meta.NumPending; pending == 0 || meta.Sequence.Stream == last {
				done = true
				break
			}
		}
		if err := batch.Error(); err != nil && !done {
			return fmt.Errorf("store: replay: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("store: replay: partition %d: the consumer stopped with %d revisions pending", part, pending)
		}
	}
	// The consumer may have been recreated on the way (an ordered
	// consumer's reset): where it ended must have been current too.
	if err := s.upToDate(ctx, pt.p.BucketStream(), cons.CachedInfo()); err != nil {
		return fmt.Errorf("store: replay: %w", err)
	}
	return nil
}

// replayPlacements bounds how many times Replay creates its consumer again
// to have it placed on an up-to-date replica.
const replayPlacements = 4

// errLagging: a consumer placed on a replica that is catching up.
var errLagging = errors.New("the consumer is on a replica still catching up")

// upToDate reports (nil) whether the consumer ci describes runs on stream's
// leader or on a replica the leader counts as current with no lag.
func (s *Store) upToDate(ctx context.Context, stream string, ci *jetstream.ConsumerInfo) error {
	if ci == nil || ci.Cluster == nil || ci.Cluster.Leader == "" {
		return nil // not clustered: one server
	}
	st, err := s.js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	si := st.CachedInfo()
	if si.Cluster == nil || si.Cluster.Leader == ci.Cluster.Leader {
		return nil
	}
	for _, r := range si.Cluster.Replicas {
		if r.Name == ci.Cluster.Leader && r.Current && r.Lag == 0 {
			return nil
		}
	}
	return fmt.Errorf("%w (%s; stream leader %s)", errLagging, ci.Cluster.Leader, si.Cluster.Leader)
}

// LastSequence is the last sequence of partition part's bucket.
func (s *Store) LastSequence(ctx context.Context, part int) (uint64, error) {
	info, err := s.parts[part].bucket.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("store: bucket info: %w", err)
	}
	return info.State.LastSeq, nil
}
