// Package broker is Ringer's stateless worker: it serves the command subjects
// (in a queue group shared by every broker), and shares three durable
// consumers with its peers — the projector (committed invitation changes →
// events and timers), the timers (deadlines → timeouts) and
// presence (vanished sessions → failures). All state lives in JetStream
// (package store), so any broker may die at any point without losing work.
package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ringer-dev/ringer/broker/journal"
	"github.com/ringer-dev/ringer/broker/push"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/subjects"
)

// Option configures a Broker.
type Option func(*Broker)

// WithLogger sets the structured logger (default: discard).
func WithLogger(l zerolog.Logger) Option { return func(b *Broker) { b.log = l } }

// Broker serves Ringer on one NATS connection. Create it with New, run it
// with Start, stop it with Shutdown.
type Broker struct {
	cfg   Config
	nc    *nats.Conn
	log   zerolog.Logger
	store *store.Store
	// journal holds the users' histories (see project).
	journal *journal.Journal

	mu        sync.Mutex
	started   bool
	stopped   bool
	sub       *nats.Subscription
	pulls     []*pull            // of the durable consumers (pulls.go)
	elections *nats.Subscription // JetStream's leader elections (listenElections)
	elected   chan struct{}      // an election happened (listenElections → colocate)
	pools     []*pool
	recorder  *recorder      // the projector's history and export steps (recorder.go)
	outbox    *outbox        // projects this broker's commits (nil: Config.ConsumerProjection)
	inflight  sync.WaitGroup // commands received and not yet answered
	jobs      chan job       // commands for the workers (see startWorkers)
	seq       *sequencer     // keeps each user's commands in order
	workers   sync.WaitGroup
	clock     func() time.Time // time.Now; tests may replace it
	// afterClaim, if set (tests only), runs right after a send's line
	// claims (a 1:1 or a group send's).
	afterClaim func()
	// onGlareWait, if set (tests only), runs when a send waits for its
	// callee's send to it (sendingToMe).
	onGlareWait func()
	// commandQueue and projectorQueue watch for a standing queue (see shed).
	commandQueue, projectorQueue *overload
	metrics                      *Metrics
	// sends and commands are the per-user rate limits of send and of
	// every other verb.
	sends, commands *limiter
	// fullAt is when JetStream last refused a write for lack of space (Unix
	// ns; 0: never): Check fails for fullFor after it.
	fullAt atomic.Int64
	// refusedLogAt is when a refused reply subject was last logged (Unix ns).
	refusedLogAt atomic.Int64
	// moves throttles reconnections to another NATS server (follow.go).
	moves serverMoves
	// bg runs the broker's own loops (colocate) until stopBG.
	bg     sync.WaitGroup
	stopBG context.CancelFunc
}

// fullFor is how long after a write refused for lack of space the broker
// reports itself not ready.
const fullFor = 10 * time.Second

// storeFull notes a write refused for lack of space: counted, reported by
// Check for fullFor, and logged at most once per fullFor.
func (b *Broker) storeFull(err error) {
	b.metrics.storeFull.Inc()
	now := time.Now().UnixNano()
	if last := b.fullAt.Swap(now); now-last >= int64(fullFor) {
		b.log.Error().Err(err).Msg("store full: JetStream refuses writes for lack of space; raise --store-max-bytes or the server's max_file_store, or lower --retention")
	}
}

// New validates cfg and returns a broker that will use nc. It does no I/O.
func New(nc *nats.Conn, cfg Config, opts ...Option) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if nc == nil {
		return nil, errors.New("broker: nil connection")
	}
	b := &Broker{cfg: cfg, nc: nc, clock: time.Now, elected: make(chan struct{}, 1), log: zerolog.Nop(), commandQueue: newOverload(cfg.ShedLatency, shedWindow), projectorQueue: newOverload(cfg.ShedLatency, shedWindow), metrics: newMetrics(),
		sends: newLimiter(cfg.SendRate, cfg.SendBurst), commands: newLimiter(cfg.CommandRate, cfg.CommandBurst)}
	for _, o := range opts {
		o(b)
	}
	b.log = b.log.With().Str("broker", cfg.Name).Logger()
	return b, nil
}

// Start provisions the bucket, streams and consumers (idempotently), then
// starts serving commands and consuming. It returns once the broker is ready.
func (b *Broker) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started {
		return errors.New("broker: already started")
	}
	if err := store.Provision(ctx, b.nc, store.ProvisionConfig{Replicas: b.cfg.Replicas, AckWait: b.cfg.AckWait, MaxBytes: b.cfg.StoreMaxBytes, Partitions: b.cfg.Partitions, Projector: b.cfg.ConsumerProjection}); err != nil {
		return err
	}
	opts := []store.Option{store.CacheSize(b.cfg.CacheSize)}
	if b.cfg.AtomicSends {
		opts = append(opts, store.AtomicBatches())
	}
	if b.cfg.Export {
		opts = append(opts, store.KeepChains()) // the export reads every revision's step
	}
	st, err := store.Open(ctx, b.nc, opts...)
	if err != nil {
		return err
	}
	b.store = st

	js := st.JetStream()
	if b.cfg.History {
		if err := journal.Provision(ctx, js, b.cfg.Journal()); err != nil {
			return err
		}
	}
	b.journal = journal.New(b.nc, js, b.cfg.HistorySize)
	if b.cfg.History {
		if err := b.journal.BindHistory(ctx); err != nil {
			return err
		}
	}
	if b.cfg.Export {
		if err := journal.ProvisionExport(ctx, js, b.cfg.Replicas, b.cfg.ExportRetention); err != nil {
			return err
		}
		if err := b.journal.BindExport(ctx); err != nil {
			return err
		}
	}
	if b.cfg.Push {
		if err := push.Provision(ctx, js, b.cfg.Replicas); err != nil {
			return err
		}
	}
	// One pool per kind of work, fed by that consumer of every partition:
	// an invitation or user is in one partition, so its changes still go
	// to one worker in stream order.
	b.recorder = b.newRecorder()
	b.outbox = nil
	if !b.cfg.ConsumerProjection {
		if b.outbox, err = b.newOutbox(ctx); err != nil {
			b.stopConsumers()
			return err
		}
	}
	timers, presence := newPool(16, 64, b.fire, timerOf), newPool(16, 64, b.presenceChanged, sessionUserOf)
	batches := newPool(4, 16, b.fireBatch, jetstream.Msg.Subject)
	b.pools = append(b.pools, timers, presence, batches)
	var projector *pool // the projector consumer's deliveries (Config.ConsumerProjection only)
	if b.cfg.ConsumerProjection {
		projector = newPool(16, 64, b.project, invitationOf)
		b.pools = append(b.pools, projector)
	}
	for _, c := range b.durables() {
		cons, err := js.Consumer(ctx, c.Stream, c.Consumer)
		if err != nil {
			b.stopConsumers()
			return fmt.Errorf("broker: bind consumer %s: %w", c, err)
		}
		p := map[string]*pool{store.ConsumerProjector: projector, store.ConsumerTimers: timers,
			store.ConsumerTimerBatches: batches, store.ConsumerPresence: presence}[c.Consumer]
		pl, err := startPull(c, cons, p.dispatch, b.cfg.PullHeartbeat, b.log)
		if err != nil {
			b.stopConsumers()
			return fmt.Errorf("broker: consume %s: %w", c, err)
		}
		b.pulls = append(b.pulls, pl)
	}
	if b.elections, err = listenElections(b.nc, b.pulls, b.elected); err != nil {
		b.stopConsumers()
		return fmt.Errorf("broker: subscribe to leader elections: %w", err)
	}

	b.startWorkers()
	sub, err := b.nc.QueueSubscribe(subjects.CommandWildcard(), b.cfg.QueueGroup, b.onCommand)
	if err != nil {
		b.stopConsumers()
		b.stopWorkers()
		return fmt.Errorf("broker: subscribe commands: %w", err)
	}
	_ = sub.SetPendingLimits(1<<20, 256<<20)
	if err := b.nc.FlushWithContext(ctx); err != nil {
		// Undo, so that StartRetrying can start afresh.
		if derr := sub.Drain(); derr != nil {
			_ = sub.Unsubscribe()
		}
		b.stopConsumers()
		b.stopCommands(sub)
		return fmt.Errorf("broker: flush: %w", err)
	}
	b.sub = sub
	b.started = true
	bgctx, cancel := context.WithCancel(context.Background())
	b.stopBG = cancel
	if b.outbox != nil {
		b.bg.Go(func() { b.outbox.run(bgctx) })
	}
	if b.store.Replicated() {
		b.bg.Add(1)
		go b.watchServer(bgctx)
		if b.cfg.LeaderCheck > 0 {
			b.bg.Add(1)
			go b.colocate(bgctx)
		}
	}
	b.metrics.gauges(b.census, censusEvery, b.Check)
	b.metrics.timerCounters(b.store.Stats)
	var instance string
	if b.outbox != nil {
		instance = b.outbox.instance
	}
	b.log.Info().Str("commands", subjects.CommandWildcard()).Str("queue", b.cfg.QueueGroup).Str("instance", instance).
		Str("server", b.nc.ConnectedServerName()).Msg("broker ready")
	return nil
}

// StartRetrying calls Start until it succeeds or ctx ends, giving each try
// at most each, and pausing half a second between tries. A cluster that is
// still electing its leaders (docker-compose brings everything up at once)
// refuses or leaves unanswered a provisioning request, and a stream or
// consumer create can hang until its deadline while a retry then succeeds
// at once (nats-server#3677, #8350): one deadline for every try is not
// enough. onRetry, if not nil, hears each failure that is retried.
func (b *Broker) StartRetrying(ctx context.Context, each time.Duration, onRetry func(error)) error {
	for {
		attempt, cancel := context.WithTimeout(ctx, each)
		err := b.Start(attempt)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		if onRetry != nil {
			onRetry(err)
		}
		select {
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
			return err
		}
	}
}

// stopConsumers undoes a partial Start so that it can be retried.
func (b *Broker) stopConsumers() {
	if b.elections != nil {
		_ = b.elections.Unsubscribe()
	}
	for _, p := range b.pulls {
		p.stop()
	}
	for _, p := range b.pools {
		p.close()
	}
	if b.recorder != nil {
		b.recorder.close() // after the pools: the projector hands it work
	}
	b.pulls, b.elections, b.pools, b.recorder = nil, nil, nil, nil
}

// Store returns the broker's store (nil before Start), for tests and tools
// that count KV round trips.
func (b *Broker) Store() *store.Store { return b.store }

// Instance is the id this run of the broker writes into every invitation
// revision it commits (store.HeaderWriter) and keeps its projection
// watermarks under (outbox.go); "" before Start, or with
// Config.ConsumerProjection.
func (b *Broker) Instance() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.outbox == nil {
		return ""
	}
	return b.outbox.instance
}

// Ready reports whether the broker is serving: started, not stopped, and
// connected to NATS.
func (b *Broker) Ready() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.started && !b.stopped && b.nc.IsConnected()
}

// Shutdown stops taking new work, finishes what is in flight (commands get
// their replies, consumed messages are acked or left for a peer), and
// returns. It is idempotent. It does not close the NATS connection.
func (b *Broker) Shutdown(ctx context.Context) error {
	b.mu.Lock()
	if b.stopped || !b.started {
		b.stopped = true
		b.mu.Unlock()
		return nil
	}
	b.stopped = true
	sub, pulls, elections, pools, rec, ob := b.sub, b.pulls, b.elections, b.pools, b.recorder, b.outbox
	b.mu.Unlock()
	if b.stopBG != nil {
		b.stopBG()
		b.bg.Wait()
	}

	if sub != nil {
		_ = sub.Drain()
	}
	if elections != nil {
		_ = elections.Unsubscribe()
	}
	drained := make([]<-chan struct{}, len(pulls))
	for i, p := range pulls {
		drained[i] = p.drain()
	}
	done := make(chan struct{})
	go func() {
		for _, c := range drained {
			<-c
		}
		b.stopCommands(sub)
		for _, p := range pools {
			p.close()
		}
		rec.close() // after the pools: the projector hands it work
		if ob != nil {
			ob.close(ctx) // after the recorder: its work releases the watermarks
		}
		close(done)
	}()
	select {
	case <-done:
		b.log.Info().Msg("broker stopped")
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopCommands waits until the command subscription sub, drained or
// unsubscribed, has handed over its last command and every command has
// been answered, then ends the workers.
func (b *Broker) stopCommands(sub *nats.Subscription) {
	if sub != nil {
		for sub.IsValid() {
			time.Sleep(5 * time.Millisecond) // nats.go offers no drain-complete channel for a subscription
		}
	}
	b.inflight.Wait()
	b.stopWorkers()
}

// nak asks JetStream to redeliver a message whose handling failed.
func (b *Broker) nak(m settler, where string) {
	b.metrics.kvError(where)
	_ = m.Nak()
}

// opContext bounds every store call made on behalf of one message.
func (b *Broker) opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}

// Check reports why the broker is not ready, or nil: it must be started, not
// stopped, connected, its bucket must answer and its consumers be bound.
func (b *Broker) Check(ctx context.Context) error {
	if !b.Ready() {
		return errors.New("broker: not serving")
	}
	if at := b.fullAt.Load(); at != 0 && time.Since(time.Unix(0, at)) < fullFor {
		return fmt.Errorf("broker: the store is full (a write was refused %s ago)", time.Since(time.Unix(0, at)).Round(time.Millisecond))
	}
	if _, _, err := b.store.GetLine(ctx, "readyz-probe"); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("broker: bucket unreachable: %w", err)
	}
	b.mu.Lock()
	pulls := b.pulls
	b.mu.Unlock()
	for _, p := range pulls {
		if p.closed() {
			return errors.New("broker: a durable consumer is no longer bound")
		}
	}
	for _, c := range b.durables() {
		if _, err := b.store.JetStream().Consumer(ctx, c.Stream, c.Consumer); err != nil {
			return fmt.Errorf("broker: consumer %s: %w", c, err)
		}
	}
	return nil
}

// durables are the durable consumers a broker consumes: each partition's
// timers, timer batches and presence, and its projector with
// Config.ConsumerProjection (else the outbox projects this broker's commits).
func (b *Broker) durables() []store.Group {
	var out []store.Group
	for p := range subjects.Partition(b.store.Partitions()) {
		out = append(out,
			store.Group{Stream: p.TimerStream(), Consumer: store.ConsumerTimers},
			store.Group{Stream: p.TimerStream(), Consumer: store.ConsumerTimerBatches},
			store.Group{Stream: p.BucketStream(), Consumer: store.ConsumerPresence})
		if b.cfg.ConsumerProjection {
			out = append(out, store.ProjectorGroup(p))
		}
	}
	return out
}

// census takes the cluster-wide figures of the gauges (store.Census).
func (b *Broker) census() (store.Census, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := b.store.Census(ctx, b.now(), overdueAfter)
	if err != nil {
		b.metrics.kvError("census")
		b.log.Warn().Err(err).Msg("census failed; the gauges keep their last values")
	}
	return c, err
}
