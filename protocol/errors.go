package protocol

import (
	"errors"
	"fmt"
)

// Code is a wire error code. On the wire it is the string itself.
type Code string

// Error codes (docs/protocol.md, "Errors").
const (
	CodeInvalidArgument   Code = "INVALID_ARGUMENT"   // malformed msgpack, bad id, oversize field, self-invite, bad timeout
	CodeNotFound          Code = "NOT_FOUND"          // no such invitation
	CodeForbidden         Code = "FORBIDDEN"          // the actor is not allowed to do this to this invitation
	CodeNotLoggedIn       Code = "NOT_LOGGEDIN"       // the acting device has no live session
	CodeAlreadyEnd        Code = "ALREADY_END"        // the invitation already ended (state says how)
	CodeAlreadyAccept     Code = "ALREADY_ACCEPT"     // the invitation was already accepted
	CodeAlreadySent       Code = "ALREADY_SENT"       // the invitation id is taken by a different invitation
	CodeBusy              Code = "BUSY"               // set-busy conflicts (reserved; a busy callee is a REFUSED invitation, not an error)
	CodeRateLimited       Code = "RATE_LIMITED"       // too many commands of this user (per verb class)
	CodeResourceExhausted Code = "RESOURCE_EXHAUSTED" // a quota is used up (live calls, devices) or the store is full
	CodeDeadlineExceeded  Code = "DEADLINE_EXCEEDED"  // the command arrived after the deadline its client set: not executed
	CodeUnavailable       Code = "UNAVAILABLE"        // the broker could not reach its store; retry
	CodeInternal          Code = "INTERNAL"           // a bug; retry may help
)

// Codes lists every error code.
var Codes = []Code{CodeInvalidArgument, CodeNotFound, CodeForbidden, CodeNotLoggedIn, CodeAlreadyEnd,
	CodeAlreadyAccept, CodeAlreadySent, CodeBusy, CodeRateLimited, CodeResourceExhausted, CodeDeadlineExceeded,
	CodeUnavailable, CodeInternal}

// Sentinels, one per code: errors.Is(err, protocol.ErrAlreadyEnd) is true for
// any *Error with that code, so a decoded wire error matches them.
var (
	ErrInvalidArgument   = &Error{Code: CodeInvalidArgument, Message: "invalid argument"}
	ErrNotFound          = &Error{Code: CodeNotFound, Message: "not found"}
	ErrForbidden         = &Error{Code: CodeForbidden, Message: "forbidden"}
	ErrNotLoggedIn       = &Error{Code: CodeNotLoggedIn, Message: "not logged in"}
	ErrAlreadyEnd        = &Error{Code: CodeAlreadyEnd, Message: "already ended"}
	ErrAlreadyAccept     = &Error{Code: CodeAlreadyAccept, Message: "already accepted"}
	ErrAlreadySent       = &Error{Code: CodeAlreadySent, Message: "already sent"}
	ErrBusy              = &Error{Code: CodeBusy, Message: "busy"}
	ErrRateLimited       = &Error{Code: CodeRateLimited, Message: "rate limited"}
	ErrResourceExhausted = &Error{Code: CodeResourceExhausted, Message: "resource exhausted"}
	ErrDeadlineExceeded  = &Error{Code: CodeDeadlineExceeded, Message: "deadline exceeded"}
	ErrUnavailable       = &Error{Code: CodeUnavailable, Message: "unavailable"}
	ErrInternal          = &Error{Code: CodeInternal, Message: "internal error"}
)

// Error is the typed error every failed command replies with.
type Error struct {
	Code    Code   `msgpack:"code"`
	Message string `msgpack:"message"`
	// State is the invitation state that won, for ALREADY_END / ALREADY_ACCEPT.
	State State `msgpack:"state,omitempty"`
}

// Error implements error.
func (e *Error) Error() string {
	if e.State != "" {
		return fmt.Sprintf("ringer: %s: %s (state %s)", e.Code, e.Message, e.State)
	}
	return fmt.Sprintf("ringer: %s: %s", e.Code, e.Message)
}

// Is matches any *Error with the same code.
func (e *Error) Is(target error) bool {
	var t *Error
	if errors.As(target, &t) {
		return t.Code == e.Code
	}
	return false
}

// Errorf builds an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns the wire code of err: its own if it is (or wraps) an *Error,
// INTERNAL otherwise.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}
