package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/ringer-dev/ringer/internal/wiretest"
)

func TestRoundTrip(t *testing.T) {
	req := &Request{Device: "phone", ID: "i1", Callee: "bob", Content: "hi", ChannelID: "c", Timeouts: &Timeouts{OfflineMs: 1500}}
	got, err := DecodeRequest(MustMarshal(req))
	if err != nil || got.Callee != "bob" || got.Timeouts == nil || got.Timeouts.OfflineMs != 1500 {
		t.Fatalf("%+v %v", got, err)
	}
	ev := &Event{Type: EventInvited, Role: RoleCallee, Invitation: Invitation{ID: "i1", State: StateSent, Revision: 7}}
	gotEv, err := DecodeEvent(MustMarshal(ev))
	if err != nil || gotEv.Invitation.Revision != 7 || gotEv.Type != EventInvited {
		t.Fatalf("%+v %v", gotEv, err)
	}
	rep := &Reply{Error: &Error{Code: CodeAlreadyEnd, Message: "m", State: StateCanceled}}
	gotRep, err := DecodeReply(MustMarshal(rep))
	if err != nil || !errors.Is(gotRep.Error, ErrAlreadyEnd) || gotRep.Error.State != StateCanceled {
		t.Fatalf("%+v %v", gotRep, err)
	}
}

// Encode lends out pooled buffers; Marshal's result must never be one of
// them, and a buffer must not carry one message's bytes into the next.
func TestEncodeBuffersAreNotShared(t *testing.T) {
	kept := MustMarshal(&Request{Callee: "bob", Content: "first"})
	want := bytes.Clone(kept)
	big := strings.Repeat("x", maxPooledSize+1) // a buffer the pool must not keep
	for _, content := range []string{"second, longer than the first", "", big, "third"} {
		req := &Request{Callee: "carol", Content: content}
		err := Encode(req, func(b []byte) error {
			got, err := DecodeRequest(b)
			if err != nil && content != big { // big is over MaxRequestLen: encodable, not decodable
				return err
			}
			if got != nil && got.Content != content {
				t.Errorf("encoded %q, decoded %q", content, got.Content)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(kept, want) {
		t.Fatalf("a later Encode changed bytes Marshal returned: % x, was % x", kept, want)
	}
	sentinel := errors.New("publish failed")
	if err := Encode(&Request{}, func([]byte) error { return sentinel }); err != sentinel {
		t.Fatalf("Encode returned %v, not what use returned", err)
	}
	if err := MustEncode(&Request{}, func([]byte) error { return sentinel }); err != sentinel {
		t.Fatalf("MustEncode returned %v, not what use returned", err)
	}
	if err := Encode(make(chan int), func([]byte) error { t.Fatal("use called for a value that cannot encode"); return nil }); err == nil {
		t.Fatal("encoding a channel succeeded")
	}
}

// The wire field names are the contract of docs/protocol.md.
func TestWireFieldNames(t *testing.T) {
	raw := MustMarshal(&Request{Device: "d", ID: "i", Callee: "c", Content: "x", ChannelID: "ch", Response: "r", Busy: true})
	var m map[string]any
	if err := msgpack.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"device", "id", "callee", "content", "channelId", "response", "busy"} {
		if _, ok := m[k]; !ok {
			t.Errorf("request lacks field %q: %v", k, m)
		}
	}
	// The v1.1 fields: history paging, push targets, block lists, glare.
	for _, tc := range []struct {
		v    any
		keys []string
	}{
		{&Request{Device: "d", Limit: 5, Cursor: "9", Missed: true, Push: &PushTarget{Platform: PlatformFCM, Token: "t", App: "a", TTLMs: 1}, Peer: "p"},
			[]string{"limit", "cursor", "missed", "push", "peer"}},
		{&Reply{Calls: []CallRecord{{ID: "i"}}, Cursor: "3", Push: &PushTarget{Device: "d"}, Blocked: []string{"p"}},
			[]string{"calls", "cursor", "push", "blocked"}},
		{&Invitation{ID: "i", MergedInto: "j"}, []string{"id", "mergedInto"}},
		// Group invitations (docs/protocol.md §12).
		{&Request{Device: "d", Callees: []string{"a"}, Mode: ModeJoin}, []string{"callees", "mode"}},
		{&Invitation{ID: "i", Mode: ModeFirst, CallerLeftAt: 1, Legs: []Leg{{User: "u"}}}, []string{"mode", "legs", "callerLeftAt"}},
		{&Leg{User: "u", Device: "d", State: StateSent, Reason: ReasonLeft, Response: "r", InvitedBy: "b", ReceivedAt: 1, AnsweredAt: 1, EndedAt: 1, Deadline: 1},
			[]string{"user", "device", "state", "reason", "response", "invitedBy", "createdAt", "receivedAt", "answeredAt", "endedAt", "deadline"}},
		{&CallRecord{ID: "i", Mode: ModeJoin, Peers: []string{"a"}}, []string{"mode", "peers"}},
		{&CallRecord{ID: "i", Direction: Incoming, Peer: "p", Missed: true, DurationMs: 1, EndedAt: 2, Cursor: "5"},
			[]string{"id", "direction", "peer", "missed", "durationMs", "endedAt", "cursor"}},
		{&PushRequest{ID: "i.ring", Kind: PushRing, User: "u", CollapseKey: "i", Deadline: 1, Devices: []PushTarget{{Device: "d"}}},
			[]string{"id", "kind", "user", "collapseKey", "invitation", "deadline", "devices"}},
	} {
		var m map[string]any
		if err := msgpack.Unmarshal(MustMarshal(tc.v), &m); err != nil {
			t.Fatal(err)
		}
		for _, k := range tc.keys {
			if _, ok := m[k]; !ok {
				t.Errorf("%T lacks field %q: %v", tc.v, k, m)
			}
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	bad := map[string][]byte{
		"garbage":        []byte{0xc1},                                  // never-used msgpack byte
		"truncated":      MustMarshal(&Request{Device: "d"})[:3],        // cut mid-map
		"not a map":      MustMarshal("just a string"),                  // wrong shape
		"wrong type":     MustMarshal(map[string]any{"device": 42}),     // int for a string
		"trailing bytes": append(MustMarshal(&Request{Device: "d"}), 1), // two values
		"oversize":       bytes.Repeat([]byte{0xa1, 'x'}, MaxRequestLen),
	}
	for name, data := range bad {
		if _, err := DecodeRequest(data); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v, want INVALID_ARGUMENT", name, err)
		}
	}
	if r, err := DecodeRequest(nil); err != nil || r.Device != "" {
		t.Errorf("empty body: %+v %v", r, err)
	}
	if _, err := DecodeEvent(MustMarshal(&Event{Type: EventInvited})); err == nil {
		t.Error("event without invitation id accepted")
	}
	if _, err := DecodeEvent(MustMarshal(&Event{Type: EventInvited, Invitation: Invitation{ID: "x", State: "BOGUS"}})); err == nil {
		t.Error("event with unknown state accepted")
	}
	if _, err := DecodeReply(MustMarshal(&Reply{Error: &Error{Message: "no code"}})); err == nil {
		t.Error("reply error without code accepted")
	}
}

func TestErrorIs(t *testing.T) {
	e := Errorf(CodeForbidden, "mallory may not")
	if !errors.Is(e, ErrForbidden) || errors.Is(e, ErrNotFound) {
		t.Fatal("Is must match by code only")
	}
	if CodeOf(errors.New("x")) != CodeInternal || CodeOf(e) != CodeForbidden {
		t.Fatal("CodeOf")
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add(MustMarshal(&Request{Device: "d", Callee: "bob", Content: "hi", Timeouts: &Timeouts{OfflineMs: 1}}))
	f.Add(MustMarshal(&Request{Device: "d", Callees: []string{"bob", "carol"}, Mode: ModeFirst}))
	f.Add([]byte{0xc1})
	f.Add([]byte{})
	f.Add([]byte{0x81, 0xa6, 'd', 'e', 'v', 'i', 'c', 'e', 0xc0})
	for _, v := range wiretest.Values[Request](20) { // shapes the fast decoder reads, to mutate
		f.Add(MustMarshal(v))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sameDecoding[Request](t, data, MaxRequestLen) // the fast decoder reads what reflection reads, or leaves it
		r, err := DecodeRequest(data)
		if err != nil {
			if CodeOf(err) != CodeInvalidArgument {
				t.Fatalf("decode error with code %s", CodeOf(err))
			}
			return
		}
		// Whatever decodes must re-encode and decode to the same request.
		r2, err := DecodeRequest(MustMarshal(r))
		if err != nil || r2.Device != r.Device || r2.Callee != r.Callee || r2.Content != r.Content {
			t.Fatalf("round trip: %+v vs %+v (%v)", r, r2, err)
		}
	})
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add(MustMarshal(&Event{Type: EventAccepted, Role: RoleCaller, Invitation: Invitation{ID: "i", State: StateAccepting, Revision: 3}}))
	f.Add([]byte{0x80})
	for _, v := range wiretest.Values[Event](20) { // shapes the fast decoder reads, to mutate
		f.Add(MustMarshal(v))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sameDecoding[Event](t, data, MaxEventLen)
		ev, err := DecodeEvent(data)
		if err == nil && (ev.Invitation.ID == "" || !ev.Invitation.State.Valid()) {
			t.Fatalf("accepted an invalid event: %+v", ev)
		}
	})
}

func FuzzDecodeReply(f *testing.F) {
	f.Add(MustMarshal(&Reply{Invitation: &Invitation{ID: "i", State: StateSent}}))
	f.Add(MustMarshal(&Reply{Error: &Error{Code: CodeBusy}}))
	for _, v := range wiretest.Values[Reply](20) { // shapes the fast decoder reads, to mutate
		f.Add(MustMarshal(v))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sameDecoding[Reply](t, data, MaxReplyLen)
		rep, err := DecodeReply(data)
		if err == nil && rep.Error != nil && rep.Error.Code == "" {
			t.Fatal("accepted an error without code")
		}
	})
}

func FuzzDecodePushRequest(f *testing.F) {
	f.Add(MustMarshal(&PushRequest{ID: "i.ring", Kind: PushRing, User: "bob", Invitation: Invitation{ID: "i"},
		Devices: []PushTarget{{Device: "d", Platform: PlatformAPNs, Token: "t"}}}))
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodePushRequest(data)
		if err == nil && (r.ID == "" || r.User == "" || r.Invitation.ID == "" || (r.Kind != PushRing && r.Kind != PushStop)) {
			t.Fatalf("accepted an invalid push request: %+v", r)
		}
	})
}

// A header may announce far more elements than the message holds. msgpack
// v5.4.1 would allocate the announced length before reading any element
// (a 9-byte reply once took the fuzzer out of memory); the decoders must
// reject such input without allocating for it.
func TestDecodeRejectsLengthsBeyondTheData(t *testing.T) {
	cases := map[string][]byte{
		// {"invitations": array32 of 0xffffffff}
		"reply slice":        append(append([]byte{0x81, 0xab}, "invitations"...), 0xdd, 0xff, 0xff, 0xff, 0xff),
		"reply struct array": {0x94, 0x80, 0x90, 0xdd, 0x5b, 0x64, 0x33, 0xf4},
		// an unknown field holding map32 of 0xffffffff entries
		"request map": append(append([]byte{0x81, 0xa1}, 'x'), 0xdf, 0xff, 0xff, 0xff, 0xff),
		"event map":   append(append([]byte{0x81, 0xa1}, 'x'), 0xdf, 0xff, 0xff, 0xff, 0xff),
	}
	decoders := map[string]func([]byte) error{
		"reply":   func(b []byte) error { _, err := DecodeReply(b); return err },
		"request": func(b []byte) error { _, err := DecodeRequest(b); return err },
		"event":   func(b []byte) error { _, err := DecodeEvent(b); return err },
	}
	for name, data := range cases {
		decode := decoders[name[:strings.IndexByte(name, ' ')]]
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		err := decode(data)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want INVALID_ARGUMENT", name, err)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
			t.Errorf("%s: decoding %d bytes allocated %d bytes", name, len(data), alloc)
		}
	}
}

// A group invitation at every size limit (content, callees at the default
// bound with the longest ids and responses) fits an event.
func TestLargestGroupFitsAnEvent(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	inv := Invitation{ID: long(64), Caller: long(64), CallerDevice: long(64), Content: long(MaxContentLen),
		ChannelID: long(MaxChannelIDLen), Mode: ModeJoin, State: StateAccepted, CallState: CallActive}
	for i := range DefaultMaxCallees {
		inv.Legs = append(inv.Legs, Leg{User: fmt.Sprintf("%064d", i), Device: long(64), State: StateAccepted,
			Reason: ReasonAnsweredElsewhere, Response: long(MaxLegResponseLen), InvitedBy: long(64),
			CreatedAt: 1 << 60, ReceivedAt: 1 << 60, AnsweredAt: 1 << 60, EndedAt: 1 << 60, Deadline: 1 << 60})
	}
	ev := Event{Type: EventGroupUpdated, Role: RoleCallee, Invitation: inv}
	if err := MustEncode(&ev, func(b []byte) error {
		if len(b) > MaxEventLen {
			return fmt.Errorf("%d bytes, more than %d", len(b), MaxEventLen)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
