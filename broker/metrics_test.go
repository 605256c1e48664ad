package broker

import (
	"context"
	"errors"
	"testing"

	"github.com/ringer-dev/ringer/broker/store"
)

// The census gauges show the last census that succeeded: a failed one
// (JetStream unreachable, say) must not read as "nothing live, nothing
// overdue", which would silence the stuck-invitations alert.
func TestCensusGaugesKeepTheLastFigures(t *testing.T) {
	m := newMetrics()
	first := store.Census{Lines: 4, Invitations: 3, Calls: 2, Overdue: 1, Timers: 5}
	censuses := 0
	census := func() (store.Census, error) { // one that works, then none
		censuses++
		if censuses == 1 {
			return first, nil
		}
		return store.Census{}, errors.New("no responders")
	}
	// every 0: each gauge takes a census on each scrape.
	m.gauges(census, 0, func(context.Context) error { return nil })
	want := map[string]float64{
		"ringer_line_records": 4, "ringer_timers_pending": 5, "ringer_invitations_overdue": 1,
		"ringer_invitations_live/invitation": 3, "ringer_invitations_live/call": 2,
	}
	for scrape := range 2 {
		families, err := m.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, f := range families {
			for _, mt := range f.GetMetric() {
				name := f.GetName()
				for _, l := range mt.GetLabel() {
					if l.GetName() == "phase" {
						name += "/" + l.GetValue()
					}
				}
				if _, ok := want[name]; ok {
					got[name] = mt.GetGauge().GetValue()
				}
			}
		}
		for name, w := range want {
			if got[name] != w {
				t.Errorf("scrape %d: %s = %g, want %g (the census that worked)", scrape+1, name, got[name], w)
			}
		}
	}
	if censuses < 2 {
		t.Fatalf("%d censuses: the failing ones were never taken", censuses)
	}
}
