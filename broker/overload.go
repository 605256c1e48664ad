package broker

import (
	"math"
	"sync/atomic"
	"time"
)

// shedWindow is how long a standing queue must last before a broker sheds:
// longer than most stalls a healthy broker sees (a GC cycle, a burst of
// heartbeats: p999 ≈ 130 ms at half the peak here), short enough that an
// overload is met within a quarter of a second.
const shedWindow = 250 * time.Millisecond

// shedMinSamples is the least number of samples in a window for it to show
// a queue: an idle broker's one slow command is not one.
const shedMinSamples = 16

// overload tells whether one stage of the broker has a standing queue, in
// the manner of CoDel: if even the fastest sample of the last window — a
// command's time from arrival to reply, or a revision's time from its commit
// to its projection — took longer than the target, everything is waiting
// behind something: the broker gets more work than it can do. A burst that
// the broker absorbs leaves some fast samples in the window and sheds
// nothing.
//
// done is called by any goroutine; shedding only by the command
// subscription's goroutine (one caller at a time), which owns windowEnd and on.
type overload struct {
	target    time.Duration // 0: never shed
	window    time.Duration
	fastest   atomic.Int64 // ns; math.MaxInt64 while nothing finished in this window
	samples   atomic.Int64
	windowEnd time.Time
	on        bool
}

func newOverload(target, window time.Duration) *overload {
	o := &overload{target: target, window: window}
	o.fastest.Store(math.MaxInt64)
	return o
}

// done records one sample.
func (o *overload) done(d time.Duration) {
	o.samples.Add(1)
	for {
		cur := o.fastest.Load()
		if int64(d) >= cur || o.fastest.CompareAndSwap(cur, int64(d)) {
			return
		}
	}
}

// shedding reports, at now, whether new sends should be refused. The verdict
// is revised once per window: on when the last window had at least
// shedMinSamples samples and even the fastest missed the target; once on,
// it stays on until a sample meets half the target (the queue has drained,
// rather than just stopped growing).
func (o *overload) shedding(now time.Time) bool {
	if o.target <= 0 {
		return false
	}
	if now.Before(o.windowEnd) {
		return o.on
	}
	fastest, n := o.fastest.Swap(math.MaxInt64), o.samples.Swap(0)
	limit := o.target
	if o.on {
		limit = o.target / 2 // once shedding, go on until the queue has drained
	}
	o.on = n >= shedMinSamples && time.Duration(fastest) > limit
	o.windowEnd = now.Add(o.window)
	return o.on
}
