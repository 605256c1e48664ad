package broker_test

import (
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/internal/ringertest"
)

// Every metric an alert of deploy/prometheus/alerts.yml or a panel of
// deploy/grafana/ringer.json names is exported by a broker that has served
// some traffic: an alert on a metric that does not exist (renamed, or never
// initialised) would never fire, a panel would stay empty.
func TestAlertsNameExportedMetrics(t *testing.T) {
	raw, err := os.ReadFile("../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Rules []struct {
				Alert, Expr string
			}
		}
	}
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	named := map[string][]string{} // metric -> alerts
	re := regexp.MustCompile(`\bringer_[a-z_]+`)
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			for _, m := range re.FindAllString(r.Expr, -1) {
				named[m] = append(named[m], r.Alert)
			}
		}
	}
	dash, err := os.ReadFile("../deploy/grafana/ringer.json")
	if err != nil {
		t.Fatal(err)
	}
	var board struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(dash, &board); err != nil {
		t.Fatal(err)
	}
	for _, p := range board.Panels {
		for _, tg := range p.Targets {
			for _, m := range re.FindAllString(tg.Expr, -1) {
				named[m] = append(named[m], "panel "+p.Title)
			}
		}
	}
	if len(named) < 5 {
		t.Fatalf("only %d ringer metrics named by the alerts: %v", len(named), named)
	}

	env := ringertest.Start(t, ringertest.TestConfig())
	alice, bob := env.Login("alice", "phone"), env.Login("bob", "phone")
	li := alice.Call(t, bob)
	if err := alice.Hangup(ringertest.Ctx(t), li.ID); err != nil {
		t.Fatal(err)
	}

	// The projector counts the outcome after the hangup's events; wait
	// for it.
	exported := map[string]bool{}
	natstest.Eventually(t, ringertest.Wait, func() error {
		mfs, err := env.Brokers[0].Metrics().Registry.Gather()
		if err != nil {
			return err
		}
		for _, mf := range mfs {
			exported[mf.GetName()] = true
		}
		if !exported["ringer_outcomes_total"] {
			return errors.New("no outcome counted yet")
		}
		return nil
	})
	for m, alerts := range named {
		base := m
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(m, suffix); ok && exported[b] {
				base = b
			}
		}
		if !exported[base] {
			t.Errorf("%s (alerts %v) is not exported", m, alerts)
		}
	}
}
