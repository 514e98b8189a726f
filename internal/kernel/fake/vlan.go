package fake

import (
	"fmt"
	"slices"

	"github.com/kvmnet/kvmnet/internal/plan"
)

// joinVLANs are the VLANs a link has on joining a bridge (or, for a
// bridge, on its creation): the default PVID, as the real kernel gives
// them, or none on a kernel without bridge VLAN filtering. Called with
// the lock held.
func (k *Kernel) joinVLANs() []plan.VLAN {
	if _, lacks := k.Lacks[plan.FeatureBridgeVLAN]; lacks {
		return nil
	}
	return []plan.VLAN{{ID: plan.DefaultPVID, PVID: true, Untagged: true}}
}

// SetVLANFiltering implements apply.VLANs.
func (k *Kernel) SetVLANFiltering(bridge string, on bool) error {
	if why, lacks := k.Lacks[plan.FeatureBridgeVLAN]; lacks && on {
		return fmt.Errorf("setting vlan_filtering 1 on bridge %q: %s", bridge, why)
	}
	return k.link(bridge, func(l *plan.Link) error {
		if l.Kind != "bridge" {
			return fmt.Errorf("link %q is no bridge", bridge)
		}
		l.VLANFiltering = on
		return nil
	})
}

// SetPortVLANs implements apply.VLANs as the kernel does it: a VLAN added
// again takes the new flags, a port has at most one PVID, and removing a
// VLAN that is not there is no error (see link.Handle.SetPortVLANs).
func (k *Kernel) SetPortVLANs(port string, self bool, have, want []plan.VLAN) error {
	return k.link(port, func(l *plan.Link) error {
		if self != (l.Kind == "bridge") {
			return fmt.Errorf("link %q: self is for a bridge's own VLANs, master for its ports'", port)
		}
		if !self && l.Master == "" {
			return fmt.Errorf("link %q is no bridge port", port)
		}
		vs := slices.Clone(l.VLANs)
		add, del := plan.VLANDiff(have, want)
		for _, v := range add {
			vs = slices.DeleteFunc(vs, func(x plan.VLAN) bool { return x.ID == v.ID })
			if v.PVID {
				for i := range vs {
					vs[i].PVID = false
				}
			}
			vs = append(vs, v)
		}
		for _, v := range del {
			vs = slices.DeleteFunc(vs, func(x plan.VLAN) bool { return x.ID == v.ID })
		}
		slices.SortFunc(vs, func(a, b plan.VLAN) int { return a.ID - b.ID })
		l.VLANs = vs
		return nil
	})
}

// AddVLANLink implements apply.VLANs.
func (k *Kernel) AddVLANLink(name, parent string, id int, alias string) error {
	if why, lacks := k.Lacks[plan.FeatureVLAN]; lacks {
		return fmt.Errorf("creating VLAN interface %q: %s", name, why)
	}
	k.mu.Lock()
	_, ok := k.obs.Links[parent]
	k.mu.Unlock()
	if !ok {
		return fmt.Errorf("creating VLAN interface %q: parent %q: no such device", name, parent)
	}
	return k.add(plan.Link{Name: name, Kind: "vlan", Alias: alias, MTU: 1500, VLANParent: parent, VLANID: id})
}

// dumpVLANs writes what Dump shows of l's VLANs: a bridge's filtering
// and, on a VLAN-aware bridge, its own VLANs and its ports'. Links of
// bridges without filtering show none, so states without VLANs read as
// before.
func dumpVLANs(l plan.Link, links map[string]plan.Link) string {
	s := ""
	if l.Kind == "vlan" {
		s += fmt.Sprintf(" vlan %d on %s", l.VLANID, l.VLANParent)
	}
	aware := l.Kind == "bridge" && l.VLANFiltering || l.Master != "" && links[l.Master].VLANFiltering
	if l.VLANFiltering {
		s += " vlan_filtering"
	}
	if aware {
		s += fmt.Sprintf(" vlans [%s]", plan.FormatVLANs(l.VLANs))
	}
	return s
}
