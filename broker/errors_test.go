package broker_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// rawRequest sends bytes to a subject and decodes the typed reply.
func rawRequest(t *testing.T, env *ringertest.Env, subject string, body []byte) *protocol.Reply {
	t.Helper()
	nc := natstest.Connect(t, env.URL)
	msg, err := nc.Request(subject, body, ringertest.Wait)
	if err != nil {
		t.Fatalf("%s: no reply: %v", subject, err)
	}
	rep, err := protocol.DecodeReply(msg.Data)
	if err != nil {
		t.Fatalf("%s: undecodable reply: %v", subject, err)
	}
	return rep
}

func TestBadInputGetsTypedError(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)
	send, _ := subjects.Command("alice", subjects.VerbSend)

	raw := map[string]struct {
		subject string
		body    []byte
		code    protocol.Code
	}{
		"malformed msgpack":   {send, []byte{0xc1, 0x00}, protocol.CodeInvalidArgument},
		"wrong field type":    {send, protocol.MustMarshal(map[string]any{"device": 7}), protocol.CodeInvalidArgument},
		"trailing garbage":    {send, append(protocol.MustMarshal(&protocol.Request{Device: "phone"}), 0xff), protocol.CodeInvalidArgument},
		"oversize request":    {send, protocol.MustMarshal(&protocol.Request{Device: "phone", Callee: "bob", Content: strings.Repeat("x", protocol.MaxRequestLen)}), protocol.CodeInvalidArgument},
		"missing device":      {send, protocol.MustMarshal(&protocol.Request{Callee: "bob"}), protocol.CodeInvalidArgument},
		"bad device id":       {send, protocol.MustMarshal(&protocol.Request{Device: "ph.one", Callee: "bob"}), protocol.CodeInvalidArgument},
		"unknown verb":        {"ringer.v1.cmd.alice.explode", protocol.MustMarshal(&protocol.Request{Device: "phone"}), protocol.CodeInvalidArgument},
		"bad user in subject": {"ringer.v1.cmd.al$ce.send", protocol.MustMarshal(&protocol.Request{Device: "phone", Callee: "bob"}), protocol.CodeInvalidArgument},
	}
	for name, tc := range raw {
		t.Run(name, func(t *testing.T) {
			rep := rawRequest(t, env, tc.subject, tc.body)
			if rep.Error == nil || rep.Error.Code != tc.code {
				t.Fatalf("reply %+v, want error %s", rep, tc.code)
			}
			if rep.Error.Message == "" {
				t.Fatal("error without message")
			}
		})
	}

	sendErr := func(li *client.LocalInvitation) error { return li.Send(ctx) }
	cases := map[string]struct {
		err  error
		want error
	}{}
	li := alice.CreateLocalInvitation("bob")
	li.Content = strings.Repeat("x", protocol.MaxContentLen+1)
	cases["oversize content"] = struct{ err, want error }{sendErr(li), client.ErrInvalidArgument}
	li = alice.CreateLocalInvitation("bob")
	li.ChannelID = strings.Repeat("c", protocol.MaxChannelIDLen+1)
	cases["oversize channelId"] = struct{ err, want error }{sendErr(li), client.ErrInvalidArgument}
	li = alice.CreateLocalInvitation("bo b")
	cases["bad callee id"] = struct{ err, want error }{sendErr(li), client.ErrInvalidArgument}
	li = alice.CreateLocalInvitation("alice")
	cases["self invite"] = struct{ err, want error }{sendErr(li), client.ErrInvalidArgument}
	li = alice.CreateLocalInvitation("bob")
	li.Timeouts = &protocol.Timeouts{OfflineMs: 1}
	cases["timeout below bound"] = struct{ err, want error }{sendErr(li), client.ErrInvalidArgument}
	li = alice.CreateLocalInvitation("bob")
	li.Timeouts = &protocol.Timeouts{ExpireMs: 24 * 3600 * 1000}
	cases["timeout above bound"] = struct{ err, want error }{sendErr(li), client.ErrInvalidArgument}
	cases["unknown invitation"] = struct{ err, want error }{bob.Accept(ctx, "nosuchid", ""), client.ErrNotFound}
	cases["bad invitation id"] = struct{ err, want error }{bob.Accept(ctx, "no.such", ""), client.ErrInvalidArgument}
	ghost := env.NewClient("ghost", "phone") // never logged in
	cases["send without login"] = struct{ err, want error }{ghost.CreateLocalInvitation("bob").Send(ctx), client.ErrNotLoggedIn}
	for name, c := range cases {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: %v, want %v", name, c.err, c.want)
		}
	}
	waitFree(t, env, "alice", "bob")
}

func TestForbiddenAndTwice(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	bob := env.Login("bob", "phone")
	mallory := env.Login("mallory", "laptop")
	ctx := ringertest.Ctx(t)

	li := alice.Invite(t, "bob")
	ri := bob.Rec.WaitRemote(t, li.ID)
	// Someone else's invitation.
	for name, err := range map[string]error{
		"mallory accepts":    mallory.Accept(ctx, li.ID, ""),
		"mallory refuses":    mallory.Refuse(ctx, li.ID, ""),
		"mallory hangs up":   mallory.Hangup(ctx, li.ID),
		"callee cancels":     bob.Cancel(ctx, li.ID),
		"caller accepts":     alice.Accept(ctx, li.ID, ""),
		"caller acks":        alice.Ack(ctx, li.ID),
		"callee acks accept": bob.AckAccept(ctx, li.ID),
	} {
		if !errors.Is(err, client.ErrForbidden) {
			t.Errorf("%s: %v, want FORBIDDEN", name, err)
		}
	}
	// Acting twice: the same device's retry is a success with the same result.
	if err := ri.Accept(ctx, "ok"); err != nil {
		t.Fatal(err)
	}
	if err := ri.Accept(ctx, "ok"); err != nil {
		t.Fatalf("retried accept: %v", err)
	}
	alice.Rec.Wait(t, "Accepted "+li.ID)
	if err := li.Cancel(ctx); !errors.Is(err, client.ErrAlreadyAccept) {
		t.Fatalf("cancel after accept: %v", err)
	}
	// A retried send with the same id returns the existing invitation.
	again := alice.CreateLocalInvitation("bob")
	again.ID = li.ID
	if err := again.Send(ctx); err != nil {
		t.Fatalf("retried send: %v", err)
	}
	if inv := again.Invitation(); inv.ID != li.ID || inv.State != protocol.StateAccepted {
		t.Fatalf("retried send returned %+v", inv)
	}
	// The same id for a different invitation is taken.
	other := mallory.CreateLocalInvitation("bob")
	other.ID = li.ID
	if err := other.Send(ctx); !errors.Is(err, client.ErrAlreadySent) {
		t.Fatalf("reused id: %v, want ALREADY_SENT", err)
	}
	if err := bob.Hangup(ctx, li.ID); err != nil {
		t.Fatal(err)
	}
	if err := alice.Hangup(ctx, li.ID); err != nil {
		t.Fatalf("hanging up a finished call again: %v", err)
	}
	waitFree(t, env, "alice", "bob")
}

// Manual busy (do-not-disturb): invitations are refused as busy until cleared.
func TestManualBusy(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := env.Login("alice", "phone")
	bob := env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)
	if err := bob.SetBusy(ctx, true); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Sync(ctx); err != nil || !bob.Session().Busy {
		t.Fatalf("sync does not report the busy flag: %v", err)
	}
	li := alice.Invite(t, "bob")
	alice.Rec.Wait(t, "Refused "+li.ID+" busy")
	if bob.Rec.Count("RemoteReceived") != 0 {
		t.Fatal("a busy callee was disturbed")
	}
	if err := bob.SetBusy(ctx, false); err != nil {
		t.Fatal(err)
	}
	waitFree(t, env, "bob")
	li = alice.CreateLocalInvitation("bob")
	if err := li.Send(ctx); err != nil {
		t.Fatal(err)
	}
	bob.Rec.WaitRemote(t, li.ID)
}

// A caller flooding invitations is rate limited; other users are not starved.
func TestSendRateLimit(t *testing.T) {
	cfg := ringertest.TestConfig()
	cfg.SendRate, cfg.SendBurst = 5, 10
	cfg.MaxOutgoing, cfg.MaxIncoming = 20, 1 // the flood meets the rate limit, not the quota
	env := ringertest.Start(t, cfg)
	flooder := env.Login("flooder", "phone")
	alice := env.Login("alice", "phone")
	env.Login("bob", "phone")
	ctx := ringertest.Ctx(t)
	limited := 0
	for i := 0; i < 40; i++ {
		err := flooder.CreateLocalInvitation(fmt.Sprintf("target%d", i)).Send(ctx)
		if errors.Is(err, client.ErrRateLimited) {
			limited++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if limited == 0 {
		t.Fatal("40 sends in a burst were never rate limited")
	}
	t.Logf("%d of 40 burst sends rate limited", limited)
	// Alice, sending at the same time, is unaffected.
	li := alice.CreateLocalInvitation("bob")
	if err := li.Send(ctx); err != nil {
		t.Fatalf("an innocent user was limited: %v", err)
	}
}
