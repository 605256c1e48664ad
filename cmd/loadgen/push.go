// The push behaviour: asleep callees with push targets, and a simulated push gateway that wakes them.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	rnd "math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/signature"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// pushReport is the push section of the report.
type pushReport struct {
	Invitations  int64 `json:"invitations"`   // push-behaviour invitations created
	Requests     int64 `json:"requests"`      // RING requests seen for them
	StopRequests int64 `json:"stop_requests"` // STOP requests seen for them
	Woken        int64 `json:"woken"`         // asleep callees the simulated gateway logged in
	Duplicates   int64 `json:"duplicates"`    // requests delivered more than once (at least once)
	// RingsDropped: RINGs never requested or delivered because their
	// invitation ended first (allowed): through a gateway (--push-listen),
	// it timed out while a frozen node held the RING; anywhere, the
	// caller's presence loss ended it before the RING was requested.
	RingsDropped int64 `json:"rings_dropped,omitempty"`
}

// pushSim reads the push stream as a gateway would, and wakes the callee of
// each RING after a delay in [--push-wake-min, --push-wake-max].
type pushSim struct {
	r      *run
	byUser map[string]*user
	stop   func() // stops reading requests
	woken  atomic.Int64

	mu           sync.Mutex
	sent         []string       // push-behaviour invitations created
	rings, stops map[string]int // requests seen per invitation
	seen         map[string]bool
	duplicates   int64             // requests delivered again (at least once)
	outcomes     map[string]string // push-behaviour invitations' outcomes
	// callerLost: ended PEER_OFFLINE by the caller's presence loss before
	// the offline deadline, possibly before its RING was requested.
	callerLost map[string]bool
	viaGateway bool // --push-listen: requests arrive through ringer-push
	rng        *rnd.Rand
}

// preparePush gives every asleep user a client that is not logged in, with
// a push target registered, and starts the simulated gateway.
func (r *run) preparePush(ctx context.Context) error {
	ps := &pushSim{r: r, byUser: map[string]*user{}, rings: map[string]int{}, stops: map[string]int{}, seen: map[string]bool{}, outcomes: map[string]string{}, callerLost: map[string]bool{},
		rng: rnd.New(rnd.NewPCG(r.cfg.seed, 0x9054))}
	for _, u := range r.pool.all {
		if !u.asleep {
			continue
		}
		device := "d1"
		cl, err := client.New(u.nc, u.id, device, client.WithHandler(r.handler(u, device)), client.WithRemember(keepDone))
		if err != nil {
			return err
		}
		if _, err := cl.RegisterPush(ctx, protocol.PlatformHTTP, "loadgen-"+u.id, "loadgen", time.Hour); err != nil {
			cl.Close()
			return fmt.Errorf("register a push target for %s: %w", u.id, err)
		}
		u.mu.Lock()
		u.cl, u.device = cl, device
		u.mu.Unlock()
		ps.byUser[u.id] = u
	}
	if len(ps.byUser) == 0 {
		return nil
	}
	if r.cfg.pushListen != "" {
		ps.viaGateway = true
		if err := ps.listen(r.cfg.pushListen, []byte(os.Getenv(r.cfg.pushSecretEnv))); err != nil {
			return err
		}
		r.push = ps
		return nil
	}
	js, err := jetstream.New(r.conns[0])
	if err != nil {
		return err
	}
	cons, err := js.OrderedConsumer(ctx, subjects.PushStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subjects.AllPushRequests()}, DeliverPolicy: jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return fmt.Errorf("push behaviour: read %s (brokers with --push, and JetStream access for loadgen, or --push-listen): %w", subjects.PushStream, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		req, err := protocol.DecodePushRequest(m.Data())
		if err != nil {
			ps.r.st.note("undecodable push request")
			return
		}
		ps.handle(req)
	})
	if err != nil {
		return err
	}
	ps.stop = cc.Stop
	r.push = ps
	return nil
}

// listen serves a gateway's deliveries (cmd/ringer-push's JSON, one per
// device) on addr: the real gateway in the loop.
func (ps *pushSim) listen(addr string, secret []byte) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("push behaviour: --push-listen: %w", err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := signature.ReadVerified(req, secret, 1<<20, time.Now(), 5*time.Minute)
		if err != nil {
			ps.r.st.note("push delivery unread or badly signed")
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var d protocol.PushDelivery
		if err := json.Unmarshal(body, &d); err != nil || d.ID == "" {
			ps.r.st.note("undecodable push delivery")
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		ps.handle(d.Request())
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = srv.Serve(ln) }()
	ps.stop = func() { _ = srv.Close() }
	return nil
}

// handle is one push request: counted once per id (a gateway delivers at
// least once: a repeat is a duplicate, not a second request), and a RING
// wakes its callee later.
func (ps *pushSim) handle(req *protocol.PushRequest) {
	if !strings.HasPrefix(req.Invitation.ID, ps.r.runID+"-") {
		return // another run's
	}
	ps.mu.Lock()
	if ps.seen[req.ID] {
		ps.duplicates++
		ps.mu.Unlock()
		return
	}
	ps.seen[req.ID] = true
	var delay time.Duration
	if req.Kind == protocol.PushRing {
		ps.rings[req.Invitation.ID]++
		delay = ps.r.cfg.wakeMin + time.Duration(ps.rng.Int64N(int64(ps.r.cfg.wakeMax-ps.r.cfg.wakeMin)+1))
	} else {
		ps.stops[req.Invitation.ID]++
	}
	ps.mu.Unlock()
	if req.Kind != protocol.PushRing {
		return
	}
	u := ps.byUser[req.User]
	if u == nil {
		ps.r.st.note("push request for a user that is not asleep")
		return
	}
	ps.r.later(delay, func() { ps.wake(u) })
}

// wake is what the phone does on the push: log in. The invitation is in the
// login reply, and rings.
func (ps *pushSim) wake(u *user) {
	cl, _ := u.client()
	if ps.r.do("login", cl.Login) == nil {
		ps.woken.Add(1)
		ps.r.pool.loggedIn.Add(1)
	}
}

// created records a push-behaviour invitation that exists.
func (ps *pushSim) created(id string) {
	ps.mu.Lock()
	ps.sent = append(ps.sent, id)
	ps.mu.Unlock()
}

// ended records a push-behaviour invitation's outcome, and whether it was
// the caller's presence loss before the offline deadline.
func (ps *pushSim) ended(id, outcome string, callerLost bool) {
	ps.mu.Lock()
	ps.outcomes[id] = outcome
	ps.callerLost[id] = callerLost
	ps.mu.Unlock()
}

// ringMissed reports whether id may lack its RING: through a gateway, a
// RING that could not be delivered before its deadline (a frozen node held
// it) is dropped by design, and the invitation then timed out unanswered.
func (ps *pushSim) ringMissed(id string) bool {
	o := ps.outcomes[id]
	if ps.callerLost[id] {
		// The caller's presence was lost (a loaded machine, its
		// heartbeats late) and ended the invitation, possibly before the
		// broker requested its RING: a RING for an ended invitation is
		// never requested.
		return true
	}
	return ps.viaGateway && (o == string(protocol.ReasonPeerOffline) || o == string(protocol.ReasonPeerNoResponse))
}

// fallAsleep logs an asleep callee out once its invitation is over (the
// app goes back to sleep: its client is closed, its push target stays) and
// makes it idle again with a fresh client, as a restarted app would have.
func (r *run) fallAsleep(u *user) {
	cl, device := u.client()
	if r.do("logout", cl.Logout) == nil {
		r.pool.loggedIn.Add(-1)
	}
	next, err := client.New(u.nc, u.id, device, client.WithHandler(r.handler(u, device)), client.WithRemember(keepDone))
	if err != nil {
		r.st.note("asleep callee left out: " + err.Error())
		return
	}
	u.mu.Lock()
	u.cl = next
	u.mu.Unlock()
	r.pool.release(u, time.Now())
}

// check: every push invitation made exactly one RING and, once it ended,
// exactly one STOP. Requests may trail the outcome by a moment: wait up to
// 10 s for them.
func (ps *pushSim) check() *pushReport {
	deadline := time.Now().Add(10 * time.Second)
	for {
		ps.mu.Lock()
		bad := 0
		for _, id := range ps.sent {
			if (ps.rings[id] != 1 && !ps.ringMissed(id)) || ps.stops[id] != 1 {
				bad++
			}
		}
		if bad == 0 || time.Now().After(deadline) {
			rep := &pushReport{Invitations: int64(len(ps.sent)), Woken: ps.woken.Load(), Duplicates: ps.duplicates}
			for _, id := range ps.sent {
				rep.Requests += int64(ps.rings[id])
				rep.StopRequests += int64(ps.stops[id])
				switch {
				case ps.rings[id] == 0 && ps.ringMissed(id):
					rep.RingsDropped++
				case ps.rings[id] != 1:
					ps.r.tr.violate(vPushRing, "%s: %d RING push requests, want 1 (outcome %s)", id, ps.rings[id], ps.outcomes[id])
				}
				if ps.stops[id] != 1 {
					ps.r.tr.violate(vPushStop, "%s: %d STOP push requests after it ended, want 1 (outcome %s)", id, ps.stops[id], ps.outcomes[id])
				}
			}
			ps.mu.Unlock()
			ps.stop()
			return rep
		}
		ps.mu.Unlock()
		time.Sleep(200 * time.Millisecond) // polling counters, not synchronising
	}
}
