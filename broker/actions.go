package broker

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ringer-dev/ringer/broker/journal"
	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// act applies a party's action to an invitation: read, decide (package
// lifecycle), compare-and-set. One read and at most one write per attempt.
func (b *Broker) act(ctx context.Context, c *command, kind lifecycle.Kind) (protocol.Reply, error) {
	req := c.req
	if err := subjects.ValidateID(req.ID); err != nil {
		return protocol.Reply{}, protocol.Errorf(protocol.CodeInvalidArgument, "id: %v", err)
	}
	if len(req.Response) > b.cfg.MaxResponse {
		return protocol.Reply{}, protocol.Errorf(protocol.CodeInvalidArgument, "response: %d bytes, at most %d", len(req.Response), b.cfg.MaxResponse)
	}
	if !utf8.ValidString(req.Response) {
		return protocol.Reply{}, protocol.Errorf(protocol.CodeInvalidArgument, "response: not UTF-8")
	}
	rec, err := b.transition(ctx, req.ID, lifecycle.Action{Kind: kind, User: c.user, Device: req.Device, Response: req.Response})
	if err != nil {
		return protocol.Reply{}, err
	}
	return protocol.Reply{Invitation: viewFor(rec, c.user)}, nil
}

// transition is the compare-and-set loop every state change goes through:
// commands, timers and presence loss alike. Exactly one of several racing
// transitions commits; the others re-read and get the typed error (or the
// idempotent result) that lifecycle.Apply gives for the state that won.
func (b *Broker) transition(ctx context.Context, id string, a lifecycle.Action) (lifecycle.Record, error) {
	rec, _, err := b.commitTransition(ctx, id, a, nil)
	return rec, err
}

// commitTransition is transition that also reports whether this call
// committed the record it returns (false: nothing changed, or another
// transition won and this one was a no-op on its result). read, if set, is
// the invitation's record as the stream leader returned it a moment ago (its
// Revision set): the first attempt starts from it instead of reading again.
func (b *Broker) commitTransition(ctx context.Context, id string, a lifecycle.Action, read *lifecycle.Record) (_ lifecycle.Record, committed bool, _ error) {
	// A party's command starts from the cached record when there is one and
	// the cache is worth writing from (store.WriteFromCache: no read at
	// all), else from a fast direct get. Either may be stale: a write
	// from it is a compare-and-set that fails if so, and a refusal or "already
	// done" decided from it is confirmed with the leader before it is given.
	get, fresh := b.store.GetInvitation, !b.store.Replicated()
	cached := b.store.WriteFromCache()
	if a.Kind == lifecycle.Timeout || a.Kind == lifecycle.PresenceLost {
		get, fresh, cached = b.store.GetInvitationFresh, true, false // off the hot path, and must never act on a stale view
	}
	conflicts := 0
	for attempt := 0; attempt < maxAttempts; attempt++ {
		backoff(conflicts) // only after a lost CAS; a confirming leader read goes at once
		var (
			rec       lifecycle.Record
			err       error
			fromCache bool
		)
		switch {
		case read != nil: // the leader's word a moment ago
			rec, read = *read, nil
		case cached:
			rec, fromCache = b.store.CachedInvitation(id)
			cached = false
		}
		rev := rec.Revision // 0: no record in hand (a stored one is at revision 1 or later)
		if rev == 0 {
			rec, rev, err = get(ctx, id)
		}
		if errors.Is(err, store.ErrNotFound) { // confirmed by the leader (GetInvitation)
			return rec, false, protocol.Errorf(protocol.CodeNotFound, "no invitation %s", id)
		}
		if err != nil {
			return rec, false, err
		}
		now := b.now()
		next, changed, err := lifecycle.Apply(rec, a, now)
		if (err != nil || !changed) && (!fresh || fromCache) && !b.final(rec, now) {
			// Refusing, or answering "already done", from a possibly stale
			// cache entry or follower read would be a wrong decision: confirm
			// with the leader. (A finished record is not stale: see final.)
			get, fresh = b.store.GetInvitationFresh, true
			continue
		}
		if err != nil || !changed {
			return rec, false, err
		}
		// One key, even at the end of an invitation or call: its line claims
		// stop holding the moment the record says so (store.Holding).
		next = lifecycle.Finished(next)
		if joins(rec, next, a.User) {
			// A callee joins a JOIN call late, or again: its line first.
			if err := b.claimJoin(ctx, next, a.User); err != nil {
				return rec, false, err
			}
		}
		rev, err = b.store.Commit(ctx, b.putInvitation(next, rev))
		// A group's record is written by all its callees at once: its
		// conflicts are contention, not a stale cache, and must not turn
		// the cache off for everyone's writes.
		if fromCache && !rec.Group() && (err == nil || errors.Is(err, store.ErrConflict)) {
			b.store.CacheOutcome(err != nil)
		}
		if errors.Is(err, store.ErrConflict) {
			get, fresh = b.store.GetInvitationFresh, true
			if !fromCache {
				conflicts++ // a stale cache entry is no collision: retry at once
			}
			continue // someone else moved it (or a stale read): decide again
		}
		if err != nil {
			return rec, false, err
		}
		next.Revision = rev
		b.metrics.transition(next, a.Kind.String())
		if e := b.log.Debug(); e.Enabled() {
			legsOf(withInvitation(e, &next), &next).Str("action", a.Kind.String()).Str("by", a.User).Str("device", a.Device).
				Str("state", string(next.State)).Str("reason", string(next.Reason)).Uint64("rev", rev).Msg("transition")
		}
		return next, true, nil
	}
	return lifecycle.Record{}, false, store.ErrConflict
}

// final reports whether rec, read from the cache or a follower, is what
// the stream leader holds too, so that a refusal or an "already done"
// decided from it needs no confirming read: a finished record never changes
// (lifecycle's TestAFinishedRecordNeverChanges), and while it is stored its
// id cannot be taken by a new invitation (a send over it conflicts). It is
// stored for at least MinRetention under any configuration, past or
// present; trusting it for half of that leaves room for the brokers' clocks
// to differ. The common case is a caller's ackaccept that arrives after a
// hangup during ACCEPTING ended the call: one leader read fewer.
func (b *Broker) final(rec lifecycle.Record, now time.Time) bool {
	return !rec.Live() && rec.EndedAt != 0 && now.UnixMilli() < rec.EndedAt+(MinRetention/2).Milliseconds()
}

// putInvitation writes a record; a finished one expires after Retention.
func (b *Broker) putInvitation(r lifecycle.Record, expect uint64) store.Write {
	w := store.PutInvitation(r, expect)
	if !r.Live() {
		w = w.WithTTL(b.cfg.Retention)
	}
	return w
}

// sync returns every live invitation and call the user is a party to, from
// the claims on the user's line (its index of live invitations).
func (b *Broker) sync(ctx context.Context, c *command) (protocol.Reply, error) {
	invs, busy, err := b.liveOf(ctx, c.user)
	if err != nil {
		return protocol.Reply{}, err
	}
	if e := c.logged(b.log.Debug()); e.Enabled() {
		ids := make([]string, len(invs))
		for i, inv := range invs {
			ids[i] = inv.ID
		}
		e.Strs("live", ids).Msg("synced")
	}
	return protocol.Reply{Invitations: invs, Session: &protocol.Session{Busy: busy}}, nil
}

// liveOf lists user's live invitations for a login or a sync. Both read
// through the stream leaders: they are how a device recovers what it missed
// (after a reconnect, a failed heartbeat), which is when the replica that
// answers this broker's direct gets (its own server's, nearest first) is the
// likeliest to be catching up — for as long as a network partition lasted,
// with the claims and legs the device missed. They are rare; a resync that
// lists nothing it missed is lost for good.
func (b *Broker) liveOf(ctx context.Context, user string) ([]protocol.Invitation, bool, error) {
	line, _, err := b.store.GetLineFresh(ctx, user)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, false, err
	}
	invs := []protocol.Invitation{}
	for _, id := range line.IDs() {
		rec, _, err := b.store.GetInvitationFresh(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, false, err
		}
		if rec.RoleOf(user) == "" {
			continue
		}
		if rec = b.settleOverdue(ctx, rec); lifecycle.HoldsLine(rec, user) {
			invs = append(invs, rec.Invitation.For(user))
		}
	}
	return invs, line.Manual, nil
}

// setBusy sets or clears the user's manual busy flag (do-not-disturb, or a
// call managed elsewhere). Live invitations keep the line busy regardless.
// The flag is cleared when the user's last session ends.
func (b *Broker) setBusy(ctx context.Context, c *command) (protocol.Reply, error) {
	busy, err := b.putManualBusy(ctx, c.user, c.req.Busy)
	if err != nil {
		return protocol.Reply{}, err
	}
	c.logged(b.log.Debug()).Bool("busy", busy).Msg("manual busy set")
	return protocol.Reply{Session: &protocol.Session{Busy: busy}}, nil
}

func (b *Broker) clearManualBusy(ctx context.Context, user string) error {
	_, err := b.putManualBusy(ctx, user, false)
	return err
}

// putManualBusy sets the manual flag of user's line with compare-and-set.
func (b *Broker) putManualBusy(ctx context.Context, user string, busy bool) (bool, error) {
	return busy, b.putLineFlag(ctx, user, func(l *store.Line) *bool { return &l.Manual }, busy)
}

// putLineFlag sets one flag of user's line to v with compare-and-set.
func (b *Broker) putLineFlag(ctx context.Context, user string, flag func(*store.Line) *bool, v bool) error {
	_, err := b.updateLine(ctx, user, func(l *store.Line) (bool, error) {
		if *flag(l) == v {
			return false, nil
		}
		*flag(l) = v
		return true, nil
	})
	return err
}

// updateLine applies change to user's line with compare-and-set, reading
// it again after a conflict; change says whether it changed anything (or
// refuses with an error). It returns the line as it now is.
func (b *Broker) updateLine(ctx context.Context, user string, change func(*store.Line) (bool, error)) (store.Line, error) {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		backoff(attempt)
		line, rev, err := b.store.GetLine(ctx, user)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return store.Line{}, err
		}
		changed, err := change(&line)
		if err != nil || !changed {
			return line, err
		}
		if _, err := b.store.Commit(ctx, store.PutLine(user, line, rev)); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			return store.Line{}, err
		}
		return line, nil
	}
	return store.Line{}, store.ErrConflict
}

// block adds req.Peer to the acting user's block list: that caller's
// invitations are refused as busy, without ringing, from now on.
func (b *Broker) block(ctx context.Context, c *command) (protocol.Reply, error) {
	if err := b.checkPeer(c); err != nil {
		return protocol.Reply{}, err
	}
	line, err := b.updateLine(ctx, c.user, func(l *store.Line) (bool, error) {
		if slices.Contains(l.Blocked, c.req.Peer) {
			return false, nil
		}
		if len(l.Blocked) >= b.cfg.MaxBlocked {
			return false, protocol.Errorf(protocol.CodeResourceExhausted, "%s blocks %d users, the most allowed: unblock one first", c.user, len(l.Blocked))
		}
		l.Blocked = append(l.Blocked, c.req.Peer)
		return true, nil
	})
	if err != nil {
		return protocol.Reply{}, err
	}
	return protocol.Reply{Blocked: line.Blocked}, nil
}

// unblock removes req.Peer from the acting user's block list.
func (b *Broker) unblock(ctx context.Context, c *command) (protocol.Reply, error) {
	if err := b.checkPeer(c); err != nil {
		return protocol.Reply{}, err
	}
	line, err := b.updateLine(ctx, c.user, func(l *store.Line) (bool, error) {
		i := slices.Index(l.Blocked, c.req.Peer)
		if i < 0 {
			return false, nil
		}
		l.Blocked = slices.Delete(l.Blocked, i, i+1)
		return true, nil
	})
	if err != nil {
		return protocol.Reply{}, err
	}
	return protocol.Reply{Blocked: line.Blocked}, nil
}

// checkPeer validates the user a block or unblock names.
func (b *Broker) checkPeer(c *command) error {
	if err := subjects.ValidateID(c.req.Peer); err != nil {
		return protocol.Errorf(protocol.CodeInvalidArgument, "peer: %v", err)
	}
	if c.req.Peer == c.user {
		return protocol.Errorf(protocol.CodeInvalidArgument, "%s cannot block itself", c.user)
	}
	return nil
}

// pushFlag is the Push flag of a line.
func pushFlag(l *store.Line) *bool { return &l.Push }

// get returns one invitation to one of its parties (also a finished one,
// within the retention period).
func (b *Broker) get(ctx context.Context, c *command) (protocol.Reply, error) {
	if err := subjects.ValidateID(c.req.ID); err != nil {
		return protocol.Reply{}, protocol.Errorf(protocol.CodeInvalidArgument, "id: %v", err)
	}
	rec, rev, err := b.store.GetInvitation(ctx, c.req.ID)
	if err == nil && rev < c.req.Seen && b.store.Replicated() {
		// The client has seen a newer revision than this replica has: it
		// is catching up (a partition healing), and its local subscriber
		// answers every direct get until it has. Ask the leader.
		rec, _, err = b.store.GetInvitationFresh(ctx, c.req.ID)
	}
	if errors.Is(err, store.ErrNotFound) {
		return protocol.Reply{}, protocol.Errorf(protocol.CodeNotFound, "no invitation %s", c.req.ID)
	}
	if err != nil {
		return protocol.Reply{}, err
	}
	if rec.RoleOf(c.user) == "" {
		// As if it did not exist: ids are not secrets, and a stranger must
		// not learn which ones are in use.
		return protocol.Reply{}, protocol.Errorf(protocol.CodeNotFound, "no invitation %s", c.req.ID)
	}
	return protocol.Reply{Invitation: viewFor(b.settleOverdue(ctx, rec), c.user)}, nil
}

// history pages through the acting user's history (journal.Read).
func (b *Broker) history(ctx context.Context, c *command) (protocol.Reply, error) {
	if !b.cfg.History {
		return protocol.Reply{}, protocol.Errorf(protocol.CodeInvalidArgument, "history is turned off on this deployment (brokerd --history=false)")
	}
	limit := c.req.Limit
	switch {
	case limit == 0:
		limit = protocol.DefaultHistoryPage
	case limit < 0 || limit > protocol.MaxHistoryPage:
		return protocol.Reply{}, protocol.Errorf(protocol.CodeInvalidArgument, "limit %d not in 1..%d", limit, protocol.MaxHistoryPage)
	}
	if len(c.req.Cursor) > protocol.MaxCursorLen {
		return protocol.Reply{}, protocol.Errorf(protocol.CodeInvalidArgument, "cursor: %d bytes, at most %d", len(c.req.Cursor), protocol.MaxCursorLen)
	}
	page, err := b.journal.Read(ctx, c.user, c.req.Cursor, limit, c.req.Missed)
	if errors.Is(err, journal.ErrBadCursor) {
		return protocol.Reply{}, protocol.Errorf(protocol.CodeInvalidArgument, "%v: pass back a cursor a history reply gave", err)
	}
	if err != nil {
		return protocol.Reply{}, err
	}
	if page.Unchecked != nil {
		c.logged(b.log.Debug()).Err(page.Unchecked).Msg("history served from a replica, unchecked")
	}
	return protocol.Reply{Calls: page.Calls, Cursor: page.Next}, nil
}

// register stores the acting device's push target: a RING for an invitation
// that finds the device without a connection is sent there (package push).
func (b *Broker) register(ctx context.Context, c *command) (protocol.Reply, error) {
	t := c.req.Push
	if t == nil {
		return protocol.Reply{}, protocol.Errorf(protocol.CodeInvalidArgument, "push: the target to register is missing")
	}
	switch {
	case !t.Platform.Valid():
		return protocol.Reply{}, protocol.Errorf(protocol.CodeInvalidArgument, "push: unknown platform %q (one of %v)", t.Platform, protocol.Platforms)
	case t.Token == "" || len(t.Token) > protocol.MaxPushTokenLen || !utf8.ValidString(t.Token):
		return protocol.Reply{}, protocol.Errorf(protocol.CodeInvalidArgument, "push: token of %d bytes: must be 1..%d bytes of UTF-8", len(t.Token), protocol.MaxPushTokenLen)
	case len(t.App) > protocol.MaxPushAppLen || strings.ContainsFunc(t.App, func(r rune) bool { return r <= ' ' || r > '~' }):
		return protocol.Reply{}, protocol.Errorf(protocol.CodeInvalidArgument, "push: app must be at most %d printable ASCII bytes without spaces", protocol.MaxPushAppLen)
	case t.TTLMs < 0 || t.TTLMs > b.cfg.MaxPushTTL.Milliseconds() || t.TTLMs != 0 && t.TTLMs < time.Minute.Milliseconds():
		return protocol.Reply{}, protocol.Errorf(protocol.CodeInvalidArgument, "push: ttlMs %d not in [%d, %d] (0: %d)", t.TTLMs,
			time.Minute.Milliseconds(), b.cfg.MaxPushTTL.Milliseconds(), b.cfg.PushTTL.Milliseconds())
	}
	ttl := b.cfg.PushTTL
	if t.TTLMs > 0 {
		ttl = time.Duration(t.TTLMs) * time.Millisecond
	}
	targets, err := b.store.PushTargets(ctx, c.user)
	if err != nil {
		return protocol.Reply{}, err
	}
	if len(targets) >= b.cfg.MaxPushDevices && !slices.ContainsFunc(targets, func(o protocol.PushTarget) bool { return o.Device == c.req.Device }) {
		return protocol.Reply{}, protocol.Errorf(protocol.CodeResourceExhausted, "%s has %d push targets registered, the most allowed: unregister one first", c.user, len(targets))
	}
	reg := protocol.PushTarget{Device: c.req.Device, Platform: t.Platform, Token: t.Token, App: t.App,
		ExpiresAt: b.now().Add(ttl).UnixMilli()}
	if err := b.store.PutPushTarget(ctx, c.user, reg, ttl); err != nil {
		return protocol.Reply{}, err
	}
	// Invitations sent from now on look for the targets. (A send racing
	// this register may not: its callee's device is pushed from the next.)
	if err := b.putLineFlag(ctx, c.user, pushFlag, true); err != nil {
		return protocol.Reply{}, err
	}
	return protocol.Reply{Push: &reg}, nil
}

// unregister removes the acting device's push target, if it had one, and
// the line's push flag with the last one.
func (b *Broker) unregister(ctx context.Context, c *command) (protocol.Reply, error) {
	if err := b.store.DeletePushTarget(ctx, c.user, c.req.Device); err != nil {
		return protocol.Reply{}, err
	}
	left, err := b.store.PushTargets(ctx, c.user)
	if err != nil || len(left) > 0 {
		return protocol.Reply{}, err
	}
	return protocol.Reply{}, b.putLineFlag(ctx, c.user, pushFlag, false)
}
