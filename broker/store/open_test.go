package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/natstest"
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
	return nc, st
}
