package plan

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/kvmnet/kvmnet/internal/model"
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

// The ops of VLAN steps.
const (
	OpVLANFiltering Op = "set-vlan-filtering"
	OpPortVLANs     Op = "set-port-vlans"
	OpAddVLANLink   Op = "add-vlan-link"
)

// SetVLANFiltering turns a bridge's VLAN filtering on or off.
type SetVLANFiltering struct {
	Name string
	On   bool
}

func (s SetVLANFiltering) Op() Op       { return OpVLANFiltering }
func (s SetVLANFiltering) Link() string { return s.Name }
func (s SetVLANFiltering) String() string {
	return fmt.Sprintf("ip link set %s type bridge vlan_filtering %d", s.Name, map[bool]int{true: 1}[s.On])
}

func (s SetVLANFiltering) Do(_ context.Context, k Kernel, _ Hooks) (Undo, error) {
	return func() error { return k.SetVLANFiltering(s.Name, !s.On) }, k.SetVLANFiltering(s.Name, s.On)
}

// SetPortVLANs changes the VLANs of one bridge port, or of the bridge
// itself.
type SetPortVLANs struct{ Change VLANChange }

func (s SetPortVLANs) Op() Op         { return OpPortVLANs }
func (s SetPortVLANs) Link() string   { return s.Change.Port }
func (s SetPortVLANs) String() string { return s.Change.Commands() }

// Do makes the change; when it fails halfway, it puts back what it did,
// so a failed step leaves the port as it was, like one that never ran.
func (s SetPortVLANs) Do(_ context.Context, k Kernel, _ Hooks) (Undo, error) {
	c, inv := s.Change, s.Change.Inverse()
	undo := func() error { return k.SetPortVLANs(inv.Port, inv.Self, inv.Have, inv.Want) }
	if err := k.SetPortVLANs(c.Port, c.Self, c.Have, c.Want); err != nil {
		return nil, errors.Join(err, undo())
	}
	return undo, nil
}

// AddVLANLink creates an 802.1Q link on a parent, marked as kvmnet's by
// its alias.
type AddVLANLink struct {
	Name, Parent string
	ID           int
	Alias        string
}

func (s AddVLANLink) Op() Op       { return OpAddVLANLink }
func (s AddVLANLink) Link() string { return s.Name }
func (s AddVLANLink) String() string {
	return fmt.Sprintf("ip link add link %s name %s type vlan id %d && ip link set %s alias %q", s.Parent, s.Name, s.ID, s.Name, s.Alias)
}

func (s AddVLANLink) Do(_ context.Context, k Kernel, h Hooks) (Undo, error) {
	if err := beforeCreate(h, s.Name); err != nil {
		return nil, err
	}
	return func() error { return k.DeleteLink(s.Name) }, k.AddVLANLink(s.Name, s.Parent, s.ID, s.Alias)
}

// PortVLANs are the VLANs a port of a VLAN-aware bridge carries for the
// interface's vlan: (nil: the untagged LAN).
func PortVLANs(v *model.PortVLANs) []VLAN {
	if v == nil {
		return defaultVLANs()
	}
	var out []VLAN
	for _, id := range v.Tagged.IDs {
		if id != v.Untagged {
			out = append(out, VLAN{ID: id})
		}
	}
	if v.Untagged != 0 {
		out = append(out, VLAN{ID: v.Untagged, PVID: true, Untagged: true})
	}
	slices.SortFunc(out, func(a, b VLAN) int { return a.ID - b.ID })
	return out
}

// uplinkVLANs are what the uplink of network n carries: the untagged LAN,
// and tagged its uplinkVlans, or else every VLAN its interfaces use.
func uplinkVLANs(cfg *model.Config, n *model.Network) []VLAN {
	ids := n.UplinkVLANs.IDs
	if len(n.UplinkVLANs.Text) == 0 {
		for _, p := range cfg.Ports(n.Name) {
			ids = append(ids, p.Iface.VLAN.IDs()...)
		}
		slices.Sort(ids)
		ids = slices.Compact(ids)
	}
	out := defaultVLANs()
	for _, id := range ids {
		if id != DefaultPVID {
			out = append(out, VLAN{ID: id})
		}
	}
	return out
}

// bridgeVLANs plans the VLANs of bridged network i: the bridge's
// filtering (on with vlans: true, right after the bridge exists, so ports
// join a filtering bridge; off without), the bridge's own VLANs (the
// untagged LAN, where the host's address is), the uplink's and each
// port's. A link that joins the bridge in this plan is taken to have the
// kernel's default VLANs then, so a port that did not ask for VLAN 1
// loses it in the same apply.
func (b *builder) bridgeVLANs(i int) {
	n := &b.cfg.Networks[i]
	br, exists := b.obs.Links[n.Bridge]
	if !n.VLANs {
		if exists && br.VLANFiltering && IsOwnedBridge(br) {
			b.vlan = append(b.vlan, SetVLANFiltering{Name: n.Bridge, On: false})
		}
		return
	}
	if !b.require(FeatureBridgeVLAN, fmt.Sprintf("networks[%d].vlans", i), "vlans: true") {
		return
	}
	if !exists || !br.VLANFiltering {
		b.create = append(b.create, SetVLANFiltering{Name: n.Bridge, On: true})
	}
	have := defaultVLANs()
	if exists {
		have = br.VLANs
	}
	b.portVLANs(VLANChange{Port: n.Bridge, Self: true, Have: have, Want: defaultVLANs()})
	b.portVLANs(b.joined(n.Uplink, n.Bridge, uplinkVLANs(b.cfg, n)))
	for _, p := range b.cfg.Ports(n.Name) {
		if l, ok := b.obs.Links[p.Iface.Tap]; ok || p.Iface.CreateTap {
			if !ok {
				l = Link{Name: p.Iface.Tap}
			}
			b.portVLANs(b.joined(l.Name, n.Bridge, PortVLANs(p.Iface.VLAN)))
		}
	}
}

// joined is the change that gives link name, a port of bridge once the
// plan has run, the VLANs want.
func (b *builder) joined(name, bridge string, want []VLAN) VLANChange {
	have := defaultVLANs()
	if l, ok := b.obs.Links[name]; ok && l.Master == bridge {
		have = l.VLANs
	}
	return VLANChange{Port: name, Have: have, Want: want}
}

// portVLANs plans c unless it changes nothing.
func (b *builder) portVLANs(c VLANChange) {
	if add, del := VLANDiff(c.Have, c.Want); len(add)+len(del) > 0 {
		b.vlan = append(b.vlan, SetPortVLANs{Change: c})
	}
}

// egressVLAN plans the 802.1Q link nat network i leaves through with
// egressVlan (EGRESS.ID on its egress) and returns its name; it returns
// egress itself without egressVlan, "" after recording an error.
func (b *builder) egressVLAN(i int, egress string) string {
	n := &b.cfg.Networks[i]
	if n.EgressVLAN == 0 {
		return egress
	}
	path := fmt.Sprintf("networks[%d].egressVlan", i)
	if !b.require(FeatureVLAN, path, "egressVlan") {
		return ""
	}
	name := fmt.Sprintf("%s.%d", egress, n.EgressVLAN)
	if len(name) > 15 {
		b.errs = append(b.errs, b.cfg.Errorf(path, "network %q: the VLAN interface %s would have a name longer than 15 characters, the most Linux allows; set egress: to a shorter name, or create the VLAN interface yourself and name it in egress: without egressVlan", n.Name, name))
		return ""
	}
	b.wantVLANLinks[name] = true
	l, ok := b.obs.Links[name]
	switch {
	case !ok:
		b.create = append(b.create, AddVLANLink{Name: name, Parent: egress, ID: n.EgressVLAN, Alias: VLANAlias(n.Name)}, SetUp{Name: name, Up: true})
	case b.opt.claimed(l) && l.VLANParent == egress && l.VLANID == n.EgressVLAN:
		// Made by an apply killed before it marked it (the journal).
		b.create = append(b.create, SetAlias{Name: name, Alias: VLANAlias(n.Name)})
		if !l.Up {
			b.create = append(b.create, SetUp{Name: name, Up: true})
		}
	case !IsOwnedVLAN(l) || l.VLANParent != egress || l.VLANID != n.EgressVLAN:
		b.errs = append(b.errs, b.cfg.Errorf(path, "network %q: a link named %q exists and is not kvmnet's VLAN %d on %s (kind %s, alias %q); remove that link, or name it in egress: without egressVlan", n.Name, name, n.EgressVLAN, egress, l.Kind, l.Alias))
		return ""
	case !l.Up:
		b.create = append(b.create, SetUp{Name: name, Up: true})
	}
	return name
}
