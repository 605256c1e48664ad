// Package natstest starts real nats-server instances for tests: one server or
// a three-node JetStream cluster, on random ports in temporary directories.
package natstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/internal/embedded"
)

// RunServer starts a JetStream server for the test and stops it at cleanup.
func RunServer(t testing.TB) *server.Server {
	t.Helper()
	s, err := embedded.Start(embedded.Config{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// Cluster is an in-process JetStream cluster.
type Cluster struct {
	t       testing.TB
	Servers []*server.Server
	configs []embedded.Config
}

// RunCluster starts an n-node JetStream cluster and waits for a meta leader.
// A node that does not come up is retried with fresh ports: a route port is
// picked free and then bound by the node a moment later, and another socket
// can take it meanwhile (CI saw "server not ready after 15s" once).
func RunCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		var c *Cluster
		if c, err = startCluster(t, n); err == nil {
			t.Cleanup(c.Shutdown)
			c.WaitReady()
			return c
		}
		t.Logf("cluster start, attempt %d: %v", attempt, err)
	}
	t.Fatal(err)
	return nil
}

// startCluster starts n nodes, or none.
func startCluster(t testing.TB, n int) (*Cluster, error) {
	c := &Cluster{t: t}
	var routes []string
	ports := make([]int, n)
	for i := range ports {
		p, err := embedded.FreePort("127.0.0.1")
		if err != nil {
			return nil, err
		}
		ports[i] = p
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	for i := 0; i < n; i++ {
		cfg := embedded.Config{
			Name: fmt.Sprintf("n%d", i+1), Port: -1, StoreDir: t.TempDir(),
			Cluster: &embedded.ClusterConfig{Name: "ringer-test", Port: ports[i], Routes: routes},
		}
		c.configs = append(c.configs, cfg)
	}
	c.Servers = make([]*server.Server, n)
	errs := make(chan error, n)
	for i := range c.configs {
		go func(i int) {
			s, err := embedded.Start(c.configs[i])
			c.Servers[i] = s
			errs <- err
		}(i)
	}
	var err error
	for range c.configs {
		if e := <-errs; e != nil {
			err = e
		}
	}
	if err != nil {
		c.Shutdown() // the nodes that did start
		return nil, err
	}
	return c, nil
}

// WaitReady waits until the cluster has a JetStream meta leader, every
// running node is current, and the leader counts every running node as a
// peer it can place on. Without the last, a replicated stream created at
// once can fail with "no suitable peers for placement": the leader learns a
// peer's JetStream state from its stats, which come a moment after the peer
// joined (CI saw it once).
func (c *Cluster) WaitReady() {
	c.t.Helper()
	Eventually(c.t, 20*time.Second, func() error {
		var leader *server.Server
		running := 0
		for _, s := range c.Servers {
			if s == nil || !s.Running() {
				continue
			}
			running++
			if s.JetStreamIsLeader() {
				if leader != nil {
					return errors.New("two meta leaders")
				}
				leader = s
			}
			if !s.JetStreamIsCurrent() {
				return fmt.Errorf("%s not current", s.Name())
			}
		}
		if leader == nil {
			return errors.New("no meta leader")
		}
		if peers := leader.JetStreamClusterPeers(); len(peers) != running {
			return fmt.Errorf("meta leader %s can place on %v, want %d nodes", leader.Name(), peers, running)
		}
		return nil
	})
}

// URLs returns every running node's client URL, comma-separated.
func (c *Cluster) URLs() string {
	var us []string
	for _, s := range c.Servers {
		if s != nil && s.Running() {
			us = append(us, s.ClientURL())
		}
	}
	return strings.Join(us, ",")
}

// Stop shuts node i down (its store and client port are kept for Restart,
// so that clients that know only this node can come back to it).
func (c *Cluster) Stop(i int) {
	s := c.Servers[i]
	if addr, ok := s.Addr().(*net.TCPAddr); ok {
		c.configs[i].Port = addr.Port
	}
	s.Shutdown()
	s.WaitForShutdown()
}

// Restart starts node i again with its original store and route port.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	s, err := embedded.Start(c.configs[i])
	if err != nil {
		c.t.Fatal(err)
	}
	c.Servers[i] = s
}

// Shutdown stops every node.
func (c *Cluster) Shutdown() {
	for _, s := range c.Servers {
		if s != nil {
			s.Shutdown()
			s.WaitForShutdown()
		}
	}
}

// Connect opens a client connection that is closed at cleanup.
func Connect(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream is nc's JetStream context; it fails t if there is none.
func JetStream(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// Eventually polls f until it returns nil or the deadline passes.
func Eventually(t testing.TB, within time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Attempt calls f, each time with a fresh deadline of each, until it
// succeeds or within has passed. On a cluster a JetStream API request (a
// stream or consumer create above all) can go unanswered until its deadline
// while a retry then succeeds at once (nats-server#3677, #8350; CI saw a
// bucket's creation time out once), so one long deadline shared by every
// try is not enough.
func Attempt(t testing.TB, within, each time.Duration, f func(ctx context.Context) error) {
	t.Helper()
	Eventually(t, within, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), each)
		defer cancel()
		return f(ctx)
	})
}
