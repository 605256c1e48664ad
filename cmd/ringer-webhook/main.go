// Command ringer-webhook relays the transitions brokers export (brokerd
// --export, stream RINGER_EXPORT) to an app backend's HTTP endpoint: one
// signed JSON POST per transition, each invitation's in revision order, at
// least once, with retries and exponential backoff, a dead-letter subject
// and Prometheus metrics; --replay-from delivers older ones again
// (docs/webhooks.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/ringer-dev/ringer/internal/buildinfo"
	"github.com/ringer-dev/ringer/internal/relay"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ringer-webhook:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("ringer-webhook", flag.ContinueOnError)
	version := fs.Bool("version", false, "print the version and exit")
	natsURL := fs.String("nats", nats.DefaultURL, "NATS URL(s) of the broker account (the one with JetStream)")
	ca := fs.String("tls-ca", "", "PEM file of the CA of the NATS servers' certificates")
	cfg := config{}
	fs.StringVar(&cfg.endpoint, "endpoint", "", "the app backend's URL to POST each transition to (required)")
	secretEnv := fs.String("secret-env", "RINGER_WEBHOOK_SECRET", "environment variable holding the HMAC key for the Ringer-Signature header (none: unsigned)")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "one POST")
	fs.IntVar(&cfg.tries, "tries", 10, "attempts at one transition before it goes to ringer.v1.webhook.dead.<id>")
	fs.DurationVar(&cfg.backoff, "backoff", 500*time.Millisecond, "wait before the second attempt; doubles each time")
	fs.DurationVar(&cfg.maxBackoff, "max-backoff", 30*time.Second, "longest wait between attempts")
	fs.IntVar(&cfg.shards, "parallel", 16, "deliveries in flight (one invitation's transitions are always delivered one after the other, in order)")
	fs.DurationVar(&cfg.ackWait, "ack-wait", time.Minute, "how long a transition held by a relay that died waits before another takes it")
	replayFrom := fs.String("replay-from", "", "deliver again every transition exported since this time (RFC 3339) or stream sequence (a number), then exit")
	metricsAddr := fs.String("metrics", ":9104", "address of /metrics (empty: none)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version {
		_, err := fmt.Fprintln(out, buildinfo.Get().String("ringer-webhook"))
		return err
	}
	if u, err := url.Parse(cfg.endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--endpoint: want the backend's http(s) URL, got %q", cfg.endpoint)
	}
	if cfg.tries < 1 || cfg.backoff <= 0 || cfg.maxBackoff < cfg.backoff || cfg.timeout <= 0 || cfg.ackWait <= cfg.timeout || cfg.shards < 1 {
		return errors.New("need --tries ≥ 1, 0 < --backoff ≤ --max-backoff, --timeout > 0, --ack-wait > --timeout and --parallel ≥ 1")
	}
	var from time.Time
	var fromSeq uint64
	if *replayFrom != "" {
		if n, err := strconv.ParseUint(*replayFrom, 10, 64); err == nil && n > 0 {
			fromSeq = n
		} else if from, err = time.Parse(time.RFC3339, *replayFrom); err != nil {
			return fmt.Errorf("--replay-from: want an RFC 3339 time or a stream sequence, got %q", *replayFrom)
		}
	}
	cfg.secret = []byte(os.Getenv(*secretEnv))
	lvl, err := zerolog.ParseLevel(*level)
	if err != nil {
		return err
	}
	log := zerolog.New(os.Stderr).Level(lvl).With().Timestamp().Str("service", "ringer-webhook").Logger()

	nc, err := relay.Connect(*natsURL, "ringer-webhook", *ca)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	if *replayFrom == "" {
		defer relay.ServeMetrics(*metricsAddr, reg, log)()
	}
	r := newRelay(js, cfg, log, reg)
	log.Info().Str("version", buildinfo.Get().Version).Str("endpoint", cfg.endpoint).Bool("signed", len(cfg.secret) > 0).Msg("ringer-webhook starting")
	if err := r.provision(ctx); err != nil {
		return fmt.Errorf("dead-letter stream: %w", err)
	}
	if *replayFrom != "" {
		return r.replay(ctx, from, fromSeq)
	}
	relay.KeepConsuming(ctx, log, r.consume)
	return nil
}
