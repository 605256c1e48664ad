package client

import (
	"testing"
	"time"
)

// A reply that took long to come back (its server froze meanwhile) does not
// move the clock offset: the middle of a 3 s round trip could be 1.5 s off,
// and every command's deadline with it.
func TestSlowRepliesDoNotMoveTheClockOffset(t *testing.T) {
	c := &Client{}
	t0 := time.UnixMilli(1_000_000)
	c.learnClock(1_000_050+100, t0, t0.Add(100*time.Millisecond)) // broker 100 ms ahead
	if got := c.clockOffset.Load(); got != 100 {
		t.Fatalf("offset %d ms, want 100", got)
	}
	c.learnClock(1_003_000, t0, t0.Add(3*time.Second)) // would say 1 500 ms
	if got := c.clockOffset.Load(); got != 100 {
		t.Fatalf("a 3 s round trip moved the offset to %d ms", got)
	}
	fresh := &Client{}
	fresh.learnClock(1_003_000, t0, t0.Add(3*time.Second))
	if !fresh.clockKnown.Load() {
		t.Fatal("with no offset known yet, even a slow reply is better than none")
	}
}
