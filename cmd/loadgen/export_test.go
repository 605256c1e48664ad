package main

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// An export stream that cannot be read for a while (a server back from a
// partition, a leader being elected: a chaos run on 2026-12-05) is read
// again, on a new connection, rather than counted as a missing transition;
// a stream that can be read and lacks a transition still counts.
func TestExportCheckRetriesAnUnreadableStream(t *testing.T) {
	ctx := ringertest.Ctx(t)
	js, err := jetstream.New(natstest.Connect(t, natstest.RunServer(t).ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: subjects.ExportStream, Subjects: []string{subjects.ExportSubjects()}}); err != nil {
		t.Fatal(err)
	}
	r := newRun(&config{}, nil, nil)
	publish := func(id string, ts ...protocol.Transition) {
		for _, tr := range ts {
			tr.ID = id
			b, err := msgpack.Marshal(tr)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := js.Publish(ctx, subjects.Export(id), b); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(r.runID+"-1", protocol.Transition{Revision: 3}, protocol.Transition{Revision: 7, Previous: 3})
	publish("another-run-1", protocol.Transition{Revision: 9, Previous: 8})

	fails := 3 // a second apart: longer than the settle time
	open := func() (jetstream.JetStream, func(), error) {
		if fails > 0 {
			fails--
			return nil, nil, errors.New("no route to the stream yet")
		}
		return js, func() {}, nil
	}
	rep, byID := r.checkExport(ctx, open, time.Second)
	if n, kinds, _ := r.tr.violations(); n != 0 {
		t.Fatalf("%d violations %v: an unreadable stream was counted as missing transitions", n, kinds)
	}
	if fails != 0 || rep.Invitations != 1 || rep.Events != 2 || len(byID) != 1 {
		t.Fatalf("after %d failed opens: report %+v, %d invitations read", 3-fails, rep, len(byID))
	}

	// A gap in a readable stream is still a violation.
	publish(r.runID+"-2", protocol.Transition{Revision: 11, Previous: 10})
	if rep, _ = r.checkExport(ctx, open, time.Second); rep.Missing != 1 {
		t.Fatalf("report %+v: the broken chain of %s-2 is not missing", rep, r.runID)
	}
	if n, kinds, _ := r.tr.violations(); n != 1 || kinds[vExportMissing] != 1 {
		t.Fatalf("%d violations %v, want 1 %s", n, kinds, vExportMissing)
	}

	// Exports that keep coming after the settle time are waited for: each
	// check that finds fewer missing waits settle more. The outcomes of
	// two invitations are exported at the second and the third check, the
	// third past the first settle time.
	r = newRun(&config{}, nil, nil)
	ids := []string{r.runID + "-3", r.runID + "-4"}
	for _, id := range ids {
		publish(id, protocol.Transition{Revision: 20})
		s := &invState{id: id}
		r.tr.register(s)
		s.done, s.terminal.Revision = true, 21 // loadgen saw the outcome at 21
	}
	checks := 0
	late := func() (jetstream.JetStream, func(), error) {
		checks++
		if checks == 2 || checks == 3 {
			publish(ids[checks-2], protocol.Transition{Revision: 21, Previous: 20})
		}
		return js, func() {}, nil
	}
	if rep, _ = r.checkExport(ctx, late, time.Second); rep.Missing != 0 || checks != 3 {
		t.Fatalf("after %d checks: report %+v, want nothing missing after the third", checks, rep)
	}
	if n, kinds, _ := r.tr.violations(); n != 0 {
		t.Fatalf("%d violations %v: late exports counted as missing", n, kinds)
	}
}
