// Package subjects builds and parses every NATS subject and KV key Ringer uses.
//
// It is the single owner of the naming scheme: no other package concatenates
// subject tokens. Every identifier that becomes a token (user, device and
// invitation ids) is validated here, so a value such as "*", ">" or "a.b" can
// never widen a subscription or address another user's subject.
package subjects

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Prefix is the versioned root of every public Ringer subject.
const Prefix = "ringer.v1"

// MaxIDLen is the longest accepted user, device or invitation id, in bytes.
const MaxIDLen = 64

// ErrInvalidID is returned (wrapped) for an id that is empty, too long or
// contains a byte outside [A-Za-z0-9_-].
var ErrInvalidID = errors.New("subjects: invalid id")

// ErrInvalidSubject is returned (wrapped) when a subject does not have the
// expected shape.
var ErrInvalidSubject = errors.New("subjects: invalid subject")

// Verbs: the last token of a command subject.
const (
	VerbLogin      = "login"
	VerbHeartbeat  = "heartbeat"
	VerbLogout     = "logout"
	VerbSend       = "send"
	VerbCancel     = "cancel"
	VerbAck        = "ack"
	VerbAccept     = "accept"
	VerbRefuse     = "refuse"
	VerbAckAccept  = "ackaccept"
	VerbHangup     = "hangup"
	VerbSync       = "sync"
	VerbBusy       = "busy"
	VerbGet        = "get"
	VerbHistory    = "history"
	VerbRegister   = "register"
	VerbUnregister = "unregister"
	VerbBlock      = "block"
	VerbUnblock    = "unblock"
	VerbInvite     = "invite"
)

// Verbs lists every command verb, in documentation order.
var Verbs = []string{
	VerbLogin, VerbHeartbeat, VerbLogout, VerbSend, VerbCancel, VerbAck,
	VerbAccept, VerbRefuse, VerbAckAccept, VerbHangup, VerbSync, VerbBusy, VerbGet,
	VerbHistory, VerbRegister, VerbUnregister, VerbBlock, VerbUnblock, VerbInvite,
}

func knownVerb(v string) bool {
	for _, k := range Verbs {
		if k == v {
			return true
		}
	}
	return false
}

// ValidateID reports whether s is a valid user, device or invitation id:
// 1..MaxIDLen bytes of A-Z a-z 0-9 '-' '_'.
func ValidateID(s string) error {
	if len(s) == 0 {
		return fmt.Errorf("%w: empty", ErrInvalidID)
	}
	if len(s) > MaxIDLen {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidID, len(s), MaxIDLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			// Name the character as typed ('é', not the first byte of
			// its UTF-8 encoding); a byte that is not UTF-8, as a byte.
			if r, n := utf8.DecodeRuneInString(s[i:]); r != utf8.RuneError || n > 1 {
				return fmt.Errorf("%w: %q at byte %d (allowed: A-Z a-z 0-9 - _)", ErrInvalidID, r, i)
			}
			return fmt.Errorf("%w: byte 0x%02x at %d, not UTF-8 (allowed: A-Z a-z 0-9 - _)", ErrInvalidID, c, i)
		}
	}
	return nil
}

// Command is the request subject on which user publishes verb:
// ringer.v1.cmd.<user>.<verb>.
func Command(user, verb string) (string, error) {
	if err := ValidateID(user); err != nil {
		return "", err
	}
	if !knownVerb(verb) {
		return "", fmt.Errorf("%w: unknown verb %q", ErrInvalidSubject, verb)
	}
	return Prefix + ".cmd." + user + "." + verb, nil
}

// CommandWildcard is what brokers subscribe to (in a queue group) to serve
// every user's commands.
func CommandWildcard() string { return Prefix + ".cmd.*.*" }

// UserCommands is the subject pattern a user may publish to: its own commands.
func UserCommands(user string) (string, error) {
	if err := ValidateID(user); err != nil {
		return "", err
	}
	return Prefix + ".cmd." + user + ".*", nil
}

// ParseCommand splits a command subject into the acting user and the verb.
func ParseCommand(subject string) (user, verb string, err error) {
	rest, ok := strings.CutPrefix(subject, Prefix+".cmd.")
	if !ok {
		return "", "", fmt.Errorf("%w: %q is not a command subject", ErrInvalidSubject, subject)
	}
	user, verb, ok = strings.Cut(rest, ".")
	if !ok || strings.Contains(verb, ".") {
		return "", "", fmt.Errorf("%w: %q is not ringer.v1.cmd.<user>.<verb>", ErrInvalidSubject, subject)
	}
	if err := ValidateID(user); err != nil {
		return "", "", err
	}
	if !knownVerb(verb) {
		return "", "", fmt.Errorf("%w: unknown verb %q", ErrInvalidSubject, verb)
	}
	return user, verb, nil
}

// UserEvents is the subject on which every event for user is published:
// ringer.v1.user.<user>.events. All of the user's devices subscribe to it.
func UserEvents(user string) (string, error) {
	if err := ValidateID(user); err != nil {
		return "", err
	}
	return Prefix + ".user." + user + ".events", nil
}

// UserSubjects is the pattern covering every subject addressed to user
// (what a user is allowed to subscribe to in secure mode).
func UserSubjects(user string) (string, error) {
	if err := ValidateID(user); err != nil {
		return "", err
	}
	return Prefix + ".user." + user + ".>", nil
}

// InboxPrefix is the reply-inbox prefix a user's connection must use in secure
// mode (nats.CustomInboxPrefix), so no one else can read its replies.
func InboxPrefix(user string) (string, error) {
	if err := ValidateID(user); err != nil {
		return "", err
	}
	return "_INBOX_" + user, nil
}

// ReplyHeader names the header in which a command asks for its reply on
// the acting user's own reply subject (UserReply): the token after
// ringer.v1.user.<user>.reply. — two ids joined by a dot, the client's and
// the request's. Brokers in secure mode reply nowhere else.
const ReplyHeader = "Ringer-Reply"

// UserReplies is the subscription a client makes for the replies to its
// commands: ringer.v1.user.<user>.reply.<client>.*.
func UserReplies(user, client string) (string, error) {
	if err := ValidateID(user); err != nil {
		return "", err
	}
	if err := ValidateID(client); err != nil {
		return "", err
	}
	return Prefix + ".user." + user + ".reply." + client + ".*", nil
}

// UserReply is the subject a broker publishes the reply of a command of
// user to, for the ReplyHeader token "<client>.<request>":
// ringer.v1.user.<user>.reply.<client>.<request>. Any other token is an
// error, so no token can leave the user's own subjects.
func UserReply(user, token string) (string, error) {
	if err := ValidateID(user); err != nil {
		return "", err
	}
	client, request, ok := strings.Cut(token, ".")
	if !ok {
		return "", fmt.Errorf("%w: reply token %q is not <client>.<request>", ErrInvalidSubject, token)
	}
	if err := ValidateID(client); err != nil {
		return "", err
	}
	if err := ValidateID(request); err != nil {
		return "", err
	}
	return Prefix + ".user." + user + ".reply." + token, nil
}
