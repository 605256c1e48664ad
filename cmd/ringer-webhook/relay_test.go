package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/ringer-dev/ringer/broker/journal"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/internal/signature"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

var secret = []byte("test-secret")

// backend is an app backend: a real HTTP server that checks each delivery's
// signature and records it; fail decides, per delivery, an HTTP status to
// answer instead of 200.
type backend struct {
	t    *testing.T
	srv  *httptest.Server
	mu   sync.Mutex
	got  map[string][]protocol.Transition // by invitation, in arrival order
	seen map[string]int                   // attempts per event id
	fail func(t protocol.Transition, attempt int) int
}

func newBackend(t *testing.T) *backend {
	b := &backend{t: t, got: map[string][]protocol.Transition{}, seen: map[string]int{}}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := signature.Verify(secret, r.Header.Get(signature.Header), body, time.Now(), time.Minute); err != nil {
			b.t.Errorf("delivery %s: %v", r.Header.Get(EventIDHeader), err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var tr protocol.Transition
		if err := json.Unmarshal(body, &tr); err != nil || r.Header.Get(EventIDHeader) != fmt.Sprintf("%s.%d", tr.ID, tr.Revision) {
			b.t.Errorf("delivery %q: %s (%v)", r.Header.Get(EventIDHeader), body, err)
		}
		b.mu.Lock()
		b.seen[r.Header.Get(EventIDHeader)]++
		attempt := b.seen[r.Header.Get(EventIDHeader)]
		status := http.StatusOK
		if b.fail != nil {
			if s := b.fail(tr, attempt); s != 0 {
				status = s
			}
		}
		if status == http.StatusOK {
			b.got[tr.ID] = append(b.got[tr.ID], tr)
		}
		b.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

// delivered returns a copy of what arrived for invitation id.
func (b *backend) delivered(id string) []protocol.Transition {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]protocol.Transition(nil), b.got[id]...)
}

func testRelay(t *testing.T, js jetstream.JetStream, endpoint string) *webhookRelay {
	cfg := config{endpoint: endpoint, secret: secret, timeout: 2 * time.Second, tries: 4,
		backoff: 10 * time.Millisecond, maxBackoff: 50 * time.Millisecond, shards: 4, ackWait: 10 * time.Second}
	return newRelay(js, cfg, zerolog.Nop(), prometheus.NewRegistry())
}

// Every transition reaches the backend, signed, each invitation's in
// revision order, also when the backend fails the first attempts (5xx and
// 429 are retried); one it rejects (400) goes to the dead letters; a replay
// delivers them all again.
func TestRelayDeliversEveryTransitionInOrder(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.Export = true
	env := ringertest.Start(t, cfg)
	nc := natstest.Connect(t, env.URL)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	exp := journal.New(nc, js, journal.MaxHistorySize)
	be := newBackend(t)
	const rejectID = "rejected-by-backend"
	be.fail = func(tr protocol.Transition, attempt int) int {
		switch {
		case tr.ID == rejectID:
			return http.StatusBadRequest
		case attempt == 1:
			return http.StatusServiceUnavailable
		case attempt == 2:
			return http.StatusTooManyRequests
		}
		return 0
	}
	r := testRelay(t, js, be.srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.consume(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := r.provision(ringertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	natstest.Attempt(t, ringertest.Wait, time.Second, func(ctx context.Context) error {
		_, err := js.Consumer(ctx, subjects.ExportStream, Consumer)
		return err
	})
	start := time.Now()

	alice, bob := env.Login("alice", "phone"), env.Login("bob", "phone")
	c := ringertest.Ctx(t)
	var ids []string
	for i := 0; i < 4; i++ {
		call := alice.Call(t, bob)
		bob.Rec.Wait(t, "RemoteAccepted "+call.ID)
		if err := bob.Hangup(c, call.ID); err != nil {
			t.Fatal(err)
		}
		alice.Rec.Wait(t, "CallEnded "+call.ID)
		ids = append(ids, call.ID)
	}
	rejected := alice.CreateLocalInvitation("carol") // offline: waits
	rejected.ID = rejectID
	if err := rejected.Send(c); err != nil {
		t.Fatal(err)
	}
	if err := rejected.Cancel(c); err != nil {
		t.Fatal(err)
	}

	natstest.Attempt(t, 2*ringertest.Wait, 5*time.Second, func(ctx context.Context) error {
		for _, id := range ids {
			want, err := exp.Exported(ctx, id)
			if err != nil {
				return err
			}
			got := be.delivered(id)
			// SENT, ACCEPTING (the accept comes before the ack), ACCEPTED, ended.
			if len(want) < 4 || !sameRevisions(got, want) {
				return fmt.Errorf("%s: delivered %v, exported %v", id, revisions(got), revisions(want))
			}
		}
		return nil
	})
	natstest.Attempt(t, ringertest.Wait, 5*time.Second, func(ctx context.Context) error {
		info, err := js.Stream(ctx, subjects.WebhookDeadStream)
		if err != nil {
			return err
		}
		if n := info.CachedInfo().State.Msgs; n != 2 {
			return fmt.Errorf("%d dead letters, want the 2 rejected transitions", n)
		}
		return nil
	})
	if got := be.delivered(rejectID); len(got) != 0 {
		t.Errorf("a rejected transition counted as delivered: %v", got)
	}

	// Replay from before the first call: everything again, in order.
	replayed := newBackend(t)
	if err := testRelay(t, js, replayed.srv.URL).replay(ringertest.Ctx(t), start.Add(-time.Second), 0); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if got, want := replayed.delivered(id), be.delivered(id); !sameRevisions(got, want) {
			t.Errorf("%s replayed %v, want %v", id, revisions(got), revisions(want))
		}
	}
}

func revisions(ts []protocol.Transition) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = fmt.Sprintf("%d:%s", t.Revision, t.State)
	}
	return out
}

func sameRevisions(a, b []protocol.Transition) bool {
	return strings.Join(revisions(a), " ") == strings.Join(revisions(b), " ") && sort.SliceIsSorted(a, func(i, j int) bool { return a[i].Revision < a[j].Revision })
}

// Bad flags are refused at once, each with what to give instead.
func TestRunRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{}, {"--endpoint", "ftp://backend/hook"}, {"--endpoint", "http://backend/hook", "--tries", "0"},
		{"--endpoint", "http://backend/hook", "--backoff", "2s", "--max-backoff", "1s"},
		{"--endpoint", "http://backend/hook", "--replay-from", "yesterday"},
	} {
		err := run(context.Background(), args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--") {
			t.Errorf("%q: %v", args, err)
		}
	}
	var out strings.Builder
	if err := run(context.Background(), []string{"--version"}, &out); err != nil || !strings.Contains(out.String(), "ringer-webhook") {
		t.Errorf("--version: %q, %v", out.String(), err)
	}
}
