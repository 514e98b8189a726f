#!/usr/bin/env bash
# The lab demo (`make demo`): a hybrid KVM host, one bridged network on its
# LAN uplink and two NAT networks, living in network namespaces, with real
# clients. Nothing touches this machine's own
# network; everything is torn down at the end, also on Ctrl-C or failure.
set -euo pipefail
cd "$(dirname "$0")/.."

K=./bin/kvmnet
P=${PREFIX:-demo}
HOST=$P-host
STATE=$(mktemp -d /tmp/kvmnet-demo.XXXXXX)
KH=("$K" --netns "$HOST" --state-dir "$STATE")
DPID=""
SPID=""

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

cleanup() {
	set +e
	[ -n "$SPID" ] && kill "$SPID" 2>/dev/null
	[ -n "$DPID" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
	"$K" lab down --prefix "$P" >/dev/null
	rm -rf "$STATE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$K" lab down --prefix "$P" >/dev/null 2>&1 || true # leftovers of a crashed run

step "1. The lab: a LAN (router, DHCP and DNS by dnsmasq), an internet host, the KVM host, one namespace per VM"
run "$K" lab up -f examples/lab.yaml --prefix "$P"

step "2. What kvmnet would change on the KVM host"
run "${KH[@]}" plan -f examples/lab.yaml

step "3. Apply it (one atomic step), then apply again: nothing to do"
run "$K" lab exec --prefix "$P" host -- ip -br addr show eth0
run "${KH[@]}" apply -f examples/lab.yaml
run "${KH[@]}" apply -f examples/lab.yaml
echo "  -> eth0 is a port of kv-lan now; the host's address, route and MAC moved to the bridge:"
run "$K" lab exec --prefix "$P" host -- ip -br link show kv-lan
run "$K" lab exec --prefix "$P" host -- ip -br addr show kv-lan
run "$K" lab exec --prefix "$P" host -- ip route show default

step "4. Start the daemon: DHCP and DNS on each NAT bridge"
printf '\033[2m$ %s daemon &\033[0m\n' "${KH[*]}"
"${KH[@]}" daemon >"$STATE/daemon.log" 2>&1 &
DPID=$!
for _ in $(seq 100); do
	"${KH[@]}" get networks >/dev/null 2>&1 && [ -S "$STATE/kvmnet.sock" ] && break
	kill -0 "$DPID" 2>/dev/null || { cat "$STATE/daemon.log"; exit 1; }
	sleep 0.1
done
run "${KH[@]}" get networks

step "5. Guests ask for leases with udhcpc: web1 has a reservation, db1 and t1 take pool addresses; app1, bridged, gets its address from the LAN's own DHCP server (172.30.0.1)"
run "$K" lab dhcp --prefix "$P" web1
run "$K" lab dhcp --prefix "$P" db1
run "$K" lab dhcp --prefix "$P" t1
run "$K" lab dhcp --prefix "$P" app1

step "6. Guests resolve each other by name, and upstream names, through their gateway"
run "$K" lab exec --prefix "$P" web1 -- dig +short db1.dev.kvm
run "$K" lab exec --prefix "$P" db1 -- dig +short -x 192.168.100.10
run "$K" lab exec --prefix "$P" web1 -- dig +short internet.lab

step "7. Out through NAT: the internet host sees the KVM host's uplink address (172.30.0.2)"
"$K" lab exec --prefix "$P" inet -- socat TCP-LISTEN:8000,reuseaddr,fork 'SYSTEM:echo internet host sees you as $SOCAT_PEERADDR' &
SPID=$!
for _ in $(seq 50); do "$K" lab exec --prefix "$P" inet -- ss -ltn | grep -q ':8000' && break; sleep 0.1; done
run "$K" lab exec --prefix "$P" web1 -- ping -c2 -W2 203.0.113.10
run "$K" lab exec --prefix "$P" web1 -- nc -w2 203.0.113.10 8000

step "7b. app1 sits on the LAN: the internet host sees its own address; NAT guests reach it masqueraded"
run "$K" lab exec --prefix "$P" app1 -- nc -w2 203.0.113.10 8000
"$K" lab exec --prefix "$P" app1 -- socat TCP-LISTEN:9000,reuseaddr,fork 'SYSTEM:echo app1 sees you as $SOCAT_PEERADDR' &
APID=$!
for _ in $(seq 50); do "$K" lab exec --prefix "$P" app1 -- ss -ltn | grep -q ':9000' && break; sleep 0.1; done
APP1=$("$K" lab exec --prefix "$P" app1 -- ip -4 -br addr show eth0 | awk '{print $3}' | cut -d/ -f1)
run "$K" lab exec --prefix "$P" db1 -- nc -w2 "$APP1" 9000
kill "$APID" 2>/dev/null || true

step "8. Nothing gets in: the internet host cannot reach a guest, and guests of 'test' cannot reach 'dev'"
# Give the LAN a route to the NAT subnet, so only kvmnet's firewall is in the way.
"$K" lab exec --prefix "$P" lan -- ip route replace 192.168.100.0/24 via 172.30.0.2
run "$K" lab exec --prefix "$P" inet -- ping -c1 -W1 192.168.100.10 && exit 1 || echo "  -> refused, as it should be"
run "$K" lab exec --prefix "$P" t1 -- ping -c1 -W1 192.168.100.10 && exit 1 || echo "  -> refused, as it should be"
run "$K" lab exec --prefix "$P" host -- nft list chain inet kvmnet forward
# A ping that fails for any reason (a missing namespace, a typo) would read
# as "refused" above: the drop rules must have counted both.
for rule in between-networks-drop into-nat-drop; do
	"$K" lab exec --prefix "$P" host -- nft list chain inet kvmnet forward | grep "comment \"$rule\"" | grep -qv "counter packets 0 " ||
		{ echo "demo: rule $rule dropped nothing: the pings failed for another reason" >&2; exit 1; }
done

step "9. A port forward: the internet host reaches web1's web server through the host's port 8080"
# A real HTTP server: one that answers before reading the request (socat
# with echo) races curl, which then sees an empty reply now and then.
mkdir "$STATE/www" && echo "hello from web1" >"$STATE/www/index.html"
"$K" lab exec --prefix "$P" web1 -- python3 -m http.server 80 --directory "$STATE/www" >/dev/null 2>&1 &
WPID=$!
for _ in $(seq 50); do "$K" lab exec --prefix "$P" web1 -- ss -ltn | grep -q ':80 ' && break; sleep 0.1; done
run "$K" lab exec --prefix "$P" inet -- curl -s --max-time 3 http://172.30.0.2:8080/
run "${KH[@]}" get forwards

step "9b. One more forward, imperatively: the daemon adds one element to the dnat4 map (no rule changes), and forward rm takes it away"
run "${KH[@]}" forward add --network dev --port 8081 --to web1:80
run "$K" lab exec --prefix "$P" inet -- curl -s --max-time 3 http://172.30.0.2:8081/
run "${KH[@]}" forward rm --network dev --port 8081
run "$K" lab exec --prefix "$P" inet -- curl -s --max-time 2 http://172.30.0.2:8081/ || echo "  -> port 8081 is closed again"
kill "$WPID" 2>/dev/null || true

step "10. Port security: db1 pretends to be web1 (spoofed source address); the frames are dropped and counted"
run "$K" lab exec --prefix "$P" db1 -- hping3 -1 -c 3 -i u100000 -a 192.168.100.10 203.0.113.10 || true
run "${KH[@]}" get ports
# hping3's status says nothing here (no answer is expected): the counter
# is the proof that the spoofed frames were dropped.
"${KH[@]}" get ports | awk '$1 == "db1-0"' | grep -Eq 'ip=([3-9]|[1-9][0-9]+)' ||
	{ echo "demo: db1's spoofed packets were not counted as dropped" >&2; exit 1; }

step "10b. A change that would lock the host out: apply --confirm probes the gateway and rolls back by itself"
printf 'networks:\n  - {name: lan, mode: bridged, uplink: eth0, hostAddress: none}\n' >"$STATE/lockout.yaml"
# The file drops the NAT networks too, so the apply needs --allow-removal
# (without it kvmnet refuses before touching anything).
printf '\033[2m$ %s\033[0m\n' "${KH[*]} apply -f $STATE/lockout.yaml --confirm 30s --allow-removal"
# The apply must fail, and for the reason shown: the probe lost the
# gateway and the change was rolled back. Any other failure (a bad file, a
# daemon that is down) ends the demo instead of passing for a rollback.
if out=$("${KH[@]}" apply -f "$STATE/lockout.yaml" --confirm 30s --allow-removal 2>&1); then
	echo "$out"
	echo "demo: the change that locks the host out was applied and kept" >&2
	exit 1
fi
echo "$out"
case $out in
*"lost its gateway after the apply"*": rolled back to revision"*) echo "  -> rolled back at once: the gateway stopped answering" ;;
*)
	echo "demo: the lock-out apply failed, but not by the gateway probe's rollback" >&2
	exit 1
	;;
esac
run "${KH[@]}" get pending
run "$K" lab exec --prefix "$P" lan -- ping -c1 -W2 172.30.0.2

step "11. What kvmnet shows"
run "${KH[@]}" get vms
run "${KH[@]}" get leases

step "12. Destroy: everything kvmnet made is gone, ip_forward is back"
kill "$DPID"; wait "$DPID" 2>/dev/null || true; DPID=""
run "${KH[@]}" destroy
run "$K" lab exec --prefix "$P" host -- ip -br addr show eth0
run "$K" lab exec --prefix "$P" host -- nft list ruleset
run "$K" lab exec --prefix "$P" host -- sysctl net.ipv4.ip_forward

step "Done. The lab is torn down on exit."
