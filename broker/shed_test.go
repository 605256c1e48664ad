package broker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// shedEnv is a started broker (prepared by setup before Start) and a raw
// NATS client that sends commands as alice, who never logs in: a send that
// is served answers NOT_LOGGEDIN, a shed one UNAVAILABLE.
type shedEnv struct {
	t      *testing.T
	ctx    context.Context
	b      *Broker
	nc     *nats.Conn
	client *nats.Conn
	// sends served and shed so far
	servedSends, shedSends int
}

func newShedEnv(t *testing.T, cfg Config, setup func(*Broker)) *shedEnv {
	t.Helper()
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv.ClientURL())
	b, err := New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	setup(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Shutdown(ctx) })
	return &shedEnv{t: t, ctx: ctx, b: b, nc: nc, client: natstest.Connect(t, srv.ClientURL())}
}

// code sends alice's command and returns the error code of the reply ("" for none).
func (e *shedEnv) code(verb string, req protocol.Request) protocol.Code {
	e.t.Helper()
	subj, err := subjects.Command("alice", verb)
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := e.client.RequestWithContext(e.ctx, subj, protocol.MustMarshal(&req))
	if err != nil {
		e.t.Fatal(err)
	}
	rep, err := protocol.DecodeReply(m.Data)
	if err != nil {
		e.t.Fatal(err)
	}
	if rep.Error == nil {
		return ""
	}
	return rep.Error.Code
}

// served sends a send and reports whether it was served (not shed).
func (e *shedEnv) served() bool {
	e.t.Helper()
	switch got := e.code(subjects.VerbSend, protocol.Request{Device: "phone", Callee: "bob"}); got {
	case protocol.CodeNotLoggedIn:
		e.servedSends++
		return true
	case protocol.CodeUnavailable:
		e.shedSends++
		return false
	default:
		e.t.Fatalf("send: %q", got)
		return false
	}
}

// An overloaded broker refuses new invitations at once with UNAVAILABLE and
// keeps serving the commands of existing ones. The overload is staged: a
// 1 ns target that every real command misses, and a 50 ms window.
func TestOverloadShedsSendsNotActions(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ShedLatency = time.Nanosecond
	e := newShedEnv(t, cfg, func(b *Broker) { b.commandQueue = newOverload(cfg.ShedLatency, 50*time.Millisecond) })
	act := protocol.Request{Device: "phone", ID: "nosuchinvitation"}

	// A few commands per window: however slow, no queue; sends are served.
	for range 3 {
		if !e.served() {
			t.Fatal("a send was shed with hardly any load")
		}
	}
	// Many commands per window, every one slower than the target: sends are
	// shed, while the commands of existing invitations are still served.
	natstest.Eventually(t, 10*time.Second, func() error {
		for range 2 * shedMinSamples {
			if got := e.code(subjects.VerbCancel, act); got != protocol.CodeNotFound {
				t.Fatalf("cancel: %q, want %s (served, even when shedding)", got, protocol.CodeNotFound)
			}
		}
		if e.served() {
			return errors.New("send still served")
		}
		return nil
	})
	// The load stops (shed sends are no samples): sends are served again.
	natstest.Eventually(t, 5*time.Second, func() error {
		if !e.served() {
			return errors.New("send still shed")
		}
		return nil
	})
	e.checkSendMetrics()
}

// checkSendMetrics: a shed send counts in sends_shed_total and as an
// UNAVAILABLE send in commands_total, but not in command_seconds, which is
// the service time of the commands served (zeros there would make an
// overloaded broker's sends look fastest).
func (e *shedEnv) checkSendMetrics() {
	e.t.Helper()
	m := e.b.metrics
	if got := testutil.ToFloat64(m.sheds); int(got) != e.shedSends {
		e.t.Errorf("sends_shed_total %v, want %d", got, e.shedSends)
	}
	if got := testutil.ToFloat64(m.commands.WithLabelValues("send", "UNAVAILABLE")); int(got) != e.shedSends {
		e.t.Errorf("commands_total{send,UNAVAILABLE} %v, want %d", got, e.shedSends)
	}
	var h dto.Metric
	if err := m.latency.WithLabelValues("send").(prometheus.Metric).Write(&h); err != nil {
		e.t.Fatal(err)
	}
	if got := h.GetHistogram().GetSampleCount(); int(got) != e.servedSends {
		e.t.Errorf("command_seconds{send} has %d samples, want %d (the sends served, not the %d shed)", got, e.servedSends, e.shedSends)
	}
}

// The projector consumer is watched too (Config.ConsumerProjection: with
// the outbox, a broker projects its own commits as it makes them, and no
// consumer lags): revisions projected long after their commit make the
// broker shed sends although its commands are fast. Staged with a broker
// clock one second ahead of the stream's timestamps.
func TestProjectorLagShedsSends(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ConsumerProjection = true
	e := newShedEnv(t, cfg, func(b *Broker) {
		b.clock = func() time.Time { return time.Now().Add(time.Second) }
		b.projectorQueue = newOverload(cfg.ShedLatency, 50*time.Millisecond)
	})
	if !e.served() {
		t.Fatal("a send was shed before anything lagged")
	}
	writer, err := store.Open(e.ctx, e.nc) // another broker's commits, as the projector sees them
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	natstest.Eventually(t, 10*time.Second, func() error {
		for range 2 * shedMinSamples {
			n++
			rec := lifecycle.New(fmt.Sprintf("lag%d", n), "carol", "phone", "dave", "", "", cfg.Timeouts, time.Now())
			if _, err := writer.Commit(e.ctx, store.PutInvitation(rec, 0)); err != nil {
				t.Fatal(err)
			}
		}
		if e.served() {
			return errors.New("send still served")
		}
		return nil
	})
}
