#!/usr/bin/env bash
# The daemon with N interfaces: RSS and idle CPU, and the latency (median
# and max of TRIES) of adopting a late tap and of repairing drift (a tap
# taken off its bridge; an element deleted from the ruleset). The safety
# pass is set to an hour, so every repair comes from a kernel event.
# Runs in a namespace of its own.
#
#   bench/daemon.sh [N]      (default 1000; TRIES=20 IDLE_SECONDS=30)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
go build -o bin/kvmnet ./cmd/kvmnet
K=$PWD/bin/kvmnet
N=${1:-1000}
TRIES=${TRIES:-20}
IDLE=${IDLE_SECONDS:-30}
NS=kvd-$$
WORK=$(mktemp -d /tmp/kvmnet-dbench.XXXXXX)
DPID=""
cleanup() {
	[ -n "$DPID" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
	ip netns del "$NS" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

host_ns "$NS"
{
	echo "networks:"
	echo "  - {name: d, mode: nat, subnet: 10.200.0.0/16, egress: eth0}"
	echo "vms:"
	for ((i = 0; i < N; i++)); do
		printf '  - name: vm%d\n    interfaces: [{network: d, mac: "52:54:00:%02x:%02x:%02x", tap: b%d, createTap: true}]\n' "$i" $((i >> 16 & 255)) $((i >> 8 & 255)) $((i & 255)) "$i"
	done
	for ((i = 0; i < TRIES; i++)); do
		printf '  - name: late%d\n    interfaces: [{network: d, mac: "52:54:01:00:00:%02x", tap: late%d}]\n' "$i" "$i" "$i"
	done
} >"$WORK/host.yaml"
KH=("$K" --netns "$NS" --state-dir "$WORK/state")
"${KH[@]}" apply -f "$WORK/host.yaml" >/dev/null
"${KH[@]}" daemon --resync 1h --log-level warn >"$WORK/daemon.log" 2>&1 &
DPID=$!
for _ in $(seq 200); do [ -S "$WORK/state/kvmnet.sock" ] && break; sleep 0.05; done
"${KH[@]}" get networks >/dev/null

ticks() { awk '{print $14 + $15}' "/proc/$DPID/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks); sleep "$IDLE"; t1=$(ticks)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$DPID/status")
echo "daemon with $N interfaces: RSS $((rss / 1024)) MiB; idle CPU over ${IDLE}s: $(python3 -c "print('%.2f%%' % (100.0 * ($t1 - $t0) / $hz / $IDLE))")"

now() { date +%s%N; }
# wait_for CMD...: polls until CMD succeeds, prints the ms it took since
# $start, or "timeout" after 10 s. A timeout is a repair that did not
# happen: stats counts it apart and the script fails, so it never passes
# for a fast repair.
wait_for() {
	local deadline=$(( $(date +%s) + 10 ))
	until "$@" >/dev/null 2>&1; do
		(( $(date +%s) < deadline )) || { echo "timeout"; return; }
	done
	echo $(( ($(now) - start) / 1000000 ))
}
# stats WHAT [BOUND_MS]: median and max of the readings on stdin; with a
# bound, whether every reading met it. Timeouts and missed bounds are
# written to $WORK/failed.
stats() {
	local what=$1 bound=${2:-} line
	# Timeouts sort first (sort -n reads them as 0): they are counted
	# apart, never as readings.
	line=$(sort -n | awk -v bound="$bound" '
		$1 == "timeout" { to++; next }
		{ a[++n] = $1 }
		END {
			if (n > 0) printf "median %d ms, max %d ms (%d tries)", a[int((n + 1) / 2)], a[n], n + to
			else printf "no repair (%d tries)", to
			if (to > 0) printf "; %d TIMED OUT after 10 s", to
			if (bound != "") {
				if (to == 0 && n > 0 && a[n] < bound) printf "; target < %d ms: met", bound
				else printf "; target < %d ms: MISSED", bound
			}
			print ""
		}')
	echo "$what: $line"
	case $line in *TIMED\ OUT* | *MISSED*) echo "$what: $line" >>"$WORK/failed" ;; esac
}
enslaved() { ip -n "$NS" -o link show "$1" | grep -q "master kv-d"; }
has_elem() { ip netns exec "$NS" nft list set inet kvmnet nat_ifs | grep -q '"kv-d"'; }

# Issue 7's bound: a late tap is adopted within 100 ms of appearing.
for ((i = 0; i < TRIES; i++)); do
	start=$(now); ip -n "$NS" link add "late$i" type veth peer name "latep$i"
	wait_for enslaved "late$i"
done | stats "late tap adopted" 100
for ((i = 0; i < TRIES; i++)); do
	start=$(now); ip -n "$NS" link set "b$i" nomaster
	wait_for enslaved "b$i"
done | stats "tap put back on its bridge"
for ((i = 0; i < TRIES; i++)); do
	start=$(now); ip netns exec "$NS" nft delete element inet kvmnet nat_ifs '{ "kv-d" }'
	wait_for has_elem
done | stats "deleted nftables element restored"
echo "(latencies include the polling: one ip or nft process per check, a few ms each)"
if [ -s "$WORK/failed" ]; then
	echo "daemon.sh: FAILED:" >&2
	cat "$WORK/failed" >&2
	exit 1
fi
