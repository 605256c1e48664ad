package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/ringer-dev/ringer/internal/ringertest"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// /healthz, /readyz and /metrics mean something: readiness follows the
// broker's state, and metrics count what happened.
func TestHTTPEndpoints(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	b := env.Brokers[0]
	alice := env.Login("alice", "phone")
	ctx := ringertest.Ctx(t)
	if err := alice.CreateLocalInvitation("bob").Send(ctx); err != nil {
		t.Fatal(err)
	}
	// and a call: dave calls carol, who accepts
	carol, dave := env.Login("carol", "phone"), env.Login("dave", "phone")
	li := dave.CreateLocalInvitation("carol")
	if err := li.Send(ctx); err != nil {
		t.Fatal(err)
	}
	if err := carol.Rec.WaitRemote(t, li.ID).Accept(ctx, ""); err != nil {
		t.Fatal(err)
	}
	dave.Rec.Wait(t, "Accepted "+li.ID)
	stop, addr, err := listenHTTP("127.0.0.1:0", false, b.Broker, b.NC, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	base := "http://" + addr
	if code, body := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("healthz %d %s", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("readyz %d %s", code, body)
	}
	if code, _ := get(t, base+"/debug/pprof/"); code != http.StatusNotFound {
		t.Fatalf("pprof served without --pprof: %d", code)
	}
	code, body := get(t, base+"/metrics")
	for _, want := range []string{
		`ringer_commands_total{result="ok",verb="send"} 2`,
		`ringer_commands_total{result="ok",verb="login"} 3`,
		`ringer_transitions_total{call="",cause="send",state="SENT"} 2`,
		`ringer_line_records 4`,
		"ringer_timers_pending",
		`ringer_invitations_live{phase="invitation"} 1`, // bob has not received it: SENT
		`ringer_invitations_live{phase="call"} 1`,
		`ringer_invitations_overdue 0`,
		"ringer_command_seconds_bucket",
		"ringer_timer_lateness_seconds",
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// --pprof adds Go's profiles.
	stopProf, profAddr, err := listenHTTP("127.0.0.1:0", true, b.Broker, b.NC, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer stopProf()
	if code, body := get(t, "http://"+profAddr+"/debug/pprof/heap?debug=1"); code != 200 || !strings.Contains(body, "heap profile") {
		t.Fatalf("pprof heap with --pprof: %d %.80s", code, body)
	}
	// A broker that is shutting down is not ready.
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, base+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz after shutdown: %d", code)
	}
	// Lost NATS: not healthy.
	b.NC.Close()
	if code, _ := get(t, base+"/healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("healthz without NATS: %d", code)
	}
}
