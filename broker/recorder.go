package broker

import (
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/broker/lifecycle"
)

// The recorder does the projector's last steps — the parties' histories and
// the export — on goroutines of its own, so that a history or export stream
// that stops answering (its leader lost, a server frozen: every append
// then waits for its deadline) delays only those records, never the events
// of the invitations behind them on the projector's workers. Both steps are
// idempotent (message ids; the export's compare-and-set), so they may run
// beside later revisions of the same invitation, and a redelivery repeats
// them harmlessly. The revision's message is acknowledged when they are
// done, and redelivered if they fail.
const (
	recorderWorkers = 64
	recorderDepth   = 1024
)

// recording is one revision whose history and export are still to do.
type recording struct {
	m     jetstream.Msg
	rec   lifecycle.Record
	first bool // first delivery: its outcome is counted
}

// recorder runs recordings on recorderWorkers goroutines.
type recorder struct {
	jobs chan recording
	wg   sync.WaitGroup
	once sync.Once
}

func (b *Broker) newRecorder() *recorder {
	r := &recorder{jobs: make(chan recording, recorderDepth)}
	for range recorderWorkers {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for j := range r.jobs {
				b.record(j)
			}
		}()
	}
	return r
}

// offer hands j to the recorder and reports whether it took it: false
// when recorderDepth recordings already wait (the streams have stalled for
// a while), so that the projector's worker asks for a redelivery later
// instead of waiting.
func (r *recorder) offer(j recording) bool {
	select {
	case r.jobs <- j:
		return true
	default:
		return false
	}
}

// close waits for the recordings handed over, once no more can come.
func (r *recorder) close() {
	r.once.Do(func() {
		close(r.jobs)
		r.wg.Wait()
	})
}

// record appends j's revision to its parties' histories and to the export,
// then acknowledges it (or asks for a redelivery if a step failed).
func (b *Broker) record(j recording) {
	ctx, cancel := b.opContext()
	defer cancel()
	rec := &j.rec
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
