#!/usr/bin/env bash
# Scale-out measurement (issue 16, docs/benchmarks.md "Scale-out"): accepted
# calls per second of a Ringer cluster with 1, 3 and 5 nats-server nodes, each
# limited to the same CPU share (docker `cpus:`), so that NATS — not the
# brokers or loadgen — is what runs out. R1 for one server, R3 otherwise.
#
# A point is a server count N and a partition count P (brokerd --partitions;
# each of --partitions' words, "n" meaning N; one server gets P = 1 only).
# For each point it writes a throwaway compose project under
# dist/scale/<project>/ (N nats-server nodes in one JetStream cluster, no
# auth; --brokers brokerd workers; loadgen), waits for every broker to be
# ready, warms up for --warmup (the brokers spread the partitions' leaders
# over the servers meanwhile: docs/architecture.md, "Partitions"), runs
# `loadgen --mix accept=1 --think 0 --hold 0` closed-loop at --concurrency
# for --duration, records accepted/s and violations, and tears the project
# down (down -v). Its last line is one JSON object:
#
#   {"points":[{"nats_servers":N,"partitions":P,"replicas":R,"cpu_per_server":C,
#               "accepted_per_s":X,"violations":V,"server_ms_per_call":[…],
#               "broker_servers":[…],"server_idle_ms_per_s":[…]},…]}
#
# server_ms_per_call is each nats-server's CPU (its container's cgroup) over
# the measured run divided by the calls completed in it: the per-server
# costs docs/benchmarks.md's cost model is built from (null where the
# container's cgroup could not be read). broker_servers is the server each
# broker was connected to at the end (from its logs: "" if it did not say).
# server_idle_ms_per_s (with --idle) is each nats-server's CPU per second
# while nothing runs but the brokers, between the warm-up and the load: the
# fixed cost of the deployment (Raft groups, the brokers' leader checks,
# consumers' heartbeats), which grows with the partitions.
#
# Usage: scripts/scale-out.sh [--servers "1 3 5"] [--partitions "1 n"]
#                             [--cpus 0.2] [--brokers 2] [--duration 20s]
#                             [--warmup 20s] [--concurrency 64] [--users 800]
#                             [--rate R] [--presence-ttl 60s] [--no-build]
#                             [--broker-flags "--follow-leader=false …"] [--spread]
#                             [--loadgen-flags "--local-ids=false …"] [--idle 20s]
#                             [--profile 15s] [--state-writes 10s]
#   --cpus  CPU share of each nats-server container (docker --cpus; 0 = no
#           limit). On a 2-core box keep servers × cpus well under 2, so that
#           brokers and loadgen are not what bounds the run.
#   --presence-ttl  the brokers' presence TTL: the users heartbeat every
#           third of it (800 users at 60 s: 40 heartbeats/s, each a
#           replicated write and a replicated consumer acknowledgement; at
#           brokerd's default 15 s they would be 160/s, most of a capped
#           cluster's budget). 60 s as in docs/benchmarks.md's peak runs.
#   --broker-flags  more brokerd flags, space-separated, for every broker.
#   --loadgen-flags  more loadgen flags, space-separated (e.g. --local-ids=false).
#   --spread  broker i lists server ((i-1) mod N)+1 first and connects in that
#           order (brokerd --nats-ordered), so that the brokers spread evenly
#           over the servers instead of nats.go's random pick (which can put
#           two on one server); --brokers N puts one beside every server.
#   --idle  also measure each server's CPU for this long with no load, after
#           the warm-up (its users' sessions still live, heartbeating none).
#   --profile  also take a CPU profile of every nats-server for this long
#           during the loaded run (from 3 s in, past the logins), through its
#           prof_port: dist/scale/<project>/n<i>.cpu.pprof, read with
#           `go tool pprof -top dist/scale/<project>/n1.cpu.pprof`. Profiling
#           costs the capped servers a little CPU: compare profiled runs only
#           with each other.
#   --state-writes  also count, for this long during the loaded run (from 3 s
#           in), how often each durable consumer's state file is rewritten
#           (scripts/consumer-state-writes.py; reads the containers' volumes
#           on the host, so it needs root): consumer_state_writes in the
#           point, per stream/consumer summed over replicas, and the total.
#   --rate  open loop at R invitations/s instead of the closed loop: with
#           --cpus 0, what each server spends per call at a rate all of them
#           sustain (the cost model's input).
set -euo pipefail
cd "$(dirname "$0")/.."

SERVERS="1 3 5" PARTS="1 n" CPUS=0.2 BROKERS=2 DURATION=20s WARMUP=20s CONCURRENCY=64 USERS=800 RATE="" TTL=60s BUILD=1 BFLAGS="" SPREAD=0 LFLAGS="" IDLE="" PROFILE="" WRITES=""
while (($#)); do
	case "$1" in
	--servers) SERVERS=$2; shift 2 ;;
	--partitions) PARTS=$2; shift 2 ;;
	--warmup) WARMUP=$2; shift 2 ;;
	--cpus) CPUS=$2; shift 2 ;;
	--brokers) BROKERS=$2; shift 2 ;;
	--duration) DURATION=$2; shift 2 ;;
	--concurrency) CONCURRENCY=$2; shift 2 ;;
	--users) USERS=$2; shift 2 ;;
	--rate) RATE=$2; shift 2 ;;
	--presence-ttl) TTL=$2; shift 2 ;;
	--broker-flags) BFLAGS=$2; shift 2 ;;
	--loadgen-flags) LFLAGS=$2; shift 2 ;;
	--idle) IDLE=$2; shift 2 ;;
	--profile) PROFILE=${2%s}; shift 2 ;;
	--state-writes) WRITES=${2%s}; shift 2 ;;
	--no-build) BUILD=0; shift ;;
	--spread) SPREAD=1; shift ;;
	-h | --help) sed -n '2,50p' "$0"; exit 0 ;;
	*) echo "scale-out.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done

log() { echo "$(date +%H:%M:%S) $*" >&2; }
die() { log "scale-out.sh: $*"; exit 1; }
command -v docker-compose >/dev/null || die "docker-compose is not installed"
((BUILD)) && scripts/build-images.sh

# compose writes the project of one point: n nats-server nodes, the brokers, loadgen.
compose() { # DIR N REPLICAS PARTITIONS
	local dir=$1 n=$2 replicas=$3 parts=$4 routes="" urls="" i j
	for ((i = 1; i <= n; i++)); do
		routes+="nats-route://n$i:6222, "
		urls+="nats://n$i:4222,"
	done
	urls=${urls%,}
	local deps=""
	for ((i = 1; i <= n; i++)); do deps+="n$i, "; done
	deps=${deps%, }
	for ((i = 1; i <= n; i++)); do
		{
			echo "server_name: n$i"
			echo "listen: 0.0.0.0:4222"
			echo "http_port: 8222"
			echo "jetstream { store_dir: /data }"
			if [[ -n $PROFILE ]]; then echo "prof_port: 6060"; fi
			if ((n > 1)); then echo "cluster { name: scale, listen: 0.0.0.0:6222, routes: [ ${routes%, } ] }"; fi
		} >"$dir/n$i.conf"
	done
	{
		echo 'version: "2.4"'
		echo 'services:'
		for ((i = 1; i <= n; i++)); do
			cat <<EOF
  n$i:
    image: ringer/nats-server:dev
    command: ["-c", "/etc/scale/n$i.conf"]
$( [[ $CPUS == 0 ]] || echo "    cpus: $CPUS")
    volumes: ["./:/etc/scale:ro", "/data"]
EOF
		done
		local burls order
		for ((i = 1; i <= BROKERS; i++)); do
			burls=$urls order=""
			if ((SPREAD)); then # this broker's server first, then the others in turn
				burls="" order=", --nats-ordered"
				for ((j = 0; j < n; j++)); do burls+="nats://n$(((i - 1 + j) % n + 1)):4222,"; done
				burls=${burls%,}
			fi
			cat <<EOF
  b$i:
    image: ringer/brokerd:dev
    hostname: b$i
    restart: unless-stopped
    depends_on: [$deps]
    environment: { RINGER_NATS: "$burls" }
    command: [--replicas=$replicas, --partitions=$parts, --presence-ttl=$TTL, --http=0.0.0.0:8080, --log-format=json$order$(printf ', %s' $BFLAGS)]
EOF
		done
		cat <<EOF
  loadgen:
    image: ringer/loadgen:dev
    profiles: ["tools"]
    environment: { RINGER_NATS: "$urls" }
EOF
	} >"$dir/compose.yml"
}

# cpu_ns CONTAINER-ID -> the CPU time the container has used, in ns (cgroup v1 or v2).
cpu_ns() {
	local f
	for f in /sys/fs/cgroup/cpuacct/docker/$1/cpuacct.usage /sys/fs/cgroup/cpu,cpuacct/docker/$1/cpuacct.usage; do
		[[ -r $f ]] && { cat "$f"; return; }
	done
	for f in /sys/fs/cgroup/system.slice/docker-$1.scope/cpu.stat /sys/fs/cgroup/docker/$1/cpu.stat; do
		[[ -r $f ]] && { awk '$1 == "usage_usec" { print $2 * 1000 }' "$f"; return; }
	done
	echo -1 # unknown: the point reports null
}

# healthy PROJECT DIR SERVICE... -> waits until each service answers its
# health check (nats-server /healthz, brokerd /readyz). Asked here, only
# until then, and not by a compose healthcheck: Docker would go on asking
# every second through the run, and a /healthz (which looks at every stream
# and consumer) each second is a fifth of a 0.2-CPU server doing nothing,
# more with more partitions.
healthy() {
	local project=$1 dir=$2 svc t id url
	shift 2
	for svc in "$@"; do
		url=http://127.0.0.1:8222/healthz
		[[ $svc == b* ]] && url=http://127.0.0.1:8080/readyz
		for ((t = 0; ; t++)); do
			id=$(docker-compose -p "$project" -f "$dir/compose.yml" ps -q "$svc")
			[[ -n $id ]] && docker exec "$id" /healthcheck "$url" >/dev/null 2>&1 && break
			((t < 180)) || return 1
			sleep 1
		done
	done
}

POINTS=()
for n in $SERVERS; do
	replicas=3
	((n == 1)) && replicas=1
	plist=""
	for p in $PARTS; do
		[[ $p == n ]] && p=$n
		((n == 1)) && p=1
		[[ " $plist " == *" $p "* ]] || plist+=" $p"
	done
	for parts in $plist; do
		project="ringerscale$$n${n}p$parts"
		dir="dist/scale/$project"
		mkdir -p "$dir"
		chmod 755 "$dir"
		compose "$dir" "$n" "$replicas" "$parts"
		dc() { docker-compose -p "$project" -f "$dir/compose.yml" "$@"; }
		trap 'dc down -v >/dev/null 2>&1 || true' EXIT
		log "point: $n nats-server(s) at $CPUS CPU each, R$replicas, $parts partition(s), $BROKERS brokers"
		nodes=() brokers=()
		for ((i = 1; i <= n; i++)); do nodes+=("n$i"); done
		for ((i = 1; i <= BROKERS; i++)); do brokers+=("b$i"); done
		dc up -d "${nodes[@]}" >"$dir/up.log" 2>&1 || die "up failed (see $dir/up.log)"
		healthy "$project" "$dir" "${nodes[@]}" || { dc logs >"$dir/compose.log" 2>&1; die "NATS not healthy in 180 s (see $dir/compose.log)"; }
		dc up -d "${brokers[@]}" >>"$dir/up.log" 2>&1 || die "up failed (see $dir/up.log)"
		healthy "$project" "$dir" "${brokers[@]}" || { dc logs >"$dir/compose.log" 2>&1; die "brokers not ready in 180 s (see $dir/compose.log)"; }
		loop=(--concurrency "$CONCURRENCY")
		[[ -n $RATE ]] && loop=(--rate "$RATE" --max-inflight "$((CONCURRENCY * 4))")
		load() { dc run --rm loadgen --mix accept=1 --think 0 --hold 0 "${loop[@]}" --users "$USERS" --duration "$1" $LFLAGS --json; }
		load "$WARMUP" >/dev/null 2>"$dir/warmup.err" || true
		ids=() before=()
		for ((i = 1; i <= n; i++)); do
			ids+=("$(dc ps -q "n$i")")
			before+=("$(cpu_ns "${ids[-1]}")")
		done
		idle=""
		if [[ -n $IDLE ]]; then
			t0=$(date +%s%N)
			sleep "$IDLE"
			t1=$(date +%s%N)
			for ((i = 0; i < n; i++)); do
				now=$(cpu_ns "${ids[i]}")
				((now < 0 || before[i] < 0)) && idle+="-1 " || idle+="$(((now - before[i]) * 1000 / (t1 - t0))) "
				before[i]=$now
			done
		fi
		profs=()
		if [[ -n $PROFILE ]]; then
			for ((i = 1; i <= n; i++)); do
				ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "${ids[i - 1]}")
				(sleep 3 && curl -sf -o "$dir/n$i.cpu.pprof" "http://$ip:6060/debug/pprof/profile?seconds=$PROFILE" ||
					log "no profile of n$i") &
				profs+=($!)
			done
		fi
		if [[ -n $WRITES ]]; then
			stores=()
			for ((i = 0; i < n; i++)); do
				stores+=("$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/data"}}{{.Source}}{{end}}{{end}}' "${ids[i]}")")
			done
			(sleep 3 && scripts/consumer-state-writes.py "$WRITES" "${stores[@]}" >"$dir/state-writes.json" ||
				log "no state-writes count") &
			profs+=($!)
		fi
		out=$(load "$DURATION" 2>"$dir/loadgen.err" | tail -1) || true
		((${#profs[@]})) && wait "${profs[@]}"
		used=""
		for ((i = 0; i < n; i++)); do
			after=$(cpu_ns "${ids[i]}")
			((after < 0 || before[i] < 0)) && used+="-1 " || used+="$((after - before[i])) "
		done
		dc logs --no-color >"$dir/compose.log" 2>&1 || true
		dc down -v >/dev/null 2>&1 || true
		# where each broker was connected at the end: its last "broker ready" or "nats reconnected"
		bservers=""
		for b in "${brokers[@]}"; do
			bservers+="$(grep -E "^$b[-_]1 " "$dir/compose.log" | grep -E '"(broker ready|nats reconnected)"' | tail -1 |
				sed -nE 's/.*"server":"([^"]*)".*/\1/p') "
		done
		trap - EXIT
		point=$(python3 -c '
import json, sys
n, p, r, c, line = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
used = [int(u) for u in sys.argv[6].split()]
brokers = sys.argv[7].split()
idle = [int(u) for u in sys.argv[8].split()]
writes = None
if sys.argv[9]:
    try:
        writes = json.load(open(sys.argv[9]))
    except (OSError, ValueError):
        writes = None
try:
    res = json.loads(line)
except ValueError:
    sys.exit("loadgen printed no report")
calls = max(res["completed"], 1)
print(json.dumps({"nats_servers": n, "partitions": p, "replicas": r, "cpu_per_server": c,
                  "accepted_per_s": round(res["accepted_per_s"], 1), "violations": res["violations"],
                  "server_ms_per_call": [round(u / 1e6 / calls, 2) if u >= 0 else None for u in used],
                  "broker_servers": brokers,
                  **({"server_idle_ms_per_s": [u if u >= 0 else None for u in idle]} if idle else {}),
                  **({"consumer_state_writes": {"total_per_s": writes["total_per_s"], **writes["per_s"]}} if writes else {})}))
' "$n" "$parts" "$replicas" "$CPUS" "$out" "$used" "$bservers" "$idle" "${WRITES:+$dir/state-writes.json}") || die "point $n/$parts: $point (see $dir/loadgen.err)"
		log "point: $point"
		POINTS+=("$point")
	done
done
(IFS=,; echo "{\"points\":[${POINTS[*]}]}")
