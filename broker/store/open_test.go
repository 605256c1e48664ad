package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/subjects"
)

// layouts are the deployments store tests run on: one server (R1) and,
// unless -short, a three-node cluster with replicated state (R3).
var layouts = []struct {
	name     string
	replicas int
}{{"R1", 1}, {"R3", 3}}

// openStore provisions and opens a store on a fresh server (replicas 1) or
// three-node cluster (replicas 3, skipped with -short).
func openStore(t *testing.T, replicas int) (*nats.Conn, *store.Store) {
	t.Helper()
	var url string
	if replicas == 1 {
		url = natstest.RunServer(t).ClientURL()
	} else {
		if testing.Short() {
			t.Skip("cluster test")
		}
		url = natstest.RunCluster(t, replicas).URLs()
	}
	nc := natstest.Connect(t, url)
	natstest.Attempt(t, time.Minute, 10*time.Second, func(ctx context.Context) error {
		return store.Provision(ctx, nc, store.ProvisionConfig{Replicas: replicas})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	if replicas > 1 {
		// A stream just created may not take writes yet ("no response from
		// stream" in CI at 386233f): wait until it has a leader and every
		// replica is current.
		natstest.Attempt(t, time.Minute, 5*time.Second, func(ctx context.Context) error {
			stream, err := st.JetStream().Stream(ctx, "KV_RINGER")
			if err != nil {
				return err
			}
			info, err := stream.Info(ctx)
			if err != nil {
				return err
			}
			if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != replicas-1 {
				return fmt.Errorf("KV_RINGER not ready: %+v", info.Cluster)
			}
			for _, r := range info.Cluster.Replicas {
				if !r.Current {
					return fmt.Errorf("KV_RINGER replica %s not current", r.Name)
				}
			}
			return nil
		})
	}
	return nc, st
}

// openPartitions provisions parts partitions on a fresh server and opens a
// store on them with opts; the context bounds the test's operations.
func openPartitions(t *testing.T, parts int, opts ...store.Option) (context.Context, *store.Store) {
	t.Helper()
	nc := natstest.Connect(t, natstest.RunServer(t).ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	if err := store.Provision(ctx, nc, store.ProvisionConfig{Partitions: parts}); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, nc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, st
}

// The bucket's size limit follows --store-max-bytes at every start, also
// for a bucket that exists already; its record limit is MaxValueSize.
func TestProvisionAppliesTheSizeLimits(t *testing.T) {
	nc, _ := openStore(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, limit := range []int64{1 << 20, 2 << 20, 0} {
		if err := store.Provision(ctx, nc, store.ProvisionConfig{Replicas: 1, MaxBytes: limit}); err != nil {
			t.Fatal(err)
		}
		js := natstest.JetStream(t, nc)
		st, err := js.Stream(ctx, "KV_RINGER")
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		want := limit
		if want == 0 {
			want = -1
		}
		if cfg.MaxBytes != want || cfg.MaxMsgSize != store.MaxValueSize {
			t.Fatalf("--store-max-bytes %d: bucket MaxBytes %d, MaxMsgSize %d", limit, cfg.MaxBytes, cfg.MaxMsgSize)
		}
	}
}

// The projector consumer is created only for a broker that reads it
// (--consumer-projection): unread, it costs every partition a consumer
// that nats-server keeps current with every invitation write.
func TestProvisionCreatesTheProjectorOnlyForItsReaders(t *testing.T) {
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.JetStream(t, nc)
	const parts = 2
	has := func() (int, error) {
		n := 0
		for p := range subjects.Partition(parts) {
			g := store.ProjectorGroup(p)
			_, err := js.Consumer(ctx, g.Stream, g.Consumer)
			switch {
			case err == nil:
				n++
			case !errors.Is(err, jetstream.ErrConsumerNotFound):
				return 0, err
			}
		}
		return n, nil
	}
	for _, tc := range []struct {
		projector bool
		want      int
	}{{false, 0}, {true, parts}, {false, parts}} { // created once, never removed by a broker
		if err := store.Provision(ctx, nc, store.ProvisionConfig{Replicas: 1, Partitions: parts, Projector: tc.projector}); err != nil {
			t.Fatal(err)
		}
		if n, err := has(); err != nil || n != tc.want {
			t.Fatalf("provisioned with Projector %v: %d projector consumers (%v), want %d", tc.projector, n, err, tc.want)
		}
	}
}
