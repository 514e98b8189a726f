package model

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// check validates a decoded config and fills in its defaults. It returns
// every problem it finds. Checks that need the kernel (does an uplink
// exist?) are not here; callers make them and report with Config.Errorf.
//
// The order matters: each network is checked on its own and gets its
// defaults first, because the checks of interfaces and forwards build on
// them (an interface's ip must be inside its network's subnet, a default
// tap must not collide with a bridge name).
//
// bad and keyTrouble come from reading the file (see decoder): problems
// already reported there silence the checks that would only repeat them.
func check(c *Config, bad, keyTrouble map[string]bool) []*Error {
	k := &checker{c: c, pos: c.Positions, nets: map[string]int{}, vms: map[string]int{}, bad: bad, keyTrouble: keyTrouble}
	k.conntrack()
	for i := range c.Networks {
		k.network(i)
	}
	k.networksTogether()
	for i := range c.VMs {
		k.vm(i)
	}
	k.interfacesTogether()
	for i := range c.Networks {
		for j := range c.Networks[i].Forwards {
			k.forward(i, j)
		}
	}
	k.forwardsTogether()
	return k.errs
}

type checker struct {
	c    *Config
	pos  *Positions
	errs []*Error

	bad, keyTrouble map[string]bool
	incompleteMemo  map[string]bool

	nets map[string]int // network name → index of its first definition
	vms  map[string]int // VM name → index
	// okSubnet marks networks whose subnet and gateway are valid, so that
	// checks building on them do not pile follow-up errors onto one
	// mistake.
	okSubnet map[int]bool
}

func (k *checker) errorf(path, format string, args ...any) {
	if !k.quiet(path) {
		k.errs = append(k.errs, k.c.Errorf(path, format, args...))
	}
}

// missing reports a required key that is not there, unless its mapping
// had a key that could not be read: the "missing" key is then most likely
// that one, misspelt.
func (k *checker) missing(path, format string, args ...any) {
	if !k.keyTrouble[parentPath(path)] {
		k.errorf(path, format, args...)
	}
}

// quiet reports whether reading path, or what contains it, failed.
func (k *checker) quiet(path string) bool {
	for {
		if k.bad[path] {
			return true
		}
		if path == "" {
			return false
		}
		path = parentPath(path)
	}
}

// incomplete reports whether some entry of the list at path ("networks",
// "vms") or its name could not be read, so that references to names
// cannot be checked.
func (k *checker) incomplete(list string) bool {
	if v, ok := k.incompleteMemo[list]; ok {
		return v
	}
	v := k.quiet(list)
	n := len(k.c.Networks)
	if list == "vms" {
		n = len(k.c.VMs)
	}
	for i := 0; i < n && !v; i++ {
		p := fmt.Sprintf("%s[%d]", list, i)
		v = k.bad[p] || k.bad[p+".name"] || k.keyTrouble[p]
	}
	if k.incompleteMemo == nil {
		k.incompleteMemo = map[string]bool{}
	}
	k.incompleteMemo[list] = v
	return v
}

// where names a place in the file for "already used by ..." messages.
func (k *checker) where(path string) string {
	if l := k.pos.line(path); l > 0 {
		return fmt.Sprintf("%s, line %d", path, l)
	}
	return path
}

func netPath(i int) string { return fmt.Sprintf("networks[%d]", i) }

func ifacePath(vm, i int) string { return fmt.Sprintf("vms[%d].interfaces[%d]", vm, i) }

// network checks one network on its own and fills its defaults.
func (k *checker) network(i int) {
	n := &k.c.Networks[i]
	p := netPath(i)
	// nameOK: defaults derived from the name (bridge, domain) can be
	// filled in. Not for a duplicate name, whose defaults would only
	// collide again.
	nameOK := false
	switch {
	case n.Name == "" && !k.pos.has(p+".name"):
		k.missing(p+".name", "missing; every network needs a name (e.g. name: dev)")
	case !validName(n.Name):
		k.errorf(p+".name", "%q is not a valid network name (%s)", n.Name, nameRule)
	default:
		if first, dup := k.nets[n.Name]; dup {
			k.errorf(p+".name", "network %q is already defined (%s); network names must be unique", n.Name, k.where(netPath(first)))
		} else {
			k.nets[n.Name] = i
			nameOK = true
		}
	}

	switch {
	case !k.pos.has(p + ".backend"):
		n.Backend = BackendLinux
	case !validName(n.Backend):
		k.errorf(p+".backend", "%q is not a backend name (want linux, the default, or another backend's name: %s)", n.Backend, nameRule)
	}

	if k.pos.has(p + ".bridge") {
		if prob := ifNameProblem(n.Bridge); prob != "" {
			example := "br-guests"
			if validName(n.Name) {
				example = "br-" + cut(n.Name, 12)
			}
			k.errorf(p+".bridge", "bridge name %q %s; set bridge: to a valid name (e.g. %s)", n.Bridge, prob, example)
		}
	} else if nameOK {
		n.Bridge = DefaultBridge(n.Name)
	}
	if k.pos.has(p+".mtu") && (n.MTU < 68 || n.MTU > 65535) {
		k.errorf(p+".mtu", "%q is out of range (want 68 to 65535, or leave mtu out for the default)", k.pos.text(p+".mtu", fmt.Sprint(n.MTU)))
	}

	switch n.Mode {
	case ModeBridged:
		k.bridged(i)
	case ModeNAT:
		k.nat(i, nameOK)
	case "":
		k.missing(p+".mode", "missing; every network needs a mode (want bridged or nat)")
	default:
		k.errorf(p+".mode", "%q is not a mode (want bridged or nat)", string(n.Mode))
	}
	k.networkVLANs(i)
}

// natOnly are the keys of a network that only nat networks take, and why a
// bridged network does without.
var natOnly = []struct{ key, why string }{
	{"subnet", "guests of a bridged network take their addresses from the LAN"},
	{"gateway", "guests of a bridged network use the LAN's router"},
	{"dhcp", "guests of a bridged network use the LAN's DHCP server"},
	{"dns", "guests of a bridged network use the LAN's DNS"},
	{"egress", "a bridged network's traffic leaves through its uplink"},
	{"forwards", "guests of a bridged network are reachable on the LAN directly"},
	{"fastpath", "a bridged network's traffic is switched by its bridge, never routed through the host, so there is no forwarding for a flowtable to shortcut"},
}

func (k *checker) bridged(i int) {
	n := &k.c.Networks[i]
	p := netPath(i)
	for _, x := range natOnly {
		if k.pos.has(p + "." + x.key) {
			k.errorf(p+"."+x.key, "%s is only for mode nat; remove it (%s)", x.key, x.why)
		}
	}
	if !k.pos.has(p + ".uplink") {
		k.missing(p+".uplink", "missing; a bridged network needs the physical interface to enslave to its bridge (e.g. uplink: eth0)")
	} else if prob := ifNameProblem(n.Uplink); prob != "" {
		k.errorf(p+".uplink", "uplink name %q %s; name the physical interface as \"ip link\" shows it (e.g. eth0)", n.Uplink, prob)
	}
	switch n.HostAddress {
	case "":
		n.HostAddress = HostAddressKeep
	case HostAddressKeep, HostAddressDHCP, HostAddressStatic, HostAddressNone:
	default:
		k.errorf(p+".hostAddress", "%q is not a hostAddress mode (want keep, dhcp, static or none)", string(n.HostAddress))
	}
}

func (k *checker) nat(i int, nameOK bool) {
	n := &k.c.Networks[i]
	p := netPath(i)
	if k.pos.has(p + ".uplink") {
		k.errorf(p+".uplink", "uplink is only for mode bridged; a nat network leaves through egress (e.g. egress: eth0, or leave it out for the interface of the default route)")
	}
	if k.pos.has(p + ".hostAddress") {
		k.errorf(p+".hostAddress", "hostAddress is only for mode bridged; remove it (on a nat network the host's address is the gateway)")
	}
	if k.pos.has(p+".egress") && ifNameProblem(n.Egress) != "" {
		k.errorf(p+".egress", "egress name %q %s; name the interface as \"ip link\" shows it (e.g. eth0)", n.Egress, ifNameProblem(n.Egress))
	}
	if n.DHCP == nil {
		n.DHCP = &DHCP{}
	}
	if !k.pos.has(p + ".fastpath") {
		n.Fastpath = k.c.Host.Fastpath
	}
	if k.pos.has(p + ".dns.domain") {
		if prob := domainProblem(n.DNS.Domain); prob != "" {
			k.errorf(p+".dns.domain", "%q %s", n.DNS.Domain, prob)
		}
	} else if nameOK {
		n.DNS.Domain = n.Name + ".kvm"
	}
	k.dhcpLease(i)
	if !k.subnet(i) {
		return
	}
	if k.okSubnet == nil {
		k.okSubnet = map[int]bool{}
	}
	k.okSubnet[i] = true
	k.dhcpRange(i)
}

// minSubnetBits is the shortest prefix a nat subnet may have: /8 is the
// largest private block (10.0.0.0/8); anything wider reaches addresses
// that are not private, and 0.0.0.0/0 would masquerade and hairpin every
// address there is.
const minSubnetBits = 8

// subnet checks the subnet and gateway of nat network i and reports
// whether both are usable.
func (k *checker) subnet(i int) bool {
	n := &k.c.Networks[i]
	p := netPath(i)
	sp := p + ".subnet"
	if !k.pos.has(sp) {
		k.missing(sp, "missing; a nat network needs a private IPv4 subnet (e.g. subnet: 192.168.100.0/24)")
		return false
	}
	if !n.Subnet.IsValid() {
		return false // reported while reading
	}
	text := k.pos.text(sp, n.Subnet.String())
	switch {
	case !n.Subnet.Addr().Is4():
		k.errorf(sp, "%q is not an IPv4 subnet; nat networks are IPv4 only (want e.g. 192.168.100.0/24)", text)
		return false
	case n.Subnet.Bits() < minSubnetBits:
		k.errorf(sp, "%q is too large: kvmnet masquerades a nat subnet and answers for it, so a /%d would take over addresses of the rest of the network (want a private subnet of /%d to /30, e.g. 192.168.100.0/24)", text, n.Subnet.Bits(), minSubnetBits)
		return false
	case n.Subnet.Bits() > 30:
		k.errorf(sp, "%q is too small: a /%d leaves no room for a gateway and guests (want /30 or shorter, e.g. /24)", text, n.Subnet.Bits())
		return false
	case n.Subnet.Masked() != n.Subnet:
		k.errorf(sp, "%q is not a network address: the host bits are set (did you mean %s?)", text, n.Subnet.Masked())
		return false
	}
	gp := p + ".gateway"
	if !k.pos.has(gp) {
		n.Gateway = n.Subnet.Addr().Next()
		return true
	}
	if !n.Gateway.IsValid() {
		return false
	}
	if prob := k.hostAddrProblem(n, n.Gateway); prob != "" {
		k.errorf(gp, "%q %s", k.pos.text(gp, n.Gateway.String()), prob)
		return false
	}
	return true
}

// hostAddrProblem says why a is not a usable host address of nat network
// n, or "".
func (k *checker) hostAddrProblem(n *Network, a netip.Addr) string {
	switch {
	case !a.Is4():
		return "is not an IPv4 address (nat networks are IPv4 only)"
	case !n.Subnet.Contains(a):
		return fmt.Sprintf("is outside the subnet %s of network %q (want an address from %s to %s)", n.Subnet, n.Name, n.Subnet.Addr().Next(), broadcast(n.Subnet).Prev())
	case a == n.Subnet.Addr():
		return fmt.Sprintf("is the network address of %s (want an address from %s to %s)", n.Subnet, n.Subnet.Addr().Next(), broadcast(n.Subnet).Prev())
	case a == broadcast(n.Subnet):
		return fmt.Sprintf("is the broadcast address of %s (want an address from %s to %s)", n.Subnet, n.Subnet.Addr().Next(), broadcast(n.Subnet).Prev())
	}
	return ""
}

// dhcpLease checks the lease time and fills its default.
func (k *checker) dhcpLease(i int) {
	n := &k.c.Networks[i]
	lp := netPath(i) + ".dhcp.lease"
	switch {
	case !k.pos.has(lp):
		if n.DHCP.On() {
			n.DHCP.Lease = Duration{DefaultLease}
		}
	case n.DHCP.Lease.Duration < time.Minute && k.parsedDuration(lp):
		k.errorf(lp, "%q is too short (want at least 1m; clients renew at half the lease time, e.g. 1h)", k.pos.text(lp, ""))
	}
}

// parsedDuration reports whether the duration at path was read without
// error (ParseDuration accepts "0", which is not a mistake of syntax).
func (k *checker) parsedDuration(path string) bool {
	_, err := time.ParseDuration(k.pos.text(path, ""))
	return err == nil
}

// dhcpRange checks the range of nat network i, whose subnet and gateway
// are valid, or fills the default range.
func (k *checker) dhcpRange(i int) {
	n := &k.c.Networks[i]
	h := n.DHCP
	p := netPath(i) + ".dhcp"
	rp := p + ".range"
	if !k.pos.has(rp) {
		if !h.On() {
			return
		}
		start, end, ok := DefaultDHCPRange(n.Subnet, n.Gateway)
		if !ok {
			k.errorf(p, "the upper half of %s has no room for a DHCP range next to the gateway %s; set dhcp.range, or turn DHCP off with dhcp: {enabled: false}", n.Subnet, n.Gateway)
			return
		}
		h.RangeStart, h.RangeEnd = start, end
		h.Range = start.String() + "-" + end.String()
		return
	}
	a, b, isRange := strings.Cut(h.Range, "-")
	start, err1 := netip.ParseAddr(strings.TrimSpace(a))
	end, err2 := netip.ParseAddr(strings.TrimSpace(b))
	if !isRange || err1 != nil || err2 != nil {
		k.errorf(rp, "%q is not an address range (want FIRST-LAST inside %s, e.g. %s)", h.Range, n.Subnet, exampleRange(n.Subnet))
		return
	}
	for _, x := range []netip.Addr{start, end} {
		if prob := k.hostAddrProblem(n, x); prob != "" {
			k.errorf(rp, "%q: %s %s", h.Range, x, prob)
			return
		}
	}
	switch {
	case start.Compare(end) > 0:
		k.errorf(rp, "%q starts after it ends (did you mean %s-%s?)", h.Range, end, start)
	case start.Compare(n.Gateway) <= 0 && n.Gateway.Compare(end) <= 0:
		k.errorf(rp, "%q contains the gateway %s; the range must leave it out (e.g. start the range after it)", h.Range, n.Gateway)
	default:
		h.RangeStart, h.RangeEnd = start, end
	}
}

// exampleRange is the default range of a subnet, for messages.
func exampleRange(p netip.Prefix) string {
	start, end, ok := DefaultDHCPRange(p, p.Addr().Next())
	if !ok {
		return "192.168.100.128-192.168.100.254"
	}
	return start.String() + "-" + end.String()
}

// networksTogether checks what networks may not share: bridges, uplinks,
// address space.
func (k *checker) networksTogether() {
	ns := k.c.Networks
	bridges := map[string]int{}
	uplinks := map[string]int{}
	for i := range ns {
		n := &ns[i]
		p := netPath(i)
		if n.Bridge != "" {
			if j, dup := bridges[n.Bridge]; dup {
				if k.pos.has(p + ".bridge") {
					k.errorf(p+".bridge", "bridge %q is already used by network %q (%s); give each network its own bridge", n.Bridge, ns[j].Name, k.where(netPath(j)))
				} else {
					k.errorf(p+".bridge", "the default bridge name %q (\"kv-\" + name, cut to %d characters) is already used by network %q (%s); set bridge: to a unique name", n.Bridge, maxNameLen, ns[j].Name, k.where(netPath(j)))
				}
			} else {
				bridges[n.Bridge] = i
			}
		}
		if n.Mode == ModeBridged && n.Uplink != "" {
			if j, dup := uplinks[n.Uplink]; dup {
				k.errorf(p+".uplink", "%q is already the uplink of network %q (%s); an interface can be enslaved to one bridge only", n.Uplink, ns[j].Name, k.where(netPath(j)))
			} else {
				uplinks[n.Uplink] = i
			}
		}
	}
	for i := range ns {
		n := &ns[i]
		p := netPath(i)
		if j, ok := uplinks[n.Bridge]; ok && n.Bridge != "" {
			k.errorf(p+".bridge", "bridge name %q is the uplink of network %q (%s); name the bridge differently (e.g. br0)", n.Bridge, ns[j].Name, k.where(netPath(j)))
		}
		// An egress that is the uplink of a bridged network is accepted
		// (DESIGN.md's own example does it): traffic then leaves through
		// that network's bridge, which the planner resolves.
		if n.Mode == ModeNAT && n.Egress != "" && n.Egress == n.Bridge {
			k.errorf(p+".egress", "%q is this network's own bridge; name the interface traffic leaves the host through (e.g. eth0), or leave egress out for the interface of the default route", n.Egress)
		}
	}
	k.subnetOverlaps()
}

// subnetOverlaps reports nat subnets that share addresses, each on the
// network that comes later in the file. It sorts rather than comparing
// every pair, so that a file with thousands of networks stays quick.
func (k *checker) subnetOverlaps() {
	ns := k.c.Networks
	var idx []int
	for i := range ns {
		if k.okSubnet[i] {
			idx = append(idx, i)
		}
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		return ns[a].Subnet.Addr().Compare(ns[b].Subnet.Addr())
	})
	reported := map[int]bool{}
	widest := -1 // of the subnets so far, the one that reaches highest
	for _, i := range idx {
		if widest >= 0 && ns[i].Subnet.Addr().Compare(broadcast(ns[widest].Subnet)) <= 0 {
			later, earlier := max(i, widest), min(i, widest)
			if !reported[later] {
				reported[later] = true
				k.errorf(netPath(later)+".subnet", "%s overlaps %s of network %q (%s); give each network its own address range", ns[later].Subnet, ns[earlier].Subnet, ns[earlier].Name, k.where(netPath(earlier)))
			}
		}
		if widest < 0 || broadcast(ns[i].Subnet).Compare(broadcast(ns[widest].Subnet)) > 0 {
			widest = i
		}
	}
}

// vm checks one VM and its interfaces on their own, and fills their
// defaults.
func (k *checker) vm(i int) {
	vm := &k.c.VMs[i]
	p := fmt.Sprintf("vms[%d]", i)
	nameOK := false // see network
	switch {
	case vm.Name == "" && !k.pos.has(p+".name"):
		k.missing(p+".name", "missing; every VM needs a name (e.g. name: web1)")
	case !validName(vm.Name):
		k.errorf(p+".name", "%q is not a valid VM name (%s)", vm.Name, nameRule)
	default:
		if first, dup := k.vms[vm.Name]; dup {
			k.errorf(p+".name", "VM %q is already defined (%s); VM names must be unique", vm.Name, k.where(fmt.Sprintf("vms[%d]", first)))
		} else {
			k.vms[vm.Name] = i
			nameOK = true
		}
	}
	for j := range vm.Interfaces {
		k.iface(i, j, nameOK)
	}
}

func (k *checker) iface(vmi, i int, nameOK bool) {
	vm := &k.c.VMs[vmi]
	in := &vm.Interfaces[i]
	p := ifacePath(vmi, i)

	var n *Network
	ni := -1
	switch {
	case !k.pos.has(p + ".network"):
		k.missing(p+".network", "missing; every interface names the network it sits on (networks: %s)", k.networkNames())
	default:
		j, ok := k.nets[in.Network]
		switch {
		case ok:
			ni, n = j, &k.c.Networks[j]
		case !k.incomplete("networks"):
			k.errorf(p+".network", "network %q does not exist (networks: %s)", in.Network, k.networkNames())
		}
	}

	if !k.pos.has(p + ".mac") {
		k.missing(p+".mac", "missing; every interface needs the MAC address of the guest's NIC (e.g. mac: 52:54:00:12:34:56)")
	} else if hw, ok := parseMAC(in.MAC); !ok {
		k.errorf(p+".mac", "%q is not a MAC address (want six hex pairs separated by ':', e.g. 52:54:00:12:34:56)", in.MAC)
	} else if hw[0]&1 != 0 {
		k.errorf(p+".mac", "%q is a multicast address (the lowest bit of the first byte is set); a NIC needs a unicast MAC (e.g. 52:54:00:12:34:56)", in.MAC)
	} else if string(hw) == "\x00\x00\x00\x00\x00\x00" {
		k.errorf(p+".mac", "%q is all zeros; a NIC needs a real unicast MAC (e.g. 52:54:00:12:34:56)", in.MAC)
	} else {
		in.HWAddr = hw.String()
	}

	if k.pos.has(p+".ip") && n != nil {
		switch {
		case n.Mode == ModeBridged:
			k.errorf(p+".ip", "ip is only for interfaces on nat networks; on bridged network %q the guest gets its address from the LAN (remove ip, or reserve it on the LAN's DHCP server)", n.Name)
		case in.IP.IsValid() && k.okSubnet[ni]:
			text := k.pos.text(p+".ip", in.IP.String())
			if prob := k.hostAddrProblem(n, in.IP); prob != "" {
				k.errorf(p+".ip", "%q %s", text, prob)
			} else if in.IP == n.Gateway {
				k.errorf(p+".ip", "%q is the gateway of network %q (the host's own address); pick another address in %s", text, n.Name, n.Subnet)
			}
		}
	}

	if k.pos.has(p + ".tap") {
		if prob := ifNameProblem(in.Tap); prob != "" {
			example := "vnet0"
			if validName(vm.Name) {
				example = DefaultTap(vm.Name, i)
			}
			k.errorf(p+".tap", "tap name %q %s; set tap: to a valid name (e.g. %s)", in.Tap, prob, example)
		}
	} else if nameOK {
		in.Tap = DefaultTap(vm.Name, i)
	}
	if !in.CreateTap && !k.bad[p+".createTap"] {
		if k.pos.has(p + ".queues") {
			k.errorf(p+".queues", "queues needs createTap: true (kvmnet sets queues only on taps it creates; for an adopted tap, set queues where it is created)")
		}
		if k.pos.has(p + ".owner") {
			k.errorf(p+".owner", "owner needs createTap: true (kvmnet sets the owner only on taps it creates)")
		}
	}
	if in.Queues < 0 || in.Queues > 256 {
		k.errorf(p+".queues", "%q is out of range (want 0 to 256)", k.pos.text(p+".queues", fmt.Sprint(in.Queues)))
	}
	if k.pos.has(p+".owner") && !ownerRE.MatchString(in.Owner) {
		k.errorf(p+".owner", "%q is not a user name or uid (e.g. owner: qemu or owner: 1000)", in.Owner)
	}

	k.ifaceVLANs(p, in, n)

	s := &in.Security
	if s.MaxConnections < 0 {
		k.errorf(p+".security.maxConnections", "%q is negative (want 0 for no limit, or a positive count, e.g. 4096)", k.pos.text(p+".security.maxConnections", fmt.Sprint(s.MaxConnections)))
	}
	for _, l := range []struct{ key, v string }{{"broadcastLimit", s.BroadcastLimit}, {"newConnections", s.NewConnections}} {
		if l.v != "" || k.pos.has(p+".security."+l.key) {
			if _, _, err := ParseRateLimit(l.v); err != nil {
				k.errorf(p+".security."+l.key, "%v", err)
			}
		}
	}
	k.ifaceQoS(p, in.QoS)
}

// networkNames lists the defined networks for messages.
func (k *checker) networkNames() string {
	var names []string
	for _, n := range k.c.Networks {
		if n.Name != "" {
			names = append(names, n.Name)
		}
	}
	if len(names) == 0 {
		return "none are defined; add one under networks:"
	}
	return listNames(names)
}

// listNames joins names for a message, cut short when there are many.
func listNames(names []string) string {
	const most = 12
	if len(names) > most {
		return fmt.Sprintf("%s and %d more", strings.Join(names[:most], ", "), len(names)-most)
	}
	return strings.Join(names, ", ")
}

// interfacesTogether checks what interfaces may not share: MACs, addresses
// on one network, tap names, and tap names with bridges and uplinks.
func (k *checker) interfacesTogether() {
	macs := map[string]string{}
	ips := map[netip.Addr]string{}
	taps := map[string]string{}
	devices := k.networkDevices()
	for vi := range k.c.VMs {
		vm := &k.c.VMs[vi]
		for i := range vm.Interfaces {
			in := &vm.Interfaces[i]
			p := ifacePath(vi, i)
			if in.HWAddr != "" {
				if first, dup := macs[in.HWAddr]; dup {
					k.errorf(p+".mac", "%q is already the MAC of %s; every NIC needs its own MAC", in.MAC, first)
				} else {
					macs[in.HWAddr] = fmt.Sprintf("%s (VM %q, %s)", p, vm.Name, k.lineOf(p))
				}
			}
			if in.IP.IsValid() && k.pos.has(p+".ip") {
				if first, dup := ips[in.IP]; dup {
					k.errorf(p+".ip", "%q is already reserved for %s; every interface needs its own address", k.pos.text(p+".ip", ""), first)
				} else {
					ips[in.IP] = fmt.Sprintf("%s (VM %q, %s)", p, vm.Name, k.lineOf(p))
				}
			}
			if in.Tap == "" {
				continue
			}
			set := k.pos.has(p + ".tap")
			what := fmt.Sprintf("tap %q", in.Tap)
			fix := "give each interface its own tap:"
			if !set {
				what = fmt.Sprintf("the default tap name %q (VM name + \"-\" + interface index)", in.Tap)
				fix = "set tap: to a unique name"
			}
			if first, dup := taps[in.Tap]; dup {
				k.errorf(p+".tap", "%s is already the tap of %s; %s", what, first, fix)
				continue
			}
			taps[in.Tap] = fmt.Sprintf("%s (VM %q, %s)", p, vm.Name, k.lineOf(p))
			if dev, clash := devices[in.Tap]; clash {
				k.errorf(p+".tap", "%s is %s; set tap: to a name no bridge, uplink or egress uses", what, dev)
			}
		}
	}
}

// networkDevices maps the names of the networks' bridges, uplinks and
// egresses to what they are, for messages about a tap that takes one.
func (k *checker) networkDevices() map[string]string {
	devices := map[string]string{}
	for _, n := range k.c.Networks {
		if n.Uplink != "" && n.Mode == ModeBridged {
			devices[n.Uplink] = fmt.Sprintf("the uplink of network %q", n.Name)
		}
		if n.Mode == ModeNAT && n.Egress != "" {
			devices[n.Egress] = fmt.Sprintf("the egress of network %q", n.Name)
		}
		if n.Bridge != "" {
			devices[n.Bridge] = fmt.Sprintf("the bridge of network %q", n.Name)
		}
	}
	return devices
}

// lineOf says "line N" for path, for messages that point elsewhere.
func (k *checker) lineOf(path string) string {
	if l := k.pos.line(path); l > 0 {
		return fmt.Sprintf("line %d", l)
	}
	return "no line"
}

// forward checks forward j of network i and fills its parsed forms.
func (k *checker) forward(i, j int) {
	n := &k.c.Networks[i]
	if n.Mode != ModeNAT {
		return // reported: forwards are only for nat
	}
	f := &n.Forwards[j]
	p := fmt.Sprintf("%s.forwards[%d]", netPath(i), j)

	switch f.Proto {
	case "":
		f.Proto = "tcp"
	case "tcp", "udp":
	default:
		k.errorf(p+".proto", "%q is not a protocol (want tcp or udp)", f.Proto)
	}

	portsOK := false
	if !k.pos.has(p + ".port") {
		k.missing(p+".port", "missing; a forward needs the host port (or range) to forward (e.g. port: 8080, or port: 5000-5010)")
	} else if first, last, prob := parsePortRange(f.Port); prob != "" {
		k.errorf(p+".port", "%q: %s", f.Port, prob)
	} else {
		f.PortFirst, f.PortLast, portsOK = first, last, true
	}

	for x, s := range f.From {
		pfx, prob := parseFrom(s)
		if prob != "" {
			k.errorf(fmt.Sprintf("%s.from[%d]", p, x), "%q %s", s, prob)
			continue
		}
		f.FromPrefixes = append(f.FromPrefixes, pfx)
	}
	if k.pos.has(p + ".listen") {
		a, err := netip.ParseAddr(f.Listen)
		if err != nil || !a.Is4() {
			k.errorf(p+".listen", "%q is not an IPv4 address (want one of this host's addresses, e.g. 203.0.113.10, or leave listen out for every address of the egress interface)", f.Listen)
		} else {
			f.ListenAddr = a
		}
	}
	if f.RateLimit != "" || k.pos.has(p+".rateLimit") {
		if _, _, err := ParseRateLimit(f.RateLimit); err != nil {
			k.errorf(p+".rateLimit", "%v", err)
		}
	}
	k.forwardTarget(i, j, portsOK)
}

// parseFrom parses one source of a forward's allow-list: an IPv4 CIDR or a
// single address.
func parseFrom(s string) (netip.Prefix, string) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return netip.Prefix{}, "is not an IPv4 CIDR or address (want e.g. 203.0.113.0/24 or 203.0.113.7)"
		}
		return netip.PrefixFrom(a, 32), ""
	}
	pfx, err := netip.ParsePrefix(s)
	switch {
	case err != nil || !pfx.Addr().Is4():
		return netip.Prefix{}, "is not an IPv4 CIDR (want e.g. 203.0.113.0/24)"
	case pfx.Masked() != pfx:
		return netip.Prefix{}, fmt.Sprintf("is not a network address: the host bits are set (did you mean %s?)", pfx.Masked())
	}
	return pfx, ""
}

// forwardTarget checks the "to" of forward j of network i.
func (k *checker) forwardTarget(i, j int, portsOK bool) {
	n := &k.c.Networks[i]
	f := &n.Forwards[j]
	tp := fmt.Sprintf("%s.forwards[%d].to", netPath(i), j)
	if !k.pos.has(tp) {
		k.missing(tp, "missing; a forward needs a target: a VM on network %q or an address in its subnet, with an optional port (e.g. to: web1:80)", n.Name)
		return
	}
	host, port, hasPort := strings.Cut(f.To, ":")
	if a, err := netip.ParseAddr(host); err == nil {
		if !k.okSubnet[i] {
			return
		}
		if prob := k.hostAddrProblem(n, a); prob != "" {
			k.errorf(tp, "%q: %s %s", f.To, host, prob)
			return
		}
		if a == n.Gateway {
			k.errorf(tp, "%q: %s is the gateway of network %q (the host itself); forward to a guest", f.To, host, n.Name)
			return
		}
		f.ToAddr = a
	} else {
		if strings.Contains(host, ".") && strings.Trim(host, "0123456789.") == "" {
			k.errorf(tp, "%q: %q is not an IPv4 address (want VM[:PORT] or IP[:PORT], e.g. web1:80 or 192.168.100.10:80)", f.To, host)
			return
		}
		if !validName(host) {
			k.errorf(tp, "%q is not a target (want VM[:PORT] or IP[:PORT], e.g. web1:80 or 192.168.100.10:80)", f.To)
			return
		}
		if prob := k.vmOnNetwork(host, n.Name); prob != "" {
			if !k.incomplete("vms") {
				k.errorf(tp, "%q: %s", f.To, prob)
			}
			return
		}
		f.ToVM = host
	}
	if !portsOK {
		return
	}
	if !hasPort {
		f.ToPortFirst = f.PortFirst
		return
	}
	first, last, prob := parsePortRange(port)
	if prob != "" {
		k.errorf(tp, "%q: %s", f.To, prob)
		return
	}
	size := int(f.PortLast) - int(f.PortFirst)
	switch {
	case first != last && int(last)-int(first) != size:
		k.errorf(tp, "%q: the target range %d-%d has %d ports but port %q has %d; ranges map 1:1 (give the same number of ports, or only the first target port)", f.To, first, last, int(last)-int(first)+1, f.Port, size+1)
	case int(first)+size > 65535:
		k.errorf(tp, "%q: the %d ports of %q mapped from %d would run past 65535 (start the target lower)", f.To, size+1, f.Port, first)
	default:
		f.ToPortFirst = first
	}
}

// vmOnNetwork says why VM name cannot be a forward target on network net,
// or "".
func (k *checker) vmOnNetwork(name, net string) string {
	vi, ok := k.vms[name]
	if !ok {
		var names []string
		for _, vm := range k.c.VMs {
			if vm.Name != "" {
				names = append(names, vm.Name)
			}
		}
		if len(names) == 0 {
			return fmt.Sprintf("VM %q does not exist (no VMs are defined; add it under vms:)", name)
		}
		return fmt.Sprintf("VM %q does not exist (VMs: %s)", name, listNames(names))
	}
	var on []string
	for _, in := range k.c.VMs[vi].Interfaces {
		if in.Network == net {
			return ""
		}
		if in.Network != "" && !slices.Contains(on, in.Network) {
			on = append(on, in.Network)
		}
	}
	if len(on) == 0 {
		return fmt.Sprintf("VM %q has no interface on network %q (it has no interfaces at all); add one with network: %s", name, net, net)
	}
	return fmt.Sprintf("VM %q has no interface on network %q (it is on: %s); forward from that network instead, or add an interface on %s", name, net, listNames(on), net)
}

// forwardsTogether finds forwards that claim the same protocol and port on
// the same listen address (an empty one being every address): within a
// network, and across networks that leave through the same egress. Each is
// reported on the forward that comes later in the file.
func (k *checker) forwardsTogether() {
	type claim struct {
		net, fwd int
		f        *Forward
	}
	groups := map[string][]claim{} // by egress and protocol
	for i := range k.c.Networks {
		n := &k.c.Networks[i]
		if n.Mode != ModeNAT {
			continue
		}
		for j := range n.Forwards {
			f := &n.Forwards[j]
			if f.PortFirst == 0 || (f.Proto != "tcp" && f.Proto != "udp") {
				continue
			}
			key := n.Egress + "/" + f.Proto
			groups[key] = append(groups[key], claim{i, j, f})
		}
	}
	reported := map[[2]int]bool{}
	for _, key := range slices.Sorted(maps.Keys(groups)) {
		cs := groups[key]
		// Sweep the claims in port order, comparing each only with those
		// whose ports it can still overlap, so that thousands of forwards
		// stay quick.
		slices.SortStableFunc(cs, func(a, b claim) int { return cmp.Compare(a.f.PortFirst, b.f.PortFirst) })
		var active []claim
		for _, c := range cs {
			active = slices.DeleteFunc(active, func(a claim) bool { return a.f.PortLast < c.f.PortFirst })
			for _, a := range active {
				if c.f.ListenAddr.IsValid() && a.f.ListenAddr.IsValid() && c.f.ListenAddr != a.f.ListenAddr {
					continue
				}
				later, earlier := c, a
				if a.net > c.net || (a.net == c.net && a.fwd > c.fwd) {
					later, earlier = a, c
				}
				if reported[[2]int{later.net, later.fwd}] {
					continue
				}
				reported[[2]int{later.net, later.fwd}] = true
				k.forwardClash(later.net, later.fwd, earlier.net, earlier.fwd)
			}
			active = append(active, c)
		}
	}
}

// forwardClash reports that forward j of network i claims what forward ej
// of network ei already does.
func (k *checker) forwardClash(i, j, ei, ej int) {
	f := &k.c.Networks[i].Forwards[j]
	g := &k.c.Networks[ei].Forwards[ej]
	other := fmt.Sprintf("networks[%d].forwards[%d]", ei, ej)
	line := k.lineOf(other)
	if ei != i {
		other += fmt.Sprintf(" of network %q", k.c.Networks[ei].Name)
	}
	listen := "every address"
	if f.ListenAddr.IsValid() {
		listen = f.ListenAddr.String()
	} else if g.ListenAddr.IsValid() {
		listen = g.ListenAddr.String()
	}
	k.errorf(fmt.Sprintf("%s.forwards[%d].port", netPath(i), j),
		"%s port %q on %s is already forwarded by %s (%s, port %q); use another port, or listen: on different addresses",
		f.Proto, f.Port, listen, other, line, g.Port)
}
