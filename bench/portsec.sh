#!/usr/bin/env bash
# Port security's cost: two guests exchange iperf3 traffic on one bridge
# with N other protected interfaces configured, against the same with port
# security off; rounds interleaved (on off, off on, ...), medians
# compared. Then the time to attach the (N+1)th protected interface.
# Everything runs in namespaces of its own.
#
#   bench/portsec.sh [N]     (default 1000; ROUNDS=3 SECONDS_PER_RUN=3)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
command -v iperf3 >/dev/null || { echo "iperf3 is not installed (apt-get install iperf3)"; exit 1; }
go build -o bin/kvmnet ./cmd/kvmnet
K=$PWD/bin/kvmnet
N=${1:-1000}
ROUNDS=${ROUNDS:-3}
SECS=${SECONDS_PER_RUN:-3}
P=kvps$$
H=$P-host
WORK=$(mktemp -d /tmp/kvmnet-psbench.XXXXXX)
cleanup() {
	ip netns pids "$P-g2" 2>/dev/null | xargs -r kill 2>/dev/null || true
	for ns in "$H" "$P-g1" "$P-g2"; do ip netns del "$ns" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT

host_ns "$H"
for g in 1 2; do
	ip netns add "$P-g$g"
	ip link add "g$g-0" netns "$H" type veth peer name eth0 netns "$P-g$g"
	ip -n "$P-g$g" link set eth0 address "52:54:00:aa:00:0$g"
	ip -n "$P-g$g" addr add "192.168.100.1$g/16" dev eth0
	ip -n "$P-g$g" link set eth0 up
	ip -n "$P-g$g" link set lo up
	ip -n "$H" link set "g$g-0" up
done

gen() { # SPOOFGUARD COUNT FILE
	{
		echo "networks:"
		echo "  - {name: ps, mode: nat, subnet: 192.168.0.0/16, egress: eth0, dhcp: {range: 192.168.200.1-192.168.250.250}}"
		echo "vms:"
		for g in 1 2; do
			printf '  - name: g%d\n    interfaces: [{network: ps, mac: "52:54:00:aa:00:0%d", ip: 192.168.100.1%d, tap: g%d-0, security: {spoofguard: %s}}]\n' "$g" "$g" "$g" "$g" "$1"
		done
		for ((i = 0; i < $2; i++)); do
			printf '  - name: x%d\n    interfaces: [{network: ps, mac: "52:54:01:%02x:%02x:%02x", ip: 192.168.%d.%d, tap: x%d, createTap: true, security: {spoofguard: %s}}]\n' \
				"$i" $((i >> 16 & 255)) $((i >> 8 & 255)) $((i & 255)) $((1 + i / 250)) $((1 + i % 250)) "$i" "$1"
		done
	} >"$3"
}
gen true "$N" "$WORK/on.yaml"
gen false "$N" "$WORK/off.yaml"
gen true "$((N + 1))" "$WORK/on-plus-one.yaml"

KH=("$K" --netns "$H" --state-dir "$WORK/state")
"${KH[@]}" apply -f "$WORK/on.yaml" >/dev/null
ip netns exec "$P-g2" iperf3 -s -D
for _ in $(seq 50); do ip netns exec "$P-g2" ss -ltn | grep -q ':5201 ' && break; sleep 0.1; done

run() { # -> Gbit/s
	timeout $((SECS + 20)) ip netns exec "$P-g1" iperf3 -c 192.168.100.12 -t "$SECS" -J |
		python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

on=(); off=()
measure() { # on|off: apply that state, then measure it
	"${KH[@]}" apply -f "$WORK/$1.yaml" >/dev/null
	if [ "$1" = on ]; then on+=("$(run)"); else off+=("$(run)"); fi
}
# ABBA order (on off, off on, ...): neither state always runs first, right
# after the apply that changed a thousand elements.
for ((r = 1; r <= ROUNDS; r++)); do
	if ((r % 2)); then measure on; measure off; else measure off; measure on; fi
	echo "round $r: protected ${on[-1]} Gbit/s, unprotected ${off[-1]} Gbit/s" >&2
done
mon=$(printf '%s\n' "${on[@]}" | median)
moff=$(printf '%s\n' "${off[@]}" | median)
echo "guest-to-guest TCP on one bridge, $N other interfaces configured, $ROUNDS rounds of ${SECS}s, medians:"
printf '  port security on  (%d protected ports): %s Gbit/s  (runs: %s)\n' "$((N + 2))" "$mon" "${on[*]}"
printf '  port security off:                      %s Gbit/s  (runs: %s)\n' "$moff" "${off[*]}"
python3 -c "print('  ratio on/off: %.1f%%' % (100.0 * $mon / $moff))"

"${KH[@]}" apply -f "$WORK/on.yaml" >/dev/null
t0=$(date +%s%N); "${KH[@]}" apply -f "$WORK/on.yaml" >/dev/null; t1=$(date +%s%N)
"${KH[@]}" apply -f "$WORK/on-plus-one.yaml" >/dev/null; t2=$(date +%s%N)
echo "attach the $((N + 1))th protected interface (kvmnet apply, CLI included): $(( (t2 - t1) / 1000000 )) ms; a no-op apply of the same state: $(( (t1 - t0) / 1000000 )) ms"
