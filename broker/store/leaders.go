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

// Bucket is the group of the bucket's stream, which every command writes.
var Bucket = Group{Stream: subjects.BucketStream}

// Groups are the Raft groups a call depends on besides the bucket: the
// consumers that turn its changes into events, timers and presence loss,
// and the streams they write (a stalled one stalls them).
var Groups = []Group{
	{Stream: subjects.BucketStream, Consumer: ConsumerProjector},
	{Stream: subjects.BucketStream, Consumer: ConsumerPresence},
	{Stream: subjects.TimerStream},
	{Stream: subjects.TimerStream, Consumer: ConsumerTimers},
	{Stream: subjects.HistoryStream},
	{Stream: subjects.PushStream},
	{Stream: subjects.ExportStream},
}

// ErrNoLeader: the group has no leader now (an election), or is not
// replicated.
var ErrNoLeader = errors.New("store: no leader")

// Leader returns the name of the server that leads g; jetstream.ErrStreamNotFound
// or jetstream.ErrConsumerNotFound if g does not exist (history or push off).
func (s *Store) Leader(ctx context.Context, g Group) (string, error) {
	var cluster *jetstream.ClusterInfo
	if g.Consumer == "" {
		st, err := s.js.Stream(ctx, g.Stream)
		if err != nil {
			return "", err
		}
		cluster = st.CachedInfo().Cluster
	} else {
		c, err := s.js.Consumer(ctx, g.Stream, g.Consumer)
		if err != nil {
			return "", err
		}
		cluster = c.CachedInfo().Cluster
	}
	if cluster == nil || cluster.Leader == "" {
		return "", fmt.Errorf("%w: %s", ErrNoLeader, g)
	}
	return cluster.Leader, nil
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
