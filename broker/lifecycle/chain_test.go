package lifecycle

import (
	"slices"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/protocol"
)

// A record written revision after revision remembers each one: the step it
// was derived from gets the revision it replaced, its own is added, and
// Steps fills in its own revision. Writing the same record twice (a retried
// commit) does not disturb the first write's chain.
func TestChainRemembersEveryRevision(t *testing.T) {
	now := time.UnixMilli(1_000)
	r := New("i", "alice", "phone", "bob", "", "", Timeouts{Offline: time.Minute, Expire: time.Minute, Accept: time.Minute}, now)
	r.Chain = r.Chained(0, 1_000)
	r.Revision = 10

	next, _, err := Apply(r, Action{Kind: Cancel, User: "alice", Device: "phone"}, now.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	first := next.Chained(10, 2_000)
	again := next.Chained(10, 2_500)
	next.Chain, next.Revision = first, 17

	got := next.Steps()
	want := []Step{{Rev: 10, State: protocol.StateSent, At: 1_000}, {Rev: 17, State: protocol.StateCanceled, At: 2_000}}
	if !slices.Equal(got, want) {
		t.Fatalf("steps %+v, want %+v", got, want)
	}
	if again[1].At != 2_500 || first[1].At != 2_000 {
		t.Fatal("two writes of one record share their chain")
	}
	if len(r.Chain) != 1 || r.Chain[0].Rev != 0 {
		t.Fatalf("deriving a record changed its parent's chain: %+v", r.Chain)
	}
	old := Record{Invitation: protocol.Invitation{ID: "o", State: protocol.StateSent, CreatedAt: 5}}
	old.Revision = 3
	if got := old.Steps(); len(got) != 1 || got[0].Rev != 3 || got[0].At != 5 {
		t.Fatalf("a record without a chain: steps %+v", got)
	}
}
