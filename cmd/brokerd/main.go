// Command brokerd runs a Ringer broker. With no --nats URL it starts an
// embedded nats-server with JetStream, so `go run ./cmd/brokerd` is a complete
// single-node deployment; with --nats it joins an existing NATS (>= 2.12).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ringer-dev/ringer/broker"
	"github.com/ringer-dev/ringer/internal/buildinfo"
	"github.com/ringer-dev/ringer/internal/embedded"
	"github.com/ringer-dev/ringer/internal/gcfloor"
)

type options struct {
	listen, data, natsURL, httpAddr, name string
	logLevel, logFormat                   string
	syncAlways, pprof, version, natsOrder bool
	gcFloor                               int
	cfg                                   broker.Config
	auth                                  authOptions
	tls                                   tlsOptions
}

func parseFlags(args []string) (*options, error) {
	o := &options{cfg: broker.DefaultConfig()}
	fs := flag.NewFlagSet("brokerd", flag.ContinueOnError)
	host, _ := os.Hostname()
	fs.StringVar(&o.listen, "listen", "127.0.0.1:4222", "client address of the embedded NATS server (ignored with --nats)")
	fs.StringVar(&o.data, "data", filepath.Join(os.TempDir(), "ringer-data"), "JetStream store directory of the embedded server")
	fs.StringVar(&o.natsURL, "nats", "", "NATS URL(s), comma-separated, to join instead of embedding a server")
	fs.BoolVar(&o.natsOrder, "nats-ordered", false, "connect to the first of the --nats URLs that answers, in the order given, instead of a random one: list each broker's own server first to spread the brokers over the servers (docs/operations.md)")
	fs.StringVar(&o.httpAddr, "http", "127.0.0.1:8222", "address for /healthz, /readyz and /metrics; empty disables")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	fs.BoolVar(&o.pprof, "pprof", false, "also serve Go's /debug/pprof/ on --http (profiles reveal internals: keep --http private)")
	fs.StringVar(&o.name, "name", host, "broker name in logs")
	fs.StringVar(&o.logLevel, "log-level", "info", "trace, debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "console", "console or json")
	fs.IntVar(&o.gcFloor, "gc-floor", gcfloor.DefaultMiB, "MiB the heap may reach before Go's garbage collector runs (fewer collections, shorter latency tails); 0 = Go's default; an explicit GOGC wins")
	fs.BoolVar(&o.syncAlways, "sync-always", false, "embedded server: fsync every JetStream write before acknowledging it")
	fs.IntVar(&o.cfg.Replicas, "replicas", o.cfg.Replicas, "replicas of Ringer's bucket, stream and consumers (3 in a cluster)")
	fs.IntVar(&o.cfg.Partitions, "partitions", o.cfg.Partitions, "partitions of Ringer's state, each a bucket and a timer stream led by a server of its own; fixed by the first broker to start (all must agree): a cluster of N servers wants N or more")
	fs.IntVar(&o.cfg.Workers, "workers", o.cfg.Workers, "commands processed concurrently")
	fs.DurationVar(&o.cfg.ShedLatency, "shed-latency", o.cfg.ShedLatency, "refuse new sends with UNAVAILABLE while even the fastest commands take longer than this (a standing queue; 0 = never shed)")
	fs.DurationVar(&o.cfg.PresenceTTL, "presence-ttl", o.cfg.PresenceTTL, "a session without heartbeat for this long is lost")
	fs.DurationVar(&o.cfg.Timeouts.Offline, "offline-timeout", o.cfg.Timeouts.Offline, "SENT → PEER_OFFLINE / PEER_NO_RESPONSE")
	fs.DurationVar(&o.cfg.Timeouts.Expire, "expire-timeout", o.cfg.Timeouts.Expire, "RECEIVED → INVITATION_EXPIRE")
	fs.DurationVar(&o.cfg.Timeouts.Accept, "accept-timeout", o.cfg.Timeouts.Accept, "ACCEPTING → ACCEPT_FAILURE")
	fs.DurationVar(&o.cfg.Timeouts.MaxDuration, "max-call", 0, "end calls after this long (0 = never)")
	fs.DurationVar(&o.cfg.MinTimeout, "min-timeout", o.cfg.MinTimeout, "smallest per-invitation timeout a client may ask for")
	fs.DurationVar(&o.cfg.MaxTimeout, "max-timeout", o.cfg.MaxTimeout, "largest per-invitation timeout a client may ask for")
	fs.BoolVar(&o.cfg.RequireRequestInfo, "require-request-info", false, "secure mode: refuse commands whose server-stamped Nats-Request-Info user differs from the subject's (needs a service import with share: true)")
	fs.BoolVar(&o.cfg.OwnReplies, "own-replies", false, "secure mode: reply only on the acting user's own reply subject (Ringer-Reply header); on by itself with --auth-callout or --require-request-info")
	fs.Float64Var(&o.cfg.SendRate, "send-rate", o.cfg.SendRate, "invitations one user may send per second per broker, on average (0 = unlimited)")
	fs.IntVar(&o.cfg.SendBurst, "send-burst", o.cfg.SendBurst, "invitations one user may send at once per broker")
	fs.Float64Var(&o.cfg.CommandRate, "command-rate", o.cfg.CommandRate, "other commands (login, heartbeat, get, accept, …) one user may make per second per broker, on average (0 = unlimited)")
	fs.IntVar(&o.cfg.CommandBurst, "command-burst", o.cfg.CommandBurst, "other commands one user may make at once per broker")
	fs.IntVar(&o.cfg.MaxOutgoing, "max-outgoing", o.cfg.MaxOutgoing, "live invitations and calls one user may have as the caller")
	fs.IntVar(&o.cfg.MaxCallees, "max-callees", o.cfg.MaxCallees, "callees a group invitation may ring (at the send and invited later)")
	fs.IntVar(&o.cfg.MaxIncoming, "max-incoming", o.cfg.MaxIncoming, "invitations a line keeps waiting for one callee (more senders are refused as busy)")
	fs.DurationVar(&o.cfg.UnreceivedHold, "unreceived-hold", o.cfg.UnreceivedHold, "how long an invitation no callee device has received keeps the callee busy (0 = as long as it rings)")
	fs.IntVar(&o.cfg.MaxDevices, "max-devices", o.cfg.MaxDevices, "devices one user may have logged in at once")
	fs.Int64Var(&o.cfg.StoreMaxBytes, "store-max-bytes", o.cfg.StoreMaxBytes, "largest size of Ringer's bucket in bytes (0 = unbounded); writes beyond are refused")
	fs.DurationVar(&o.cfg.Retention, "retention", o.cfg.Retention, "how long finished invitations stay readable (get, retried sends)")
	fs.BoolVar(&o.cfg.History, "history", o.cfg.History, "keep each user's call history (two stream writes per finished invitation)")
	fs.IntVar(&o.cfg.HistorySize, "history-size", o.cfg.HistorySize, "finished invitations kept in each user's history (1..1000; every history read fetches up to this many)")
	fs.DurationVar(&o.cfg.HistoryRetention, "history-retention", o.cfg.HistoryRetention, "how long a history entry stays")
	fs.BoolVar(&o.cfg.Export, "export", o.cfg.Export, "append every transition of every invitation to the RINGER_EXPORT stream, once each and in order (docs/protocol.md, \"Export\"); a read and a write per transition")
	fs.DurationVar(&o.cfg.ExportRetention, "export-retention", o.cfg.ExportRetention, "how long an exported transition stays")
	fs.BoolVar(&o.cfg.Push, "push", o.cfg.Push, "put push requests on the RINGER_PUSH stream for devices registered for pushes (docs/push.md)")
	fs.DurationVar(&o.cfg.PushTTL, "push-ttl", o.cfg.PushTTL, "how long a push registration lasts when the device asks for no TTL")
	fs.DurationVar(&o.cfg.MaxPushTTL, "max-push-ttl", o.cfg.MaxPushTTL, "longest push registration a device may ask for")
	fs.IntVar(&o.cfg.MaxPushDevices, "max-push-devices", o.cfg.MaxPushDevices, "devices with a push target per user (1..100)")
	fs.IntVar(&o.cfg.MaxBlocked, "max-blocked", o.cfg.MaxBlocked, "callers one user may block (1..500)")
	fs.Int64Var(&o.cfg.HistoryMaxBytes, "history-max-bytes", o.cfg.HistoryMaxBytes, "largest size of the history stream in bytes (0 = unbounded); beyond, the oldest entries go")
	fs.DurationVar(&o.cfg.ClaimGrace, "claim-grace", o.cfg.ClaimGrace, "how long a line claim whose invitation was never written keeps the line busy")
	fs.IntVar(&o.cfg.CacheSize, "cache-size", o.cfg.CacheSize, "invitation and line records kept in memory to skip reads (0 = no cache)")
	fs.DurationVar(&o.cfg.AckWait, "ack-wait", o.cfg.AckWait, "how long a dead broker's in-flight work waits before a peer redoes it")
	fs.BoolVar(&o.cfg.CacheGossip, "cache-gossip", o.cfg.CacheGossip, "tell the other brokers every invitation and line this broker writes, on _RINGER.cache.<instance>, and keep what they write in the record cache, so that commands rarely start from a stale record when there are several brokers (docs/architecture.md, \"Record cache\"); a lone broker publishes nothing; needs the cache and the committing broker's projection; --cache-gossip=false turns it off")
	fs.BoolVar(&o.cfg.AtomicSends, "atomic-sends", o.cfg.AtomicSends, "with --replicas 3, write a send's line claims and its record as one atomic batch (one Raft proposal) where they share a partition, after the claim of a line in another partition; new ids are minted in the caller's partition; one server never batches (docs/architecture.md, \"Atomic sends\"); --atomic-sends=false writes them one by one")
	fs.BoolVar(&o.cfg.ConsumerProjection, "consumer-projection", o.cfg.ConsumerProjection, "project committed revisions from the shared projector consumer, as releases before 2026-12-05 did, instead of on the committing broker right after each commit (docs/architecture.md, \"Events\"); a fallback, slower")
	fs.DurationVar(&o.cfg.TimerBatch, "timer-batch", o.cfg.TimerBatch, "gather the durable timers armed within this window into one schedule per 100 ms slot, stored on the partitions' timer streams in turn (adds at most 100 ms to a timeout); each timer waits at least half the window and is not stored if its invitation needs it no more by then (it ended, or its call was answered); 0: one schedule per timer")
	fs.DurationVar(&o.cfg.LeaderCheck, "leader-check", o.cfg.LeaderCheck, "with --replicas > 1: how often to check that the Raft groups a call depends on are led by the bucket's leader, and move those that are not (a node that hangs then stalls calls only if it leads the bucket); 0 never")
	fs.DurationVar(&o.cfg.LeaderCheckIdle, "leader-check-idle", o.cfg.LeaderCheckIdle, "with --leader-check: while every Raft group is led where it should be, the checks grow apart, doubling up to this interval; a leader election JetStream announces, a reconnect, or a check that finds a group to move (or one that cannot move yet: its replica catching up) brings them back to every --leader-check. Each check asks JetStream about every group of every partition, a cost the servers pay even when idle; at most --leader-check: checks every --leader-check")
	fs.DurationVar(&o.cfg.PullHeartbeat, "pull-heartbeat", o.cfg.PullHeartbeat, "idle heartbeat of the broker's pulls of its durable consumers (timers, presence): a pull that vanished without JetStream announcing its consumer's new leader is renewed after two missed heartbeats (an announced election, or a pull that found no leader, renews it within 250 ms). Each heartbeat makes the consumer's leader rewrite its replicated state; shorter heals faster, costs more (docs/benchmarks.md, \"Consumer state files\"); under 15s")
	fs.BoolVar(&o.cfg.FollowLeader, "follow-leader", o.cfg.FollowLeader, "with --replicas > 1 and --leader-check: reconnect to the NATS server that leads this broker's partition's bucket when connected elsewhere (at two looks in a row, at most once per 10 s), so that its KV operations and consumer deliveries do not cross a route; helps when the NATS servers share a machine's CPU, hurts when each has its own (docs/operations.md)")
	o.auth.register(fs)
	o.tls.register(fs)
	configFile := fs.String("config", "", "YAML file whose keys are these flag names (unknown keys are an error); every flag can also be set as RINGER_<FLAG_NAME>")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := applySettings(fs, *configFile, os.Getenv); err != nil {
		return nil, err
	}
	if _, err := zerolog.ParseLevel(o.logLevel); err != nil || o.logLevel == "" {
		return nil, fmt.Errorf("--log-level %q: trace, debug, info, warn or error", o.logLevel)
	}
	if o.logFormat != "console" && o.logFormat != "json" {
		return nil, fmt.Errorf("--log-format %q: console or json", o.logFormat)
	}
	o.cfg.Name = o.name
	// In secure mode a user could aim replies at another user's subjects.
	o.cfg.OwnReplies = o.cfg.OwnReplies || o.auth.enabled || o.cfg.RequireRequestInfo
	if o.gcFloor < 0 {
		return nil, fmt.Errorf("--gc-floor %d: MiB, 0 (Go's pacing) or more", o.gcFloor)
	}
	if err := o.auth.prepare(o.natsURL); err != nil {
		return nil, err
	}
	if err := o.tls.prepare(); err != nil {
		return nil, err
	}
	return o, o.cfg.Validate()
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if o != nil && o.version {
		fmt.Println(buildinfo.Get().String("brokerd"))
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "brokerd:", err)
		os.Exit(2)
	}
	log := newLogger(o.logLevel, o.logFormat)
	bi := buildinfo.Get()
	log.Info().Str("version", bi.Version).Str("commit", bi.Commit).Str("go", bi.GoVersion).Msg("brokerd starting")
	log.Info().Msg(gcfloor.Set(o.gcFloor))
	if err := run(o, log); err != nil {
		log.Error().Err(err).Msg("brokerd failed")
		os.Exit(1)
	}
}

// newLogger builds the logger of a validated --log-level and --log-format:
// JSON with millisecond timestamps, or console lines, coloured only on a
// terminal.
func newLogger(level, format string) zerolog.Logger {
	lvl, _ := zerolog.ParseLevel(level)
	zerolog.TimeFieldFormat = "2006-01-02T15:04:05.000Z07:00"
	var l zerolog.Logger
	if format == "json" {
		l = zerolog.New(os.Stderr)
	} else {
		l = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05.000",
			NoColor: !isatty.IsTerminal(os.Stderr.Fd())})
	}
	return l.Level(lvl).With().Timestamp().Logger()
}

// startHint says what a start error most likely means, for the log line
// and the exit message ("" when nothing more can be said). No JetStream
// answering looks the same as a cluster still electing its leaders, so it
// is retried all the same.
func startHint(err error) string {
	switch {
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount),
		errors.Is(err, nats.ErrNoResponders):
		return "no JetStream answers: is it enabled on that server (nats-server -js) and for the broker's account? A cluster still electing its leaders answers so for a few seconds too"
	case errors.Is(err, context.DeadlineExceeded):
		return "JetStream did not answer in time: a cluster still starting or electing, or a server overloaded"
	}
	return ""
}

// brokerConn opens the broker's connection to NATS at url.
func brokerConn(o *options, url string, log zerolog.Logger) (*nats.Conn, error) {
	opts := append([]nats.Option{nats.Name("ringer-broker " + o.name), nats.MaxReconnects(-1),
		// Notice a frozen server in 2-3 s, not the 2 min default: while the
		// broker's server hangs, so does every command it serves (chaos
		// runs: 2 s x 2 let all three brokers, on the node that froze, stall
		// for 5-6 s).
		nats.PingInterval(time.Second), nats.MaxPingsOutstanding(2),
		nats.ReconnectWait(250 * time.Millisecond),
		// No reconnect buffer: a publish while the connection is down fails
		// at once. Buffered, a write the broker had given up on (its client
		// told UNAVAILABLE, its outbox counting it as not stored) would be
		// sent after the reconnect and stored seconds later, unprojected;
		// events and replies fail too, and are retried (the outbox) or
		// asked again (clients).
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn().Err(err).Msg("nats disconnected") }),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info().Str("url", c.ConnectedUrlRedacted()).Str("server", c.ConnectedServerName()).Msg("nats reconnected")
		}),
	}, o.tls.natsOptions()...)
	if o.natsOrder {
		opts = append(opts, nats.DontRandomize())
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", url, err)
	}
	return nc, nil
}

func run(o *options, log zerolog.Logger) error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)

	url := o.natsURL
	if url == "" {
		host, port, err := splitHostPort(o.listen)
		if err != nil {
			return err
		}
		srv, err := embedded.Start(embedded.Config{Name: "ringer-embedded", Host: host, Port: port, StoreDir: o.data, SyncAlways: o.syncAlways})
		if err != nil {
			return err
		}
		defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
		url = srv.ClientURL()
		log.Warn().Str("nats", url).Str("data", o.data).
			Msg("embedded NATS server started in DEVELOPMENT MODE: no auth, the broker trusts every client — connect clients to this URL")
	}
	nc, err := brokerConn(o, url, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	stopAuth, err := startAuth(&o.auth, o.name, log, o.tls.natsOptions()...)
	if err != nil {
		return err
	}
	defer stopAuth()

	b, err := broker.New(nc, o.cfg, broker.WithLogger(log))
	if err != nil {
		return err
	}
	startCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = b.StartRetrying(startCtx, 5*time.Second, func(err error) {
		log.Warn().Err(err).Str("hint", startHint(err)).Msg("broker start failed; retrying")
	})
	cancel()
	if err != nil {
		if h := startHint(err); h != "" {
			return fmt.Errorf("%w (%s)", err, h)
		}
		return err
	}
	if o.httpAddr != "" {
		stop, err := serveHTTP(o.httpAddr, o.pprof, b, nc, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	log.Info().Str("nats", nc.ConnectedUrlRedacted()).Int("replicas", o.cfg.Replicas).Int("partitions", o.cfg.Partitions).Msg("brokerd serving; SIGTERM drains")

	<-sigs
	log.Info().Msg("draining (send the signal again to exit at once)")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		<-sigs
		log.Warn().Msg("second signal: exiting now")
		os.Exit(1)
	}()
	if err := b.Shutdown(ctx); err != nil {
		return err
	}
	return nc.Drain()
}
