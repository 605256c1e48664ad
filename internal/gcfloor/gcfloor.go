// Package gcfloor lets a Ringer process's heap grow to a floor before the Go garbage collector runs.
//
// Ringer's processes hold little (the broker's live heap is tens of MB) but
// allocate fast, so with Go's default GOGC=100 they collect several times a
// second, and every collection's mark phase takes a quarter of the CPU for
// tens of milliseconds: on a busy two-core host that is where the slowest
// percent of invitations loses its time (docs/benchmarks.md, "GC floor").
// A floor makes the collector wait until the heap reaches a fixed size, or
// twice the live heap if that is larger, so collections are rare while the
// heap is small and as usual once it is large.
//
// Go has no such setting (GOMEMLIMIT is a ceiling, GOGC a ratio), so after
// every collection the package sets GOGC from the live heap the collector
// just measured: GOGC = (floor − live) / (live + roots), never below 100,
// where roots are the goroutine stacks and globals it scanned.
package gcfloor

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// DefaultMiB is the floor brokerd and loadgen use unless told otherwise.
const DefaultMiB = 512

var (
	floor   atomic.Uint64 // bytes; 0 = off
	started atomic.Bool
)

// Set applies a floor of mib MiB and describes what it did. It does nothing
// when mib is 0 or when the operator chose the collector's pace with the
// GOGC environment variable, which it leaves in charge. A GOMEMLIMIT still
// caps the heap: the floor only delays collections, it never forbids one.
func Set(mib int) string {
	if v := os.Getenv("GOGC"); v != "" {
		return fmt.Sprintf("GC floor off: GOGC=%s is set", v)
	}
	if mib <= 0 {
		floor.Store(0)
		debug.SetGCPercent(100)
		return "GC floor off: Go's default pacing (GOGC=100)"
	}
	floor.Store(uint64(mib) << 20)
	tune()
	if !started.Swap(true) {
		watch()
	}
	return fmt.Sprintf("GC floor %d MiB: no collection before the heap reaches it (or twice the live heap)", mib)
}

// Percent is the GOGC a floor of floorBytes gives a live heap of liveBytes
// whose collection also scanned rootBytes of goroutine stacks and globals.
// Go's pacer sets the next heap goal to live + (live + roots) × GOGC/100,
// and to at least 4 MiB × GOGC/100 (its minimum heap, scaled by GOGC), so
// both count: the roots are small next to a live heap of hundreds of MiB,
// but not next to a broker's few MiB, and there the minimum heap, not the
// live one, sets the goal. Leaving them out put the goal at twice the floor
// and more (docs/benchmarks.md, "The GC floor's goal").
func Percent(floorBytes, liveBytes, rootBytes uint64) int {
	if floorBytes == 0 || liveBytes == 0 || floorBytes <= 2*liveBytes+rootBytes {
		return 100
	}
	p := (floorBytes - liveBytes) * 100 / (liveBytes + rootBytes)
	return int(max(min(p, floorBytes*100/minHeap), 100))
}

// minHeap is the Go runtime's minimum heap goal at GOGC=100
// (defaultHeapMinimum in runtime/mgcpacer.go); the minimum scales with GOGC,
// so it also bounds the GOGC a floor may set. (A bound of 10 000 % once
// made the first collection come at ~400 MiB whatever the floor; none made
// it come at 4 MiB × GOGC/100, far past it.)
const minHeap = 4 << 20

// tune sets GOGC for the live heap and the roots of the last collection.
func tune() {
	f := floor.Load()
	if f == 0 {
		return
	}
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"}}
	metrics.Read(s)
	var v [3]uint64
	for i := range s {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return
		}
		v[i] = s[i].Value.Uint64()
	}
	debug.SetGCPercent(Percent(f, v[0], v[1]+v[2]))
}

// sentinel is garbage as soon as it is made: its finalizer runs after the
// collection that finds it, retunes, and makes the next one.
type sentinel struct{ _ [16]byte }

func watch() {
	runtime.SetFinalizer(&sentinel{}, func(*sentinel) {
		tune()
		watch()
	})
}
