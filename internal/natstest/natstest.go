// Package natstest starts real nats-server instances for tests: one server or
// a three-node JetStream cluster, on random ports in temporary directories.
package natstest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

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
func RunCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	var routes []string
	ports := make([]int, n)
	for i := range ports {
		p, err := embedded.FreePort("127.0.0.1")
		if err != nil {
			t.Fatal(err)
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
	for range c.configs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(c.Shutdown)
	c.WaitReady()
	return c
}

// WaitReady waits until the cluster has a JetStream meta leader and every
// running node is current.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	Eventually(c.t, 20*time.Second, func() error {
		leaders := 0
		for _, s := range c.Servers {
			if s == nil || !s.Running() {
				continue
			}
			if s.JetStreamIsLeader() {
				leaders++
			}
			if !s.JetStreamIsCurrent() {
				return fmt.Errorf("%s not current", s.Name())
			}
		}
		if leaders != 1 {
			return fmt.Errorf("%d meta leaders", leaders)
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

// Stop shuts node i down (its store is kept for Restart).
func (c *Cluster) Stop(i int) {
	s := c.Servers[i]
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
