package broker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
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
//
// A look asks JetStream about every group of every partition (5 per
// partition, 6 with --consumer-projection, and 3 more): on CPU-capped servers with five partitions and two
// brokers, looks every 2 s took about a tenth of the cluster's CPU while
// it did nothing else (docs/benchmarks.md). Leaders change only at
// elections and hand-overs, which JetStream announces: so while every
// group is where it should be, the looks grow apart (doubling, up to
// LeaderCheckIdle), and an announced election brings them back to every
// LeaderCheck. The announcement is a hint (core NATS, at most once): the
// idle looks still come.

// leaderElected matches JetStream's advisories of a stream's or a
// consumer's new leader, in the broker's account (listenElections).
const leaderElected = "$JS.EVENT.ADVISORY.*.LEADER_ELECTED.>"

// colocate runs the checks until ctx ends.
func (b *Broker) colocate(ctx context.Context) {
	defer b.bg.Done()
	every := b.cfg.LeaderCheck
	jitter := func() time.Duration { return every/2 + rand.N(every) } // spread over brokers
	t := time.NewTimer(jitter())
	defer t.Stop()
	// A broker between servers misses the advisories published meanwhile:
	// a reconnect, seen within a LeaderCheck, counts as an election.
	reconnects := b.nc.Stats().Reconnects
	watch := time.NewTicker(b.cfg.LeaderCheck)
	defer watch.Stop()
	// soon brings the next look back to LeaderCheck; not when already
	// looking that often, so that elections cannot postpone looks.
	soon := func() {
		if every > b.cfg.LeaderCheck {
			every = b.cfg.LeaderCheck
			t.Reset(jitter())
		}
	}
	var misplaced map[store.Group]string // group → its leader at the last look, when it should move
	var away string                      // the bucket leader this broker was not connected to at the last look
	for {
		select {
		case <-ctx.Done():
			return
		case <-watch.C:
			if n := b.nc.Stats().Reconnects; n != reconnects {
				reconnects = n
				soon()
			}
			continue
		case <-b.elected: // listenElections
			soon()
			continue
		case <-t.C:
		}
		b.metrics.leaderChecked()
		var settled bool
		misplaced, settled = b.alignLeaders(ctx, misplaced)
		if b.cfg.FollowLeader {
			away = b.followLeader(ctx, away)
			settled = settled && away == ""
		}
		every = nextLook(every, settled, b.cfg.LeaderCheck, b.cfg.LeaderCheckIdle)
		t.Reset(jitter())
	}
}

// nextLook is the interval before the next leader check after one at
// interval every: twice as long (up to idle) if it found nothing to do,
// else base.
func nextLook(every time.Duration, settled bool, base, idle time.Duration) time.Duration {
	if !settled {
		return base
	}
	return max(base, min(2*every, idle))
}

// move is a leadership hand-over: group g from server from to server to.
type move struct {
	g        store.Group
	from, to string
}

// alignLeaders does one look (see colocate): it makes the moves of plan
// that the last look asked for too (seen[g] is g's leader then), and
// returns the moves it left for the next look to confirm, and whether
// there was nothing to move.
func (b *Broker) alignLeaders(ctx context.Context, seen map[store.Group]string) (map[store.Group]string, bool) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.LeaderCheck)
	defer cancel()
	moves, waiting, err := b.plan(ctx)
	if err != nil {
		return nil, false // an election: look again soon
	}
	next := map[store.Group]string{}
	for _, m := range moves {
		if seen[m.g] != m.from {
			next[m.g] = m.from // look again before moving it
			continue
		}
		if err := b.store.MoveLeader(ctx, m.g, m.to); err != nil {
			b.log.Debug().Err(err).Str("group", m.g.String()).Str("from", m.from).Str("to", m.to).Msg("leader not moved")
			continue
		}
		b.metrics.leaderMoved(m.g.String())
		b.log.Info().Str("group", m.g.String()).Str("from", m.from).Str("to", m.to).Msg("moved leader")
	}
	return next, len(moves) == 0 && !waiting
}

// ErrNotSettled is returned by Settled while the leader check still wants
// a hand-over.
var ErrNotSettled = errors.New("broker: leaders not settled")

// Settled reports whether the Raft groups are led where the leader check
// wants them (nil), or which hand-over it still has to make (ErrNotSettled,
// naming it), or why it could not tell (an election, say): for benchmarks,
// which should not measure the moves of a cluster just started.
func (b *Broker) Settled(ctx context.Context) error {
	moves, _, err := b.plan(ctx)
	if err != nil {
		return err
	}
	if len(moves) > 0 {
		m := moves[0]
		return fmt.Errorf("%w: %s to move from %s to %s (and %d more)", ErrNotSettled, m.g, m.from, m.to, len(moves)-1)
	}
	if b.cfg.FollowLeader && b.cfg.LeaderCheck > 0 && b.store.Replicated() {
		if leader := b.awayFromLeader(ctx); leader != "" {
			return fmt.Errorf("%w: connected to %s, partition %d's bucket is led by %s", ErrNotSettled, b.nc.ConnectedServerName(), b.home(), leader)
		}
	}
	return nil
}

// plan looks at who leads what and returns the hand-overs wanted. With
// several partitions it first spreads the buckets' leaders over the
// servers (spread: at most one move, returned alone), so that each server
// leads its share of the writes; then each partition's other groups
// follow its bucket's leader, and the groups every partition writes
// (store.Shared) follow partition 0's. A group with no replica on that
// server stays where it is (with more servers than replicas, JetStream may
// place a partition's streams on different servers); one whose replica
// there is not current yet (a server catching up after a fault), or that
// could not be read, cannot move now, and plan reports waiting: the next
// look must come soon, with no election to announce it.
func (b *Broker) plan(ctx context.Context) (moves []move, waiting bool, err error) {
	n := b.store.Partitions()
	buckets := make([]*jetstream.ClusterInfo, n)
	for p := range subjects.Partition(n) {
		c, err := b.store.Cluster(ctx, store.BucketGroup(p))
		if err != nil {
			return nil, false, err
		}
		buckets[p] = c
	}
	if m, ok := spread(buckets); ok {
		return []move{m}, false, nil
	}
	for p := range subjects.Partition(n) {
		groups := store.PartitionGroups(p)
		if b.cfg.ConsumerProjection {
			groups = append(groups, store.ProjectorGroup(p))
		}
		if p == 0 {
			groups = append(groups, store.Shared...)
		}
		want := buckets[p].Leader
		for _, g := range groups {
			c, err := b.store.Cluster(ctx, g)
			switch {
			case errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrConsumerNotFound):
				continue // history or push is off
			case errors.Is(err, store.ErrNoLeader):
				return nil, false, err // an election
			case err != nil:
				waiting = true // unreadable now: look again soon
				continue
			}
			switch placed(c, want) {
			case placeMove:
				moves = append(moves, move{g, c.Leader, want})
			case placeNotYet:
				waiting = true
			}
		}
	}
	return moves, waiting, nil
}

// placement is what plan makes of a group's leadership against the
// server that should lead it.
type placement int

const (
	placeThere  placement = iota // led there already
	placeNever                   // no replica on that server: stays where it is for good
	placeNotYet                  // its replica there is catching up: cannot move yet
	placeMove                    // a current replica there: hand it over
)

// placed judges group leadership c against server want.
func placed(c *jetstream.ClusterInfo, want string) placement {
	if c.Leader == want {
		return placeThere
	}
	i := slices.IndexFunc(c.Replicas, func(r *jetstream.PeerInfo) bool { return r.Name == want })
	switch {
	case i < 0:
		return placeNever
	case !c.Replicas[i].Current:
		return placeNotYet
	}
	return placeMove
}

// spread finds one partition's bucket leadership to move from a server
// that leads more than its share of the partitions (ceil(partitions /
// servers)) to a current replica that leads fewer. Every broker computes
// the same move from the same view, so brokers asking at once ask the
// same thing.
func spread(buckets []*jetstream.ClusterInfo) (move, bool) {
	if len(buckets) < 2 {
		return move{}, false
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
		if load[c.Leader] <= share {
			continue
		}
		to := ""
		for _, r := range c.Replicas {
			l, up := load[r.Name]
			if up && r.Current && !r.Offline && l < share && (to == "" || l < load[to] || l == load[to] && r.Name < to) {
				to = r.Name
			}
		}
		if to != "" {
			return move{store.BucketGroup(subjects.Partition(p)), c.Leader, to}, true
		}
	}
	return move{}, false
}
