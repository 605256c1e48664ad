package broker

import (
	"testing"
	"time"

	"github.com/ringer-dev/ringer/internal/natstest"
)

// Reconnections are throttled (follow.go): following the leader at most
// once per minMove after any move; leaving a cut-off server at most once per
// minMove, and never held back by a recent follow.
func TestServerMovesThrottle(t *testing.T) {
	s := natstest.RunServer(t)
	b := &Broker{nc: natstest.Connect(t, s.ClientURL())}
	t0 := time.Now()
	steps := []struct {
		after  time.Duration
		cutOff bool
		moves  bool
	}{
		{0, false, true},                               // a follow
		{time.Second, false, false},                    // another follow, too soon
		{time.Second, true, true},                      // a leave, not held back by the follow
		{5 * time.Second, true, false},                 // another leave, too soon
		{minMove + 500*time.Millisecond, false, false}, // a follow 9.5 s after the leave
		{minMove + 1500*time.Millisecond, false, true}, // and after minMove
		{minMove + 2*time.Second, true, true},          // a leave minMove after the last leave
	}
	for i, st := range steps {
		if got := b.move(t0.Add(st.after), st.cutOff); got != st.moves {
			t.Errorf("step %d (+%s, cut off %v): moved %v, want %v", i, st.after, st.cutOff, got, st.moves)
		}
	}
}
