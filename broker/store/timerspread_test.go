package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/subjects"
)

// Timers of invitations in different partitions armed within one window
// share one schedule per slot: the batch does not split by partition, so
// its cost does not grow with the partition count. Successive flushes take
// the partitions' timer streams in turn.
func TestTimerBatchesSpanPartitions(t *testing.T) {
	const parts = 4
	ctx, st := openPartitions(t, parts)
	tb := st.NewTimerBatcher(time.Second) // every Arm below lands in one window
	defer tb.Close()

	// An hour away, in one slot: nothing fires during the test.
	slot := store.TimerSlot.Milliseconds()
	at := (time.Now().Add(time.Hour).UnixMilli()/slot + 1) * slot
	arm := func(prefix string) {
		t.Helper()
		seen := map[subjects.Partition]bool{}
		done := make(chan error, 20)
		for i := range 20 {
			id := fmt.Sprintf("%s%d", prefix, i)
			seen[subjects.PartitionOf(subjects.InvitationKey(id), parts)] = true
			tb.Arm(id, at-int64(i), func(err error) { done <- err })
		}
		if len(seen) < 2 {
			t.Fatalf("the ids fall in %d partition(s): the test needs several", len(seen))
		}
		for range 20 {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
	}
	pending := func() []uint64 {
		t.Helper()
		var n []uint64
		for p := range subjects.Partition(parts) {
			s, err := st.JetStream().Stream(ctx, p.TimerStream())
			if err != nil {
				t.Fatal(err)
			}
			n = append(n, s.CachedInfo().State.Msgs)
		}
		return n
	}

	before := st.Stats()
	arm("a")
	if got := st.Stats().Sub(before).Timers; got != 1 {
		t.Errorf("20 timers of one slot in several partitions armed in %d schedules, want 1", got)
	}
	arm("b")
	if got := fmt.Sprint(pending()); got != "[1 1 0 0]" {
		t.Errorf("schedules per partition's timer stream after two flushes: %s, want [1 1 0 0]", got)
	}
}
