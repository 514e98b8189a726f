#!/usr/bin/env bash
# Wall time of `kvmnet apply` from empty and of a no-op re-apply with N VM
# interfaces (kvmnet-created taps on one NAT network), and the daemon's RSS
# with them. Runs in its own network namespace; nothing else is touched.
#
#   bench/apply-scale.sh [SIZES...]      (default: 1 100 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
go build -o bin/kvmnet ./cmd/kvmnet
K=$PWD/bin/kvmnet
SIZES=${*:-1 100 1000}
RUNS=${RUNS:-3}
NS=kvb-$$
WORK=$(mktemp -d /tmp/kvmnet-bench.XXXXXX)
DPID=""
cleanup() {
	[ -n "$DPID" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
	ip netns del "$NS" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

ms() { echo $(( ($2 - $1) / 1000000 )); }

gen() { # N FILE
	{
		echo "networks:"
		echo "  - {name: bench, mode: nat, subnet: 10.200.0.0/16, egress: eth0}"
		echo "vms:"
		for ((i = 0; i < $1; i++)); do
			printf '  - name: vm%d\n    interfaces: [{network: bench, mac: "52:54:00:%02x:%02x:%02x", tap: b%d, createTap: true}]\n' \
				"$i" $((i >> 16 & 255)) $((i >> 8 & 255)) $((i & 255)) "$i"
		done
	} >"$2"
}

printf '%-6s %-4s %14s %14s %12s\n' N run "apply(ms)" "re-apply(ms)" "destroy(ms)"
for n in $SIZES; do
	gen "$n" "$WORK/host-$n.yaml"
	for ((r = 1; r <= RUNS; r++)); do
		host_ns "$NS"
		S="$WORK/state-$n-$r"
		t0=$(date +%s%N); "$K" --netns "$NS" --state-dir "$S" apply -f "$WORK/host-$n.yaml" >/dev/null
		t1=$(date +%s%N); out=$("$K" --netns "$NS" --state-dir "$S" apply -f "$WORK/host-$n.yaml")
		t2=$(date +%s%N)
		[ "$out" = "no changes" ] || { echo "re-apply was not a no-op: $out"; exit 1; }
		if [ "$r" = 1 ]; then
			"$K" --netns "$NS" --state-dir "$S" daemon --log-level warn >"$WORK/daemon.log" 2>&1 &
			DPID=$!
			for _ in $(seq 200); do [ -S "$S/kvmnet.sock" ] && break; sleep 0.05; done
			# let it settle: one full reconcile pass through the API
			"$K" --netns "$NS" --state-dir "$S" get networks >/dev/null
			rss=$(awk '/VmRSS/ {print $2}' /proc/$DPID/status)
			kill "$DPID"; wait "$DPID" 2>/dev/null || true; DPID=""
			echo "daemon RSS with $n interfaces: $((rss / 1024)) MiB ($rss kB)" >>"$WORK/rss"
		fi
		t3=$(date +%s%N); "$K" --netns "$NS" --state-dir "$S" destroy >/dev/null; t4=$(date +%s%N)
		printf '%-6s %-4s %14s %14s %12s\n' "$n" "$r" "$(ms $t0 $t1)" "$(ms $t1 $t2)" "$(ms $t3 $t4)"
		ip netns del "$NS"
	done
done
cat "$WORK/rss"
