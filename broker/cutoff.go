package broker

import (
	"context"
	"time"
)

// A NATS server cut off from the others (a partition) still answers its
// clients' pings, so a broker connected to it stays there, and every write
// it makes fails (the bucket's leader is out of reach) while reads of the
// server's own replica still succeed, stale. The broker watches its writes
// instead: when every write has failed for cutOffAfter, the last one just
// now, it leaves for another server (ForceReconnect), at most once per
// minMove, whether or not it just moved to follow the leader (serverMoves,
// follow.go). A cluster-wide stall (a leader election) makes each broker
// move once too, which costs a reconnect.
const (
	cutOffAfter = 3 * time.Second
	minMove     = 10 * time.Second
)

// watchServer runs the check every 500 ms until ctx ends.
func (b *Broker) watchServer(ctx context.Context) {
	defer b.bg.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		failing, last := b.store.WritesFailing()
		if failing < cutOffAfter || last > time.Second {
			continue
		}
		server := b.nc.ConnectedServerName()
		if !b.move(b.now(), true) {
			continue
		}
		b.log.Warn().Dur("failing", failing).Str("server", server).
			Msg("every write failed for seconds: leaving this NATS server for another (cut off from the cluster?)")
		b.metrics.serverLeft()
	}
}
