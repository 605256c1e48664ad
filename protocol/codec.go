package protocol

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// Encoding goes through pooled buffers: the broker encodes a reply, an event
// or a record for every message it sends, and a fresh buffer each time was
// the largest single source of garbage in a call (docs/benchmarks.md).
const (
	bufferSize    = 512      // an invitation, event or reply fits without growing
	maxPooledSize = 64 << 10 // larger buffers (near-limit content) are left to the GC
)

var buffers = sync.Pool{New: func() any { return bytes.NewBuffer(make([]byte, 0, bufferSize)) }}

// Encode encodes v as msgpack and passes the bytes to use, which must not
// keep them: they are valid only until use returns. It suits a publish,
// which copies what it sends; Marshal is for bytes that are kept.
func Encode(v any, use func([]byte) error) error {
	buf := buffers.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= maxPooledSize {
			buf.Reset()
			buffers.Put(buf)
		}
	}()
	enc := msgpack.GetEncoder()
	enc.Reset(buf)
	err := enc.Encode(v)
	msgpack.PutEncoder(enc)
	if err != nil {
		return err
	}
	return use(buf.Bytes())
}

// Marshal encodes v as msgpack into a slice of its own.
func Marshal(v any) ([]byte, error) {
	var out []byte
	err := Encode(v, func(b []byte) error {
		out = bytes.Clone(b)
		return nil
	})
	return out, err
}

// decode is strict about shape (a value of the wrong type is an error) but
// tolerant of unknown fields, so newer clients can talk to older brokers.
func decode(data []byte, v any, what string, limit int) error {
	if len(data) > limit {
		return Errorf(CodeInvalidArgument, "%s: %d bytes, at most %d", what, len(data), limit)
	}
	if fastDecode(data, v) {
		return nil
	}
	return decodeReflect(data, v, what)
}

// decodeReflect is decode by msgpack's reflection, for what fastDecode
// does not read.
func decodeReflect(data []byte, v any, what string) error {
	// Walk the value once before decoding it. msgpack v5.4.1 sizes a slice
	// from the array header it reads, unbounded (and a map up to 1e6
	// entries), so nine bytes claiming a 1.5e9-element array would make
	// the decoder allocate gigabytes. Skip allocates nothing and fails
	// unless every element an array or map header announces is present,
	// which bounds every length by len(data) <= limit.
	//
	// The decoder is not taken from msgpack's pool (GetDecoder): Reset does
	// not restore all of a decoder's internal state, and with pooled
	// decoders FuzzDecodeReply's workers grew to several GB on arbitrary
	// input (115 MB with a new decoder per message).
	r := bytes.NewReader(data)
	dec := msgpack.NewDecoder(r)
	if err := dec.Skip(); err != nil {
		return Errorf(CodeInvalidArgument, "%s: malformed msgpack: %v", what, err)
	}
	r.Reset(data)
	dec.Reset(r)
	if err := dec.Decode(v); err != nil {
		return Errorf(CodeInvalidArgument, "%s: malformed msgpack: %v", what, err)
	}
	if r.Len() != 0 {
		return Errorf(CodeInvalidArgument, "%s: trailing bytes after msgpack value", what)
	}
	return nil
}

// Unmarshal decodes data (at most limit bytes) into v as the decoders of
// this package do: every length bounded by the input, no trailing bytes; a
// failure is a CodeInvalidArgument error naming what. For the brokers' own
// msgpack messages that arbitrary input can reach.
func Unmarshal(data []byte, v any, what string, limit int) error {
	return decode(data, v, what, limit)
}

// DecodeRequest decodes a command body. An empty body is an empty Request.
// Errors are *Error with code INVALID_ARGUMENT.
func DecodeRequest(data []byte) (*Request, error) {
	var r Request
	if len(data) == 0 {
		return &r, nil
	}
	if err := decode(data, &r, "request", MaxRequestLen); err != nil {
		return nil, err
	}
	return &r, nil
}

// DecodeReply decodes a command reply.
func DecodeReply(data []byte) (*Reply, error) {
	var r Reply
	if err := decode(data, &r, "reply", MaxReplyLen); err != nil {
		return nil, err
	}
	if r.Error != nil && r.Error.Code == "" {
		return nil, Errorf(CodeInvalidArgument, "reply: error without code")
	}
	return &r, nil
}

// DecodeEvent decodes an event.
func DecodeEvent(data []byte) (*Event, error) {
	var e Event
	if err := decode(data, &e, "event", MaxEventLen); err != nil {
		return nil, err
	}
	if e.Type == "" || e.Invitation.ID == "" {
		return nil, Errorf(CodeInvalidArgument, "event: missing type or invitation id")
	}
	if !e.Invitation.State.Valid() {
		return nil, Errorf(CodeInvalidArgument, "event: unknown state %q", e.Invitation.State)
	}
	return &e, nil
}

// MaxPushRequestLen bounds a push request: one invitation view and up to
// 100 push targets.
const MaxPushRequestLen = MaxEventLen + 100*(MaxPushTokenLen+MaxPushAppLen+256)

// DecodePushRequest decodes a push request (what a gateway consumes).
func DecodePushRequest(data []byte) (*PushRequest, error) {
	var r PushRequest
	if err := decode(data, &r, "push request", MaxPushRequestLen); err != nil {
		return nil, err
	}
	if r.ID == "" || r.User == "" || r.Invitation.ID == "" || (r.Kind != PushRing && r.Kind != PushStop) {
		return nil, Errorf(CodeInvalidArgument, "push request: missing id, user or invitation, or unknown kind %q", r.Kind)
	}
	return &r, nil
}

// MustEncode is Encode for values that cannot fail to encode (the package's
// own structs); it panics only on a programming error, and returns what use
// returned.
func MustEncode(v any, use func([]byte) error) error {
	var useErr error
	if err := Encode(v, func(b []byte) error { useErr = use(b); return nil }); err != nil {
		panic(fmt.Sprintf("protocol: encode %T: %v", v, err))
	}
	return useErr
}

// MustMarshal is Marshal for values that cannot fail to encode.
func MustMarshal(v any) []byte {
	b, err := Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("protocol: marshal %T: %v", v, err))
	}
	return b
}
