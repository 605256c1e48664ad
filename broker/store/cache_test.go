package store

import "testing"

// The cache is written from while most writes from it land, and mostly not
// once too many find the record moved on (several brokers), with probes
// that notice when that changes.
func TestCacheWritesFollowConflicts(t *testing.T) {
	c := newCache(10)
	share := func() float64 {
		n := 0
		for range 2000 {
			if c.forWrites() {
				n++
			}
		}
		return float64(n) / 2000
	}
	if got := share(); got != 1 {
		t.Fatalf("learning: writes from the cache %.2f of the time, want always", got)
	}
	for i := range 2 * minTries {
		c.outcome(i%2 == 0) // half of them stale
	}
	if got := share(); got > 3.0/probeEvery {
		t.Fatalf("half the cached writes conflict: still used %.2f of the time, want about 1/%d (probes)", got, probeEvery)
	}
	for range 4 * halveAt {
		c.outcome(false) // the other brokers went away
	}
	if got := share(); got != 1 {
		t.Fatalf("cached writes land again: used %.2f of the time, want always", got)
	}
	var none *cache
	if none.forWrites() {
		t.Fatal("no cache: nothing to write from")
	}
}
