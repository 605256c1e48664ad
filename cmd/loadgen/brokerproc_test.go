package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ringer-dev/ringer/brokertest"
	"github.com/ringer-dev/ringer/internal/ringertest"
)

// Against a deployment, --broker-metrics adds the brokers' own CPU per call
// and memory, read from a real broker's /metrics (its registry served over
// HTTP, as brokerd --http does). The broker runs in the test's process, so
// its process CPU holds loadgen's too: the test checks the plumbing, not
// the figure.
func TestBrokerMetricsReportTheBrokersCost(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 2 s workload")
	}
	r := brokertest.New(t, brokertest.WithConfig(ringertest.TestConfig())) // rates a few users can drive hard
	metrics := httptest.NewServer(promhttp.HandlerFor(r.Broker.Metrics().Registry, promhttp.HandlerOpts{}))
	defer metrics.Close()

	var res result
	report := runWorkload(t, &res, "--nats", r.URL, "--broker-metrics", metrics.URL,
		"--mix", "accept=1", "--rate", "20", "--users", "40", "--duration", "2s", "--think", "0", "--hold", "0", "--gc-floor", "0")
	if !strings.Contains(report, "Brokers' own processes (--broker-metrics, 1)") {
		t.Errorf("the text report does not give the brokers' cost:\n%s", report)
	}
	b := res.BrokerProcess
	if res.Completed == 0 || b == nil || b.Brokers != 1 || b.CPUSeconds <= 0 || b.CPUMsPerInvitation <= 0 || b.RSSBytes < 1<<20 {
		t.Fatalf("completed %d, broker_process %+v", res.Completed, b)
	}
}

// A URL that is not a broker's /metrics fails the run before its load, with
// the URL in the error, rather than reporting a cost of nothing.
func TestBrokerMetricsFailsOnABadURL(t *testing.T) {
	r := brokertest.New(t)
	notMetrics := httptest.NewServer(http.NotFoundHandler())
	defer notMetrics.Close()
	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := realMain([]string{"--nats", r.URL, "--broker-metrics", notMetrics.URL + "/metrics",
		"--mix", "accept=1", "--rate", "1", "--users", "2", "--duration", "30s", "--json", "--gc-floor", "0"}, &stdout, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), notMetrics.URL) || !strings.Contains(stderr.String(), "404") {
		t.Fatalf("exit status %d, stderr:\n%s", code, stderr.String())
	}
	if time.Since(start) > 20*time.Second {
		t.Fatalf("took %s: the load ran before the check", time.Since(start))
	}
}

// --broker-metrics needs --nats.
func TestBrokerMetricsNeedsNATS(t *testing.T) {
	var errw bytes.Buffer
	if _, err := parseConfig([]string{"--broker-metrics", "http://127.0.0.1:1/metrics"}, &errw); err == nil || !strings.Contains(err.Error(), "--nats") {
		t.Fatalf("--broker-metrics without --nats: %v", err)
	}
}
