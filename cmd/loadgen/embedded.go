// Embedded mode: an in-process NATS server (or three-node cluster) in a temp dir on random ports, and its brokers.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/ringer-dev/ringer/broker"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/embedded"
)

// embeddedEnv is loadgen's own deployment.
type embeddedEnv struct {
	srvs    []*server.Server
	ncs     []*nats.Conn
	brokers []*broker.Broker
	dir     string
}

// startEmbedded starts one server (replicas 1) or a three-node JetStream
// cluster (replicas 3, Ringer's recommended R3), then cfg.brokers brokers,
// each on a connection of its own as separate processes would be.
func startEmbedded(ctx context.Context, cfg *config, logw io.Writer) (*embeddedEnv, error) {
	dir, err := os.MkdirTemp("", "loadgen-nats-")
	if err != nil {
		return nil, err
	}
	e := &embeddedEnv{dir: dir}
	start, cancel := context.WithTimeout(ctx, time.Minute) // servers and brokers up
	defer cancel()
	if err := e.startServers(start, cfg.replicas); err != nil {
		e.stop()
		return nil, err
	}
	for i := range cfg.brokers {
		if err := e.startBroker(start, cfg, logw, fmt.Sprintf("loadgen-embedded-%d", i+1)); err != nil {
			e.stop()
			return nil, err
		}
	}
	if cfg.replicas > 1 && cfg.settle > 0 {
		e.settle(ctx, cfg.settle, logw)
	}
	return e, nil
}

// settle waits until the brokers have moved the Raft groups' leaders where
// they want them (broker.Settled), so that the run does not measure a
// cluster's first seconds of hand-overs (each a pause of the groups moved).
// Past limit (--settle) it says so and goes on.
func (e *embeddedEnv) settle(ctx context.Context, limit time.Duration, logw io.Writer) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var err error
	for {
		if err = e.brokers[0].Settled(ctx); err == nil {
			fmt.Fprintf(logw, "leaders settled in %s\n", time.Since(start).Round(100*time.Millisecond))
			return
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(logw, "leaders not settled after %s (%v); measuring anyway\n", limit, err)
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (e *embeddedEnv) startBroker(ctx context.Context, cfg *config, logw io.Writer, name string) error {
	nc, err := nats.Connect(e.url(), nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	e.ncs = append(e.ncs, nc)
	bcfg := broker.DefaultConfig()
	bcfg.Name = name
	bcfg.PresenceTTL = cfg.presenceTTL
	bcfg.Replicas = cfg.replicas
	bcfg.Partitions = cfg.partitions
	// loadgen's users call far more often than people do (a closed loop
	// with no think time makes a call every few hundred ms): per-user
	// limits that leave the benchmark to the broker, still checked on
	// every command so that their cost is in the figures.
	bcfg.SendRate, bcfg.SendBurst = 1000, 1000
	bcfg.CommandRate, bcfg.CommandBurst = 1000, 1000
	if cfg.cacheSize >= 0 {
		bcfg.CacheSize = cfg.cacheSize
	}
	if cfg.timerBatch >= 0 {
		bcfg.TimerBatch = cfg.timerBatch
	}
	bcfg.Export = cfg.export
	bcfg.ConsumerProjection = cfg.consumerProjection
	bcfg.CacheGossip = cfg.cacheGossip
	bcfg.AtomicSends = cfg.atomicSends
	bcfg.History = cfg.history
	bcfg.FollowLeader = cfg.followLeader
	log := zerolog.Nop()
	if cfg.brokerLog {
		log = zerolog.New(zerolog.ConsoleWriter{Out: logw, TimeFormat: time.TimeOnly}).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	}
	b, err := broker.New(nc, bcfg, broker.WithLogger(log))
	if err != nil {
		return err
	}
	if err := b.StartRetrying(ctx, 5*time.Second, nil); err != nil { // a fresh cluster may still be electing
		return fmt.Errorf("start broker %s: %w", name, err)
	}
	e.brokers = append(e.brokers, b)
	return nil
}

func (e *embeddedEnv) startServers(ctx context.Context, n int) error {
	if n == 1 {
		s, err := embedded.Start(embedded.Config{Name: "loadgen-embedded", Port: -1, StoreDir: e.dir})
		if err != nil {
			return err
		}
		e.srvs = append(e.srvs, s)
		return nil
	}
	var routes []string
	ports := make([]int, n)
	for i := range ports {
		p, err := embedded.FreePort("127.0.0.1")
		if err != nil {
			return err
		}
		ports[i] = p
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	type started struct {
		s   *server.Server
		err error
	}
	ch := make(chan started, n)
	for i := 0; i < n; i++ {
		go func() {
			s, err := embedded.Start(embedded.Config{Name: fmt.Sprintf("loadgen-n%d", i+1), Port: -1,
				StoreDir: filepath.Join(e.dir, fmt.Sprint(i+1)),
				Cluster:  &embedded.ClusterConfig{Name: "loadgen", Port: ports[i], Routes: routes}})
			ch <- started{s, err}
		}()
	}
	var errs []error
	for i := 0; i < n; i++ {
		st := <-ch
		if st.err != nil {
			errs = append(errs, st.err)
			continue
		}
		e.srvs = append(e.srvs, st.s)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for ctx.Err() == nil { // wait for a JetStream meta leader
		for _, s := range e.srvs {
			if s.JetStreamIsLeader() {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("cluster: no JetStream meta leader: %w", ctx.Err())
}

func (e *embeddedEnv) url() string {
	var us []string
	for _, s := range e.srvs {
		us = append(us, s.ClientURL())
	}
	return strings.Join(us, ",")
}

// stats is the brokers' count of JetStream round trips so far.
func (e *embeddedEnv) stats() store.StatsSnapshot {
	var sum store.StatsSnapshot
	for _, b := range e.brokers {
		sum = sum.Add(b.Store().Stats())
	}
	return sum
}

// natsTraffic counts the messages of the embedded servers (their varz,
// summed over the servers).
type natsTraffic struct {
	clientIn, clientOut int64 // from and to client connections (brokers, users, loadgen)
	routedIn            int64 // received from other servers: Raft replication and hops between servers
}

func (t natsTraffic) sub(o natsTraffic) natsTraffic {
	return natsTraffic{t.clientIn - o.clientIn, t.clientOut - o.clientOut, t.routedIn - o.routedIn}
}

// traffic is the embedded servers' message counts so far.
func (e *embeddedEnv) traffic() natsTraffic {
	var t natsTraffic
	for _, s := range e.srvs {
		v, err := s.Varz(nil)
		if err != nil {
			continue
		}
		t.clientIn += v.InClientMsgs
		t.clientOut += v.OutClientMsgs
		t.routedIn += v.InMsgs - v.InClientMsgs
	}
	return t
}

// store is a store handle for loadgen's own checks (the first broker's).
func (e *embeddedEnv) store() *store.Store { return e.brokers[0].Store() }

func (e *embeddedEnv) stop() {
	for _, b := range e.brokers {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = b.Shutdown(ctx)
		cancel()
	}
	for _, nc := range e.ncs {
		nc.Close()
	}
	for _, s := range e.srvs {
		s.Shutdown()
		s.WaitForShutdown()
	}
	_ = os.RemoveAll(e.dir)
}
