package broker

import (
	"context"
	"hash/fnv"
	"sync"
	"sync/atomic"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
)

// The recorder does the projector's steps after the events — arm the
// timer, make the push requests, append the histories, export — on
// goroutines of its own, so that a stream that stops answering (the timer,
// push, history or export stream: its leader lost, no quorum, a server
// frozen; every write then waits for its deadline) delays only those
// steps, never the events of the invitations queued behind them on the
// projector's workers. It is sharded by invitation like the projector, and
// a revision is handed over before its events are published
// (projectRecord), so one invitation's revisions take these steps in order
// (a STOP push after its RING). Every step is idempotent (message ids, the
// export's compare-and-set, a timer's subject), so a redelivery repeats
// them harmlessly. The revision's message is acknowledged when they are done,
// and redelivered if one fails.
const (
	recorderShards = 64
	recorderDepth  = 64 // per shard
)

// recording is one revision whose steps 2 to 5 are still to do.
type recording struct {
	m     settler
	rec   lifecycle.Record
	first bool // first delivery: its outcome is counted
}

// recorder runs recordings on recorderShards goroutines, each taking the
// invitations that hash to it in order.
type recorder struct {
	shards []chan *finish
	timers *store.TimerBatcher // nil: one schedule per timer (Config.TimerBatch 0)
	wg     sync.WaitGroup
	once   sync.Once
	// mu guards closed: the outbox may offer work from its own goroutines
	// (a retry, a replay) while the broker shuts down.
	mu     sync.RWMutex
	closed bool
}

func (b *Broker) newRecorder() *recorder {
	r := &recorder{shards: make([]chan *finish, recorderShards)}
	if b.cfg.TimerBatch > 0 {
		r.timers = b.store.NewTimerBatcher(b.cfg.TimerBatch)
	}
	for i := range r.shards {
		ch := make(chan *finish, recorderDepth)
		r.shards[i] = ch
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for f := range ch {
				b.record(f)
			}
		}()
	}
	return r
}

// offer hands f's recording to its shard and reports whether it took it:
// false once the recorder is closed, or when recorderDepth recordings
// already wait there (its streams have stalled for a while), so that the
// projector's worker asks for a redelivery later instead of waiting. A
// revision handed back so is superseded in the bucket by any later one of
// its invitation, so it cannot take its steps after a later revision's.
func (r *recorder) offer(f *finish) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return false
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(f.j.rec.ID))
	select {
	case r.shards[h.Sum32()%uint32(len(r.shards))] <- f:
		return true
	default:
		return false
	}
}

// close waits for the recordings handed over, once no more can come.
func (r *recorder) close() {
	r.once.Do(func() {
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		for _, ch := range r.shards {
			close(ch)
		}
		r.wg.Wait()
		if r.timers != nil {
			r.timers.Close() // after the shards: they hand it timers
		}
	})
}

// record takes steps 2 to 5 of project for finish's revision, then
// acknowledges it (or asks for a redelivery if a step failed). A timer
// armed in a batch (Config.TimerBatch) is stored while steps 3 to 5 run,
// and the events may still be in publication (projectRecord): whichever
// part finishes last acknowledges.
func (b *Broker) record(finish *finish) {
	ctx, cancel := b.opContext()
	defer cancel()
	rec := &finish.j.rec
	// 2. The timer after the events: arming is a JetStream round trip that
	// the ring need not wait for (a redelivery after a crash redoes both).
	// A revision that relies on a timer an earlier one asked for makes
	// sure it is there (timerLost).
	if rec.Rearm || b.timerLost(ctx, rec) {
		if b.recorder.timers != nil {
			finish.add()
			b.recorder.timers.Arm(rec.ID, rec.TimerAt, func(err error) {
				if err != nil {
					withInvitation(b.log.Warn(), rec).Err(err).Msg("arm timer failed; will retry")
				}
				finish.done(err == nil)
			})
		} else if err := b.store.ArmTimer(ctx, rec.ID, rec.TimerAt); err != nil {
			withInvitation(b.log.Warn(), rec).Err(err).Msg("arm timer failed; will retry")
			finish.done(false)
			return
		}
	}
	finish.done(b.steps(ctx, rec))
}

// steps takes steps 3 to 5 of project for rec, and reports whether all
// succeeded.
func (b *Broker) steps(ctx context.Context, rec *lifecycle.Record) bool {
	// 3. Push requests for the callee's devices that hold no connection.
	if b.pushes(rec) {
		if err := b.pushGroup(ctx, rec); err != nil {
			withInvitation(b.log.Warn(), rec).Err(err).Msg("push request failed; will retry")
			return false
		}
	}
	return b.journals(ctx, rec)
}

// journals takes steps 4 and 5 of project for rec, and reports whether
// both succeeded. They are also what a revision superseded before its
// projection completed still needs (committed.NakWithDelay): its
// successor's projection sends the events, pushes and timer of the newer
// state, but the history entries of the legs this revision ended are this
// revision's alone (historyParties: a group's callee enters its history
// in the revision that ends its leg).
func (b *Broker) journals(ctx context.Context, rec *lifecycle.Record) bool {
	// 4. A finished invitation enters both parties' histories (a group's
	// callee, when its own leg ends: historyParties).
	if parties := b.historyParties(rec); len(parties) > 0 {
		if err := b.journal.Append(ctx, &rec.Invitation, parties...); err != nil {
			withInvitation(b.log.Warn(), rec).Err(err).Msg("history append failed; will retry")
			return false
		}
	}
	// 5. Every transition the invitation's export subject lacks.
	if b.cfg.Export && !rec.Quiet {
		if err := b.journal.Export(ctx, rec); err != nil {
			withInvitation(b.log.Warn(), rec).Err(err).Msg("export failed; will retry")
			return false
		}
	}
	return true
}

// finish acknowledges a recording once each of its parts is done (one,
// plus one per add), or asks for a redelivery if one failed.
type finish struct {
	b      *Broker
	j      recording
	left   atomic.Int32
	failed atomic.Bool
}

func (b *Broker) finisher(j recording) *finish {
	f := &finish{b: b, j: j}
	f.left.Store(1)
	return f
}

func (f *finish) add() { f.left.Add(1) }

func (f *finish) done(ok bool) {
	if !ok {
		f.failed.Store(true)
	}
	if f.left.Add(-1) > 0 {
		return
	}
	if f.failed.Load() {
		f.b.nak(f.j.m, "projector")
		return
	}
	f.b.projected(f.j.m, &f.j.rec, f.j.first)
}
