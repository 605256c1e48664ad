package broker

import (
	"context"
	"sync"
	"time"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/subjects"
)

// In a replicated deployment the server a broker is connected to is rarely
// the one that leads its bucket: every KV operation, consumer delivery and
// acknowledgement then crosses a route to the leader and back. Measured at
// R3 (loadgen, one broker, accept-only peak): 71–77 messages between servers
// per call when the broker is elsewhere, 35–39 (the Raft replication alone)
// when it is on the leader's server.
//
// With FollowLeader, at each leader check (colocate), a broker that finds
// the server leading its home partition's bucket is not its own, and the
// same server at two looks in a row (not an election), reconnects
// (ForceReconnect: nats.go goes to the next server of its pool, so with N
// servers it is there after at most N−1 moves). Its home partition is
// partition 0, or with several partitions the one its name hashes to, so
// that brokers spread over the partitions' leaders. Moves are throttled
// with the cut-off check's (cutoff.go, serverMoves): a broker that just
// left a cut-off server does not come back to it to follow a leader that
// has yet to be re-elected elsewhere.
//
// It is off by default, because it pays only where the servers share CPU
// (three servers on one machine: 5–10 % more calls/s, the total work being
// smaller). Where each server has its own CPU, the bucket's leader is the
// first to run out, and bringing every broker's connection — so every
// command, reply and event of the brokers — onto it made CPU-capped
// clusters slower (docs/benchmarks.md, "Brokers on the bucket leader's
// server").

// serverMoves throttles the broker's reconnections. Leaving a cut-off
// server happens at most once per minMove; following the leader at most
// once per minMove after any move, so that it never holds a broker on a
// cut-off server, nor brings it back to one it just left.
type serverMoves struct {
	mu              sync.Mutex
	cutOff, anyMove time.Time
}

// move reconnects b to another NATS server — to leave a cut-off one
// (cutOff), else to follow the leader — unless the throttle says no, and
// reports whether it did.
func (b *Broker) move(now time.Time, cutOff bool) bool {
	b.moves.mu.Lock()
	defer b.moves.mu.Unlock()
	last := b.moves.anyMove
	if cutOff {
		last = b.moves.cutOff
	}
	if !last.IsZero() && now.Sub(last) < minMove {
		return false
	}
	if cutOff {
		b.moves.cutOff = now
	}
	b.moves.anyMove = now
	_ = b.nc.ForceReconnect()
	return true
}

// home is the partition whose bucket leader b follows.
func (b *Broker) home() subjects.Partition {
	return subjects.PartitionOf("broker."+b.cfg.Name, b.store.Partitions())
}

// awayFromLeader returns the server leading b's home bucket when b is
// connected to another one ("" when it is there, or when it cannot tell).
func (b *Broker) awayFromLeader(ctx context.Context) string {
	leader, err := b.store.Leader(ctx, store.BucketGroup(b.home()))
	if err != nil || leader == "" || leader == b.nc.ConnectedServerName() {
		return ""
	}
	return leader
}

// followLeader is one look (see above): seen is the leader b was away from
// at the last look; it returns the one to confirm at the next.
func (b *Broker) followLeader(ctx context.Context, seen string) string {
	leader := b.awayFromLeader(ctx)
	if leader == "" || leader != seen {
		return leader
	}
	from := b.nc.ConnectedServerName()
	if !b.move(b.now(), false) {
		return leader
	}
	b.metrics.leaderFollowed()
	b.log.Info().Str("from", from).Str("leader", leader).Int("partition", int(b.home())).
		Msg("reconnecting to follow the bucket's leader")
	return ""
}
