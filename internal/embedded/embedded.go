// Package embedded runs an in-process nats-server with JetStream, for
// brokerd's and loadgen's zero-dependency default mode and for tests.
package embedded

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config describes one embedded server.
type Config struct {
	Name     string // server name (required in a cluster)
	Host     string // client listen host; default 127.0.0.1
	Port     int    // client port; -1 = random
	StoreDir string // JetStream file store directory (required)
	// Cluster, when set, joins a JetStream cluster over these routes.
	Cluster *ClusterConfig
	// SyncAlways makes JetStream fsync before acknowledging (see docs/architecture.md, "Durability").
	SyncAlways bool
	Logs       bool // print the server's own logs to stderr
}

// ClusterConfig is the route layout of one node of a cluster.
type ClusterConfig struct {
	Name   string
	Port   int      // this node's route port
	Routes []string // every node's route URL, nats-route://host:port (self included is fine)
}

// writable creates dir if needed and checks that a file can be written in it.
func writable(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".ringer-write-check-*")
	if err != nil {
		return err
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// Start starts a server and waits until it accepts clients.
func Start(cfg Config) (*server.Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded: StoreDir is required")
	}
	// Say at once when the store cannot be written, rather than waiting
	// for a server that will not come up.
	if err := writable(cfg.StoreDir); err != nil {
		return nil, fmt.Errorf("embedded: JetStream store directory: %w", err)
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		Host:       cfg.Host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		NoLog:      !cfg.Logs,
		SyncAlways: cfg.SyncAlways,
		// Half-open clients are detected in ~30 s instead of the 6 min default.
		PingInterval: 10 * time.Second,
		MaxPingsOut:  2,
	}
	if cfg.Cluster != nil {
		opts.Cluster = server.ClusterOpts{Name: cfg.Cluster.Name, Host: cfg.Host, Port: cfg.Cluster.Port}
		opts.Routes = server.RoutesFromStr(joinRoutes(cfg.Cluster.Routes))
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	if cfg.Logs {
		s.ConfigureLogger()
	}
	go s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, fmt.Errorf("embedded: server not ready after 15s%s", portsTaken(cfg))
	}
	return s, nil
}

// portsTaken names the fixed ports of cfg that another socket holds, the
// usual reason a server never becomes ready (its log says so, but embedded
// servers usually run without one).
func portsTaken(cfg Config) string {
	var out string
	check := func(what string, port int) {
		if port <= 0 {
			return
		}
		l, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(port)))
		if err != nil {
			out += fmt.Sprintf("; %s port %d: %v", what, port, err)
			return
		}
		l.Close()
	}
	check("client", cfg.Port)
	if cfg.Cluster != nil {
		check("route", cfg.Cluster.Port)
	}
	return out
}

func joinRoutes(rs []string) string {
	out := ""
	for i, r := range rs {
		if i > 0 {
			out += ","
		}
		out += r
	}
	return out
}

// FreePort returns a TCP port that was free on host a moment ago (cluster
// route ports must be known before the servers start; -1 does not work for
// JetStream clusters).
func FreePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return strconv.Atoi(p)
}
