package lifecycle

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/protocol"
)

// TestAFinishedRecordNeverChanges: once a record is no longer live, no
// action by anyone, at any time, changes it. The broker relies on this to
// answer a command on a finished invitation from the record it has in hand
// (its cache, or a follower's read) without asking the stream leader
// (broker.final): the leader's record can only be the same one.
func TestAFinishedRecordNeverChanges(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	users := []string{"alice", "bob", "carol", "dave", "eve"}
	devices := []string{"1", "2"}
	finished := 0
	check := func(round int, r Record, now time.Time) {
		t.Helper()
		finished++
		for _, k := range Kinds {
			for _, u := range users {
				for _, d := range devices {
					for _, later := range []time.Duration{0, time.Minute, 24 * time.Hour} {
						a := Action{Kind: k, User: u, Device: u[:1] + d, Response: "r"}
						next, changed, err := Apply(r, a, now.Add(later))
						if changed {
							t.Fatalf("round %d: finished %s/%s/%s changed by %s of %s (%s) to %s/%s (err %v)",
								round, r.State, r.CallState, r.Reason, k, u, a.Device, next.State, next.CallState, err)
						}
					}
				}
			}
		}
	}
	for round := 0; round < 3000; round++ {
		var r Record
		switch round % 3 {
		case 0:
			r = New("inv", "alice", "a1", "bob", "hi", "ch", timeouts, t0)
		case 1:
			r = NewGroup("g", "alice", "a1", protocol.ModeFirst, callees, func(u string) bool { return rng.IntN(6) == 0 && u == "dave" }, "", "", timeouts, t0)
		default:
			r = NewGroup("g", "alice", "a1", protocol.ModeJoin, callees, func(u string) bool { return rng.IntN(6) == 0 && u == "dave" }, "", "", timeouts, t0)
		}
		now := t0
		for step := 0; step < 30 && r.Live(); step++ {
			now = now.Add(time.Duration(rng.IntN(40_000)) * time.Millisecond)
			a := Action{Kind: Kinds[rng.IntN(len(Kinds))], User: users[rng.IntN(len(users))]}
			a.Device = a.User[:1] + devices[rng.IntN(len(devices))]
			if next, changed, err := Apply(r, a, now); err == nil && changed {
				r = Finished(next)
			}
		}
		if !r.Live() {
			check(round, r, now)
		}
	}
	for _, s := range []protocol.State{protocol.StateRefused, protocol.StateCanceled, protocol.StateFailed} {
		check(-1, at(s, ""), t0)
	}
	check(-1, at(protocol.StateAccepted, protocol.CallEnded), t0)
	if finished < 1000 {
		t.Fatalf("only %d of the random walks finished: the test checks too little", finished)
	}
}
