package protocol_test

import (
	"strings"
	"testing"

	"github.com/ringer-dev/ringer/protocol"
)

// Hot-path codec benchmarks: every command is one Request decoded by the
// broker and one Reply encoded; every transition is one or two Events
// encoded by the broker and decoded by a client.

var (
	benchReq = &protocol.Request{Device: "phone-1", ID: "Fk3Jd8sLq0PzXc7VbN2mQa", Callee: "bob-42",
		Content: strings.Repeat("c", 64), ChannelID: "room-7f3a", Timeouts: &protocol.Timeouts{OfflineMs: 2000, ExpireMs: 3000}}
	benchInv = protocol.Invitation{ID: "Fk3Jd8sLq0PzXc7VbN2mQa", Caller: "alice-17", CallerDevice: "phone-1", Callee: "bob-42",
		CalleeDevice: "laptop", Content: strings.Repeat("c", 64), ChannelID: "room-7f3a", State: protocol.StateReceived,
		Revision: 123456, CreatedAt: 1_760_000_000_000, ReceivedAt: 1_760_000_000_010, Deadline: 1_760_000_060_010}
	benchEvent = &protocol.Event{Type: protocol.EventReceivedByPeer, Role: protocol.RoleCaller, Invitation: benchInv}
)

// discard stands for the publish an encoded message goes to.
func discard([]byte) error { return nil }

func BenchmarkEncodeRequest(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(protocol.MustMarshal(benchReq))))
	for b.Loop() {
		if err := protocol.Encode(benchReq, discard); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeRequest(b *testing.B) {
	data := protocol.MustMarshal(benchReq)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := protocol.DecodeRequest(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeEvent(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(protocol.MustMarshal(benchEvent))))
	for b.Loop() {
		if err := protocol.Encode(benchEvent, discard); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeEvent(b *testing.B) {
	data := protocol.MustMarshal(benchEvent)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := protocol.DecodeEvent(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeReply(b *testing.B) {
	inv := benchInv
	rep := &protocol.Reply{Invitation: &inv}
	b.ReportAllocs()
	b.SetBytes(int64(len(protocol.MustMarshal(rep))))
	for b.Loop() {
		if err := protocol.Encode(rep, discard); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeReply(b *testing.B) {
	inv := benchInv
	data := protocol.MustMarshal(&protocol.Reply{Invitation: &inv})
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := protocol.DecodeReply(data); err != nil {
			b.Fatal(err)
		}
	}
}
