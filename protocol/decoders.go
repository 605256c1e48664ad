package protocol

import "math"

// Hand-written msgpack decoders for the messages of every call: a request,
// its reply and an event (with the invitation they carry). Reflection read
// each message twice — once to bound its lengths (decode's Skip), once to
// fill the struct, looking every key up by name — about 5 % of the CPU of
// a loaded broker and its clients.
//
// These read only the shape the encoders write: maps with string keys, each
// key at most once, every value of its field's msgpack type (or nil, which
// reflection reads as the zero value), unknown keys skipped. Anything else —
// a struct sent as an array, a key twice, a value reflection would coerce
// or refuse, a field read here by reflection only (a reply's session, calls
// or push target), trailing bytes — makes them give up, and the message is
// decoded by reflection exactly as before. So a message decoded here is one
// reflection decodes to the same value, and every error is reflection's
// (TestFastDecodersAgreeWithReflection, and the decoders' fuzz targets,
// which compare the two on arbitrary input). Lengths are checked against
// what is left of the input before anything is allocated.

// fastDecode decodes data into v (a *Request, *Reply or *Event) and reports
// whether it did; false leaves *v zero, for reflection.
func fastDecode(data []byte, v any) bool {
	r := fastReader{b: data}
	switch v := v.(type) {
	case *Request:
		r.request(v)
		if !r.done() {
			*v = Request{}
			return false
		}
	case *Reply:
		r.reply(v)
		if !r.done() {
			*v = Reply{}
			return false
		}
	case *Event:
		r.event(v)
		if !r.done() {
			*v = Event{}
			return false
		}
	default:
		return false
	}
	return true
}

// fastReader reads msgpack values from b; the first thing it does not
// handle sets bad, after which it reads nothing more.
type fastReader struct {
	b   []byte
	i   int
	bad bool
}

// done reports whether the whole input was read and nothing gave up.
func (r *fastReader) done() bool { return !r.bad && r.i == len(r.b) }

func (r *fastReader) fail() {
	r.bad = true
	r.i = len(r.b)
}

func (r *fastReader) code() byte {
	if r.i >= len(r.b) {
		r.fail()
		return 0
	}
	c := r.b[r.i]
	r.i++
	return c
}

// nilNext reports whether the next value is nil, and then reads it.
func (r *fastReader) nilNext() bool {
	if r.i < len(r.b) && r.b[r.i] == 0xc0 {
		r.i++
		return true
	}
	return false
}

func (r *fastReader) next(n int) []byte {
	if n < 0 || n > len(r.b)-r.i {
		r.fail()
		return nil
	}
	s := r.b[r.i : r.i+n]
	r.i += n
	return s
}

// big reads an n-byte big-endian unsigned integer.
func (r *fastReader) big(n int) uint64 {
	var v uint64
	for _, x := range r.next(n) {
		v = v<<8 | uint64(x)
	}
	return v
}

// mapLen reads a map's header (not nil: reflection reads a nil struct as
// zero, which the callers leave to it).
func (r *fastReader) mapLen() int {
	switch c := r.code(); {
	case c >= 0x80 && c <= 0x8f:
		return int(c & 0x0f)
	case c == 0xde:
		return int(r.big(2))
	case c == 0xdf:
		return int(r.big(4))
	}
	r.fail()
	return 0
}

// arrayLen reads an array's header, -1 for nil. A length longer than the
// input left (every element takes a byte at least) gives up.
func (r *fastReader) arrayLen() int {
	n := -1
	switch c := r.code(); {
	case c == 0xc0:
		return -1
	case c >= 0x90 && c <= 0x9f:
		n = int(c & 0x0f)
	case c == 0xdc:
		n = int(r.big(2))
	case c == 0xdd:
		n = int(r.big(4))
	}
	if n < 0 || n > len(r.b)-r.i {
		r.fail()
		return 0
	}
	return n
}

// bytes reads a string or binary value (nil: none), as msgpack's
// DecodeString accepts them.
func (r *fastReader) bytes() []byte {
	switch c := r.code(); {
	case c >= 0xa0 && c <= 0xbf:
		return r.next(int(c & 0x1f))
	case c == 0xd9 || c == 0xc4:
		return r.next(int(r.big(1)))
	case c == 0xda || c == 0xc5:
		return r.next(int(r.big(2)))
	case c == 0xdb || c == 0xc6:
		return r.next(int(r.big(4)))
	case c == 0xc0:
		return nil
	}
	r.fail()
	return nil
}

func (r *fastReader) str() string { return string(r.bytes()) }

// word reads a string that is usually one of the protocol's fixed words (a
// state, reason, event type, role, mode or error code), returning the
// word's own string instead of a copy: most of a message's strings are
// these, and each copy was an allocation.
func (r *fastReader) word() string {
	b := r.bytes()
	if w, ok := vocabulary[string(b)]; ok { // a map lookup by string(b) does not allocate
		return w
	}
	return string(b)
}

// vocabulary maps each fixed word of the protocol to itself
// (TestVocabularyHasEveryWord checks that none is missing).
var vocabulary = func() map[string]string {
	words := []string{
		string(CallActive), string(CallEnded),
		string(ReasonBusy), string(ReasonPeerOffline), string(ReasonPeerNoResponse), string(ReasonInvitationExpire),
		string(ReasonAcceptFailure), string(ReasonHangup), string(ReasonMaxDuration), string(ReasonAnsweredElsewhere),
		string(ReasonCallEnded), string(ReasonLeft), string(ReasonMerged),
		string(EventInvited), string(EventReceivedByPeer), string(EventAccepting), string(EventAccepted),
		string(EventRefused), string(EventCanceled), string(EventFailure), string(EventCallEnded), string(EventGroupUpdated),
		string(RoleCaller), string(RoleCallee),
		string(ModeFirst), string(ModeJoin),
	}
	for _, st := range States {
		words = append(words, string(st))
	}
	for _, c := range Codes {
		words = append(words, string(c))
	}
	m := make(map[string]string, len(words))
	for _, w := range words {
		m[w] = w
	}
	return m
}()

// int64 reads any msgpack integer as msgpack's DecodeInt64 does (nil: 0).
func (r *fastReader) int64() int64 {
	switch c := r.code(); {
	case c <= 0x7f || c >= 0xe0:
		return int64(int8(c))
	case c == 0xc0:
		return 0
	case c == 0xcc:
		return int64(r.big(1))
	case c == 0xd0:
		return int64(int8(r.big(1)))
	case c == 0xcd:
		return int64(r.big(2))
	case c == 0xd1:
		return int64(int16(r.big(2)))
	case c == 0xce:
		return int64(r.big(4))
	case c == 0xd2:
		return int64(int32(r.big(4)))
	case c == 0xcf || c == 0xd3:
		return int64(r.big(8))
	}
	r.fail()
	return 0
}

// uint64 reads any msgpack integer as msgpack's DecodeUint64 does: signed
// ones sign-extended (nil: 0).
func (r *fastReader) uint64() uint64 {
	switch c := r.code(); {
	case c <= 0x7f || c >= 0xe0:
		return uint64(int8(c))
	case c == 0xc0:
		return 0
	case c == 0xcc:
		return r.big(1)
	case c == 0xd0:
		return uint64(int8(r.big(1)))
	case c == 0xcd:
		return r.big(2)
	case c == 0xd1:
		return uint64(int16(r.big(2)))
	case c == 0xce:
		return r.big(4)
	case c == 0xd2:
		return uint64(int32(r.big(4)))
	case c == 0xcf || c == 0xd3:
		return r.big(8)
	}
	r.fail()
	return 0
}

// int reads an int field (reflection sets it from DecodeInt64).
func (r *fastReader) int() int {
	n := r.int64()
	if n > math.MaxInt || n < math.MinInt {
		r.fail()
	}
	return int(n)
}

func (r *fastReader) bool() bool {
	switch r.code() {
	case 0xc3:
		return true
	case 0xc2, 0xc0:
		return false
	}
	r.fail()
	return false
}

// strings reads a []string field: nil leaves it nil, an empty array makes
// it empty, as reflection does.
func (r *fastReader) strings() []string {
	n := r.arrayLen()
	if n < 0 || r.bad {
		return nil
	}
	s := make([]string, n)
	for i := range s {
		s[i] = r.str()
	}
	return s
}

// skip reads a value of a key no field has, of the kinds the encoders of
// newer versions would write; anything else (an extension, nesting deeper
// than 32) gives up.
func (r *fastReader) skip(depth int) {
	if depth > 32 {
		r.fail()
		return
	}
	c := r.code()
	switch {
	case c <= 0x7f || c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
	case c >= 0xa0 && c <= 0xbf:
		r.next(int(c & 0x1f))
	case c == 0xd9 || c == 0xc4:
		r.next(int(r.big(1)))
	case c == 0xda || c == 0xc5:
		r.next(int(r.big(2)))
	case c == 0xdb || c == 0xc6:
		r.next(int(r.big(4)))
	case c == 0xcc || c == 0xd0:
		r.next(1)
	case c == 0xcd || c == 0xd1:
		r.next(2)
	case c == 0xce || c == 0xd2 || c == 0xca:
		r.next(4)
	case c == 0xcf || c == 0xd3 || c == 0xcb:
		r.next(8)
	case c >= 0x90 && c <= 0x9f, c == 0xdc, c == 0xdd:
		r.i--
		for n := r.arrayLen(); n > 0 && !r.bad; n-- {
			r.skip(depth + 1)
		}
	case c >= 0x80 && c <= 0x8f, c == 0xde, c == 0xdf:
		r.i--
		for n := 2 * r.mapLen(); n > 0 && !r.bad; n-- {
			r.skip(depth + 1)
		}
	default:
		r.fail()
	}
}

// fields reads a map's entries, calling field for each key with the bit
// that key has among the struct's fields (0: unknown, skipped); a key seen
// twice gives up (reflection would decode the second into what the first
// left, a merge these do not copy).
func (r *fastReader) fields(field func(key []byte) uint64) {
	var seen uint64
	for n := r.mapLen(); n > 0 && !r.bad; n-- {
		bit := field(r.bytes())
		if bit == 0 {
			r.skip(0)
			continue
		}
		if seen&bit != 0 {
			r.fail()
		}
		seen |= bit
	}
}

func (r *fastReader) event(e *Event) {
	r.fields(func(key []byte) uint64 {
		switch string(key) {
		case "type":
			e.Type = EventType(r.word())
			return 1 << 0
		case "role":
			e.Role = Role(r.word())
			return 1 << 1
		case "invitation":
			r.invitation(&e.Invitation)
			return 1 << 2
		}
		return 0
	})
}

func (r *fastReader) invitation(inv *Invitation) {
	r.fields(func(key []byte) uint64 {
		switch string(key) {
		case "id":
			inv.ID = r.str()
			return 1 << 0
		case "caller":
			inv.Caller = r.str()
			return 1 << 1
		case "callerDevice":
			inv.CallerDevice = r.str()
			return 1 << 2
		case "callee":
			inv.Callee = r.str()
			return 1 << 3
		case "calleeDevice":
			inv.CalleeDevice = r.str()
			return 1 << 4
		case "content":
			inv.Content = r.str()
			return 1 << 5
		case "channelId":
			inv.ChannelID = r.str()
			return 1 << 6
		case "response":
			inv.Response = r.str()
			return 1 << 7
		case "state":
			inv.State = State(r.word())
			return 1 << 8
		case "reason":
			inv.Reason = Reason(r.word())
			return 1 << 9
		case "callState":
			inv.CallState = CallState(r.word())
			return 1 << 10
		case "endedBy":
			inv.EndedBy = r.str()
			return 1 << 11
		case "revision":
			inv.Revision = r.uint64()
			return 1 << 12
		case "createdAt":
			inv.CreatedAt = r.int64()
			return 1 << 13
		case "receivedAt":
			inv.ReceivedAt = r.int64()
			return 1 << 14
		case "answeredAt":
			inv.AnsweredAt = r.int64()
			return 1 << 15
		case "endedAt":
			inv.EndedAt = r.int64()
			return 1 << 16
		case "deadline":
			inv.Deadline = r.int64()
			return 1 << 17
		case "mergedInto":
			inv.MergedInto = r.str()
			return 1 << 18
		case "mode":
			inv.Mode = Mode(r.word())
			return 1 << 19
		case "legs":
			if n := r.arrayLen(); n >= 0 && !r.bad {
				inv.Legs = make([]Leg, n)
				for i := range inv.Legs {
					r.leg(&inv.Legs[i])
				}
			}
			return 1 << 20
		case "callerLeftAt":
			inv.CallerLeftAt = r.int64()
			return 1 << 21
		}
		return 0
	})
}

func (r *fastReader) leg(l *Leg) {
	r.fields(func(key []byte) uint64 {
		switch string(key) {
		case "user":
			l.User = r.str()
			return 1 << 0
		case "device":
			l.Device = r.str()
			return 1 << 1
		case "state":
			l.State = State(r.word())
			return 1 << 2
		case "reason":
			l.Reason = Reason(r.word())
			return 1 << 3
		case "response":
			l.Response = r.str()
			return 1 << 4
		case "invitedBy":
			l.InvitedBy = r.str()
			return 1 << 5
		case "createdAt":
			l.CreatedAt = r.int64()
			return 1 << 6
		case "receivedAt":
			l.ReceivedAt = r.int64()
			return 1 << 7
		case "answeredAt":
			l.AnsweredAt = r.int64()
			return 1 << 8
		case "endedAt":
			l.EndedAt = r.int64()
			return 1 << 9
		case "deadline":
			l.Deadline = r.int64()
			return 1 << 10
		}
		return 0
	})
}

func (r *fastReader) request(q *Request) {
	r.fields(func(key []byte) uint64 {
		switch string(key) {
		case "device":
			q.Device = r.str()
			return 1 << 0
		case "id":
			q.ID = r.str()
			return 1 << 1
		case "callee":
			q.Callee = r.str()
			return 1 << 2
		case "content":
			q.Content = r.str()
			return 1 << 3
		case "channelId":
			q.ChannelID = r.str()
			return 1 << 4
		case "response":
			q.Response = r.str()
			return 1 << 5
		case "busy":
			q.Busy = r.bool()
			return 1 << 6
		case "timeouts":
			if !r.nilNext() {
				q.Timeouts = new(Timeouts)
				r.timeouts(q.Timeouts)
			}
			return 1 << 7
		case "deadline":
			q.Deadline = r.int64()
			return 1 << 8
		case "limit":
			q.Limit = r.int()
			return 1 << 9
		case "cursor":
			q.Cursor = r.str()
			return 1 << 10
		case "missed":
			q.Missed = r.bool()
			return 1 << 11
		case "push": // rare: reflection's
			r.fail()
		case "peer":
			q.Peer = r.str()
			return 1 << 12
		case "callees":
			q.Callees = r.strings()
			return 1 << 13
		case "mode":
			q.Mode = Mode(r.word())
			return 1 << 14
		case "seen":
			q.Seen = r.uint64()
			return 1 << 15
		case "sessionRev":
			q.SessionRev = r.uint64()
			return 1 << 16
		}
		return 0
	})
}

func (r *fastReader) timeouts(t *Timeouts) {
	r.fields(func(key []byte) uint64 {
		switch string(key) {
		case "offlineMs":
			t.OfflineMs = r.int64()
			return 1 << 0
		case "expireMs":
			t.ExpireMs = r.int64()
			return 1 << 1
		case "acceptMs":
			t.AcceptMs = r.int64()
			return 1 << 2
		}
		return 0
	})
}

func (r *fastReader) reply(p *Reply) {
	r.fields(func(key []byte) uint64 {
		switch string(key) {
		case "error":
			if !r.nilNext() {
				p.Error = new(Error)
				r.replyError(p.Error)
			}
			return 1 << 0
		case "invitation":
			if !r.nilNext() {
				p.Invitation = new(Invitation)
				r.invitation(p.Invitation)
			}
			return 1 << 1
		case "invitations":
			if n := r.arrayLen(); n >= 0 && !r.bad {
				p.Invitations = make([]Invitation, n)
				for i := range p.Invitations {
					r.invitation(&p.Invitations[i])
				}
			}
			return 1 << 2
		case "session", "calls", "push": // rare: reflection's
			r.fail()
		case "cursor":
			p.Cursor = r.str()
			return 1 << 3
		case "blocked":
			p.Blocked = r.strings()
			return 1 << 4
		}
		return 0
	})
}

func (r *fastReader) replyError(e *Error) {
	r.fields(func(key []byte) uint64 {
		switch string(key) {
		case "code":
			e.Code = Code(r.word())
			return 1 << 0
		case "message":
			e.Message = r.str()
			return 1 << 1
		case "state":
			e.State = State(r.word())
			return 1 << 2
		}
		return 0
	})
}
