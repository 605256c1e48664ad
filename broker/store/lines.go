package store

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/protocol"
)

// LineRules are what decides how long a claim holds (a broker's
// ClaimGrace and UnreceivedHold).
type LineRules struct {
	// Grace: a claim whose invitation is not written yet holds this long.
	Grace time.Duration
	// Unreceived: an invitation no device of its callee has received keeps
	// the callee busy this long after it was sent (lifecycle.Busies); 0:
	// for as long as it rings.
	Unreceived time.Duration
}

// Held is a claim that stays on its line: its invitation is a live
// invitation or call of the line's user, or is not written yet.
type Held struct {
	Claim
	// Busy: the claim makes the line's user busy to other callers
	// (lifecycle.Busies; a claim not written yet counts as busy).
	Busy bool
	// Outgoing: the line's user is the caller (a claim whose invitation is
	// not written yet counts as outgoing: its sender is mid-send).
	Outgoing bool
	// Invitation is the claim's invitation as read (zero if not written
	// yet): a send looks in it for glare.
	Invitation protocol.Invitation
}

// Holding returns the claims of user's line l that stay on it, in order:
// those whose invitation is a live invitation or call of the user's
// (lifecycle.HoldsLines), and those whose invitation is not written yet but
// which were made less than rules.Grace before now. The rest — claims of
// finished invitations, of ids that turned out to belong to someone else,
// and abandoned claims — hold nothing and are dropped by the next line
// write. Each says whether it makes the user busy and whether it is the
// user's own call.
//
// The invitations come from the store's cache when it has them, else are
// read in parallel. With fresh unset the reads are direct
// gets, which a lagging follower may answer: a claim can then look held when
// its invitation has just ended (callers that refuse on it confirm with
// fresh set), never the reverse, since a finished invitation never comes
// back and a missing one past the grace is confirmed with the leader.
func (s *Store) Holding(ctx context.Context, user string, l Line, now time.Time, rules LineRules, fresh bool) ([]Held, error) {
	if len(l.Claims) == 0 {
		return nil, nil
	}
	// Not GetInvitation: a claim's missing invitation needs the leader's
	// word only past the grace, and that is decided below.
	get := func(ctx context.Context, id string) (lifecycle.Record, uint64, error) {
		return s.getInvitation(ctx, false, id)
	}
	if fresh {
		get = s.GetInvitationFresh
	}
	held := make([]Held, len(l.Claims))
	keep := make([]bool, len(l.Claims))
	errs := make([]error, len(l.Claims))
	judge := func(i int, rec lifecycle.Record) {
		keep[i] = lifecycle.HoldsLine(rec, user)
		held[i].Busy = lifecycle.Busies(rec, user, now, rules.Unreceived)
		held[i].Outgoing = rec.Caller == user
		held[i].Invitation = rec.Invitation
		if !keep[i] && rejoining(rec, user, l.Claims[i], now, rules.Grace) {
			keep[i], held[i].Busy = true, true
		}
	}
	var wg sync.WaitGroup
	for i, c := range l.Claims {
		held[i].Claim = c
		if rec, ok := s.cache.invitation(c.ID); ok && (!fresh || !lifecycle.HoldsLines(rec)) {
			// Not holding is final; holding, from the cache, may be stale
			// like a follower's direct get (callers confirm with fresh set).
			judge(i, rec)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec, _, err := get(ctx, c.ID)
			if errors.Is(err, ErrNotFound) {
				if now.Sub(time.UnixMilli(c.At)) < rules.Grace {
					// Being written right now, or by a sender that died: wait out the grace.
					keep[i], held[i].Busy, held[i].Outgoing = true, true, true
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
			judge(i, rec)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var out []Held
	for i := range held {
		if keep[i] {
			out = append(out, held[i])
		}
	}
	return out, nil
}

// Claims returns the claims of hs.
func Claims(hs []Held) []Claim {
	cs := make([]Claim, len(hs))
	for i, h := range hs {
		cs[i] = h.Claim
	}
	return cs
}

// AnyBusy reports whether any of hs makes its user busy.
func AnyBusy(hs []Held) bool {
	for _, h := range hs {
		if h.Busy {
			return true
		}
	}
	return false
}

// Outgoing counts the user's own calls among hs.
func Outgoing(hs []Held) int {
	n := 0
	for _, h := range hs {
		if h.Outgoing {
			n++
		}
	}
	return n
}

// Busy reports whether user's line is taken — the manual flag, or a claim
// that holds (Holding) — reading through the leader. It is for checks and
// diagnostics; the send path resolves lines itself. l is the line as read.
func (s *Store) Busy(ctx context.Context, user string, rules LineRules) (busy bool, l Line, err error) {
	l, _, err = s.GetLineFresh(ctx, user)
	if errors.Is(err, ErrNotFound) {
		return false, l, nil
	}
	if err != nil {
		return false, l, err
	}
	held, err := s.Holding(ctx, user, l, time.Now(), rules, true)
	return l.Manual || AnyBusy(held), l, err
}

// rejoining reports whether c, a claim of a group invitation whose record
// says user's leg is over, was written after the leg ended and less than
// grace ago: a late join or a fresh invitation of user into that call is
// under way (the claim goes first, the record after), so it holds like a
// claim whose invitation is not written yet.
func rejoining(rec lifecycle.Record, user string, c Claim, now time.Time, grace time.Duration) bool {
	l := rec.Leg(user)
	return rec.Live() && l != nil && l.EndedAt != 0 && c.At >= l.EndedAt && now.Sub(time.UnixMilli(c.At)) < grace
}
