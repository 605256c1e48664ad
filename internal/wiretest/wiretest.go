// Package wiretest holds hand-written msgpack encoders to what msgpack's
// reflection writes for the same struct, byte for byte, over random values
// (and gives those values to the decoders' tests).
package wiretest

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// SameAsReflection encodes n random values of the struct T by T's own
// encoder, and the same values by reflection, and fails t at the first value
// whose bytes differ. The reflection side encodes a copy of each value as a
// struct built at run time with T's fields and tags and none of its methods
// (an embedded struct with methods, such as an inlined one, is rebuilt the
// same way); a field whose type has an encoder of its own is encoded by it
// on both sides, so check that type on its own. About a third of the fields
// of each value are zero, so omitempty is exercised both ways, and every
// field is set in most values, so a field the encoder forgets is found.
func SameAsReflection[T any](t *testing.T, n int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	typ := reflect.TypeFor[T]()
	plainType := plain(typ)
	for i := 0; i < n; i++ {
		v := reflect.New(typ).Elem()
		fill(rng, v, 0)
		own, err := msgpack.Marshal(v.Addr().Interface())
		if err != nil {
			t.Fatalf("value %d: own encoder: %v (%+v)", i, err, v.Interface())
		}
		p := reflect.New(plainType).Elem()
		copyFields(p, v)
		want, err := msgpack.Marshal(p.Interface())
		if err != nil {
			t.Fatalf("value %d: reflection: %v (%+v)", i, err, v.Interface())
		}
		if !bytes.Equal(own, want) {
			t.Fatalf("value %d: %s's encoder wrote\n%x\nreflection writes\n%x\nfor %+v", i, typ, own, want, v.Interface())
		}
		byValue, err := msgpack.Marshal(v.Interface()) // not addressable: the encoder must not need a pointer
		if err != nil || !bytes.Equal(byValue, own) {
			t.Fatalf("value %d: encoding %s by value: %v, %x", i, typ, err, byValue)
		}
	}
}

// Values returns n random values of T, filled as SameAsReflection fills
// them (seeded: the same n values every time).
func Values[T any](n int) []T {
	rng := rand.New(rand.NewPCG(2, uint64(n)))
	vs := make([]T, n)
	for i := range vs {
		fill(rng, reflect.ValueOf(&vs[i]).Elem(), 0)
	}
	return vs
}

// plain is the struct typ with its fields and tags and no methods.
func plain(typ reflect.Type) reflect.Type {
	fields := make([]reflect.StructField, 0, typ.NumField())
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			f.Type = plain(f.Type)
		}
		fields = append(fields, reflect.StructField{Name: f.Name, Type: f.Type, Tag: f.Tag, Anonymous: f.Anonymous})
	}
	return reflect.StructOf(fields)
}

// copyFields copies src's exported fields into dst, of type plain(src's).
func copyFields(dst, src reflect.Value) {
	for i := 0; i < src.NumField(); i++ {
		f := src.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		d := dst.FieldByName(f.Name)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			copyFields(d, src.Field(i))
			continue
		}
		d.Set(src.Field(i))
	}
}

// fill sets v, settable, to a random value: zero a third of the time.
func fill(rng *rand.Rand, v reflect.Value, depth int) {
	if rng.IntN(3) == 0 || depth > 4 {
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(randomString(rng))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		x := rng.Int64() >> rng.IntN(64)
		if rng.IntN(2) == 0 {
			x = -x
		}
		if x == 0 {
			x = 1
		}
		v.SetInt(x)
		if v.Int() == 0 { // truncated to zero by a narrower kind
			v.SetInt(1)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(rng.Uint64()>>rng.IntN(64) | 1)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(rng.Float64() + 0.5)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(rng, p.Elem(), depth+1)
		v.Set(p)
	case reflect.Slice:
		n := rng.IntN(4) // 0: empty but not nil
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := 0; i < n; i++ {
			fill(rng, s.Index(i), depth+1)
		}
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for i := rng.IntN(3); i > 0; i-- {
			k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
			fill(rng, k, depth+1)
			fill(rng, e, depth+1)
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(rng, v.Field(i), depth+1)
			}
		}
	}
}

// randomString is short, or long enough for msgpack's wider string headers.
func randomString(rng *rand.Rand) string {
	n := 1 + rng.IntN(12)
	switch rng.IntN(8) {
	case 0:
		n = 32 + rng.IntN(200) // str8
	case 1:
		n = 256 + rng.IntN(300) // str16
	}
	return strings.Repeat(string(rune('a'+rng.IntN(26))), n)
}
