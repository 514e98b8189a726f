package feature

import (
	"fmt"

	"github.com/vishvananda/netlink"

	"github.com/kvmnet/kvmnet/internal/plan"
)

func init() {
	checks[plan.FeatureBridgeVLAN] = bridgeVLAN
	checks[plan.FeatureVLAN] = vlanLink
}

// bridgeVLAN makes a bridge with VLAN filtering on (CONFIG_BRIDGE_VLAN_FILTERING).
func bridgeVLAN() error {
	on := true
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "kvprobe0"}, VlanFiltering: &on}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("a bridge with vlan_filtering 1: %w", err)
	}
	return nil
}

// vlanLink makes an 802.1Q interface on a veth (CONFIG_VLAN_8021Q; the
// kernel loads the 8021q module for it).
func vlanLink() error {
	parent, err := probeVeth("a VLAN")
	if err != nil {
		return err
	}
	v := &netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "kvprobe0.10", ParentIndex: parent.Attrs().Index}, VlanId: 10}
	if err := netlink.LinkAdd(v); err != nil {
		return fmt.Errorf("an 802.1Q interface (type vlan): %w", err)
	}
	return nil
}
