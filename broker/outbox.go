package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
)

// The outbox projects every invitation revision this broker commits right
// after its commit, on the committing goroutine (project's step 1, then the
// recorder), instead of waiting for the projector consumer to deliver it
// to some broker and hear its acknowledgement (docs/architecture.md,
// "Events"). What that delivery and acknowledgement guaranteed — a broker
// that dies between a commit and its projection leaves it to a peer — the
// outbox keeps with watermarks:
//
//   - Every invitation revision a broker writes carries its instance
//     (store.HeaderWriter), a random id drawn at Start.
//   - Per partition, the broker knows the highest sequence acknowledged to
//     it (acked) and holds the watermark below every write still in flight
//     (at the acked sequence when it began: whatever it stores comes after)
//     and below every stored revision whose projection is not done.
//   - Every refresh it writes the watermarks to proj.<instance> (a
//     compare-and-set on its own revision), which doubles as its heartbeat.
//   - Every broker watches every proj.* key. One that has not changed for
//     grace belongs to a broker that is gone (or hung): a peer claims it
//     (compare-and-set), replays the partitions after its watermarks
//     (store.Replay: the revisions that instance wrote, still in the
//     bucket), projects them, and deletes the key.
//
// Projection is idempotent (events carry revisions, timers and history
// are deduplicated), so a broker presumed dead that was only slow costs a
// second projection, never a lost one. A write whose answer was lost, or
// was a compare-and-set conflict (it may or may not be stored either way:
// store.WriteDone), holds the watermark until a read tells.
type outbox struct {
	b        *Broker
	instance string
	every    time.Duration // refresh
	grace    time.Duration // a peer's key unchanged this long is reclaimed
	// undecided bounds how long a write whose outcome is unknown is held
	// while its key still holds the revision it expected (Unknown; under mu).
	undecided time.Duration

	mu     sync.Mutex
	parts  []outboxPart
	rev    uint64 // of proj.<instance>; 0 before the first write
	closed bool
	peers  map[string]*peerMarks
	bumped time.Time // when idle partitions were last moved to their end
}

// outboxPart is one partition's state of the outbox.
type outboxPart struct {
	acked uint64         // highest sequence acknowledged to this broker
	holds map[uint64]int // watermark holds (sequence → count)
}

// peerMarks is another instance's watermarks as last seen.
type peerMarks struct {
	e        store.WatermarksEntry
	seen     time.Time // when its revision last changed, by this broker's clock
	replay   bool      // this broker is replaying them
	unlisten func()    // stops hearing its cache gossip (store.ListenTo)
}

// forget drops peer instance (its watermarks deleted: gone for good).
func (o *outbox) forget(instance string) {
	if p, ok := o.peers[instance]; ok {
		p.unlisten()
		delete(o.peers, instance)
	}
}

// newOutbox starts with the partitions' last sequences (a broker that dies
// before its first commit leaves nothing before them to replay), and
// writes its first watermarks before the broker serves.
func (b *Broker) newOutbox(ctx context.Context) (*outbox, error) {
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	o := &outbox{b: b, instance: hex.EncodeToString(id), every: max(b.cfg.AckWait/4, 50*time.Millisecond), grace: b.cfg.AckWait,
		undecided: undecidedFor, parts: make([]outboxPart, b.store.Partitions()), peers: map[string]*peerMarks{}}
	for i := range o.parts {
		last, err := b.store.LastSequence(ctx, i)
		if err != nil {
			return nil, err
		}
		o.parts[i] = outboxPart{acked: last, holds: map[uint64]int{}}
	}
	if err := o.refresh(ctx); err != nil {
		return nil, err
	}
	b.store.TrackWrites(o.instance, o)
	if b.cfg.CacheGossip {
		b.store.Gossip(o.instance)
	}
	return o, nil
}

// Begin is store.WriteTracker's: a write to partition part is in flight.
func (o *outbox) Begin(part int) store.WriteDone {
	o.mu.Lock()
	defer o.mu.Unlock()
	h := o.parts[part].acked
	o.parts[part].holds[h]++
	return &outboxWrite{o: o, part: part, hold: h}
}

// release drops one hold at h in part.
func (o *outbox) release(part int, h uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.parts[part].drop(h)
}

// drop removes one hold at h.
func (p *outboxPart) drop(h uint64) {
	if p.holds[h]--; p.holds[h] <= 0 {
		delete(p.holds, h)
	}
}

// stored notes revision rev of part as acknowledged, and moves a write's
// hold from where it began (from) to just below rev until it is projected:
// one lock per commit on the hot path.
func (o *outbox) stored(part int, from, rev uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := &o.parts[part]
	p.acked = max(p.acked, rev)
	p.holds[rev-1]++
	p.drop(from)
}

// marks are the current watermarks, and how many holds are under them and
// how far they trail the acked sequences (for the metrics).
func (o *outbox) marks() (out []uint64, held int, lag uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	out = make([]uint64, len(o.parts))
	for i := range o.parts {
		p := &o.parts[i]
		out[i] = p.acked
		for h, n := range p.holds {
			out[i] = min(out[i], h)
			held += n
		}
		lag += p.acked - out[i]
	}
	return out, held, lag
}

// bumpIdle moves the acked sequence of every partition in which this
// broker holds nothing to the partition's last sequence, at most once per
// grace: a peer that replays after this broker's death then reads only
// what came after, however long the broker has been idle there. It is
// safe because a write in flight and a revision not yet projected are
// always held: a write that begins after the look holds at the old acked
// sequence or the bumped one, and is stored past both.
func (o *outbox) bumpIdle(ctx context.Context) {
	o.mu.Lock()
	if time.Since(o.bumped) < o.grace {
		o.mu.Unlock()
		return
	}
	o.bumped = time.Now()
	var idle []int
	for i, p := range o.parts {
		if len(p.holds) == 0 {
			idle = append(idle, i)
		}
	}
	o.mu.Unlock()
	for _, i := range idle {
		last, err := o.b.store.LastSequence(ctx, i)
		if err != nil {
			return // the next bump will do
		}
		o.mu.Lock()
		o.parts[i].acked = max(o.parts[i].acked, last)
		o.mu.Unlock()
	}
}

// settled reports whether nothing is held.
func (o *outbox) settled() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range o.parts {
		if len(p.holds) > 0 {
			return false
		}
	}
	return true
}

// refresh writes the watermarks (created, or compare-and-set on the last
// revision; when a peer claimed them meanwhile — this broker was thought
// gone — over the peer's claim).
func (o *outbox) refresh(ctx context.Context) error {
	marks, held, lag := o.marks()
	o.b.metrics.outboxHeld.Set(float64(held))
	o.b.metrics.outboxLag.Set(float64(lag))
	w := store.Watermarks{Parts: marks}
	o.mu.Lock()
	rev := o.rev
	o.mu.Unlock()
	next, err := o.b.store.PutWatermarks(ctx, o.instance, w, rev)
	if errors.Is(err, store.ErrConflict) {
		cur, gerr := o.b.store.GetWatermarks(ctx, o.instance)
		switch {
		case errors.Is(gerr, store.ErrNotFound):
			next, err = o.b.store.PutWatermarks(ctx, o.instance, w, 0)
		case gerr != nil:
			return gerr
		default:
			next, err = o.b.store.PutWatermarks(ctx, o.instance, w, cur.Revision)
		}
	}
	if err != nil {
		return err
	}
	o.mu.Lock()
	o.rev = next
	o.mu.Unlock()
	return nil
}

// run refreshes the watermarks and watches the peers' until ctx ends.
func (o *outbox) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			err := o.b.store.WatchWatermarks(ctx, o.seen)
			if ctx.Err() != nil {
				return
			}
			o.b.log.Warn().Err(err).Msg("watching the peers' watermarks; again in a second")
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	})
	tick := time.NewTicker(o.every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-tick.C:
		}
		rctx, cancel := context.WithTimeout(ctx, o.grace)
		o.bumpIdle(rctx)
		if err := o.refresh(rctx); err != nil && ctx.Err() == nil {
			o.b.log.Warn().Err(err).Msg("watermarks not written")
		}
		cancel()
		o.reclaim(ctx)
	}
}

// seen notes a peer's watermarks as watched.
func (o *outbox) seen(e store.WatermarksEntry) {
	if e.Instance == o.instance {
		return
	}
	o.mu.Lock()
	_, known := o.peers[e.Instance]
	o.mu.Unlock()
	unlisten := func() {}
	if !known && !e.Deleted {
		// A new peer: hear its cache gossip from now on. Not under the
		// lock, which every commit takes: listening waits for the server.
		var err error
		if unlisten, err = o.b.store.ListenTo(e.Instance); err != nil {
			o.b.log.Warn().Err(err).Str("instance", e.Instance).Msg("not listening to a peer's cache gossip")
			unlisten = func() {}
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	p, ok := o.peers[e.Instance]
	switch {
	case e.Deleted:
		if ok && !p.replay {
			o.forget(e.Instance)
		}
	case !ok && !o.closed:
		o.peers[e.Instance] = &peerMarks{e: e, seen: time.Now(), unlisten: unlisten}
		return
	case ok && p.e.Revision != e.Revision:
		p.e, p.seen = e, time.Now()
	}
	unlisten() // not kept: nothing to stop, or the broker stopped meanwhile
}

// reclaim claims and replays every peer's watermarks unchanged for grace.
func (o *outbox) reclaim(ctx context.Context) {
	o.mu.Lock()
	var due []store.WatermarksEntry
	for _, p := range o.peers {
		if !p.replay && time.Since(p.seen) > o.grace {
			p.replay = true
			due = append(due, p.e)
		}
	}
	o.mu.Unlock()
	for _, e := range due {
		o.b.bg.Go(func() {
			err := o.replay(ctx, e)
			o.mu.Lock()
			defer o.mu.Unlock()
			if p, ok := o.peers[e.Instance]; ok {
				p.replay, p.seen = false, time.Now()
				if err == nil {
					o.forget(e.Instance)
				}
			}
			if err != nil && ctx.Err() == nil {
				o.b.log.Warn().Err(err).Str("instance", e.Instance).Msg("a gone broker's commits not replayed; again later")
			}
		})
	}
}

// replay claims a gone instance's watermarks, projects every revision it
// wrote after them, and deletes them.
func (o *outbox) replay(ctx context.Context, e store.WatermarksEntry) error {
	marks := e.Marks
	marks.Claim = o.instance
	rev, err := o.b.store.PutWatermarks(ctx, e.Instance, marks, e.Revision)
	if err != nil {
		return err // a peer claimed it first, or it came back
	}
	n := 0
	for part, from := range marks.Parts {
		if part >= len(o.parts) {
			break
		}
		err := o.b.store.Replay(ctx, part, from, e.Instance, func(r lifecycle.Record) error {
			if err := o.b.projectAndWait(ctx, r); err != nil {
				return err
			}
			n++
			o.b.metrics.outboxReplayed.Inc()
			withInvitation(o.b.log.Debug(), &r).Str("instance", e.Instance).Uint64("rev", r.Revision).Msg("replayed a gone broker's revision")
			return nil
		})
		if err != nil {
			return err
		}
	}
	o.b.log.Info().Str("instance", e.Instance).Int("revisions", n).Msg("projected what a gone broker committed")
	if err := o.b.store.DeleteWatermarks(ctx, e.Instance, rev); err != nil {
		return err
	}
	o.b.metrics.outboxReclaims.Inc()
	return nil
}

// close ends the outbox once the broker's work is done: the watermarks are
// deleted if nothing is held, else written a last time for a peer to
// replay after grace.
func (o *outbox) close(ctx context.Context) {
	o.mu.Lock()
	o.closed = true
	rev := o.rev
	for _, p := range o.peers {
		p.unlisten()
	}
	o.mu.Unlock()
	if o.settled() {
		if err := o.b.store.DeleteWatermarks(ctx, o.instance, rev); err == nil {
			return
		}
	}
	_ = o.refresh(ctx)
}

// isClosed reports whether the broker has stopped (retries are then left
// to the peers).
func (o *outbox) isClosed() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.closed
}

// outboxWrite is one invitation write in flight (store.WriteDone).
type outboxWrite struct {
	o    *outbox
	part int
	hold uint64
}

func (w *outboxWrite) Stored(r lifecycle.Record, rev uint64) {
	w.o.stored(w.part, w.hold, rev)
	if e := w.o.b.log.Debug(); e.Enabled() {
		// Every invitation revision this broker stores, whatever path wrote
		// it: what a trace of a lost projection starts from.
		withInvitation(e, &r).Str("state", string(r.State)).Str("reason", string(r.Reason)).
			Int("partition", w.part).Uint64("rev", rev).Msg("stored")
	}
	if w.o.isClosed() {
		return // written after Shutdown (a tool's, a test's): held for a peer
	}
	w.o.b.projectRecord(r, &committed{o: w.o, part: w.part, rec: r}, true)
}

func (w *outboxWrite) Refused() { w.o.release(w.part, w.hold) }

// Unknown keeps the hold of a write whose outcome is unknown (its answer
// was lost, or was a compare-and-set conflict) until a read tells whether
// it was stored (then it is projected) or not. While the key still holds
// the revision the write expected, the write may yet be stored (store.ErrUndecided: a
// proposal its stream leader commits once it has a quorum again, a publish
// a paused server forwards late), so the resolver asks again — the key's
// next write decides it, and a live invitation's timer writes one — for up
// to outbox.undecided, after which the write counts as not stored.
func (w *outboxWrite) Unknown(r lifecycle.Record, resolve store.Resolver) {
	w.o.mu.Lock()
	limit := w.o.undecided
	w.o.mu.Unlock()
	go func() {
		began, told := time.Now(), false
		for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
			ctx, cancel := w.o.b.opContext()
			rev, landed, err := resolve(ctx)
			cancel()
			if err != nil && !errors.Is(err, store.ErrUndecided) && !told && time.Since(began) >= limit {
				// The read that would tell keeps failing: the hold stays
				// (the write may have landed), and says so once.
				told = true
				withInvitation(w.o.b.log.Warn(), &r).Err(err).Dur("after", time.Since(began)).
					Msg("a write whose outcome is unknown cannot be resolved yet: its read keeps failing; still trying")
			}
			switch {
			case err == nil && landed:
				w.o.b.metrics.outboxUnknown.WithLabelValues("stored").Inc()
				withInvitation(w.o.b.log.Debug(), &r).Uint64("rev", rev).Msg("a write whose outcome was unknown was stored")
				r.Revision = rev
				w.Stored(r, rev)
				return
			case err == nil:
				w.o.b.metrics.outboxUnknown.WithLabelValues("not_stored").Inc()
				withInvitation(w.o.b.log.Debug(), &r).Uint64("replacedBy", rev).Msg("a write whose outcome was unknown was not stored")
				w.Refused()
				return
			case errors.Is(err, store.ErrUndecided) && time.Since(began) >= limit:
				withInvitation(w.o.b.log.Warn(), &r).Dur("after", time.Since(began)).
					Msg("a write whose outcome is unknown is still neither stored nor replaced; counted as not stored")
				w.o.b.metrics.outboxUnknown.WithLabelValues("undecided").Inc()
				w.Refused()
				return
			case w.o.isClosed():
				return // the hold stays in the last watermarks: a peer replays
			}
			time.Sleep(wait)
		}
	}()
}

// undecidedFor is outbox.undecided: far longer than a Raft election
// (4–9 s) or a server's freeze that the cluster survives.
const undecidedFor = time.Minute

// committed settles the projection of a revision this broker committed
// (projectRecord's settler): done, it releases the watermark; failed, it
// is projected again after a pause — unless a later revision superseded
// it: then only its events and journals (history, export), since the
// successor's projection tells the world the newer state but not the
// callees whose legs only this revision changed.
type committed struct {
	o     *outbox
	part  int
	rec   lifecycle.Record
	tries int
}

func (c *committed) Ack() error {
	c.o.release(c.part, c.rec.Revision-1)
	return nil
}

func (c *committed) Nak() error {
	return c.NakWithDelay(min(250*time.Millisecond<<min(c.tries, 5), 5*time.Second))
}

func (c *committed) NakWithDelay(d time.Duration) error {
	c.tries++
	c.o.b.metrics.outboxRetries.Inc()
	time.AfterFunc(d, func() {
		if c.o.isClosed() {
			return // held: a peer replays it
		}
		ctx, cancel := c.o.b.opContext()
		_, rev, err := c.o.b.store.GetInvitationFresh(ctx, c.rec.ID)
		cancel()
		switch {
		case err != nil && !errors.Is(err, store.ErrNotFound):
			_ = c.Nak() // cannot tell yet
		case err != nil || rev != c.rec.Revision:
			// Superseded: its events and journals, for the callees whose
			// legs it alone changed (a client applies an older revision
			// only if it has not seen a newer one); no RING push after the
			// newer state's STOP, no stale timer.
			if err := c.o.b.publishEvents(&c.rec); err != nil {
				_ = c.Nak()
				return
			}
			ctx, cancel := c.o.b.opContext()
			ok := c.o.b.journals(ctx, &c.rec)
			cancel()
			if !ok {
				_ = c.Nak()
				return
			}
			_ = c.Ack()
		default:
			c.o.b.projectRecord(c.rec, c, false)
		}
	})
	return nil
}

// projectAndWait projects a replayed revision and waits until it is done.
func (b *Broker) projectAndWait(ctx context.Context, r lifecycle.Record) error {
	done := make(chan bool, 1)
	b.projectRecord(r, replayed(done), true)
	select {
	case ok := <-done:
		if !ok {
			return errors.New("broker: projection failed")
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// replayed settles a replayed revision's projection on a channel.
type replayed chan bool

func (r replayed) Ack() error                       { r <- true; return nil }
func (r replayed) Nak() error                       { r <- false; return nil }
func (r replayed) NakWithDelay(time.Duration) error { return r.Nak() }
