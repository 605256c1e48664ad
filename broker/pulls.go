package broker

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ringer-dev/ringer/broker/store"
)

// A pull can vanish with nobody told: its consumer's leader dies, steps
// down or loses quorum (the pulls waiting on a leader live only there), or
// it was sent while no server led the consumer (a cluster that has just
// started, an election) and found no responders. A broker renews its pull
// of a consumer when JetStream announces the election of the consumer's
// leader, and soon after a pull that found no responders; the pull's idle
// heartbeat (Config.PullHeartbeat) catches the rest (an announcement
// missed: it is sent at most once): nats.go pulls again after two missed
// heartbeats.
//
// The heartbeat was 500 ms while it was the only way back (a pull lost to
// an election stalled events, timers and presence for a second). Every
// heartbeat wakes the consumer on its leader, which then records, and
// replicates to every replica's state file, that it skipped the stream's
// other messages: with five partitions those rewrites were the largest
// part of what a call cost beyond one partition (docs/benchmarks.md,
// "Consumer state files"). At 2 s a lost pull that no announcement renews
// waits 4 s.

// renewAfter: how long after an announced election, or a pull that found
// no responders, the pull is renewed. The announcement is sent just before
// the new leader takes pulls; and a consumer with no leader is asked again
// at this pace until one is elected.
const renewAfter = 250 * time.Millisecond

// pull is the broker's pull of one durable consumer (Consume), renewed
// after the events above.
type pull struct {
	group     store.Group
	cons      jetstream.Consumer
	handler   jetstream.MessageHandler
	heartbeat time.Duration // Config.PullHeartbeat
	log       zerolog.Logger

	mu       sync.Mutex
	cc       jetstream.ConsumeContext
	replaced []jetstream.ConsumeContext // renewed away, still handing over what they received
	ended    bool                       // drained or stopped: never renewed again
	pending  *time.Timer                // a renewal to come
	warned   time.Time                  // the last warning that the consumer was unreachable
}

// startPull starts consuming g's consumer cons with handler, with idle
// heartbeats every heartbeat.
func startPull(g store.Group, cons jetstream.Consumer, handler jetstream.MessageHandler, heartbeat time.Duration, log zerolog.Logger) (*pull, error) {
	p := &pull{group: g, cons: cons, handler: handler, heartbeat: heartbeat, log: log.With().Str("consumer", g.String()).Logger()}
	// Under the lock, as in renew: the pull's error handler (another
	// goroutine) may ask for a renewal, which replaces p.cc, as soon as
	// the pull is sent.
	p.mu.Lock()
	defer p.mu.Unlock()
	cc, err := p.consume()
	if err != nil {
		return nil, err
	}
	p.cc = cc
	return p, nil
}

// consume starts one pull of the consumer.
func (p *pull) consume() (jetstream.ConsumeContext, error) {
	return p.cons.Consume(p.handler,
		// A small prefetch: what a broker has pulled but not handled waits
		// for AckWait if the broker dies.
		jetstream.PullMaxMessages(256),
		jetstream.PullHeartbeat(p.heartbeat),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			unreachable := errors.Is(err, jetstream.ErrNoHeartbeat) || errors.Is(err, nats.ErrNoResponders)
			ev := p.log.Debug()
			if unreachable && p.warnNow() {
				ev = p.log.Warn() // nats.go pulls again after a heartbeat; the renewal after no responders
			}
			ev.Err(err).Msg("consume")
			if errors.Is(err, nats.ErrNoResponders) {
				p.renewSoon()
			}
		}))
}

// warnNow reports whether to warn that the consumer was unreachable: once
// every 10 s at most (while nothing leads it, a pull is renewed, and finds
// no responders, every renewAfter).
func (p *pull) warnNow() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.warned) < 10*time.Second {
		return false
	}
	p.warned = time.Now()
	return true
}

// renewSoon renews the pull after renewAfter, once however often asked
// meanwhile.
func (p *pull) renewSoon() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended || p.pending != nil {
		return
	}
	p.pending = time.AfterFunc(renewAfter, p.renew)
}

// renew replaces the pull with a new one. The old one is drained: what it
// has received is still handled. If the new one cannot start, the old one
// stays (its heartbeats still bring it back).
func (p *pull) renew() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pending = nil
	if p.ended {
		return
	}
	cc, err := p.consume()
	if err != nil {
		p.log.Warn().Err(err).Msg("renewing the pull failed; its heartbeats will")
		return
	}
	p.cc.Drain()
	p.replaced = append(slices.DeleteFunc(p.replaced, isClosed), p.cc)
	p.cc = cc
	p.log.Debug().Msg("pull renewed")
}

// isClosed reports whether cc has ended.
func isClosed(cc jetstream.ConsumeContext) bool {
	select {
	case <-cc.Closed():
		return true
	default:
		return false
	}
}

// end stops renewals and returns the pull's consume contexts: the current
// one and those still handing over after a renewal.
func (p *pull) end() []jetstream.ConsumeContext {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ended = true
	if p.pending != nil {
		p.pending.Stop()
		p.pending = nil
	}
	return append(slices.Clone(p.replaced), p.cc)
}

// stop ends the pull at once.
func (p *pull) stop() {
	for _, cc := range p.end() {
		cc.Stop()
	}
}

// drain ends the pull, and returns a channel closed once what it has
// received is handed over (to its handler, which must take it until then).
func (p *pull) drain() <-chan struct{} {
	ccs := p.end()
	for _, cc := range ccs {
		cc.Drain()
	}
	done := make(chan struct{})
	go func() {
		for _, cc := range ccs {
			<-cc.Closed()
		}
		close(done)
	}()
	return done
}

// closed reports whether the pull ended without being told to (its
// connection closed).
func (p *pull) closed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return isClosed(p.cc)
}

// listenElections subscribes on nc to JetStream's announcements of new
// leaders, of streams and of consumers (leaderElected): it renews the pull
// of each consumer elected, and hints every election on elected (without
// blocking: a full channel already holds one), for the leader checks
// (colocate). One subscription serves both, so each announcement reaches
// the broker once.
func listenElections(nc *nats.Conn, pulls []*pull, elected chan<- struct{}) (*nats.Subscription, error) {
	byGroup := make(map[store.Group]*pull, len(pulls))
	for _, p := range pulls {
		byGroup[p.group] = p
	}
	return nc.Subscribe(leaderElected, func(m *nats.Msg) {
		select {
		case elected <- struct{}{}:
		default:
		}
		// $JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.<stream>.<consumer>
		tokens := strings.Split(m.Subject, ".")
		if len(tokens) != 7 || tokens[3] != "CONSUMER" {
			return
		}
		if p := byGroup[store.Group{Stream: tokens[5], Consumer: tokens[6]}]; p != nil {
			p.renewSoon()
		}
	})
}
