// Behaviours: each client's callbacks, and what the parties do when the invitation reaches them.
package main

import (
	"context"
	"errors"
	"time"

	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/protocol"
)

// handler returns the callbacks of user u's client on device. Callbacks run
// on the client's delivery goroutine, so they only record and schedule:
// every command is sent from another goroutine (r.later).
func (r *run) handler(u *user, device string) client.Handler {
	return client.Handler{
		OnEvent: func(ev protocol.Event) {
			if s := r.tr.get(ev.Invitation.ID); s != nil {
				r.tr.event(s, roleOf(ev.Role), device, ev.Invitation)
			}
		},
		OnLocalInvitationReceivedByPeer: func(li *client.LocalInvitation) {
			if !r.grouped(li.ID, u, "", nil) {
				r.onReceivedByPeer(li)
			}
		},
		OnLocalInvitationAccepted: func(li *client.LocalInvitation, _ string) {
			if !r.grouped(li.ID, u, "", nil) {
				r.onLocalAccepted(li)
			}
		},
		OnLocalInvitationRefused: func(li *client.LocalInvitation, _ string) {
			if r.grouped(li.ID, u, outRefused, nil) {
				return
			}
			inv := li.Invitation()
			out := outRefused
			if inv.Reason == protocol.ReasonBusy {
				out = outRefusedBusy
			}
			r.observe(li.ID, roleCaller, out, inv)
		},
		OnLocalInvitationCanceled: func(li *client.LocalInvitation) {
			if r.grouped(li.ID, u, outCanceled, nil) {
				return
			}
			r.observe(li.ID, roleCaller, outCanceled, li.Invitation())
		},
		OnLocalInvitationMerged: func(li *client.LocalInvitation, into string) {
			if r.grouped(li.ID, u, outMerged, nil) {
				return
			}
			// Glare: the callee was calling this user — in loadgen only an
			// invitation whose send "failed" (timed out) but was executed,
			// still ringing. The send accepted it: a call nobody here
			// tracks, ended at once so that no line stays held.
			r.observe(li.ID, roleCaller, outMerged, li.Invitation())
			r.st.note("glare: merged into an untracked invitation (a send that timed out but was executed)")
			r.later(0, func() {
				cl, _ := u.client()
				_ = r.do("hangup", func(ctx context.Context) error { return cl.Hangup(ctx, into) })
			})
		},
		OnLocalInvitationFailure: func(li *client.LocalInvitation, reason protocol.Reason) {
			if r.grouped(li.ID, u, string(reason), nil) {
				return
			}
			r.observe(li.ID, roleCaller, string(reason), li.Invitation())
		},
		OnRemoteInvitationReceived: func(ri *client.RemoteInvitation) {
			if !r.grouped(ri.ID(), u, "", ri) {
				r.onRing(u, ri)
			}
		},
		OnRemoteInvitationAccepted: func(ri *client.RemoteInvitation) {
			if !r.grouped(ri.ID(), u, outAccepted, nil) {
				r.onCallStarted(ri)
			}
		},
		OnRemoteInvitationRefused: func(ri *client.RemoteInvitation) {
			if r.grouped(ri.ID(), u, outRefused, nil) {
				return
			}
			r.observe(ri.ID(), roleCallee, outRefused, ri.Invitation())
		},
		OnRemoteInvitationCanceled: func(ri *client.RemoteInvitation) {
			if r.grouped(ri.ID(), u, outCanceled, nil) {
				return
			}
			r.observe(ri.ID(), roleCallee, outCanceled, ri.Invitation())
		},
		OnRemoteInvitationFailure: func(ri *client.RemoteInvitation, reason protocol.Reason) {
			if r.grouped(ri.ID(), u, string(reason), nil) {
				return
			}
			r.observe(ri.ID(), roleCallee, string(reason), ri.Invitation())
		},
		OnRemoteInvitationHandledElsewhere: func(*client.RemoteInvitation, protocol.State) {
			r.st.note("HandledElsewhere (loadgen users have one device)")
		},
		OnCallEnded: func(inv protocol.Invitation) {
			if !r.grouped(inv.ID, u, outAccepted, nil) {
				r.onCallEnded(u, inv)
			}
		},
	}
}

// observe records a terminal callback.
func (r *run) observe(id string, ro role, outcome string, inv protocol.Invitation) {
	s := r.tr.get(id)
	if s == nil {
		r.st.note("callback for an unknown invitation")
		return
	}
	if ro == roleCallee && outcome != outAccepted {
		r.disengage(s)
	}
	if r.tr.terminal(s, ro, outcome, inv, time.Now()) {
		r.completed(s)
	}
}

func (r *run) onReceivedByPeer(li *client.LocalInvitation) {
	now := time.Now()
	s := r.tr.get(li.ID)
	if s == nil {
		return
	}
	r.tr.mu.Lock()
	r.tr.viewLocked(s, li.Invitation())
	first := !s.receivedByPeer
	s.receivedByPeer = true
	sendAt := s.sendAt
	r.tr.mu.Unlock()
	if !first {
		return
	}
	r.st.record(stSendToReceived, now.Sub(sendAt))
	switch s.p.b {
	case bCancel:
		if s.p.afterRing {
			r.later(s.p.think, func() { r.cancel(s) })
		}
	case bDisconnect:
		r.later(s.p.think, func() { r.disconnect(s) })
	}
}

func (r *run) onLocalAccepted(li *client.LocalInvitation) {
	now := time.Now()
	s := r.tr.get(li.ID)
	if s == nil {
		return
	}
	r.tr.mu.Lock()
	acceptAt := s.acceptAt
	s.localAccepted++
	again := s.localAccepted > 1
	r.tr.mu.Unlock()
	if again {
		// The SDK fires each callback once per invitation: a second one is
		// counted, not timed (it would time the first accept again).
		r.st.note("OnLocalInvitationAccepted fired again for one invitation")
		return
	}
	if !acceptAt.IsZero() {
		r.st.record(stAcceptToAccepted, now.Sub(acceptAt))
	}
}

// onRing: the invitation reached the callee (OnRemoteInvitationReceived).
func (r *run) onRing(u *user, ri *client.RemoteInvitation) {
	now := time.Now()
	s := r.tr.get(ri.ID())
	if s == nil {
		r.st.note("invitation from outside this run")
		return
	}
	r.tr.mu.Lock()
	r.tr.viewLocked(s, ri.Invitation())
	first := s.ringAt.IsZero()
	if first {
		s.ringAt, s.ri = now, ri
	}
	sendAt, done, failed := s.sendAt, s.done, s.sendFailed
	engage := !done && !s.engaged && s.obs[roleCallee].saw == nil
	if engage {
		s.engaged = true
	}
	r.tr.mu.Unlock()
	if !first {
		return
	}
	r.st.record(stSendToRing, now.Sub(sendAt))
	if engage && !u.asleep { // busy collisions aim at callees that stay connected
		r.pool.engage(u)
	}
	if failed {
		// Send timed out but the invitation exists: end it so no line stays taken.
		r.later(0, func() { r.refuse(s) })
		return
	}
	switch s.p.b {
	case bAccept, bPush:
		r.later(s.p.think, func() { r.accept(s) })
	case bRefuse:
		r.later(s.p.think, func() { r.refuse(s) })
	case bBusy:
		// The collision lost a race: the target became free just before the
		// send. Refuse at once to keep the run moving.
		r.later(0, func() { r.refuse(s) })
	case bCarrier:
		r.later(0, func() { r.launchCollision(s) })
	}
}

// onCallStarted: the callee learned the call exists (ACCEPTED); the chosen
// party hangs up after the hold time.
func (r *run) onCallStarted(ri *client.RemoteInvitation) {
	s := r.tr.get(ri.ID())
	if s == nil {
		return
	}
	r.tr.mu.Lock()
	if s.ri == nil {
		// Accepted without ringing here first: a glare send accepted it on
		// this user's behalf while its ring was lost (a NATS node that hung).
		s.ri = ri
	}
	r.tr.mu.Unlock()
	if r.tr.terminal(s, roleCallee, outAccepted, ri.Invitation(), time.Now()) {
		r.completed(s)
	}
	r.later(s.p.hold, func() { r.hangup(s) })
}

func (r *run) onCallEnded(u *user, inv protocol.Invitation) {
	now := time.Now()
	s := r.tr.get(inv.ID)
	if s == nil {
		return
	}
	ro := roleCaller
	if inv.Callee == u.id {
		ro = roleCallee
		r.disengage(s)
	}
	r.tr.mu.Lock()
	hangupAt, by := s.hangupAt, s.hangupBy
	r.tr.mu.Unlock()
	if !hangupAt.IsZero() && by != ro {
		r.st.record(stHangupToFree, now.Sub(hangupAt))
	}
	if r.tr.callEnded(s, ro, inv, now) {
		r.completed(s)
	}
}

// disengage removes the callee from the engaged set once per invitation.
func (r *run) disengage(s *invState) {
	r.tr.mu.Lock()
	was := s.engaged
	s.engaged = false
	r.tr.mu.Unlock()
	if was {
		r.pool.disengage(s.callee)
	}
}

// Commands. Each runs on its own goroutine with a bounded context; errors
// are counted by code, and a command that timed out is retried twice
// (commands are idempotent for the same actor).

func (r *run) do(verb string, f func(ctx context.Context) error) error {
	// A person retries a failed hangup or answer for a while; so does
	// loadgen: up to ~40 s of transient failures (a paused NATS node, a
	// leader election) before giving up.
	var err error
	for attempt := 0; attempt < 8; attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(time.Duration(attempt) * 250 * time.Millisecond):
			case <-r.ctx.Done():
				return err
			}
		}
		ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
		err = f(ctx)
		cancel()
		if err == nil {
			return nil
		}
		r.st.cmdError(verb, err)
		if c := errCode(err); (c != "TIMEOUT" && c != string(protocol.CodeUnavailable)) || r.ctx.Err() != nil {
			return err
		}
	}
	return err
}

func (r *run) accept(s *invState) {
	r.tr.mu.Lock()
	ri := s.ri
	s.acceptAt = time.Now()
	r.tr.mu.Unlock()
	if r.do("accept", func(ctx context.Context) error { return ri.Accept(ctx, "ok") }) == nil {
		r.tr.mu.Lock()
		r.tr.viewLocked(s, ri.Invitation()) // ACCEPTING: the accept-ack deadline
		r.tr.mu.Unlock()
	}
}

func (r *run) refuse(s *invState) {
	r.tr.mu.Lock()
	ri := s.ri
	r.tr.mu.Unlock()
	_ = r.do("refuse", func(ctx context.Context) error { return ri.Refuse(ctx, "no") })
}

func (r *run) cancel(s *invState) {
	_ = r.do("cancel", func(ctx context.Context) error { return s.li.Cancel(ctx) })
}

func (r *run) hangup(s *invState) {
	r.tr.mu.Lock()
	by := roleCaller
	if s.p.calleeHangs {
		by = roleCallee
	}
	s.hangupAt, s.hangupBy = time.Now(), by
	r.tr.mu.Unlock()
	party := s.caller
	if by == roleCallee {
		party = s.callee
	}
	cl, _ := party.client()
	_ = r.do("hangup", func(ctx context.Context) error { return cl.Hangup(ctx, s.id) })
}

// disconnect closes the caller's client without logging out: the broker
// learns of it only when the session's TTL runs out, and must then fail the
// invitation with PEER_OFFLINE at the callee.
func (r *run) disconnect(s *invState) {
	ok, completed := r.tr.close(s, roleCaller, time.Now())
	if !ok {
		return // already over: nothing to vanish from
	}
	cl, _ := s.caller.client()
	cl.Close()
	r.pool.loggedIn.Add(-1)
	if completed {
		r.completed(s)
	}
}

// launchCollision sends the busy invitation at a callee the carrier made ring.
func (r *run) launchCollision(carrier *invState) {
	r.tr.mu.Lock()
	col := carrier.collision
	launch := col != nil && !carrier.launched
	carrier.launched = true
	r.tr.mu.Unlock()
	if launch {
		r.send(col)
	}
}

// completed runs once per invitation, when its last expected observation
// arrived: it frees the parties (a vanished caller first logs in again, as
// a new device) and ends a carrier whose collision is over.
func (r *run) completed(s *invState) {
	r.st.completed.Add(1)
	r.disengage(s)
	now := time.Now()
	if s.p.b == bPush {
		r.tr.mu.Lock()
		outcome := s.outcome
		callerLost := protocol.Reason(outcome) == protocol.ReasonPeerOffline && s.terminal.EndedAt != 0 && s.lastDL > 0 && s.terminal.EndedAt < s.lastDL
		r.tr.mu.Unlock()
		r.push.ended(s.id, outcome, callerLost)
	}
	if r.cfg.historyReads > 0 && float64(s.p.i%1000) < r.cfg.historyReads*1000 {
		// A user looking at the call log right after a call: the read goes
		// through a throw-away client (history needs no session).
		r.later(0, func() { r.readHistory(s.callee) })
	}
	if s.callee.asleep {
		r.later(0, func() { r.fallAsleep(s.callee) })
	} else {
		r.pool.release(s.callee, now)
	}
	r.tr.mu.Lock()
	closed := s.obs[roleCaller].closed
	carrier := s.carrier
	pendingCollision := s.collision != nil && !s.launched
	s.launched = true
	r.tr.mu.Unlock()
	if closed {
		r.later(0, func() {
			if err := r.login(r.ctx, s.caller); err != nil {
				if !errors.Is(err, context.Canceled) {
					r.st.note("vanished caller could not log in again (left out)")
				}
				return
			}
			r.pool.release(s.caller, time.Now())
		})
	} else {
		r.pool.release(s.caller, now)
	}
	if carrier != nil {
		r.later(0, func() { r.cancel(carrier) })
	}
	if pendingCollision {
		// The carrier ended before its callee rang: send the collision anyway
		// so that it is accounted for (it will ring and be refused).
		r.later(0, func() { r.send(s.collision) })
	}
}

// later runs f after d on its own goroutine, unless the run is over.
func (r *run) later(d time.Duration, f func()) {
	r.bg.Add(1)
	run := func() {
		defer r.bg.Done()
		if r.ctx.Err() == nil {
			f()
		}
	}
	if d <= 0 {
		go run()
		return
	}
	time.AfterFunc(d, run)
}

// readHistory reads the newest page of u's history and records its latency.
func (r *run) readHistory(u *user) {
	c, err := client.New(u.nc, u.id, "history")
	if err != nil {
		return
	}
	defer c.Close()
	start := time.Now()
	if r.do("history", func(ctx context.Context) error { _, err := c.History(ctx, "", 0); return err }) == nil {
		r.st.record(stHistory, time.Since(start))
	}
}
