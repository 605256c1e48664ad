package broker_test

import (
	"slices"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// FuzzCommand throws arbitrary bodies at every command of a real broker.
// Every request must get a decodable reply: a result, or a typed error that
// is never INTERNAL; and the broker must keep serving.
func FuzzCommand(f *testing.F) {
	env := ringertest.Start(f, ringertest.TestConfig())
	nc := natstest.Connect(f, env.URL)
	peer := env.Login("peer", "phone") // someone to invite, with a live session
	_ = peer
	seed := func(verb int, r protocol.Request) { f.Add(uint8(verb), protocol.MustMarshal(&r)) }
	for i := range subjects.Verbs {
		seed(i, protocol.Request{Device: "d"})
	}
	seed(0, protocol.Request{Device: "d"})
	seed(3, protocol.Request{Device: "d", Callee: "peer", Content: "hi", Timeouts: &protocol.Timeouts{OfflineMs: 1000}})
	seed(3, protocol.Request{Device: "d", Callee: "fuzzer"})
	seed(6, protocol.Request{Device: "d", ID: "x", Response: "ok"})
	seed(slices.Index(subjects.Verbs, subjects.VerbSend), protocol.Request{Device: "d", Callees: []string{"peer", "x"}, Mode: protocol.ModeJoin})
	seed(slices.Index(subjects.Verbs, subjects.VerbInvite), protocol.Request{Device: "d", ID: "x", Callees: []string{"peer"}})
	f.Add(uint8(3), []byte{0xc1})
	f.Add(uint8(11), []byte{})
	f.Fuzz(func(t *testing.T, verb uint8, body []byte) {
		subj, _ := subjects.Command("fuzzer", subjects.Verbs[int(verb)%len(subjects.Verbs)])
		msg, err := nc.Request(subj, body, 5*time.Second)
		if err != nil {
			t.Fatalf("%s: no reply: %v", subj, err)
		}
		rep, err := protocol.DecodeReply(msg.Data)
		if err != nil {
			t.Fatalf("%s: undecodable reply: %v", subj, err)
		}
		if rep.Error != nil {
			if rep.Error.Code == protocol.CodeInternal {
				t.Fatalf("%s %x: INTERNAL: %s", subj, body, rep.Error.Message)
			}
			known := false
			for _, c := range protocol.Codes {
				known = known || c == rep.Error.Code
			}
			if !known {
				t.Fatalf("unknown code %q", rep.Error.Code)
			}
		}
	})
}
