package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "brokerd.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFile(t *testing.T) {
	p := writeConfig(t, "replicas: 3\npresence-ttl: 9s\nnats: nats://a:4222,nats://b:4222\nsend-rate: 7\n")
	o, err := parseFlags([]string{"--config", p, "--send-rate", "11"})
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Replicas != 3 || o.cfg.PresenceTTL != 9*time.Second || o.natsURL != "nats://a:4222,nats://b:4222" {
		t.Fatalf("file not applied: %+v %q", o.cfg, o.natsURL)
	}
	if o.cfg.SendRate != 11 {
		t.Fatalf("command line must win over the file: %g", o.cfg.SendRate)
	}
}

func TestConfigUnknownKey(t *testing.T) {
	p := writeConfig(t, "replicas: 3\nreplcias: 5\n")
	_, err := parseFlags([]string{"--config", p})
	if err == nil || !strings.Contains(err.Error(), "replcias") {
		t.Fatalf("unknown key not rejected: %v", err)
	}
}

func TestConfigBadValue(t *testing.T) {
	p := writeConfig(t, "presence-ttl: soon\n")
	if _, err := parseFlags([]string{"--config", p}); err == nil {
		t.Fatal("bad duration accepted")
	}
	p = writeConfig(t, "replicas: 9\n")
	if _, err := parseFlags([]string{"--config", p}); err == nil {
		t.Fatal("invalid config accepted")
	}
	if _, err := parseFlags([]string{"--gc-floor", "-1"}); err == nil {
		t.Fatal("negative --gc-floor accepted")
	}
	if o, err := parseFlags([]string{"--gc-floor", "0"}); err != nil || o.gcFloor != 0 {
		t.Fatalf("--gc-floor 0: %v", err)
	}
	for _, bad := range [][]string{{"--log-format", "xml"}, {"--log-level", "loud"}, {"--log-level", ""},
		{"--tls-cert", "config_test.go"}, {"--tls-ca", "/no/such/ca.pem"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Fatalf("%v accepted", bad)
		}
	}
	if _, err := parseFlags([]string{"--log-format", "json", "--log-level", "debug"}); err != nil {
		t.Fatal(err)
	}
}

func TestConfigEnv(t *testing.T) {
	p := writeConfig(t, "presence-ttl: 9s\n")
	t.Setenv("RINGER_PRESENCE_TTL", "4s")
	o, err := parseFlags([]string{"--config", p})
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.PresenceTTL != 4*time.Second {
		t.Fatalf("env must win over the file: %s", o.cfg.PresenceTTL)
	}
}
