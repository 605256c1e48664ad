package broker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// maxAttempts bounds compare-and-set retries of one command.
const maxAttempts = 12

// backoff spaces out compare-and-set retries with jitter, after the
// conflicts-th lost race, so that writers contending on one key (many
// senders claiming one callee's line, a caller whose sends all claim its
// own) take turns instead of colliding again. No conflict, no wait.
func backoff(conflicts int) {
	if conflicts == 0 {
		return
	}
	time.Sleep(time.Duration(rand.Int64N(int64(conflicts) * int64(2*time.Millisecond))))
}

// send creates an invitation. Hot path: one round of parallel reads, then
// single-key compare-and-set writes — both parties' line claims in parallel,
// then the invitation:
//
//	reads:  sess.<caller>.<device>, line.<callee>, line.<caller>
//	        (+ the invitation of each claim already on those lines;
//	        lines and invitations come from the record cache when it has them)
//	writes: line.<callee> claim ∥ line.<caller> claim, then inv.<id> (expected new)
//	        (replicated, with AtomicSends: the claims of the lines in the
//	        record's partition and the record as one atomic batch — all three
//	        with one partition — after the claim of a line elsewhere)
//
// A busy callee gives a REFUSED(BUSY) record and no claim. Claims go first
// (or in the record's batch) so that a ringing invitation always holds its
// lines; a claim whose invitation
// is never written (the sender died in between) holds for ClaimGrace only
// (store.Holding). Nothing is released at the end: a claim stops holding when
// its invitation finishes, and the next write of the line drops it.
func (b *Broker) send(ctx context.Context, c *command) (protocol.Reply, error) {
	req := c.req
	if err := b.validateSend(c); err != nil {
		return protocol.Reply{}, err
	}
	timeouts, err := b.cfg.timeoutsFor(req.Timeouts)
	if err != nil {
		return protocol.Reply{}, err
	}
	id := req.ID
	if id == "" {
		id = b.store.NewIDFor(c.user) // in the caller's partition: its record batches with the caller's claim
	}

	// The first attempt assumes the id is new and every read current. Only
	// when a write conflicts are the lines re-read through the leader and
	// the invitation read: it may be a retried send, an id taken by someone
	// else, or an expired record's marker.
	checkInv, conflicts, glareWaits := false, 0, 0
	var lastAt int64 // each attempt's claims carry their own At (see committed)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		backoff(conflicts) // only writers that collided wait; a busy verdict is confirmed at once
		var (
			wg                   sync.WaitGroup
			invErr               error
			lines                [2]store.Line // callee, caller
			lineRevs             [2]uint64
			lineErrs             [2]error
			existing             lifecycle.Record
			invRev               uint64
			parties              = [2]string{req.Callee, c.user}
			getLine, getInvFresh = b.store.GetLine, b.store.GetInvitationFresh
		)
		if checkInv {
			getLine = b.store.GetLineFresh // a conflict may come from a stale follower read
		}
		session := b.checkSession(ctx, c.user, req.Device)
		linesCached, fromCache := false, !checkInv && b.store.WriteFromCache()
		for i := range parties {
			if fromCache {
				var ok bool
				if lines[i], lineRevs[i], ok = b.store.CachedLine(parties[i]); ok {
					linesCached = true // its claim is a compare-and-set on the cached revision
					continue
				}
			}
			wg.Add(1)
			go func() { defer wg.Done(); lines[i], lineRevs[i], lineErrs[i] = getLine(ctx, parties[i]) }()
		}
		if checkInv {
			wg.Add(1)
			go func() { defer wg.Done(); existing, invRev, invErr = getInvFresh(ctx, id) }()
		}
		wg.Wait()
		// With the lines read (no cache, or a retry), the session's answer
		// came with them: take it now, so that NOT_LOGGEDIN comes before any
		// claim. With a line from the cache it is still in flight: the
		// claims go out beside it, and are taken back if the caller turns
		// out not to be logged in (rare: the SDK sends only once logged in).
		early := checkInv || !linesCached
		if early {
			if err := session.wait(); err != nil {
				return protocol.Reply{}, err
			}
		}
		for _, e := range []error{lineErrs[0], lineErrs[1], invErr} {
			if e != nil && !errors.Is(e, store.ErrNotFound) {
				return protocol.Reply{}, e
			}
		}
		if checkInv && invErr == nil {
			// A retried send returns the invitation it created (SPEC §2 rule 4).
			if existing.Caller == c.user && existing.Callee == req.Callee {
				return protocol.Reply{Invitation: view(existing)}, nil
			}
			return protocol.Reply{}, protocol.Errorf(protocol.CodeAlreadySent, "invitation id %s is taken", id)
		}
		heldAll, err := b.holding(ctx, parties[:], lines[:], id, checkInv)
		if err != nil {
			return protocol.Reply{}, err
		}
		held := [2][]store.Held(heldAll)
		// Glare: the callee is calling the caller right now. Both want the
		// same call: accept the callee's invitation on the caller's behalf
		// instead of ringing a second one (docs/protocol.md, "Glare"). If
		// the callee's send is still under way (its claim is there, its
		// invitation not yet), see sendingToMe.
		var dropped bool
		seen := held[0]
		if held[0], dropped, err = sendingToMe(held[0], lines[1], c.user, req.Callee, id); err != nil || dropped {
			c.logged(b.log.Debug()).Str("id", id).Int("attempt", attempt).Bool("wait", err != nil).Bool("dropped", dropped).
				Func(func(e *zerolog.Event) {
					e.Str("calleeLine", describeHeld(seen)).Str("callerLine", describeHeld(nil, lines[1].Claims...))
				}).Msg("glare: the callee is sending to the caller")
		}
		if err != nil && glareWaits < maxGlareWaits {
			glareWaits++
			if b.onGlareWait != nil {
				b.onGlareWait() // tests: the callee's send may now go on
			}
			time.Sleep(time.Duration(glareWaits) * 2 * time.Millisecond) // its invitation is a write away
			checkInv = true
			continue
		}
		// (Waited long enough: that send was abandoned — its sender died or
		// gave up — and its claim makes the callee busy, as any claim whose
		// invitation is not written yet does, until the claim grace.)
		if into, ringing := glare(held, c.user, req.Callee, req.Device); into != "" {
			rep, again, err := b.merge(ctx, c, id, into, ringing, invRev, session)
			if again {
				checkInv = true
				continue
			}
			return rep, err
		}
		// The callee is busy if a claim makes it so, or if as many
		// invitations as a line keeps are already waiting for it; the caller
		// may have at most MaxOutgoing invitations and calls of its own.
		blocked := slices.Contains(lines[0].Blocked, c.user)
		busy := blocked || lines[0].Manual || store.AnyBusy(held[0]) || len(held[0])-store.Outgoing(held[0]) >= b.cfg.MaxIncoming
		tooMany := store.Outgoing(held[1]) >= b.cfg.MaxOutgoing
		if (busy || tooMany) && !checkInv && (b.store.Replicated() || b.store.Caching()) {
			// A busy refusal is final, and so is a refusal for too many
			// calls: make sure neither rests on a stale view (the record
			// cache, or a follower's direct get on R3) of a line that was
			// just freed.
			if err := session.wait(); err != nil {
				return protocol.Reply{}, err
			}
			checkInv = true
			continue
		}
		if tooMany {
			if err := session.wait(); err != nil {
				return protocol.Reply{}, err
			}
			return protocol.Reply{}, protocol.Errorf(protocol.CodeResourceExhausted,
				"%s already has %d live invitations and calls, at most %d: end one first", c.user, store.Outgoing(held[1]), b.cfg.MaxOutgoing)
		}
		now := b.now()
		// A busy callee gets a finished REFUSED(BUSY) record and no claim;
		// otherwise both lines are claimed before the invitation exists.
		rec := lifecycle.NewBusy(id, c.user, req.Device, req.Callee, req.ChannelID, now)
		rec.Blocked = blocked
		cctx, cancel := ctx, context.CancelFunc(func() {})
		created := false
		if busy {
			if err := session.wait(); err != nil {
				return protocol.Reply{}, err
			}
		} else if in, ok := b.batchable(parties, id, dropped); ok {
			// The claims and the record as one atomic batch (or two writes:
			// the claim of a line in another partition, then the batch of
			// the other two). The record must not land for a caller who is
			// not logged in.
			if !early {
				if err := session.wait(); err != nil {
					return protocol.Reply{}, err
				}
			}
			lastAt = max(now.UnixMilli(), lastAt+1)
			rec = lifecycle.New(id, c.user, req.Device, req.Callee, req.Content, req.ChannelID, timeouts, now)
			rec.Push = lines[0].Push
			err := b.sendBatch(ctx, parties, lines, lineRevs, held, store.Claim{ID: id, At: lastAt}, in, &rec, invRev)
			if linesCached && (err == nil || errors.Is(err, store.ErrConflict)) {
				b.store.CacheOutcome(err != nil)
			}
			switch {
			case errors.Is(err, store.ErrConflict):
				checkInv = true
				if !linesCached {
					conflicts++
				}
				continue
			case errors.Is(err, store.ErrBatchRefused):
				// Nothing of it was stored (the stream has too many batches in
				// flight): the writes go one by one below, from the same reads.
				b.metrics.batchesRefused.Inc()
				c.logged(b.log.Debug()).Str("id", id).Str("callee", req.Callee).Err(err).Msg("send batch refused, writing one by one")
			case err != nil:
				return protocol.Reply{}, err
			default:
				created = true
			}
		}
		if !busy && !created {
			claimed := b.now()
			lastAt = max(now.UnixMilli(), lastAt+1)
			claim := store.Claim{ID: id, At: lastAt}
			revs, err := b.claim(ctx, parties, lines, lineRevs, held, claim, dropped)
			if linesCached && (err == nil || errors.Is(err, store.ErrConflict)) {
				b.store.CacheOutcome(err != nil)
			}
			if b.afterClaim != nil {
				b.afterClaim() // tests: a claim that took long
			}
			if !early {
				if serr := session.wait(); serr != nil {
					b.unclaim(ctx, parties[:], lines[:], revs[:], held[:], id)
					return protocol.Reply{}, serr
				}
			}
			if errors.Is(err, store.ErrConflict) {
				// A line changed under us (or the cache was stale): re-read and
				// decide again; a claim that did land is ours and stays.
				checkInv = true
				if !linesCached {
					conflicts++
				}
				continue
			} else if err != nil {
				return protocol.Reply{}, err
			}
			if cctx, cancel, err = b.claimDeadline(ctx, claimed); err != nil {
				return protocol.Reply{}, err
			}
			rec = lifecycle.New(id, c.user, req.Device, req.Callee, req.Content, req.ChannelID, timeouts, now)
			rec.Push = lines[0].Push
		}
		if !created {
			again, err := b.create(cctx, &rec, invRev)
			cancel()
			if again {
				checkInv, conflicts = true, conflicts+1
				continue
			}
			if err != nil {
				return protocol.Reply{}, err
			}
		}
		withInvitation(c.logged(b.log.Debug()), &rec).Str("state", string(rec.State)).Str("reason", string(rec.Reason)).Uint64("rev", rec.Revision).
			Int("attempt", attempt).Int64("claimAt", lastAt).Func(func(e *zerolog.Event) {
			e.Str("calleeLine", describeHeld(held[0])).Str("callerLine", describeHeld(nil, lines[1].Claims...))
		}).Msg("invitation sent")
		return protocol.Reply{Invitation: view(rec)}, nil
	}
	return protocol.Reply{}, store.ErrConflict
}

// create writes the record of a new invitation over revision expect (0, or
// an expired record's marker) and sets its revision; again: the id's key
// changed under it (a racing retry, an id taken), so decide again from
// fresh reads.
func (b *Broker) create(ctx context.Context, rec *lifecycle.Record, expect uint64) (again bool, err error) {
	rev, err := b.store.Commit(ctx, b.putInvitation(*rec, expect))
	if errors.Is(err, store.ErrConflict) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	rec.Revision = rev
	b.metrics.transition(*rec, "send")
	return false, nil
}

// batchable tells which of a send's lines (callee, caller) share the
// record's partition and so go in one atomic batch with it
// (Config.AtomicSends, store.Batches); a line elsewhere is claimed first,
// on its own. ok false: no batch (not configured, the store does not
// batch, no line shares the record's partition, or callerFirst — see claim
// — asks for the caller's line first while only the callee's could join
// the batch).
func (b *Broker) batchable(parties [2]string, id string, callerFirst bool) (in [2]bool, ok bool) {
	if !b.cfg.AtomicSends {
		return in, false
	}
	inv := subjects.InvitationKey(id)
	for i, u := range parties {
		in[i] = b.store.Batches(subjects.LineKey(u), inv)
	}
	switch {
	case !in[0] && !in[1]:
		return in, false
	case callerFirst && in[1] && !in[0]:
		return in, false
	}
	return in, true
}

// sendBatch writes a send's claims and its record rec over revision expect:
// the lines in the record's partition (in, see batchable) in one atomic
// batch with rec, after the claim of a line elsewhere, if any. It sets
// rec's revision. store.ErrConflict: a line or the record's key changed
// since it was read, and the batch stored nothing (a claim written before
// it stays, as claim's do). store.ErrBatchRefused: nothing of the batch was
// stored; write one by one.
func (b *Broker) sendBatch(ctx context.Context, parties [2]string, lines [2]store.Line, revs [2]uint64, held [2][]store.Held, c store.Claim, in [2]bool, rec *lifecycle.Record, expect uint64) error {
	var batch []store.Write
	for i, cl := range partyClaims(parties, c) {
		w := claimWrite(parties[i], lines[i], revs[i], held[i], cl)
		if in[i] {
			batch = append(batch, w)
			continue
		}
		claimed := b.now()
		if _, err := b.store.Commit(ctx, w); err != nil {
			return err
		}
		if b.afterClaim != nil {
			b.afterClaim() // tests: a claim that took long
		}
		var cancel context.CancelFunc
		var err error
		if ctx, cancel, err = b.claimDeadline(ctx, claimed); err != nil {
			return err
		}
		defer cancel()
	}
	newRevs, err := b.store.CommitBatch(ctx, append(batch, b.putInvitation(*rec, expect)))
	if err != nil {
		return err
	}
	rec.Revision = newRevs[len(newRevs)-1]
	b.metrics.transition(*rec, "send")
	return nil
}

// claim writes both parties' lines (callee, caller; in parallel): the
// claims that still hold, plus the new one. It returns the lines' new
// revisions (0 where the write failed), and store.ErrConflict if either
// line changed since it was read. callerFirst: the callee's line drops the
// claim of the callee's own send to the caller (sendingToMe), which is
// right only while the caller's line is as read: write that one first,
// and the callee's only once it landed.
func (b *Broker) claim(ctx context.Context, parties [2]string, lines [2]store.Line, revs [2]uint64, held [2][]store.Held, c store.Claim, callerFirst bool) ([2]uint64, error) {
	cl := partyClaims(parties, c)
	callee, caller := cl[0], cl[1]
	if !callerFirst {
		newRevs, err := b.claimLines(ctx, parties[:], lines[:], revs[:], held[:], []store.Claim{callee, caller})
		return [2]uint64(newRevs), err
	}
	newRevs, err := b.claimLines(ctx, parties[:], lines[:], revs[:], held[:], []store.Claim{{}, caller})
	if err != nil {
		return [2]uint64(newRevs), err
	}
	calleeRevs, err := b.claimLines(ctx, parties[:], lines[:], revs[:], held[:], []store.Claim{callee, {}})
	return [2]uint64{calleeRevs[0], newRevs[1]}, err
}

// partyClaims returns claim c as the callee's line holds it (the caller as
// its peer) and as the caller's holds it (outgoing, the callee as its peer).
func partyClaims(parties [2]string, c store.Claim) [2]store.Claim {
	callee, caller := c, c
	callee.Peer, caller.Peer, caller.Out = parties[1], parties[0], true
	return [2]store.Claim{callee, caller}
}

// claimWrite is the write of user's line l (read at rev) holding the claims
// of it that still hold (held) plus c.
func claimWrite(user string, l store.Line, rev uint64, held []store.Held, c store.Claim) store.Write {
	return store.PutLine(user, l.WithClaims(append(store.Claims(held), c)), rev)
}

// claimDeadline bounds what a send may still write after claiming a line
// at claimed. Past a third of the grace, another sender may soon count the
// claim as abandoned; writing the invitation then could make two
// invitations ring one callee, so the send gives up with UNAVAILABLE (a
// retry claims afresh). Otherwise ctx is cut to the rest of that third.
func (b *Broker) claimDeadline(ctx context.Context, claimed time.Time) (context.Context, context.CancelFunc, error) {
	limit := b.cfg.ClaimGrace / 3
	if b.now().Sub(claimed) > limit {
		return nil, nil, protocol.Errorf(protocol.CodeUnavailable, "claiming lines took longer than %s: retry", limit)
	}
	ctx, cancel := context.WithTimeout(ctx, limit-b.now().Sub(claimed))
	return ctx, cancel, nil
}

// claimLines writes the lines of users in parallel, each with the claims
// of it that still hold (held) plus claims[i]; a line whose claim has no
// id is left alone. It returns the lines' new revisions (0 where nothing
// was written), and store.ErrConflict if any line changed since it was
// read (the claims that landed stay: they are the invitation's).
func (b *Broker) claimLines(ctx context.Context, users []string, lines []store.Line, revs []uint64, held [][]store.Held, claims []store.Claim) ([]uint64, error) {
	errs := make([]error, len(users))
	newRevs := make([]uint64, len(users))
	var wg sync.WaitGroup
	for i := range users {
		if claims[i].ID == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			newRevs[i], errs[i] = b.store.Commit(ctx, claimWrite(users[i], lines[i], revs[i], held[i], claims[i]))
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if errors.Is(err, store.ErrConflict) {
			return newRevs, store.ErrConflict
		}
	}
	return newRevs, errors.Join(errs...)
}

// unclaim takes back the claims of invitation id that claim wrote (revs:
// the lines' revisions it left, 0 where it wrote nothing), for a send that
// will not create its invitation. It is best effort: a line written again
// meanwhile keeps the claim, which then holds for ClaimGrace at most, like
// the claim of a sender that died.
func (b *Broker) unclaim(ctx context.Context, users []string, lines []store.Line, revs []uint64, held [][]store.Held, id string) {
	var wg sync.WaitGroup
	for i := range users {
		if revs[i] == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := lines[i].WithClaims(store.Claims(held[i]))
			if _, err := b.store.Commit(ctx, store.PutLine(users[i], l, revs[i])); err != nil {
				b.log.Debug().Err(err).Str("id", id).Str("user", users[i]).Msg("claim not taken back; it lapses after the claim grace")
			}
		}()
	}
	wg.Wait()
}

// sessionCheck is a caller's session read in flight (see checkSession).
type sessionCheck struct {
	done     chan struct{}
	loggedIn bool
	err      error
	user     string
	device   string
}

// checkSession starts reading whether user is logged in on device; wait
// gives the verdict: nil, NOT_LOGGEDIN, or the store's error. A send that
// returns without waiting leaves nothing behind: the read ends with its
// context and writes only to its own sessionCheck.
func (b *Broker) checkSession(ctx context.Context, user, device string) *sessionCheck {
	s := &sessionCheck{done: make(chan struct{}), user: user, device: device}
	go func() {
		defer close(s.done)
		s.loggedIn, s.err = b.store.HasSession(ctx, user, device)
		if s.err == nil && !s.loggedIn && b.store.Replicated() {
			// A session put moments ago may not have reached the follower
			// that answered: confirm with the leader before refusing.
			s.loggedIn, s.err = b.store.HasSessionFresh(ctx, user, device)
		}
	}()
	return s
}

func (s *sessionCheck) wait() error {
	<-s.done
	switch {
	case s.err != nil:
		return s.err
	case !s.loggedIn:
		return protocol.Errorf(protocol.CodeNotLoggedIn, "%s has no live session on device %s: log in first", s.user, s.device)
	}
	return nil
}

// holding resolves the claims on the users' lines (in parallel): the
// claims that still hold, minus the invitation's own (a retried send finds
// its earlier claims).
func (b *Broker) holding(ctx context.Context, users []string, lines []store.Line, id string, fresh bool) ([][]store.Held, error) {
	held := make([][]store.Held, len(users))
	errs := make([]error, len(users))
	var wg sync.WaitGroup
	now := b.now()
	for i := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cs, err := b.store.Holding(ctx, users[i], lines[i], now, b.cfg.LineRules(), fresh)
			for _, c := range cs {
				if c.ID != id {
					held[i] = append(held[i], c)
				}
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	return held, errors.Join(errs...)
}

func (b *Broker) validateSend(c *command) error {
	req := c.req
	if err := subjects.ValidateID(req.Callee); err != nil {
		return protocol.Errorf(protocol.CodeInvalidArgument, "callee: %v", err)
	}
	if req.Callee == c.user {
		return protocol.Errorf(protocol.CodeInvalidArgument, "cannot invite yourself")
	}
	return b.validateBody(req)
}

// validateBody checks what every send carries besides its callees.
func (b *Broker) validateBody(req *protocol.Request) error {
	if req.ID != "" {
		if err := subjects.ValidateID(req.ID); err != nil {
			return protocol.Errorf(protocol.CodeInvalidArgument, "id: %v", err)
		}
	}
	if len(req.Content) > b.cfg.MaxContent {
		return protocol.Errorf(protocol.CodeInvalidArgument, "content: %d bytes, at most %d", len(req.Content), b.cfg.MaxContent)
	}
	if !utf8.ValidString(req.Content) {
		return protocol.Errorf(protocol.CodeInvalidArgument, "content: not UTF-8")
	}
	if len(req.ChannelID) > b.cfg.MaxChannelID {
		return protocol.Errorf(protocol.CodeInvalidArgument, "channelId: %d bytes, at most %d", len(req.ChannelID), b.cfg.MaxChannelID)
	}
	if !utf8.ValidString(req.ChannelID) {
		return protocol.Errorf(protocol.CodeInvalidArgument, "channelId: not UTF-8")
	}
	return nil
}

// glare finds, among the claims that hold on the callee's line (held[0])
// and the caller's (held[1]), the callee's own invitation to caller: one
// that still rings (ringing: to be accepted), or one this device of the
// caller has accepted already (a merge whose reply was lost, or a call the
// two already have). It rings on both lines; the caller's is looked at too
// so that it is found even if its claim on the callee's line is gone.
func glare(held [2][]store.Held, caller, callee, device string) (id string, ringing bool) {
	for _, line := range held {
		for i := range line { // by index: a Held carries a whole record, too big to copy per send
			inv := &line[i].Invitation
			if inv.ID == "" || inv.Caller != callee || inv.Callee != caller {
				continue
			}
			switch {
			case inv.State == protocol.StateSent || inv.State == protocol.StateReceived:
				return inv.ID, true
			case inv.CalleeDevice == device && (inv.State == protocol.StateAccepting || inv.Live() && inv.State == protocol.StateAccepted):
				return inv.ID, false
			}
		}
	}
	return "", false
}

// merge resolves a glare: the caller's device accepts the callee's
// invitation into (unless it did already), then the send's own invitation
// is recorded as CANCELED/MERGED pointing at it — in that order, so that a
// retried send finds either the accepted invitation (and records the
// merge) or the merge itself. again: the views it decided on changed
// (into ended meanwhile, or the id was written by a racing retry): decide
// again from fresh reads.
func (b *Broker) merge(ctx context.Context, c *command, id, into string, ringing bool, invRev uint64, session *sessionCheck) (_ protocol.Reply, again bool, _ error) {
	if err := session.wait(); err != nil {
		return protocol.Reply{}, false, err
	}
	if ringing {
		cur, err := b.transition(ctx, into, lifecycle.Action{Kind: lifecycle.Accept, User: c.user, Device: c.req.Device})
		var pe *protocol.Error
		if errors.As(err, &pe) {
			return protocol.Reply{}, true, nil // it was canceled, accepted elsewhere, timed out: look again
		}
		if err != nil {
			return protocol.Reply{}, false, err
		}
		// Accepting again what this device accepted is a no-op that
		// succeeds, even once that call is over (a retried accept): the
		// view that rang was stale, and a call that ended is nothing to
		// merge into.
		if !cur.Live() {
			return protocol.Reply{}, true, nil
		}
	} else {
		// Accepted by this device already, says a view that may be stale
		// (the cache, a follower): the leader must say it still is.
		cur, _, err := b.store.GetInvitationFresh(ctx, into)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return protocol.Reply{}, false, err
		}
		if err != nil || !cur.Live() || cur.CalleeDevice != c.req.Device || cur.State == protocol.StateSent || cur.State == protocol.StateReceived {
			return protocol.Reply{}, true, nil
		}
	}
	rec := lifecycle.NewMerged(id, c.user, c.req.Device, c.req.Callee, c.req.ChannelID, into, b.now())
	if again, err := b.create(ctx, &rec, invRev); again || err != nil {
		return protocol.Reply{}, again, err
	}
	withInvitation(c.logged(b.log.Info()), &rec).Str("into", into).Msg("glare: merged into the callee's invitation")
	return protocol.Reply{Invitation: view(rec)}, false, nil
}

// describeHeld renders claims for debug logs: each held claim with the
// state of its invitation (empty: not written yet), then the bare claims.
func describeHeld(hs []store.Held, claims ...store.Claim) string {
	var b strings.Builder
	for _, h := range hs {
		fmt.Fprintf(&b, "%s:%s ", h.Claim, h.Invitation.State)
	}
	for _, c := range claims {
		fmt.Fprintf(&b, "%s ", c)
	}
	return b.String()
}

// maxGlareWaits bounds how long a send waits for the callee's racing
// invitation to be written (2+4+…+16 ms): a live sender writes it within a
// few ms of its claims.
const maxGlareWaits = 8

// errWaitGlare: the callee is mid-send to the caller and wins the tie.
var errWaitGlare = errors.New("broker: the callee's invitation to the caller is being sent")

// sendingToMe looks among the callee's held claims for one of the callee's
// own sends to caller that is not written yet. If that send is committed —
// one of its attempts landed both its claims (the same At on both lines;
// mine is the caller's line as read) — it is past its own look for glare
// and about to write its invitation: this send waits for it and merges
// into it (errWaitGlare: look again). Otherwise that send will look again
// too, and may find this one's claim: if this send's claim (id) is on the
// caller's line already, the two may be waiting for each other, so the
// caller whose id sorts first goes on — the other's claim is dropped from
// held (dropped: claim must write the caller's line first, which proves
// the other did not commit meanwhile) — and the other, still waiting,
// merges into its invitation.
func sendingToMe(held []store.Held, mine store.Line, caller, callee, id string) (_ []store.Held, dropped bool, _ error) {
	i := slices.IndexFunc(held, func(h store.Held) bool {
		return h.Invitation.ID == "" && h.Claim.Out && h.Claim.Peer == caller
	})
	if i < 0 {
		return held, false, nil
	}
	theirs := held[i].Claim
	committed := slices.ContainsFunc(mine.Claims, func(c store.Claim) bool { return c.ID == theirs.ID && c.At == theirs.At })
	mineLanded := slices.ContainsFunc(mine.Claims, func(c store.Claim) bool { return c.ID == id })
	if !committed && mineLanded && caller < callee {
		return slices.Delete(slices.Clone(held), i, i+1), true, nil
	}
	return held, false, errWaitGlare
}
