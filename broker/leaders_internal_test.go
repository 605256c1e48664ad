package broker

import (
	"testing"
	"time"
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
