#!/usr/bin/env bash
# How long the host is unreachable while kvmnet turns its uplink into a
# bridge port (apply) and back (destroy), and how long after an
# `apply --confirm` deadline the uplink is given back.
#
# In a lab (namespaces only), the LAN router pings the host every 2 ms
# (`ping -i 0.002 -D`) while kvmnet applies a bridged network and destroys
# it; the longest gap between two answered pings and the number of
# unanswered ones are the interruption. Then `apply --confirm 2s` without
# confirmation: the time from the deadline to the host's address being back
# on eth0, polled every 5 ms.
#
#   bench/bridged.sh [ROUNDS]      (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/kvmnet ./cmd/kvmnet
K=$PWD/bin/kvmnet
ROUNDS=${1:-5}
P=kbr$$
P=${P:0:10}
WORK=$(mktemp -d /tmp/kvmnet-bench.XXXXXX)
KH=("$K" --netns "$P-host" --state-dir "$WORK/state")
cleanup() {
	"$K" lab down --prefix "$P" >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT

"$K" lab up --prefix "$P" >/dev/null
printf 'networks:\n  - {name: lan, mode: bridged, uplink: eth0}\n' >"$WORK/bridged.yaml"

# gaps FILE DONE: the longest gap between answered pings (ms) and the
# number of unanswered ones among those sent before the last answer (a
# ping still in flight when ping stops is not lost), from `ping -D`
# output; "cut-off" instead when no ping sent after DONE (the end of the
# change, in seconds since the epoch) was answered: a host cut off for
# good loses only pings after its last answer, which the gap and the count
# above never see.
gaps() {
	awk -v done="$2" '/bytes from/ {
		t = substr($1, 2, length($1) - 2) + 0
		if (last) { g = (t - last) * 1000; if (g > max) max = g }
		last = t; n++
		for (i = 1; i <= NF; i++) if ($i ~ /^icmp_seq=/) { s = substr($i, 10) + 0; if (!first) first = s; if (s > top) top = s }
	}
	END {
		if (n == 0 || last <= done) { print "cut-off cut-off"; exit }
		printf "%.1f %d\n", max, top - first + 1 - n
	}' "$1"
}
failed=""

printf '%-5s %-8s %16s %10s\n' round change "longest gap(ms)" unanswered
for ((r = 1; r <= ROUNDS; r++)); do
	for change in apply destroy; do
		"$K" lab exec --prefix "$P" lan -- ping -i 0.002 -D -W 1 172.30.0.2 >"$WORK/ping" 2>&1 &
		PING=$!
		# Let the pings settle, change, let them run on. A host that does
		# not answer before the change (cut off by the one before) fails
		# the run rather than hanging it.
		give_up=$(( $(date +%s) + 10 ))
		until grep -q "bytes from" "$WORK/ping"; do
			if (( $(date +%s) >= give_up )); then
				kill -INT "$PING"; wait "$PING" || true
				printf '%-5s %-8s %16s %10s\n' "$r" "$change" unreachable -
				failed="$failed round $r $change: the host did not answer before the change;"
				continue 2
			fi
			sleep 0.01
		done
		sleep 0.3
		if [ "$change" = apply ]; then
			"${KH[@]}" apply -f "$WORK/bridged.yaml" >/dev/null
		else
			"${KH[@]}" destroy >/dev/null
		fi
		done_at=$(date +%s.%N)
		sleep 0.3
		kill -INT "$PING"
		wait "$PING" || true
		read -r gap lost < <(gaps "$WORK/ping" "$done_at")
		printf '%-5s %-8s %16s %10s\n' "$r" "$change" "$gap" "$lost"
		[ "$gap" != cut-off ] || failed="$failed round $r $change: no answer after the change;"
	done
done

echo
printf '%-5s %28s\n' round "deadline to eth0 back (ms)"
for ((r = 1; r <= ROUNDS; r++)); do
	out=$("${KH[@]}" apply -f "$WORK/bridged.yaml" --confirm 2s)
	deadline=$("${KH[@]}" get pending -o json | python3 -c 'import json,sys,datetime; print(datetime.datetime.fromisoformat(json.load(sys.stdin)["deadline"].replace("Z","+00:00")).timestamp())')
	# A rollback that never comes must not hang the bench, nor pass.
	give_up=$(( $(date +%s) + 30 ))
	until "$K" lab exec --prefix "$P" host -- ip -br addr show eth0 | grep -q 172.30.0.2/; do
		(( $(date +%s) < give_up )) || { failed="$failed round $r: eth0 not back 30 s after the deadline;"; continue 2; }
		sleep 0.005
	done
	now=$(date +%s.%N)
	python3 -c "print('%-5s %28.0f' % ($r, ($now - $deadline) * 1000))"
done
if [ -n "$failed" ]; then
	echo "bridged.sh: FAILED:$failed" >&2
	exit 1
fi
