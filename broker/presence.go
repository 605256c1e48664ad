package broker

import (
	"context"
	"errors"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// session is the login and heartbeat replies' session, as of now, whose
// record the reply's command left at revision rev.
func (b *Broker) session(rev uint64) *protocol.Session {
	s := &protocol.Session{TTLMs: b.cfg.PresenceTTL.Milliseconds(), HeartbeatMs: (b.cfg.PresenceTTL / 3).Milliseconds(),
		NowMs: b.now().UnixMilli(), Rev: rev}
	if n := b.store.Partitions(); n > 1 {
		s.Partitions = n
	}
	return s
}

// login records the device's session (a KV entry with a TTL) and returns
// everything live the user is a party to: invitations that waited while the
// user was offline are delivered here (store-and-forward).
func (b *Broker) login(ctx context.Context, c *command) (protocol.Reply, error) {
	// The device cap: counted in one multi-get, however many devices the
	// user has. Logins racing each other may pass it together; the
	// per-user command rate bounds by how much.
	live, err := b.store.Sessions(ctx, c.user, 0)
	if err != nil {
		return protocol.Reply{}, err
	}
	if len(live) >= b.cfg.MaxDevices && !slices.Contains(live, c.req.Device) {
		return protocol.Reply{}, protocol.Errorf(protocol.CodeResourceExhausted,
			"%s has %d devices logged in, at most %d: log one out, or wait for a lost one's session to expire", c.user, len(live), b.cfg.MaxDevices)
	}
	rev, err := b.store.PutSession(ctx, c.user, c.req.Device, b.cfg.PresenceTTL)
	if err != nil {
		return protocol.Reply{}, err
	}
	invs, busy, err := b.liveOf(ctx, c.user)
	if err != nil {
		return protocol.Reply{}, err
	}
	s := b.session(rev)
	s.Busy = busy
	c.logged(b.log.Info()).Int("live", len(invs)).Msg("login")
	return protocol.Reply{Session: s, Invitations: invs}, nil
}

// heartbeat refreshes the session's TTL. It does not bring back a session
// that has ended (expired, or logged out): that is NOT_LOGGEDIN, and the
// device logs in again — through the device cap, and with the resync a
// device that was offline needs anyway.
//
// A heartbeat that names the session's revision (sessionRev, from the last
// login or heartbeat reply) costs one write: the refresh is a
// compare-and-set on it, which a session that ended (its TTL or delete
// marker is newer) fails. A failed one, or a heartbeat without a revision,
// reads whether the session is live and then refreshes it: the revision
// may only be stale (this device's refresh whose answer was lost, a login
// again), not the session gone.
func (b *Broker) heartbeat(ctx context.Context, c *command) (protocol.Reply, error) {
	if c.req.SessionRev != 0 {
		rev, err := b.store.RefreshSession(ctx, c.user, c.req.Device, b.cfg.PresenceTTL, c.req.SessionRev)
		if err == nil {
			return protocol.Reply{Session: b.session(rev)}, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return protocol.Reply{}, err
		}
	}
	if err := b.checkSession(ctx, c.user, c.req.Device).wait(); err != nil {
		return protocol.Reply{}, err
	}
	rev, err := b.store.PutSession(ctx, c.user, c.req.Device, b.cfg.PresenceTTL)
	if err != nil {
		return protocol.Reply{}, err
	}
	return protocol.Reply{Session: b.session(rev)}, nil
}

// logout ends the session now; the presence consumer then resolves the
// user's invitations if this was their last session.
func (b *Broker) logout(ctx context.Context, c *command) (protocol.Reply, error) {
	if err := b.store.DeleteSession(ctx, c.user, c.req.Device); err != nil {
		return protocol.Reply{}, err
	}
	c.logged(b.log.Info()).Msg("logout")
	return protocol.Reply{}, nil
}

// presenceChanged handles a change of a session key. A put is a login or
// heartbeat (nothing to do); a delete marker (logout) or a TTL marker (the
// session vanished) may mean the user went offline.
func (b *Broker) presenceChanged(_ context.Context, m jetstream.Msg) {
	hdr := m.Headers()
	if hdr.Get("KV-Operation") == "" && hdr.Get("Nats-Marker-Reason") == "" {
		_ = m.Ack()
		return
	}
	user, device, err := subjects.ParseSessionSubject(m.Subject())
	if err != nil {
		_ = m.Term()
		return
	}
	meta, err := m.Metadata()
	if err != nil {
		_ = m.Term()
		return
	}
	ctx, cancel := b.opContext()
	defer cancel()
	if err := b.presenceLost(ctx, user, meta.Sequence.Stream); err != nil {
		b.log.Warn().Err(err).Str("user", user).Str("device", device).Msg("presence loss not resolved; will retry")
		b.nak(m, "presence")
		return
	}
	_ = m.Ack()
}

// presenceLost resolves a user's live invitations and calls when the user has
// no session left: caller lost → Failure(PEER_OFFLINE), a call → ended; a
// callee that is merely offline keeps ringing for the offline window. seq is
// the stream sequence of the session change that asked: the sessions read
// must include it. One read however many devices the user has.
func (b *Broker) presenceLost(ctx context.Context, user string, seq uint64) error {
	live, err := b.store.Sessions(ctx, user, seq)
	if err != nil || len(live) > 0 {
		return err
	}
	line, _, err := b.store.GetLine(ctx, user)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, id := range line.IDs() { // claims that no longer hold resolve to a final error
		_, err := b.transition(ctx, id, lifecycle.Action{Kind: lifecycle.PresenceLost, User: user})
		if err != nil && !isFinal(err) {
			return err
		}
	}
	// A manual busy flag belongs to a live app: a user who vanished must not
	// stay busy forever (SPEC §3).
	if line.Manual {
		if err := b.clearManualBusy(ctx, user); err != nil {
			return err
		}
	}
	b.log.Info().Str("user", user).Int("claims", len(line.Claims)).Bool("wasManualBusy", line.Manual).Msg("presence lost")
	return nil
}

// isFinal reports whether a transition error is an answer (the invitation is
// gone or already resolved) rather than a failure worth retrying.
func isFinal(err error) bool {
	var pe *protocol.Error
	if !errors.As(err, &pe) {
		return false
	}
	return pe.Code != protocol.CodeUnavailable && pe.Code != protocol.CodeInternal
}
