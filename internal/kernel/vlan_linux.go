package kernel

import "github.com/kvmnet/kvmnet/internal/plan"

// SetVLANFiltering implements apply.VLANs.
func (h *Host) SetVLANFiltering(bridge string, on bool) error {
	return h.Link.SetVLANFiltering(bridge, on)
}

// SetPortVLANs implements apply.VLANs.
func (h *Host) SetPortVLANs(port string, self bool, have, want []plan.VLAN) error {
	return h.Link.SetPortVLANs(port, self, have, want)
}

// AddVLANLink implements apply.VLANs.
func (h *Host) AddVLANLink(name, parent string, id int, alias string) error {
	return h.Link.AddVLANLink(name, parent, id, alias)
}
