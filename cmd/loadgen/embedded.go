// Embedded mode: an in-process NATS server (or three-node cluster) in a temp dir on random ports, and one broker.
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
	srvs   []*server.Server
	nc     *nats.Conn
	broker *broker.Broker
	dir    string
}

// startEmbedded starts one server (replicas 1) or a three-node JetStream
// cluster (replicas 3, Ringer's recommended R3), then the broker.
func startEmbedded(ctx context.Context, cfg *config, logw io.Writer) (*embeddedEnv, error) {
	dir, err := os.MkdirTemp("", "loadgen-nats-")
	if err != nil {
		return nil, err
	}
	e := &embeddedEnv{dir: dir}
	if err := e.startServers(ctx, cfg.replicas); err != nil {
		e.stop()
		return nil, err
	}
	e.nc, err = nats.Connect(e.url(), nats.Name("loadgen embedded broker"), nats.MaxReconnects(-1))
	if err != nil {
		e.stop()
		return nil, err
	}
	bcfg := broker.DefaultConfig()
	bcfg.Name = "loadgen-embedded"
	bcfg.PresenceTTL = cfg.presenceTTL
	bcfg.Replicas = cfg.replicas
	log := zerolog.Nop()
	if cfg.brokerLog {
		log = zerolog.New(zerolog.ConsoleWriter{Out: logw, TimeFormat: time.TimeOnly}).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	}
	e.broker, err = broker.New(e.nc, bcfg, broker.WithLogger(log))
	if err != nil {
		e.stop()
		return nil, err
	}
	for { // a fresh cluster may still be electing its stream leaders
		err := e.broker.Start(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			e.broker = nil
			e.stop()
			return nil, fmt.Errorf("start broker: %w", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return e, nil
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

// stats is the broker's count of JetStream round trips so far.
func (e *embeddedEnv) stats() store.StatsSnapshot { return e.broker.Store().Stats() }

func (e *embeddedEnv) stop() {
	if e.broker != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = e.broker.Shutdown(ctx)
		cancel()
	}
	if e.nc != nil {
		e.nc.Close()
	}
	for _, s := range e.srvs {
		s.Shutdown()
		s.WaitForShutdown()
	}
	_ = os.RemoveAll(e.dir)
}
