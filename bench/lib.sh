# Shared by the bench scripts; source it.

# host_ns NS: a namespace standing for a KVM host: an uplink eth0 with
# 172.31.0.2/24 and a default route, and nothing else.
host_ns() {
	ip netns add "$1"
	ip -n "$1" link add eth0 type veth peer name eth0-peer
	ip -n "$1" addr add 172.31.0.2/24 dev eth0
	ip -n "$1" link set eth0 up
	ip -n "$1" route add default via 172.31.0.1 dev eth0 onlink
}
