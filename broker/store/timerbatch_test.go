package store

import (
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// A fired batch's body decodes back to what was armed; anything else is
// an error, never a panic, and never an entry with an invalid id.
func FuzzDecodeTimerBatch(f *testing.F) {
	good, err := msgpack.Marshal([]TimerEntry{{ID: "abc", At: 1}, {ID: "d-e_F", At: 1 << 40}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x91, 0x82, 0xa1, 'i', 0xa3, 'a', '.', 'b', 0xa1, 'a', 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		es, err := DecodeTimerBatch(data)
		if err != nil {
			return
		}
		again, err := msgpack.Marshal(es)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := DecodeTimerBatch(again); err != nil || len(back) != len(es) {
			t.Fatalf("%v: re-encoded batch decodes to %v, %v", es, back, err)
		}
	})
}
