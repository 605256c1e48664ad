package store

import (
	"slices"

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
	return &cache{invs: invs, lines: lines}
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
	return Line{Claims: slices.Clone(cl.line.Claims), Manual: cl.line.Manual}, cl.rev, true
}

// putLine keeps l at rev (an empty line: deleted, rev is the marker's).
func (c *cache) putLine(user string, l Line, rev uint64) {
	if c == nil {
		return
	}
	if old, ok := c.lines.Peek(user); ok && old.rev > rev {
		return
	}
	c.lines.Add(user, cachedLine{line: Line{Claims: slices.Clone(l.Claims), Manual: l.Manual}, rev: rev})
}

func (c *cache) size() (invs, lines int) {
	if c == nil {
		return 0, 0
	}
	return c.invs.Len(), c.lines.Len()
}
