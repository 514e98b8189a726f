package plan

import (
	"net/netip"
	"strings"
	"testing"
)

// TestHostOverlaps checks that a nat subnet the host already uses is
// refused with what uses it: a nat network on the uplink's own LAN once
// took the router's address and cut the host off.
func TestHostOverlaps(t *testing.T) {
	pfx := netip.MustParsePrefix
	obs := hostOnly()
	obs.Links["kv-dev"] = Link{Name: "kv-dev", Kind: "bridge", Alias: BridgeAlias("dev"), Up: true}
	obs.Hosts = map[string]HostConfig{
		"lo":     {Addrs: []HostAddr{{Prefix: pfx("127.0.0.1/8")}}},
		"eth0":   {Addrs: []HostAddr{{Prefix: pfx("172.30.0.2/24")}}, Routes: []HostRoute{{Dst: pfx("0.0.0.0/0"), Gw: netip.MustParseAddr("172.30.0.1"), Table: 254}}},
		"tun0":   {Routes: []HostRoute{{Dst: pfx("10.8.0.0/16"), Table: 254}}},
		"kv-dev": {Addrs: []HostAddr{{Prefix: pfx("192.168.100.1/24")}}, Routes: []HostRoute{{Dst: pfx("192.168.100.0/24"), Table: 254}}},
	}
	for _, tt := range []struct{ subnet, want string }{
		{"172.30.0.0/24", `host.yaml:5:13: networks[0].subnet: 172.30.0.0/24 overlaps the host's address 172.30.0.2/24 on eth0:`},
		{"172.30.0.0/16", "overlaps the host's address 172.30.0.2/24 on eth0"},
		{"172.30.0.0/28", "overlaps the host's address 172.30.0.2/24 on eth0"},
		{"10.8.4.0/24", "overlaps the host's route 10.8.0.0/16 dev tun0"},
		{"127.0.0.0/8", "overlaps the host's address 127.0.0.1/8 on lo"},
		{"192.168.100.0/24", ""}, // its own bridge
		{"192.168.200.0/24", ""},
		{"10.9.0.0/16", ""},
	} {
		cfg := parse(t, "networks:\n  - name: dev\n    mode: nat\n    egress: eth0\n    subnet: "+tt.subnet+"\n")
		_, err := Build(cfg, obs, Options{})
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("subnet %s: %v", tt.subnet, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("subnet %s: %v, want %q", tt.subnet, err, tt.want)
		}
	}
	// Without the host's configuration (a reconcile) nothing is checked.
	obs.Hosts = nil
	if _, err := Build(parse(t, "networks:\n  - {name: dev, mode: nat, egress: eth0, subnet: 172.30.0.0/24}\n"), obs, Options{}); err != nil {
		t.Errorf("without Hosts: %v", err)
	}
}
