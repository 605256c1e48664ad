// The workload: per-invitation plans from the seed, pairing, sending, and the open and closed loops.
package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"math/big"
	rnd "math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// run is one loadgen run against one deployment.
type run struct {
	cfg   *config
	st    *stats
	tr    *tracker
	pool  *pool
	conns []*nats.Conn
	runID string
	errw  io.Writer // progress and diagnostics

	ctx    context.Context // canceled when the run is torn down
	stop   context.CancelFunc
	bg     sync.WaitGroup // r.later callbacks
	starts sync.WaitGroup // open-loop start goroutines

	push *pushSim // the push behaviour's gateway, if the mix has it
	// webhooks receives a webhook relay's deliveries (--webhook-listen).
	webhooks *webhookSink
	tl       *timeline // a sample a second (--csv, --html)
	groups   groups    // group and glare scenarios in flight

	sessionTTL, heartbeatMs atomic.Int64 // what the broker said at login
	next                    atomic.Uint64
	halt                    chan struct{} // closed on SIGINT/SIGTERM: stop starting invitations
}

func newRun(cfg *config, conns []*nats.Conn, errw io.Writer) *run {
	st := newStats()
	r := &run{cfg: cfg, st: st, tr: newTracker(st), pool: newPool(cfg.cooldown), conns: conns, runID: newRunID(), errw: errw,
		halt: make(chan struct{})}
	r.ctx, r.stop = context.WithCancel(context.Background())
	nOff := 0
	if w := cfg.mix[bOffline]; w > 0 {
		// Offline callees, in proportion to their weight (at least 1, at most half).
		nOff = max(1, min(cfg.users/2, int(float64(cfg.users)*w/cfg.mix.total()+0.5)))
	}
	nAsleep := 0
	if w := cfg.mix[bPush]; w > 0 {
		// Asleep callees likewise; each waits for a wake-up, so more of them.
		nAsleep = max(1, min((cfg.users-nOff)/2, int(2*float64(cfg.users)*w/cfg.mix.total()+0.5)))
	}
	for i := 0; i < cfg.users; i++ {
		u := &user{engIdx: -1, nc: conns[i%len(conns)]}
		switch {
		case i < nOff:
			u.id, u.offline = fmt.Sprintf("%s-o%d", r.runID, i), true
		case i < nOff+nAsleep:
			u.id, u.asleep = fmt.Sprintf("%s-p%d", r.runID, i), true
		default:
			u.id = fmt.Sprintf("%s-u%d", r.runID, i)
		}
		r.pool.all = append(r.pool.all, u)
	}
	// Shuffle with the seed so pairing does not follow creation order.
	sh := rnd.New(rnd.NewPCG(cfg.seed, 0xC0FFEE))
	sh.Shuffle(len(r.pool.all), func(i, j int) { r.pool.all[i], r.pool.all[j] = r.pool.all[j], r.pool.all[i] })
	return r
}

// newRunID names the run's users and invitations, so that runs against the
// same deployment never share ids (the seed decides behaviours, not names).
func newRunID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := []byte("lg")
	for i := 0; i < 6; i++ {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		b = append(b, alphabet[n.Int64()])
	}
	return string(b)
}

// plan is everything random about invitation i, drawn from the seed.
type plan struct {
	i           uint64
	b           behaviour
	think, hold time.Duration
	calleeHangs bool // accept: who hangs up
	afterRing   bool // cancel: after the ring rather than at once
	x           float64
}

func (r *run) plan(i uint64) plan {
	g := rnd.New(rnd.NewPCG(r.cfg.seed, i))
	p := plan{i: i, b: r.cfg.mix.pick(g.Float64())}
	p.think = time.Duration(g.Int64N(int64(r.cfg.think) + 1))
	p.hold = time.Duration(g.Int64N(int64(r.cfg.hold) + 1))
	p.calleeHangs = g.IntN(2) == 0
	p.afterRing = g.IntN(2) == 0
	p.x = g.Float64()
	return p
}

// timeouts are the per-invitation overrides: short ones on request, and
// for a vanishing caller an expiry long enough for presence loss (TTL plus
// the broker's reaction) to win the race against it.
func (r *run) timeouts(b behaviour) *protocol.Timeouts {
	t := &protocol.Timeouts{}
	if r.cfg.shortTimeouts {
		t = &protocol.Timeouts{OfflineMs: 2000, ExpireMs: 3000, AcceptMs: 2000}
	}
	for name, d := range r.cfg.timeouts {
		ms := d.Milliseconds()
		switch name {
		case "offline":
			t.OfflineMs = ms
		case "expire":
			t.ExpireMs = ms
		case "accept":
			t.AcceptMs = ms
		}
	}
	if b == bPush {
		// The offline window must cover the wake-up (protocol.md §7.4).
		t.OfflineMs = max(t.OfflineMs, (r.cfg.wakeMax + 5*time.Second).Milliseconds())
	}
	if b == bDisconnect && t.ExpireMs != 0 {
		t.ExpireMs = max(t.ExpireMs, 2*r.sessionTTL.Load()+5000)
	}
	if *t == (protocol.Timeouts{}) {
		return nil
	}
	return t
}

// start pairs the parties of invitation i and sends it; it returns the
// invitation to wait for, or nil if there were not enough idle users.
func (r *run) start(i uint64) *invState {
	p := r.plan(i)
	now := time.Now()
	id := fmt.Sprintf("%s-%d", r.runID, i)
	var s *invState
	switch p.b {
	case bGroup, bGroupJoin, bGlare:
		return r.startGroup(i, p, now)
	case bOffline:
		us := r.pool.take(1, now)
		if us == nil {
			return nil
		}
		off := r.pool.takeOffline(now)
		if off == nil {
			r.pool.release(us[0], now)
			return nil
		}
		s = &invState{id: r.localID(id, us[0]), p: p, caller: us[0], callee: off}
	case bPush:
		us := r.pool.take(1, now)
		if us == nil {
			return nil
		}
		asleep := r.pool.takeAsleep(now)
		if asleep == nil {
			r.pool.release(us[0], now)
			return nil
		}
		s = &invState{id: r.localID(id, us[0]), p: p, caller: us[0], callee: asleep}
		r.tr.register(s)
		r.send(s)
		r.tr.mu.Lock()
		failed := s.sendFailed
		r.tr.mu.Unlock()
		if !failed {
			r.push.created(s.id)
		}
		return s
	case bBusy:
		us := r.pool.take(1, now)
		if us == nil {
			return nil
		}
		if target := r.pool.takeEngaged(p.x); target != nil {
			s = &invState{id: r.localID(id, us[0]), p: p, caller: us[0], callee: target}
			break
		}
		// Nobody rings right now: make someone ring first (a carrier
		// invitation, canceled once the collision is over).
		more := r.pool.take(2, now)
		if more == nil {
			r.pool.release(us[0], now)
			return nil
		}
		s = &invState{id: r.localID(id, us[0]), p: p, caller: us[0], callee: more[1]}
		r.pool.hold(more[1]) // held by the carrier and by the collision
		c := &invState{id: r.localID(id+"c", more[0]), p: p, caller: more[0], callee: more[1], collision: s}
		c.p.b = bCarrier
		s.carrier = c
		r.tr.register(s)
		r.tr.register(c)
		r.send(c)
		return s
	default:
		us := r.pool.take(2, now)
		if us == nil {
			return nil
		}
		s = &invState{id: r.localID(id, us[0]), p: p, caller: us[0], callee: us[1]}
	}
	r.tr.register(s)
	r.send(s)
	return s
}

// localID names an invitation that caller sends: base, or base with a
// "_<n>" suffix, whichever first places its record in the partition of the
// caller's line, as the Go client does with ids it draws itself
// (Client.NewInvitationID); base as it is with --local-ids=false or where
// the deployment has one partition.
func (r *run) localID(base string, caller *user) string {
	cl, _ := caller.client()
	if !r.cfg.localIDs || cl == nil {
		return base
	}
	n := 0
	return subjects.LocalInvitationID(caller.id, cl.Session().Partitions, func() string {
		if n++; n == 1 {
			return base
		}
		return base + "_" + strconv.Itoa(n)
	})
}

// send sends s from its caller's client.
func (r *run) send(s *invState) {
	cl, _ := s.caller.client()
	li := cl.CreateLocalInvitation(s.callee.id)
	li.ID, li.Content, li.ChannelID = s.id, "loadgen "+s.p.b.String(), "ch-"+s.id
	li.Timeouts = r.timeouts(s.p.b)
	r.tr.mu.Lock()
	s.li, s.sendAt = li, time.Now()
	r.tr.mu.Unlock()
	r.st.started.Add(1)
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	err := li.Send(ctx)
	cancel()
	r.st.record(stSendReply, time.Since(s.sendAt))
	if err != nil {
		r.st.cmdError("send", err)
		if r.tr.failSend(s, time.Now()) {
			r.completed(s)
		}
		return
	}
	r.tr.mu.Lock()
	r.tr.viewLocked(s, li.Invitation())
	r.tr.mu.Unlock()
	if s.p.b == bCancel && !s.p.afterRing {
		r.cancel(s)
	}
}

// openLoop starts invitations at the configured rate until end, whatever
// happens to the earlier ones. An invitation that finds no idle users (or
// too many in flight) is skipped, not delayed.
func (r *run) openLoop(start, end time.Time) {
	interval := time.Duration(float64(time.Second) / r.cfg.rate)
	for n := int64(0); ; n++ {
		due := start.Add(time.Duration(n) * interval)
		if !due.Before(end) || r.ctx.Err() != nil {
			return
		}
		if wait := time.Until(due); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-r.halt:
				t.Stop()
				return
			}
		}
		if r.countReached() {
			return
		}
		r.st.record(stScheduleLag, time.Since(due))
		if r.tr.inFlight() >= r.cfg.maxInflight {
			r.st.skipped.Add(1)
			r.st.skippedInflight.Add(1)
			continue
		}
		i := r.next.Add(1) - 1
		r.starts.Add(1)
		go func() {
			defer r.starts.Done()
			if r.start(i) == nil {
				r.st.skipped.Add(1)
			}
		}()
	}
}

// closedLoop keeps concurrency invitations in flight until end: each slot
// starts the next invitation when its previous one completed.
func (r *run) closedLoop(end time.Time) {
	var wg sync.WaitGroup
	for w := 0; w < r.cfg.concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stop := time.NewTimer(time.Until(end))
			defer stop.Stop()
			for time.Now().Before(end) && r.ctx.Err() == nil {
				i := r.next.Add(1) - 1
				if r.cfg.count > 0 && int64(i) >= r.cfg.count {
					return
				}
				s := r.start(i)
				if s == nil {
					s = r.waitForUsers(i, stop.C)
					if s == nil {
						return
					}
				}
				select {
				case <-s.doneCh:
				case <-stop.C:
					return
				case <-r.halt:
					return
				}
			}
		}()
	}
	wg.Wait()
}

// waitForUsers starts invitation i once an idle pair of users is ready
// (all are in invitations or cooling down), and counts the wait: a closed
// loop whose workers wait for users measures the pool, not the system
// (poolWaitShare). It returns nil if the run ends first.
func (r *run) waitForUsers(i uint64, stop <-chan time.Time) *invState {
	since := time.Now()
	defer func() { r.st.poolWaitNs.Add(int64(time.Since(since))) }()
	for {
		select {
		case <-time.After(5 * time.Millisecond): // as before the wait was counted: a pool-bound run's CPU stays comparable
		case <-stop:
			return nil
		case <-r.halt:
			return nil
		}
		if s := r.start(i); s != nil {
			return s
		}
	}
}

// drain waits until every started invitation completed, or the drain
// time ran out.
func (r *run) drain(limit time.Duration) {
	deadline := time.Now().Add(limit)
	r.starts.Wait() // bounded: a start is one Send with a 5 s timeout
	for r.tr.inFlight() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// countReached reports whether --count invitations were planned already.
func (r *run) countReached() bool {
	return r.cfg.count > 0 && int64(r.next.Load()) >= r.cfg.count
}
