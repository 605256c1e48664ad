#!/usr/bin/env bash
# Scale table of docs/benchmarks.md: brokerd's memory and CPU with N idle
# online users (logged in, heartbeating) and with ~10k ringing invitations.
# nats-server (R1, file store), brokerd and loadgen run as separate
# processes, so that brokerd's own RSS, Go heap and CPU can be read.
#
#   cmd/loadgen/scale.sh                 # idle users 0, 10000, 100000, then the ringing run
#   USERS="0 10000" RINGING=0 cmd/loadgen/scale.sh
#
# Environment: USERS (idle user counts), RINGING (1/0), TTL (presence TTL,
# default 10m: heartbeats every TTL/3, so 100k users cost 500 writes/s
# instead of 20k/s at the 15 s default), SETTLE (seconds between the end of
# the logins and the CPU window; use more than TTL/3 to include the steady
# heartbeat load), WINDOW (CPU sampling seconds), RING_RATE and RING_SECONDS
# (sends/s and for how long; the invitations expire after RING_EXPIRE, so
# ~RING_RATE×RING_SECONDS ring at once at the end of the sends).
set -euo pipefail
cd "$(dirname "$0")/../.."

USERS=${USERS:-"0 10000 100000"}
RINGING=${RINGING:-1}
TTL=${TTL:-10m}
WINDOW=${WINDOW:-20}
SETTLE=${SETTLE:-5}
RING_RATE=${RING_RATE:-100}
RING_SECONDS=${RING_SECONDS:-100}
RING_EXPIRE=${RING_EXPIRE:-150s}
PORT=${PORT:-4777}
HTTP=${HTTP:-127.0.0.1:8777}
W=$(mktemp -d /tmp/ringer-scale.XXXXXX)
URL=nats://127.0.0.1:$PORT

log() { printf '==> %s\n' "$*" >&2; }

log "building into $W"
go build -o "$W/nats-server" github.com/nats-io/nats-server/v2
go build -o "$W/brokerd" ./cmd/brokerd
go build -o "$W/loadgen" ./cmd/loadgen

PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT

# fresh: a new nats-server (empty store) and brokerd for each row, so that
# the sessions a previous row left behind do not expire during this one.
fresh() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	PIDS=()
	rm -rf "$W/data"
	"$W/nats-server" -js -sd "$W/data" -a 127.0.0.1 -p "$PORT" >"$W/nats.log" 2>&1 &
	NATS=$!
	PIDS+=("$NATS")
	sleep 1
	# --gc-floor 0: Go's default pacing, so that heap in use is what brokerd
	# keeps, not garbage waiting for the floor (which is a fixed 512 MiB).
	"$W/brokerd" --nats "$URL" --presence-ttl "$TTL" --http "$HTTP" --gc-floor 0 --log-level warn >"$W/brokerd.log" 2>&1 &
	BROKER=$!
	PIDS+=("$BROKER")
	for _ in $(seq 50); do curl -sf "http://$HTTP/readyz" >/dev/null && break; sleep 0.2; done
}

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
metric() { curl -s "http://$HTTP/metrics" | awk -v m="$1" '$1==m {printf "%.0f", $2}'; }
HZ=$(getconf CLK_TCK)

# sample LABEL: brokerd and nats-server CPU (% of one core) over WINDOW seconds, then memory.
sample() {
	local b0 n0 b1 n1
	b0=$(ticks "$BROKER"); n0=$(ticks "$NATS")
	sleep "$WINDOW"
	b1=$(ticks "$BROKER"); n1=$(ticks "$NATS")
	printf '| %s | %.1f%% | %s | %.1f | %s | %.1f%% | %s |\n' "$1" \
		"$(echo "($b1-$b0)*100/$HZ/$WINDOW" | bc -l)" "$(rss_mb "$BROKER")" \
		"$(echo "$(metric go_memstats_heap_inuse_bytes)/1048576" | bc -l)" "$(metric go_goroutines)" \
		"$(echo "($n1-$n0)*100/$HZ/$WINDOW" | bc -l)" "$(rss_mb "$NATS")"
}

# wait_for FILE PATTERN: until a loadgen log line matches.
wait_for() {
	for _ in $(seq 3000); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.2; done
	echo "timeout waiting for '$2' in $1" >&2
	return 1
}

echo
echo "| load | brokerd CPU (% of a core) | brokerd RSS MB | brokerd heap in use MB | brokerd goroutines | nats-server CPU (% of a core) | nats-server RSS MB |"
echo "|---|---|---|---|---|---|---|"
for n in $USERS; do
	fresh
	if [[ $n == 0 ]]; then
		sample "no users (idle broker)"
		continue
	fi
	"$W/loadgen" --nats "$URL" --users "$n" --mix accept=1 --rate 0 --duration 1h --login-concurrency 128 --conns 8 >"$W/lg-$n.out" 2>"$W/lg-$n.err" &
	LG=$!
	wait_for "$W/lg-$n.err" "users logged in in"
	sleep "$SETTLE"
	sample "$n idle online users (TTL $TTL)"
	grep "users logged in in" "$W/lg-$n.err" | sed 's/^/    /' >&2
	kill -9 "$LG" 2>/dev/null || true # no logout storm; the next row starts afresh
	wait "$LG" 2>/dev/null || true
done

if [[ $RINGING == 1 ]]; then
	fresh
	ring_users=$((RING_RATE * RING_SECONDS * 2 + 2000))
	"$W/loadgen" --nats "$URL" --users "$ring_users" --mix ignore=1 --rate "$RING_RATE" --duration "${RING_SECONDS}s" \
		--short-timeouts=false --timeouts "expire=$RING_EXPIRE" --drain 300s --login-concurrency 128 --json >"$W/ring.json" 2>"$W/ring.err" &
	LG=$!
	wait_for "$W/ring.err" "users logged in in"
	sleep $((RING_SECONDS - WINDOW - 2))
	sample "~$((RING_RATE * (RING_SECONDS - 2))) ringing invitations ($ring_users users, sends at $RING_RATE/s)"
	grep '^progress' "$W/ring.err" | tail -1 | sed 's/^/    at the end of the window: /' >&2
	wait "$LG" || true
	python3 - "$W/ring.json" <<'EOF' >&2
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
t = r["latency_ms"]["timer_lateness"]
s = r["latency_ms"]["send_to_ring"]
print("    ringing run: %d invitations, outcomes %s, errors %s, violations %d" % (r["invitations"], r["outcomes"], r["errors"], r["violations"]))
print("    send_to_ring p50 %.1f ms p99 %.1f ms; timer lateness p50 %.0f ms p99 %.0f ms max %.0f ms (%d timers)"
      % (s["p50"], s["p99"], t["p50"], t["p99"], t["max"], t["count"]))
EOF
fi
