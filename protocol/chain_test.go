package protocol

import (
	"errors"
	"testing"
)

// A reader knows it has every transition of an invitation when each names
// the one before it: a gap, a repeat or a reordering breaks the chain.
func TestCheckChain(t *testing.T) {
	tr := func(rev, prev uint64) Transition { return Transition{Revision: rev, Previous: prev} }
	if err := CheckChain([]Transition{tr(4, 0), tr(9, 4), tr(12, 9)}); err != nil {
		t.Fatalf("a whole chain: %v", err)
	}
	for name, ts := range map[string][]Transition{
		"missing first":  {tr(9, 4), tr(12, 9)},
		"missing middle": {tr(4, 0), tr(12, 9)},
		"repeated":       {tr(4, 0), tr(9, 4), tr(9, 4)},
		"reordered":      {tr(9, 4), tr(4, 0)},
	} {
		if err := CheckChain(ts); !errors.Is(err, ErrBrokenChain) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
