package protocol

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/ringer-dev/ringer/internal/wiretest"
)

// sameDecoding decodes data into fresh values of T by decode (the fast
// decoders first) and by reflection alone, and fails t unless both fail or
// both give the same value. It reports whether the fast decoder read it.
func sameDecoding[T any](t *testing.T, data []byte, limit int) (fast bool) {
	t.Helper()
	var got, want T
	fast = fastDecode(data, &got)
	if !fast && !reflect.DeepEqual(got, want) {
		t.Fatalf("the fast decoder gave up on %x and left %+v", data, got)
	}
	var viaDecode T
	err := decode(data, &viaDecode, "test", limit)
	wantErr := decodeReflect(data, &want, "test")
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("%x: decode says %v, reflection %v", data, err, wantErr)
	}
	if err == nil && !reflect.DeepEqual(viaDecode, want) {
		t.Fatalf("%x decodes to\n%+v\nreflection decodes it to\n%+v", data, viaDecode, want)
	}
	if fast && !reflect.DeepEqual(got, want) {
		t.Fatalf("%x: the fast decoder read\n%+v\nreflection reads\n%+v", data, got, want)
	}
	return fast
}

// The fast decoders read what the encoders write (random values of every
// field, empty and nil slices) to the values reflection reads, and give up
// only on the fields they leave to reflection.
func TestFastDecodersAgreeWithReflection(t *testing.T) {
	t.Run("Request", func(t *testing.T) {
		for i, q := range wiretest.Values[Request](3000) {
			rare := q.Push != nil
			if fast := sameDecoding[Request](t, MustMarshal(q), MaxRequestLen); fast == rare {
				t.Fatalf("value %d (push target %v): fast decoder used %v", i, rare, fast)
			}
		}
	})
	t.Run("Reply", func(t *testing.T) {
		for i, p := range wiretest.Values[Reply](3000) {
			rare := p.Session != nil || len(p.Calls) > 0 || p.Push != nil // written (omitempty)
			if fast := sameDecoding[Reply](t, MustMarshal(p), MaxReplyLen); fast == rare {
				t.Fatalf("value %d (session, calls or push %v): fast decoder used %v", i, rare, fast)
			}
		}
	})
	t.Run("Event", func(t *testing.T) {
		for i, e := range wiretest.Values[Event](3000) {
			if !sameDecoding[Event](t, MustMarshal(e), MaxEventLen) {
				t.Fatalf("value %d: the fast decoder gave up on an event", i)
			}
		}
	})
}

// Shapes the encoders never write: the fast decoders read some the way
// reflection does and leave the others to it; either way the result is
// reflection's.
func TestFastDecodersLeaveOddShapesToReflection(t *testing.T) {
	enc := func(v any) []byte {
		var buf bytes.Buffer
		e := msgpack.NewEncoder(&buf)
		if err := e.Encode(v); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	// A map written entry by entry: keys and values of any msgpack type.
	mapOf := func(kv ...any) []byte {
		var buf bytes.Buffer
		e := msgpack.NewEncoder(&buf)
		if err := e.EncodeMapLen(len(kv) / 2); err != nil {
			t.Fatal(err)
		}
		for _, x := range kv {
			if raw, ok := x.(msgpack.RawMessage); ok {
				buf.Write(raw)
				continue
			}
			if err := e.Encode(x); err != nil {
				t.Fatal(err)
			}
		}
		return buf.Bytes()
	}
	bin := func(s string) msgpack.RawMessage { return append([]byte{0xc4, byte(len(s))}, s...) }
	for _, c := range []struct {
		name string
		data []byte
		fast bool // whether the fast decoder reads it
	}{
		{"key twice", mapOf("device", "a", "device", "b"), false},
		{"timeouts twice", mapOf("device", "a", "timeouts", map[string]int{"offlineMs": 1}, "timeouts", map[string]int{"expireMs": 2}), false},
		{"keys and values as binary", mapOf(bin("device"), bin("phone"), "callee", bin("bob")), true},
		{"nil values", mapOf("device", nil, "timeouts", nil, "callees", nil, "busy", nil, "seen", nil), true},
		{"empty callees", mapOf("device", "a", "callees", []string{}), true},
		{"negative into seen", mapOf("seen", -1), true},
		{"int8 into seen", mapOf("seen", msgpack.RawMessage{0xd0, 0x80}), true},
		{"int16 into seen", mapOf("seen", msgpack.RawMessage{0xd1, 0xff, 0xfe}), true},
		{"int32 into seen", mapOf("seen", msgpack.RawMessage{0xd2, 0xff, 0xff, 0xff, 0xfe}), true},
		{"int64 into seen", mapOf("seen", msgpack.RawMessage{0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe}), true},
		{"uint8, uint16, uint32 into deadline", mapOf("deadline", msgpack.RawMessage{0xce, 0xff, 0xff, 0xff, 0xfe}, "limit", msgpack.RawMessage{0xcd, 0xff, 0xfe}, "seen", msgpack.RawMessage{0xcc, 0xfe}), true},
		{"int8, int16, int32 into ints", mapOf("deadline", msgpack.RawMessage{0xd2, 0xff, 0xff, 0xff, 0xfe}, "limit", msgpack.RawMessage{0xd1, 0xff, 0xfe}, "timeouts", map[string]any{"acceptMs": msgpack.RawMessage{0xd0, 0xfe}}), true},
		{"every integer width", mapOf("limit", int8(-5), "deadline", int32(-70000), "seen", uint64(1<<63)), true},
		{"float into limit", mapOf("limit", 1.5), false},
		{"string into busy", mapOf("busy", "yes"), false},
		{"unknown keys of every kind", mapOf("x", map[string]any{"a": []any{1, "b", nil, true, 2.5, map[string]int{"c": 3}}}, "y", bin("z"), "device", "a"), true},
		{"unknown extension", mapOf("x", msgpack.RawMessage{0xd4, 1, 0}, "device", "a"), false},
		{"nil key", mapOf(nil, "a", "device", "b"), true},
		{"integer key", mapOf(1, "a"), false},
		{"request as an array", enc([]any{"d", "", "", "", "", "", false, nil, 0, 0, "", false, nil, "", nil, "", 0}), false},
		{"request nil", []byte{0xc0}, false},
		{"trailing bytes", append(mapOf("device", "a"), 0xc0), false},
		{"truncated", mapOf("device", "abcdef")[:5], false},
		{"array longer than the input", mapOf("callees", msgpack.RawMessage{0xdd, 0xff, 0xff, 0xff, 0xff}), false},
		{"deep unknown value", mapOf("x", msgpack.RawMessage(bytes.Repeat([]byte{0x91}, 40)), "y", 1), false},
		{"push target", mapOf("device", "a", "push", map[string]string{"platform": "apns"}), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if fast := sameDecoding[Request](t, c.data, MaxRequestLen); fast != c.fast {
				t.Fatalf("fast decoder used: %v, want %v", fast, c.fast)
			}
		})
	}
	// A struct value nil, or as an array, inside an event and a reply.
	inv := Invitation{ID: "i", State: StateSent}
	for _, c := range []struct {
		name string
		data []byte
		fast bool
	}{
		{"event", enc(Event{Type: EventInvited, Invitation: inv}), true},
		{"event with a nil invitation", mapOf("type", "x", "invitation", nil), false},
		{"event with a leg nil", mapOf("invitation", map[string]any{"id": "i", "legs": []any{nil}}), false},
		{"event with empty legs", mapOf("invitation", map[string]any{"id": "i", "legs": []any{}}), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if fast := sameDecoding[Event](t, c.data, MaxEventLen); fast != c.fast {
				t.Fatalf("fast decoder used: %v, want %v", fast, c.fast)
			}
		})
	}
	for _, c := range []struct {
		name string
		data []byte
		fast bool
	}{
		{"reply with an invitation", enc(Reply{Invitation: &inv}), true},
		{"reply with a nil error and invitation", mapOf("error", nil, "invitation", nil, "cursor", "c"), true},
		{"reply with invitations, one nil", mapOf("invitations", []any{map[string]any{"id": "i"}, nil}), false},
		{"reply with a session", enc(Reply{Session: &Session{TTLMs: 1}}), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if fast := sameDecoding[Reply](t, c.data, MaxReplyLen); fast != c.fast {
				t.Fatalf("fast decoder used: %v, want %v", fast, c.fast)
			}
		})
	}
}
