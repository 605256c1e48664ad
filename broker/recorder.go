package broker

import (
	"hash/fnv"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/broker/lifecycle"
)

// The recorder does the projector's steps after the events — arm the
// timer, make the push requests, append the histories, export — on
// goroutines of its own, so that a stream that stops answering (the timer,
// push, history or export stream: its leader lost, no quorum, a server
// frozen; every write then waits for its deadline) delays only those
// steps, never the events of the invitations queued behind them on the
// projector's workers. It is sharded by invitation like the projector, so
// one invitation's revisions take these steps in order (a STOP push after
// its RING). Every step is idempotent (message ids, the export's
// compare-and-set, a timer's subject), so a redelivery repeats them
// harmlessly. The revision's message is acknowledged when they are done,
// and redelivered if one fails.
const (
	recorderShards = 64
	recorderDepth  = 64 // per shard
)

// recording is one revision whose steps 2 to 5 are still to do.
type recording struct {
	m     jetstream.Msg
	rec   lifecycle.Record
	first bool // first delivery: its outcome is counted
}

// recorder runs recordings on recorderShards goroutines, each taking the
// invitations that hash to it in order.
type recorder struct {
	shards []chan recording
	wg     sync.WaitGroup
	once   sync.Once
}

func (b *Broker) newRecorder() *recorder {
	r := &recorder{shards: make([]chan recording, recorderShards)}
	for i := range r.shards {
		ch := make(chan recording, recorderDepth)
		r.shards[i] = ch
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for j := range ch {
				b.record(j)
			}
		}()
	}
	return r
}

// offer hands j to its shard and reports whether it took it: false when
// recorderDepth recordings already wait there (its streams have stalled
// for a while), so that the projector's worker asks for a redelivery later
// instead of waiting. A revision handed back so is superseded in the bucket
// by any later one of its invitation, so it cannot take its steps after a
// later revision's.
func (r *recorder) offer(j recording) bool {
	h := fnv.New32a()
	_, _ = h.Write([]byte(j.rec.ID))
	select {
	case r.shards[h.Sum32()%uint32(len(r.shards))] <- j:
		return true
	default:
		return false
	}
}

// close waits for the recordings handed over, once no more can come.
func (r *recorder) close() {
	r.once.Do(func() {
		for _, ch := range r.shards {
			close(ch)
		}
		r.wg.Wait()
	})
}

// record takes steps 2 to 5 of project for j's revision, then acknowledges
// it (or asks for a redelivery if a step failed).
func (b *Broker) record(j recording) {
	ctx, cancel := b.opContext()
	defer cancel()
	rec := &j.rec
	// 2. The timer after the events: arming is a JetStream round trip that
	// the ring need not wait for (a redelivery after a crash redoes both).
	// A revision that relies on a timer an earlier one asked for makes
	// sure it is there (timerLost).
	if rec.Rearm || b.timerLost(ctx, rec) {
		if err := b.store.ArmTimer(ctx, rec.ID, rec.TimerAt); err != nil {
			withInvitation(b.log.Warn(), rec).Err(err).Msg("arm timer failed; will retry")
			b.nak(j.m, "projector")
			return
		}
	}
	// 3. Push requests for the callee's devices that hold no connection.
	if b.pushes(rec) {
		if err := b.pushGroup(ctx, rec); err != nil {
			withInvitation(b.log.Warn(), rec).Err(err).Msg("push request failed; will retry")
			b.nak(j.m, "projector")
			return
		}
	}
	// 4. A finished invitation enters both parties' histories (a group's
	// callee, when its own leg ends: historyParties).
	if parties := b.historyParties(rec); len(parties) > 0 {
		if err := b.journal.Append(ctx, &rec.Invitation, parties...); err != nil {
			withInvitation(b.log.Warn(), rec).Err(err).Msg("history append failed; will retry")
			b.nak(j.m, "projector")
			return
		}
	}
	// 5. Every transition the invitation's export subject lacks.
	if b.cfg.Export && !rec.Quiet {
		if err := b.journal.Export(ctx, rec); err != nil {
			withInvitation(b.log.Warn(), rec).Err(err).Msg("export failed; will retry")
			b.nak(j.m, "projector")
			return
		}
	}
	b.projected(j.m, rec, j.first)
}
