package broker

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/subjects"
)

// A call depends on several Raft groups: its partition's bucket stream,
// projector, presence and timer consumers and timer stream
// (store.PartitionGroups), and the history, push and export streams
// (store.Shared). Each elects its own leader, so in a three-node cluster every node
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

// alignLeaders does one look (see colocate). With several partitions it
// first spreads the buckets' leaders over the servers (spread), so that
// each server leads its share of the writes; each partition's other groups
// follow its bucket's leader, and the groups every partition writes
// (store.Shared) follow partition 0's.
func (b *Broker) alignLeaders(ctx context.Context, misplaced map[store.Group]string) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.LeaderCheck)
	defer cancel()
	n := b.store.Partitions()
	buckets := make([]*jetstream.ClusterInfo, n)
	for p := range subjects.Partition(n) {
		c, err := b.store.Cluster(ctx, store.BucketGroup(p))
		if err != nil {
			clear(misplaced) // an election: look again later
			return
		}
		buckets[p] = c
	}
	if b.spread(ctx, buckets, misplaced) {
		return // the moved partition's groups follow at the next looks
	}
	for p := range subjects.Partition(n) {
		groups := store.PartitionGroups(p)
		if p == 0 {
			groups = append(groups, store.Shared...)
		}
		for _, g := range groups {
			b.follow(ctx, g, buckets[p].Leader, misplaced)
		}
	}
}

// follow moves g's leadership to server want if g is led elsewhere, and
// was so at the last look too (not in the middle of an election).
func (b *Broker) follow(ctx context.Context, g store.Group, want string, misplaced map[store.Group]string) {
	leader, err := b.store.Leader(ctx, g)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrConsumerNotFound):
		return // history or push is off
	case err != nil || leader == want:
		delete(misplaced, g)
		return
	case misplaced[g] != leader:
		misplaced[g] = leader // look again before moving it
		return
	}
	delete(misplaced, g)
	b.move(ctx, g, leader, want)
}

func (b *Broker) move(ctx context.Context, g store.Group, from, to string) {
	if err := b.store.MoveLeader(ctx, g, to); err != nil {
		b.log.Debug().Err(err).Str("group", g.String()).Str("from", from).Str("to", to).Msg("leader not moved")
		return
	}
	b.metrics.leaderMoved(g.String())
	b.log.Info().Str("group", g.String()).Str("from", from).Str("to", to).Msg("moved leader")
}

// spread moves one partition's bucket leadership from a server that leads
// more than its share of the partitions (ceil(partitions / servers)) to a
// current replica that leads fewer, if a bucket is so placed at two looks
// in a row; it reports whether it moved one. Every broker computes the same
// move from the same view, so brokers asking at once ask the same thing.
func (b *Broker) spread(ctx context.Context, buckets []*jetstream.ClusterInfo, misplaced map[store.Group]string) bool {
	if len(buckets) < 2 {
		return false
	}
	load := map[string]int{} // server → partitions it leads, for every server up
	for _, c := range buckets {
		load[c.Leader]++
		for _, r := range c.Replicas {
			if _, seen := load[r.Name]; !seen && r.Current && !r.Offline {
				load[r.Name] = 0
			}
		}
	}
	share := (len(buckets) + len(load) - 1) / len(load)
	for p, c := range buckets {
		g := store.BucketGroup(subjects.Partition(p))
		if load[c.Leader] <= share {
			delete(misplaced, g)
			continue
		}
		to := ""
		for _, r := range c.Replicas {
			l, up := load[r.Name]
			if up && r.Current && !r.Offline && l < share && (to == "" || l < load[to] || l == load[to] && r.Name < to) {
				to = r.Name
			}
		}
		if to == "" {
			continue
		}
		if misplaced[g] != c.Leader {
			misplaced[g] = c.Leader // look again before moving it
			continue
		}
		delete(misplaced, g)
		b.move(ctx, g, c.Leader, to)
		return true
	}
	return false
}
