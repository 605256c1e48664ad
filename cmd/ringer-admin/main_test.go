package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
)

// backup on a running deployment, restore on a fresh server: the streams
// and their consumers come back (the broker test checks what they hold).
func TestBackupRestoreCommands(t *testing.T) {
	env := ringertest.Start(t, ringertest.TestConfig())
	env.Login("alice", "phone").Invite(t, "bob")
	dir := filepath.Join(t.TempDir(), "backup")
	var out bytes.Buffer
	if err := run([]string{"backup", "--nats", env.URL, "--dir", dir}, &out); err != nil {
		t.Fatal(err)
	}
	fresh := natstest.RunServer(t).ClientURL()
	if err := run([]string{"restore", "--nats", fresh, "--dir", dir}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "restore of") {
		t.Fatalf("output: %q", out.String())
	}
	js, _ := jetstream.New(natstest.Connect(t, fresh))
	for _, c := range []struct{ stream, consumer string }{{"KV_RINGER", "ringer-presence"}, {"RINGER_TIMERS", "ringer-timers"}} {
		if _, err := js.Consumer(context.Background(), c.stream, c.consumer); err != nil {
			t.Fatalf("%s/%s after the restore: %v", c.stream, c.consumer, err)
		}
	}
	if err := run([]string{"restore", "--nats", fresh, "--dir", dir}, &out); err == nil {
		t.Fatal("a restore over existing streams succeeded")
	}
	if err := run([]string{"frobnicate"}, &out); err == nil {
		t.Fatal("an unknown command was accepted")
	}
}
