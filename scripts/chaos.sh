#!/usr/bin/env bash
# Chaos run against a throwaway docker-compose cluster (docs/cluster.md):
# builds the images, brings up a cluster under a unique project name (never a
# user's cluster; no host ports), runs loadgen for --duration and meanwhile
#   1. kill -9 brokerd1, later start it again;
#   2. stop nats2 (SIGTERM), later start it again;
#   3. pause a NATS node that does not lead Ringer's bucket (KV_RINGER) for
#      longer than the presence TTL (5 s), then unpause;
# or, named with --faults, a pause of the node that leads the bucket, or a
# network partition that cuts one node's routes to the others while its
# clients stay connected to it (a follower of the bucket, or its leader,
# left in the minority);
# then prints throughput before/during/after each fault from loadgen's
# progress lines, loadgen's outcomes and invariant violations, and as its
# last line exactly: violations=N invitations=M
# Exits non-zero on any violation, if loadgen failed, or if the cluster did
# not come up. Always tears the cluster down (down -v). Logs are kept in
# dist/chaos/<project>/.
#
# Usage: scripts/chaos.sh [--duration 90s] [--rate 50] [--users 200]
#                         [--faults kill,stop,pause,partition] [--push] [--webhook] [--no-build] [--no-loadgen]
#   --faults      which faults, in order (default kill,stop,pause,partition), of:
#                 kill              kill -9 brokerd1
#                 stop              stop nats2 (SIGTERM)
#                 pause             docker pause a node that does not lead
#                                   KV_RINGER (nats3 unless it does)
#                 pause-leader      docker pause the leader of KV_RINGER
#                 partition         cut a node that does not lead KV_RINGER
#                                   off the route network (its clients stay)
#                 partition-leader  the same for the leader of KV_RINGER
#   --push        also push-woken callees: ringer-push delivers the brokers'
#                 push requests to loadgen (--push-listen), whose asleep
#                 callees log in when woken; each must make one RING and
#                 one STOP request (loadgen's invariants)
#   --webhook     also the webhook relay: ringer-webhook delivers the
#                 exported transitions to loadgen (--webhook-listen), which
#                 checks each invitation's arrive signed, in order, all of them
#   --no-build    use the existing ringer/*:dev images
#   --no-loadgen  inject the faults without load (tests the script itself)
# CHAOS_MIX in the environment replaces loadgen's --mix (default: loadgen's
# default with group=6,groupjoin=3,glare=3 added).
# Bounded: about duration + 3 min (build, start, loadgen's 60 s drain, teardown).
set -euo pipefail

cd "$(dirname "$0")/.."

DURATION=90 RATE=50 USERS=200 BUILD=1 LOAD=1 FAULT_LIST=kill,stop,pause,partition PUSH=0 WEBHOOK=0
DRAIN=60          # loadgen --drain, seconds
PRESENCE_TTL=5    # brokerd --presence-ttl in deploy/chaos.override.yml

die() { echo "chaos.sh: $*" >&2; exit 1; }
seconds() { # 90 | 90s | 2m -> seconds
	case $1 in
	*[0-9]m) echo $((${1%m} * 60)) ;;
	*[0-9]s) echo "${1%s}" ;;
	*[0-9]) echo "$1" ;;
	*) die "bad duration $1 (use e.g. 90s or 2m)" ;;
	esac
}
while [[ $# -gt 0 ]]; do
	case $1 in
	--duration) DURATION=$(seconds "${2:?}"); shift 2 ;;
	--rate) RATE=${2:?}; shift 2 ;;
	--users) USERS=${2:?}; shift 2 ;;
	--faults) FAULT_LIST=${2:?}; shift 2 ;;
	--push) PUSH=1; shift ;;
	--webhook) WEBHOOK=1; shift ;;
	--no-build) BUILD=0; shift ;;
	--no-loadgen) LOAD=0; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done
IFS=, read -r -a WANT <<<"$FAULT_LIST"
for f in "${WANT[@]}"; do
	case $f in
	kill | stop | pause | pause-leader | partition | partition-leader) ;;
	*) die "unknown fault $f (kill, stop, pause, pause-leader, partition, partition-leader)" ;;
	esac
done
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge $((12 * (${#WANT[@]} + 1))) ]] ||
	die "--duration must be at least $((12 * (${#WANT[@]} + 1)))s for ${#WANT[@]} faults"

if command -v docker-compose >/dev/null; then
	COMPOSE=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
	COMPOSE=(docker compose)
else
	die "needs docker-compose or the docker compose plugin"
fi
PROJECT=ringerchaos$$
OUT=dist/chaos/$PROJECT
mkdir -p "$OUT"
dc() { "${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.yml -f deploy/chaos.override.yml "$@"; }

log() { printf '%s [%6.1fs] %s\n' "$(date +%T)" "$(lt)" "$*" >&2; }
now_ms() { date +%s%3N; }
T0=$(now_ms) # loadgen's t=0, in ms since the epoch; reset once loadgen runs
lt() { awk -v n="$(now_ms)" -v t0="$T0" 'BEGIN { printf "%.1f", (n - t0) / 1000 }'; }
sleep_until() { sleep_until_ms $(($1 * 1000)); } # seconds since T0
sleep_until_ms() {                                 # ms since T0
	local ms=$((T0 + $1 - $(now_ms)))
	if ((ms > 0)); then sleep "$(awk -v m="$ms" 'BEGIN { print m / 1000 }')"; fi
}

LG_PID= PAUSED= CUT=
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $LG_PID ]]; then kill "$LG_PID" 2>/dev/null || true; fi
	if [[ -n $PAUSED ]]; then docker unpause "$PAUSED" >/dev/null 2>&1 || true; fi
	if [[ -n $CUT ]]; then reconnect_routes "$CUT" >/dev/null 2>&1 || true; fi
	echo "chaos.sh: tearing down $PROJECT (logs in $OUT)" >&2
	dc logs --no-color >"$OUT/compose.log" 2>&1 || true
	dc down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

declare -A CID # service -> container id (stable across stop/start/kill)
health() { # SERVICE -> healthy | unhealthy | starting | exited | paused ...
	docker inspect -f '{{if eq .State.Status "running"}}{{if .State.Health}}{{.State.Health.Status}}{{else}}running{{end}}{{else}}{{.State.Status}}{{end}}' "${CID[$1]}"
}
wait_healthy() { # TIMEOUT_S SERVICE... ; prints the seconds it took
	local limit=$1 start s
	shift
	start=$(now_ms)
	while :; do
		local ok=1
		for s in "$@"; do [[ $(health "$s") == healthy ]] || ok=0; done
		if ((ok)); then
			awk -v d=$(($(now_ms) - start)) 'BEGIN { printf "%.1f\n", d / 1000 }'
			return 0
		fi
		if (($(now_ms) - start > limit * 1000)); then return 1; fi
		sleep 0.5
	done
}

SERVICES=(nats1 nats2 nats3 brokerd1 brokerd2 brokerd3)
# The mix: loadgen's default, with group calls (FIRST and JOIN), whose
# scenarios check their own invariants (cmd/loadgen/groups.go). Not glare
# pairs yet: under a pause they once ended with both invitations ringing
# (issue 15's note); add glare=3 to see it.
MIX=${CHAOS_MIX:-accept=50,refuse=15,cancel=10,ignore=5,offline=5,busy=10,disconnect=5,group=6,groupjoin=3,glare=3}
LG_ARGS=(--mix "$MIX")
LG_RUN=()
if ((PUSH)); then
	# ringer-push (with its push-sink dependency, unused here) delivers to
	# loadgen, reachable as "loadgen" (run --use-aliases).
	SERVICES+=(push-sink ringer-push)
	LG_ARGS=(--mix "$MIX,push=15" --push-listen :8090)
	LG_RUN=(--use-aliases -e RINGER_PUSH_SECRET=dev-only-not-a-secret)
fi
if ((WEBHOOK)); then
	SERVICES+=(ringer-webhook)
	LG_ARGS+=(--webhook-listen :8091)
	LG_RUN=(--use-aliases -e RINGER_WEBHOOK_SECRET=dev-only-not-a-secret -e RINGER_PUSH_SECRET=dev-only-not-a-secret)
fi
if ((BUILD)); then
	if ((LOAD)); then scripts/build-images.sh; else scripts/build-images.sh || true; fi
fi

log "starting cluster $PROJECT"
dc up -d "${SERVICES[@]}" 2>>"$OUT/compose-up.log" || die "docker-compose up failed (see $OUT/compose-up.log)"
for s in "${SERVICES[@]}"; do CID[$s]=$(dc ps -q "$s"); done
took=$(wait_healthy 120 "${SERVICES[@]:0:6}") || {
	dc ps >&2
	die "cluster not healthy after 120s"
}
log "cluster healthy in ${took}s"

# Load. loadgen prints "progress t=<s> started= completed= rate= inflight= errors="
# to stderr every second and one JSON report as the last line of stdout.
URLS=nats://loadgen:loadgen@nats1:4222,nats://loadgen:loadgen@nats2:4222,nats://loadgen:loadgen@nats3:4222
# The brokers export (deploy/chaos.override.yml): loadgen checks, as the
# broker account, that every invitation's transitions are there once each.
BROKER_URLS=nats://broker:broker@nats1:4222,nats://broker:broker@nats2:4222,nats://broker:broker@nats3:4222
LG_RC=0
if ((LOAD)); then
	dc run --rm -T --no-deps "${LG_RUN[@]}" loadgen --nats "$URLS" --users "$USERS" --rate "$RATE" \
		--duration "${DURATION}s" --drain "${DRAIN}s" --short-timeouts --json --export-nats "$BROKER_URLS" "${LG_ARGS[@]}" \
		>"$OUT/loadgen.out" 2>"$OUT/loadgen.err" &
	LG_PID=$!
	# Align our clock with loadgen's t= on its first progress line.
	for _ in $(seq 1 120); do
		first=$(grep -m1 '^progress t=' "$OUT/loadgen.err" 2>/dev/null || true)
		[[ -n $first ]] && break
		kill -0 "$LG_PID" 2>/dev/null || break
		sleep 0.5
	done
	[[ -n ${first:-} ]] || die "no progress line from loadgen within 60s (see $OUT/loadgen.err)"
	t=$(sed -E 's/^progress t=([0-9.]+).*/\1/' <<<"$first")
	T0=$(awk -v n="$(now_ms)" -v t="$t" 'BEGIN { printf "%.0f", n - t * 1000 }') # not %d: mawk's is 32-bit
	log "loadgen running: rate=$RATE/s users=$USERS duration=${DURATION}s"
else
	T0=$(now_ms)
fi

# Faults: the load is split into n+1 windows of W s: a clean baseline, then
# one fault per window, held for 2W/3 s, then W/3 s to recover. The schedule
# is fixed: if a service is not healthy again when the next fault is due,
# that is reported and the next fault is injected anyway. Faults act on the
# containers directly (docker start/stop/kill/pause on the ids docker-compose
# created): the same as `docker-compose start/stop`, without its start-up
# cost, which under load delays the schedule by seconds.
N=${#WANT[@]}
W=$((DURATION / (N + 1))) HOLD=$((2 * DURATION / (3 * (N + 1))))
((HOLD > PRESENCE_TTL)) || die "the pause would not outlast the presence TTL"
FAULTS=() # "name inject_s recover_s"
# docker pause can fail once for the engine's own reasons ("OCI runtime pause
# failed: unable to freeze", seen in CI on 2026-12-03): try again, briefly,
# before giving up on the run.
pause_retrying() {
	local try
	for try in 1 2 3; do
		docker pause "$1" && return 0
		log "docker pause failed (try $try); retrying"
		sleep 1
	done
	return 1
}
# The node that leads Ringer's bucket now: the last "new stream leader" line,
# which nats-server prints on the node that became leader.
leader_of() { # STREAM -> nats1 | nats2 | nats3
	local s
	for s in nats1 nats2 nats3; do
		docker logs "${CID[$s]}" 2>&1 | grep -F "new stream leader for 'BROKER > $1'" |
			tail -n 1 | awk -v s="$s" '{ print $2 "T" $3, s }' || true
	done | sort | tail -n 1 | awk '{ print $2 }'
}
follower_of() { # STREAM -> a node that does not lead it (nats3 unless it does)
	local l
	l=$(leader_of "$1")
	if [[ $l == nats3 ]]; then echo nats2; else echo nats3; fi
}
# A partition: the node leaves the route network, so its routes to the others
# break while its clients (on the default network) stay connected to it.
ROUTES_NET=${PROJECT}_routes
cut_routes() { docker network disconnect "$ROUTES_NET" "${CID[$1]}"; }
reconnect_routes() { docker network connect --alias "$1-route" "$ROUTES_NET" "${CID[$1]}"; }
TARGET= # the node a fault acts on
fault() { # NAME START_S NEXT_S INJECT-CMD RECOVER-CMD SERVICE
	local name=$1 at=$2 next=$3 inject=$4 recover=$5 svc=$6 t1 t2 limit
	sleep_until "$at"
	log "FAULT $name: $inject"
	t1=$(lt)
	eval "$inject" >/dev/null
	# Held HOLD s from when it was injected: a schedule running late (a
	# service slow to come back, docker slow under load) shifts the fault,
	# it does not shorten it.
	sleep_until_ms $(awk -v t="$t1" -v h="$HOLD" 'BEGIN { printf "%.0f", (t + h) * 1000 }')
	log "RECOVER $name: $recover"
	t2=$(lt)
	eval "$recover" >/dev/null
	limit=$(awk -v n="$next" -v t="$(lt)" 'BEGIN { l = int(n - t); print (l < 3 ? 3 : l) }')
	if wait_healthy "$limit" "$svc" >/dev/null; then
		log "$svc healthy again $(awk -v a="$(lt)" -v b="$t2" 'BEGIN { printf "%.1f", a - b }')s after recovery"
	else
		log "$svc NOT healthy yet, ${limit}s after recovery: $(health "$svc")"
	fi
	FAULTS+=("$name $t1 $t2")
}
for i in "${!WANT[@]}"; do
	at=$(((i + 1) * W)) next=$(((i + 2) * W))
	((i + 1 < N)) || next=$((DURATION + 30))
	case ${WANT[$i]} in
	kill) fault kill-9-brokerd1 "$at" "$next" \
		'docker kill -s KILL "${CID[brokerd1]}"' 'docker start "${CID[brokerd1]}"' brokerd1 ;;
	stop) fault stop-nats2 "$at" "$next" \
		'docker stop -t 10 "${CID[nats2]}"' 'docker start "${CID[nats2]}"' nats2 ;;
	pause | pause-leader | partition | partition-leader)
		# The target is chosen by its role a few seconds before the fault:
		# reading the nodes' logs takes a moment once they are long.
		sleep_until $((at - 4))
		case ${WANT[$i]} in
		*-leader) TARGET=$(leader_of KV_RINGER) role=leader ;;
		*) TARGET=$(follower_of KV_RINGER) role=follower ;;
		esac
		case ${WANT[$i]} in
		pause*) fault "pause-$TARGET-($role)" "$at" "$next" \
			'PAUSED=${CID[$TARGET]}; pause_retrying "$PAUSED"' 'docker unpause "$PAUSED"; PAUSED=' "$TARGET" ;;
		*) fault "partition-$TARGET-($role)" "$at" "$next" \
			'cut_routes "$TARGET"; CUT=$TARGET' 'reconnect_routes "$CUT"; CUT=' "$TARGET" ;;
		esac ;;
	esac
done

if ((!LOAD)); then
	log "no load: faults injected; cluster state:"
	dc ps >&2
	echo "violations=0 invitations=0"
	exit 0
fi

# Wait for loadgen: its duration, its bounded drain, and a margin.
limit=$((DURATION + DRAIN + 60))
while kill -0 "$LG_PID" 2>/dev/null; do
	if (($(now_ms) - T0 > limit * 1000)); then
		log "loadgen still running after ${limit}s: killing it"
		kill "$LG_PID" 2>/dev/null || true
		break
	fi
	sleep 1
done
wait "$LG_PID" || LG_RC=$?
LG_PID=
log "loadgen exited with status $LG_RC"

# Throughput per phase from the progress lines: completed (terminal) and
# started invitations per second between two instants, each read from the
# last progress line at or before it.
phase() { # LABEL FROM TO [BASE_STARTED BASE_COMPLETED]: also the rates as fractions of those
	awk -v label="$1" -v a="$2" -v b="$3" -v bs="${4:-0}" -v bc="${5:-0}" '
	/^progress t=/ {
		for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] + 0 }
		if (v["t"] <= a) { sa = v["started"]; ca = v["completed"]; ea = v["errors"] }
		if (v["t"] <= b) { sb = v["started"]; cb = v["completed"]; eb = v["errors"] }
	}
	END {
		if (b <= a) { printf "  %-8s %6.1fs: after the load ended\n", label, a; exit }
		d = b - a
		s = (sb - sa) / d; c = (cb - ca) / d
		printf "  %-8s %6.1f-%6.1fs  started/s %8.1f  completed/s %8.1f  errors %d", label, a, b, s, c, eb - ea
		if (bs > 0 && bc > 0) printf "  (%.2f, %.2f of the baseline; errors %.1f%% of started)", s / bs, c / bc, (sb > sa ? 100 * (eb - ea) / (sb - sa) : 0)
		printf "\n"
	}' "$OUT/loadgen.err"
}
echo
echo "== chaos summary ($PROJECT, duration ${DURATION}s, rate $RATE/s, users $USERS)"
prev_end=2
# Fractions are of the clean first window, before any fault.
read -r _ t1 _ <<<"${FAULTS[0]}"
read -r bs bc < <(phase baseline 2 "$t1" | awk '{ print $5, $7 }')
for i in "${!FAULTS[@]}"; do
	read -r name t1 t2 <<<"${FAULTS[$i]}"
	if ((i + 1 < ${#FAULTS[@]})); then
		read -r _ next _ <<<"${FAULTS[$((i + 1))]}"
	else
		next=$DURATION
	fi
	echo "fault $((i + 1)): $name"
	phase before "$prev_end" "$t1" "$bs" "$bc"
	phase during "$t1" "$t2" "$bs" "$bc"
	phase after "$t2" "$next" "$bs" "$bc"
	prev_end=$t2
done

report=$(grep '^{' "$OUT/loadgen.out" | tail -n 1 || true)
if [[ -z $report ]]; then
	echo "no JSON report from loadgen (see $OUT/loadgen.out, $OUT/loadgen.err)"
	echo "violations=unknown invitations=unknown"
	exit 1
fi
# The report's fields used here are flat: read them without a JSON parser.
num() { grep -o "\"$1\": *[0-9.]*" <<<"$report" | head -n 1 | sed 's/.*: *//'; }
obj() { grep -o "\"$1\": *\({[^}]*}\|\[[^]]*\]\)" <<<"$report" | head -n 1 | sed 's/^[^:]*: *//'; }
invitations=$(num invitations) violations=$(num violations)
echo "throughput: $(num throughput_per_s)/s, accepted $(num accepted_per_s)/s," \
	"completed $(num completed) of $invitations in $(num duration_s)s"
echo "outcomes: $(obj outcomes)"
echo "errors: $(obj errors)"
echo "export: $(grep -o '"export": *{"invitations"[^}]*}' <<<"$report" | sed 's/^[^:]*: *//')"
if ((WEBHOOK)); then echo "webhook: $(grep -o '"webhook": *{"delivered"[^}]*}' <<<"$report" | sed 's/^[^:]*: *//')"; fi
if ((PUSH)); then echo "push: $(grep -o '"push": *{"invitations"[^}]*}' <<<"$report" | sed 's/^[^:]*: *//')"; fi
if [[ ${violations:-1} != 0 ]]; then
	echo "violation samples: $(obj violation_samples | cut -c1-2000)"
fi
echo "loadgen exit status: $LG_RC"
echo "violations=${violations:-unknown} invitations=${invitations:-unknown}"
[[ $LG_RC == 0 && ${violations:-1} == 0 ]]
