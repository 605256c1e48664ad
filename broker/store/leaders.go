package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/subjects"
)

// Group is one of Ringer's Raft groups in a JetStream cluster: a stream, or
// a durable consumer of one (Consumer set).
type Group struct {
	Stream   string
	Consumer string
}

func (g Group) String() string {
	if g.Consumer == "" {
		return g.Stream
	}
	return g.Stream + " > " + g.Consumer
}

// BucketGroup is the group of partition p's bucket stream, which every
// command on the partition's keys writes.
func BucketGroup(p subjects.Partition) Group { return Group{Stream: p.BucketStream()} }

// PartitionGroups are the Raft groups of partition p that its calls depend
// on besides its bucket: the consumers that turn its changes into timers
// and presence loss, and its timer stream.
func PartitionGroups(p subjects.Partition) []Group {
	return []Group{
		{Stream: p.BucketStream(), Consumer: ConsumerPresence},
		{Stream: p.TimerStream()},
		{Stream: p.TimerStream(), Consumer: ConsumerTimers},
		{Stream: p.TimerStream(), Consumer: ConsumerTimerBatches},
	}
}

// ProjectorGroup is partition p's projector consumer, which exists only
// where a broker runs with --consumer-projection (ProvisionConfig.Projector).
func ProjectorGroup(p subjects.Partition) Group {
	return Group{Stream: p.BucketStream(), Consumer: ConsumerProjector}
}

// Shared are the groups every partition's calls write (a stalled one stalls
// the projectors): the history, push and export streams.
var Shared = []Group{
	{Stream: subjects.HistoryStream},
	{Stream: subjects.PushStream},
	{Stream: subjects.ExportStream},
}

// ErrNoLeader: the group has no leader now (an election), or is not
// replicated.
var ErrNoLeader = errors.New("store: no leader")

// Cluster returns g's Raft group as JetStream reports it (leader and
// replicas); jetstream.ErrStreamNotFound or jetstream.ErrConsumerNotFound if
// g does not exist (history or push off).
func (s *Store) Cluster(ctx context.Context, g Group) (*jetstream.ClusterInfo, error) {
	var cluster *jetstream.ClusterInfo
	if g.Consumer == "" {
		st, err := s.js.Stream(ctx, g.Stream)
		if err != nil {
			return nil, err
		}
		cluster = st.CachedInfo().Cluster
	} else {
		c, err := s.js.Consumer(ctx, g.Stream, g.Consumer)
		if err != nil {
			return nil, err
		}
		cluster = c.CachedInfo().Cluster
	}
	if cluster == nil || cluster.Leader == "" {
		return nil, fmt.Errorf("%w: %s", ErrNoLeader, g)
	}
	return cluster, nil
}

// Leader returns the name of the server that leads g (see Cluster).
func (s *Store) Leader(ctx context.Context, g Group) (string, error) {
	c, err := s.Cluster(ctx, g)
	if err != nil {
		return "", err
	}
	return c.Leader, nil
}

// MoveLeader asks g's leader to step down in favour of server to (which must
// hold a replica of g and be current).
func (s *Store) MoveLeader(ctx context.Context, g Group, to string) error {
	prefix := s.js.Options().APIPrefix
	if prefix == "" {
		prefix = jetstream.DefaultAPIPrefix
	}
	subj := prefix + "STREAM.LEADER.STEPDOWN." + g.Stream
	if g.Consumer != "" {
		subj = prefix + "CONSUMER.LEADER.STEPDOWN." + g.Stream + "." + g.Consumer
	}
	body, err := json.Marshal(map[string]any{"placement": map[string]string{"preferred": to}})
	if err != nil {
		return err
	}
	msg, err := s.nc.RequestWithContext(ctx, subj, body)
	if err != nil {
		return err
	}
	var resp struct {
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return fmt.Errorf("store: stepdown %s: %w", g, err)
	}
	if resp.Error != nil {
		return fmt.Errorf("store: stepdown %s: %w", g, resp.Error)
	}
	return nil
}
