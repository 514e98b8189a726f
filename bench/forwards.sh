#!/usr/bin/env bash
# Port forwards, kvmnet against the classic recipe (one
# `iptables -t nat -A PREROUTING ... -j DNAT` per forward), side by side in
# one run, each in a fresh network namespace of its own.
#
#   bench/forwards.sh [SIZES...]     (default: 100 1000 10000)
#   RECIPE_LIMIT=600 caps the seconds the recipe may take per size.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
command -v iptables >/dev/null || { echo "iptables is not installed (apt-get install iptables)"; exit 1; }
go build -o bin/kvmnet ./cmd/kvmnet
K=$PWD/bin/kvmnet
SIZES=${*:-100 1000 10000}
LIMIT=${RECIPE_LIMIT:-600}
NS=kvf-$$
WORK=$(mktemp -d /tmp/kvmnet-fwbench.XXXXXX)
trap 'ip netns del "$NS" 2>/dev/null; rm -rf "$WORK"' EXIT

now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }

fresh() {
	ip netns del "$NS" 2>/dev/null || true
	host_ns "$NS"
}

gen() { # N FILE
	{
		printf 'networks:\n  - name: bench\n    mode: nat\n    subnet: 192.168.100.0/24\n    egress: eth0\n    forwards:\n'
		for ((i = 0; i < $1; i++)); do printf '      - {port: %d, to: "192.168.100.10:80"}\n' $((20000 + i)); done
	} >"$2"
}

printf '%-7s %16s %18s %8s %20s %22s\n' N "kvmnet(ms)" "iptables(ms)" ratio "kvmnet +1 (ms)" "iptables +1 (ms)"
for n in $SIZES; do
	gen "$n" "$WORK/f.yaml"
	fresh
	t0=$(now); "$K" --netns "$NS" --state-dir "$WORK/s$n" apply -f "$WORK/f.yaml" >/dev/null; t1=$(now)
	kv=$(ms "$t0" "$t1")
	t0=$(now); "$K" --netns "$NS" --state-dir "$WORK/s$n" forward add --network bench --port 50000 --to 192.168.100.10:80 >/dev/null; t1=$(now)
	kvone=$(ms "$t0" "$t1")

	fresh
	done_n=0
	t0=$(now)
	deadline=$(( $(date +%s) + LIMIT ))
	for ((i = 0; i < n; i++)); do
		ip netns exec "$NS" iptables -t nat -A PREROUTING -d 172.31.0.2 -p tcp --dport $((20000 + i)) -j DNAT --to-destination 192.168.100.10:80
		done_n=$((i + 1))
		if (( i % 100 == 99 )) && (( $(date +%s) > deadline )); then break; fi
	done
	t1=$(now)
	ipt=$(ms "$t0" "$t1")
	if (( done_n < n )); then
		iptxt="> $ipt (only $done_n in ${LIMIT}s)"
		ratio=">$(( ipt / (kv > 0 ? kv : 1) ))x"
		ipone="-"
	else
		iptxt=$ipt
		ratio="$(( ipt / (kv > 0 ? kv : 1) ))x"
		t0=$(now); ip netns exec "$NS" iptables -t nat -A PREROUTING -d 172.31.0.2 -p tcp --dport 50000 -j DNAT --to-destination 192.168.100.10:80; t1=$(now)
		ipone=$(ms "$t0" "$t1")
	fi
	printf '%-7s %16s %18s %8s %20s %22s\n' "$n" "$kv" "$iptxt" "$ratio" "$kvone" "$ipone"
done
