#!/usr/bin/env bash
# Port forwards, kvmnet against the classic recipe (one
# `iptables -t nat -A PREROUTING ... -j DNAT` per forward), side by side in
# one run, each in a fresh network namespace of its own. Then one forward
# added to N, ADDS times each way (the median is printed): `kvmnet forward
# add` served by a running daemon (how a host runs kvmnet), the same
# command with no daemon (one process does all the work), and one more
# iptables process.
#
#   bench/forwards.sh [SIZES...]     (default: 100 1000 10000)
#   RECIPE_LIMIT=600 caps the seconds the recipe may take per size.
#   ADDS=7 sets how many single additions are timed each way.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
command -v iptables >/dev/null || { echo "iptables is not installed (apt-get install iptables)"; exit 1; }
go build -o bin/kvmnet ./cmd/kvmnet
K=$PWD/bin/kvmnet
SIZES=${*:-100 1000 10000}
LIMIT=${RECIPE_LIMIT:-600}
ADDS=${ADDS:-7}
NS=kvf-$$
WORK=$(mktemp -d /tmp/kvmnet-fwbench.XXXXXX)
DPID=
stop_daemon() {
	if [ -n "$DPID" ]; then
		kill "$DPID" 2>/dev/null || true
		wait "$DPID" 2>/dev/null || true
		DPID=
	fi
}
trap 'stop_daemon; ip netns del "$NS" 2>/dev/null; rm -rf "$WORK"' EXIT

now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }

median() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

# add_one STATE PORT: time `kvmnet forward add` of one forward, in ms.
add_one() {
	local t0 t1
	t0=$(now)
	"$K" --netns "$NS" --state-dir "$1" forward add --network bench --port "$2" --to 192.168.100.10:80 >/dev/null
	t1=$(now)
	ms "$t0" "$t1"
}

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

printf '%-7s %12s %18s %8s %16s %16s %16s\n' N "kvmnet(ms)" "iptables(ms)" ratio "+1 daemon(ms)" "+1 no daemon" "+1 iptables"
for n in $SIZES; do
	gen "$n" "$WORK/f.yaml"
	fresh
	st=$WORK/s$n
	t0=$(now); "$K" --netns "$NS" --state-dir "$st" apply -f "$WORK/f.yaml" >/dev/null; t1=$(now)
	kv=$(ms "$t0" "$t1")
	# One more forward, with no daemon: the command does all the work.
	alone=""
	for ((a = 0; a < ADDS; a++)); do alone+=" $(add_one "$st" $((50000 + a)))"; done
	# And served by a daemon, once it answers.
	"$K" --netns "$NS" --state-dir "$st" daemon >"$WORK/daemon.log" 2>&1 &
	DPID=$!
	for _ in $(seq 100); do
		[ -S "$st/kvmnet.sock" ] && "$K" --netns "$NS" --state-dir "$st" get networks >/dev/null 2>&1 && break
		sleep 0.1
	done
	[ -S "$st/kvmnet.sock" ] || { echo "the daemon did not start:"; cat "$WORK/daemon.log"; exit 1; }
	served=""
	for ((a = 0; a < ADDS; a++)); do served+=" $(add_one "$st" $((51000 + a)))"; done
	stop_daemon
	got=$(ip netns exec "$NS" nft list map inet kvmnet dnat4 | grep -o '\. tcp \. [0-9]* :' | wc -l)
	if (( got != n + 2 * ADDS )); then echo "dnat4 has $got forwards, want $((n + 2 * ADDS))"; exit 1; fi

	fresh
	ipones=""
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
		for ((a = 0; a < ADDS; a++)); do
			t0=$(now); ip netns exec "$NS" iptables -t nat -A PREROUTING -d 172.31.0.2 -p tcp --dport $((50000 + a)) -j DNAT --to-destination 192.168.100.10:80; t1=$(now)
			ipones+=" $(ms "$t0" "$t1")"
		done
		ipone=$(echo "$ipones" | median)
	fi
	printf '%-7s %12s %18s %8s %16s %16s %16s\n' "$n" "$kv" "$iptxt" "$ratio" "$(echo "$served" | median)" "$(echo "$alone" | median)" "$ipone"
	echo "        each +1 (ms): daemon$served; no daemon$alone${ipones:+; iptables$ipones}"
done
