package subjects

import (
	"errors"
	"strings"
	"testing"
)

func TestGolden(t *testing.T) {
	must := func(s string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct{ got, want string }{
		{must(Command("alice", VerbSend)), "ringer.v1.cmd.alice.send"},
		{must(Command("Bob_2-x", VerbAckAccept)), "ringer.v1.cmd.Bob_2-x.ackaccept"},
		{must(UserCommands("alice")), "ringer.v1.cmd.alice.*"},
		{CommandWildcard(), "ringer.v1.cmd.*.*"},
		{must(UserEvents("bob")), "ringer.v1.user.bob.events"},
		{must(UserSubjects("bob")), "ringer.v1.user.bob.>"},
		{must(InboxPrefix("bob")), "_INBOX_bob"},
		{InvitationKey("X1"), "inv.X1"},
		{LineKey("bob"), "line.bob"},
		{SessionKey("bob", "phone"), "sess.bob.phone"},
		{SessionKeysOf("bob"), "sess.bob.*"},
		{KVSubject("inv.X1"), "$KV.RINGER.inv.X1"},
		{InvitationChanges(), "$KV.RINGER.inv.*"},
		{SessionChanges(), "$KV.RINGER.sess.*.*"},
		{TimerSchedule("X1", 1700000000123), "ringer.v1.timer.set.X1.1700000000123"},
		{TimerFire("X1"), "ringer.v1.timer.fire.X1"},
		{TimerFires(), "ringer.v1.timer.fire.*"},
		{TimerSubjects(), "ringer.v1.timer.>"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestValidateID(t *testing.T) {
	for _, ok := range []string{"a", "A-z_09", strings.Repeat("x", MaxIDLen)} {
		if err := ValidateID(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	// Anything that could widen or redirect a subscription is rejected, never escaped.
	for _, bad := range []string{"", "a.b", "*", ">", "a b", "a\tb", "$SYS", "bob>", "é", "a/b", strings.Repeat("x", MaxIDLen+1)} {
		if err := ValidateID(bad); !errors.Is(err, ErrInvalidID) {
			t.Errorf("%q: %v, want ErrInvalidID", bad, err)
		}
	}
	// The error names the character as typed, or the byte if it is not UTF-8.
	for id, want := range map[string]string{"Zoë": `'ë' at byte 2`, "a\xffb": `byte 0xff at 1`, "a.b": `'.' at byte 1`} {
		if err := ValidateID(id); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want it to say %s", id, err, want)
		}
	}
}

func TestParseCommand(t *testing.T) {
	for _, tc := range []struct {
		subject, user, verb string
		err                 error
	}{
		{"ringer.v1.cmd.alice.send", "alice", "send", nil},
		{"ringer.v1.cmd.bob.ackaccept", "bob", "ackaccept", nil},
		{"ringer.v1.cmd.alice.bogus", "", "", ErrInvalidSubject},
		{"ringer.v1.cmd.alice", "", "", ErrInvalidSubject},
		{"ringer.v1.cmd.alice.send.extra", "", "", ErrInvalidSubject},
		{"ringer.v2.cmd.alice.send", "", "", ErrInvalidSubject},
		{"ringer.v1.user.alice.events", "", "", ErrInvalidSubject},
	} {
		u, v, err := ParseCommand(tc.subject)
		if !errors.Is(err, tc.err) || u != tc.user || v != tc.verb {
			t.Errorf("%q: (%q, %q, %v), want (%q, %q, %v)", tc.subject, u, v, err, tc.user, tc.verb, tc.err)
		}
	}
	if _, err := Command("a.b", VerbSend); !errors.Is(err, ErrInvalidID) {
		t.Errorf("Command with a dotted user: %v", err)
	}
	if _, err := Command("alice", "nope"); !errors.Is(err, ErrInvalidSubject) {
		t.Errorf("Command with unknown verb: %v", err)
	}
	for _, v := range Verbs { // every verb round-trips
		s, _ := Command("u", v)
		if _, got, err := ParseCommand(s); err != nil || got != v {
			t.Errorf("round trip %s: %q %v", v, got, err)
		}
	}
}

func TestParseInternal(t *testing.T) {
	if id, err := ParseInvitationSubject("$KV.RINGER.inv.X1"); err != nil || id != "X1" {
		t.Errorf("invitation: %q %v", id, err)
	}
	if _, err := ParseInvitationSubject("$KV.RINGER.line.bob"); !errors.Is(err, ErrInvalidSubject) {
		t.Errorf("line as invitation: %v", err)
	}
	if u, d, err := ParseSessionSubject("$KV.RINGER.sess.bob.phone"); err != nil || u != "bob" || d != "phone" {
		t.Errorf("session: %q %q %v", u, d, err)
	}
	if u, d, err := ParseSessionKey("sess.bob.phone"); err != nil || u != "bob" || d != "phone" {
		t.Errorf("session key: %q %q %v", u, d, err)
	}
	if _, _, err := ParseSessionSubject("$KV.RINGER.sess.bob"); !errors.Is(err, ErrInvalidSubject) {
		t.Errorf("session without device: %v", err)
	}
	if id, err := ParseTimerFire("ringer.v1.timer.fire.X1"); err != nil || id != "X1" {
		t.Errorf("timer: %q %v", id, err)
	}
	if _, err := ParseTimerFire("ringer.v1.timer.set.X1.5"); !errors.Is(err, ErrInvalidSubject) {
		t.Errorf("schedule as fire: %v", err)
	}
}
