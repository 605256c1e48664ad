package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/ringer-dev/ringer/broker"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
)

// brokerWithoutJetStream is a broker, not started, on a NATS server whose
// JetStream is off until the test enables it, as on a cluster still
// electing its leaders.
func brokerWithoutJetStream(t *testing.T) (*server.Server, *broker.Broker) {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	b, err := broker.New(natstest.Connect(t, s.ClientURL()), ringertest.TestConfig())
	if err != nil {
		t.Fatal(err)
	}
	return s, b
}

// A broker started before JetStream answers keeps trying, each try with a
// deadline of its own, and starts once JetStream is there.
func TestStartRetryingWaitsForJetStream(t *testing.T) {
	s, b := brokerWithoutJetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	retried, done := make(chan error, 1), make(chan error, 1)
	go func() {
		done <- b.StartRetrying(ctx, 2*time.Second, func(err error) {
			select {
			case retried <- err:
			default:
			}
		})
	}()
	select {
	case err := <-retried:
		t.Logf("a try without JetStream: %v", err)
	case err := <-done:
		t.Fatalf("StartRetrying returned without JetStream: %v", err)
	}
	if err := s.EnableJetStream(&server.JetStreamConfig{StoreDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("not started once JetStream was there: %v", err)
	}
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// StartRetrying gives up when its context ends, with the last try's error.
func TestStartRetryingStopsWithItsContext(t *testing.T) {
	_, b := brokerWithoutJetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	tries := 0
	err := b.StartRetrying(ctx, time.Second, func(error) { tries++ })
	if err == nil {
		t.Fatal("started without JetStream")
	}
	if tries == 0 {
		t.Errorf("gave up after the first try: %v", err)
	}
	t.Logf("%d retried tries, then: %v", tries, err)
}
