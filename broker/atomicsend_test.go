package broker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nuid"

	"github.com/ringer-dev/ringer/broker"
	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/subjects"
)

// On a replicated deployment a send writes the record and the lines that
// share its partition as one atomic batch, after the claim of a line in
// another partition: one write round trip when all three keys share a
// partition (always, with one partition), two when one line is elsewhere,
// three (the claims, then the record) when neither line shares the
// record's partition, or with --atomic-sends=false. The Go client names an
// invitation in its caller's partition, so its sends take one write or
// two. A stream that turns
// batches away (atomic publish switched off under a running broker) gets
// the writes one by one, later sends no longer try, and calls ring.
func TestAtomicSends(t *testing.T) {
	for _, tc := range []struct {
		name   string
		atomic bool
		writes [6]uint64 // all in one partition; caller's line and record; callee's line and record; none shared; named by the client, callee with the caller, elsewhere
	}{
		{"atomic", true, [6]uint64{1, 2, 2, 3, 1, 2}},
		{"separate", false, [6]uint64{3, 3, 3, 3, 3, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, env := servingClusterR3(t, func(c *broker.Config) {
				c.Partitions = 2
				c.AtomicSends = tc.atomic
				c.PresenceTTL = time.Minute // no session expires meanwhile (no heartbeats: they write)
			})
			// Users by partition: alice and bob in partition 0, carol in 1.
			var p0 []string
			var carol string
			for i := 0; len(p0) < 2 || carol == ""; i++ {
				u := fmt.Sprintf("user%d", i)
				if subjects.PartitionOf(subjects.LineKey(u), 2) == 0 {
					p0 = append(p0, u)
				} else if carol == "" {
					carol = u
				}
			}
			alice, bob := p0[0], p0[1]
			idIn := func(p subjects.Partition) string {
				if p < 0 {
					return "" // the client names it, in the caller's partition
				}
				for {
					if id := nuid.Next(); subjects.PartitionOf(subjects.InvitationKey(id), 2) == p {
						return id
					}
				}
			}
			caller := env.Login(alice, "phone", client.WithoutHeartbeat())
			st := env.Brokers[0].Store()
			ctx := ringertest.Ctx(t)
			// Offline callees: nothing writes but the send.
			sendWrites := func(callee string, p subjects.Partition) uint64 {
				t.Helper()
				before := st.Stats()
				li := caller.CreateLocalInvitation(callee)
				li.ID = idIn(p)
				if err := li.Send(ctx); err != nil {
					t.Fatal(err)
				}
				got := st.Stats().Sub(before).Writes
				if err := li.Cancel(ctx); err != nil {
					t.Fatal(err)
				}
				caller.Rec.Wait(t, "Canceled "+li.ID)
				return got
			}
			for i, send := range []struct {
				callee string
				p      subjects.Partition
			}{{bob, 0}, {carol, 0}, {carol, 1}, {bob, 1}, {bob, -1}, {carol, -1}} {
				if got := sendWrites(send.callee, send.p); got != tc.writes[i] {
					t.Errorf("send %d (callee's line in partition %d, record in %d, -1: named by the client) wrote %d times, want %d",
						i+1, subjects.PartitionOf(subjects.LineKey(send.callee), 2), send.p, got, tc.writes[i])
				}
			}
			if !tc.atomic {
				return
			}

			// Atomic publish switched off under the broker: the stream
			// refuses the first batch (a wasted round trip), the send writes
			// one by one, and later sends no longer try.
			js := st.JetStream()
			stream, err := js.Stream(ctx, subjects.Partition(0).BucketStream())
			if err != nil {
				t.Fatal(err)
			}
			cfg := stream.CachedInfo().Config
			cfg.AllowAtomicPublish = false
			natstest.Attempt(t, 30*time.Second, 10*time.Second, func(ctx context.Context) error {
				_, err := js.UpdateStream(ctx, cfg)
				return err
			})
			if got := sendWrites(bob, 0); got != 4 {
				t.Errorf("the first send after batches were switched off wrote %d times, want 4 (the refused batch, then three)", got)
			}
			if got := sendWrites(bob, 0); got != 3 {
				t.Errorf("a later send wrote %d times, want 3", got)
			}
			if n := counter(t, env.Brokers[0].Broker, "ringer_send_batches_refused_total"); n != 1 {
				t.Errorf("ringer_send_batches_refused_total = %v, want 1", n)
			}
			callee := env.Login(bob, "phone", client.WithoutHeartbeat())
			li := caller.Invite(t, bob)
			callee.Rec.WaitRemote(t, li.ID)
		})
	}
}
