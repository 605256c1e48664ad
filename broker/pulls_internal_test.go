package broker

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/natstest"
)

// pullEnv is a stream with a durable consumer on one server.
type pullEnv struct {
	ctx    context.Context
	js     jetstream.JetStream
	stream jetstream.Stream
	cfg    jetstream.ConsumerConfig
}

func newPullEnv(t *testing.T) *pullEnv {
	t.Helper()
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv.ClientURL())
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "PULLS", Subjects: []string{"pulls.>"}})
	if err != nil {
		t.Fatal(err)
	}
	return &pullEnv{ctx: ctx, js: js, stream: st,
		cfg: jetstream.ConsumerConfig{Durable: "worker", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second}}
}

// renewLog counts the pull's "pull renewed" log lines.
type renewLog struct {
	mu sync.Mutex
	n  int
}

func (l *renewLog) Write(b []byte) (int, error) {
	if bytes.Contains(b, []byte(`"pull renewed"`)) {
		l.mu.Lock()
		l.n++
		l.mu.Unlock()
	}
	return len(b), nil
}

func (l *renewLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// TestPullRenewedAfterNoResponders: a pull sent while nothing serves its
// consumer (a consumer with no leader; here, one deleted) finds no
// responders and is renewed every renewAfter until one answers, so a
// message stored once the consumer is back is handled at once, not after
// two idle heartbeats (30 s here).
func TestPullRenewedAfterNoResponders(t *testing.T) {
	e := newPullEnv(t)
	cons, err := e.stream.CreateOrUpdateConsumer(e.ctx, e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.stream.DeleteConsumer(e.ctx, e.cfg.Durable); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 4)
	var renewals renewLog
	p, err := startPull(store.Group{Stream: "PULLS", Consumer: e.cfg.Durable}, cons, func(m jetstream.Msg) {
		_ = m.Ack()
		got <- m.Subject()
	}, 15*time.Second, zerolog.New(&renewals).Level(zerolog.DebugLevel))
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()

	// Renewals that find no responders are renewed again.
	natstest.Eventually(t, 10*time.Second, func() error {
		if n := renewals.count(); n < 3 {
			return fmt.Errorf("renewed %d times", n)
		}
		return nil
	})
	if _, err := e.stream.CreateOrUpdateConsumer(e.ctx, e.cfg); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := e.js.Publish(e.ctx, "pulls.one", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "pulls.one" {
			t.Fatalf("handled %q", s)
		}
		t.Logf("handled %s after the consumer came back", time.Since(start).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("the message was not handled within 5 s of the consumer's return: the pull was not renewed")
	}
}

// While a consumer has no leader, its pull is renewed and finds no
// responders every renewAfter: the warning says so at most every 10 s.
func TestConsumeWarningRateLimited(t *testing.T) {
	var p pull
	if !p.warnNow() {
		t.Fatal("the first warning was held back")
	}
	for i := range 40 { // 10 s of renewals
		if p.warnNow() {
			t.Fatalf("warned again at renewal %d", i+1)
		}
	}
	p.warned = time.Now().Add(-10 * time.Second)
	if !p.warnNow() {
		t.Fatal("no warning 10 s after the last")
	}
}
