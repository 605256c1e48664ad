package broker

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// maxAttempts bounds compare-and-set retries of one command.
const maxAttempts = 12

// backoff spaces out compare-and-set retries with jitter, so that writers
// contending on one key (a caller with many invitations ending at once all
// update its line) take turns instead of colliding again.
func backoff(attempt int) {
	if attempt == 0 {
		return
	}
	time.Sleep(time.Duration(rand.Int64N(int64(attempt) * int64(2*time.Millisecond))))
}

// send creates an invitation. Hot path, one round of parallel reads and one
// atomic batch:
//
//	reads:  sess.<caller>.<device>, line.<callee>, line.<caller>
//	commit: line.<callee> claim, line.<caller> ref, inv.<id> (expected new) — all or nothing
//
// A busy callee gives a REFUSED(BUSY) record instead of the batch.
func (b *Broker) send(ctx context.Context, c *command) (protocol.Reply, error) {
	req := c.req
	if err := b.validateSend(c); err != nil {
		return protocol.Reply{}, err
	}
	if !b.sends.allow(c.user, b.now()) {
		return protocol.Reply{}, protocol.Errorf(protocol.CodeRateLimited, "%s sends more than %d invitations per second", c.user, b.cfg.SendRate)
	}
	timeouts, err := b.cfg.timeoutsFor(req.Timeouts)
	if err != nil {
		return protocol.Reply{}, err
	}
	id := req.ID
	if id == "" {
		id = store.NewID()
	}
	log := c.log.With().Str("id", id).Str("caller", c.user).Str("callee", req.Callee).Logger()

	// The first attempt assumes the id is new (one round of reads, one
	// commit). Only when a commit conflicts is the invitation read: it may be
	// a retried send, an id taken by someone else, or an expired record's marker.
	checkInv := false
	for attempt := 0; attempt < maxAttempts; attempt++ {
		backoff(attempt)
		var (
			wg                                    sync.WaitGroup
			loggedIn                              bool
			sessErr, calleeErr, callerErr, invErr error
			calleeLine, callerLine                store.Line
			calleeRev, callerRev                  uint64
			existing                              lifecycle.Record
			invRev                                uint64
		)
		wg.Add(3)
		go func() { defer wg.Done(); loggedIn, sessErr = b.store.HasSession(ctx, c.user, req.Device) }()
		getLine := b.store.GetLine
		if checkInv {
			getLine = b.store.GetLineFresh // a conflict may come from a stale follower read
		}
		go func() { defer wg.Done(); calleeLine, calleeRev, calleeErr = getLine(ctx, req.Callee) }()
		go func() { defer wg.Done(); callerLine, callerRev, callerErr = getLine(ctx, c.user) }()
		if checkInv {
			wg.Add(1)
			go func() { defer wg.Done(); existing, invRev, invErr = b.store.GetInvitationFresh(ctx, id) }()
		}
		wg.Wait()
		for _, e := range []error{sessErr, calleeErr, callerErr, invErr} {
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
		if !loggedIn && !checkInv && b.store.Replicated() {
			// A session put moments ago may not have reached the follower
			// that answered: confirm with the leader before refusing.
			if loggedIn, sessErr = b.store.HasSessionFresh(ctx, c.user, req.Device); sessErr != nil {
				return protocol.Reply{}, sessErr
			}
		}
		if !loggedIn {
			return protocol.Reply{}, protocol.Errorf(protocol.CodeNotLoggedIn, "%s has no live session on device %s: log in first", c.user, req.Device)
		}
		if calleeLine.Busy() && !checkInv {
			// A busy refusal is final: make sure it is not a follower's stale
			// view of a line that was just freed (R3 direct gets).
			if calleeLine, calleeRev, calleeErr = b.store.GetLineFresh(ctx, req.Callee); calleeErr != nil && !errors.Is(calleeErr, store.ErrNotFound) {
				return protocol.Reply{}, calleeErr
			}
		}
		now := b.now()
		if calleeLine.Busy() {
			rec := lifecycle.NewBusy(id, c.user, req.Device, req.Callee, req.Content, req.ChannelID, now)
			rev, err := b.store.Commit(ctx, b.putInvitation(rec, invRev))
			if errors.Is(err, store.ErrConflict) {
				checkInv = true
				continue
			}
			if err != nil {
				return protocol.Reply{}, err
			}
			rec.Revision = rev
			b.metrics.transition(rec, "send")
			log.Debug().Msg("callee busy: refused")
			return protocol.Reply{Invitation: view(rec)}, nil
		}
		rec := lifecycle.New(id, c.user, req.Device, req.Callee, req.Content, req.ChannelID, timeouts, now)
		// The invitation goes last so the batch's revision is the record's.
		rev, err := b.store.Commit(ctx,
			store.PutLine(req.Callee, calleeLine.With(id), calleeRev),
			store.PutLine(c.user, callerLine.With(id), callerRev),
			store.PutInvitation(rec, invRev),
		)
		if errors.Is(err, store.ErrConflict) {
			checkInv = true // a line or the id changed under us: re-read and decide again
			continue
		}
		if err != nil {
			return protocol.Reply{}, err
		}
		rec.Revision = rev
		b.metrics.transition(rec, "send")
		log.Debug().Uint64("rev", rev).Msg("invitation sent")
		return protocol.Reply{Invitation: view(rec)}, nil
	}
	return protocol.Reply{}, store.ErrConflict
}

func (b *Broker) validateSend(c *command) error {
	req := c.req
	if err := subjects.ValidateID(req.Callee); err != nil {
		return protocol.Errorf(protocol.CodeInvalidArgument, "callee: %v", err)
	}
	if req.Callee == c.user {
		return protocol.Errorf(protocol.CodeInvalidArgument, "cannot invite yourself")
	}
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
