package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/protocol"
)

// target picks the invitation a command acts on, among the user's live
// ones that fit (which): the one whose id args[0] is, or starts with
// (unique prefix); else, when exactly one fits, that one, and every
// argument is the free text. It returns the id and the free text.
func target(ctx context.Context, c *client.Client, args []string, what string, fits func(protocol.Invitation) bool) (string, string, error) {
	live, err := c.Sync(ctx)
	if err != nil {
		return "", "", err
	}
	var cands []string
	for _, inv := range live {
		if fits(inv) {
			cands = append(cands, inv.ID)
		}
	}
	if len(args) > 0 {
		var hits []string
		for _, id := range cands {
			if strings.HasPrefix(id, args[0]) {
				hits = append(hits, id)
			}
		}
		switch {
		case len(hits) == 1:
			return hits[0], strings.Join(args[1:], " "), nil
		case len(hits) > 1:
			return "", "", fmt.Errorf("%q could be %s: type more of the id", args[0], strings.Join(hits, " or "))
		}
	}
	switch len(cands) {
	case 0:
		if len(args) > 0 {
			return args[0], strings.Join(args[1:], " "), nil // let the broker say what it is
		}
		return "", "", fmt.Errorf("no %s", what)
	case 1:
		return cands[0], strings.Join(args, " "), nil
	}
	return "", "", fmt.Errorf("%d %ss (%s): say which", len(cands), what, strings.Join(cands, ", "))
}

// ringingForMe: an invitation to this user that is still ringing.
func ringingForMe(user string) func(protocol.Invitation) bool {
	return func(inv protocol.Invitation) bool {
		return inv.Callee == user && (inv.State == protocol.StateSent || inv.State == protocol.StateReceived)
	}
}

// ringingFromMe: an invitation of this user's that is still ringing.
func ringingFromMe(user string) func(protocol.Invitation) bool {
	return func(inv protocol.Invitation) bool {
		return inv.Caller == user && (inv.State == protocol.StateSent || inv.State == protocol.StateReceived)
	}
}

// inCall: a call in progress (or being accepted).
func inCall(inv protocol.Invitation) bool {
	return inv.State == protocol.StateAccepting || inv.State == protocol.StateAccepted && inv.CallState == protocol.CallActive
}

// redact hides the passwords of comma-separated NATS URLs.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(p); err == nil && u.User != nil {
			if _, ok := u.User.Password(); ok {
				u.User = url.UserPassword(u.User.Username(), "xxxxx")
				parts[i] = u.String()
			}
		}
	}
	return strings.Join(parts, ",")
}

// callEnd says how a call ended, in words.
func callEnd(inv protocol.Invitation) string {
	switch inv.Reason {
	case protocol.ReasonHangup:
		return inv.EndedBy + " hung up"
	case protocol.ReasonPeerOffline:
		return inv.EndedBy + " went offline"
	case protocol.ReasonMaxDuration:
		return "it reached the maximum call duration"
	}
	return string(inv.Reason)
}

// conference: a JOIN invitation this user is a party to.
func conference(inv protocol.Invitation) bool { return inv.Mode == protocol.ModeJoin }

// who names an invitation's callees.
func who(li *client.LocalInvitation) string {
	if li.Mode == protocol.ModeOne {
		return li.Callee
	}
	return strings.Join(li.Callees, ",")
}

// others lists a group invitation's callees but one.
func others(inv protocol.Invitation, but string) string {
	var out []string
	for _, u := range inv.Callees() {
		if u != but {
			out = append(out, u)
		}
	}
	return strings.Join(out, ",")
}

// legWords says what became of one callee of a group invitation.
func legWords(l protocol.Leg) string {
	switch {
	case l.State == protocol.StateSent:
		return l.User + " is invited"
	case l.State == protocol.StateReceived:
		return l.User + " is ringing"
	case l.Joined():
		return l.User + " is in the call"
	case l.State == protocol.StateAccepted && l.Reason == protocol.ReasonLeft:
		return l.User + " left"
	case l.State == protocol.StateAccepted:
		return l.User + " is out of the call (" + string(l.Reason) + ")"
	case l.Reason == protocol.ReasonBusy:
		return l.User + " is busy"
	case l.State == protocol.StateRefused:
		return l.User + " refused"
	case l.Reason == protocol.ReasonAnsweredElsewhere:
		return l.User + " stopped ringing (someone else answered)"
	case l.Reason == protocol.ReasonCallEnded:
		return l.User + " stopped ringing (the call ended)"
	case l.State == protocol.StateCanceled:
		return l.User + " stopped ringing (canceled)"
	case l.AnsweredAt != 0:
		return l.User + " answered, but the call did not start (" + string(l.Reason) + ")"
	}
	return l.User + " did not answer (" + string(l.Reason) + ")"
}
