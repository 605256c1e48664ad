package protocol

import "github.com/vmihailenco/msgpack/v5"

// Hand-written msgpack encoders for the messages of every call: a request,
// its reply, an event, and the invitation they carry. Reflection spent more
// than half of its encoding time deciding which omitempty fields to leave
// out (msgpack v5 builds a list of the present fields for every struct it
// encodes); these write the same bytes directly. "The same" is exact: field
// order, omitempty, nil versus empty, and 64-bit integers as nine bytes —
// TestEncodersWriteWhatReflectionWrites compares them with reflection's
// output for random values of every field, so a field added to one of these
// structs without its line here fails that test. Requests, replies and
// events are read back by the decoders of decoders.go.

// MapWriter writes the entries of a msgpack map whose length was written
// already, the way msgpack's reflection writes a struct's tagged fields,
// keeping the first error. For encoders of other packages' wire structs
// (lifecycle.Record inlines an Invitation).
type MapWriter struct {
	enc *msgpack.Encoder
	err error
}

// NewMapWriter starts a map of n entries on enc.
func NewMapWriter(enc *msgpack.Encoder, n int) *MapWriter {
	return &MapWriter{enc: enc, err: enc.EncodeMapLen(n)}
}

// Err is the first error of the writes.
func (w *MapWriter) Err() error { return w.err }

// Key writes the key k of an entry whose value the caller writes on the
// encoder next, if nothing failed so far; it reports whether to go on.
func (w *MapWriter) Key(k string) bool {
	if w.err == nil {
		w.err = w.enc.EncodeString(k)
	}
	return w.err == nil
}

// String writes k: v.
func (w *MapWriter) String(k, v string) {
	if w.Key(k) {
		w.err = w.enc.EncodeString(v)
	}
}

// Int64 writes k: v as reflection writes an int64 field (nine bytes).
func (w *MapWriter) Int64(k string, v int64) {
	if w.Key(k) {
		w.err = w.enc.EncodeInt64(v)
	}
}

// Int writes k: v as reflection writes an int field (in as few bytes as
// it fits).
func (w *MapWriter) Int(k string, v int) {
	if w.Key(k) {
		w.err = w.enc.EncodeInt(int64(v))
	}
}

// Uint writes k: v as reflection writes a uint64 field (nine bytes).
func (w *MapWriter) Uint(k string, v uint64) {
	if w.Key(k) {
		w.err = w.enc.EncodeUint64(v)
	}
}

// Bool writes k: v.
func (w *MapWriter) Bool(k string, v bool) {
	if w.Key(k) {
		w.err = w.enc.EncodeBool(v)
	}
}

// Strings writes k: v (nil as nil, as reflection does).
func (w *MapWriter) Strings(k string, v []string) {
	if !w.Key(k) {
		return
	}
	if v == nil {
		w.err = w.enc.EncodeNil()
		return
	}
	if w.err = w.enc.EncodeArrayLen(len(v)); w.err != nil {
		return
	}
	for _, s := range v {
		if w.err = w.enc.EncodeString(s); w.err != nil {
			return
		}
	}
}

// OmitString writes k: v unless v is empty (omitempty).
func (w *MapWriter) OmitString(k, v string) {
	if v != "" {
		w.String(k, v)
	}
}

// OmitInt64 writes k: v unless v is 0 (omitempty).
func (w *MapWriter) OmitInt64(k string, v int64) {
	if v != 0 {
		w.Int64(k, v)
	}
}

// OmitInt writes k: v unless v is 0 (omitempty).
func (w *MapWriter) OmitInt(k string, v int) {
	if v != 0 {
		w.Int(k, v)
	}
}

// OmitUint writes k: v unless v is 0 (omitempty).
func (w *MapWriter) OmitUint(k string, v uint64) {
	if v != 0 {
		w.Uint(k, v)
	}
}

// OmitBool writes k: true unless v is false (omitempty).
func (w *MapWriter) OmitBool(k string, v bool) {
	if v {
		w.Bool(k, v)
	}
}

// OmitStrings writes k: v unless v is empty (omitempty).
func (w *MapWriter) OmitStrings(k string, v []string) {
	if len(v) != 0 {
		w.Strings(k, v)
	}
}

// Each writes an array of n elements, each by put(i).
func (w *MapWriter) Each(n int, put func(i int) error) {
	if w.err != nil {
		return
	}
	if w.err = w.enc.EncodeArrayLen(n); w.err != nil {
		return
	}
	for i := 0; i < n; i++ {
		if w.err = put(i); w.err != nil {
			return
		}
	}
}

// OmitEach writes k: vs, each element by its own encoder, unless vs is
// empty (omitempty).
func OmitEach[T msgpack.CustomEncoder](w *MapWriter, k string, vs []T) {
	if len(vs) != 0 && w.Key(k) {
		w.Each(len(vs), func(i int) error { return vs[i].EncodeMsgpack(w.enc) })
	}
}

// Entry writes the key k and then, with put, its value.
func (w *MapWriter) Entry(k string, put func(*msgpack.Encoder) error) {
	if w.Key(k) {
		w.err = put(w.enc)
	}
}

// Value writes k: v by reflection (for fields off the hot path) or by v's
// own encoder.
func (w *MapWriter) Value(k string, v any) {
	if w.Key(k) {
		w.err = w.enc.Encode(v)
	}
}

// Present counts the conditions that hold: the omitempty fields a map will
// carry.
func Present(conds ...bool) int {
	n := 0
	for _, c := range conds {
		if c {
			n++
		}
	}
	return n
}

// MsgpackFields is how many map entries inv's fields make (for a struct
// that inlines an Invitation).
func (inv *Invitation) MsgpackFields() int {
	return 7 + Present(inv.CalleeDevice != "", inv.Content != "", inv.ChannelID != "", inv.Response != "",
		inv.Reason != "", inv.CallState != "", inv.EndedBy != "", inv.ReceivedAt != 0, inv.AnsweredAt != 0,
		inv.EndedAt != 0, inv.Deadline != 0, inv.MergedInto != "", inv.Mode != "", len(inv.Legs) != 0,
		inv.CallerLeftAt != 0)
}

// WriteMsgpackFields writes inv's fields into a map of a struct that
// inlines an Invitation.
func (inv *Invitation) WriteMsgpackFields(w *MapWriter) {
	w.String("id", inv.ID)
	w.String("caller", inv.Caller)
	w.String("callerDevice", inv.CallerDevice)
	w.String("callee", inv.Callee)
	w.OmitString("calleeDevice", inv.CalleeDevice)
	w.OmitString("content", inv.Content)
	w.OmitString("channelId", inv.ChannelID)
	w.OmitString("response", inv.Response)
	w.String("state", string(inv.State))
	w.OmitString("reason", string(inv.Reason))
	w.OmitString("callState", string(inv.CallState))
	w.OmitString("endedBy", inv.EndedBy)
	w.Uint("revision", inv.Revision)
	w.Int64("createdAt", inv.CreatedAt)
	w.OmitInt64("receivedAt", inv.ReceivedAt)
	w.OmitInt64("answeredAt", inv.AnsweredAt)
	w.OmitInt64("endedAt", inv.EndedAt)
	w.OmitInt64("deadline", inv.Deadline)
	w.OmitString("mergedInto", inv.MergedInto)
	w.OmitString("mode", string(inv.Mode))
	OmitEach(w, "legs", inv.Legs)
	w.OmitInt64("callerLeftAt", inv.CallerLeftAt)
}

// EncodeMsgpack implements msgpack.CustomEncoder. (A value receiver: a
// pointer one would fail on values msgpack cannot address.)
func (inv Invitation) EncodeMsgpack(enc *msgpack.Encoder) error {
	w := NewMapWriter(enc, inv.MsgpackFields())
	inv.WriteMsgpackFields(w)
	return w.Err()
}

// EncodeMsgpack implements msgpack.CustomEncoder.
func (l Leg) EncodeMsgpack(enc *msgpack.Encoder) error {
	w := NewMapWriter(enc, 3+Present(l.Device != "", l.Reason != "", l.Response != "", l.InvitedBy != "",
		l.ReceivedAt != 0, l.AnsweredAt != 0, l.EndedAt != 0, l.Deadline != 0))
	w.String("user", l.User)
	w.OmitString("device", l.Device)
	w.String("state", string(l.State))
	w.OmitString("reason", string(l.Reason))
	w.OmitString("response", l.Response)
	w.OmitString("invitedBy", l.InvitedBy)
	w.Int64("createdAt", l.CreatedAt)
	w.OmitInt64("receivedAt", l.ReceivedAt)
	w.OmitInt64("answeredAt", l.AnsweredAt)
	w.OmitInt64("endedAt", l.EndedAt)
	w.OmitInt64("deadline", l.Deadline)
	return w.Err()
}

// EncodeMsgpack implements msgpack.CustomEncoder.
func (e Event) EncodeMsgpack(enc *msgpack.Encoder) error {
	w := NewMapWriter(enc, 3)
	w.String("type", string(e.Type))
	w.String("role", string(e.Role))
	w.Entry("invitation", e.Invitation.EncodeMsgpack)
	return w.Err()
}

// EncodeMsgpack implements msgpack.CustomEncoder.
func (r Request) EncodeMsgpack(enc *msgpack.Encoder) error {
	w := NewMapWriter(enc, 1+Present(r.ID != "", r.Callee != "", r.Content != "", r.ChannelID != "",
		r.Response != "", r.Busy, r.Timeouts != nil, r.Deadline != 0, r.Limit != 0, r.Cursor != "", r.Missed,
		r.Push != nil, r.Peer != "", len(r.Callees) != 0, r.Mode != "", r.Seen != 0, r.SessionRev != 0))
	w.String("device", r.Device)
	w.OmitString("id", r.ID)
	w.OmitString("callee", r.Callee)
	w.OmitString("content", r.Content)
	w.OmitString("channelId", r.ChannelID)
	w.OmitString("response", r.Response)
	w.OmitBool("busy", r.Busy)
	if r.Timeouts != nil {
		w.Value("timeouts", r.Timeouts)
	}
	w.OmitInt64("deadline", r.Deadline)
	w.OmitInt("limit", r.Limit)
	w.OmitString("cursor", r.Cursor)
	w.OmitBool("missed", r.Missed)
	if r.Push != nil {
		w.Value("push", r.Push)
	}
	w.OmitString("peer", r.Peer)
	w.OmitStrings("callees", r.Callees)
	w.OmitString("mode", string(r.Mode))
	w.OmitUint("seen", r.Seen)
	w.OmitUint("sessionRev", r.SessionRev)
	return w.Err()
}

// EncodeMsgpack implements msgpack.CustomEncoder.
func (t Timeouts) EncodeMsgpack(enc *msgpack.Encoder) error {
	w := NewMapWriter(enc, Present(t.OfflineMs != 0, t.ExpireMs != 0, t.AcceptMs != 0))
	w.OmitInt64("offlineMs", t.OfflineMs)
	w.OmitInt64("expireMs", t.ExpireMs)
	w.OmitInt64("acceptMs", t.AcceptMs)
	return w.Err()
}

// EncodeMsgpack implements msgpack.CustomEncoder.
func (r Reply) EncodeMsgpack(enc *msgpack.Encoder) error {
	w := NewMapWriter(enc, Present(r.Error != nil, r.Invitation != nil, len(r.Invitations) != 0, r.Session != nil,
		len(r.Calls) != 0, r.Cursor != "", r.Push != nil, len(r.Blocked) != 0))
	if r.Error != nil {
		w.Value("error", r.Error)
	}
	if r.Invitation != nil {
		w.Entry("invitation", r.Invitation.EncodeMsgpack)
	}
	OmitEach(w, "invitations", r.Invitations)
	if r.Session != nil {
		w.Value("session", r.Session)
	}
	if len(r.Calls) != 0 {
		w.Value("calls", r.Calls)
	}
	w.OmitString("cursor", r.Cursor)
	if r.Push != nil {
		w.Value("push", r.Push)
	}
	w.OmitStrings("blocked", r.Blocked)
	return w.Err()
}

// EncodeMsgpack implements msgpack.CustomEncoder.
func (c CallRecord) EncodeMsgpack(enc *msgpack.Encoder) error {
	w := NewMapWriter(enc, 7+Present(c.Reason != "", c.Missed, c.ChannelID != "", c.EndedBy != "",
		c.AnsweredAt != 0, c.Mode != "", len(c.Peers) != 0, c.DurationMs != 0))
	w.String("id", c.ID)
	w.String("direction", string(c.Direction))
	w.String("peer", c.Peer)
	w.String("state", string(c.State))
	w.OmitString("reason", string(c.Reason))
	w.OmitBool("missed", c.Missed)
	w.OmitString("channelId", c.ChannelID)
	w.OmitString("endedBy", c.EndedBy)
	w.Int64("createdAt", c.CreatedAt)
	w.OmitInt64("answeredAt", c.AnsweredAt)
	w.Int64("endedAt", c.EndedAt)
	w.OmitString("mode", string(c.Mode))
	w.OmitStrings("peers", c.Peers)
	w.OmitInt64("durationMs", c.DurationMs)
	w.String("cursor", c.Cursor)
	return w.Err()
}
