package broker

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/broker/store"
)

// A call depends on several Raft groups: the bucket's stream, the
// projector, presence and timer consumers, and the timer, history, push and
// export streams (store.Groups). Each elects its own leader, so in a three-node cluster every node
// soon leads some of them, and a node that hangs or is cut off stalls every
// group it leads for a Raft election (4–9 s in nats-server 2.15, not
// configurable): whichever node it is, calls stop. Gathered on the node that
// leads the bucket, the groups stall together when that node fails, and not
// at all when one of the others does (docs/cluster.md, "Gray failures").
//
// So every LeaderCheck each broker looks at who leads what, and asks a group
// led elsewhere than the bucket, and still so at the next look (not in the
// middle of an election), to hand its leadership to the bucket's leader
// (a stepdown with a preferred server: a hand-over of milliseconds, not an
// election). Brokers doing it at once ask the same thing twice, which is
// harmless.

// colocate runs the checks until ctx ends.
func (b *Broker) colocate(ctx context.Context) {
	defer b.bg.Done()
	every := b.cfg.LeaderCheck
	misplaced := map[store.Group]string{} // group → its leader at the last look, when not the bucket's
	for {
		t := time.NewTimer(every/2 + rand.N(every)) // spread over brokers
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		b.alignLeaders(ctx, misplaced)
	}
}

// alignLeaders does one look (see colocate).
func (b *Broker) alignLeaders(ctx context.Context, misplaced map[store.Group]string) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.LeaderCheck)
	defer cancel()
	want, err := b.store.Leader(ctx, store.Bucket)
	if err != nil {
		clear(misplaced) // an election: look again later
		return
	}
	for _, g := range store.Groups {
		leader, err := b.store.Leader(ctx, g)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrConsumerNotFound):
			continue // history or push is off
		case err != nil || leader == want:
			delete(misplaced, g)
			continue
		case misplaced[g] != leader:
			misplaced[g] = leader // look again before moving it
			continue
		}
		delete(misplaced, g)
		if err := b.store.MoveLeader(ctx, g, want); err != nil {
			b.log.Debug().Err(err).Str("group", g.String()).Str("from", leader).Str("to", want).Msg("leader not moved")
			continue
		}
		b.metrics.leaderMoved(g.String())
		b.log.Info().Str("group", g.String()).Str("from", leader).Str("to", want).Msg("moved leader to the bucket's")
	}
}
