package broker

import (
	"testing"
	"time"

	"github.com/ringer-dev/ringer/subjects"
)

// A user's commands are handed on one at a time in arrival order; other
// users' are not held up; a user with maxQueued waiting gets the rest
// through unordered; an idle user leaves no entry behind.
func TestSequencerOrdersEachUsersCommands(t *testing.T) {
	s := newSequencer()
	cmd := func(n int) *job { return &job{user: "bob", arrived: time.UnixMilli(int64(n))} }
	first := cmd(0)
	if !s.admit("bob", first) || !first.sequenced {
		t.Fatal("a user's first command is not handed on, in hand")
	}
	if alice := (&job{user: "alice"}); !s.admit("alice", alice) || !alice.sequenced {
		t.Fatal("another user's command waits behind bob's")
	}
	for n := 1; n <= maxQueued; n++ {
		if s.admit("bob", cmd(n)) {
			t.Fatalf("bob's command %d is handed on while his first is in hand", n)
		}
	}
	if flood := cmd(maxQueued + 1); !s.admit("bob", flood) || flood.sequenced {
		t.Fatal("a command past maxQueued waiting is held, or takes the user's turn")
	}
	for n := 1; n <= maxQueued; n++ {
		j, ok := s.next("bob")
		if !ok || j.arrived != time.UnixMilli(int64(n)) {
			t.Fatalf("next %d: %v, arrived %v: not in arrival order", n, ok, j.arrived)
		}
	}
	if _, ok := s.next("bob"); ok {
		t.Fatal("a command handed on twice")
	}
	if _, ok := s.next("alice"); ok {
		t.Fatal("alice had nothing waiting")
	}
	if len(s.users) != 0 {
		t.Fatalf("entries left for idle users: %v", s.users)
	}
}

// Every verb but history is sequenced: a history read reads another stream
// and may be slow while its user's other commands are not.
func TestHistoryReadsAreNotSequenced(t *testing.T) {
	for _, verb := range subjects.Verbs {
		if got, want := sequenced(verb), verb != subjects.VerbHistory; got != want {
			t.Errorf("sequenced(%s) = %v, want %v", verb, got, want)
		}
	}
}
