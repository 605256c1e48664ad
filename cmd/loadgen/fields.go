package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// reportFields explains every field of the report (--json), for --help: a
// reader should not need docs/benchmarks.md to read a run.
var reportFields = [][2]string{
	{"mode, loop", "embedded (NATS + brokers in this process) or nats (--nats); open loop at --rate or closed loop at --concurrency"},
	{"run_id, seed", "the prefix of this run's user and invitation ids; the seed of the behaviours, think and hold times"},
	{"users, offline_users", "simulated users, and how many of them are callees that never log in (offline behaviour)"},
	{"mix, short_timeouts, replicas, presence_ttl_ms", "the workload's settings as run"},
	{"rate, concurrency", "invitations offered per second (open loop) or kept in flight (closed loop)"},
	{"invitations", "invitations started in the load window"},
	{"completed", "of those, the ones whose every party saw the terminal outcome (and the call end) by the end of the drain"},
	{"skipped, skipped_max_inflight", "open loop: due starts that did not happen — no idle pair of users (cool-down), or --max-inflight reached (the second count); a warning says which"},
	{"pool_wait_share", "closed loop: the share of the workers' time spent waiting for an idle pair of users; above 0.05 a warning says the user pool, not the system, bounded the run"},
	{"duration_s, drain_s", "the load window, and how long the drain (waiting for the last outcomes) took"},
	{"throughput_per_s, accepted_per_s", "terminal outcomes, and accepted calls, per second of the load window"},
	{"cpu_s, cpu_ms_per_invitation, gc_cycles", "this process's CPU time over the window and drain (embedded: brokers and NATS included), per completed invitation, and its garbage collections"},
	{"outcomes, outcomes_by_behaviour", "terminal outcomes (ACCEPTED, REFUSED, REFUSED_BUSY, CANCELED, a failure reason, SEND_FAILED), in all and by behaviour"},
	{"errors, errors_by_command", "failed commands by error code (TIMEOUT: no reply in time; CLIENT: the client refused), in all and by verb"},
	{"latency_ms", "per stage, count and p50/p99/p999/max in ms: send_to_ring, send_to_received_by_peer, accept_to_accepted, hangup_to_free, timer_lateness(_broker), send_reply, schedule_lag, history_read"},
	{"violations, violations_by_kind, violation_samples", "broken invariants (two outcomes, a party that never saw the outcome, a user left busy, a push request not made once…); any makes the exit status 1"},
	{"notes", "noteworthy things that are not violations (a race the workload lost)"},
	{"baseline, ratio_to_kv_create, ratio_to_floor", "--baseline: raw NATS request/reply, KV create/update and the lifecycle floor (an accepted call's minimum on raw NATS) measured in the same run, and accepted_per_s as a share of them"},
	{"broker_store", "embedded: the brokers' JetStream round trips (reads, writes, timers), per invitation and per accepted call"},
	{"broker_process", "--broker-metrics: the brokers' own processes: brokers, cpu_s (process_cpu_seconds_total summed, window and drain), cpu_ms_per_invitation (per completed invitation), rss_bytes (the largest at the end)"},
	{"nats", "embedded: the servers' messages over the window and drain (varz): from clients, to clients, between servers (Raft replication and hops between servers), in all and per completed invitation; heartbeats included"},
	{"export", "--export (embedded): the run's invitations found on the export stream, their transitions, and how many do not chain to their outcome (missing) or repeat a transition (duplicates)"},
	{"webhook", "--webhook-listen: transitions a webhook relay delivered (first time each), duplicates (at least once), out_of_order (one delivered after a later one of its invitation: a violation) and missing (exported, never delivered: a violation)"},
	{"push", "push behaviour: invitations to asleep callees, RING and STOP requests seen, callees woken, duplicates, RINGs dropped past their deadline"},
}

// usage prints the flags, then what the report's fields mean.
func usage(fs *flag.FlagSet, w io.Writer) func() {
	return func() {
		fmt.Fprintln(w, "Usage: loadgen [flags]\n\nFlags:")
		fs.PrintDefaults()
		fmt.Fprintln(w, "\nThe report (a JSON object with --json; the same in words otherwise):")
		for _, f := range reportFields {
			fmt.Fprintf(w, "  %s\n      %s\n", f[0], strings.TrimSpace(f[1]))
		}
	}
}
