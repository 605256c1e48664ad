package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/ringer-dev/ringer/internal/signature"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// Consumer is the durable consumer every ringer-push instance shares: a
// request goes to one of them.
const Consumer = "ringer-push"

// config is what the gateway needs; main fills it from flags.
type config struct {
	// endpoints maps a platform (or "default") to the URL its deliveries
	// are POSTed to.
	endpoints map[protocol.Platform]string
	secret    []byte        // HMAC key for Ringer-Signature; none if empty
	timeout   time.Duration // one HTTP delivery
	// maxDeliver bounds the attempts at one request; then it goes to the
	// dead-letter subject. backoff is the wait before the second attempt,
	// doubling up to maxBackoff.
	maxDeliver          int
	backoff, maxBackoff time.Duration
	ackWait             time.Duration
}

// gateway consumes push requests and delivers them over HTTP.
type gateway struct {
	cfg  config
	js   jetstream.JetStream
	http *http.Client
	apns *apnsSender // nil: apns devices go to the endpoints like the others
	fcm  *fcmSender  // nil: fcm devices go to the endpoints like the others
	log  zerolog.Logger
	now  func() time.Time

	// done remembers, per request id, the devices already delivered, so
	// that a retry pushes only the others. A gateway that dies forgets:
	// the next one may push a device twice (the collapse key makes the
	// phone show one).
	mu   sync.Mutex
	done map[string]map[string]bool

	requests     *prometheus.CounterVec
	unregistered prometheus.Counter
	deliveries   *prometheus.CounterVec
	latency      *prometheus.HistogramVec
}

func newGateway(js jetstream.JetStream, cfg config, log zerolog.Logger, reg prometheus.Registerer) *gateway {
	g := &gateway{cfg: cfg, js: js, http: &http.Client{Timeout: cfg.timeout}, log: log, now: time.Now,
		done: map[string]map[string]bool{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ringer_push", Name: "requests_total",
			Help: "Push requests handled, by kind and result (delivered, expired, dead_letter, undecodable).",
		}, []string{"kind", "result"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ringer_push", Name: "deliveries_total",
			Help: "Deliveries (to APNs, or to an HTTP endpoint), by platform and result (ok, retry, rejected, gone: token dead and unregistered, no_endpoint).",
		}, []string{"platform", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "ringer_push", Name: "delivery_seconds", Help: "Time of one HTTP delivery, by platform.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}, []string{"platform"}),
	}
	g.unregistered = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "ringer_push", Name: "unregistered_total",
		Help: "Devices unregistered from Ringer because their platform said the token was dead.",
	})
	reg.MustRegister(g.requests, g.deliveries, g.latency, g.unregistered)
	return g
}

// consume binds (creating if needed) the shared consumer and delivers until
// ctx ends.
func (g *gateway) consume(ctx context.Context) error {
	cons, err := g.js.CreateOrUpdateConsumer(ctx, subjects.PushStream, jetstream.ConsumerConfig{
		Durable:       Consumer,
		Description:   "ringer-push gateways: push requests to HTTP endpoints",
		FilterSubject: subjects.AllPushRequests(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       g.cfg.ackWait,
		MaxDeliver:    g.cfg.maxDeliver + 1, // the last delivery only dead-letters (see handle)
		MaxAckPending: 1000,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("ringer-push: consumer on %s (are Ringer's brokers running with push on?): %w", subjects.PushStream, err)
	}
	work := make(chan jetstream.Msg)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range work {
				g.handle(ctx, m)
			}
		}()
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { work <- m }, jetstream.PullHeartbeat(time.Second))
	if err != nil {
		close(work)
		wg.Wait()
		return err
	}
	g.log.Info().Str("stream", subjects.PushStream).Str("consumer", Consumer).Msg("delivering push requests")
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	close(work)
	wg.Wait()
	return nil
}

// handle delivers one push request to each of its devices, and decides
// what becomes of it: acked (delivered, rejected, or no longer useful),
// redelivered after a backoff, or dead-lettered.
func (g *gateway) handle(ctx context.Context, m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		_ = m.Term()
		return
	}
	req, err := protocol.DecodePushRequest(m.Data())
	if err != nil {
		g.log.Error().Err(err).Uint64("seq", meta.Sequence.Stream).Msg("undecodable push request: dead-lettered")
		g.requests.WithLabelValues("", "undecodable").Inc()
		g.deadLetter(ctx, m, "unknown", err.Error())
		return
	}
	log := g.log.With().Str("request", req.ID).Str("kind", string(req.Kind)).Str("id", req.Invitation.ID).
		Str("caller", req.Invitation.Caller).Str("callee", req.User).Uint64("attempt", meta.NumDelivered).Logger()
	if g.expired(req, 0) {
		g.finish(req, m, "expired")
		log.Info().Msg("ring request past its deadline: not pushed")
		return
	}
	if int(meta.NumDelivered) > g.cfg.maxDeliver {
		log.Warn().Msg("push request failed every attempt: dead-lettered")
		g.finish(req, nil, "dead_letter")
		g.deadLetter(ctx, m, req.User, "retries exhausted")
		return
	}
	retry, after := false, time.Duration(0)
	for _, d := range req.Deliveries() {
		if g.delivered(req.ID, d.Device.Device) {
			continue
		}
		err := g.deliver(ctx, &d)
		var ra *retryAfter
		switch {
		case err == nil:
			g.markDelivered(req.ID, d.Device.Device)
		case errors.As(err, &ra):
			retry, after = true, max(after, ra.after)
			log.Warn().Err(err).Str("device", d.Device.Device).Msg("push delivery failed; will retry")
		case errors.Is(err, errGone):
			g.markDelivered(req.ID, d.Device.Device)
			log.Info().Err(err).Str("device", d.Device.Device).Msg("push token dead: unregistering the device")
			if err := g.unregister(ctx, req.User, d.Device); err != nil {
				log.Warn().Err(err).Str("device", d.Device.Device).Msg("dead push token not unregistered")
			}
		default:
			g.markDelivered(req.ID, d.Device.Device) // rejected: retrying cannot help
			log.Warn().Err(err).Str("device", d.Device.Device).Msg("push delivery rejected")
		}
	}
	if !retry {
		g.finish(req, m, "delivered")
		return
	}
	// The endpoint's Retry-After, if longer than the backoff, wins.
	wait := max(min(g.cfg.backoff<<(meta.NumDelivered-1), g.cfg.maxBackoff), after)
	if g.expired(req, wait) {
		g.finish(req, m, "expired")
		log.Info().Msg("ring request would be past its deadline at the next attempt: given up")
		return
	}
	_ = m.NakWithDelay(wait)
}

// expired reports whether a RING would arrive after its invitation stopped
// waiting for the callee, if sent after wait.
func (g *gateway) expired(req *protocol.PushRequest, wait time.Duration) bool {
	return req.Kind == protocol.PushRing && req.Deadline > 0 && g.now().Add(wait).UnixMilli() >= req.Deadline
}

// finish acks m (unless nil) and forgets the request.
func (g *gateway) finish(req *protocol.PushRequest, m jetstream.Msg, result string) {
	g.requests.WithLabelValues(string(req.Kind), result).Inc()
	g.mu.Lock()
	delete(g.done, req.ID)
	g.mu.Unlock()
	if m != nil {
		_ = m.Ack()
	}
}

func (g *gateway) delivered(id, device string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.done[id][device]
}

func (g *gateway) markDelivered(id, device string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done[id] == nil {
		g.done[id] = map[string]bool{}
	}
	g.done[id][device] = true
}

// retryAfter marks a delivery worth trying again — the endpoint was
// unreachable, slow, overloaded (429) or failing (5xx) — not before after
// (0: the gateway's backoff).
type retryAfter struct {
	after time.Duration
	err   error
}

func (r *retryAfter) Error() string { return "retryable: " + r.err.Error() }
func (r *retryAfter) Unwrap() error { return r.err }

// retry wraps err as worth retrying after the Retry-After header of resp
// (seconds), if any.
func retry(err error, h http.Header) error {
	secs, _ := strconv.Atoi(h.Get("Retry-After"))
	return &retryAfter{after: time.Duration(max(secs, 0)) * time.Second, err: err}
}

// errGone: the platform says the token is dead (the app was removed, or
// the token replaced): the device is unregistered in Ringer.
var errGone = errors.New("push token is no longer valid")

// deliver sends d: to APNs or FCM itself when the gateway has that
// platform's credentials, else as a POST to the device's platform's endpoint.
func (g *gateway) deliver(ctx context.Context, d *protocol.PushDelivery) error {
	platform := d.Device.Platform
	var direct func() error
	switch {
	case platform == protocol.PlatformAPNs && g.apns != nil:
		direct = func() error { return g.apns.send(ctx, d) }
	case platform == protocol.PlatformFCM && g.fcm != nil:
		direct = func() error { return g.fcm.send(ctx, d, g.now()) }
	}
	if direct != nil {
		start := time.Now()
		err := direct()
		g.latency.WithLabelValues(string(platform)).Observe(time.Since(start).Seconds())
		g.deliveries.WithLabelValues(string(platform), resultOf(err)).Inc()
		return err
	}
	url, ok := g.cfg.endpoints[platform]
	if !ok {
		url, ok = g.cfg.endpoints["default"]
	}
	if !ok {
		g.deliveries.WithLabelValues(string(platform), "no_endpoint").Inc()
		return fmt.Errorf("no endpoint for platform %q", platform)
	}
	body, _ := json.Marshal(d)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Ringer-Push-Id", d.ID)
	if len(g.cfg.secret) > 0 {
		hreq.Header.Set(signature.Header, signature.Sign(g.cfg.secret, g.now(), body))
	}
	start := time.Now()
	resp, err := g.http.Do(hreq)
	g.latency.WithLabelValues(string(platform)).Observe(time.Since(start).Seconds())
	if err != nil {
		err = &retryAfter{err: err}
	} else {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		switch code := resp.StatusCode; {
		case code >= 200 && code < 300:
		case code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500:
			err = retry(fmt.Errorf("HTTP %d", code), resp.Header)
		case code == http.StatusGone:
			err = fmt.Errorf("%w: HTTP %d", errGone, code)
		default:
			err = fmt.Errorf("HTTP %d", code)
		}
	}
	g.deliveries.WithLabelValues(string(platform), resultOf(err)).Inc()
	return err
}

// resultOf is the deliveries metric's result for a delivery's error.
func resultOf(err error) string {
	var ra *retryAfter
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &ra):
		return "retry"
	case errors.Is(err, errGone):
		return "gone"
	}
	return "rejected"
}

// deadLetter copies m to the user's dead-letter subject (in the push
// stream, so it is kept as long as requests are) and acks it.
func (g *gateway) deadLetter(ctx context.Context, m jetstream.Msg, user, why string) {
	if subjects.ValidateID(user) != nil {
		user = "unknown"
	}
	dl := nats.NewMsg(subjects.PushDeadLetters(user))
	dl.Data = m.Data()
	dl.Header.Set("Ringer-Push-Error", why)
	if meta, err := m.Metadata(); err == nil {
		dl.Header.Set("Ringer-Push-Sequence", strconv.FormatUint(meta.Sequence.Stream, 10))
	}
	if _, err := g.js.PublishMsg(ctx, dl); err != nil {
		g.log.Error().Err(err).Msg("dead letter not stored; the request will be redelivered")
		return
	}
	_ = m.Term()
}
