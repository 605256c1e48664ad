// The final report: a readable summary and the --json object.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/ringer-dev/ringer/broker/store"
)

// result is the run's report; its JSON form is the --json line.
type result struct {
	Mode          string  `json:"mode"` // "embedded" or "nats"
	Loop          string  `json:"loop"`
	RunID         string  `json:"run_id"`
	Seed          uint64  `json:"seed"`
	Users         int     `json:"users"`
	OfflineUsers  int     `json:"offline_users"`
	Mix           string  `json:"mix"`
	ShortTimeouts bool    `json:"short_timeouts"`
	Replicas      int     `json:"replicas,omitempty"`   // embedded mode
	NoHistory     bool    `json:"no_history,omitempty"` // embedded mode, --history=false
	PresenceTTLMs int64   `json:"presence_ttl_ms"`
	Rate          float64 `json:"rate,omitempty"`
	Concurrency   int     `json:"concurrency,omitempty"`

	Invitations int64 `json:"invitations"` // started (Send called), carriers of busy collisions included
	Completed   int64 `json:"completed"`   // every expected party saw the terminal outcome (and the call end)
	Skipped     int64 `json:"skipped"`     // open loop: not started, no idle users or too many in flight
	// SkippedInflight is the part of Skipped that found --max-inflight
	// invitations in flight; the rest found no idle user.
	SkippedInflight int64 `json:"skipped_max_inflight"`
	// PoolWaitShare: closed loop, the share of the workers' time in the
	// window spent waiting for an idle pair of users.
	PoolWaitShare  float64 `json:"pool_wait_share,omitempty"`
	DurationS      float64 `json:"duration_s"` // the window during which invitations were started
	DrainS         float64 `json:"drain_s"`    // how long the end took to quiesce
	ThroughputPerS float64 `json:"throughput_per_s"`
	AcceptedPerS   float64 `json:"accepted_per_s"`
	// CPUSeconds is the CPU time this process used from the start of the
	// window to the end of the drain; embedded, that is NATS and the
	// brokers too. CPUMsPerInvitation divides it by the completed
	// invitations: what one costs, steadier than a rate on a shared box.
	CPUSeconds         float64 `json:"cpu_s"`
	CPUMsPerInvitation float64 `json:"cpu_ms_per_invitation"`
	// GCCycles counts this process's garbage collections over the same
	// span: each marks the whole heap (embedded, NATS's and the broker's
	// too) for 0.1 s or more on two cores, and the latencies measured meanwhile
	// include it (--gc-floor).
	GCCycles uint64 `json:"gc_cycles"`

	Outcomes            map[string]int64            `json:"outcomes"`
	OutcomesByBehaviour map[string]map[string]int64 `json:"outcomes_by_behaviour"`
	Errors              map[string]int64            `json:"errors"`
	ErrorsByCommand     map[string]int64            `json:"errors_by_command"`
	LatencyMs           map[string]latency          `json:"latency_ms"`

	Violations       int64            `json:"violations"`
	ViolationsByKind map[string]int64 `json:"violations_by_kind"`
	ViolationSamples []string         `json:"violation_samples"`
	Notes            map[string]int64 `json:"notes"`

	Baseline        *baselineResult `json:"baseline,omitempty"`
	RatioToKVCreate *float64        `json:"ratio_to_kv_create,omitempty"`
	// RatioToFloor: accepted lifecycles/s ÷ the same run's
	// lifecycle_floor_per_s, the share of its protocol's floor Ringer reaches.
	RatioToFloor *float64     `json:"ratio_to_floor,omitempty"`
	BrokerStore  *storeReport `json:"broker_store,omitempty"`
	// NATS: embedded, the servers' message counts over the window and drain.
	NATS *trafficReport `json:"nats,omitempty"`
	// BrokerProcess: --broker-metrics, the brokers' own CPU and memory.
	BrokerProcess *brokerProcReport `json:"broker_process,omitempty"`
	// Push: the push behaviour's requests and wake-ups (with a push weight
	// in the mix).
	Push *pushReport `json:"push,omitempty"`
	// Export: --export, what the export stream held for the run.
	Export *exportReport `json:"export,omitempty"`
	// Webhook: --webhook-listen, what a webhook relay delivered.
	Webhook *webhookReport `json:"webhook,omitempty"`

	timeline *timeline // the run's samples, for --html
}

// storeReport is the embedded broker's JetStream round trips
// (broker.Store().Stats()) from the start of the workload to the end of
// the drain. Per-invitation figures subtract the estimated heartbeat writes
// (logged-in user-seconds ÷ heartbeat period); per accepted lifecycle they
// divide everything else by the accepted lifecycles, so they are exact only
// for a --mix accept=1 run.
type storeReport struct {
	Reads              uint64  `json:"reads"`
	Writes             uint64  `json:"writes"`
	Timers             uint64  `json:"timers"`
	TimersSkipped      uint64  `json:"timers_skipped"` // handed to the timer batcher, not stored: needed no more
	HeartbeatWritesEst float64 `json:"heartbeat_writes_est"`
	ReadsPerInvitation float64 `json:"reads_per_invitation"`
	WritesPerInv       float64 `json:"writes_per_invitation"`
	ReadsPerAccepted   float64 `json:"reads_per_accepted,omitempty"`
	WritesPerAccepted  float64 `json:"writes_per_accepted,omitempty"`
	TimersPerAccepted  float64 `json:"timers_per_accepted,omitempty"`
}

// trafficReport is what the embedded NATS servers carried during the
// window and the drain, per completed invitation: every message a client
// published (client_in) or was delivered (client_out), and every message a
// server received from another (routed_in: Raft replication, and requests,
// replies and deliveries between the server a client is connected to and
// the one that serves it). Heartbeats and history reads in the window are
// included.
type trafficReport struct {
	ClientIn              int64   `json:"client_in"`
	ClientOut             int64   `json:"client_out"`
	RoutedIn              int64   `json:"routed_in"`
	ClientInPerInv        float64 `json:"client_in_per_invitation"`
	ClientOutPerInv       float64 `json:"client_out_per_invitation"`
	RoutedInPerInv        float64 `json:"routed_in_per_invitation"`
	MessagesPerInvitation float64 `json:"messages_per_invitation"` // the three together
}

func newTrafficReport(t natsTraffic, completed int64) *trafficReport {
	r := &trafficReport{ClientIn: t.clientIn, ClientOut: t.clientOut, RoutedIn: t.routedIn}
	if completed > 0 {
		n := float64(completed)
		r.ClientInPerInv, r.ClientOutPerInv, r.RoutedInPerInv = float64(t.clientIn)/n, float64(t.clientOut)/n, float64(t.routedIn)/n
		r.MessagesPerInvitation = float64(t.clientIn+t.clientOut+t.routedIn) / n
	}
	return r
}

func newStoreReport(d store.StatsSnapshot, hbWrites float64, invitations, accepted int64) *storeReport {
	sr := &storeReport{Reads: d.Reads, Writes: d.Writes, Timers: d.Timers, TimersSkipped: d.Skipped, HeartbeatWritesEst: hbWrites}
	w := max(0, float64(d.Writes)-hbWrites)
	if invitations > 0 {
		n := float64(invitations)
		sr.ReadsPerInvitation, sr.WritesPerInv = float64(d.Reads)/n, w/n
	}
	if accepted > 0 {
		n := float64(accepted)
		sr.ReadsPerAccepted, sr.WritesPerAccepted = float64(d.Reads)/n, w/n
		sr.TimersPerAccepted = float64(d.Timers) / n
	}
	return sr
}

// invariant lines of the text report, with the violation kinds that break them.
var invariantLines = []struct {
	what  string
	kinds []string
}{
	{"every invitation reached exactly one terminal outcome", []string{vNoTerminal, vMultiple, vUnknownOutcome}},
	{"caller and callee saw the same outcome (each online party saw it)", []string{vMismatch, vMissing}},
	{"no event applied out of revision order (OnEvent, per client)", []string{vOutOfOrder}},
	{"no timer fired before its deadline", []string{vTimerEarly}},
	{"no user left busy (sync; line records when embedded)", []string{vLeftBusy, vLeftBusyLine}},
	{"group: one winner per FIRST invitation; every callee one outcome, the same on all sides", []string{vGroupWinners, vGroupViews, vGroupTwice}},
	{"group: a JOIN call is on exactly while two or more are in it", []string{vJoinEnd}},
	{"glare: two users calling each other end up in one call", []string{vGlare}},
}

// rateWarning says why an open loop started fewer invitations than it
// offered, when more than 5 % were skipped, or that a closed loop's workers
// spent more than 5 % of their time waiting for idle users ("" otherwise).
func rateWarning(res *result) string {
	if strings.HasPrefix(res.Loop, "closed") && res.PoolWaitShare > 0.05 {
		return fmt.Sprintf("the workers waited for an idle pair of users %.0f %% of the time: the user pool (--users, --cooldown), not the system under test, bounded the run; raise --users", 100*res.PoolWaitShare)
	}
	offered := res.Invitations + res.Skipped
	if !strings.HasPrefix(res.Loop, "open") || offered == 0 || float64(res.Skipped) <= 0.05*float64(offered) {
		return ""
	}
	why := fmt.Sprintf("%d found no idle user: each user is busy for its calls' ring, think and hold times, so raise --users or lower --rate, --think or --hold", res.Skipped-res.SkippedInflight)
	if res.SkippedInflight > 0 {
		why += fmt.Sprintf("; %d found --max-inflight invitations in flight", res.SkippedInflight)
	}
	return fmt.Sprintf("offered %.0f/s but started %.0f/s: %d of %d invitations skipped (%s)",
		float64(offered)/res.DurationS, float64(res.Invitations)/res.DurationS, res.Skipped, offered, why)
}

func writeText(w io.Writer, res *result) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	mode := fmt.Sprintf("embedded NATS (R%d) + 1 broker, in-process", res.Replicas)
	if res.Mode == "nats" {
		mode = "existing deployment (--nats)"
	}
	p("")
	p("Ringer loadgen report: %s, run %s, seed %d", mode, res.RunID, res.Seed)
	to := "default timeouts"
	if res.ShortTimeouts {
		to = "short timeouts (offline 2s, expire 3s, accept-ack 2s)"
	}
	p("  workload     %s for %.1fs; mix %s", res.Loop, res.DurationS, res.Mix)
	p("  users        %d (%d offline callees); %s; presence TTL %dms", res.Users, res.OfflineUsers, to, res.PresenceTTLMs)
	p("  invitations  %d started, %d completed, %d skipped; drain took %.1fs", res.Invitations, res.Completed, res.Skipped, res.DrainS)
	if w := rateWarning(res); w != "" {
		p("  WARNING      %s", w)
	}
	p("  throughput   %.1f terminal outcomes/s, %.1f accepted lifecycles/s (accepted and hung up)", res.ThroughputPerS, res.AcceptedPerS)
	who := "loadgen, NATS and broker(s)"
	if res.Mode == "nats" {
		who = "loadgen alone"
	}
	p("  cpu          %.1f s (%s), %.2f ms per completed invitation; %d garbage collections (their marking shows in the latencies; --gc-floor)",
		res.CPUSeconds, who, res.CPUMsPerInvitation, res.GCCycles)
	if b := res.Baseline; b != nil {
		p("  baseline     request-reply %.0f/s, KV create %.0f/s, KV update %.0f/s, atomic batch of 3 creates %.0f/s (%d workers, %.1fs each, R%d)",
			b.RequestReplyPerS, b.KVCreatePerS, b.KVUpdatePerS, b.KVBatch3PerS, b.Concurrency, b.DurationS, b.Replicas)
		if b.Error != "" {
			p("               baseline incomplete: %s", b.Error)
		}
		if b.LifecycleFloorPerS > 0 && b.KVCreatePerS > 0 {
			p("  floor        %.0f accepted calls/s: five request/replies, five KV writes and five events per call, raw NATS (%.3f of KV creates/s)",
				b.LifecycleFloorPerS, b.LifecycleFloorPerS/b.KVCreatePerS)
		}
		if res.RatioToKVCreate != nil {
			p("  ratio        accepted lifecycles/s ÷ KV creates/s = %.3f", *res.RatioToKVCreate)
		}
		if res.RatioToFloor != nil {
			p("               accepted lifecycles/s ÷ lifecycle floor = %.2f", *res.RatioToFloor)
		}
	}
	p("")
	p("Latency (ms)                  count       p50       p99     p99.9       max")
	for _, st := range stageOrder {
		l := res.LatencyMs[st]
		if l.Count == 0 {
			continue
		}
		extra := ""
		if l.Early > 0 {
			extra = fmt.Sprintf("  (%d negative, counted as 0)", l.Early)
		}
		p("  %-26s %8d %9.2f %9.2f %9.2f %9.2f%s", st, l.Count, l.P50, l.P99, l.P999, l.Max, extra)
	}
	p("")
	p("Outcomes")
	for _, k := range sortedKeys(res.Outcomes) {
		p("  %-22s %8d", k, res.Outcomes[k])
	}
	p("Outcomes by behaviour")
	for _, b := range sortedKeys(res.OutcomesByBehaviour) {
		var parts []string
		for _, k := range sortedKeys(res.OutcomesByBehaviour[b]) {
			parts = append(parts, fmt.Sprintf("%s %d", k, res.OutcomesByBehaviour[b][k]))
		}
		p("  %-14s %s", b, strings.Join(parts, ", "))
	}
	if ps := res.Push; ps != nil {
		p("Push: %d invitations to asleep callees, %d RING and %d STOP requests, %d callees woken", ps.Invitations, ps.Requests, ps.StopRequests, ps.Woken)
	}
	if len(res.ErrorsByCommand) == 0 {
		p("Command errors: none")
	} else {
		p("Command errors (verb code: count)")
		for _, k := range sortedKeys(res.ErrorsByCommand) {
			p("  %-30s %8d", k, res.ErrorsByCommand[k])
		}
	}
	if bs := res.BrokerStore; bs != nil {
		p("Broker JetStream round trips (workload + drain): %d reads, %d writes, %d timers (%d more not stored: needed no more); ~%.0f heartbeat writes",
			bs.Reads, bs.Writes, bs.Timers, bs.TimersSkipped, bs.HeartbeatWritesEst)
		p("  per invitation (heartbeats excluded): %.2f reads, %.2f writes", bs.ReadsPerInvitation, bs.WritesPerInv)
		if bs.WritesPerAccepted > 0 {
			p("  per accepted lifecycle (all of the above ÷ accepted; exact with --mix accept=1): %.2f reads, %.2f writes, %.2f timers",
				bs.ReadsPerAccepted, bs.WritesPerAccepted, bs.TimersPerAccepted)
		}
	}
	if t := res.NATS; t != nil {
		p("NATS messages (workload + drain, all servers): %d from clients, %d to clients, %d between servers", t.ClientIn, t.ClientOut, t.RoutedIn)
		p("  per invitation: %.1f from clients, %.1f to clients, %.1f between servers; %.1f in all",
			t.ClientInPerInv, t.ClientOutPerInv, t.RoutedInPerInv, t.MessagesPerInvitation)
	}
	if b := res.BrokerProcess; b != nil {
		p("Brokers' own processes (--broker-metrics, %d): %.1f s of CPU over the window and drain, %.3f ms per completed invitation; largest RSS at the end %.0f MiB",
			b.Brokers, b.CPUSeconds, b.CPUMsPerInvitation, b.RSSBytes/(1<<20))
	}
	if len(res.Notes) > 0 {
		p("Notes (not violations)")
		for _, k := range sortedKeys(res.Notes) {
			p("  %-60s %8d", k, res.Notes[k])
		}
	}
	p("")
	p("Invariants")
	for _, il := range invariantLines {
		n := int64(0)
		for _, k := range il.kinds {
			n += res.ViolationsByKind[k]
		}
		status := "ok"
		if n > 0 {
			status = fmt.Sprintf("BROKEN (%d)", n)
		}
		p("  %-68s %s", il.what, status)
	}
	if res.Violations > 0 {
		p("  %d violations; samples:", res.Violations)
		for _, s := range res.ViolationSamples {
			p("    %s", s)
		}
	}
}

func writeJSON(w io.Writer, res *result) error {
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
