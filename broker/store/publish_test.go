package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/subjects"
)

// The acknowledgement shapes nats-server 2.15 sends (server/stream.go,
// PubAck and ApiError), read as nats.go reads them.
func TestParsePubAck(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    string
		seq     uint64
		errCode jetstream.ErrorCode // 0: no API error expected
		invalid bool
	}{
		{name: "plain", data: `{"stream":"KV_RINGER","seq":42}`, seq: 42},
		{name: "domain and duplicate", data: `{"stream":"KV_RINGER","domain":"hub","seq":18446744073709551615,"duplicate":true}`, seq: 18446744073709551615},
		{name: "seq first", data: `{"seq":7,"stream":"S"}`, seq: 7},
		{name: "batch", data: `{"stream":"S","seq":9,"batch":"b1","count":3}`, seq: 9},
		{name: "wrong last sequence",
			data:    `{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"},"stream":"KV_RINGER","seq":0}`,
			errCode: jetstream.JSErrCodeStreamWrongLastSequence},
		{name: "error before stream", data: `{"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}`, errCode: 10008},
		{name: "not json", data: `+OK`, invalid: true},
		{name: "no stream", data: `{"seq":3}`, invalid: true},
		{name: "empty", data: ``, invalid: true},
		{name: "seq not a number", data: `{"stream":"S","seq":"x"}`, invalid: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seq, err := parsePubAck([]byte(tc.data))
			switch {
			case tc.invalid:
				if !errors.Is(err, jetstream.ErrInvalidJSAck) {
					t.Fatalf("got %d, %v; want ErrInvalidJSAck", seq, err)
				}
			case tc.errCode != 0:
				var apiErr *jetstream.APIError
				if !errors.As(err, &apiErr) || apiErr.ErrorCode != tc.errCode {
					t.Fatalf("got %d, %v; want API error %d", seq, err, tc.errCode)
				}
			case err != nil || seq != tc.seq:
				t.Fatalf("got %d, %v; want %d", seq, err, tc.seq)
			}
		})
	}
}

// A conflict read by parsePubAck is still ErrConflict to the broker.
func TestParsedConflictMapsToErrConflict(t *testing.T) {
	_, err := parsePubAck([]byte(`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"}}`))
	if !errors.Is(mapPubErr(err, "inv.x"), ErrConflict) {
		t.Fatalf("%v is not ErrConflict", mapPubErr(err, "inv.x"))
	}
}

// publish answers as jetstream.PublishMsg does, against a real server: the
// stored sequence, the same API error for a failed compare-and-set, and
// ErrNoStreamResponse (which Transient counts as retryable) for a subject
// no stream stores.
func TestPublishAnswersAsPublishMsg(t *testing.T) {
	ctx, s := openR1(t)
	create := func(key string) *nats.Msg {
		m := nats.NewMsg(subjects.KVSubject(key))
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
		m.Data = []byte("v")
		return m
	}
	seq, err := s.publish(ctx, create("inv.a"))
	if err != nil || seq == 0 {
		t.Fatalf("create: %d, %v", seq, err)
	}
	ack, err := s.js.PublishMsg(ctx, create("inv.b"))
	if err != nil || ack.Sequence != seq+1 {
		t.Fatalf("PublishMsg after publish: %+v, %v; want sequence %d", ack, err, seq+1)
	}

	_, ours := s.publish(ctx, create("inv.a"))
	_, theirs := s.js.PublishMsg(ctx, create("inv.b"))
	var a, b *jetstream.APIError
	if !errors.As(ours, &a) || !errors.As(theirs, &b) || a.ErrorCode != b.ErrorCode || a.Code != b.Code {
		t.Fatalf("second create: publish %v, PublishMsg %v: not the same API error", ours, theirs)
	}
	if !errors.Is(mapPubErr(ours, "inv.a"), ErrConflict) {
		t.Errorf("%v is not a conflict", ours)
	}

	_, err = s.publish(ctx, nats.NewMsg("ringer.no.stream"))
	if !errors.Is(err, jetstream.ErrNoStreamResponse) || !Transient(err) {
		t.Errorf("no stream: %v, want ErrNoStreamResponse, transient", err)
	}
}

// openR1 provisions and opens a store on a server of its own, with a
// context for the test's calls.
func openR1(t *testing.T) (context.Context, *Store) {
	t.Helper()
	nc := natstest.Connect(t, natstest.RunServer(t).ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	if err := Provision(ctx, nc, ProvisionConfig{Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, s
}

// WritesFailing counts a run of failed writes until one is stored. A
// conflict neither starts nor ends the run: a stream leader cut off from its
// quorum refuses compare-and-sets against what it proposed and could not
// commit, so that answer does not show that writes go through
// (TestABrokerLeavesAServerWhereNoWriteGoesThrough).
func TestAConflictDoesNotEndARunOfFailedWrites(t *testing.T) {
	ctx, s := openR1(t)
	create := func(key string) *nats.Msg {
		m := nats.NewMsg(subjects.KVSubject(key))
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
		return m
	}
	if _, err := s.publish(ctx, create("inv.a")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.publish(ctx, create("inv.a")); !IsWrongLastSequence(err) {
		t.Fatalf("second create: %v, want a conflict", err)
	}
	if f, _ := s.WritesFailing(); f != 0 {
		t.Fatalf("a conflict with no failure before: failing for %s, want 0", f)
	}
	if _, err := s.publish(ctx, nats.NewMsg("ringer.no.stream")); err == nil {
		t.Fatal("a write no stream stores went through")
	}
	first, _ := s.WritesFailing()
	if first == 0 {
		t.Fatal("an unanswered write did not start a run of failures")
	}
	if _, err := s.publish(ctx, create("inv.a")); !IsWrongLastSequence(err) {
		t.Fatalf("third create: %v, want a conflict", err)
	}
	if f, _ := s.WritesFailing(); f < first {
		t.Fatalf("after a conflict: failing for %s, want the run that began %s ago to go on", f, first)
	}
	if _, err := s.publish(ctx, create("inv.b")); err != nil {
		t.Fatal(err)
	}
	if f, last := s.WritesFailing(); f != 0 || last != 0 {
		t.Fatalf("after a stored write: %s, %s; want 0, 0", f, last)
	}
}
