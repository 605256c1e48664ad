package broker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/buildinfo"
	"github.com/ringer-dev/ringer/protocol"
)

// Metrics are a broker's Prometheus collectors, on a registry of its own so
// that several brokers can live in one process (tests).
type Metrics struct {
	Registry       *prometheus.Registry
	commands       *prometheus.CounterVec
	latency        *prometheus.HistogramVec
	outcomes       *prometheus.CounterVec
	transitions    *prometheus.CounterVec
	kvErrors       *prometheus.CounterVec
	sheds          prometheus.Counter
	batchesRefused prometheus.Counter
	storeFull      prometheus.Counter
	repliesRefused prometheus.Counter
	timerLateness  prometheus.Histogram
	pushRequests   *prometheus.CounterVec
	leaderMoves    *prometheus.CounterVec
	serversLeft    prometheus.Counter
	leaderFollows  prometheus.Counter
	leaderChecks   prometheus.Counter
	outboxHeld     prometheus.Gauge
	outboxLag      prometheus.Gauge
	outboxRetries  prometheus.Counter
	outboxUnknown  *prometheus.CounterVec
	outboxReclaims prometheus.Counter
	outboxReplayed prometheus.Counter
}

func newMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ringer", Name: "commands_total", Help: "Commands served, by verb and result (ok or error code).",
		}, []string{"verb", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "ringer", Name: "command_seconds", Help: "Command service time, by verb.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"verb"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ringer", Name: "outcomes_total", Help: "Invitations and calls finished, by state and reason (counted by the projector, at least once).",
		}, []string{"state", "reason"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ringer", Name: "transitions_total", Help: "State changes this broker committed (exactly once each), by new state, call state and cause.",
		}, []string{"state", "call", "cause"}),
		kvErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ringer", Name: "kv_errors_total", Help: "JetStream operations that failed (not CAS conflicts), by where.",
		}, []string{"where"}),
		sheds: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ringer", Name: "sends_shed_total", Help: "Sends refused with UNAVAILABLE because the broker was overloaded (a standing queue: see --shed-latency).",
		}),
		batchesRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ringer", Name: "send_batches_refused_total", Help: "Atomic sends (--atomic-sends) whose batch JetStream turned away unstored (50 batches in flight on the stream, a batch message lost, or atomic publish disabled), written one by one instead.",
		}),
		storeFull: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ringer", Name: "store_full_total", Help: "Writes JetStream refused for lack of space (the bucket's --store-max-bytes or the server's max_file_store); /readyz fails while they happen.",
		}),
		repliesRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ringer", Name: "replies_refused_total", Help: "Commands refused without a reply because they asked for it somewhere other than the acting user's own reply subject (--own-replies, secure mode).",
		}),
		pushRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ringer", Name: "push_requests_total", Help: "Push requests put on the push stream for gateways, by kind (RING, STOP; at least once: the stream drops repeats).",
		}, []string{"kind"}),
		leaderMoves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ringer", Name: "leader_moves_total", Help: "Raft groups this broker asked to hand their leadership to the bucket's leader (--leader-check), by group.",
		}, []string{"group"}),
		serversLeft: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ringer", Name: "nats_servers_left_total", Help: "Times this broker left its NATS server because every write had failed for seconds (a server cut off from the cluster, or a cluster-wide election).",
		}),
		leaderChecks: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ringer", Name: "leader_checks_total", Help: "Leader checks this broker made (--leader-check, less often while nothing needs moving: --leader-check-idle), each a look at every Raft group's leader.",
		}),
		leaderFollows: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ringer", Name: "nats_server_follows_total", Help: "Times this broker reconnected to follow the server leading its partition's bucket (--follow-leader).",
		}),
		outboxHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "ringer", Name: "outbox_held", Help: "Invitation writes of this broker in flight or committed and not yet projected, as of the last watermark refresh (every --ack-wait/4).",
		}),
		outboxLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "ringer", Name: "outbox_watermark_lag", Help: "Stream sequences between this broker's watermarks and the last sequence acknowledged to it, summed over partitions, as of the last refresh: what a peer would replay past the writes it needs if this broker died now.",
		}),
		outboxRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ringer", Name: "outbox_retries_total", Help: "Projections of this broker's commits tried again after a failure (a publish, or a full recorder queue).",
		}),
		outboxUnknown: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ringer", Name: "outbox_unknown_writes_total", Help: "Invitation writes whose answer was lost or was a compare-and-set conflict, by what a read then found (stored: projected; not_stored: dropped; undecided: still at the revision it expected a minute later, dropped).",
		}, []string{"found"}),
		outboxReclaims: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ringer", Name: "outbox_reclaims_total", Help: "Gone brokers' watermarks this broker claimed, replayed and deleted.",
		}),
		outboxReplayed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ringer", Name: "outbox_replayed_total", Help: "Revisions that gone brokers committed and this broker projected for them.",
		}),
		timerLateness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "ringer", Name: "timer_lateness_seconds", Help: "Time between an invitation's deadline and the timeout it caused.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}),
	}
	bi := buildinfo.Get()
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "ringer", Name: "build_info", Help: "Always 1; the labels say which Ringer this broker is.",
		ConstLabels: prometheus.Labels{"version": bi.Version, "commit": bi.Commit, "goversion": bi.GoVersion},
	})
	info.Set(1)
	m.Registry.MustRegister(info)
	// Every place a JetStream error is counted, at 0 from the start, so
	// that an alert on the rate sees a series before the first error.
	for _, where := range []string{"command", "census", "timers", "presence", "projector"} {
		m.kvErrors.WithLabelValues(where)
	}
	for _, found := range []string{"stored", "not_stored", "undecided"} {
		m.outboxUnknown.WithLabelValues(found)
	}
	for _, kind := range []protocol.PushKind{protocol.PushRing, protocol.PushStop} {
		m.pushRequests.WithLabelValues(string(kind))
	}
	m.Registry.MustRegister(m.commands, m.latency, m.outcomes, m.transitions, m.kvErrors, m.sheds, m.batchesRefused, m.storeFull, m.repliesRefused, m.timerLateness, m.pushRequests, m.leaderMoves, m.serversLeft, m.leaderFollows, m.leaderChecks,
		m.outboxHeld, m.outboxLag, m.outboxRetries, m.outboxUnknown, m.outboxReclaims, m.outboxReplayed,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// Metrics returns the broker's collectors (serve Metrics().Registry on /metrics).
func (b *Broker) Metrics() *Metrics { return b.metrics }

func (m *Metrics) commandDone(verb, result string, d time.Duration) {
	m.commands.WithLabelValues(verb, result).Inc()
	m.latency.WithLabelValues(verb).Observe(d.Seconds())
}

func (m *Metrics) outcome(r lifecycle.Record) {
	m.outcomes.WithLabelValues(string(r.State), string(r.Reason)).Inc()
}

func (m *Metrics) timerFired(late time.Duration) {
	m.timerLateness.Observe(late.Seconds())
}

func (m *Metrics) transition(r lifecycle.Record, cause string) {
	m.transitions.WithLabelValues(string(r.State), string(r.CallState), cause).Inc()
}

// shed counts a refused send: in commands_total like any UNAVAILABLE, but
// not in command_seconds, which is the service time of commands served.
func (m *Metrics) shed() {
	m.sheds.Inc()
	m.commands.WithLabelValues("send", "UNAVAILABLE").Inc()
}

func (m *Metrics) serverLeft() { m.serversLeft.Inc() }

func (m *Metrics) leaderFollowed() { m.leaderFollows.Inc() }

func (m *Metrics) leaderChecked() { m.leaderChecks.Inc() }

func (m *Metrics) leaderMoved(group string) { m.leaderMoves.WithLabelValues(group).Inc() }

func (m *Metrics) kvError(where string) { m.kvErrors.WithLabelValues(where).Inc() }

// timerCounters registers what the broker's timer batcher did with the
// timers it was handed, from the store's counts (stats).
func (m *Metrics) timerCounters(stats func() store.StatsSnapshot) {
	m.Registry.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "ringer", Name: "timer_schedules_total",
			Help: "Timer schedules this broker stored (with --timer-batch, each a batch of timers)."},
			func() float64 { return float64(stats().Timers) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "ringer", Name: "timers_skipped_total",
			Help: "Timers handed to this broker's batcher (--timer-batch) and not stored, because their invitation needed them no more by the flush (it ended, or its call was answered)."},
			func() float64 { return float64(stats().Skipped) }),
	)
}

// censusEvery is how often at most a broker takes the census behind its
// cluster-wide gauges (on a scrape).
const censusEvery = 10 * time.Second

// gauges registers the cluster-wide gauges a broker computes from JetStream
// on scrape (a census at most every; one that fails leaves the last
// values, and counts in kv_errors_total{where="census"}): line records,
// pending timers, live invitations and calls, overdue ones; and whether the
// broker is ready, as /readyz says (check, on every scrape).
func (m *Metrics) gauges(census func() (store.Census, error), every time.Duration, check func(context.Context) error) {
	var (
		mu   sync.Mutex
		last time.Time
		c    store.Census
	)
	figure := func(f func(*store.Census) int) func() float64 {
		return func() float64 {
			mu.Lock()
			defer mu.Unlock()
			if last.IsZero() || time.Since(last) >= every {
				if fresh, err := census(); err == nil {
					c = fresh
				}
				last = time.Now()
			}
			return float64(f(&c))
		}
	}
	live := func(phase string, f func(*store.Census) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "ringer", Name: "invitations_live",
			Help:        "Live invitations (phase invitation: sent, ringing or being accepted) and calls (phase call: accepted, not ended), cluster-wide; refreshed at most every 10 s.",
			ConstLabels: prometheus.Labels{"phase": phase}}, figure(f))
	}
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "ringer", Name: "line_records",
			Help: "Users with a line record (claims are dropped lazily, so: users who were recently a party, or are busy), cluster-wide; refreshed at most every 10 s."},
			figure(func(c *store.Census) int { return c.Lines })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "ringer", Name: "timers_pending",
			Help: "Armed timers not yet handled (schedules and fired messages in RINGER_TIMERS), cluster-wide; refreshed at most every 10 s."},
			figure(func(c *store.Census) int { return int(c.Timers) })),
		live("invitation", func(c *store.Census) int { return c.Invitations }),
		live("call", func(c *store.Census) int { return c.Calls }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "ringer", Name: "invitations_overdue",
			Help: fmt.Sprintf("Live invitations and calls more than %s past their deadline: their timer has not resolved them (lost, or timers lagging), cluster-wide; refreshed at most every 10 s.", overdueAfter)},
			figure(func(c *store.Census) int { return c.Overdue })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "ringer", Name: "ready",
			Help: "1 while the broker is ready (what /readyz answers 200 for), else 0."},
			func() float64 {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				if check(ctx) != nil {
					return 0
				}
				return 1
			}),
	)
}
