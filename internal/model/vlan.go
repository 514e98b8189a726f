package model

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// VLAN ids a port may carry: 0 and 4095 are reserved by 802.1Q.
const (
	MinVLAN = 1
	MaxVLAN = 4094
)

// vlanRule is what messages say a VLAN id may be.
const vlanRule = "a VLAN id is a whole number from 1 to 4094"

// vlanID reads one VLAN id.
func (d *decoder) vlanID(path string, n ast.Node) int {
	s, ok := d.scalar(path, n)
	if !ok {
		return 0
	}
	id, err := strconv.Atoi(s)
	if err != nil || id < MinVLAN || id > MaxVLAN {
		d.errorAt(n, path, "%q is not a VLAN id (%s, e.g. 100)", s, vlanRule)
		return 0
	}
	return id
}

// vlanList reads VLAN ids and ranges: [10, 20-30], or a single one.
func (d *decoder) vlanList(path string, n ast.Node) VLANList {
	var l VLANList
	one := func(p string, v ast.Node) {
		s, ok := d.scalar(p, v)
		if !ok {
			return
		}
		first, last, ok := parseVLANRange(s)
		if !ok {
			d.errorAt(v, p, "%q is not a VLAN id or range (%s; a range is FIRST-LAST with FIRST <= LAST, e.g. 20-30)", s, vlanRule)
			// The list as a whole is unread: no check of what it holds.
			d.bad[path] = true
			return
		}
		l.Text = append(l.Text, s)
		for id := first; id <= last; id++ {
			l.IDs = append(l.IDs, id)
		}
	}
	if _, ok := d.peek(n).(*ast.SequenceNode); ok {
		d.list(path, n, " like [10, 20-30]", func(_ int, p string, v ast.Node) { one(p, v) })
	} else {
		one(path, n)
	}
	slices.Sort(l.IDs)
	l.IDs = slices.Compact(l.IDs)
	return l
}

// parseVLANRange parses "100" or "20-30".
func parseVLANRange(s string) (first, last int, ok bool) {
	a, b, isRange := strings.Cut(s, "-")
	first, err := strconv.Atoi(strings.TrimSpace(a))
	if err != nil {
		return 0, 0, false
	}
	last = first
	if isRange {
		if last, err = strconv.Atoi(strings.TrimSpace(b)); err != nil {
			return 0, 0, false
		}
	}
	if first < MinVLAN || last > MaxVLAN || first > last {
		return 0, 0, false
	}
	return first, last, true
}

// portVLANs reads an interface's vlan: a bare id (an access port) or
// {tagged: [...], untagged: ID} (a trunk).
func (d *decoder) portVLANs(path string, n ast.Node) *PortVLANs {
	if !isMapping(d.peek(n)) {
		id := d.vlanID(path, n)
		if id == 0 {
			return nil
		}
		return &PortVLANs{Untagged: id, Access: true}
	}
	p := &PortVLANs{}
	d.mapping(path, n, "in vlan", " like {tagged: [10, 20-30], untagged: 100}", portVLANKeys, func(key, kp string, v ast.Node) {
		switch key {
		case "untagged":
			p.Untagged = d.vlanID(kp, v)
		case "tagged":
			p.Tagged = d.vlanList(kp, v)
		}
	})
	return p
}

// networkVLANs checks the VLAN keys of network i.
func (k *checker) networkVLANs(i int) {
	n := &k.c.Networks[i]
	p := netPath(i)
	if n.Mode != ModeBridged && k.pos.has(p+".vlans") {
		k.errorf(p+".vlans", "vlans is only for mode bridged (a VLAN-aware bridge with an uplink to a trunk); a nat network may leave through a VLAN with egressVlan: ID")
	}
	if k.pos.has(p+".uplinkVlans") && !n.VLANs {
		k.errorf(p+".uplinkVlans", "uplinkVlans needs vlans: true on this network (only a VLAN-aware bridge tags frames on its uplink)")
	}
	if n.Mode != ModeNAT && k.pos.has(p+".egressVlan") {
		k.errorf(p+".egressVlan", "egressVlan is only for mode nat (traffic of a bridged network leaves through its uplink; give the VLANs with vlans: true and uplinkVlans:)")
	}
	if n.Mode == ModeNAT && n.EgressVLAN != 0 && n.Egress != "" && len(n.Egress)+1+len(strconv.Itoa(n.EgressVLAN)) > 15 {
		k.errorf(p+".egressVlan", "the VLAN interface %s.%d would have a name longer than 15 characters, the most Linux allows; rename the egress interface or leave egressVlan out and create the VLAN interface yourself (egress: its name)", n.Egress, n.EgressVLAN)
	}
}

// ifaceVLANs checks interface vlan: against its network n.
func (k *checker) ifaceVLANs(p string, in *Interface, n *Network) {
	if !k.pos.has(p+".vlan") || n == nil {
		return
	}
	if !n.VLANs {
		k.errorf(p+".vlan", "network %q is not VLAN-aware; set vlans: true on it (bridged networks only), or remove vlan:", n.Name)
		return
	}
	if v := in.VLAN; v != nil && !v.Access && v.Untagged == 0 && len(v.Tagged.IDs) == 0 && !k.quiet(p+".vlan") && !k.keyTrouble[p+".vlan"] {
		k.errorf(p+".vlan", "no VLAN given; write vlan: 100 for an access port, or vlan: {tagged: [10, 20-30], untagged: 100} for a trunk")
	}
	// Port security checks a guest's frames against one MAC and the
	// addresses of one interface, untagged: a trunk guest has an address
	// per VLAN, which neither reservations nor DHCP snooping bind, and a
	// protected port drops tagged frames (plan.bridgeRules, "vlan").
	if v := in.VLAN; v != nil && len(v.Tagged.IDs) > 0 && in.Security.SpoofguardOn() && !k.bad[p+".security.spoofguard"] {
		k.errorf(p+".vlan.tagged", "a trunk port carries tagged VLANs, which spoofguard cannot check (it binds one MAC and the addresses of one interface to untagged frames, and drops tagged ones); set security: {spoofguard: false} on this interface to accept its tagged traffic unchecked, or make it an access port (vlan: %d) and keep spoofguard", v.Tagged.IDs[0])
	}
}

// String writes l as the file does: "10, 20-30".
func (l VLANList) String() string { return strings.Join(l.Text, ", ") }

// Flow writes l as a YAML flow list: [10, 20-30].
func (l VLANList) Flow() string { return fmt.Sprintf("[%s]", l.String()) }
