// Command ringer-abuse replays, against a running Ringer, the attacks one
// signed-in user can try on everyone else (SPEC §10, docs/security.md) and
// prints, per attack, what was tried, what bystanders making ordinary calls
// meanwhile saw (call setup latency and errors), how much the store grew and
// brokerd's resident memory. It talks to an unauthenticated (development
// mode) NATS, as scripts/abuse.sh runs it; every loop is bounded in count
// and time.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/internal/buildinfo"
	"github.com/ringer-dev/ringer/subjects"
)

type options struct {
	url      string
	metrics  string
	duration time.Duration
	devices  int
	ttl      time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.url, "nats", nats.DefaultURL, "NATS URL of the Ringer deployment (development mode: no auth)")
	flag.StringVar(&o.metrics, "metrics", "", "brokerd's /metrics URL, for its resident memory (optional)")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "how long each flood lasts")
	flag.IntVar(&o.devices, "devices", 3000, "devices the device storm logs in")
	flag.DurationVar(&o.ttl, "presence-ttl", 15*time.Second, "brokerd's --presence-ttl (the storm waits for its sessions to expire)")
	version := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *version {
		fmt.Println(buildinfo.Get().String("ringer-abuse"))
		return
	}
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ringer-abuse:", err)
		os.Exit(1)
	}
}

// env is what every attack needs: connections, the bystanders, the probes.
type env struct {
	o      options
	out    io.Writer
	nc     *nats.Conn
	js     jetstream.JetStream
	by     *bystanders
	prefix string   // makes this run's user ids unique
	harm   []string // what an attack did to others that it must not
}

// harmed records damage an attack did to other users.
func (e *env) harmed(format string, args ...any) {
	e.harm = append(e.harm, fmt.Sprintf(format, args...))
}

func run(o options, out io.Writer) error {
	nc, err := nats.Connect(o.url, nats.Name("ringer-abuse"), nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	e := &env{o: o, out: out, nc: nc, js: js, prefix: fmt.Sprintf("ab%d", time.Now().UnixNano()%1e6)}
	if e.by, err = startBystanders(e); err != nil {
		return err
	}
	defer e.by.stop()
	fmt.Fprintf(out, "%-14s %-58s %-44s %-12s %s\n", "attack", "tried → outcome", "bystanders (calls ok/err, setup p50/p99)", "store grew", "brokerd RSS")
	e.report("baseline", "ordinary calls only", e.quiet())
	for _, a := range []struct {
		name string
		run  func() string
	}{
		{"store-fill", e.storeFill},
		{"squat", e.squat},
		{"device-storm", e.deviceStorm},
		{"aimed-replies", e.aimedReplies},
	} {
		e.report(a.name, "", a.run)
	}
	if len(e.harm) > 0 {
		return fmt.Errorf("the attacks hurt other users:\n  %s", strings.Join(e.harm, "\n  "))
	}
	fmt.Fprintln(out, "no attack hurt another user")
	return nil
}

// quiet lets the bystanders call for one period with no attack.
func (e *env) quiet() func() string {
	return func() string {
		time.Sleep(e.o.duration)
		return ""
	}
}

// report runs attack while measuring the bystanders, the store and memory,
// and prints one line.
func (e *env) report(name, what string, attack func() string) {
	before := e.bucketBytes()
	e.by.reset()
	if got := attack(); got != "" {
		what = got
	}
	calls, errs := e.by.snapshot()
	if errs > 0 {
		e.harmed("%s: %d bystander calls failed", name, errs)
	}
	grown := "?"
	if after := e.bucketBytes(); before >= 0 && after >= 0 {
		grown = fmt.Sprintf("%+d KiB", (after-before)/1024)
	}
	fmt.Fprintf(e.out, "%-14s %-58s %-44s %-12s %s\n", name, what, calls, grown, e.rss())
}

// bucketBytes is the size of Ringer's bucket, or -1.
func (e *env) bucketBytes() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := e.js.Stream(ctx, subjects.BucketStream)
	if err != nil {
		return -1
	}
	info, err := st.Info(ctx)
	if err != nil {
		return -1
	}
	return int64(info.State.Bytes)
}

// rss reads brokerd's process_resident_memory_bytes from its /metrics.
func (e *env) rss() string {
	if e.o.metrics == "" {
		return "-"
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(e.o.metrics)
	if err != nil {
		return "?"
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, "process_resident_memory_bytes "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return fmt.Sprintf("%.0f MiB", f/(1<<20))
			}
		}
	}
	return "?"
}
