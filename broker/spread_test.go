package broker

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/subjects"
)

func cluster(leader string, replicas ...string) *jetstream.ClusterInfo {
	c := &jetstream.ClusterInfo{Leader: leader}
	for _, r := range replicas {
		c.Replicas = append(c.Replicas, &jetstream.PeerInfo{Name: r, Current: true})
	}
	return c
}

// spread moves a bucket's leadership only off a server leading more than
// its share, only to a current replica leading fewer, and picks the same
// move from the same view.
func TestSpread(t *testing.T) {
	offline := cluster("n1", "n2", "n3")
	offline.Replicas[0].Offline = true // n2 down
	for _, tc := range []struct {
		name    string
		buckets []*jetstream.ClusterInfo
		want    string // "" = no move; else "partition:from>to"
	}{
		{"one partition never moves", []*jetstream.ClusterInfo{cluster("n1", "n2", "n3")}, ""},
		{"spread already", []*jetstream.ClusterInfo{cluster("n1", "n2", "n3"), cluster("n2", "n1", "n3"), cluster("n3", "n1", "n2")}, ""},
		{"all on n1", []*jetstream.ClusterInfo{cluster("n1", "n2", "n3"), cluster("n1", "n2", "n3"), cluster("n1", "n2", "n3")}, "0:n1>n2"},
		{"two on n1, n3 idle", []*jetstream.ClusterInfo{cluster("n1", "n2", "n3"), cluster("n2", "n1", "n3"), cluster("n1", "n2", "n3")}, "0:n1>n3"},
		{"more partitions than servers: 2 each is fine", []*jetstream.ClusterInfo{cluster("n1", "n2", "n3"), cluster("n1", "n2", "n3"), cluster("n2", "n1", "n3"), cluster("n3", "n1", "n2")}, ""},
		{"an offline replica is not a target", []*jetstream.ClusterInfo{offline, cluster("n1", "n3")}, "0:n1>n3"},
		{"five servers: to the idle replica", []*jetstream.ClusterInfo{cluster("n1", "n2", "n3"), cluster("n1", "n2", "n3"), cluster("n2", "n1", "n3"), cluster("n4", "n5", "n3"), cluster("n5", "n4", "n3")}, "0:n1>n3"},
	} {
		m, ok := spread(tc.buckets)
		got := ""
		for p := range subjects.Partition(len(tc.buckets)) {
			if ok && m.g == store.BucketGroup(p) {
				got = fmt.Sprintf("%d:%s>%s", p, m.from, m.to)
			}
		}
		if ok && got == "" {
			t.Errorf("%s: moves %s, not a bucket", tc.name, m.g)
		}
		if got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}
