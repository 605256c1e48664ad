// The run over time: one sample a second, written as CSV while the run goes
// (--csv) and drawn as a self-contained HTML report at its end (--html).
package main

import (
	"encoding/csv"
	"fmt"
	"html"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
)

// sample is one second of the run.
type sample struct {
	T                      int
	Started, Completed     int64
	Rate                   float64 // completions per second
	Inflight               int
	Errors                 int64
	RingP50, RingP99       float64 // send → ring, ms, over the second
	AcceptP50, AcceptP99   float64 // accept → caller's Accepted, ms, over the second
	RingCount, AcceptCount int64
}

var csvHeader = []string{"t", "started", "completed", "rate", "inflight", "errors",
	"ring_p50_ms", "ring_p99_ms", "ring_count", "accept_p50_ms", "accept_p99_ms", "accept_count"}

func (s sample) row() []string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	return []string{strconv.Itoa(s.T), i(s.Started), i(s.Completed), f(s.Rate), strconv.Itoa(s.Inflight), i(s.Errors),
		f(s.RingP50), f(s.RingP99), i(s.RingCount), f(s.AcceptP50), f(s.AcceptP99), i(s.AcceptCount)}
}

// timeline keeps the samples and, with --csv, writes each as it comes.
type timeline struct {
	mu      sync.Mutex
	samples []sample
	file    *os.File
	csv     *csv.Writer
}

func newTimeline(csvPath string) (*timeline, error) {
	tl := &timeline{}
	if csvPath == "" {
		return tl, nil
	}
	f, err := os.Create(csvPath)
	if err != nil {
		return nil, fmt.Errorf("--csv: %w", err)
	}
	tl.file, tl.csv = f, csv.NewWriter(f)
	if err := tl.csv.Write(csvHeader); err != nil {
		return nil, err
	}
	tl.csv.Flush()
	return tl, nil
}

func (tl *timeline) add(s sample) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.samples = append(tl.samples, s)
	if tl.csv != nil {
		_ = tl.csv.Write(s.row())
		tl.csv.Flush() // a row a second: readable while the run goes
	}
}

func (tl *timeline) close() error {
	if tl.file == nil {
		return nil
	}
	tl.csv.Flush()
	return tl.file.Close()
}

// writeHTML draws the timeline (throughput, then the latencies' p50 and
// p99 per second) as inline SVG, with the text report under it: one file,
// nothing to fetch to view it.
func (tl *timeline) writeHTML(w io.Writer, title, report string) error {
	tl.mu.Lock()
	ss := append([]sample(nil), tl.samples...)
	tl.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, `<!doctype html><html><head><meta charset="utf-8"><title>%s</title>
<style>body{font:14px sans-serif;margin:2em;max-width:1000px}svg{background:#fafafa;border:1px solid #ddd}
.l{font-size:11px;fill:#555}pre{background:#f4f4f4;padding:1em;overflow:auto}</style></head><body>
<h1>%s</h1>`, html.EscapeString(title), html.EscapeString(title))
	pick := func(f func(sample) float64) []float64 {
		out := make([]float64, len(ss))
		for i, s := range ss {
			out[i] = f(s)
		}
		return out
	}
	chart(&b, "Invitations per second", "per s", []series{
		{"completed/s", "#1f77b4", pick(func(s sample) float64 { return s.Rate })},
		{"started/s", "#2ca02c", deltas(pick(func(s sample) float64 { return float64(s.Started) }))},
		{"errors/s", "#d62728", deltas(pick(func(s sample) float64 { return float64(s.Errors) }))},
	})
	chart(&b, "Send → ring (ms), per second", "ms", []series{
		{"p50", "#1f77b4", pick(func(s sample) float64 { return s.RingP50 })},
		{"p99", "#ff7f0e", pick(func(s sample) float64 { return s.RingP99 })},
	})
	chart(&b, "Accept → caller's Accepted (ms), per second", "ms", []series{
		{"p50", "#1f77b4", pick(func(s sample) float64 { return s.AcceptP50 })},
		{"p99", "#ff7f0e", pick(func(s sample) float64 { return s.AcceptP99 })},
	})
	fmt.Fprintf(&b, "<h2>Report</h2><pre>%s</pre></body></html>\n", html.EscapeString(report))
	_, err := io.WriteString(w, b.String())
	return err
}

type series struct {
	name, color string
	ys          []float64
}

// deltas turns a running total into per-interval increments.
func deltas(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i := range xs {
		if i == 0 {
			out[i] = xs[0]
		} else {
			out[i] = xs[i] - xs[i-1]
		}
	}
	return out
}

// chart writes one line chart of the series against the seconds.
func chart(b *strings.Builder, title, unit string, ss []series) {
	const w, h, pad = 900.0, 220.0, 40.0
	n, top := 0, 0.0
	for _, s := range ss {
		n = max(n, len(s.ys))
		for _, y := range s.ys {
			top = max(top, y)
		}
	}
	if top == 0 {
		top = 1
	}
	fmt.Fprintf(b, "<h2>%s</h2><svg width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\">", html.EscapeString(title), w, h, w, h)
	x := func(i int) float64 { return pad + (w-2*pad)*float64(i)/float64(max(n-1, 1)) }
	y := func(v float64) float64 { return h - pad - (h-2*pad)*v/top }
	fmt.Fprintf(b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#999"/>`, pad, h-pad, w-pad, h-pad)
	fmt.Fprintf(b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#999"/>`, pad, pad, pad, h-pad)
	fmt.Fprintf(b, `<text class="l" x="2" y="%.0f">%.4g %s</text><text class="l" x="2" y="%.0f">0</text>`, pad, top, unit, h-pad)
	fmt.Fprintf(b, `<text class="l" x="%.0f" y="%.0f">%d s</text>`, w-pad-20, h-pad+15, max(n-1, 0))
	for k, s := range ss {
		var pts []string
		for i, v := range s.ys {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(v)))
		}
		fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, s.color, strings.Join(pts, " "))
		fmt.Fprintf(b, `<text class="l" x="%.0f" y="%d" fill="%s">%s</text>`, pad+10+float64(k)*110, 14, s.color, html.EscapeString(s.name))
	}
	b.WriteString("</svg>")
}

// writeHTMLReport writes res, with its timeline's charts, to path.
func writeHTMLReport(path string, res *result) error {
	var text strings.Builder
	writeText(&text, res)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	tl := res.timeline
	if tl == nil {
		tl = &timeline{}
	}
	title := fmt.Sprintf("loadgen run %s: %s, mix %s", res.RunID, res.Loop, res.Mix)
	if err := tl.writeHTML(f, title, text.String()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
