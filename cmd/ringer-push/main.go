// Command ringer-push is Ringer's reference push gateway: it consumes the
// push requests brokers put on the RINGER_PUSH stream (a RING when an
// invitation finds a callee device without a connection, a STOP when it
// stops ringing) and delivers each, once per device: to APNs (VoIP pushes,
// token auth) and FCM (HTTP v1, data messages) itself when given their
// credentials, else as JSON POSTed to an HTTP endpoint per platform; with
// retries, exponential backoff and Retry-After, dead tokens unregistered in
// Ringer, a dead-letter subject and Prometheus metrics (docs/push.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/ringer-dev/ringer/internal/buildinfo"
	"github.com/ringer-dev/ringer/internal/relay"
	"github.com/ringer-dev/ringer/protocol"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ringer-push:", err)
		os.Exit(1)
	}
}

// endpoints is the repeatable --endpoint platform=URL flag.
type endpoints map[protocol.Platform]string

func (e endpoints) String() string { return fmt.Sprint(map[protocol.Platform]string(e)) }

func (e endpoints) Set(v string) error {
	p, u, ok := strings.Cut(v, "=")
	platform := protocol.Platform(p)
	if !ok || (!platform.Valid() && p != "default") {
		return fmt.Errorf("want platform=URL with platform one of %v or default", protocol.Platforms)
	}
	if parsed, err := url.Parse(u); err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
		return fmt.Errorf("%s: want an http(s) URL, got %q", p, u)
	}
	e[platform] = u
	return nil
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("ringer-push", flag.ContinueOnError)
	version := fs.Bool("version", false, "print the version and exit")
	natsURL := fs.String("nats", nats.DefaultURL, "NATS URL(s) of the broker account (the one with JetStream)")
	ca := fs.String("tls-ca", "", "PEM file of the CA of the NATS servers' certificates")
	eps := endpoints{}
	fs.Var(eps, "endpoint", "platform=URL to POST deliveries for that platform to (apns, fcm, webpush, http, or default for the rest); repeat")
	secretEnv := fs.String("secret-env", "RINGER_PUSH_SECRET", "environment variable holding the HMAC key for the Ringer-Signature header (none: unsigned)")
	cfg := config{}
	fs.DurationVar(&cfg.timeout, "timeout", 5*time.Second, "one HTTP delivery")
	fs.IntVar(&cfg.maxDeliver, "max-deliver", 8, "attempts at one request before it goes to ringer.v1.push.dead.<user>")
	fs.DurationVar(&cfg.backoff, "backoff", 500*time.Millisecond, "wait before the second attempt; doubles each time")
	fs.DurationVar(&cfg.maxBackoff, "max-backoff", 30*time.Second, "longest wait between attempts")
	fs.DurationVar(&cfg.ackWait, "ack-wait", 30*time.Second, "how long a request held by a gateway that died waits before another takes it")
	var ac apnsConfig
	fs.StringVar(&ac.keyFile, "apns-key-file", os.Getenv("RINGER_APNS_KEY_FILE"), "APNs token-auth key (.p8): with it, apns devices are pushed to Apple directly (env RINGER_APNS_KEY_FILE)")
	fs.StringVar(&ac.keyID, "apns-key-id", os.Getenv("RINGER_APNS_KEY_ID"), "the key's id (env RINGER_APNS_KEY_ID)")
	fs.StringVar(&ac.teamID, "apns-team-id", os.Getenv("RINGER_APNS_TEAM_ID"), "the Apple developer team id (env RINGER_APNS_TEAM_ID)")
	fs.BoolVar(&ac.production, "apns-production", false, "push to api.push.apple.com (default: the sandbox, for development builds)")
	fcmCreds := fs.String("fcm-credentials", os.Getenv("RINGER_FCM_CREDENTIALS"), "a Firebase service account's JSON key file: with it, fcm devices are pushed through FCM HTTP v1 directly (env RINGER_FCM_CREDENTIALS)")
	fcmEndpoint := fs.String("fcm-endpoint", "https://fcm.googleapis.com", "FCM's API endpoint")
	metricsAddr := fs.String("metrics", ":9103", "address of /metrics (empty: none)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version {
		_, err := fmt.Fprintln(out, buildinfo.Get().String("ringer-push"))
		return err
	}
	switch {
	case len(eps) == 0 && ac.keyFile == "" && *fcmCreds == "":
		return errors.New("no --endpoint, --apns-key-file or --fcm-credentials: say where deliveries go, e.g. --endpoint default=http://push-adapter:8080/push")
	case ac.keyFile != "" && (ac.keyID == "" || ac.teamID == ""):
		return errors.New("--apns-key-file needs --apns-key-id and --apns-team-id")
	case cfg.maxDeliver < 1 || cfg.backoff <= 0 || cfg.maxBackoff < cfg.backoff || cfg.timeout <= 0 || cfg.ackWait < cfg.timeout:
		return errors.New("need --max-deliver ≥ 1, 0 < --backoff ≤ --max-backoff, --timeout > 0 and --ack-wait ≥ --timeout")
	}
	cfg.endpoints = eps
	cfg.secret = []byte(os.Getenv(*secretEnv))
	lvl, err := zerolog.ParseLevel(*level)
	if err != nil {
		return err
	}
	log := zerolog.New(os.Stderr).Level(lvl).With().Timestamp().Str("service", "ringer-push").Logger()

	nc, err := relay.Connect(*natsURL, "ringer-push", *ca)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	defer relay.ServeMetrics(*metricsAddr, reg, log)()
	g := newGateway(js, cfg, log, reg)
	if ac.keyFile != "" {
		if g.apns, err = newAPNs(ac); err != nil {
			return err
		}
	}
	if *fcmCreds != "" {
		creds, err := os.ReadFile(*fcmCreds)
		if err != nil {
			return fmt.Errorf("fcm: %w", err)
		}
		if g.fcm, err = newFCM(ctx, creds, *fcmEndpoint, &http.Client{Timeout: cfg.timeout}); err != nil {
			return err
		}
	}
	log.Info().Str("version", buildinfo.Get().Version).Str("endpoints", eps.String()).Bool("signed", len(cfg.secret) > 0).
		Bool("apns", g.apns != nil).Bool("apns_production", ac.production).Str("apns_key_id", ac.keyID).
		Bool("fcm", g.fcm != nil).Msg("ringer-push starting")
	relay.KeepConsuming(ctx, log, g.consume)
	return nil
}
