package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// brokerProcReport is what the brokers' own processes spent over the window
// and the drain, read from their /metrics (--broker-metrics). Against a
// deployment (--nats) loadgen's CPU is its own alone; this is the broker's
// cost per call, the one an operator sizes brokers by.
type brokerProcReport struct {
	Brokers            int     `json:"brokers"`
	CPUSeconds         float64 `json:"cpu_s"`                 // process_cpu_seconds_total, summed over the brokers
	CPUMsPerInvitation float64 `json:"cpu_ms_per_invitation"` // per completed invitation
	RSSBytes           float64 `json:"rss_bytes"`             // the largest process_resident_memory_bytes at the end
}

// brokerProc is one reading of every broker's CPU and memory.
type brokerProc struct {
	cpuSeconds float64 // summed
	maxRSS     float64
}

// scrapeBrokers reads process_cpu_seconds_total and
// process_resident_memory_bytes from each URL (brokerd --http's /metrics).
func scrapeBrokers(ctx context.Context, urls []string) (brokerProc, error) {
	var p brokerProc
	for _, u := range urls {
		cpu, rss, err := scrapeBroker(ctx, u)
		if err != nil {
			return p, err
		}
		p.cpuSeconds += cpu
		p.maxRSS = max(p.maxRSS, rss)
	}
	return p, nil
}

func scrapeBroker(ctx context.Context, url string) (cpu, rss float64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("--broker-metrics %s: %w", url, err)
	}
	req.Header.Set("Accept", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("--broker-metrics %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("--broker-metrics %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, 0, fmt.Errorf("--broker-metrics %s: %w", url, err)
	}
	read := func(name string) (float64, error) {
		f := families[name]
		if f == nil || len(f.GetMetric()) != 1 {
			return 0, fmt.Errorf("--broker-metrics %s: no %s (a brokerd's /metrics has it)", url, name)
		}
		m := f.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			return c.GetValue(), nil
		}
		return m.GetGauge().GetValue(), nil
	}
	if cpu, err = read("process_cpu_seconds_total"); err != nil {
		return 0, 0, err
	}
	if rss, err = read("process_resident_memory_bytes"); err != nil {
		return 0, 0, err
	}
	return cpu, rss, nil
}

func newBrokerProcReport(before, after brokerProc, brokers int, completed int64) *brokerProcReport {
	r := &brokerProcReport{Brokers: brokers, CPUSeconds: after.cpuSeconds - before.cpuSeconds, RSSBytes: after.maxRSS}
	if completed > 0 {
		r.CPUMsPerInvitation = r.CPUSeconds * 1000 / float64(completed)
	}
	return r
}
