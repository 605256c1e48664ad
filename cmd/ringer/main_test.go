package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
)

// terminal drives one `ringer` session through pipes.
type terminal struct {
	in    *io.PipeWriter
	lines chan string
	done  chan error
}

func open(t *testing.T, url, user string) *terminal {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	tm := &terminal{in: inW, lines: make(chan string, 100), done: make(chan error, 1)}
	go func() { tm.done <- run(url, user, "cli", false, inR, outW); outW.Close() }()
	go func() {
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			tm.lines <- sc.Text()
		}
		close(tm.lines)
	}()
	t.Cleanup(func() { inW.Close() })
	tm.expect(t, "logged in as "+user)
	return tm
}

func (tm *terminal) send(line string) { fmt.Fprintln(tm.in, line) }

// expect waits for an output line matching pattern and returns its submatches.
func (tm *terminal) expect(t *testing.T, pattern string) []string {
	t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.After(ringertest.Wait)
	for {
		select {
		case l, ok := <-tm.lines:
			if !ok {
				t.Fatalf("output closed before %q", pattern)
			}
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-deadline:
			t.Fatalf("no output matching %q", pattern)
		}
	}
}

// The README's two-terminal tour, end to end.
func TestTwoTerminalTour(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice := open(t, env.URL, "alice")
	bob := open(t, env.URL, "bob")

	alice.send("invite bob lunch call?")
	id := bob.expect(t, `INCOMING from alice: "lunch call\?" — 'accept (\S+)'`)[1]
	alice.expect(t, "bob is ringing \\("+id)
	bob.send("accept " + id + " on my way")
	alice.expect(t, `bob accepted `+id+`: "on my way"`)
	bob.expect(t, "call "+id+" with alice started")
	alice.send("hangup " + id)
	bob.expect(t, "call "+id+" ended: alice hung up")
	bob.send("list")
	bob.expect(t, "nothing live")
	alice.send("bogus")
	alice.expect(t, "unknown command")
	// Without an id when only one rings, with a prefix of it otherwise.
	alice.send("invite bob again?")
	id2 := bob.expect(t, `INCOMING from alice: "again\?" — 'accept (\S+)'`)[1]
	bob.send("refuse not now")
	alice.expect(t, `bob refused `+id2+`: "not now"`)
	alice.send("invite bob third")
	id3 := bob.expect(t, `INCOMING from alice: "third" — 'accept (\S+)'`)[1]
	bob.send("accept " + id3[:10] + " yes")
	alice.expect(t, `bob accepted `+id3+`: "yes"`)
	alice.send("hangup")
	bob.expect(t, "call "+id3+" ended: alice hung up")
	// The history, newest first: the refused one is bob's missed call.
	// (Entries are written right after the events; wait for them.)
	probe := env.Login("alice", "probe")
	natstest.Eventually(t, ringertest.Wait, func() error {
		page, err := probe.History(ringertest.Ctx(t), "", 10)
		if err == nil && len(page.Calls) < 3 {
			err = fmt.Errorf("alice's history has %d entries", len(page.Calls))
		}
		return err
	})
	bob.send("missed")
	bob.expect(t, `from alice\s+MISSED \(refused\)\s+`+id2)
	alice.send("history 2")
	alice.expect(t, `to bob\s+call, \d+s, alice hung up\s+`+id3)
	alice.expect(t, `to bob\s+refused\s+`+id2)
	alice.send("history zero")
	alice.expect(t, "give a number from 1 to 100")
	bob.send("push pager 123")
	bob.expect(t, `unknown platform "pager"`)
	bob.send("push apns a1b2c3")
	bob.expect(t, "device cli registered for apns pushes until ")
	bob.send("push off")
	bob.expect(t, "push target removed")
	bob.send("block alice")
	bob.expect(t, "blocked: alice")
	alice.send("invite bob hello?")
	alice.expect(t, `bob refused \S+: "busy"`)
	bob.send("unblock alice")
	bob.expect(t, "nobody")
	// Glare: bob calls alice while her call to him rings: one call.
	alice.send("invite bob you there?")
	id4 := bob.expect(t, `INCOMING from alice: "you there\?" — 'accept (\S+)'`)[1]
	bob.send("invite alice")
	bob.expect(t, "alice was calling you at that moment: you accepted their call "+id4)
	alice.expect(t, `bob accepted `+id4)
	alice.send("hangup " + id4)
	bob.expect(t, "call "+id4+" ended: alice hung up")
	bob.send("busy maybe")
	bob.expect(t, "say on or off")
	bob.send("busy on")
	bob.expect(t, "do-not-disturb on")
	bob.send("busy off")
	bob.expect(t, "do-not-disturb off")
	for _, tm := range []*terminal{alice, bob} {
		tm.send("quit")
		if err := <-tm.done; err != nil && !strings.Contains(err.Error(), "closed") {
			t.Fatalf("exit: %v", err)
		}
	}
}

// Group calls from three terminals: the first to accept wins; then a
// conference that carol joins, alice adds dave to, and people leave.
func TestGroupTerminals(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice, bob, carol := open(t, env.URL, "alice"), open(t, env.URL, "bob"), open(t, env.URL, "carol")
	alice.send("invite bob,carol lunch?")
	id := bob.expect(t, `INCOMING from alice \(also ringing carol; the first to accept gets it\): "lunch\?" — 'accept (\S+)'`)[1]
	carol.expect(t, `INCOMING from alice \(also ringing bob;`)
	carol.send("accept")
	alice.expect(t, id+": bob stopped ringing \\(someone else answered\\)") // a leg's news comes before the invitation's
	alice.expect(t, `carol accepted `+id)
	bob.expect(t, id+" stopped ringing: someone else answered alice's call first")
	alice.send("hangup " + id)
	carol.expect(t, "call "+id+" ended: alice hung up")

	dave := open(t, env.URL, "dave")
	alice.send("conf bob,carol standup")
	conf := bob.expect(t, `CONFERENCE from alice \(with carol\): "standup" — 'join (\S+)'`)[1]
	bob.send("join")
	alice.expect(t, conf+": bob is in the call")
	alice.expect(t, "your conference "+conf+" started")
	carol.send("join " + conf[:8])
	alice.expect(t, conf+": carol is in the call")
	alice.send("add dave")
	dave.expect(t, `CONFERENCE from alice \(with bob,carol\)`)
	dave.send("join")
	alice.expect(t, conf+": dave is in the call")
	bob.send("leave")
	alice.expect(t, conf+": bob left")
	bob.send("leave " + conf)
	bob.expect(t, "error: .*not in the call")
	carol.send("leave")
	dave.send("leave")
	alice.expect(t, "call "+conf+" ended")
}

// Credentials that may not act as the user: the CLI says so at once
// (NATS reports the denied publish asynchronously; the login would only
// have timed out after 5 s).
func TestCredentialsOfAnotherUserAreReportedAtOnce(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Users: []*server.User{{Username: "bob", Password: "pw", Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{"ringer.v1.cmd.bob.*"}},
		}}}})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("server not ready")
	}
	var out strings.Builder
	start := time.Now()
	err = run(s.ClientURL(), "alice", "cli", false, strings.NewReader(""), &out, nats.UserInfo("bob", "pw"))
	if err == nil || !strings.Contains(err.Error(), "permissions violation") || !strings.Contains(err.Error(), "not alice's") {
		t.Fatalf("run: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("reported after %s", took)
	}
}

// News that a command causes comes after the command's own output, and
// the prompt is printed once: "invitation X sent" before "bob refused X".
func TestNewsComesAfterTheCommandsOutput(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	alice, bob := open(t, env.URL, "alice"), open(t, env.URL, "bob")
	bob.send("busy on")
	bob.expect(t, "do-not-disturb on")
	for range 5 {
		alice.send("invite bob hi")
		id := alice.expect(t, `invitation (\S+) sent to bob`)[1]
		alice.expect(t, `bob refused `+id+`: "busy"`)
	}
	alice.send("list")
	for {
		l := alice.expect(t, ".*")[0]
		if strings.Contains(l, "> > ") {
			t.Fatalf("doubled prompt: %q", l)
		}
		if strings.Contains(l, "nothing live") {
			break
		}
	}
}
