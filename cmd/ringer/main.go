// Command ringer is a small interactive client for trying Ringer from two
// terminals: log in as a user, invite someone, accept, refuse, cancel, hang up.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/buildinfo"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

const help = `commands:
  invite <user> [content]    send an invitation
  invite <u1,u2,...> [content]  ring several at once: the first to accept gets the call
  conf <u1,u2,...> [content] a conference: everyone who accepts joins one call
  add [id] <u1,...>          ring more people into your conference
  join [id]                  join a conference (also late, or again after leaving)
  leave [id]                 leave a conference (it goes on while two remain)
  accept [id] [response]     accept an incoming invitation
  refuse [id] [response]     refuse it
  cancel [id]                cancel an invitation you sent
  hangup [id]                end a call
  (an id may be shortened to a unique prefix, or left out when only one fits)
  busy on|off                set or clear do-not-disturb
  list                       live invitations and calls (sync)
  history [n]                your last n finished calls and invitations (10)
  missed [n]                 your last n missed calls (10)
  push <platform> <token>    register this device for pushes (apns, fcm, webpush, http);
                             after 'quit', invitations to you become push requests
  push off                   unregister it
  block <user>, unblock <user>  refuse a caller for good (they get "busy"), or not
  quit                       log out and exit`

func main() {
	user := flag.String("user", "", "your user id (required)")
	device := flag.String("device", "cli", "your device id")
	url := flag.String("nats", nats.DefaultURL, "NATS URL of the Ringer deployment")
	inbox := flag.Bool("secure-inbox", false, "connect with the inbox prefix _INBOX_<user> (Ringer's commands do not need it, even on a secure deployment; kept for scripts that pass it)")
	version := flag.Bool("version", false, "print the version and exit")
	token := flag.String("token", "", "user token for a secure deployment (see docs/security.md; implies --secure-inbox)")
	flag.Parse()
	if *version {
		fmt.Println(buildinfo.Get().String("ringer"))
		return
	}
	if *user == "" {
		fmt.Fprintln(os.Stderr, "usage: ringer --user NAME [--device ID] [--nats URL]")
		os.Exit(2)
	}
	var opts []nats.Option
	if *token != "" {
		opts = append(opts, nats.Token(*token))
	}
	if err := run(*url, *user, *device, *inbox, os.Stdin, os.Stdout, opts...); err != nil {
		fmt.Fprintln(os.Stderr, "ringer:", err)
		os.Exit(1)
	}
}

func run(url, user, device string, secureInbox bool, in io.Reader, out io.Writer, extra ...nats.Option) error {
	// NATS reports a denied publish or subscription asynchronously; the
	// command it belonged to would only time out. Say it at once, and
	// end a login that cannot succeed.
	refused := make(chan error, 1)
	con := &console{w: out}
	opts := append([]nats.Option{nats.Name("ringer-cli " + user), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			err = fmt.Errorf("%w: these credentials are not %s's, or not a Ringer user's (a token names one user: see docs/security.md)", err, user)
			select {
			case refused <- err:
			default:
			}
		}
		con.news("NATS: %v", err)
	})}, extra...)
	if secureInbox {
		prefix, err := subjects.InboxPrefix(user)
		if err != nil {
			return err
		}
		opts = append(opts, nats.CustomInboxPrefix(prefix))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	say := con.news
	c, err := client.New(nc, user, device, client.WithHandler(client.Handler{
		OnLocalInvitationReceivedByPeer: func(li *client.LocalInvitation) {
			if li.Mode == protocol.ModeOne {
				say("%s is ringing (%s)", li.Callee, li.ID)
			}
		},
		OnLocalInvitationAccepted: func(li *client.LocalInvitation, r string) {
			if li.Mode == protocol.ModeJoin {
				say("your conference %s started; 'add %s <user>' to ring more, 'leave %s' to leave", li.ID, li.ID, li.ID)
				return
			}
			say("%s accepted %s: %q — you are in a call; 'hangup %s' to end it", li.Invitation().Callee, li.ID, r, li.ID)
		},
		OnLocalInvitationLegChanged: func(li *client.LocalInvitation, l protocol.Leg) { say("%s: %s", li.ID, legWords(l)) },
		OnLocalInvitationRefused:    func(li *client.LocalInvitation, r string) { say("%s refused %s: %q", who(li), li.ID, r) },
		OnLocalInvitationCanceled:   func(li *client.LocalInvitation) { say("you canceled %s", li.ID) },
		OnLocalInvitationMerged: func(li *client.LocalInvitation, into string) {
			say("%s was calling you at that moment: you accepted their call %s instead", li.Callee, into)
		},
		OnLocalInvitationFailure: func(li *client.LocalInvitation, reason protocol.Reason) {
			say("invitation %s to %s failed: %s", li.ID, who(li), reason)
		},
		OnRemoteInvitationReceived: func(ri *client.RemoteInvitation) {
			inv := ri.Invitation()
			switch inv.Mode {
			case protocol.ModeFirst:
				say("INCOMING from %s (also ringing %s; the first to accept gets it): %q — 'accept %s' or 'refuse %s'",
					ri.CallerID(), others(inv, inv.Callee), ri.Content(), ri.ID(), ri.ID())
			case protocol.ModeJoin:
				say("CONFERENCE from %s (with %s): %q — 'join %s' or 'refuse %s'", ri.CallerID(), others(inv, inv.Callee), ri.Content(), ri.ID(), ri.ID())
			default:
				say("INCOMING from %s: %q — 'accept %s' or 'refuse %s'", ri.CallerID(), ri.Content(), ri.ID(), ri.ID())
			}
		},
		OnRemoteInvitationAccepted: func(ri *client.RemoteInvitation) { say("call %s with %s started", ri.ID(), ri.CallerID()) },
		OnRemoteInvitationRefused:  func(ri *client.RemoteInvitation) { say("you refused %s", ri.ID()) },
		OnRemoteInvitationCanceled: func(ri *client.RemoteInvitation) {
			switch ri.Invitation().Reason {
			case protocol.ReasonAnsweredElsewhere:
				say("%s stopped ringing: someone else answered %s's call first", ri.ID(), ri.CallerID())
			case protocol.ReasonCallEnded:
				say("%s stopped ringing: the conference ended", ri.ID())
			default:
				say("%s canceled %s", ri.CallerID(), ri.ID())
			}
		},
		OnRemoteInvitationFailure: func(ri *client.RemoteInvitation, reason protocol.Reason) {
			say("invitation %s from %s failed: %s", ri.ID(), ri.CallerID(), reason)
		},
		OnRemoteInvitationHandledElsewhere: func(ri *client.RemoteInvitation, s protocol.State) {
			what := "answered"
			if s == protocol.StateRefused {
				what = "refused"
			}
			say("%s was %s on another of your devices", ri.ID(), what)
		},
		OnCallEnded: func(inv protocol.Invitation) { say("call %s ended: %s", inv.ID, callEnd(inv)) },
		OnConnectionStateChanged: func(s client.ConnectionState, r client.ConnectionChangeReason) {
			say("connection %s (%s)", s, r)
		},
	}))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	go func() {
		select {
		case err := <-refused:
			select {
			case refused <- err: // for the error below
			default:
			}
			cancel()
		case <-ctx.Done():
		}
	}()
	err = c.Login(ctx)
	cancel()
	if err != nil {
		select {
		case why := <-refused:
			return fmt.Errorf("login: %w", why)
		default:
		}
		return fmt.Errorf("login: %w", err)
	}
	con.begin()
	fmt.Fprintf(con, "logged in as %s/%s on %s\n%s\n", user, device, redact(url), help)
	con.end()

	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		con.begin()
		if len(f) == 0 {
			con.end()
			continue
		}
		rest := ""
		if len(f) > 2 {
			rest = strings.Join(f[2:], " ")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := command(ctx, c, f[0], f[1:], rest, con)
		cancel()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Fprintf(con, "error: %v\n", err)
		}
		con.end()
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Logout(ctx)
}

func command(ctx context.Context, c *client.Client, verb string, args []string, rest string, out io.Writer) error {
	need := func(n int) error {
		if len(args) < n {
			return fmt.Errorf("%s needs %d argument(s); type 'help'", verb, n)
		}
		return nil
	}
	switch verb {
	case "invite", "conf":
		if err := need(1); err != nil {
			return err
		}
		li := c.CreateLocalInvitation(args[0])
		if users := strings.Split(args[0], ","); len(users) > 1 || verb == "conf" {
			mode := protocol.ModeFirst
			if verb == "conf" {
				mode = protocol.ModeJoin
			}
			li = c.CreateGroupInvitation(mode, users...)
		}
		// A NUID's first 12 characters are the same for a whole process:
		// the channel takes its last 8. Send names the invitation.
		li.Content, li.ChannelID = rest, "room-"+nuid.Next()[14:]
		if err := li.Send(ctx); err != nil {
			return err
		}
		fmt.Fprintf(out, "invitation %s sent to %s (channel %s); 'cancel %s' to cancel\n", li.ID, args[0], li.ChannelID, li.ID)
	case "join":
		id, _, err := target(ctx, c, args, "conference", conference)
		if err != nil {
			return err
		}
		return c.Accept(ctx, id, "")
	case "leave":
		id, _, err := target(ctx, c, args, "conference", conference)
		if err != nil {
			return err
		}
		return c.Hangup(ctx, id)
	case "add":
		if err := need(1); err != nil {
			return err
		}
		users := args[len(args)-1]
		id, _, err := target(ctx, c, args[:len(args)-1], "conference", conference)
		if err != nil {
			return err
		}
		return c.Invite(ctx, id, strings.Split(users, ",")...)
	case "accept", "refuse":
		id, text, err := target(ctx, c, args, "ringing invitation", ringingForMe(c.User()))
		if err != nil {
			return err
		}
		if verb == "accept" {
			return c.Accept(ctx, id, text)
		}
		return c.Refuse(ctx, id, text)
	case "cancel":
		id, _, err := target(ctx, c, args, "invitation of yours ringing", ringingFromMe(c.User()))
		if err != nil {
			return err
		}
		return c.Cancel(ctx, id)
	case "hangup":
		id, _, err := target(ctx, c, args, "call", inCall)
		if err != nil {
			return err
		}
		return c.Hangup(ctx, id)
	case "busy":
		if err := need(1); err != nil {
			return err
		}
		var on bool
		switch args[0] {
		case "on":
			on = true
		case "off":
		default:
			return fmt.Errorf("busy %s: say on or off", args[0])
		}
		if err := c.SetBusy(ctx, on); err != nil {
			return err
		}
		fmt.Fprintf(out, "do-not-disturb %s\n", args[0])
	case "list":
		invs, err := c.Sync(ctx)
		if err != nil {
			return err
		}
		for _, inv := range invs {
			fmt.Fprintf(out, "  %s %s→%s %s %s\n", inv.ID, inv.Caller, inv.Callee, inv.State, inv.CallState)
		}
		if len(invs) == 0 {
			fmt.Fprintln(out, "  nothing live")
		}
	case "history", "missed":
		n := 10
		if len(args) > 0 {
			var err error
			if n, err = strconv.Atoi(args[0]); err != nil || n < 1 || n > protocol.MaxHistoryPage {
				return fmt.Errorf("%s %s: give a number from 1 to %d", verb, args[0], protocol.MaxHistoryPage)
			}
		}
		read := c.History
		if verb == "missed" {
			read = c.MissedCalls
		}
		page, err := read(ctx, "", n)
		if err != nil {
			return err
		}
		for _, r := range page.Calls {
			fmt.Fprintf(out, "  %s\n", historyLine(r))
		}
		if len(page.Calls) == 0 {
			fmt.Fprintf(out, "  no %s yet\n", map[string]string{"history": "finished calls", "missed": "missed calls"}[verb])
		}
	case "block", "unblock":
		if err := need(1); err != nil {
			return err
		}
		f := c.Block
		if verb == "unblock" {
			f = c.Unblock
		}
		list, err := f(ctx, args[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "blocked: %s\n", strings.Join(append([]string{}, list...), ", "))
		if len(list) == 0 {
			fmt.Fprintln(out, "  nobody")
		}
	case "push":
		if err := need(1); err != nil {
			return err
		}
		if args[0] == "off" {
			if err := c.UnregisterPush(ctx); err != nil {
				return err
			}
			fmt.Fprintln(out, "push target removed")
			return nil
		}
		if err := need(2); err != nil {
			return err
		}
		reg, err := c.RegisterPush(ctx, protocol.Platform(args[0]), args[1], "", 0)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "device %s registered for %s pushes until %s\n", reg.Device, reg.Platform, time.UnixMilli(reg.ExpiresAt).Format("Jan 2 15:04"))
	case "help":
		fmt.Fprintln(out, help)
	case "quit", "exit":
		return io.EOF
	default:
		return fmt.Errorf("unknown command %q; type 'help'", verb)
	}
	return nil
}

// historyLine is one history entry in words: when, who, how it ended.
func historyLine(r protocol.CallRecord) string {
	who := "to " + r.Peer
	if r.Direction == protocol.Incoming {
		who = "from " + r.Peer
	}
	var how string
	switch {
	case r.State == protocol.StateAccepted:
		how = "call, " + (time.Duration(r.DurationMs) * time.Millisecond).Round(time.Second).String()
		if r.EndedBy != "" {
			how += ", " + r.EndedBy + " hung up"
		} else if r.Reason != "" {
			how += ", " + strings.ToLower(strings.ReplaceAll(string(r.Reason), "_", " "))
		}
	case r.Reason == protocol.ReasonBusy:
		how = "busy"
	case r.Reason != "":
		how = strings.ToLower(string(r.State)) + ": " + strings.ToLower(strings.ReplaceAll(string(r.Reason), "_", " "))
	default:
		how = strings.ToLower(string(r.State))
	}
	if r.Missed {
		how = "MISSED (" + how + ")"
	}
	return fmt.Sprintf("%s  %-22s %-40s %s", time.UnixMilli(r.CreatedAt).Format("Jan 2 15:04:05"), who, how, r.ID)
}
