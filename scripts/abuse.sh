#!/usr/bin/env bash
# Replays the attacks of SPEC §10 (docs/security.md, "Availability") against a
# real brokerd and prints, per attack, what was tried, what bystanders making
# ordinary calls meanwhile saw, how much the store grew and brokerd's RSS:
#   store-fill     20 users send 8 KB invitations as fast as allowed
#   squat          one user invites 50 offline people with a 10 min window
#   device-storm   one user logs in and heartbeats 3 000 devices; then a
#                  bystander call ends by logout (time to reach the other party)
#   aimed-replies  2 000 gets whose reply subject is another user's events
# brokerd runs with its embedded NATS (development mode, --own-replies on, as
# in secure mode) on free local ports, data in a temporary directory; it is
# stopped at the end. Bounded: about 4 × duration + presence TTL + 30 s.
#
# Usage: scripts/abuse.sh [--duration 5s] [--devices 3000] [--brokerd-flags "--gc-floor 0"]
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=5s DEVICES=3000 EXTRA=
while [[ $# -gt 0 ]]; do
	case $1 in
	--duration) DURATION=${2:?}; shift 2 ;;
	--devices) DEVICES=${2:?}; shift 2 ;;
	--brokerd-flags) EXTRA=${2:?}; shift 2 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "abuse.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done

work=$(mktemp -d)
pid=
cleanup() {
	if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/brokerd" ./cmd/brokerd
go build -o "$work/ringer-abuse" ./cmd/ringer-abuse

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nats_port=$(free_port)
http_port=$(free_port)
ttl=3s
"$work/brokerd" --listen "127.0.0.1:$nats_port" --http "127.0.0.1:$http_port" --data "$work/data" \
	--presence-ttl $ttl --unreceived-hold 2s --own-replies --log-level warn $EXTRA >"$work/brokerd.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
	if curl -fs "http://127.0.0.1:$http_port/readyz" >/dev/null 2>&1; then break; fi
	sleep 0.2
done
curl -fs "http://127.0.0.1:$http_port/readyz" >/dev/null || { echo "abuse.sh: brokerd did not become ready" >&2; cat "$work/brokerd.log" >&2; exit 1; }

"$work/ringer-abuse" --nats "nats://127.0.0.1:$nats_port" --metrics "http://127.0.0.1:$http_port/metrics" \
	--duration "$DURATION" --devices "$DEVICES" --presence-ttl $ttl
echo "brokerd warnings and errors:"
grep -E '"level":"(warn|error)"|WRN|ERR' "$work/brokerd.log" | cut -c1-200 | sort | uniq -c | sort -rn | head -10 || true
