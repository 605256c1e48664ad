package lifecycle_test

import (
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/protocol"
)

// Benchmarks of the pure state machine: one transition (Apply) per action,
// the five transitions of an accepted call, and the event projection.

var (
	bt0       = time.UnixMilli(1_760_000_000_000)
	btimeouts = lifecycle.Timeouts{Offline: 30 * time.Second, Expire: 60 * time.Second, Accept: 10 * time.Second}
)

func apply(b *testing.B, r lifecycle.Record, a lifecycle.Action, now time.Time) lifecycle.Record {
	next, changed, err := lifecycle.Apply(r, a, now)
	if err != nil || !changed {
		b.Fatalf("%s in %s: changed=%v err=%v", a.Kind, r.State, changed, err)
	}
	next.Revision = r.Revision + 1
	return next
}

func BenchmarkApply(b *testing.B) {
	sent := lifecycle.New("inv1", "alice", "a1", "bob", "hi", "ch", btimeouts, bt0)
	sent.Revision = 1
	received := apply(b, sent, lifecycle.Action{Kind: lifecycle.Ack, User: "bob", Device: "b1"}, bt0)
	accepting := apply(b, received, lifecycle.Action{Kind: lifecycle.Accept, User: "bob", Device: "b1", Response: "ok"}, bt0)
	accepted := apply(b, accepting, lifecycle.Action{Kind: lifecycle.AckAccept, User: "alice", Device: "a1"}, bt0)
	cases := []struct {
		name string
		r    lifecycle.Record
		a    lifecycle.Action
		now  time.Time
	}{
		{"ack", sent, lifecycle.Action{Kind: lifecycle.Ack, User: "bob", Device: "b1"}, bt0},
		{"accept", received, lifecycle.Action{Kind: lifecycle.Accept, User: "bob", Device: "b1", Response: "ok"}, bt0},
		{"refuse", received, lifecycle.Action{Kind: lifecycle.Refuse, User: "bob", Device: "b1", Response: "no"}, bt0},
		{"cancel", received, lifecycle.Action{Kind: lifecycle.Cancel, User: "alice", Device: "a1"}, bt0},
		{"ackaccept", accepting, lifecycle.Action{Kind: lifecycle.AckAccept, User: "alice", Device: "a1"}, bt0},
		{"hangup", accepted, lifecycle.Action{Kind: lifecycle.Hangup, User: "bob", Device: "b1"}, bt0},
		{"timeout", received, lifecycle.Action{Kind: lifecycle.Timeout}, bt0.Add(time.Hour)},
		{"presence-lost", received, lifecycle.Action{Kind: lifecycle.PresenceLost, User: "alice"}, bt0},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := lifecycle.Apply(c.r, c.a, c.now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAcceptedLifecycle is New, Ack, Accept, AckAccept and Hangup, and
// the events each committed revision projects.
func BenchmarkAcceptedLifecycle(b *testing.B) {
	b.ReportAllocs()
	events := 0
	for b.Loop() {
		r := lifecycle.New("inv1", "alice", "a1", "bob", "hi", "ch", btimeouts, bt0)
		events += len(lifecycle.Events(r))
		for _, a := range []lifecycle.Action{
			{Kind: lifecycle.Ack, User: "bob", Device: "b1"},
			{Kind: lifecycle.Accept, User: "bob", Device: "b1", Response: "ok"},
			{Kind: lifecycle.AckAccept, User: "alice", Device: "a1"},
			{Kind: lifecycle.Hangup, User: "alice", Device: "a1"},
		} {
			r = apply(b, r, a, bt0)
			events += len(lifecycle.Events(r))
		}
		if r.State != protocol.StateAccepted || r.CallState != protocol.CallEnded {
			b.Fatalf("ended in %s/%s", r.State, r.CallState)
		}
	}
	b.ReportMetric(float64(events)/float64(b.N), "events/op")
}

func BenchmarkEvents(b *testing.B) {
	r := lifecycle.New("inv1", "alice", "a1", "bob", "hi", "ch", btimeouts, bt0)
	r = apply(b, r, lifecycle.Action{Kind: lifecycle.Accept, User: "bob", Device: "b1"}, bt0)
	b.ReportAllocs()
	for b.Loop() {
		if len(lifecycle.Events(r)) != 2 {
			b.Fatal("want 2 events")
		}
	}
}

// BenchmarkEncodeRecord: what the broker encodes at every write, an
// accepted call's record with its chain of steps.
func BenchmarkEncodeRecord(b *testing.B) {
	r := lifecycle.New("Fk3Jd8sLq0PzXc7VbN2mQa", "alice-17", "phone-1", "bob-42", "hi", "room-7f3a", btimeouts, bt0)
	r.Revision = 1
	for _, a := range []lifecycle.Action{{Kind: lifecycle.Ack, User: "bob-42", Device: "b1"},
		{Kind: lifecycle.Accept, User: "bob-42", Device: "b1", Response: "ok"}, {Kind: lifecycle.AckAccept, User: "alice-17", Device: "phone-1"}} {
		r = apply(b, r, a, bt0)
		r.Chain = r.Chained(r.Revision-1, bt0.UnixMilli())
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := protocol.Encode(&r, func([]byte) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
