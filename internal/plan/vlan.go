package plan

import (
	"fmt"
	"slices"
	"strings"
)

// vlanAliasTag marks the 802.1Q links kvmnet creates (egressVlan).
const vlanAliasTag = "kvmnet:vlan="

// VLANAlias is the alias of the VLAN link kvmnet creates for network.
func VLANAlias(network string) string { return vlanAliasTag + network }

// IsOwnedVLAN reports whether l is a VLAN link kvmnet created.
func IsOwnedVLAN(l Link) bool { return strings.HasPrefix(l.Alias, vlanAliasTag) }

// DefaultPVID is the VLAN the kernel makes every new bridge port (and the
// bridge itself) a member of, untagged and as its PVID (the bridge's
// default_pvid). kvmnet keeps it for the untagged LAN: the uplink's
// untagged frames, the host's own address on the bridge and the
// interfaces that ask for no VLAN; every other port loses it (the trap
// of VLAN-aware bridges: a port given VLAN 100 is still a member of VLAN
// 1 and receives the untagged LAN's broadcasts).
const DefaultPVID = 1

// VLAN is one VLAN of a bridge port.
type VLAN struct {
	ID int
	// PVID: untagged frames coming in belong to this VLAN.
	PVID bool
	// Untagged: frames of this VLAN leave the port without a tag.
	Untagged bool
}

// String writes v as `bridge vlan add` takes it.
func (v VLAN) String() string {
	s := fmt.Sprintf("vid %d", v.ID)
	if v.PVID {
		s += " pvid"
	}
	if v.Untagged {
		s += " untagged"
	}
	return s
}

// defaultVLANs are what a port has on joining a bridge, and a bridge on
// its creation.
func defaultVLANs() []VLAN { return []VLAN{{ID: DefaultPVID, PVID: true, Untagged: true}} }

// VLANDiff returns what makes a port with the VLANs have carry want: add
// are the VLANs to add or whose flags change (`bridge vlan add` replaces
// them), del those to remove. Both come sorted by id.
func VLANDiff(have, want []VLAN) (add, del []VLAN) {
	for _, w := range want {
		if !slices.Contains(have, w) {
			add = append(add, w)
		}
	}
	for _, h := range have {
		if !slices.ContainsFunc(want, func(w VLAN) bool { return w.ID == h.ID }) {
			del = append(del, h)
		}
	}
	byID := func(a, b VLAN) int { return a.ID - b.ID }
	slices.SortFunc(add, byID)
	slices.SortFunc(del, byID)
	return add, del
}

// VLANChange makes the VLANs of one bridge port (or of the bridge
// itself, Self) go from Have to Want. Its inverse swaps them.
type VLANChange struct {
	Port string
	Self bool
	Have []VLAN
	Want []VLAN
}

// Inverse is the change that undoes c.
func (c VLANChange) Inverse() VLANChange {
	return VLANChange{Port: c.Port, Self: c.Self, Have: c.Want, Want: c.Have}
}

// Commands are the `bridge vlan` commands that do c, one per line: adds
// first, so a port changing its PVID is never without one.
func (c VLANChange) Commands() string {
	add, del := VLANDiff(c.Have, c.Want)
	self := ""
	if c.Self {
		self = " self"
	}
	var lines []string
	for _, v := range add {
		lines = append(lines, fmt.Sprintf("bridge vlan add dev %s %s%s", c.Port, v, self))
	}
	for _, v := range del {
		lines = append(lines, fmt.Sprintf("bridge vlan del dev %s vid %d%s", c.Port, v.ID, self))
	}
	return strings.Join(lines, "\n")
}

// FormatVLANs writes a port's VLANs for people: "100" for an access
// port, "10,20-22 native 100" for a trunk, "" for none.
func FormatVLANs(vs []VLAN) string {
	var tagged []int
	native := 0
	for _, v := range vs {
		if v.PVID && v.Untagged {
			native = v.ID
		} else {
			tagged = append(tagged, v.ID)
		}
	}
	slices.Sort(tagged)
	var parts []string
	for i := 0; i < len(tagged); {
		j := i
		for j+1 < len(tagged) && tagged[j+1] == tagged[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", tagged[i], tagged[j]))
		} else {
			parts = append(parts, fmt.Sprint(tagged[i]))
		}
		i = j + 1
	}
	switch {
	case len(parts) == 0 && native != 0:
		return fmt.Sprint(native)
	case native != 0:
		return strings.Join(parts, ",") + fmt.Sprintf(" native %d", native)
	}
	return strings.Join(parts, ",")
}

// VLANs are 802.1Q: VLAN-aware bridges, the VLANs of their ports, and the
// VLAN links kvmnet creates.
type VLANs interface {
	// SetVLANFiltering is a bridge's vlan_filtering.
	SetVLANFiltering(bridge string, on bool) error
	// SetPortVLANs makes the VLANs of a bridge port (of the bridge itself
	// when self) go from have to want (see VLANChange).
	SetPortVLANs(port string, self bool, have, want []VLAN) error
	// AddVLANLink creates an 802.1Q link with id on parent, marked with
	// alias; DeleteLink removes it.
	AddVLANLink(name, parent string, id int, alias string) error
}
