package store

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ringer-dev/ringer/broker/lifecycle"
)

// Holding returns the claims of user's line l that still keep the user busy,
// in order: those whose invitation is a live invitation or call of the
// user's (lifecycle.HoldsLines), and those whose invitation is not written
// yet but which were made less than grace before now. The rest — claims of
// finished invitations, of ids that turned out to belong to someone else, and
// abandoned claims — hold nothing and are dropped by the next line write.
//
// The invitations come from the store's cache when it has them, else are
// read in parallel. With fresh unset the reads are direct
// gets, which a lagging follower may answer: a claim can then look held when
// its invitation has just ended (callers that refuse on it confirm with
// fresh set), never the reverse, since a finished invitation never comes
// back and a missing one past the grace is confirmed with the leader.
func (s *Store) Holding(ctx context.Context, user string, l Line, now time.Time, grace time.Duration, fresh bool) ([]Claim, error) {
	if len(l.Claims) == 0 {
		return nil, nil
	}
	// Not GetInvitation: a claim's missing invitation needs the leader's
	// word only past the grace, and that is decided below.
	get := func(ctx context.Context, id string) (lifecycle.Record, uint64, error) {
		return s.getInvitation(ctx, s.bucket, id)
	}
	if fresh {
		get = s.GetInvitationFresh
	}
	holds := make([]bool, len(l.Claims))
	errs := make([]error, len(l.Claims))
	var wg sync.WaitGroup
	for i, c := range l.Claims {
		if rec, ok := s.cache.invitation(c.ID); ok && (!fresh || !lifecycle.HoldsLines(rec)) {
			// Not holding is final; holding, from the cache, may be stale
			// like a follower's direct get (callers confirm with fresh set).
			holds[i] = rec.RoleOf(user) != "" && lifecycle.HoldsLines(rec)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec, _, err := get(ctx, c.ID)
			if errors.Is(err, ErrNotFound) {
				if now.Sub(time.UnixMilli(c.At)) < grace {
					holds[i] = true // being written right now, or by a sender that died: wait out the grace
					return
				}
				if !fresh && s.Replicated() {
					rec, _, err = s.GetInvitationFresh(ctx, c.ID)
				}
				if errors.Is(err, ErrNotFound) {
					return // abandoned: its sender died between claim and invitation
				}
			}
			if err != nil {
				errs[i] = err
				return
			}
			holds[i] = rec.RoleOf(user) != "" && lifecycle.HoldsLines(rec)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var held []Claim
	for i, c := range l.Claims {
		if holds[i] {
			held = append(held, c)
		}
	}
	return held, nil
}

// Busy reports whether user's line is taken — the manual flag, or a claim
// that holds (Holding) — reading through the leader. It is for checks and
// diagnostics; the send path resolves lines itself. l is the line as read.
func (s *Store) Busy(ctx context.Context, user string, grace time.Duration) (busy bool, l Line, err error) {
	l, _, err = s.GetLineFresh(ctx, user)
	if errors.Is(err, ErrNotFound) {
		return false, l, nil
	}
	if err != nil {
		return false, l, err
	}
	held, err := s.Holding(ctx, user, l, time.Now(), grace, true)
	return l.Manual || len(held) > 0, l, err
}
