package feature

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/kvmnet/kvmnet/internal/plan"
)

func init() {
	checks[plan.FeatureFlowtable] = flowtable
}

// flowtable makes an nftables flowtable with counters on a veth
// (CONFIG_NF_FLOW_TABLE, CONFIG_NF_FLOW_TABLE_INET), as a fast path
// would.
func flowtable() error {
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "kvprobe0"}, PeerName: "kvprobe1"}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("%w: a veth pair for the flowtable: %v", errNoScratch, err)
	}
	// The connection's socket is opened on this thread, in the scratch
	// namespace.
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("%w: %v", errNoScratch, err)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "kvprobe"})
	c.AddFlowtable(&nftables.Flowtable{
		Table: t, Name: "f", Hooknum: nftables.FlowtableHookIngress, Priority: nftables.FlowtablePriorityFilter,
		Devices: []string{"kvprobe0"}, Flags: nftables.FlowtableFlagsCounter,
	})
	if err := c.Flush(); err != nil {
		if errors.Is(err, unix.ENOENT) {
			// The kernel's answer when no flowtable type is registered
			// for the family (nf_flow_table_inet).
			return fmt.Errorf("an nftables flowtable: the kernel knows no flowtable type (%w)", err)
		}
		return fmt.Errorf("an nftables flowtable: %w", err)
	}
	return nil
}
