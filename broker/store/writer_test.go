package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/subjects"
)

// outcomes records what a WriteTracker hears.
type outcomes struct {
	parts    []int
	stored   []uint64
	refused  int
	resolver Resolver
}

func (o *outcomes) Begin(part int) WriteDone { o.parts = append(o.parts, part); return o }

func (o *outcomes) Stored(r lifecycle.Record, rev uint64) {
	if r.Revision != rev {
		panic("stored record without its revision")
	}
	o.stored = append(o.stored, rev)
}
func (o *outcomes) Refused()                               { o.refused++ }
func (o *outcomes) Unknown(_ lifecycle.Record, r Resolver) { o.resolver = r }

// A tracked store tags every invitation revision with its writer and tells
// the tracker each write's outcome: stored with its revision; a write whose
// answer was lost, or was a compare-and-set conflict (a deposed leader may
// answer one for a write its successor stored), is resolved by a read —
// landed while the key's newest revision is that write, not once another
// write replaced the revision it expected, undecided while the key still
// holds that revision (a create: while the key has none), since the write
// may be stored later; a write never sent (no reconnect buffer) is refused.
func TestTrackedWrites(t *testing.T) {
	ctx, s := openR1(t)
	var o outcomes
	s.TrackWrites("w1", &o)
	rec := lifecycle.New("tracked", "alice", "phone", "bob", "", "", lifecycle.Timeouts{Offline: time.Minute, Expire: time.Minute, Accept: time.Minute}, time.Now())
	rev, err := s.Commit(ctx, PutInvitation(rec, 0))
	if err != nil {
		t.Fatal(err)
	}
	if len(o.stored) != 1 || o.stored[0] != rev || len(o.parts) != 1 || o.parts[0] != 0 {
		t.Fatalf("after a stored write the tracker heard %+v, want stored %d in partition 0", o, rev)
	}
	m, err := s.parts[0].bucket.GetLastMsgForSubject(ctx, subjects.KVSubject(subjects.InvitationKey(rec.ID)))
	if err != nil || m.Header.Get(HeaderWriter) != "w1" {
		t.Fatalf("stored revision's writer %q (%v), want w1", m.Header.Get(HeaderWriter), err)
	}
	other := rec
	other.CallerDevice = "tablet"
	if _, err := s.Commit(ctx, PutInvitation(other, 0)); !errors.Is(err, ErrConflict) || o.refused != 0 || o.resolver == nil {
		t.Fatalf("a second create: %v, refused %d, resolver %v; want ErrConflict, left to resolve", err, o.refused, o.resolver != nil)
	}
	if _, landed, err := o.resolver(ctx); err != nil || landed {
		t.Fatalf("a create that conflicted with another record: landed=%v (%v), want not stored", landed, err)
	}
	if _, err := s.Commit(ctx, PutLine("alice", Line{Manual: true}, 0)); err != nil || len(o.parts) != 2 {
		t.Fatalf("a line write is not tracked: %v, %d begun", err, len(o.parts))
	}

	sent, err := msgpack.Marshal(&rec)
	if err != nil {
		t.Fatal(err)
	}
	lost := errors.New("nats: timeout")
	resolve := func(key string, expect uint64, data []byte) (uint64, bool, error) {
		t.Helper()
		o.resolver = nil
		s.settleWrite(&o, key, expect, rec, data, 0, lost)
		if o.resolver == nil {
			t.Fatalf("an unanswered write of %s was not left to resolve", key)
		}
		return o.resolver(ctx)
	}
	key := subjects.InvitationKey(rec.ID)
	stored, err := s.parts[0].bucket.GetLastMsgForSubject(ctx, subjects.KVSubject(key))
	if err != nil {
		t.Fatal(err)
	}
	if got, landed, err := resolve(key, 0, bytes.Clone(stored.Data)); err != nil || !landed || got != rev {
		t.Fatalf("the newest revision resolved as landed=%v at %d (%v), want landed at %d", landed, got, err, rev)
	}
	// A conflict answered for a write that was stored (a deposed leader
	// refused it, its successor stored it): the read finds it.
	o.resolver = nil
	s.settleWrite(&o, key, 0, rec, bytes.Clone(stored.Data), 0, fmt.Errorf("store: publish %s: %w", key, ErrConflict))
	if o.resolver == nil {
		t.Fatal("a write answered by a conflict was not left to resolve")
	}
	if got, landed, err := o.resolver(ctx); err != nil || !landed || got != rev {
		t.Fatalf("a conflict-answered write that is the newest revision: landed=%v at %d (%v), want landed at %d", landed, got, err, rev)
	}
	if _, landed, err := resolve(key, rev-1, sent[:len(sent)-1]); err != nil || landed {
		t.Fatalf("other bytes than the newest revision's, over a revision replaced since: landed=%v (%v), want not stored", landed, err)
	}
	if _, _, err := resolve(key, rev, sent[:len(sent)-1]); !errors.Is(err, ErrUndecided) {
		t.Fatalf("a write over the key's newest revision: %v, want ErrUndecided", err)
	}
	if _, _, err := resolve(subjects.InvitationKey("never"), 0, sent); !errors.Is(err, ErrUndecided) {
		t.Fatalf("a create of a key never written: %v, want ErrUndecided", err)
	}
	if _, landed, err := resolve(subjects.InvitationKey("never"), rev, sent); err != nil || landed {
		t.Fatalf("a write over a revision of a key now gone: landed=%v (%v), want not stored", landed, err)
	}
	refused := o.refused
	o.resolver = nil
	s.settleWrite(&o, key, rev, rec, sent, 0, fmt.Errorf("store: publish %s: %w", key, nats.ErrReconnectBufExceeded))
	if o.refused != refused+1 || o.resolver != nil {
		t.Fatal("a write the connection never sent (no reconnect buffer) was not refused")
	}
}

// A replay reads through a consumer that JetStream may place on any replica
// of the bucket: it is trusted on the stream leader, or on a replica the
// leader counts as current, never on one that is down or catching up (it
// would end the replay before revisions it has not received). With every
// replica current, Replay finds what the instance wrote.
func TestReplayOnlyTrustsAnUpToDateReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := natstest.RunCluster(t, 3)
	nc := natstest.Connect(t, c.URLs())
	natstest.Attempt(t, time.Minute, 10*time.Second, func(ctx context.Context) error {
		return Provision(ctx, nc, ProvisionConfig{Replicas: 3})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s, err := Open(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	var o outcomes
	s.TrackWrites("w1", &o)
	stream := s.parts[0].p.BucketStream()
	cluster := func() *jetstream.ClusterInfo {
		t.Helper()
		st, err := s.js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Cluster
	}
	on := func(server string) *jetstream.ConsumerInfo {
		return &jetstream.ConsumerInfo{Cluster: &jetstream.ClusterInfo{Leader: server}}
	}
	var leader string
	natstest.Eventually(t, time.Minute, func() error {
		ci := cluster()
		if ci == nil || ci.Leader == "" || len(ci.Replicas) != 2 {
			return fmt.Errorf("%s not ready: %+v", stream, ci)
		}
		for _, r := range ci.Replicas {
			if !r.Current {
				return fmt.Errorf("%s not current", r.Name)
			}
		}
		leader = ci.Leader
		return nil
	})
	rec := lifecycle.New("replayed", "alice", "phone", "bob", "", "", lifecycle.Timeouts{Offline: time.Minute, Expire: time.Minute, Accept: time.Minute}, time.Now())
	natstest.Attempt(t, time.Minute, 5*time.Second, func(ctx context.Context) error {
		_, err := s.Commit(ctx, PutInvitation(rec, 0))
		return err
	})
	var found []string
	natstest.Attempt(t, time.Minute, 10*time.Second, func(ctx context.Context) error {
		found = nil
		return s.Replay(ctx, 0, 0, "w1", func(r lifecycle.Record) error { found = append(found, r.ID); return nil })
	})
	if len(found) != 1 || found[0] != rec.ID {
		t.Fatalf("replay found %v, want [%s]", found, rec.ID)
	}

	var follower string
	for _, r := range cluster().Replicas {
		follower = r.Name
	}
	if err := s.upToDate(ctx, stream, on(leader)); err != nil {
		t.Fatalf("a consumer on the stream leader: %v", err)
	}
	if err := s.upToDate(ctx, stream, on(follower)); err != nil {
		t.Fatalf("a consumer on a current replica: %v", err)
	}
	for i, srv := range c.Servers {
		if srv.Name() == follower {
			c.Stop(i)
		}
	}
	natstest.Eventually(t, time.Minute, func() error {
		// Each look its own time: the stopped server may have led the
		// JetStream meta group, whose election holds stream info up (a
		// look with the test's context outlived it on a loaded machine).
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.upToDate(ctx, stream, on(follower)); !errors.Is(err, errLagging) {
			return fmt.Errorf("a consumer on a replica that is down: %v, want errLagging", err)
		}
		return nil
	})
}
