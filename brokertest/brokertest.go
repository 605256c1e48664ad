// Package brokertest runs a real Ringer — an embedded NATS server with
// JetStream and one broker, as `go run ./cmd/brokerd` does — for the tests
// of apps built on the Go SDK (package client): no mocks, nothing to
// install.
//
//	func TestMyApp(t *testing.T) {
//		r := brokertest.New(t)               // stopped at the test's end
//		nc, _ := nats.Connect(r.URL)
//		c, _ := client.New(nc, "alice", "phone", client.WithHandler(h))
//		…
//	}
package brokertest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/broker"
	"github.com/ringer-dev/ringer/internal/embedded"
)

// Server is a running Ringer: URL is the NATS URL clients connect to
// (development mode: no auth).
type Server struct {
	URL    string
	Broker *broker.Broker

	nc  *nats.Conn
	srv *server.Server
	dir string
}

// Option configures Start.
type Option func(*broker.Config)

// WithConfig replaces the broker's configuration (default:
// broker.DefaultConfig, Agora's timeouts).
func WithConfig(cfg broker.Config) Option {
	return func(c *broker.Config) { *c = cfg }
}

// WithTimeouts shortens the invitations' timeouts (offline, expire, accept),
// for tests that wait for them.
func WithTimeouts(offline, expire, accept time.Duration) Option {
	return func(c *broker.Config) {
		c.Timeouts.Offline, c.Timeouts.Expire, c.Timeouts.Accept = offline, expire, accept
		c.MinTimeout = min(c.MinTimeout, offline, expire, accept)
	}
}

// Start runs an embedded NATS server on a random local port with its store
// in a temporary directory, and a broker on it; Close stops both.
func Start(ctx context.Context, opts ...Option) (*Server, error) {
	cfg := broker.DefaultConfig()
	cfg.Name = "brokertest"
	for _, o := range opts {
		o(&cfg)
	}
	dir, err := os.MkdirTemp("", "ringer-brokertest")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir}
	if s.srv, err = embedded.Start(embedded.Config{Port: -1, StoreDir: dir}); err != nil {
		s.Close()
		return nil, err
	}
	s.URL = s.srv.ClientURL()
	if s.nc, err = nats.Connect(s.URL, nats.Name("brokertest broker")); err != nil {
		s.Close()
		return nil, err
	}
	if s.Broker, err = broker.New(s.nc, cfg); err == nil {
		err = s.Broker.Start(ctx)
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("brokertest: %w", err)
	}
	return s, nil
}

// New is Start for a test: it fails t if Ringer does not start, and stops
// it when the test ends.
func New(t testing.TB, opts ...Option) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Start(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// Close stops the broker (draining it) and the server, and removes the store.
func (s *Server) Close() {
	if s.Broker != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = s.Broker.Shutdown(ctx)
		cancel()
	}
	if s.nc != nil {
		s.nc.Close()
	}
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
	}
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}
