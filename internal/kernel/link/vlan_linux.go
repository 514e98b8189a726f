package link

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/kvmnet/kvmnet/internal/plan"
)

// SetVLANFiltering turns a bridge's VLAN filtering on or off:
// `ip link set NAME type bridge vlan_filtering 1`.
func (h *Handle) SetVLANFiltering(name string, on bool) error {
	l, err := h.byName(name)
	if err != nil {
		return err
	}
	if err := h.changeBridge(l.Attrs().Index, []int{nl.IFLA_BR_VLAN_FILTERING}, uint8(b2i(on))); err != nil {
		return fmt.Errorf("setting vlan_filtering %d on bridge %q: %w", b2i(on), name, err)
	}
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// SetPortVLANs makes the VLANs of bridge port name (of the bridge itself
// when self) go from have to want: `bridge vlan add` for each VLAN to add
// or change, then `bridge vlan del` for each to remove, so a port whose
// PVID moves always has one. A VLAN already gone counts as removed: the
// inverse of a change that failed halfway runs from its want.
func (h *Handle) SetPortVLANs(name string, self bool, have, want []plan.VLAN) error {
	l, err := h.byName(name)
	if err != nil {
		return err
	}
	add, del := plan.VLANDiff(have, want)
	for _, v := range add {
		if err := h.nl.BridgeVlanAdd(l, uint16(v.ID), v.PVID, v.Untagged, self, false); err != nil {
			return fmt.Errorf("adding VLAN %d (%s) to bridge port %q: %w", v.ID, v, name, err)
		}
	}
	for _, v := range del {
		err := h.nl.BridgeVlanDel(l, uint16(v.ID), false, false, self, false)
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("removing VLAN %d from bridge port %q: %w", v.ID, name, err)
		}
	}
	return nil
}

// portVLANs returns the VLANs of every bridge port and bridge, by link
// index, from one dump (`bridge vlan show`). A kernel without bridge VLAN
// filtering reports none.
func (h *Handle) portVLANs() (map[int][]plan.VLAN, error) {
	infos, err := dump(h.nl.BridgeVlanList)
	if err != nil {
		return nil, fmt.Errorf("listing bridge VLANs: %w", err)
	}
	out := make(map[int][]plan.VLAN, len(infos))
	for idx, vs := range infos {
		for _, v := range vs {
			out[int(idx)] = append(out[int(idx)], plan.VLAN{ID: int(v.Vid), PVID: v.PortVID(), Untagged: v.EngressUntag()})
		}
	}
	return out, nil
}

// AddVLANLink creates an 802.1Q link on parent and marks it:
// `ip link add link PARENT name NAME type vlan id ID && ip link set NAME
// alias ALIAS`.
func (h *Handle) AddVLANLink(name, parent string, id int, alias string) error {
	p, err := h.byName(parent)
	if err != nil {
		return err
	}
	v := &netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: p.Attrs().Index}, VlanId: id, VlanProtocol: netlink.VLAN_PROTOCOL_8021Q}
	if err := h.nl.LinkAdd(v); err != nil {
		return fmt.Errorf("creating VLAN interface %q (id %d on %q): %w", name, id, parent, err)
	}
	if alias != "" {
		if err := h.SetAlias(name, alias); err != nil {
			return errors.Join(err, h.Delete(name))
		}
	}
	return nil
}

// vlanAttrs fills what List reports of VLANs for link l: a bridge's
// filtering, an 802.1Q link's parent and id.
func vlanAttrs(out *Link, l netlink.Link, names map[int]string) {
	switch v := l.(type) {
	case *netlink.Bridge:
		out.VLANFiltering = v.VlanFiltering != nil && *v.VlanFiltering
	case *netlink.Vlan:
		out.VLANID = v.VlanId
		out.VLANParent = names[v.ParentIndex]
	}
}
