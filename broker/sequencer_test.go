package broker_test

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// A callee's device that acknowledges a ring and accepts it at once (the
// SDK acknowledges on receipt; an app may accept in the same callback)
// sends the two commands back to back. Served side by side, the accept
// lost its compare-and-set to the acknowledgement nine times in ten at the
// R1 peak, then read the record again and retried. A broker serves one
// user's commands one at a time, in order (broker/sequencer.go): the
// accept starts from the record the acknowledgement left, so the pair
// costs its two writes and no read, every time.
func TestBackToBackCommandsDoNotCollide(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	st := env.Brokers[0].Store()
	nc := natstest.Connect(t, env.URL)
	replies := make(chan *nats.Msg, 2)
	inbox := nats.NewInbox()
	if _, err := nc.ChanSubscribe(inbox+".*", replies); err != nil {
		t.Fatal(err)
	}
	sent := 0
	// publish sends a command without waiting for its reply.
	publish := func(user, verb string, req *protocol.Request) {
		t.Helper()
		subj, err := subjects.Command(user, verb)
		if err != nil {
			t.Fatal(err)
		}
		sent++
		reply := fmt.Sprintf("%s.%d", inbox, sent)
		if err := nc.PublishRequest(subj, reply, protocol.MustMarshal(req)); err != nil {
			t.Fatal(err)
		}
	}
	reply := func(what string) *protocol.Reply {
		t.Helper()
		select {
		case m := <-replies:
			rep, err := protocol.DecodeReply(m.Data)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if rep.Error != nil {
				t.Fatalf("%s: %v", what, rep.Error)
			}
			return rep
		case <-ringertest.Ctx(t).Done():
			t.Fatalf("%s: no reply", what)
			return nil
		}
	}
	for _, user := range []string{"alice", "bob"} {
		publish(user, subjects.VerbLogin, &protocol.Request{Device: "phone"})
		reply(user + " login")
	}

	for round := range 20 {
		publish("alice", subjects.VerbSend, &protocol.Request{Device: "phone", Callee: "bob"})
		id := reply("send").Invitation.ID

		before := st.Stats()
		publish("bob", subjects.VerbAck, &protocol.Request{Device: "phone", ID: id})
		publish("bob", subjects.VerbAccept, &protocol.Request{Device: "phone", ID: id})
		reply("ack")
		reply("accept")
		if got := st.Stats().Sub(before); got.Writes != 2 || got.Reads != 0 {
			t.Fatalf("round %d: acknowledgement and accept sent together cost %d writes and %d reads, want 2 and 0 (a collision)", round, got.Writes, got.Reads)
		}

		publish("alice", subjects.VerbAckAccept, &protocol.Request{Device: "phone", ID: id})
		reply(fmt.Sprintf("ackaccept %d", round))
		publish("alice", subjects.VerbHangup, &protocol.Request{Device: "phone", ID: id})
		reply(fmt.Sprintf("hangup %d", round))
	}
}
