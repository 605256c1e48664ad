package broker_test

import (
	"testing"

	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// A get that names a revision the client has seen (seen) newer than the
// broker's fast read asks the stream leader: a replica catching up after a
// partition answers every direct get of the brokers on its server until it
// has, with views older than the client's (chaos runs read a call's record
// 10 s stale). A get that names none, or one the fast read has, costs one
// read as before.
func TestGetIsNoOlderThanWhatTheClientSaw(t *testing.T) {
	_, env := servingClusterR3(t)
	alice := env.Login("alice", "phone", client.WithoutHeartbeat())
	env.Login("bob", "phone", client.WithoutHeartbeat(), client.WithoutAutoAck()) // the record stays at its revision
	li := alice.Invite(t, "bob")
	st := env.Brokers[0].Broker.Store()
	subj, _ := subjects.Command("alice", subjects.VerbGet)
	// get returns the revision answered and the fewest reads it took in
	// three tries (a background read may land in one).
	get := func(seen uint64) (rev, reads uint64) {
		reads = ^uint64(0)
		for range 3 {
			before := st.Stats()
			rep := rawRequest(t, env, subj, protocol.MustMarshal(&protocol.Request{Device: "phone", ID: li.ID, Seen: seen}))
			if rep.Error != nil || rep.Invitation == nil {
				t.Fatalf("get (seen %d): %+v", seen, rep.Error)
			}
			rev, reads = rep.Invitation.Revision, min(reads, st.Stats().Sub(before).Reads)
		}
		return rev, reads
	}
	rev, plain := get(0)
	if r, n := get(rev); r != rev || n != plain {
		t.Errorf("seen = the current revision: revision %d in %d reads, want %d in %d", r, n, rev, plain)
	}
	if r, n := get(rev + 1); r != rev || n != plain+1 {
		t.Errorf("seen newer than the fast read: revision %d in %d reads, want %d in %d (the leader asked)", r, n, rev, plain+1)
	}
}

// The SDK's get names the newest revision the device applied (seen), so
// that no broker answers it with an older view.
func TestClientGetNamesTheRevisionItSaw(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	env.Login("bob", "phone")
	li := alice.Invite(t, "bob")
	subj, _ := subjects.Command("alice", subjects.VerbGet)
	nc := natstest.Connect(t, env.URL)
	spy, err := nc.SubscribeSync(subj)
	if err == nil {
		err = nc.Flush() // subscribed before the get below
	}
	if err != nil {
		t.Fatal(err)
	}
	view, _ := alice.Invitation(li.ID)
	if _, err := alice.Get(ringertest.Ctx(t), li.ID); err != nil {
		t.Fatal(err)
	}
	m, err := spy.NextMsg(ringertest.Wait)
	if err != nil {
		t.Fatalf("no get on %s: %v", subj, err)
	}
	req, err := protocol.DecodeRequest(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if req.Seen == 0 || req.Seen < view.Revision {
		t.Fatalf("get names seen %d; the device had applied revision %d", req.Seen, view.Revision)
	}
}
