package broker

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Leader checks that find nothing to do grow apart, doubling up to the
// idle bound; one that finds something (or fails) is followed by the base
// interval again.
func TestNextLook(t *testing.T) {
	const base, idle = 2 * time.Second, 30 * time.Second
	every := base
	var got []time.Duration
	for range 6 {
		every = nextLook(every, true, base, idle)
		got = append(got, every)
	}
	want := []time.Duration{4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second, 30 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("settled looks: %v, want %v", got, want)
		}
	}
	if n := nextLook(idle, false, base, idle); n != base {
		t.Errorf("after a look with moves: %s, want %s", n, base)
	}
	if n := nextLook(base, true, base, 0); n != base {
		t.Errorf("idle bound 0 (or below the base): %s, want every %s", n, base)
	}
}

// plan hands a group over only to a current replica; a replica catching
// up means "not yet" (the checks stay frequent: no election will announce
// when it is current), and no replica at all means "never".
func TestPlaced(t *testing.T) {
	c := &jetstream.ClusterInfo{Leader: "n1", Replicas: []*jetstream.PeerInfo{
		{Name: "n2", Current: true}, {Name: "n3", Current: false},
	}}
	for want, p := range map[string]placement{"n1": placeThere, "n2": placeMove, "n3": placeNotYet, "n4": placeNever} {
		if got := placed(c, want); got != p {
			t.Errorf("leader n1, want %s: %d, want %d", want, got, p)
		}
	}
}
