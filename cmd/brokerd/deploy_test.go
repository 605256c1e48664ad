package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The systemd unit and the Kubernetes manifests pass brokerd flags and
// environment variables that exist and validate, and probe the endpoints
// brokerd serves; the NATS chart values are valid YAML.
func TestDeploymentFilesMatchBrokerd(t *testing.T) {
	unit, err := os.ReadFile("../../deploy/systemd/brokerd.service")
	if err != nil {
		t.Fatal(err)
	}
	var execStart []string
	sc := bufio.NewScanner(bytes.NewReader(unit))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "ExecStart="); ok {
			execStart = strings.Fields(rest)
		}
	}
	if len(execStart) < 2 || !strings.HasSuffix(execStart[0], "/brokerd") {
		t.Fatalf("brokerd.service ExecStart: %q", execStart)
	}
	if _, err := parseFlags(execStart[1:]); err != nil {
		t.Fatalf("brokerd.service passes %q: %v", execStart[1:], err)
	}

	f, err := os.Open("../../deploy/kubernetes/brokerd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	found := false
	for {
		var doc struct {
			Kind string
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Args      []string
							Env       []struct{ Name string }
							Readiness probe `yaml:"readinessProbe"`
							Liveness  probe `yaml:"livenessProbe"`
						}
					}
				}
			}
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if doc.Kind != "Deployment" {
			continue
		}
		for _, c := range doc.Spec.Template.Spec.Containers {
			found = true
			if _, err := parseFlags(c.Args); err != nil {
				t.Fatalf("brokerd.yaml passes %q: %v", c.Args, err)
			}
			if c.Readiness.HTTPGet.Path != "/readyz" || c.Liveness.HTTPGet.Path != "/healthz" {
				t.Errorf("brokerd.yaml probes %q and %q, brokerd serves /readyz and /healthz", c.Readiness.HTTPGet.Path, c.Liveness.HTTPGet.Path)
			}
			for _, e := range c.Env {
				name, ok := strings.CutPrefix(e.Name, "RINGER_")
				if ok && !flagExists(strings.ToLower(strings.ReplaceAll(name, "_", "-"))) {
					t.Errorf("brokerd.yaml sets %s: brokerd has no such flag", e.Name)
				}
			}
		}
	}
	if !found {
		t.Fatal("no Deployment in brokerd.yaml")
	}
	values, err := os.ReadFile("../../deploy/kubernetes/nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.Unmarshal(values, &v); err != nil {
		t.Fatalf("nats-values.yaml: %v", err)
	}
}

// probe is a Kubernetes HTTP probe.
type probe struct {
	HTTPGet struct{ Path string } `yaml:"httpGet"`
}

// flagExists reports whether brokerd has a flag of that name.
func flagExists(name string) bool {
	_, err := parseFlags([]string{"--" + name + "=x"})
	return err == nil || !strings.Contains(err.Error(), "flag provided but not defined")
}
