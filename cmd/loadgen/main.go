// Command loadgen drives a Ringer deployment with simulated users and reports
// throughput, per-stage latency (HDR histograms), outcomes, errors and
// invariant checks.
//
// With no flags it starts its own embedded NATS server and broker and runs a
// mixed workload for 20 s; --nats drives an existing deployment instead. It
// prints a progress line per second on stderr and a report at the end
// (--json: one JSON object as the last line of stdout). See docs/benchmarks.md.
//
// Exit status: 0 all invariants held; 1 an invariant was broken; 2 bad
// flags; 3 the run could not be set up (no NATS, no broker, nobody logged in).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"runtime/trace"
	"sync"
	"syscall"
	"time"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/buildinfo"
	"github.com/ringer-dev/ringer/internal/gcfloor"
	"github.com/ringer-dev/ringer/protocol"
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if cfg != nil && cfg.version {
		fmt.Fprintln(stdout, buildinfo.Get().String("loadgen"))
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "loadgen:", err)
		return 2
	}
	fmt.Fprintln(stderr, "loadgen:", gcfloor.Set(cfg.gcFloor))
	res, err := execute(cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "loadgen:", err)
		return 3
	}
	if cfg.jsonOut {
		writeText(stderr, res)
		if err := writeJSON(stdout, res); err != nil {
			fmt.Fprintln(stderr, "loadgen:", err)
			return 3
		}
	} else {
		writeText(stdout, res)
	}
	if cfg.htmlPath != "" {
		if err := writeHTMLReport(cfg.htmlPath, res); err != nil {
			fmt.Fprintln(stderr, "loadgen: --html:", err)
			return 3
		}
	}
	if res.Violations > 0 {
		return 1
	}
	return 0
}

// record starts a recording of the whole run (CPU profile, execution trace)
// into the file at path, if any; the returned func ends it.
func record(path string, start func(io.Writer) error, stop func()) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := start(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { stop(); f.Close() }, nil
}

// execute sets the deployment up, runs the baseline and the workload,
// checks the invariants and tears everything down.
func execute(cfg *config, errw io.Writer) (res *result, err error) {
	stopProfile, err := record(cfg.cpuprofile, pprof.StartCPUProfile, pprof.StopCPUProfile)
	if err != nil {
		return nil, err
	}
	defer stopProfile()
	stopTrace, err := record(cfg.trace, trace.Start, trace.Stop)
	if err != nil {
		return nil, err
	}
	defer stopTrace()
	url := cfg.natsURL
	var env *embeddedEnv
	if url == "" {
		env, err = startEmbedded(context.Background(), cfg, errw)
		if err != nil {
			return nil, fmt.Errorf("embedded mode: %w", err)
		}
		defer env.stop()
		url = env.url()
		fmt.Fprintf(errw, "loadgen: embedded NATS (R%d) at %s and %d broker(s) (presence TTL %s)\n", cfg.replicas, url, cfg.brokers, cfg.presenceTTL)
	}
	// The budget of the set-up (baseline, logins, push) starts once the
	// servers are up, after their leaders have settled (--settle).
	setup, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conns, err := connect(url, cfg.conns, "loadgen")
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	r := newRun(cfg, conns, errw)
	if r.tl, err = newTimeline(cfg.csvPath); err != nil {
		return nil, err
	}
	defer func() {
		if cerr := r.tl.close(); cerr != nil && err == nil {
			err = fmt.Errorf("--csv: %w", cerr)
		}
	}()
	defer r.stop()

	var base *baselineResult
	if cfg.baseline {
		bconns := conns
		if cfg.baselineNATS != "" {
			bconns, err = connect(cfg.baselineNATS, cfg.conns, "loadgen baseline")
			if err != nil {
				return nil, fmt.Errorf("baseline: %w", err)
			}
			defer func() {
				for _, nc := range bconns {
					nc.Close()
				}
			}()
		}
		fmt.Fprintf(errw, "loadgen: baseline: request-reply, KV create, KV update, lifecycle floor, atomic batch, %s each with %d workers\n", cfg.baselineDuration, cfg.baselineConcurrency)
		base = runBaseline(setup, bconns, r.runID, cfg.baselineConcurrency, cfg.baselineDuration, cfg.baselineReplicas)
	}

	fmt.Fprintf(errw, "loadgen: run %s: logging in %d users on %d connections\n", r.runID, cfg.users, len(conns))
	loginStart := time.Now()
	if err := r.loginAll(setup); err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	if err := r.preparePush(setup); err != nil {
		return nil, err
	}
	if err := r.startWebhooks(); err != nil {
		return nil, err
	}
	fmt.Fprintf(errw, "loadgen: %d users logged in in %.1fs; %s for %s, mix %s\n", r.pool.loggedIn.Load(), time.Since(loginStart).Seconds(), cfg.mode(), cfg.duration, cfg.mix)

	var before store.StatsSnapshot
	var trafficBefore natsTraffic
	if env != nil {
		before, trafficBefore = env.stats(), env.traffic()
	}
	var brokersBefore brokerProc
	if len(cfg.brokerMetrics) > 0 {
		if brokersBefore, err = scrapeBrokers(setup, cfg.brokerMetrics); err != nil {
			return nil, err
		}
	}
	cpuBefore, gcBefore := processCPU(), gcCycles()
	start := time.Now()
	r.st.mu.Lock()
	r.st.windowStart = start
	r.st.mu.Unlock()
	prog := startProgress(r, start)
	end := start.Add(cfg.duration)
	// The first SIGINT/SIGTERM ends the load window early (then drain and
	// report as usual); a second one exits at once.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if _, ok := <-sigs; !ok {
			return
		}
		fmt.Fprintln(errw, "loadgen: signal: no new invitations; draining (signal again to exit at once)")
		close(r.halt)
		if _, ok := <-sigs; ok {
			os.Exit(130)
		}
	}()
	switch {
	case cfg.concurrency > 0:
		r.closedLoop(end)
	case cfg.rate > 0:
		r.openLoop(start, end)
	default:
		t := time.NewTimer(time.Until(end))
		select {
		case <-t.C:
		case <-r.halt:
			t.Stop()
		}
	}
	windowEnd := time.Now()
	r.st.mu.Lock()
	r.st.windowEnd = windowEnd
	r.st.mu.Unlock()
	r.drain(cfg.drain)
	drained := time.Now()
	cpu, gcs := processCPU()-cpuBefore, gcCycles()-gcBefore
	var brokersAfter brokerProc
	if len(cfg.brokerMetrics) > 0 {
		if brokersAfter, err = scrapeBrokers(context.Background(), cfg.brokerMetrics); err != nil {
			return nil, err
		}
	}
	var traffic natsTraffic // before the checks below add their reads
	if env != nil {
		traffic = env.traffic().sub(trafficBefore)
	}
	userSeconds := prog.end()

	r.tr.unfinished(time.Now())
	if r.st.started.Load() > 0 {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		var st *store.Store
		if env != nil {
			st = env.store()
		}
		r.checkQuiescent(cctx, st)
		cancel()
	}
	var push *pushReport
	if r.push != nil {
		push = r.push.check()
	}
	var export *exportReport
	var exported map[string][]protocol.Transition
	if open := exportSource(env, cfg); open != nil {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		export, exported = r.checkExport(cctx, open, exportSettle)
		cancel()
	}
	var webhook *webhookReport
	if r.webhooks != nil {
		webhook = r.webhooks.check(exported)
	}
	res = r.result(base, windowEnd.Sub(start), drained.Sub(windowEnd))
	res.Push = push
	res.Export = export
	res.Webhook = webhook
	res.timeline = r.tl
	res.CPUSeconds, res.GCCycles = cpu.Seconds(), gcs
	if res.Completed > 0 {
		res.CPUMsPerInvitation = float64(cpu.Microseconds()) / 1000 / float64(res.Completed)
	}
	if len(cfg.brokerMetrics) > 0 {
		res.BrokerProcess = newBrokerProcReport(brokersBefore, brokersAfter, len(cfg.brokerMetrics), res.Completed)
	}
	if env != nil {
		hb := 0.0
		if ms := r.heartbeatMs.Load(); ms > 0 {
			hb = userSeconds / (float64(ms) / 1000)
		}
		res.BrokerStore = newStoreReport(env.stats().Sub(before), hb, res.Invitations, res.Outcomes[outAccepted])
		res.NATS = newTrafficReport(traffic, res.Completed)
	}
	r.teardown()
	if cfg.memprofile != "" {
		if err := writeHeap(cfg.memprofile); err != nil {
			fmt.Fprintln(errw, "loadgen: memprofile:", err)
		}
	}
	return res, nil
}

// result assembles the report.
func (r *run) result(base *baselineResult, window, drain time.Duration) *result {
	cfg := r.cfg
	res := &result{
		Mode: "embedded", Loop: cfg.mode(), RunID: r.runID, Seed: cfg.seed, Users: cfg.users, Mix: cfg.mix.String(),
		ShortTimeouts: cfg.shortTimeouts, PresenceTTLMs: r.sessionTTL.Load(), Rate: cfg.rate, Concurrency: cfg.concurrency,
		Invitations: r.st.started.Load(), Completed: r.st.completed.Load(), Skipped: r.st.skipped.Load(), SkippedInflight: r.st.skippedInflight.Load(),
		DurationS: window.Seconds(), DrainS: drain.Seconds(), LatencyMs: r.st.latencies(),
	}
	if cfg.concurrency > 0 && window > 0 {
		res.PoolWaitShare = float64(r.st.poolWaitNs.Load()) / float64(int64(cfg.concurrency)*int64(window))
	}
	if cfg.natsURL != "" {
		res.Mode = "nats"
	} else {
		res.Replicas, res.NoHistory = cfg.replicas, !cfg.history
	}
	for _, u := range r.pool.all {
		if u.offline {
			res.OfflineUsers++
		}
	}
	r.st.mu.Lock()
	res.ThroughputPerS = float64(r.st.terminalInWindow) / window.Seconds()
	res.AcceptedPerS = float64(r.st.accInWindow) / window.Seconds()
	res.Outcomes = copyMap(r.st.outcomes)
	res.Errors = copyMap(r.st.errors)
	res.ErrorsByCommand = copyMap(r.st.errorsByCmd)
	res.Notes = copyMap(r.st.notes)
	asyncErrors.Lock()
	for k, v := range asyncErrors.n {
		res.Notes[k] += v
	}
	asyncErrors.Unlock()
	res.OutcomesByBehaviour = map[string]map[string]int64{}
	for b, m := range r.st.byBehaviour {
		res.OutcomesByBehaviour[b] = copyMap(m)
	}
	r.st.mu.Unlock()
	res.Violations, res.ViolationsByKind, res.ViolationSamples = r.tr.violations()
	if base != nil {
		res.Baseline = base
		if base.KVCreatePerS > 0 {
			ratio := res.AcceptedPerS / base.KVCreatePerS
			res.RatioToKVCreate = &ratio
		}
		if base.LifecycleFloorPerS > 0 {
			ratio := res.AcceptedPerS / base.LifecycleFloorPerS
			res.RatioToFloor = &ratio
		}
	}
	return res
}

func copyMap[V any](m map[string]V) map[string]V {
	out := make(map[string]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// teardown stops scheduled actions and ends every session: against an
// existing deployment the users log out; an embedded one is simply stopped.
func (r *run) teardown() {
	r.stop()
	waitTimeout(&r.bg, 10*time.Second)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for _, u := range r.pool.all {
		cl, _ := u.client()
		if cl == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if r.cfg.natsURL == "" {
				cl.Close()
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = cl.Logout(ctx)
		}()
	}
	wg.Wait()
	for _, nc := range r.conns {
		_ = nc.FlushTimeout(2 * time.Second)
	}
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

func writeHeap(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	runtime.GC()
	return pprof.WriteHeapProfile(f)
}

// gcCycles is how many garbage collections this process has completed.
func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// processCPU is the CPU time (user and system) this process has used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
