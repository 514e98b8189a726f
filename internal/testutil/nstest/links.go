package nstest

import (
	"strconv"
	"testing"
)

// Veth joins namespace ns to peerNS with a veth pair, name in ns and peer
// in peerNS, both up: a guest's "tap" and its NIC, or an uplink and the
// switch port at its other end.
func Veth(t testing.TB, ns, name, peerNS, peer string) {
	t.Helper()
	Run(t, ns, "ip", "link", "add", name, "type", "veth", "peer", "name", peer, "netns", peerNS)
	Run(t, ns, "ip", "link", "set", name, "up")
	Run(t, peerNS, "ip", "link", "set", peer, "up")
}

// VLAN adds the 802.1Q link PARENT.ID on parent in namespace ns, up, with
// the addresses given (CIDR), and returns its name. It needs 8021q: the
// Debian kernel of the kernelfeatures tests has it, this CI kernel not.
func VLAN(t testing.TB, ns, parent string, id int, addrs ...string) string {
	t.Helper()
	name := parent + "." + strconv.Itoa(id)
	Run(t, ns, "ip", "link", "add", "link", parent, "name", name, "type", "vlan", "id", strconv.Itoa(id))
	Run(t, ns, "ip", "link", "set", name, "up")
	for _, a := range addrs {
		Run(t, ns, "ip", "addr", "add", a, "dev", name)
	}
	return name
}
