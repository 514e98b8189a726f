#!/bin/sh
# capture-nft.sh KVMNET OUT: applies examples/lab.yaml with kvmnet in a
# throwaway namespace, makes its drop rules count a known number of packets,
# and writes `nft -j list table inet kvmnet` to OUT. Run as root from the
# repository's top directory; it touches nothing outside the namespaces it
# creates and deletes them on exit.
#
#   go build -o /tmp/kvmnet ./cmd/kvmnet
#   internal/metrics/testdata/capture-nft.sh /tmp/kvmnet internal/metrics/testdata/lab-table.json
#
# The namespaces: HOST runs kvmnet (eth0 172.30.0.2/24, default route via
# LAN); LAN is the "physical" network's router (172.30.0.1); VM is guest
# web1 behind tap web1-0 (192.168.100.10 on network dev).
# Packets sent, and so the counts in the fixture:
#   3 UDP datagrams from web1 to its gateway's port 9   -> guest-to-host-drop
#   2 UDP datagrams from the LAN to web1 (new, inbound) -> into-nat-drop
set -eu

kvmnet=$1
out=$2
suffix=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
host=kvt-cap-h-$suffix
lan=kvt-cap-l-$suffix
vm=kvt-cap-v-$suffix
state=$(mktemp -d)

cleanup() {
	for ns in "$host" "$lan" "$vm"; do
		ip netns del "$ns" 2>/dev/null || true
	done
	rm -rf "$state"
}
trap cleanup EXIT

for ns in "$host" "$lan" "$vm"; do
	ip netns add "$ns"
	ip -n "$ns" link set lo up
done
# No IPv6 in the guest and the LAN: router solicitations and MLD reports
# would hit the drop rules too and make the counts depend on timing.
for ns in "$lan" "$vm"; do
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done

ip -n "$host" link add eth0 type veth peer name lan0 netns "$lan"
ip -n "$host" addr add 172.30.0.2/24 dev eth0
ip -n "$host" link set eth0 up
ip -n "$host" route add default via 172.30.0.1
ip -n "$lan" addr add 172.30.0.1/24 dev lan0
ip -n "$lan" link set lan0 up
ip -n "$lan" route add 192.168.100.0/24 via 172.30.0.2

ip -n "$host" link add web1-0 type veth peer name eth0 netns "$vm"
ip -n "$host" link set web1-0 up
ip -n "$vm" link set eth0 address 52:54:00:00:00:10
ip -n "$vm" addr add 192.168.100.10/24 dev eth0
ip -n "$vm" link set eth0 up
ip -n "$vm" route add default via 192.168.100.1

"$kvmnet" --netns "$host" --state-dir "$state" apply -f examples/lab.yaml

# bash's /dev/udp sends one datagram per redirection; neighbour resolution
# queues the first one, it is not lost.
ip netns exec "$vm" bash -c 'for i in 1 2 3; do echo x >/dev/udp/192.168.100.1/9; done'
ip netns exec "$lan" bash -c 'for i in 1 2; do echo x >/dev/udp/192.168.100.10/9; done'

ip netns exec "$host" nft -j list table inet kvmnet >"$out"
"$kvmnet" --netns "$host" --state-dir "$state" destroy >/dev/null
