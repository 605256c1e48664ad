package broker

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// sendGroup creates a group invitation (docs/protocol.md, "Group
// invitations"): one round of parallel line reads (the caller's and every
// callee's), then the claims of the caller's line and of every callee's
// line that is not busy, in parallel, then the one record (expected new).
// A busy callee gets a leg refused as busy and no claim; the others ring.
// As for a 1:1 send, the claims go first, so that every ringing leg holds
// its line, and a busy verdict from a possibly stale read is confirmed
// with the leader before it is written.
func (b *Broker) sendGroup(ctx context.Context, c *command) (protocol.Reply, error) {
	req := c.req
	mode := req.Mode
	if mode == protocol.ModeOne {
		mode = protocol.ModeFirst
	}
	if err := b.validateGroup(c, mode); err != nil {
		return protocol.Reply{}, err
	}
	timeouts, err := b.cfg.timeoutsFor(req.Timeouts)
	if err != nil {
		return protocol.Reply{}, err
	}
	id := req.ID
	if id == "" {
		id = b.store.NewIDFor(c.user) // in the caller's partition, as a 1:1 send's
	}
	if err := b.checkSession(ctx, c.user, req.Device).wait(); err != nil {
		return protocol.Reply{}, err
	}
	users := append([]string{c.user}, req.Callees...) // the caller's line first
	fresh, conflicts := false, 0
	for attempt := 0; attempt < maxAttempts; attempt++ {
		backoff(conflicts)
		if fresh {
			existing, _, err := b.store.GetInvitationFresh(ctx, id)
			switch {
			case err == nil && existing.Caller == c.user && existing.Group():
				return protocol.Reply{Invitation: view(existing)}, nil // a retried send (SPEC §2 rule 4)
			case err == nil:
				return protocol.Reply{}, protocol.Errorf(protocol.CodeAlreadySent, "invitation id %s is taken", id)
			case !errors.Is(err, store.ErrNotFound):
				return protocol.Reply{}, err
			}
		}
		lines, revs, held, cached, err := b.readLines(ctx, users, id, fresh)
		if err != nil {
			return protocol.Reply{}, err
		}
		busy := b.busyOf(c.user, users[1:], lines[1:], held[1:])
		tooMany := store.Outgoing(held[0]) >= b.cfg.MaxOutgoing
		if (tooMany || slices.ContainsFunc(req.Callees, busy)) && !fresh && (b.store.Replicated() || b.store.Caching()) {
			fresh = true // confirm a final verdict with the leader
			continue
		}
		if tooMany {
			return protocol.Reply{}, protocol.Errorf(protocol.CodeResourceExhausted,
				"%s already has %d live invitations and calls, at most %d: end one first", c.user, store.Outgoing(held[0]), b.cfg.MaxOutgoing)
		}
		now := b.now()
		rec := lifecycle.NewGroup(id, c.user, req.Device, mode, req.Callees, busy, req.Content, req.ChannelID, timeouts, now)
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if rec.Live() {
			claims := make([]store.Claim, len(users))
			claims[0] = store.Claim{ID: id, At: now.UnixMilli(), Out: true}
			for i, u := range req.Callees {
				if !busy(u) {
					claims[i+1] = store.Claim{ID: id, At: now.UnixMilli(), Peer: c.user}
					if lines[i+1].Push {
						rec.PushTo = append(rec.PushTo, u)
					}
				}
			}
			_, err := b.claimLines(ctx, users, lines, revs, held, claims)
			if cached && (err == nil || errors.Is(err, store.ErrConflict)) {
				b.store.CacheOutcome(err != nil)
			}
			if errors.Is(err, store.ErrConflict) {
				fresh = true
				if !cached {
					conflicts++ // a stale cache entry is no collision: retry at once
				}
				continue
			}
			if err != nil {
				return protocol.Reply{}, err
			}
			if b.afterClaim != nil {
				b.afterClaim() // tests: a claim that took long
			}
			// As in send: past a third of the grace, the claims may soon
			// count as abandoned.
			if cctx, cancel, err = b.claimDeadline(ctx, now); err != nil {
				return protocol.Reply{}, err
			}
		}
		again, err := b.create(cctx, &rec, 0)
		cancel()
		if again {
			fresh, conflicts = true, conflicts+1
			continue
		}
		if err != nil {
			return protocol.Reply{}, err
		}
		withInvitation(c.logged(b.log.Debug()), &rec).Strs("callees", req.Callees).Str("mode", string(mode)).
			Str("state", string(rec.State)).Uint64("rev", rec.Revision).Msg("group invitation sent")
		return protocol.Reply{Invitation: view(rec)}, nil
	}
	return protocol.Reply{}, store.ErrConflict
}

// invite adds callees to a live JOIN invitation (lifecycle.AddLegs): their
// lines are read and, unless busy, claimed, then the record is written
// with compare-and-set (read again after a conflict; the claims stay).
func (b *Broker) invite(ctx context.Context, c *command) (protocol.Reply, error) {
	req := c.req
	if err := subjects.ValidateID(req.ID); err != nil {
		return protocol.Reply{}, protocol.Errorf(protocol.CodeInvalidArgument, "id: %v", err)
	}
	if err := b.validateCallees(c.user, req.Callees); err != nil {
		return protocol.Reply{}, err
	}
	none := func(string) bool { return false }
	var claimed bool
	for attempt := 0; attempt < maxAttempts; attempt++ {
		backoff(attempt)
		rec, rev, err := b.store.GetInvitationFresh(ctx, req.ID)
		if errors.Is(err, store.ErrNotFound) {
			return protocol.Reply{}, protocol.Errorf(protocol.CodeNotFound, "no invitation %s", req.ID)
		}
		if err != nil {
			return protocol.Reply{}, err
		}
		if rec.RoleOf(c.user) == "" {
			return protocol.Reply{}, protocol.Errorf(protocol.CodeNotFound, "no invitation %s", req.ID)
		}
		if _, changed, err := lifecycle.AddLegs(rec, c.user, req.Callees, none, b.cfg.MaxCallees, b.now()); err != nil {
			return protocol.Reply{}, err // not allowed, whatever the lines say
		} else if !changed {
			return protocol.Reply{Invitation: viewFor(rec, c.user)}, nil // a retry: done already
		}
		lines, revs, held, _, err := b.readLines(ctx, req.Callees, req.ID, true)
		if err != nil {
			return protocol.Reply{}, err
		}
		busy := b.busyOf(rec.Caller, req.Callees, lines, held)
		now := b.now()
		if !claimed {
			claims := make([]store.Claim, len(req.Callees))
			for i, u := range req.Callees {
				if !busy(u) {
					claims[i] = store.Claim{ID: req.ID, At: now.UnixMilli(), Peer: rec.Caller}
				}
			}
			if _, err := b.claimLines(ctx, req.Callees, lines, revs, held, claims); errors.Is(err, store.ErrConflict) {
				continue
			} else if err != nil {
				return protocol.Reply{}, err
			}
			claimed = true
		}
		next, changed, err := lifecycle.AddLegs(rec, c.user, req.Callees, busy, b.cfg.MaxCallees, now)
		if err != nil {
			return protocol.Reply{}, err
		}
		if !changed {
			return protocol.Reply{Invitation: viewFor(rec, c.user)}, nil
		}
		for i, u := range req.Callees {
			if lines[i].Push && !slices.Contains(next.PushTo, u) {
				next.PushTo = append(next.PushTo, u)
			}
		}
		nrev, err := b.store.Commit(ctx, b.putInvitation(next, rev))
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return protocol.Reply{}, err
		}
		next.Revision = nrev
		b.metrics.transition(next, "invite")
		withInvitation(c.logged(b.log.Debug()), &next).Strs("callees", req.Callees).Uint64("rev", nrev).Msg("invited into a call")
		return protocol.Reply{Invitation: viewFor(next, c.user)}, nil
	}
	return protocol.Reply{}, store.ErrConflict
}

// readLines reads users' lines (through the leader if fresh; else from
// the record cache where it has them and is worth writing from, as a
// 1:1 send does: a claim written from a stale one fails its
// compare-and-set, and a busy verdict is confirmed fresh) and resolves
// the claims on them that hold, minus id's own. cached says whether any
// line came from the cache (report the claims' outcome: CacheOutcome).
func (b *Broker) readLines(ctx context.Context, users []string, id string, fresh bool) (lines []store.Line, revs []uint64, held [][]store.Held, cached bool, err error) {
	lines = make([]store.Line, len(users))
	revs = make([]uint64, len(users))
	errs := make([]error, len(users))
	get := b.store.GetLine
	if fresh {
		get = b.store.GetLineFresh
	}
	fromCache := !fresh && b.store.WriteFromCache()
	var wg sync.WaitGroup
	for i := range users {
		if fromCache {
			var ok bool
			if lines[i], revs[i], ok = b.store.CachedLine(users[i]); ok {
				cached = true
				continue
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			lines[i], revs[i], errs[i] = get(ctx, users[i])
			if errors.Is(errs[i], store.ErrNotFound) {
				errs[i] = nil
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, nil, false, err
	}
	held, err = b.holding(ctx, users, lines, id, fresh)
	return lines, revs, held, cached, err
}

// busyOf says, for each of callees (their lines and the claims that hold
// on them), whether caller may not ring it: it blocked the caller, set
// itself busy, is in a call or already has as many invitations waiting as
// a line keeps.
func (b *Broker) busyOf(caller string, callees []string, lines []store.Line, held [][]store.Held) func(string) bool {
	busy := make(map[string]bool, len(callees))
	for i, u := range callees {
		busy[u] = slices.Contains(lines[i].Blocked, caller) || lines[i].Manual || store.AnyBusy(held[i]) ||
			len(held[i])-store.Outgoing(held[i]) >= b.cfg.MaxIncoming
	}
	return func(u string) bool { return busy[u] }
}

// validateGroup checks a group send: the callees, the mode, the body.
func (b *Broker) validateGroup(c *command, mode protocol.Mode) error {
	req := c.req
	switch {
	case req.Callee != "":
		return protocol.Errorf(protocol.CodeInvalidArgument, "callee and callees: a send names one or the other")
	case !mode.Valid():
		return protocol.Errorf(protocol.CodeInvalidArgument, "mode %q: %s or %s", req.Mode, protocol.ModeFirst, protocol.ModeJoin)
	}
	if err := b.validateCallees(c.user, req.Callees); err != nil {
		return err
	}
	return b.validateBody(req)
}

// validateCallees checks a list of callees: valid ids, none twice, not the
// acting user, at most MaxCallees.
func (b *Broker) validateCallees(user string, callees []string) error {
	switch n := len(callees); {
	case n == 0:
		return protocol.Errorf(protocol.CodeInvalidArgument, "callees: none named")
	case n > b.cfg.MaxCallees:
		return protocol.Errorf(protocol.CodeInvalidArgument, "callees: %d, at most %d", n, b.cfg.MaxCallees)
	}
	for i, u := range callees {
		if err := subjects.ValidateID(u); err != nil {
			return protocol.Errorf(protocol.CodeInvalidArgument, "callees[%d]: %v", i, err)
		}
		if u == user {
			return protocol.Errorf(protocol.CodeInvalidArgument, "callees[%d]: cannot invite yourself", i)
		}
		if slices.Index(callees, u) != i {
			return protocol.Errorf(protocol.CodeInvalidArgument, "callees[%d]: %s is named twice", i, u)
		}
	}
	return nil
}

// claimJoin writes the claim of a callee who joins a JOIN call its leg had
// left (late, or again) onto its line, before the record says it joined:
// as at a send, a leg in the call always holds its line. The claim is the
// invitation's, renewed (store.Holding keeps it while the join is under
// way, see rejoining).
func (b *Broker) claimJoin(ctx context.Context, rec lifecycle.Record, user string) error {
	claim := store.Claim{ID: rec.ID, At: b.now().UnixMilli(), Peer: rec.Caller}
	_, err := b.updateLine(ctx, user, func(l *store.Line) (bool, error) {
		cs := slices.DeleteFunc(slices.Clone(l.Claims), func(c store.Claim) bool { return c.ID == rec.ID })
		l.Claims = append(cs, claim)
		return true, nil
	})
	return err
}

// joins reports whether next is user joining a JOIN call without a line
// claim that holds: its leg was over (or never rang) in prev.
func joins(prev, next lifecycle.Record, user string) bool {
	if prev.Mode != protocol.ModeJoin {
		return false
	}
	p, n := prev.Leg(user), next.Leg(user)
	return p != nil && n != nil && !p.Live() && n.Joined()
}

// viewFor is the wire view of a record for user (protocol.Invitation.For).
func viewFor(r lifecycle.Record, user string) *protocol.Invitation {
	inv := r.Invitation.For(user)
	return &inv
}
