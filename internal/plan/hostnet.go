package plan

import (
	"fmt"
	"sort"

	"github.com/kvmnet/kvmnet/internal/model"
)

// hostOverlaps refuses nat subnets that overlap an address or a route the
// host already has: the uplink's own LAN (the host would answer for its
// neighbours and its router on the nat bridge, and lose them), another
// interface's network, a VPN's routes. It needs obs.Hosts; without them
// (a reconcile, which does not read every routing table) it checks
// nothing. The links kvmnet's nat networks own are left out: their
// addresses are the nat subnets themselves. A bridged network's bridge is
// checked: it carries the host's LAN addresses.
func hostOverlaps(cfg *model.Config, obs *Observed) []error {
	if obs.Hosts == nil {
		return nil
	}
	bridgedBridge := map[string]bool{}
	for _, n := range cfg.Networks {
		if n.Mode == model.ModeBridged {
			bridgedBridge[n.Bridge] = true
		}
	}
	names := make([]string, 0, len(obs.Hosts))
	for name := range obs.Hosts {
		if l, ok := obs.Links[name]; ok && IsOwnedBridge(l) && !bridgedBridge[name] {
			continue
		}
		names = append(names, name)
	}
	sort.Strings(names)
	var errs []error
	for i, n := range cfg.Networks {
		if n.Mode != model.ModeNAT || !n.Subnet.IsValid() {
			continue
		}
		path := fmt.Sprintf("networks[%d].subnet", i)
		if why := hostUse(n, names, obs.Hosts); why != "" {
			errs = append(errs, cfg.Errorf(path, "%s overlaps %s: guests and the host's own traffic would claim the same addresses, and the host would lose what is there; choose a subnet the host does not use (e.g. one of 192.168.0.0/16 that no interface or route has)", n.Subnet, why))
		}
	}
	return errs
}

// hostUse names the first address or route among the links names that
// overlaps n's subnet, or "".
func hostUse(n model.Network, names []string, hosts map[string]HostConfig) string {
	for _, name := range names {
		for _, a := range hosts[name].Addrs {
			if a.Prefix.Addr().Is4() && a.Prefix.Masked().Overlaps(n.Subnet) {
				return fmt.Sprintf("the host's address %s on %s", a.Prefix, name)
			}
		}
		for _, r := range hosts[name].Routes {
			// A default route overlaps everything and says nothing.
			if r.Dst.Addr().Is4() && r.Dst.Bits() > 0 && r.Dst.Overlaps(n.Subnet) {
				return fmt.Sprintf("the host's route %s dev %s", r, name)
			}
		}
	}
	return ""
}
