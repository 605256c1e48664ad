package gcfloor

import (
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		floor, live, roots uint64
		want               int
	}{
		{0, 50 * mib, 0, 100},                  // off
		{512 * mib, 0, 0, 100},                 // nothing measured yet
		{512 * mib, 50 * mib, 0, 924},          // collect at ~512 MiB, not at 100
		{512 * mib, 256 * mib, 0, 100},         // floor = 2 × live: Go's default
		{512 * mib, 400 * mib, 0, 100},         // past the floor: never more often than Go would
		{512 * mib, 1024, 0, 12800},            // an empty heap: Go's minimum heap (4 MiB × GOGC/100) reaches the floor first
		{2048 * mib, 4 * mib, 0, 51100},        // just after start-up: the first collection comes at the floor, not at ~400 MiB
		{512 * mib, 4 * mib, 4 * mib, 6350},    // a broker: stacks as large as its live heap halve the percent
		{512 * mib, 200 * mib, 120 * mib, 100}, // 2 × live + roots is past the floor: Go's default
		{512 * mib, 1775624, 730962, 12800},    // a broker after its first collection (measured): the minimum heap bounds it
		{64 * mib, 2 * mib, 0, 1600},           // a small floor
	} {
		if got := Percent(c.floor, c.live, c.roots); got != c.want {
			t.Errorf("Percent(%d MiB, %d B, %d B) = %d, want %d", c.floor/mib, c.live, c.roots, got, c.want)
		}
	}
}

// metric reads one of the runtime's uint64 metrics.
func metric(t *testing.T, name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		t.Fatalf("runtime/metrics has no %s", name)
	}
	return s[0].Value.Uint64()
}

// heapGoal reads the heap size at which the runtime will collect next.
func heapGoal(t *testing.T) uint64 { return metric(t, "/gc/heap/goal:bytes") }

// deep holds a goroutine with a stack of about n KiB until release closes.
func deep(n int, ready chan<- struct{}, release <-chan struct{}) byte {
	var pad [1024]byte
	if n <= 1 {
		ready <- struct{}{}
		<-release
		return pad[0]
	}
	pad[n%len(pad)] = byte(n)
	return deep(n-1, ready, release) + pad[(n+1)%len(pad)]
}

// The floor is where the next collection comes: with goroutine stacks
// larger than the live heap (Go's pacer counts them with it), and with a
// live heap of a few MiB (the pacer's minimum heap, 4 MiB × GOGC/100, then
// sets the goal): both are a broker's case, thousands of goroutines and a
// few MiB live.
func TestTheNextCollectionComesAtTheFloor(t *testing.T) {
	t.Setenv("GOGC", "")
	Set(64) // starts the hook
	defer Set(0)
	for _, c := range []struct {
		name                 string
		floorMiB, goroutines int
	}{
		{"large stacks", 256, 400}, // ~19 MiB of stacks
		{"small heap", 512, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			ready, release := make(chan struct{}), make(chan struct{})
			for range c.goroutines {
				go deep(48, ready, release)
			}
			for range c.goroutines {
				<-ready
			}
			defer close(release)
			Set(0) // GOGC back to 100 …
			floor.Store(uint64(c.floorMiB) << 20)
			runtime.GC() // … until the hook tunes for this collection
			deadline := time.Now().Add(10 * time.Second)
			for gogc(t) <= 100 {
				if time.Now().After(deadline) {
					t.Fatal("GOGC still 100 after a collection with a floor")
				}
				time.Sleep(time.Millisecond)
			}
			if goal := int(heapGoal(t) >> 20); goal < c.floorMiB*9/10 || goal > c.floorMiB*11/10 {
				t.Fatalf("next collection at %d MiB of heap, want about the floor, %d MiB (GOGC %d)", goal, c.floorMiB, gogc(t))
			}
		})
	}
}

// gogc reads the GOGC the runtime is using.
func gogc(t *testing.T) uint64 { return metric(t, "/gc/gogc:percent") }

// The floor is applied after every collection, from the live heap that
// collection measured, and Set(0) restores Go's pacing.
func TestSetTunesAfterEachCollection(t *testing.T) {
	t.Setenv("GOGC", "")
	if msg := Set(512); !strings.Contains(msg, "512 MiB") {
		t.Fatalf("Set(512) = %q", msg)
	}
	defer Set(0)
	live := make([][]byte, 64) // some live heap, so the percent is not the bound
	for i := range live {
		live[i] = make([]byte, 64<<10)
	}
	for _, want := range []string{"first", "second"} { // the hook re-arms itself
		Set(0) // GOGC back to 100 …
		floor.Store(512 << 20)
		runtime.GC() // … until the hook sees this collection
		deadline := time.Now().Add(10 * time.Second)
		for gogc(t) <= 100 {
			if time.Now().After(deadline) {
				t.Fatalf("GOGC still %d after the %s collection with a floor", gogc(t), want)
			}
			time.Sleep(time.Millisecond) // the finalizer goroutine runs the hook
		}
	}
	runtime.KeepAlive(live)
	if msg := Set(0); !strings.Contains(msg, "off") || gogc(t) != 100 {
		t.Fatalf("Set(0) = %q, GOGC %d", msg, gogc(t))
	}
}

// An operator's GOGC wins over the floor.
func TestSetLeavesExplicitGOGC(t *testing.T) {
	t.Setenv("GOGC", "150")
	before := gogc(t)
	if msg := Set(512); !strings.Contains(msg, "GOGC=150") {
		t.Fatalf("Set with GOGC set = %q", msg)
	}
	if gogc(t) != before {
		t.Fatalf("GOGC changed from %d to %d", before, gogc(t))
	}
}
