package subjects

import (
	"errors"
	"fmt"
	"testing"
)

func TestPartitionNames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{Partition(0).Bucket(), "RINGER"},
		{Partition(0).BucketStream(), "KV_RINGER"},
		{Partition(0).TimerStream(), "RINGER_TIMERS"},
		{Partition(0).TimerFire("X1"), "ringer.v1.timer.fire.X1"},
		{Partition(3).Bucket(), "RINGER_P3"},
		{Partition(3).BucketStream(), "KV_RINGER_P3"},
		{Partition(3).TimerStream(), "RINGER_TIMERS_P3"},
		{Partition(3).KVSubject("line.bob"), "$KV.RINGER_P3.line.bob"},
		{Partition(3).InvitationChanges(), "$KV.RINGER_P3.inv.*"},
		{Partition(3).SessionChanges(), "$KV.RINGER_P3.sess.*.*"},
		{Partition(3).TimerSchedule("X1", 5), "ringer.v1.timer3.set.X1.5"},
		{Partition(3).TimerFire("X1"), "ringer.v1.timer3.fire.X1"},
		{Partition(3).TimerFires(), "ringer.v1.timer3.fire.*"},
		{Partition(3).TimerBatchSchedule("B1"), "ringer.v1.timer3.sets.B1"},
		{Partition(3).TimerBatchFire("B1"), "ringer.v1.timer3.fires.B1"},
		{Partition(3).TimerBatchFires(), "ringer.v1.timer3.fires.*"},
		{Partition(3).TimerSubjects(), "ringer.v1.timer3.>"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestParseAnyPartition(t *testing.T) {
	for p := range Partition(5) {
		if id, err := ParseInvitationSubject(p.KVSubject(InvitationKey("X1"))); err != nil || id != "X1" {
			t.Errorf("partition %d invitation: %q %v", p, id, err)
		}
		if u, d, err := ParseSessionSubject(p.KVSubject(SessionKey("bob", "phone"))); err != nil || u != "bob" || d != "phone" {
			t.Errorf("partition %d session: %q %q %v", p, u, d, err)
		}
		if id, err := ParseTimerFire(p.TimerFire("X1")); err != nil || id != "X1" {
			t.Errorf("partition %d timer: %q %v", p, id, err)
		}
	}
	for _, bad := range []string{
		"$KV.RINGER_P0.inv.X1", "$KV.RINGER_P01.inv.X1", "$KV.RINGER_P.inv.X1", "$KV.OTHER.inv.X1",
		"$KV.RINGER_P2.line.bob", "ringer.v1.timer0.fire.X1", "ringer.v1.timerx.fire.X1", "ringer.v1.timer2.set.X1.5",
	} {
		_, err1 := ParseInvitationSubject(bad)
		_, err2 := ParseTimerFire(bad)
		if !errors.Is(err1, ErrInvalidSubject) || !errors.Is(err2, ErrInvalidSubject) {
			t.Errorf("%q parsed: %v, %v", bad, err1, err2)
		}
	}
}

// A user's keys share one partition; keys spread over all partitions.
func TestPartitionOf(t *testing.T) {
	const n = 7
	counts := make([]int, n)
	for i := range 7000 {
		user := fmt.Sprintf("user%d", i)
		p := PartitionOf(LineKey(user), n)
		if PartitionOf(SessionKey(user, "phone"), n) != p || PartitionOf(PushKey(user, "tab"), n) != p {
			t.Fatalf("%s's keys are in several partitions", user)
		}
		counts[PartitionOf(InvitationKey(fmt.Sprintf("ID%dX", i)), n)]++
	}
	for p, c := range counts {
		if c < 800 || c > 1200 {
			t.Errorf("partition %d has %d of 7000 invitations", p, c)
		}
	}
	if PartitionOf(LineKey("bob"), 1) != 0 || PartitionOf(LineKey("bob"), 0) != 0 {
		t.Error("one partition: not 0")
	}
}

func TestLocalInvitationID(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 7, MaxPartitions} {
		for _, user := range []string{"alice", "bob", "u-17"} {
			draws := 0
			id := LocalInvitationID(user, n, func() string { draws++; return fmt.Sprintf("inv-%d", draws) })
			if got, want := PartitionOf(InvitationKey(id), n), PartitionOf(LineKey(user), n); got != want {
				t.Errorf("n=%d %s: id %s in partition %d, line in %d", n, user, id, got, want)
			}
			if n <= 1 && draws != 1 {
				t.Errorf("n=%d: %d draws, want the first id", n, draws)
			}
		}
	}
}
