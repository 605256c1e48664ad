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
		floor, live uint64
		want        int
	}{
		{0, 50 * mib, 100},            // off
		{512 * mib, 0, 100},           // nothing measured yet
		{512 * mib, 50 * mib, 924},    // collect at ~512 MiB, not at 100
		{512 * mib, 256 * mib, 100},   // floor = 2 × live: Go's default
		{512 * mib, 400 * mib, 100},   // past the floor: never more often than Go would
		{512 * mib, 1024, maxPercent}, // an empty heap: bounded
		{2048 * mib, 4 * mib, 51100},  // just after start-up: the first collection comes at the floor, not at ~400 MiB
	} {
		if got := Percent(c.floor, c.live); got != c.want {
			t.Errorf("Percent(%d MiB, %d B) = %d, want %d", c.floor/mib, c.live, got, c.want)
		}
	}
}

// gogc reads the GOGC the runtime is using.
func gogc(t *testing.T) uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		t.Fatal("runtime/metrics has no /gc/gogc:percent")
	}
	return s[0].Value.Uint64()
}

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
