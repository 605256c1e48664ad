package store_test

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker/store"
)

// Sessions lists a user's live devices in one read, however many it has,
// leaving out logged-out and other users' sessions; on a replicated bucket
// an answer that cannot include a change the caller knows of is ErrStale.
func TestSessionsInOneRead(t *testing.T) {
	for _, tc := range layouts {
		t.Run(tc.name, func(t *testing.T) {
			_, st := openStore(t, tc.replicas)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if live, err := st.Sessions(ctx, "alice", 0); err != nil || len(live) != 0 {
				t.Fatalf("no sessions yet: %v, %v", live, err)
			}
			for _, d := range []string{"phone", "laptop", "tablet"} {
				if _, err := st.PutSession(ctx, "alice", d, time.Minute); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := st.PutSession(ctx, "alicea", "phone", time.Minute); err != nil {
				t.Fatal(err)
			}
			if err := st.DeleteSession(ctx, "alice", "tablet"); err != nil {
				t.Fatal(err)
			}
			stream, err := st.JetStream().Stream(ctx, "KV_RINGER")
			if err != nil {
				t.Fatal(err)
			}
			info, err := stream.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			last := info.State.LastSeq // the logout: a follower's answer must include it
			before := st.Stats()
			live, err := st.Sessions(ctx, "alice", last)
			slices.Sort(live)
			if err != nil || !slices.Equal(live, []string{"laptop", "phone"}) {
				t.Fatalf("alice's sessions: %v, %v; want laptop, phone", live, err)
			}
			if reads := st.Stats().Sub(before).Reads; tc.replicas == 1 && reads != 1 {
				t.Fatalf("%d reads, want 1", reads)
			}
			if tc.replicas > 1 {
				// A change no replica has yet.
				if _, err := st.Sessions(ctx, "alice", last+1000); !errors.Is(err, store.ErrStale) {
					t.Fatalf("a view that cannot include the change asked for: %v, want ErrStale", err)
				}
			}
		})
	}
}

// A session read allocates what its answer needs, not a subscription's
// default buffer: nats.go gives a synchronous subscription a 65 536-message
// channel (512 KiB), which DirectBatch once made for every read, most of
// the garbage a call made at R3 (docs/benchmarks.md). Measured here: ~20
// KiB per read with the in-process server's share, under the race detector.
func TestSessionReadsAllocateLittle(t *testing.T) {
	_, st := openStore(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := st.PutSession(ctx, "alice", "phone", time.Minute); err != nil {
		t.Fatal(err)
	}
	read := func() {
		if live, err := st.Sessions(ctx, "alice", 0); err != nil || len(live) != 1 {
			t.Fatalf("alice's sessions: %v, %v", live, err)
		}
	}
	read() // warm: subscriptions, pools
	const n = 50
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		read()
	}
	runtime.ReadMemStats(&after)
	perRead := (after.TotalAlloc - before.TotalAlloc) / n
	t.Logf("%d bytes allocated per session read (the process's, server included)", perRead)
	if perRead > 256<<10 {
		t.Fatalf("a session read allocated %d bytes, want well under nats.go's 512 KiB subscription buffer", perRead)
	}
}

// A session refreshed at the revision it was last written at is refreshed
// in one write; at any other revision — written again since, or ended by
// its delete marker — the refresh is a conflict and writes nothing, so it
// never brings back a session that ended.
func TestRefreshSession(t *testing.T) {
	_, st := openStore(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rev, err := st.PutSession(ctx, "alice", "phone", time.Minute)
	if err != nil || rev == 0 {
		t.Fatalf("put: revision %d, %v", rev, err)
	}
	before := st.Stats()
	next, err := st.RefreshSession(ctx, "alice", "phone", time.Minute, rev)
	if err != nil || next <= rev {
		t.Fatalf("refresh at %d: revision %d, %v", rev, next, err)
	}
	if d := st.Stats().Sub(before); d.Writes != 1 || d.Reads != 0 {
		t.Errorf("a refresh cost %d writes and %d reads, want 1 and 0", d.Writes, d.Reads)
	}
	for _, stale := range []uint64{0, rev} {
		if _, err := st.RefreshSession(ctx, "alice", "phone", time.Minute, stale); !errors.Is(err, store.ErrConflict) {
			t.Errorf("refresh at a stale revision %d: %v, want a conflict", stale, err)
		}
	}
	if err := st.DeleteSession(ctx, "alice", "phone"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.RefreshSession(ctx, "alice", "phone", time.Minute, next); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("refresh of a session logged out: %v, want a conflict", err)
	}
	if live, err := st.HasSessionFresh(ctx, "alice", "phone"); err != nil || live {
		t.Fatalf("after a refused refresh of a logged-out session: live %v, %v", live, err)
	}
}
