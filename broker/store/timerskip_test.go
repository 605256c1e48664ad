package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// A batched timer whose invitation needs it no more when its batch is
// flushed — the invitation ended, or its 1:1 call started with no maximum
// duration — is not stored, and its Arm reports success; every other
// timer is stored, including one of an invitation the store knows nothing
// of (or every timer, without a record cache).
func TestTimerBatcherSkipsTimersNoLongerNeeded(t *testing.T) {
	ctx, st := openPartitions(t, 1, store.CacheSize(100)) // the cache: what the batcher consults
	tb := st.NewTimerBatcher(100 * time.Millisecond)
	defer tb.Close()

	slot := store.TimerSlot.Milliseconds()
	at := (time.Now().Add(time.Hour).UnixMilli()/slot + 1) * slot // one slot, an hour away
	record := func(id string, state protocol.State, call protocol.CallState, deadline int64) lifecycle.Record {
		r := lifecycle.Record{Invitation: protocol.Invitation{ID: id, Caller: "a", Callee: "b",
			State: state, CallState: call, Deadline: deadline}, TimerAt: at}
		r.Revision = 7
		return r
	}
	// What the store has seen of each invitation by the flush (its cache).
	seen := []lifecycle.Record{
		record("ended", protocol.StateCanceled, "", 0),
		record("answered", protocol.StateAccepted, protocol.CallActive, 0),
		record("hungup", protocol.StateAccepted, protocol.CallEnded, 0),
		record("capped", protocol.StateAccepted, protocol.CallActive, at), // a maximum duration: still timed
		record("ringing", protocol.StateReceived, "", at),
		{Invitation: protocol.Invitation{ID: "group", Caller: "a", State: protocol.StateSent, Mode: protocol.ModeFirst,
			Legs: []protocol.Leg{{User: "b", State: protocol.StateAccepted}}}}, // a group's legs may ring again
	}
	for _, r := range seen {
		if r.Revision == 0 {
			r.Revision = 7
		}
		st.Observe(r)
	}
	ids := []string{"ended", "answered", "hungup", "capped", "ringing", "group", "unseen"}
	before := st.Stats()
	done := make(chan error, len(ids))
	for _, id := range ids {
		tb.Arm(id, at, func(err error) { done <- err })
	}
	for range ids {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	d := st.Stats().Sub(before)
	if d.Timers != 1 || d.Skipped != 3 {
		t.Errorf("%d schedules, %d timers skipped; want 1 schedule (capped, ringing, group, unseen) and 3 skipped (ended, answered, hungup)", d.Timers, d.Skipped)
	}
	var stored []string
	for _, e := range firstBatch(ctx, t, st) {
		stored = append(stored, e.ID)
	}
	slices.Sort(stored)
	if want := []string{"capped", "group", "ringing", "unseen"}; !slices.Equal(stored, want) {
		t.Errorf("the schedule holds %v, want %v", stored, want)
	}
}

// firstBatch returns the entries of the first schedule in partition 0's
// timer stream.
func firstBatch(ctx context.Context, t *testing.T, st *store.Store) []store.TimerEntry {
	t.Helper()
	s, err := st.JetStream().Stream(ctx, subjects.Partition(0).TimerStream())
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(ctx, s.CachedInfo().State.FirstSeq)
	if err != nil {
		t.Fatal(err)
	}
	es, err := store.DecodeTimerBatch(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// A timer handed over again while it is held is stored once, and both
// are told: the callee's ack of a ringing invitation relies on the timer
// its send asked for, which the batcher still holds, and asks again (the
// broker's timerLost). Stored twice, it would fire twice. A timer of the
// same invitation at another deadline is another timer.
func TestTimerBatcherStoresATimerHeldTwiceOnce(t *testing.T) {
	ctx, st := openPartitions(t, 1)
	tb := st.NewTimerBatcher(time.Hour) // nothing is flushed before Close
	slot := store.TimerSlot.Milliseconds()
	at := (time.Now().Add(time.Hour).UnixMilli()/slot)*slot + 1 // at and at+1 round to one slot
	arms := []store.TimerEntry{{ID: "ringing", At: at}, {ID: "other", At: at}, {ID: "ringing", At: at}, {ID: "ringing", At: at + 1}}
	before := st.Stats()
	armAndClose(t, tb, arms...)
	if d := st.Stats().Sub(before); d.Timers != 1 {
		t.Fatalf("%d schedules, want 1", d.Timers)
	}
	if got, want := firstBatch(ctx, t, st), []store.TimerEntry{arms[0], arms[1], arms[3]}; !slices.Equal(got, want) {
		t.Errorf("the schedule holds %v, want %v", got, want)
	}
}

// Closing the batcher stores the timers it holds, however recently they
// were handed over, and reports to each.
func TestTimerBatcherCloseStoresWhatItHolds(t *testing.T) {
	_, st := openPartitions(t, 1)
	tb := st.NewTimerBatcher(time.Second) // a timer waits half a second or more
	before := st.Stats()
	armAndClose(t, tb, store.TimerEntry{ID: "young", At: time.Now().Add(time.Hour).UnixMilli()})
	if d := st.Stats().Sub(before); d.Timers != 1 {
		t.Errorf("%d schedules stored at Close, want 1", d.Timers)
	}
}

// armAndClose hands arms to tb, closes it, and fails t unless every Arm
// was told, by the time Close returned, that its timer was stored.
func armAndClose(t *testing.T, tb *store.TimerBatcher, arms ...store.TimerEntry) {
	t.Helper()
	done := make(chan error, len(arms))
	for _, e := range arms {
		tb.Arm(e.ID, e.At, func(err error) { done <- err })
	}
	tb.Close()
	for range arms {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatal("Close returned without storing a timer it held, or reporting on it")
		}
	}
}
