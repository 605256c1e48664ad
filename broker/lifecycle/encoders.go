package lifecycle

import (
	"github.com/ringer-dev/ringer/protocol"
	"github.com/vmihailenco/msgpack/v5"
)

// Hand-written msgpack encoders for what the broker stores at every
// transition, writing exactly what reflection writes (see protocol's
// encoders; TestEncodersWriteWhatReflectionWrites holds them to it).

// EncodeMsgpack implements msgpack.CustomEncoder. Record must have its own:
// it would otherwise inherit the inlined Invitation's, and lose its fields.
func (r Record) EncodeMsgpack(enc *msgpack.Encoder) error {
	w := protocol.NewMapWriter(enc, r.Invitation.MsgpackFields()+1+protocol.Present(r.TimerAt != 0, r.Rearm,
		r.Quiet, r.Push, r.Blocked, len(r.Chain) != 0, len(r.Touched) != 0, r.CallDeadline != 0, len(r.PushTo) != 0))
	r.Invitation.WriteMsgpackFields(w)
	w.Entry("timeouts", r.Timeouts.EncodeMsgpack)
	w.OmitInt64("timerAt", r.TimerAt)
	w.OmitBool("rearm", r.Rearm)
	w.OmitBool("quiet", r.Quiet)
	w.OmitBool("push", r.Push)
	w.OmitBool("blocked", r.Blocked)
	protocol.OmitEach(w, "chain", r.Chain)
	w.OmitStrings("touched", r.Touched)
	w.OmitInt64("callDeadline", r.CallDeadline)
	w.OmitStrings("pushTo", r.PushTo)
	return w.Err()
}

// EncodeMsgpack implements msgpack.CustomEncoder.
func (t Timeouts) EncodeMsgpack(enc *msgpack.Encoder) error {
	w := protocol.NewMapWriter(enc, 3+protocol.Present(t.MaxDuration != 0))
	w.Int64("offline", int64(t.Offline))
	w.Int64("expire", int64(t.Expire))
	w.Int64("accept", int64(t.Accept))
	w.OmitInt64("maxDuration", int64(t.MaxDuration))
	return w.Err()
}

// EncodeMsgpack implements msgpack.CustomEncoder.
func (s Step) EncodeMsgpack(enc *msgpack.Encoder) error {
	w := protocol.NewMapWriter(enc, 2+protocol.Present(s.Rev != 0, s.CallState != "", s.Reason != "", s.Quiet))
	w.OmitUint("r", s.Rev)
	w.String("s", string(s.State))
	w.OmitString("c", string(s.CallState))
	w.OmitString("w", string(s.Reason))
	w.Int64("t", s.At)
	w.OmitBool("q", s.Quiet)
	return w.Err()
}
