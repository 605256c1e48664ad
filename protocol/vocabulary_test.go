package protocol

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// Every non-empty constant of the protocol's word types is in the
// vocabulary that word() hands out without a copy: read from this
// package's own source, so that a word added later cannot be left out.
func TestVocabularyHasEveryWord(t *testing.T) {
	types := map[string]bool{"State": true, "Reason": true, "CallState": true, "EventType": true, "Role": true, "Mode": true, "Code": true}
	pkgs, err := parser.ParseDir(token.NewFileSet(), ".", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range pkgs["protocol"].Files {
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, spec := range g.Specs {
				vs := spec.(*ast.ValueSpec)
				id, ok := vs.Type.(*ast.Ident)
				if !ok || !types[id.Name] {
					continue
				}
				for i, v := range vs.Values {
					lit, ok := v.(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					w, _ := strconv.Unquote(lit.Value)
					if w == "" {
						continue
					}
					n++
					if vocabulary[w] != w {
						t.Errorf("%s %s (%q) is not in the vocabulary", id.Name, vs.Names[i].Name, w)
					}
				}
			}
		}
	}
	if n < 40 {
		t.Fatalf("found %d words in the source; the parse missed some", n)
	}
}

// word returns a fixed word without allocating, and anything else as read.
func TestWordReadsWithoutACopy(t *testing.T) {
	enc := func(s string) []byte {
		b, err := msgpack.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	known, unknown := enc(string(StateAccepted)), enc("SOMETHING_NEW")
	var got string
	if allocs := testing.AllocsPerRun(100, func() { got = (&fastReader{b: known}).word() }); allocs != 0 || got != string(StateAccepted) {
		t.Errorf("word of %q: %q with %.0f allocations, want it with none", StateAccepted, got, allocs)
	}
	if got := (&fastReader{b: unknown}).word(); got != "SOMETHING_NEW" {
		t.Errorf("word of an unknown word: %q", got)
	}
}
