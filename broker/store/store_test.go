package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/subjects"
)

// On a replicated bucket GetInvitation's "not found" is the leader's: a
// follower that is catching up can lack a record that exists, and a broker
// that passed its "not found" on made clients forget live invitations. A
// record found costs one direct get; a missing one a second read, through
// the leader. On one server the direct get is already authoritative.
func TestNotFoundIsConfirmedWithTheLeader(t *testing.T) {
	for _, tc := range []struct {
		name               string
		replicas           int
		foundReads, absent uint64
		// Holding's reads for a claim of a missing invitation made within
		// the grace (it holds: being written) and past it (abandoned)
		claimWithin, claimPast uint64
	}{
		{"R1", 1, 1, 1, 1, 1},
		{"R3", 3, 1, 2, 1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, st := openStore(t, tc.replicas)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			rec := lifecycle.New("present1", "alice", "phone", "bob", "", "", lifecycle.Timeouts{Offline: time.Minute, Expire: time.Minute, Accept: time.Minute}, time.Now())
			if _, err := st.Commit(ctx, store.PutInvitation(rec, 0)); err != nil {
				t.Fatal(err)
			}

			before := st.Stats()
			if _, _, err := st.GetInvitation(ctx, "present1"); err != nil {
				t.Fatal(err)
			}
			if got := st.Stats().Sub(before).Reads; got != tc.foundReads {
				t.Errorf("reads to find a record: %d, want %d", got, tc.foundReads)
			}
			before = st.Stats()
			if _, _, err := st.GetInvitation(ctx, "absent1"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("get of a missing record: %v, want ErrNotFound", err)
			}
			if got := st.Stats().Sub(before).Reads; got != tc.absent {
				t.Errorf("reads to find no record: %d, want %d", got, tc.absent)
			}

			// A claim whose invitation is missing needs the leader's word
			// only once it is past the grace.
			const grace = time.Minute
			now := time.Now()
			for _, c := range []struct {
				what  string
				at    time.Time
				holds bool
				reads uint64
			}{
				{"within the grace", now, true, tc.claimWithin},
				{"past the grace", now.Add(-2 * grace), false, tc.claimPast},
			} {
				before = st.Stats()
				held, err := st.Holding(ctx, "bob", store.Line{Claims: []store.Claim{{ID: "absent1", At: c.at.UnixMilli()}}}, now, store.LineRules{Grace: grace}, false)
				if err != nil {
					t.Fatal(err)
				}
				if got := st.Stats().Sub(before).Reads; (len(held) == 1) != c.holds || got != c.reads {
					t.Errorf("claim %s: held %v after %d reads, want held=%v after %d", c.what, held, got, c.holds, c.reads)
				}
			}
		})
	}
}

// TimerArmed finds a timer armed by another store (a direct get of its
// schedule, on any replica) and does not find one never armed, or one
// armed at another deadline; the store that armed it knows without a read.
func TestTimerArmed(t *testing.T) {
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			nc, _ := openStore(t, l.replicas)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			other, err := store.Open(ctx, nc)
			if err != nil {
				t.Fatal(err)
			}
			cached, err := store.Open(ctx, nc, store.CacheSize(10))
			if err != nil {
				t.Fatal(err)
			}
			// Any replica answers (the stream allows direct gets).
			info, err := cached.JetStream().Stream(ctx, subjects.TimerStream)
			if err != nil || !info.CachedInfo().Config.AllowDirect {
				t.Fatalf("timer stream without direct gets: %v", err)
			}
			at := time.Now().Add(time.Hour).UnixMilli()
			if err := cached.ArmTimer(ctx, "armed", at); err != nil {
				t.Fatal(err)
			}
			reads := cached.Stats().Reads
			if ok, err := cached.TimerArmed(ctx, "armed", at); err != nil || !ok || cached.Stats().Reads != reads {
				t.Errorf("the arming store: armed %v, %v, %d reads", ok, err, cached.Stats().Reads-reads)
			}
			natstest.Eventually(t, 10*time.Second, func() error { // a follower may not have it yet
				if ok, err := other.TimerArmed(ctx, "armed", at); err != nil || !ok {
					return fmt.Errorf("another store: armed %v, %v", ok, err)
				}
				return nil
			})
			for _, c := range []struct {
				id string
				at int64
			}{{"armed", at + 1}, {"never", at}} {
				if ok, err := other.TimerArmed(ctx, c.id, c.at); err != nil || ok {
					t.Errorf("%s at %d: armed %v, %v; want not armed", c.id, c.at, ok, err)
				}
			}
		})
	}
}

// A record carries its chain of steps only from a store that keeps chains
// (brokers with --export, the chain's only reader); any other store writes
// it without, dropping a chain an earlier write left, which is what makes
// records about a third shorter.
func TestRecordsCarryAChainOnlyWhenKept(t *testing.T) {
	nc, plain := openStore(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	chained, err := store.Open(ctx, nc, store.KeepChains())
	if err != nil {
		t.Fatal(err)
	}
	write := func(st *store.Store, rec lifecycle.Record, expect uint64) (lifecycle.Record, uint64) {
		t.Helper()
		rev, err := st.Commit(ctx, store.PutInvitation(rec, expect))
		if err != nil {
			t.Fatal(err)
		}
		got, grev, err := st.GetInvitation(ctx, rec.ID)
		if err != nil || grev != rev {
			t.Fatalf("read back: revision %d (wrote %d), %v", grev, rev, err)
		}
		return got, rev
	}
	rec := lifecycle.New("chain1", "alice", "phone", "bob", "", "", lifecycle.Timeouts{Offline: time.Minute, Expire: time.Minute, Accept: time.Minute}, time.Now())

	got, rev := write(plain, rec, 0)
	if len(got.Chain) != 0 {
		t.Fatalf("written without KeepChains, the record carries %d steps", len(got.Chain))
	}
	got, rev = write(chained, got, rev)
	if len(got.Chain) != 1 {
		t.Fatalf("written with KeepChains: %d steps, want 1", len(got.Chain))
	}
	got, rev = write(chained, got, rev)
	if len(got.Chain) != 2 || got.Chain[0].Rev == 0 {
		t.Fatalf("written twice with KeepChains: chain %+v, want 2 steps, the first with its revision", got.Chain)
	}
	if got, _ = write(plain, got, rev); len(got.Chain) != 0 {
		t.Fatalf("written again without KeepChains, the record keeps %d steps", len(got.Chain))
	}
}
