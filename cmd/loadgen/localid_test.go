package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/subjects"
)

// loadgen names each invitation in its caller's partition (--local-ids, on
// by default), as the Go client does, from the partition count its
// caller's session reports: every id it draws for alice on a three-partition
// broker is hers, and is its base or the base with a suffix. With
// --local-ids=false it keeps the base. (About two bases in three hash
// elsewhere, so a localID that ignored partitions fails here.)
func TestLocalIDsInTheCallersPartition(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.Partitions = 3
	env := ringertest.Start(t, cfg)
	u := &user{id: "alice", cl: env.Login("alice", "phone").Client}
	if n := u.cl.Session().Partitions; n != 3 {
		t.Fatalf("the session reports %d partitions, want 3", n)
	}
	want := subjects.PartitionOf(subjects.LineKey(u.id), 3)
	local := &run{cfg: &config{localIDs: true}}
	moved := 0
	for i := range 60 {
		base := fmt.Sprintf("run-%d", i)
		id := local.localID(base, u)
		if got := subjects.PartitionOf(subjects.InvitationKey(id), 3); got != want {
			t.Fatalf("%s is in partition %d, alice's line in %d", id, got, want)
		}
		if id != base && !strings.HasPrefix(id, base+"_") {
			t.Fatalf("%s is not drawn from %s", id, base)
		}
		if id != base {
			moved++
		}
		if id := (&run{cfg: &config{localIDs: false}}).localID(base, u); id != base {
			t.Fatalf("--local-ids=false named %s %s", base, id)
		}
	}
	if moved == 0 {
		t.Fatal("every base was already in alice's partition: the test proves nothing")
	}
}
