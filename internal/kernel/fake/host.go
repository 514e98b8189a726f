package fake

import (
	"net/netip"

	"github.com/kvmnet/kvmnet/internal/plan"
)

// LANHost is the host the fake tier's tests start from: an uplink eth0 on
// a LAN (172.30.0.2/24, default route via 172.30.0.1), three taps libvirt
// made (web1-0, db1-0, app1-0), ip_forward off.
func LANHost() *Kernel {
	pfx := netip.MustParsePrefix
	k := New(&plan.Observed{
		Links: map[string]plan.Link{
			"lo":     {Name: "lo", Kind: "device", Up: true, Addrs: []netip.Prefix{pfx("127.0.0.1/8")}},
			"eth0":   {Name: "eth0", Kind: "veth", Up: true, MTU: 1500, HWAddr: "02:00:00:00:00:02", Addrs: []netip.Prefix{pfx("172.30.0.2/24")}},
			"web1-0": {Name: "web1-0", Kind: "tuntap", Up: true, MTU: 1500},
			"db1-0":  {Name: "db1-0", Kind: "tuntap", Up: true, MTU: 1500},
			"app1-0": {Name: "app1-0", Kind: "tuntap", Up: true, MTU: 1500},
		},
		DefaultRouteLink: "eth0",
		Sysctls:          map[string]string{plan.SysctlIPForward: "0"},
		Hosts: map[string]plan.HostConfig{
			"lo": {Addrs: []plan.HostAddr{{Prefix: pfx("127.0.0.1/8"), ValidLft: plan.Forever, PreferredLft: plan.Forever}}},
			"eth0": {MTU: 1500, HWAddr: "02:00:00:00:00:02",
				Addrs:  []plan.HostAddr{{Prefix: pfx("172.30.0.2/24"), Scope: 0, ValidLft: plan.Forever, PreferredLft: plan.Forever}},
				Routes: []plan.HostRoute{{Dst: pfx("0.0.0.0/0"), Gw: netip.MustParseAddr("172.30.0.1"), Table: 254, Protocol: 3, Type: 1}}},
		},
	})
	k.Gateway = netip.MustParseAddr("172.30.0.1")
	return k
}
