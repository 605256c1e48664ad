// Flags, the behaviour mix and their validation.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ringer-dev/ringer/internal/gcfloor"
)

// behaviour is what the two parties of one invitation do.
type behaviour int

const (
	bAccept          behaviour  = iota // callee accepts after think time; a party hangs up after hold time
	bRefuse                            // callee refuses after think time
	bCancel                            // caller cancels, either at once (before the ring) or after the ring
	bIgnore                            // callee rings and never answers → INVITATION_EXPIRE
	bOffline                           // callee never logged in → PEER_OFFLINE
	bBusy                              // callee is already ringing or in a call → REFUSED/BUSY
	bDisconnect                        // caller vanishes (no logout) after the ring → callee Failure(PEER_OFFLINE)
	bPush                              // callee's app is asleep with a push target; the simulated gateway wakes it, it logs in and accepts
	bGroup                             // a FIRST group invitation to --group-callees callees who all accept at once: one wins
	bGroupJoin                         // a JOIN group invitation: every callee joins, one more is invited late, parties leave (one rejoins) until one is left
	bGlare                             // two users call each other at the same instant: one call, the other invitation merged into it
	bCarrier                           // internal: makes a callee ring so that a busy collision has a target
	numMixBehaviours = bCarrier        // behaviours a --mix may weight
)

var behaviourNames = [...]string{"accept", "refuse", "cancel", "ignore", "offline", "busy", "disconnect", "push", "group", "groupjoin", "glare", "busy-carrier"}

func (b behaviour) String() string { return behaviourNames[b] }

// mix holds one weight per behaviour.
type mix [numMixBehaviours]float64

const defaultMix = "accept=50,refuse=15,cancel=10,ignore=5,offline=5,busy=10,disconnect=5"

// parseMix parses "accept=3,refuse=1,...": weights, any non-negative
// numbers; behaviours not named weigh 0.
func parseMix(s string) (mix, error) {
	var m mix
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			return m, fmt.Errorf("mix: %q is not name=weight", part)
		}
		w, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil || w < 0 {
			return m, fmt.Errorf("mix: weight %q of %s is not a non-negative number", val, name)
		}
		found := false
		for b := behaviour(0); b < numMixBehaviours; b++ {
			if b.String() == strings.TrimSpace(name) {
				m[b], found = w, true
			}
		}
		if !found {
			return m, fmt.Errorf("mix: unknown behaviour %q (known: %s)", name, strings.Join(behaviourNames[:numMixBehaviours], ", "))
		}
	}
	if m.total() == 0 {
		return m, errors.New("mix: every weight is zero")
	}
	return m, nil
}

func (m mix) total() float64 {
	t := 0.0
	for _, w := range m {
		t += w
	}
	return t
}

// pick maps u in [0,1) to a behaviour with probability proportional to its weight.
func (m mix) pick(u float64) behaviour {
	x := u * m.total()
	for b := behaviour(0); b < numMixBehaviours; b++ {
		if x < m[b] {
			return b
		}
		x -= m[b]
	}
	for b := numMixBehaviours - 1; b >= 0; b-- { // rounding: the last weighted one
		if m[b] > 0 {
			return b
		}
	}
	return bAccept
}

func (m mix) String() string {
	var parts []string
	for b := behaviour(0); b < numMixBehaviours; b++ {
		if m[b] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%g", b, m[b]))
		}
	}
	return strings.Join(parts, ",")
}

// config is everything the flags say.
type config struct {
	version       bool   // --version: print it and exit
	natsURL       string // empty: embedded NATS + broker
	users         int
	rate          float64 // open loop, invitations/s; 0 with concurrency 0 = idle users only
	concurrency   int     // closed loop
	duration      time.Duration
	count         int64  // --count: stop starting invitations after this many (0: none)
	csvPath       string // --csv: a row a second
	htmlPath      string // --html: the report with its charts
	mix           mix
	shortTimeouts bool
	timeouts      map[string]time.Duration // --timeouts overrides: offline, expire, accept
	jsonOut       bool
	seed          uint64
	drain         time.Duration

	baseline            bool
	baselineDuration    time.Duration
	baselineConcurrency int
	baselineNATS        string
	brokerMetrics       []string // --broker-metrics: the brokers' /metrics URLs
	baselineReplicas    int

	conns       int
	loginConc   int
	think       time.Duration // callee/caller think time before acting: uniform in [0, think]
	hold        time.Duration // call duration: uniform in [0, hold]
	cooldown    time.Duration // a user freed by an invitation waits this long before its next one
	maxInflight int
	// wakeMin, wakeMax bound how long the simulated push gateway takes to
	// wake an asleep callee (push behaviour): uniform in between.
	wakeMin, wakeMax   time.Duration
	historyReads       float64 // share of finished invitations after which the callee reads its history
	history            bool    // embedded mode: the brokers keep call histories (false: to measure their cost)
	followLeader       bool    // embedded R3: the brokers reconnect to the bucket leader's server (brokerd --follow-leader)
	consumerProjection bool    // embedded: the brokers project from the shared projector consumer (brokerd --consumer-projection)
	cacheGossip        bool    // embedded: the brokers tell each other their writes (brokerd --cache-gossip)
	atomicSends        bool    // embedded R3: a send's claims and record in one atomic batch (brokerd --atomic-sends)
	localIDs           bool    // invitations named in their caller's partition (as the Go client names them)
	groupCallees       int     // callees of a group or groupjoin invitation
	// pushListen, if set, is where loadgen serves a push gateway's
	// deliveries (POST /push, as ringer-push sends them) instead of reading
	// the push stream itself; pushSecretEnv names the signature key.
	pushListen, pushSecretEnv string

	presenceTTL time.Duration // embedded broker only
	replicas    int           // embedded: 1 server, or a 3-node cluster with R3
	brokers     int           // embedded: brokers in the queue group, each on its own connection
	partitions  int           // embedded: the brokers' --partitions
	settle      time.Duration // embedded R3: how long to wait for the leaders' hand-overs before measuring (0: not at all)
	cacheSize   int           // embedded: the brokers' --cache-size (-1: their default)
	timerBatch  time.Duration // embedded: the brokers' --timer-batch (-1: their default)
	export      bool          // embedded: the brokers' --export
	exportNATS  string        // against a deployment: the broker account's URL, to check its export
	// webhookListen, if set, is where loadgen serves a webhook relay's
	// deliveries (and checks them); webhookSecretEnv names its HMAC key.
	webhookListen, webhookSecretEnv string
	brokerLog                       bool

	gcFloor                       int // MiB, see internal/gcfloor
	cpuprofile, memprofile, trace string
}

// usageError is a bad command line: exit status 2.
type usageError struct{ error }

func parseConfig(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	var err error
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = usage(fs, stderr)
	var mixStr string
	var seed int64
	fs.BoolVar(&c.version, "version", false, "print the version and exit")
	fs.StringVar(&c.natsURL, "nats", os.Getenv("RINGER_NATS"), "NATS URL(s), comma-separated, of an existing Ringer deployment (credentials may be in the URL); empty: start an embedded NATS + broker (env RINGER_NATS)")
	fs.IntVar(&c.users, "users", 200, "simulated users (callers and callees; offline callees are a share of them)")
	fs.Float64Var(&c.rate, "rate", 50, "open loop: invitations started per second (0 with no --concurrency: only log users in and idle)")
	fs.IntVar(&c.concurrency, "concurrency", 0, "closed loop: invitations in flight at once (each slot starts the next when its invitation completes); excludes --rate")
	fs.DurationVar(&c.duration, "duration", 20*time.Second, "how long to start invitations (with --count and no --duration: until the count is reached)")
	fs.Int64Var(&c.count, "count", 0, "stop starting invitations after this many (like sipp -m); 0: none")
	fs.StringVar(&c.csvPath, "csv", "", "write a CSV row every second to this file while the run goes: t, started, completed, rate, inflight, errors, and the second's send→ring and accept→accepted p50/p99 (ms) and counts")
	fs.StringVar(&c.htmlPath, "html", "", "write the report to this self-contained HTML file, with charts of throughput and latency per second (nothing to fetch to view it)")
	fs.StringVar(&mixStr, "mix", defaultMix, "behaviour weights: accept, refuse, cancel, ignore, offline, busy, disconnect, push")
	fs.StringVar(&c.pushListen, "push-listen", "", "push behaviour: serve ringer-push's deliveries on this address (POST /push) instead of reading RINGER_PUSH with JetStream (a deployment where loadgen has no JetStream access)")
	fs.StringVar(&c.pushSecretEnv, "push-secret-env", "RINGER_PUSH_SECRET", "push behaviour with --push-listen: environment variable holding the key deliveries are signed with (none: not checked)")
	fs.IntVar(&c.groupCallees, "group-callees", 3, "callees of each group and groupjoin invitation (groupjoin invites one more into the call); 1..16")
	fs.Float64Var(&c.historyReads, "history-reads", 0, "share (0..1) of finished invitations after which the callee reads the newest page of its history (latency stage history_read)")
	fs.DurationVar(&c.wakeMin, "push-wake-min", 500*time.Millisecond, "push behaviour: shortest time from a push request to the woken callee's login")
	fs.DurationVar(&c.wakeMax, "push-wake-max", 3*time.Second, "push behaviour: longest time from a push request to the woken callee's login")
	fs.BoolVar(&c.shortTimeouts, "short-timeouts", false, "per-invitation timeouts offline/no-response 2s, expire 3s, accept-ack 2s (and a 3s presence TTL for the embedded broker); default: on in embedded mode, off with --nats")
	var timeouts string
	fs.StringVar(&timeouts, "timeouts", "", "per-invitation timeouts, e.g. offline=5s,expire=150s,accept=2s (applied over --short-timeouts or the broker's defaults; within the broker's bounds)")
	fs.BoolVar(&c.jsonOut, "json", false, "print the report as one JSON object on stdout (the human report goes to stderr)")
	fs.Int64Var(&seed, "seed", 1, "seed of the workload (behaviours, think and hold times, pairing order)")
	fs.DurationVar(&c.drain, "drain", 60*time.Second, "at the end, wait at most this long for every invitation to reach its terminal outcome")
	fs.BoolVar(&c.baseline, "baseline", false, "first measure raw NATS request-reply, KV create and KV update rates on scratch subjects/buckets")
	fs.DurationVar(&c.baselineDuration, "baseline-duration", 3*time.Second, "how long each baseline measurement runs")
	fs.IntVar(&c.baselineConcurrency, "baseline-concurrency", 0, "baseline workers (default: --concurrency, or 64 in open loop)")
	fs.Func("broker-metrics", "with --nats: the brokers' /metrics URLs (brokerd --http), comma-separated; the report adds their own CPU per completed invitation and their largest RSS (broker_process)", func(v string) error {
		for _, u := range strings.Split(v, ",") {
			if u = strings.TrimSpace(u); u != "" {
				c.brokerMetrics = append(c.brokerMetrics, u)
			}
		}
		return nil
	})
	fs.StringVar(&c.baselineNATS, "baseline-nats", "", "NATS URL for the baseline when --nats credentials have no JetStream (e.g. the broker's account); default: the workload's NATS")
	fs.IntVar(&c.baselineReplicas, "baseline-replicas", 0, "replicas of the scratch baseline bucket (default: --replicas; use Ringer's, 3 in a cluster)")
	fs.IntVar(&c.conns, "conns", 8, "NATS connections shared by the simulated users")
	fs.IntVar(&c.loginConc, "login-concurrency", 64, "logins in flight at once during start-up")
	fs.DurationVar(&c.think, "think", 100*time.Millisecond, "think time before answering, canceling after the ring or vanishing: uniform in [0, think]")
	fs.DurationVar(&c.hold, "hold", 500*time.Millisecond, "call duration before a party hangs up: uniform in [0, hold]")
	fs.DurationVar(&c.cooldown, "cooldown", 0, "a user freed by an invitation waits this long before its next one (0: none; a party who saw the outcome is free at once, so a non-zero cool-down only models people, and in a closed loop it caps the rate at --users / 2 / (cool-down + a lifecycle))")
	fs.IntVar(&c.maxInflight, "max-inflight", 100000, "open loop: do not start an invitation while this many are in flight")
	fs.DurationVar(&c.presenceTTL, "presence-ttl", 0, "embedded broker's presence TTL (default 3s with --short-timeouts, else 15s); clients heartbeat every TTL/3")
	fs.IntVar(&c.replicas, "replicas", 1, "embedded mode: 1 = one NATS server, R1; 3 = a three-node in-process JetStream cluster, R3 (the production layout)")
	fs.IntVar(&c.partitions, "partitions", 1, "embedded mode: the brokers' --partitions (state spread over this many buckets and timer streams, their leaders over the servers)")
	fs.DurationVar(&c.settle, "settle", time.Minute, "embedded mode with --replicas 3: wait at most this long for the brokers to put the Raft groups' leaders where they want them before logging users in, so that a benchmark does not measure a fresh cluster's hand-overs; 0: do not wait (a test of behaviour, not of speed)")
	fs.IntVar(&c.brokers, "brokers", 1, "embedded mode: brokers sharing the work (one queue group, each on its own NATS connection)")
	fs.IntVar(&c.cacheSize, "cache-size", -1, "embedded mode: the brokers' record cache size (0 = none; -1 = brokerd's default)")
	fs.DurationVar(&c.timerBatch, "timer-batch", -1, "embedded mode: the brokers' --timer-batch window, e.g. 10ms (0 = one schedule per timer; unset: brokerd's default)")
	fs.BoolVar(&c.cacheGossip, "cache-gossip", true, "embedded mode: the brokers tell each other every invitation and line they write, keeping their record caches current (brokerd --cache-gossip, on by default); matters with --brokers 2 or more; --cache-gossip=false to compare")
	fs.BoolVar(&c.atomicSends, "atomic-sends", true, "embedded mode with --replicas 3: a send writes its line claims and its record as one atomic batch where they share a partition (brokerd --atomic-sends, on by default); --atomic-sends=false to compare")
	fs.BoolVar(&c.localIDs, "local-ids", true, "name each invitation so that its record lives in its caller's partition, as the Go client does with the ids it draws (Client.NewInvitationID); --local-ids=false names them without regard to partitions, to compare")
	fs.BoolVar(&c.consumerProjection, "consumer-projection", false, "embedded mode: the brokers project from the shared projector consumer (brokerd --consumer-projection), to compare with the committing broker's own projection")
	fs.BoolVar(&c.followLeader, "follow-leader", false, "embedded mode with --replicas 3: the brokers reconnect to the server that leads their partition's bucket (brokerd --follow-leader, off by default), to measure what crossing a route costs")
	fs.BoolVar(&c.history, "history", true, "embedded mode: the brokers keep call histories (brokerd --history); --history=false measures what they cost per call (needs --history-reads 0; a device that misses a ring then cannot catch up from its history)")
	fs.BoolVar(&c.export, "export", false, "embedded mode: the brokers export every transition (brokerd --export), to measure what it costs; the run then checks the export")
	fs.StringVar(&c.webhookListen, "webhook-listen", "", "serve a webhook relay's deliveries on this address (POST; point ringer-webhook --endpoint at it) and check them: signed, each invitation's in order, every exported transition delivered")
	fs.StringVar(&c.webhookSecretEnv, "webhook-secret-env", "RINGER_WEBHOOK_SECRET", "environment variable holding the webhook relay's HMAC key (none: signatures are not checked)")
	fs.StringVar(&c.exportNATS, "export-nats", "", "against a deployment whose brokers run with --export: a NATS URL of the broker account (the one with JetStream), to check the export at the end")
	fs.BoolVar(&c.brokerLog, "broker-log", false, "embedded broker: log warnings and errors to stderr")
	fs.IntVar(&c.gcFloor, "gc-floor", gcfloor.DefaultMiB, "MiB the heap may reach before Go's garbage collector runs, as brokerd's --gc-floor (this process hosts thousands of simulated clients, and embedded, NATS and the broker: each collection of that heap takes 0.1-0.5 s on two cores and shows in the latencies measured, see gc_cycles; 2048 keeps a run of 20 s at 500/s free of them, at some CPU); 0 = Go's default; an explicit GOGC wins")
	fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile of the whole process (loadgen, and the broker and NATS when embedded) to this file")
	fs.StringVar(&c.memprofile, "memprofile", "", "write a heap profile at the end of the run to this file")
	fs.StringVar(&c.trace, "trace", "", "write a Go execution trace of the whole process to this file (go tool trace; for latency tails)")
	if err = fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if c.version {
		return c, nil
	}
	if c.count < 0 {
		return nil, usageError{errors.New("--count must not be negative")}
	}
	durationSet := false
	fs.Visit(func(f *flag.Flag) { durationSet = durationSet || f.Name == "duration" })
	if c.count > 0 && !durationSet {
		c.duration = 24 * time.Hour // the count decides
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["short-timeouts"] {
		c.shortTimeouts = c.natsURL == ""
	}
	if set["concurrency"] && set["rate"] && c.concurrency > 0 && c.rate > 0 {
		return nil, usageError{errors.New("--rate (open loop) and --concurrency (closed loop) exclude each other")}
	}
	if c.concurrency > 0 {
		c.rate = 0
	}
	if c.presenceTTL == 0 {
		c.presenceTTL = 15 * time.Second
		if c.shortTimeouts {
			c.presenceTTL = 3 * time.Second
		}
	}
	if c.baselineConcurrency == 0 {
		c.baselineConcurrency = 64
		if c.concurrency > 0 {
			c.baselineConcurrency = c.concurrency
		}
	}
	if c.baselineReplicas == 0 {
		c.baselineReplicas = c.replicas
	}
	c.seed = uint64(seed)
	if c.timeouts, err = parseTimeouts(timeouts); err != nil {
		return nil, usageError{err}
	}
	m, err := parseMix(mixStr)
	if err != nil {
		return nil, usageError{err}
	}
	c.mix = m
	switch {
	case c.users < 2:
		return nil, usageError{errors.New("--users must be at least 2")}
	case c.rate < 0 || c.concurrency < 0:
		return nil, usageError{errors.New("--rate and --concurrency must not be negative")}
	case c.duration <= 0:
		return nil, usageError{errors.New("--duration must be positive")}
	case c.drain < 0 || c.think < 0 || c.hold < 0 || c.cooldown < 0:
		return nil, usageError{errors.New("--drain, --think, --hold and --cooldown must not be negative")}
	case c.groupCallees < 1 || c.groupCallees > 16:
		return nil, usageError{errors.New("--group-callees must be 1..16 (a broker's default bound)")}
	case c.historyReads < 0 || c.historyReads > 1:
		return nil, usageError{errors.New("--history-reads is a share, 0..1")}
	case len(c.brokerMetrics) > 0 && c.natsURL == "":
		return nil, usageError{errors.New("--broker-metrics reads the brokers of a deployment: only with --nats (embedded, their CPU is loadgen's)")}
	case !c.history && (c.historyReads > 0 || c.natsURL != ""):
		return nil, usageError{errors.New("--history=false turns off the embedded brokers' histories: not with --history-reads or --nats")}
	case c.wakeMin < 0 || c.wakeMax < c.wakeMin:
		return nil, usageError{errors.New("want 0 <= --push-wake-min <= --push-wake-max")}
	case c.conns < 1 || c.loginConc < 1 || c.baselineConcurrency < 1 || c.maxInflight < 1:
		return nil, usageError{errors.New("--conns, --login-concurrency, --baseline-concurrency and --max-inflight must be at least 1")}
	case c.replicas != 1 && c.replicas != 3:
		return nil, usageError{errors.New("--replicas must be 1 or 3")}
	case c.brokers < 1 || c.brokers > 16:
		return nil, usageError{errors.New("--brokers must be 1..16")}
	case c.timerBatch < -1 || c.timerBatch > time.Second:
		return nil, usageError{errors.New("--timer-batch must be 0 (off) or up to 1s")}
	case c.cacheSize < -1:
		return nil, usageError{errors.New("--cache-size must be -1 (brokerd's default), 0 (none) or more")}
	case c.gcFloor < 0:
		return nil, usageError{errors.New("--gc-floor must be 0 (Go's pacing) or more")}
	case c.settle < 0:
		return nil, usageError{errors.New("--settle must not be negative")}
	case c.presenceTTL < time.Second:
		return nil, usageError{errors.New("--presence-ttl must be at least 1s")}
	}
	return c, nil
}

// parseTimeouts parses "offline=2s,expire=3s,accept=2s".
func parseTimeouts(s string) (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		d, err := time.ParseDuration(strings.TrimSpace(val))
		switch name = strings.TrimSpace(name); {
		case !ok || err != nil || d <= 0:
			return nil, fmt.Errorf("timeouts: %q is not name=duration", part)
		case name != "offline" && name != "expire" && name != "accept":
			return nil, fmt.Errorf("timeouts: unknown timeout %q (known: offline, expire, accept)", name)
		}
		out[name] = d
	}
	return out, nil
}

// mode describes the loop for the report.
func (c *config) mode() string {
	switch {
	case c.concurrency > 0:
		return fmt.Sprintf("closed loop, concurrency %d", c.concurrency)
	case c.rate > 0:
		return fmt.Sprintf("open loop, %g invitations/s", c.rate)
	}
	return "idle users only (no invitations)"
}

// sortedKeys returns m's keys in order, for stable output.
func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
