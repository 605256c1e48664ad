package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/ringer-dev/ringer/internal/signature"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// Consumer is the durable consumer every relay shares.
const Consumer = "ringer-webhook"

// EventIDHeader names the transition in a delivery: <invitation id>.<revision>,
// the same on every attempt (dedupe on it: delivery is at least once).
const EventIDHeader = "Ringer-Event-Id"

type config struct {
	endpoint   string
	secret     []byte
	timeout    time.Duration // one POST
	tries      int           // attempts before a transition is dead-lettered
	backoff    time.Duration // first wait between attempts; doubles
	maxBackoff time.Duration
	shards     int // deliveries in parallel (one invitation's always in one, in order)
	ackWait    time.Duration
}

// webhookRelay delivers exported transitions to the app's endpoint: each
// invitation's in revision order, each at least once, signed.
type webhookRelay struct {
	cfg  config
	js   jetstream.JetStream
	http *http.Client
	log  zerolog.Logger
	now  func() time.Time

	deliveries *prometheus.CounterVec
	latency    prometheus.Histogram
}

func newRelay(js jetstream.JetStream, cfg config, log zerolog.Logger, reg prometheus.Registerer) *webhookRelay {
	r := &webhookRelay{cfg: cfg, js: js, http: &http.Client{Timeout: cfg.timeout}, log: log, now: time.Now,
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ringer_webhook", Name: "deliveries_total",
			Help: "Webhook attempts, by result (ok; retry: a network error, 408, 429 or 5xx; rejected: another 4xx; dead_letter: given up).",
		}, []string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "ringer_webhook", Name: "delivery_seconds", Help: "Time of one POST.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
	}
	reg.MustRegister(r.deliveries, r.latency)
	return r
}

// provision creates the dead-letter stream (idempotent).
func (r *webhookRelay) provision(ctx context.Context) error {
	_, err := r.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        subjects.WebhookDeadStream,
		Description: "Ringer webhook relay: transitions it gave up delivering",
		Subjects:    []string{subjects.WebhookDeadSubjects()},
		MaxAge:      7 * 24 * time.Hour,
		Storage:     jetstream.FileStorage,
	})
	return err
}

// consume delivers from the shared durable consumer until ctx ends. A new
// consumer starts with the transitions exported from now on (--replay-from
// delivers older ones).
func (r *webhookRelay) consume(ctx context.Context) error {
	cons, err := r.js.CreateOrUpdateConsumer(ctx, subjects.ExportStream, jetstream.ConsumerConfig{
		Durable:       Consumer,
		Description:   "ringer-webhook relays: exported transitions to the app's endpoint",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       r.cfg.ackWait,
		MaxAckPending: 10000,
		DeliverPolicy: jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return fmt.Errorf("consumer on %s (are Ringer's brokers running with --export?): %w", subjects.ExportStream, err)
	}
	return r.run(ctx, cons, "consumer")
}

// replay delivers every transition exported since from (or from sequence
// seq), through an ephemeral consumer, and returns once it has delivered
// what the stream held when it started.
func (r *webhookRelay) replay(ctx context.Context, from time.Time, seq uint64) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &from}
	if seq > 0 {
		cfg = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: seq}
	}
	st, err := r.js.Stream(ctx, subjects.ExportStream)
	if err != nil {
		return err
	}
	last := st.CachedInfo().State.LastSeq
	cons, err := r.js.OrderedConsumer(ctx, subjects.ExportStream, cfg)
	if err != nil {
		return err
	}
	shards := r.startShards(ctx)
	delivered := 0
	for last > 0 {
		m, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages) {
			break // nothing more
		}
		if err != nil {
			shards.close()
			return err
		}
		shards.send(m)
		delivered++
		if meta, err := m.Metadata(); err == nil && meta.Sequence.Stream >= last {
			break
		}
	}
	shards.close()
	r.log.Info().Int("transitions", delivered).Uint64("up_to_seq", last).Msg("replay done")
	return nil
}

// run hands a consumer's messages to the shards until ctx ends.
func (r *webhookRelay) run(ctx context.Context, cons jetstream.Consumer, what string) error {
	shards := r.startShards(ctx)
	cc, err := cons.Consume(shards.send, jetstream.PullHeartbeat(time.Second))
	if err != nil {
		shards.close()
		return err
	}
	r.log.Info().Str("stream", subjects.ExportStream).Str(what, Consumer).Str("endpoint", r.cfg.endpoint).Msg("delivering transitions")
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	shards.close()
	return nil
}

// shards are the delivering goroutines: an invitation's transitions always
// go to the same one, which delivers them one after the other, so they
// arrive in order.
type shards struct {
	in []chan jetstream.Msg
	wg sync.WaitGroup
}

func (r *webhookRelay) startShards(ctx context.Context) *shards {
	s := &shards{}
	for range max(r.cfg.shards, 1) {
		ch := make(chan jetstream.Msg, 64)
		s.in = append(s.in, ch)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for m := range ch {
				r.handle(ctx, m)
			}
		}()
	}
	return s
}

func (s *shards) send(m jetstream.Msg) {
	h := fnv.New32a()
	_, _ = h.Write([]byte(m.Subject()))
	s.in[h.Sum32()%uint32(len(s.in))] <- m
}

func (s *shards) close() {
	for _, ch := range s.in {
		close(ch)
	}
	s.in = nil
	s.wg.Wait()
}

// handle delivers one transition, retrying with backoff (and keeping the
// message in progress meanwhile, so nothing overtakes it), and dead-letters
// it after cfg.tries attempts or a rejection.
func (r *webhookRelay) handle(ctx context.Context, m jetstream.Msg) {
	var t protocol.Transition
	if err := msgpack.Unmarshal(m.Data(), &t); err != nil {
		r.log.Error().Err(err).Str("subject", m.Subject()).Msg("undecodable transition")
		r.deadLetter(ctx, m, t.ID, "undecodable: "+err.Error())
		return
	}
	body, err := json.Marshal(&t)
	if err != nil {
		r.deadLetter(ctx, m, t.ID, err.Error())
		return
	}
	id := t.ID + "." + strconv.FormatUint(t.Revision, 10)
	wait := r.cfg.backoff
	for try := 1; ; try++ {
		err := r.post(ctx, id, body)
		if err == nil {
			r.deliveries.WithLabelValues("ok").Inc()
			_ = m.Ack()
			return
		}
		var rej *rejected
		if errors.As(err, &rej) || try >= r.cfg.tries || ctx.Err() != nil {
			if ctx.Err() != nil {
				return // shutting down: unacked, redelivered to a relay later
			}
			if rej != nil {
				r.deliveries.WithLabelValues("rejected").Inc()
			}
			r.log.Warn().Err(err).Str("event", id).Int("tries", try).Msg("giving up on a transition")
			r.deadLetter(ctx, m, t.ID, err.Error())
			return
		}
		r.deliveries.WithLabelValues("retry").Inc()
		r.log.Debug().Err(err).Str("event", id).Dur("wait", wait).Msg("delivery failed; retrying")
		_ = m.InProgress()
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, r.cfg.maxBackoff)
	}
}

// rejected: the endpoint refused the transition for good (a 4xx other
// than 408 and 429).
type rejected struct{ status int }

func (e *rejected) Error() string { return "rejected with HTTP " + strconv.Itoa(e.status) }

// post sends one signed delivery.
func (r *webhookRelay) post(ctx context.Context, id string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.cfg.endpoint, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(EventIDHeader, id)
	if len(r.cfg.secret) > 0 {
		req.Header.Set(signature.Header, signature.Sign(r.cfg.secret, r.now(), body))
	}
	start := time.Now()
	resp, err := r.http.Do(req)
	r.latency.Observe(time.Since(start).Seconds())
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return &rejected{resp.StatusCode}
}

// deadLetter copies the transition to ringer.v1.webhook.dead.<id> with the
// reason, then acks it. If the copy fails it is left unacked (redelivered).
func (r *webhookRelay) deadLetter(ctx context.Context, m jetstream.Msg, id, why string) {
	if id == "" {
		id = "unknown"
	}
	dl := nats.NewMsg(subjects.WebhookDead(id))
	dl.Data = m.Data()
	dl.Header.Set("Ringer-Dead-Reason", why)
	dl.Header.Set("Ringer-Subject", m.Subject())
	if _, err := r.js.PublishMsg(ctx, dl); err != nil {
		r.log.Error().Err(err).Str("invitation", id).Msg("dead letter not stored; left for redelivery")
		return
	}
	r.deliveries.WithLabelValues("dead_letter").Inc()
	_ = m.Ack()
}
