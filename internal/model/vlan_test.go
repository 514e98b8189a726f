package model

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestVLANs parses the VLAN keys, an access port, a trunk with a native
// VLAN and a trunk without one, and writes them back to the same Config.
func TestVLANs(t *testing.T) {
	const file = `networks:
  - {name: lan, mode: bridged, uplink: eth0, vlans: true, uplinkVlans: [10, 20-22, 100]}
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0, egressVlan: 200}
vms:
  - name: web1
    interfaces:
      - {network: lan, mac: 52:54:00:00:00:10, vlan: 100}
      - {network: lan, mac: 52:54:00:00:00:11, vlan: {tagged: [10, 20-22], untagged: 100}, security: {spoofguard: false}}
      - {network: lan, mac: 52:54:00:00:00:12, vlan: {tagged: 30}, security: {spoofguard: false}}
      - {network: lan, mac: 52:54:00:00:00:13}
`
	c, err := Parse("host.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	lan, dev := c.Networks[0], c.Networks[1]
	if !lan.VLANs || !cmp.Equal(lan.UplinkVLANs.IDs, []int{10, 20, 21, 22, 100}) {
		t.Errorf("lan: vlans %t, uplinkVlans %v", lan.VLANs, lan.UplinkVLANs.IDs)
	}
	if dev.EgressVLAN != 200 {
		t.Errorf("dev: egressVlan %d, want 200", dev.EgressVLAN)
	}
	ifs := c.VMs[0].Interfaces
	want := []*PortVLANs{
		{Untagged: 100, Access: true},
		{Untagged: 100, Tagged: VLANList{Text: []string{"10", "20-22"}, IDs: []int{10, 20, 21, 22}}},
		{Tagged: VLANList{Text: []string{"30"}, IDs: []int{30}}},
		nil,
	}
	for i, w := range want {
		if diff := cmp.Diff(w, ifs[i].VLAN); diff != "" {
			t.Errorf("interface %d vlan (-want +got):\n%s", i, diff)
		}
	}
	if got := ifs[1].VLAN.IDs(); !cmp.Equal(got, []int{10, 20, 21, 22, 100}) {
		t.Errorf("IDs() = %v", got)
	}
	out, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse("again.yaml", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if diff := cmp.Diff(c.Networks, again.Networks, cmpConfig); diff != "" {
		t.Errorf("networks after Marshal (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(c.VMs, again.VMs, cmpConfig); diff != "" {
		t.Errorf("vms after Marshal (-want +got):\n%s", diff)
	}
}
