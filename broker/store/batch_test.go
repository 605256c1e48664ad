package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/subjects"
)

// An atomic batch on a replicated bucket stores every write or none: a
// send's two claims and its record come back at the revisions CommitBatch
// returned, the record tracked like a Commit; a batch with one stale
// expected revision is a conflict that leaves every key as it was; keys in
// two partitions, or a store on one server, do not batch.
func TestCommitBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := natstest.RunCluster(t, 3)
	nc := natstest.Connect(t, c.URLs())
	natstest.Attempt(t, time.Minute, 10*time.Second, func(ctx context.Context) error {
		return Provision(ctx, nc, ProvisionConfig{Replicas: 3, Partitions: 2})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Open(ctx, nc, AtomicBatches(), CacheSize(16))
	if err != nil {
		t.Fatal(err)
	}
	var o outcomes
	s.TrackWrites("w1", &o)

	// Two users and an invitation in one partition, a third user elsewhere.
	var same [3]string
	var other string
	for i, n := 0, 0; n < 3 || other == ""; i++ {
		u := "u" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		switch p := subjects.PartitionOf(subjects.LineKey(u), 2); {
		case p == 0 && n < 3:
			same[n], n = u, n+1
		case p == 1:
			other = u
		}
	}
	id := s.NewIDFor(same[0])
	if !s.Batches(subjects.LineKey(same[1]), subjects.LineKey(same[0]), subjects.InvitationKey(id)) {
		t.Fatal("keys of one partition of a replicated bucket do not batch")
	}
	if s.Batches(subjects.LineKey(same[0]), subjects.LineKey(other)) {
		t.Fatal("keys of two partitions batch")
	}

	rec := lifecycle.New(id, same[0], "phone", same[1], "", "", lifecycle.Timeouts{Offline: time.Minute, Expire: time.Minute, Accept: time.Minute}, time.Now())
	claim := Claim{ID: id, At: time.Now().UnixMilli()}
	ws := []Write{
		PutLine(same[1], Line{Claims: []Claim{claim}}, 0),
		PutLine(same[0], Line{Claims: []Claim{claim}}, 0),
		PutInvitation(rec, 0),
	}
	revs, err := s.CommitBatch(ctx, ws)
	if err != nil {
		t.Fatal(err)
	}
	if revs[1] != revs[0]+1 || revs[2] != revs[1]+1 {
		t.Fatalf("revisions %v, want consecutive", revs)
	}
	for i, u := range []string{same[1], same[0]} {
		l, rev, err := s.GetLineFresh(ctx, u)
		if err != nil || rev != revs[i] || len(l.Claims) != 1 || l.Claims[0].ID != id {
			t.Fatalf("line of %s after the batch: %+v at %d (%v), want the claim at %d", u, l, rev, err, revs[i])
		}
	}
	got, rev, err := s.GetInvitationFresh(ctx, id)
	if err != nil || rev != revs[2] || got.ID != id {
		t.Fatalf("record after the batch: %s at %d (%v), want %s at %d", got.ID, rev, err, id, revs[2])
	}
	if len(o.stored) != 1 || o.stored[0] != revs[2] || len(o.parts) != 1 {
		t.Fatalf("the tracker heard %+v, want the record stored at %d", o, revs[2])
	}
	if cached, ok := s.cache.invitation(id); !ok || cached.Revision != revs[2] {
		t.Fatalf("cache holds the record at %d (%v), want %d", cached.Revision, ok, revs[2])
	}

	// Second batch: the caller's line expects a revision it no longer has.
	id2 := s.NewIDFor(same[2])
	rec2 := lifecycle.New(id2, same[2], "phone", same[0], "", "", rec.Timeouts, time.Now())
	claim2 := Claim{ID: id2, At: time.Now().UnixMilli()}
	ws2 := []Write{
		PutLine(same[0], Line{Claims: []Claim{claim, claim2}}, revs[1]-1), // stale
		PutLine(same[2], Line{Claims: []Claim{claim2}}, 0),
		PutInvitation(rec2, 0),
	}
	if _, err := s.CommitBatch(ctx, ws2); !errors.Is(err, ErrConflict) {
		t.Fatalf("a batch with a stale revision: %v, want ErrConflict", err)
	}
	if _, _, err := s.GetLineFresh(ctx, same[2]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a conflicted batch wrote another key's line: %v", err)
	}
	if _, _, err := s.GetInvitationFresh(ctx, id2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a conflicted batch wrote its record: %v", err)
	}
	if o.resolver == nil {
		t.Fatal("a conflicted batch's record was not left to resolve")
	}
	if _, landed, err := o.resolver(ctx); !errors.Is(err, ErrUndecided) || landed {
		t.Fatalf("a conflicted batch's record never written: landed=%v (%v), want undecided", landed, err)
	}
	ws2[0].ExpectRev = revs[1]
	if _, err := s.CommitBatch(ctx, ws2); err != nil {
		t.Fatalf("the same batch at the current revision: %v", err)
	}

	// A key of another partition makes no batch.
	ws3 := []Write{PutLine(other, Line{Manual: true}, 0), PutLine(same[1], Line{Manual: true}, revs[0])}
	if _, err := s.CommitBatch(ctx, ws3); err == nil {
		t.Fatal("a batch over two partitions was written")
	}

	// One server: never batches (JetStream stages an R1 batch on disk).
	_, r1 := openR1(t)
	r1.batches = true
	if r1.Batches(subjects.LineKey("a"), subjects.LineKey("b")) {
		t.Fatal("an unreplicated store batches")
	}
}
