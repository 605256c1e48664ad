package store

import (
	"github.com/ringer-dev/ringer/protocol"
	"github.com/vmihailenco/msgpack/v5"
)

// Hand-written msgpack encoders for the line records a send and an end
// write, exactly what reflection writes (protocol's encoders say why;
// TestEncodersWriteWhatReflectionWrites holds them to it).

// EncodeMsgpack implements msgpack.CustomEncoder.
func (l Line) EncodeMsgpack(enc *msgpack.Encoder) error {
	w := protocol.NewMapWriter(enc, protocol.Present(len(l.Claims) != 0, l.Manual, l.Push, len(l.Blocked) != 0))
	protocol.OmitEach(w, "claims", l.Claims)
	w.OmitBool("manual", l.Manual)
	w.OmitBool("push", l.Push)
	w.OmitStrings("blocked", l.Blocked)
	return w.Err()
}

// EncodeMsgpack implements msgpack.CustomEncoder.
func (c Claim) EncodeMsgpack(enc *msgpack.Encoder) error {
	w := protocol.NewMapWriter(enc, 2+protocol.Present(c.Peer != "", c.Out))
	w.String("id", c.ID)
	w.Int64("at", c.At)
	w.OmitString("peer", c.Peer)
	w.OmitBool("out", c.Out)
	return w.Err()
}
