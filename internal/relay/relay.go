// Package relay holds what Ringer's stream-to-HTTP relays (cmd/ringer-push,
// cmd/ringer-webhook) share: their NATS connection, their metrics endpoint
// and the loop that keeps them consuming until the brokers' stream exists.
package relay

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Connect opens a relay's connection to NATS at url (the broker account):
// reconnecting for ever, and leaving a server that stops answering pings in
// 2–3 s like brokerd (docs/cluster.md, "Gray failures"), not after nats.go's
// default 4 minutes. ca, if set, is the PEM file of the servers' CA.
func Connect(url, name, ca string) (*nats.Conn, error) {
	opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1),
		nats.PingInterval(time.Second), nats.MaxPingsOutstanding(2), nats.ReconnectWait(250 * time.Millisecond)}
	if ca != "" {
		opts = append(opts, nats.RootCAs(ca))
	}
	return nats.Connect(url, opts...)
}

// ServeMetrics serves reg on addr's /metrics until stop is called; an empty
// addr serves nothing.
func ServeMetrics(addr string, reg *prometheus.Registry, log zerolog.Logger) (stop func()) {
	if addr == "" {
		return func() {}
	}
	srv := &http.Server{Addr: addr, Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("metrics server")
		}
	}()
	return func() { _ = srv.Close() }
}

// KeepConsuming calls consume until it returns nil or ctx ends, every 2 s:
// the stream it reads is the brokers' to create, and may not exist yet.
func KeepConsuming(ctx context.Context, log zerolog.Logger, consume func(context.Context) error) {
	for {
		err := consume(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		log.Warn().Err(err).Msg("not consuming yet; retrying in 2 s")
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}
