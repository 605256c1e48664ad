package broker

import (
	"testing"
	"time"
)

func TestOverloadVerdicts(t *testing.T) {
	o := newOverload(50*time.Millisecond, 500*time.Millisecond)
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	many := func(d time.Duration) []time.Duration {
		out := make([]time.Duration, shedMinSamples)
		for i := range out {
			out[i] = d
		}
		return out
	}
	steps := []struct {
		done []time.Duration // samples before the check
		ms   int             // when the check happens
		want bool
		why  string
	}{
		{nil, 0, false, "nothing seen yet"},
		{many(80 * time.Millisecond), 100, false, "verdict kept within a window"},
		{nil, 500, true, "every sample slower than the target: a standing queue"},
		{many(10 * time.Millisecond), 700, true, "verdict kept within a window"},
		{nil, 1000, false, "the fastest met the target"},
		{append(many(70*time.Millisecond), 60*time.Millisecond), 1500, true, "still queueing"},
		{many(40 * time.Millisecond), 2000, true, "met the target, but not half of it: keep shedding until drained"},
		{append(many(55*time.Millisecond), 20*time.Millisecond), 2500, false, "one sample under half the target: the queue drained"},
		{many(40 * time.Millisecond), 3000, false, "not shedding: the target itself decides"},
		{many(90 * time.Millisecond)[1:], 3500, false, "too few samples to call it a queue"},
		{nil, 4000, false, "nothing at all"},
	}
	for _, s := range steps {
		for _, d := range s.done {
			o.done(d)
		}
		if got := o.shedding(at(s.ms)); got != s.want {
			t.Fatalf("at %d ms (%s): shedding=%v, want %v", s.ms, s.why, got, s.want)
		}
	}

	off := newOverload(0, time.Millisecond)
	off.done(time.Hour)
	for range shedMinSamples {
		off.done(time.Hour)
	}
	if off.shedding(at(0)) || off.shedding(at(10)) {
		t.Fatal("a zero target must never shed")
	}
}
