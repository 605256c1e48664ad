package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/broker"
)

// A broker pointed at a server without JetStream says what is wrong, not
// only "no responders".
func TestStartWithoutJetStreamSaysSo(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	b, err := broker.New(nc, broker.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = b.Start(ctx)
	if err == nil {
		t.Fatal("started without JetStream")
	}
	if h := startHint(err); !strings.Contains(h, "-js") {
		t.Fatalf("start error %v: hint %q", err, h)
	}
}
