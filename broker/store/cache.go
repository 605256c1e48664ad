package store

import (
	"math/rand/v2"
	"slices"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/ringer-dev/ringer/broker/lifecycle"
)

// cache remembers the last revision of invitation and line records this
// store has read, written or been shown (Observe), so that a command can
// decide without a read. It is never the state of record: every write made
// from a cached value is a compare-and-set on the cached revision, which
// fails if the record moved on, and every refusal decided from a cached
// value is confirmed with a read (docs/architecture.md, "Record cache").
// Bounded LRU; safe for concurrent use. A nil *cache caches nothing.
type cache struct {
	invs  *lru.Cache[string, lifecycle.Record]
	lines *lru.Cache[string, cachedLine]
	// timers: the deadline (Unix ms) of the last timer this store armed
	// for an invitation; such a timer is in the stream until it fires.
	timers *lru.Cache[string, int64]
	// tries and conflicts count the compare-and-set writes made from cached
	// values and how many of them found the record moved on (halved now and
	// then, so they follow the present).
	tries, conflicts atomic.Int64
}

// Writing from the cache pays when most cached values are current: one
// broker, or a few with a low share of commands per invitation on other
// brokers. Each stale one costs a failed write on top of the read it was
// meant to save. Below this share of conflicts the cache is used for
// writes; above it, only every probeEvery-th write tries it, to notice when
// things change.
const (
	maxConflictShare = 0.25
	probeEvery       = 16
	minTries         = 64   // before this many, always try (learning)
	halveAt          = 1024 // tries
)

// forWrites reports whether the next write should start from a cached value.
func (c *cache) forWrites() bool {
	if c == nil {
		return false
	}
	n, k := c.tries.Load(), c.conflicts.Load()
	if n < minTries || float64(k) < maxConflictShare*float64(n) {
		return true
	}
	return rand.IntN(probeEvery) == 0
}

// outcome records how a write started from a cached value fared.
func (c *cache) outcome(conflict bool) {
	if c == nil {
		return
	}
	if conflict {
		c.conflicts.Add(1)
	}
	if n := c.tries.Add(1); n >= halveAt { // racy halving: an estimate, not an account
		c.tries.Store(n / 2)
		c.conflicts.Store(c.conflicts.Load() / 2)
	}
}

type cachedLine struct {
	line Line
	rev  uint64
}

func newCache(size int) *cache {
	if size <= 0 {
		return nil
	}
	invs, _ := lru.New[string, lifecycle.Record](size) // errors only for size <= 0
	lines, _ := lru.New[string, cachedLine](size)
	timers, _ := lru.New[string, int64](size)
	return &cache{invs: invs, lines: lines, timers: timers}
}

// armed notes that invitation id's timer at at is armed: this store armed
// it, or a peer told it so (cache gossip).
func (c *cache) armed(id string, at int64) {
	if c != nil {
		c.timers.Add(id, at)
	}
}

// knownArmed reports whether invitation id's timer at at is known to be
// armed (the last one noted for id).
func (c *cache) knownArmed(id string, at int64) bool {
	if c == nil {
		return false
	}
	last, ok := c.timers.Get(id)
	return ok && last == at
}

func (c *cache) invitation(id string) (lifecycle.Record, bool) {
	if c == nil {
		return lifecycle.Record{}, false
	}
	return c.invs.Get(id)
}

// putInvitation keeps r (r.Revision set) unless a later revision is cached.
// Two racing puts may leave the earlier one; that costs a failed
// compare-and-set later, never a wrong decision.
func (c *cache) putInvitation(r lifecycle.Record) {
	if c == nil {
		return
	}
	if old, ok := c.invs.Peek(r.ID); ok && old.Revision > r.Revision {
		return
	}
	c.invs.Add(r.ID, r)
}

func (c *cache) line(user string) (Line, uint64, bool) {
	if c == nil {
		return Line{}, 0, false
	}
	cl, ok := c.lines.Get(user)
	if !ok {
		return Line{}, 0, false
	}
	l := cl.line.WithClaims(slices.Clone(cl.line.Claims))
	l.Blocked = slices.Clone(l.Blocked)
	return l, cl.rev, true
}

// putLine keeps l at rev (an empty line: deleted, rev is the marker's).
func (c *cache) putLine(user string, l Line, rev uint64) {
	if c == nil {
		return
	}
	if old, ok := c.lines.Peek(user); ok && old.rev > rev {
		return
	}
	l = l.WithClaims(slices.Clone(l.Claims))
	l.Blocked = slices.Clone(l.Blocked)
	c.lines.Add(user, cachedLine{line: l, rev: rev})
}
